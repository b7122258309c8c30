//! The member's files under --data-dir, laid out as etcd lays out its own:
//!
//! ```text
//! member/identity      this member's name, ID and cluster ID (written once, at bootstrap)
//! member/wal/          the write-ahead log (raft entries, hard state, snapshot markers)
//! member/db            the backend (B+tree)
//! member/snap/         snapshots received from a leader: <index>.db.part while streaming,
//!                      <index>.db once complete and checked, until installed as member/db
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message as _;

use crate::proto::corekvpb::MemberIdentity;

#[derive(Clone, Debug)]
pub struct DataDir {
    member: PathBuf,
}

impl DataDir {
    pub fn new(data_dir: &Path) -> DataDir {
        DataDir {
            member: data_dir.join("member"),
        }
    }

    pub fn member(&self) -> &Path {
        &self.member
    }

    pub fn wal(&self) -> PathBuf {
        self.member.join("wal")
    }

    pub fn db(&self) -> PathBuf {
        self.member.join("db")
    }

    pub fn snap(&self) -> PathBuf {
        self.member.join("snap")
    }

    fn identity_path(&self) -> PathBuf {
        self.member.join("identity")
    }

    /// Where a complete received snapshot at `index` waits to be installed.
    pub fn received_snapshot(&self, index: u64) -> PathBuf {
        self.snap().join(format!("{index:016x}.db"))
    }

    /// This member's identity, if the data dir was bootstrapped by a version that writes it.
    pub fn read_identity(&self) -> Result<Option<MemberIdentity>, String> {
        let path = self.identity_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let corrupt = || format!("{} is corrupt (bad length or checksum)", path.display());
        if bytes.len() < 4 {
            return Err(corrupt());
        }
        let (crc, body) = bytes.split_at(4);
        if u32::from_be_bytes(crc.try_into().expect("4 bytes")) != crc32fast::hash(body) {
            return Err(corrupt());
        }
        MemberIdentity::decode(body)
            .map(Some)
            .map_err(|e| format!("{} does not decode: {e}", path.display()))
    }

    /// Writes the identity durably: a temporary file, fsync, rename, fsync of the directory.
    pub fn write_identity(&self, id: &MemberIdentity) -> Result<(), String> {
        let path = self.identity_path();
        let body = id.encode_to_vec();
        let mut bytes = crc32fast::hash(&body).to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        write_durably(&path, &bytes).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// Removes received snapshots other than `keep` (leftovers of an interrupted stream or of
    /// one raft did not take).
    pub fn clean_snapshots(&self, keep: Option<&Path>) {
        let Ok(dir) = std::fs::read_dir(self.snap()) else {
            return;
        };
        for e in dir.flatten() {
            let p = e.path();
            if Some(p.as_path()) != keep {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

/// Writes `path` so that after a crash it holds either its old contents or all of `bytes`.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// Makes a rename or a new file in `path`'s directory durable.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        // A bare file name's parent is "": the current directory.
        Some(dir) if dir.as_os_str().is_empty() => std::fs::File::open(".")?.sync_all(),
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// A snapshot received in full and checked, waiting in member/snap/ for raft to take it.
/// Dropped without being installed, its file goes.
#[derive(Debug)]
pub struct ReceivedSnapshot {
    path: Option<PathBuf>,
}

impl ReceivedSnapshot {
    pub fn new(path: PathBuf) -> ReceivedSnapshot {
        ReceivedSnapshot { path: Some(path) }
    }

    pub fn path(&self) -> &Path {
        self.path.as_deref().expect("not yet taken")
    }

    /// Moves the file to `to` (atomically, durably); from then on it is the caller's.
    pub fn install_as(mut self, to: &Path) -> std::io::Result<()> {
        let from = self.path.take().expect("not yet taken");
        std::fs::rename(&from, to)?;
        sync_parent(to)
    }
}

impl Drop for ReceivedSnapshot {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::new(dir.path());
        std::fs::create_dir_all(d.member()).unwrap();
        assert_eq!(d.read_identity().unwrap(), None);
        let id = MemberIdentity {
            name: "a".into(),
            member_id: 7,
            cluster_id: 9,
        };
        d.write_identity(&id).unwrap();
        assert_eq!(d.read_identity().unwrap(), Some(id));
        let path = d.member().join("identity");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let e = d.read_identity().unwrap_err();
        assert!(e.contains("corrupt"), "{e}");
    }

    #[test]
    fn an_uninstalled_received_snapshot_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.db");
        std::fs::write(&a, b"x").unwrap();
        drop(ReceivedSnapshot::new(a.clone()));
        assert!(!a.exists());
        std::fs::write(&a, b"y").unwrap();
        let b = dir.path().join("b.db");
        ReceivedSnapshot::new(a.clone()).install_as(&b).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"y");
    }
}
