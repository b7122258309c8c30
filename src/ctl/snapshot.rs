//! snapshot save / status / restore, with etcdctl 3.4's arguments, flags, output and errors.
//!
//! A snapshot file is what Maintenance.Snapshot streams, as etcdctl saves it: the member's
//! backend (corekv's B+tree file, not etcd's bolt db), then the 32-byte SHA-256 of it. etcd
//! tells the two apart by length (a backend is a whole number of 512-byte units, so a file 32
//! bytes past one carries the digest); so does corekvctl.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use sha2::{Digest, Sha256};

use super::etcd_snapshot::EtcdFile;
use super::print::{err, out};
use super::{connect_with, CtlError, Global, EXIT_BAD_ARGS, EXIT_ERROR, EXIT_INTERRUPTED};
use crate::client::ClientError;
use crate::proto::etcdserverpb as pb;
use crate::server::datadir::{sync_parent, DataDir};
use crate::storage::{Bucket, Db, DbOptions, ReadOnlyFile};

const DIGEST_LEN: usize = 32;

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Stores an etcd node backend snapshot to a given file
    Save {
        /// <filename>
        args: Vec<String>,
    },
    /// Gets backend snapshot status of a given file
    Status {
        /// <filename>
        args: Vec<String>,
    },
    /// Restores an etcd member snapshot to an etcd directory
    Restore(RestoreArgs),
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Path to the data directory
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Initial cluster configuration for restore bootstrap
    #[arg(long, default_value = "default=http://localhost:2380")]
    initial_cluster: String,
    /// Initial cluster token for the etcd cluster during restore bootstrap
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster
    #[arg(long, default_value = "http://localhost:2380")]
    initial_advertise_peer_urls: String,
    /// Human-readable name for this member
    #[arg(long, default_value = "default")]
    name: String,
    /// Ignore snapshot integrity hash value (required if copied from data directory)
    #[arg(long)]
    skip_hash_check: bool,
    /// <filename>
    args: Vec<String>,
}

pub async fn run(g: &Global, cmd: SnapshotCmd) -> Result<(), CtlError> {
    match cmd {
        SnapshotCmd::Save { args } => {
            let path = one_arg(args, "snapshot save expects one argument")?;
            save(g, &path).await
        }
        SnapshotCmd::Status { args } => {
            let path = one_arg(args, "snapshot status requires exactly one argument")?;
            let printer = g.local_printer()?;
            let status = status(Path::new(&path)).map_err(|e| CtlError::new(EXIT_ERROR, e))?;
            printer.snapshot_status(&status)
        }
        SnapshotCmd::Restore(a) => {
            let path = one_arg(
                a.args.clone(),
                "snapshot restore requires exactly one argument",
            )?;
            restore(&a, Path::new(&path))
                .await
                .map_err(|e| CtlError::new(EXIT_ERROR, e))
        }
    }
}

fn one_arg(args: Vec<String>, msg: &str) -> Result<String, CtlError> {
    match <[String; 1]>::try_from(args) {
        Ok([a]) => Ok(a),
        Err(_) => Err(CtlError::new(EXIT_BAD_ARGS, msg)),
    }
}

// ---- save -------------------------------------------------------------------------------------

