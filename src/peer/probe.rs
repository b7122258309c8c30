//! Asking a running cluster who is in it, for a member that joins it with
//! `--initial-cluster-state existing` and an empty data dir (etcd asks its peers' /members
//! endpoint the same): one short connection per peer URL, at start, before the member runs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use prost::Message as _;

use super::frame::{self, MAX_FRAME, PREAMBLE};
use super::handshake::PROTOCOL;
use crate::proto::corekvpb::{peer_frame, PeerClusterInfo, PeerFrame, PeerHello, PeerStream};
use crate::tls::{ClientTls, TlsSettings};

const TIMEOUT: Duration = Duration::from_secs(2);

/// The first answer from any of `urls` (peer URLs; an https:// one is dialed with `tls`, or
/// with the system's roots when this member has no peer TLS).
pub fn cluster_info(urls: &[String], tls: Option<&ClientTls>) -> Result<PeerClusterInfo, String> {
    let mut errors = Vec::new();
    for url in urls {
        match ask(url, tls) {
            Ok(info) => return Ok(info),
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    Err(errors.join("; "))
}

fn ask(url: &str, tls: Option<&ClientTls>) -> Result<PeerClusterInfo, String> {
    let url = crate::config::parse_urls("peer URL", url)
        .map_err(|e| e.to_string())?
        .remove(0);
    let tcp = TcpStream::connect_timeout(&url.addr, TIMEOUT).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    if !url.tls {
        return exchange(tcp);
    }
    let config = match tls {
        Some(t) => t.current(),
        None => ClientTls::client(TlsSettings::default(), "peer TLS", &[])?.current(),
    };
    let name = crate::tls::server_name(&url.host)?;
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    exchange(rustls::StreamOwned::new(conn, tcp))
}

/// The probe's hello and the cluster's answer.
fn exchange<S: Read + Write>(mut s: S) -> Result<PeerClusterInfo, String> {
    let mut out = PREAMBLE.to_vec();
    let hello = PeerHello {
        protocol: PROTOCOL,
        stream: PeerStream::Probe as i32,
        ..Default::default()
    };
    frame::encode(
        &PeerFrame {
            body: Some(peer_frame::Body::Hello(hello)),
        },
        &mut out,
    );
    s.write_all(&out)
        .and_then(|_| s.flush())
        .map_err(|e| e.to_string())?;
    match read(&mut s)?.body {
        Some(peer_frame::Body::HelloReply(r)) if r.accepted => {}
        Some(peer_frame::Body::HelloReply(r)) => return Err(format!("refused: {}", r.refusal)),
        _ => return Err("answered the handshake with something else".into()),
    }
    match read(&mut s)?.body {
        Some(peer_frame::Body::ClusterInfo(info)) => Ok(info),
        _ => Err("answered with something other than the cluster's members".into()),
    }
}

fn read<S: Read>(s: &mut S) -> Result<PeerFrame, String> {
    let mut head = [0u8; 8];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(head[4..].try_into().expect("4 bytes"));
    if len > MAX_FRAME {
        return Err(format!("a frame of {len} bytes"));
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).map_err(|e| e.to_string())?;
    if crc32fast::hash(&payload) != crc {
        return Err("a frame's checksum does not match".into());
    }
    PeerFrame::decode(payload.as_slice()).map_err(|e| e.to_string())
}
