//! Frames on the peer port: a preamble once per connection, then length-prefixed,
//! checksummed protobuf frames (see PROTOCOL.md beside this file).

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use prost::Message as _;

use crate::proto::corekvpb::PeerFrame;

/// The first bytes a dialer sends: corekv's peer protocol, version 1.
pub const PREAMBLE: &[u8; 8] = b"CKVPEER\x01";
/// The largest frame either side accepts. A batch of raft messages is cut well below it
/// (raft's own messages stay under about 1 MiB of entries each).
pub const MAX_FRAME: usize = 64 << 20;
/// Bytes of frame header: length, then CRC-32 of the payload, both big-endian.
const HEADER: usize = 8;

/// Why a frame could not be read; each closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a corekv peer: the connection did not start with corekv's preamble{0}")]
    NotAPeer(&'static str),
    #[error("a frame of {0} bytes exceeds the {1}-byte limit")]
    TooLarge(usize, usize),
    #[error("a frame's checksum does not match its {0} bytes")]
    Checksum(usize),
    #[error("a frame does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("an empty frame")]
    Empty,
}

/// Encodes one frame (header and payload) onto the end of `out`.
pub fn encode(frame: &PeerFrame, out: &mut Vec<u8>) {
    let len = frame.encoded_len();
    out.reserve(HEADER + len);
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    frame.encode(out).expect("a Vec grows to take any message");
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_be_bytes());
}

/// Reads the dialer's preamble.
pub async fn read_preamble<R: AsyncRead + Unpin>(r: &mut R) -> Result<(), FrameError> {
    let mut p = [0u8; 8];
    read_exact(r, &mut p).await?;
    if &p == PREAMBLE {
        return Ok(());
    }
    Err(FrameError::NotAPeer(
        if p.starts_with(b"GET ") || p.starts_with(b"POST ") || p.starts_with(b"PRI * ") {
            " (it speaks HTTP: an etcd member or a client on the peer port?)"
        } else if p.starts_with(b"CKVPEER") {
            " (another version of corekv's peer protocol)"
        } else {
            ""
        },
    ))
}

/// The largest handshake frame a listener reads from a dialer it does not know yet (a hello
/// is a few dozen bytes): a stranger on the peer port cannot make it set aside more.
pub const MAX_HELLO: usize = 64 << 10;

/// Reads one whole frame, checking its size and checksum before decoding it.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<PeerFrame, FrameError> {
    read_limited(r, MAX_FRAME).await
}

/// [`read`] with a lower size limit.
pub async fn read_limited<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<PeerFrame, FrameError> {
    debug_assert!(max <= MAX_FRAME);
    let mut head = [0u8; HEADER];
    read_exact(r, &mut head).await?;
    let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(head[4..].try_into().expect("4 bytes"));
    if len > max {
        return Err(FrameError::TooLarge(len, max));
    }
    let mut payload = vec![0u8; len];
    read_exact(r, &mut payload).await?;
    if crc32fast::hash(&payload) != crc {
        return Err(FrameError::Checksum(len));
    }
    let frame = PeerFrame::decode(payload.as_slice())?;
    if frame.body.is_none() {
        return Err(FrameError::Empty);
    }
    Ok(frame)
}

async fn read_exact<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), FrameError> {
    match r.read_exact(buf).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Closed),
        Err(e) => Err(FrameError::Io(e)),
    }
}

/// Writes one frame.
pub async fn write<W: AsyncWrite + Unpin>(w: &mut W, frame: &PeerFrame) -> std::io::Result<()> {
    let mut buf = Vec::new();
    encode(frame, &mut buf);
    w.write_all(&buf).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::corekvpb::{peer_frame, PeerBatch, PeerHello};

    fn hello() -> PeerFrame {
        PeerFrame {
            body: Some(peer_frame::Body::Hello(PeerHello {
                protocol: 1,
                cluster_id: 7,
                from: 1,
                to: 2,
                stream: 1,
                empty: false,
            })),
        }
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<PeerFrame>, FrameError> {
        futures_lite::future::block_on(async {
            let mut r = futures_lite::io::Cursor::new(bytes.to_vec());
            let mut out = Vec::new();
            loop {
                match read(&mut r).await {
                    Ok(f) => out.push(f),
                    Err(FrameError::Closed) => return Ok(out),
                    Err(e) => return Err(e),
                }
            }
        })
    }

    #[test]
    fn frames_round_trip() {
        let batch = PeerFrame {
            body: Some(peer_frame::Body::Batch(PeerBatch {
                raft: vec![vec![1, 2, 3].into(), vec![].into()],
                ..Default::default()
            })),
        };
        let mut buf = Vec::new();
        encode(&hello(), &mut buf);
        encode(&batch, &mut buf);
        assert_eq!(read_all(&buf).unwrap(), vec![hello(), batch]);
    }

    #[test]
    fn a_flipped_bit_a_huge_length_and_a_truncated_frame_are_errors() {
        let mut buf = Vec::new();
        encode(&hello(), &mut buf);
        let mut flipped = buf.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x10;
        assert!(matches!(read_all(&flipped), Err(FrameError::Checksum(_))));
        let mut huge = buf.clone();
        huge[..4].copy_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert!(matches!(read_all(&huge), Err(FrameError::TooLarge(..))));
        // A frame cut short is a closed connection mid-frame, never a frame.
        let cut = &buf[..buf.len() - 2];
        assert!(read_all(cut).unwrap().is_empty());
    }

    #[test]
    fn garbage_is_not_a_peer() {
        futures_lite::future::block_on(async {
            let mut r = futures_lite::io::Cursor::new(b"GET /raft/stream HTTP/1.1\r\n".to_vec());
            let e = read_preamble(&mut r).await.unwrap_err();
            assert!(e.to_string().contains("speaks HTTP"), "{e}");
            let mut r = futures_lite::io::Cursor::new(PREAMBLE.to_vec());
            read_preamble(&mut r).await.unwrap();
        });
    }
}