/// Streams the snapshot into `<path>.part`, checks its digest, makes it durable and renames it
/// to `path`; the partial file is removed on any failure.
async fn save(g: &Global, path: &str) -> Result<(), CtlError> {
    if g.endpoints.len() != 1 {
        return Err(CtlError::new(
            EXIT_INTERRUPTED,
            format!(
                "snapshot must be requested to one selected node, not multiple [{}]",
                g.endpoints.join(" ")
            ),
        ));
    }
    g.printer()?;
    // etcdctl exits with ExitInterrupted for every failure of the save itself.
    let client = connect_with(g.client_options()?)
        .await
        .map_err(|e| CtlError {
            code: EXIT_INTERRUPTED,
            ..e
        })?;
    let part = PathBuf::from(format!("{path}.part"));
    let result = fetch_into(&client, &part).await;
    let result = result.and_then(|size| {
        std::fs::rename(&part, path)
            .and_then(|()| sync_parent(Path::new(path)))
            .map_err(|e| {
                CtlError::new(
                    EXIT_INTERRUPTED,
                    format!("could not rename {} to {path} ({e})", part.display()),
                )
            })
            .map(|()| size)
    });
    match result {
        Ok(size) => {
            err(&format!(
                "fetched snapshot ({} bytes, sha256 checked), saved at {path}\n",
                size
            ));
            out(&format!("Snapshot saved at {path}\n"));
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// Writes the stream into `part`, fsynced; the file's size.
async fn fetch_into(client: &crate::client::Client, part: &Path) -> Result<u64, CtlError> {
    let io = |what: &str, e: std::io::Error| {
        CtlError::new(EXIT_INTERRUPTED, format!("{what} {} ({e})", part.display()))
    };
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(part)
            .map_err(|e| io("could not open", e))?
    };
    let (mut tx, mut rx) = client
        .streaming::<pb::SnapshotRequest, pb::SnapshotResponse>(crate::client::path::SNAPSHOT)
        .await
        .map_err(interrupted)?;
    tx.send_last(&pb::SnapshotRequest {})
        .await
        .map_err(interrupted)?;
    // Every message is written; the last one is the digest of those before it, so each is
    // hashed only once the next one shows it was not the last.
    let mut digest = Sha256::new();
    let mut held: Option<bytes::Bytes> = None;
    let mut size = 0u64;
    while let Some(msg) = rx.message().await.map_err(interrupted)? {
        if let Some(prev) = held.replace(msg.blob) {
            digest.update(&prev);
        }
        let blob = held.as_ref().expect("just set");
        file.write_all(blob).map_err(|e| io("writing", e))?;
        size += blob.len() as u64;
    }
    let sent = held.unwrap_or_default();
    if !has_digest(size) || sent.len() != DIGEST_LEN {
        return Err(CtlError::new(
            EXIT_INTERRUPTED,
            format!("sha256 checksum not found [bytes: {size}]"),
        ));
    }
    if digest.finalize().as_slice() != sent.as_ref() {
        return Err(CtlError::new(
            EXIT_INTERRUPTED,
            "the snapshot's sha256 does not match the bytes received",
        ));
    }
    file.sync_all().map_err(|e| io("syncing", e))?;
    Ok(size)
}

fn interrupted(e: ClientError) -> CtlError {
    CtlError::new(EXIT_INTERRUPTED, e.to_string())
}

/// Whether a file of `size` bytes ends with a digest (etcd's test: a backend is a whole number
/// of 512-byte units).
fn has_digest(size: u64) -> bool {
    size % 512 == DIGEST_LEN as u64
}

// ---- reading a snapshot file -----------------------------------------------------------------

/// A snapshot file whose digest matched (or was not asked for) and whose backend passed its
/// full check (every page checksum, the tree's structure).
struct Checked {
    file: std::fs::File,
    /// Bytes of backend (the file without its digest).
    db_len: u64,
    db: Db,
}

/// Checks the SHA-256 at the end of `file` (of `size` bytes) if it has one; the bytes of
/// backend before it.
fn check_digest(
    file: &mut std::fs::File,
    name: &str,
    size: u64,
    require_digest: bool,
) -> Result<u64, String> {
    if has_digest(size) {
        let db_len = size - DIGEST_LEN as u64;
        let mut digest = Sha256::new();
        let mut left = db_len;
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let n = buf.len().min(left as usize);
            file.read_exact(&mut buf[..n])
                .map_err(|e| format!("reading {name}: {e}"))?;
            digest.update(&buf[..n]);
            left -= n as u64;
        }
        let mut stored = [0u8; DIGEST_LEN];
        file.read_exact(&mut stored)
            .map_err(|e| format!("reading {name}: {e}"))?;
        let computed = digest.finalize();
        if computed.as_slice() != stored {
            return Err(format!(
                "{name}: expected sha256 {}, got {} (the file is damaged or truncated)",
                hex(&stored),
                hex(&computed)
            ));
        }
        Ok(db_len)
    } else if require_digest {
        Err(format!(
            "snapshot missing hash but --skip-hash-check=false ({name} is {size} bytes, not a \
             backend followed by its sha256: truncated, or not a snapshot file)"
        ))
    } else {
        Ok(size)
    }
}

/// A checked snapshot file: corekv's backend, or etcd's bolt db.
enum Source {
    Corekv(Checked),
    Etcd(EtcdFile),
}

/// Reads and checks `path` without writing anything: the digest, then every page of a corekv
/// backend, or every page and record of an etcd one.
fn open_source(path: &Path, require_digest: bool) -> Result<Source, String> {
    let name = path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(|e| format!("open {name}: {e}"))?;
    let size = file
        .metadata()
        .map_err(|e| format!("stat {name}: {e}"))?
        .len();
    let db_len = check_digest(&mut file, &name, size, require_digest)?;
    if is_bolt(&file) {
        return EtcdFile::open(&file, db_len, &name).map(Source::Etcd);
    }
    let layer = ReadOnlyFile {
        file: file.try_clone().map_err(|e| format!("open {name}: {e}"))?,
        len: db_len,
    };
    let not_backend = |e: crate::storage::StorageError| {
        format!("{name} is not a corekv or etcd snapshot, or is damaged: {e}")
    };
    let db = Db::open_with_layer(std::sync::Arc::new(layer), DbOptions::default())
        .map_err(not_backend)?;
    if let Some(note) = db.recovery_note() {
        return Err(format!("{name} is damaged: {note}"));
    }
    db.check()
        .map_err(|e| format!("snapshot file integrity check failed: {name}: {e}"))?;
    Ok(Source::Corekv(Checked { file, db_len, db }))
}

/// Reads and checks a corekv snapshot file without writing anything.
fn open_checked(path: &Path, require_digest: bool) -> Result<Checked, String> {
    match open_source(path, require_digest)? {
        Source::Corekv(c) => Ok(c),
        Source::Etcd(_) => Err(format!(
            "{} is an etcd (bolt) snapshot: corekvctl restores it (`snapshot restore`) but does \
             not report its status",
            path.display()
        )),
    }
}

/// Whether the file starts with a bolt meta page (etcd's backend): its magic, 0xED0CDAED, at
/// byte 16.
fn is_bolt(file: &std::fs::File) -> bool {
    use std::os::unix::fs::FileExt;
    let mut magic = [0u8; 4];
    file.read_exact_at(&mut magic, 16).is_ok() && u32::from_le_bytes(magic) == 0xED0C_DAED
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---- status -----------------------------------------------------------------------------------

/// What `snapshot status` reports, with etcd's field names in JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// Maintenance.Hash of the backend in the file (what `endpoint hash` answered for the
    /// member's state the snapshot holds).
    pub hash: u32,
    /// The newest revision in the key bucket.
    pub revision: i64,
    /// Entries over all buckets.
    pub total_key: u64,
    /// Bytes of backend.
    pub total_size: u64,
}

pub fn status(path: &Path) -> Result<SnapshotStatus, String> {
    let c = open_checked(path, false)?;
    let txn = c.db.begin_read();
    let storage = |e: crate::storage::StorageError| format!("reading {}: {e}", path.display());
    let hash = crate::server::apply::backend_hash(|b| {
        txn.range(
            b,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            false,
        )
    })
    .map_err(storage)?;
    let mut total_key = 0;
    for b in Bucket::ALL {
        total_key += txn
            .count(b, std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
            .map_err(storage)?;
    }
    let newest = txn
        .range(
            Bucket::Key,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            true,
        )
        .next()
        .transpose()
        .map_err(storage)?;
    let revision = match newest {
        Some((k, _)) => crate::mvcc::decode_rev(k)
            .map(|(r, _)| r.main)
            .ok_or_else(|| format!("{}: a key revision does not decode", path.display()))?,
        None => 0,
    };
    Ok(SnapshotStatus {
        hash,
        revision,
        total_key,
        total_size: c.db_len,
    })
}

// ---- restore ----------------------------------------------------------------------------------

/// Builds a new data dir from a snapshot: the backend, checked, without its old cluster's
/// members and applied index, then the identity, members and first WAL records of a new
/// cluster's member, exactly as a first start writes them.
async fn restore(a: &RestoreArgs, snapshot: &Path) -> Result<(), String> {
    let mut argv: Vec<std::ffi::OsString> = vec!["corekv".into()];
    for (flag, value) in [
        ("--name", a.name.as_str()),
        ("--initial-cluster", a.initial_cluster.as_str()),
        ("--initial-cluster-token", a.initial_cluster_token.as_str()),
        (
            "--initial-advertise-peer-urls",
            a.initial_advertise_peer_urls.as_str(),
        ),
    ] {
        argv.push(flag.into());
        argv.push(value.into());
    }
    if let Some(d) = &a.data_dir {
        argv.push("--data-dir".into());
        argv.push(d.clone().into());
    }
    let flags = <crate::config::Flags as clap::Parser>::try_parse_from(argv)
        .map_err(|e| e.to_string().trim().to_string())?;
    let given_dir = flags
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.corekv", a.name)));
    let cfg = crate::config::Config::from_flags(flags).map_err(|e| e.to_string())?;
    let data_dir = cfg.data_dir.clone();
    let existed = data_dir.exists();
    if existed
        && std::fs::read_dir(&data_dir)
            .map_err(|e| format!("data-dir {:?}: {e}", given_dir.display().to_string()))?
            .next()
            .is_some()
    {
        return Err(format!(
            "data-dir {:?} exists",
            given_dir.display().to_string()
        ));
    }
    // Everything is checked before anything is written.
    let source = open_source(snapshot, !a.skip_hash_check)?;
    let etcd_note = match &source {
        Source::Etcd(e) => Some(e.summary),
        Source::Corekv(_) => None,
    };
    let result = write_data_dir(&cfg, source).await;
    if result.is_err() {
        if existed {
            if let Ok(entries) = std::fs::read_dir(&data_dir) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(&data_dir);
        }
    }
    let (member_id, cluster_id) = result?;
    let mut j = super::json::Json::new();
    j.begin_obj();
    j.str("level", "info");
    j.str("msg", "restored snapshot");
    j.str("path", &snapshot.display().to_string());
    j.str("data-dir", &data_dir.display().to_string());
    j.str("member-id", &format!("{member_id:x}"));
    j.str("cluster-id", &format!("{cluster_id:x}"));
    if let Some(e) = etcd_note {
        j.str("from", "etcd (bolt) snapshot");
        j.str("etcd-revision", &e.revision.to_string());
        j.str("etcd-compact-revision", &e.compact_revision.to_string());
        j.str("etcd-consistent-index", &e.consistent_index.to_string());
        j.str("keys", &(e.key_entries as i64).to_string());
        j.str("leases", &(e.leases as i64).to_string());
    }
    j.end_obj();
    err(&(j.finish() + "\n"));
    Ok(())
}

async fn write_data_dir(cfg: &crate::config::Config, source: Source) -> Result<(u64, u64), String> {
    let dd = DataDir::new(&cfg.data_dir);
    std::fs::create_dir_all(dd.member())
        .map_err(|e| format!("creating {}: {e}", dd.member().display()))?;
    let db_path = dd.db();
    match source {
        Source::Corekv(Checked {
            mut file,
            db_len,
            db,
        }) => {
            drop(db);
            copy_prefix(&mut file, db_len, &db_path)?;
            crate::server::apply::forget_cluster(&db_path)
                .map_err(|e| format!("clearing the old members from {}: {e}", db_path.display()))?;
        }
        Source::Etcd(e) => e.write_backend(&db_path)?,
    }
    let (wal, _) = crate::launch::open_wal(cfg).await?;
    crate::launch::bootstrap_new_member(cfg, &wal).await?;
    wal.close()
        .await
        .map_err(|e| format!("closing the WAL in {}: {e}", dd.wal().display()))?;
    Ok((cfg.member_id, cfg.cluster_id))
}

/// Copies the first `len` bytes of `from` into a new file `to`, durably.
fn copy_prefix(from: &mut std::fs::File, len: u64, to: &Path) -> Result<(), String> {
    use std::io::Seek;
    from.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| e.to_string())?;
    let mut out =
        std::fs::File::create(to).map_err(|e| format!("creating {}: {e}", to.display()))?;
    let copied = std::io::copy(&mut from.take(len), &mut out)
        .map_err(|e| format!("writing {}: {e}", to.display()))?;
    if copied != len {
        return Err(format!("the snapshot ended after {copied} of {len} bytes"));
    }
    out.sync_all()
        .map_err(|e| format!("syncing {}: {e}", to.display()))?;
    sync_parent(to).map_err(|e| format!("syncing {}: {e}", to.display()))
}
