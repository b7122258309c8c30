//! get, put, del, compaction — and the request building `txn` shares with them.

use std::io::Read;

use clap::Args;

use super::gofmt::parse_int;
use super::{connect, CtlError, Global, EXIT_BAD_ARGS, EXIT_BAD_FEATURE, EXIT_ERROR};
use crate::client::prefix_range_end;
use crate::proto::etcdserverpb as pb;
use pb::range_request::{SortOrder, SortTarget};

#[derive(Args, Debug, Clone, Default)]
pub struct GetArgs {
    /// Linearizable(l) or Serializable(s)
    #[arg(long, default_value = "l")]
    pub consistency: String,
    /// Order of results; ASCEND or DESCEND (ASCEND by default)
    #[arg(long, default_value = "")]
    pub order: String,
    /// Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION
    #[arg(long, default_value = "")]
    pub sort_by: String,
    /// Maximum number of results
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub limit: i64,
    /// Get keys with matching prefix
    #[arg(long)]
    pub prefix: bool,
    /// Get keys that are greater than or equal to the given key using byte compare
    #[arg(long)]
    pub from_key: bool,
    /// Specify the kv revision
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub rev: i64,
    /// Get only the keys
    #[arg(long)]
    pub keys_only: bool,
    /// Get only the count (etcdctl 3.5; with --write-out=fields)
    #[arg(long)]
    pub count_only: bool,
    /// Only write values when using the "simple" output format
    #[arg(long)]
    pub print_value_only: bool,
    /// <key> [range_end]
    pub args: Vec<String>,
}

fn bad_args(msg: &str) -> CtlError {
    CtlError::new(EXIT_BAD_ARGS, msg)
}

const PREFIX_AND_FROM_KEY: &str =
    "`--prefix` and `--from-key` cannot be set at the same time, choose one";
const TOO_MANY_WITH_PREFIX: &str =
    "too many arguments, only accept one argument when `--prefix` or `--from-key` is set";

/// The key and range end for a key argument with an optional range end, `--prefix` or
/// `--from-key`, as clientv3's options set them.
fn key_range(key: &str, end: Option<&str>, prefix: bool, from_key: bool) -> (Vec<u8>, Vec<u8>) {
    let mut key = key.as_bytes().to_vec();
    let mut range_end = end.map(|e| e.as_bytes().to_vec()).unwrap_or_default();
    if prefix {
        if key.is_empty() {
            key = vec![0];
            range_end = vec![0];
        } else {
            range_end = prefix_range_end(&key);
        }
    }
    if from_key {
        if key.is_empty() {
            key = vec![0];
        }
        range_end = vec![0];
    }
    (key, range_end)
}

impl GetArgs {
    /// The range request (etcdctl's `getGetOp`), or its argument errors.
    pub fn request(&self) -> Result<pb::RangeRequest, CtlError> {
        if self.args.is_empty() {
            return Err(bad_args(
                "get command needs one argument as key and an optional argument as range_end",
            ));
        }
        if self.prefix && self.from_key {
            return Err(bad_args(PREFIX_AND_FROM_KEY));
        }
        let serializable = match self.consistency.as_str() {
            "s" => true,
            "l" => false,
            other => {
                return Err(CtlError::new(
                    EXIT_BAD_FEATURE,
                    format!(
                        "unknown consistency flag {}",
                        super::gofmt::quote(other.as_bytes())
                    ),
                ))
            }
        };
        if self.args.len() > 1 && (self.prefix || self.from_key) {
            return Err(bad_args(TOO_MANY_WITH_PREFIX));
        }
        let mut order = match self.order.to_uppercase().as_str() {
            "ASCEND" => SortOrder::Ascend,
            "DESCEND" => SortOrder::Descend,
            "" => SortOrder::None,
            _ => {
                return Err(CtlError::new(
                    EXIT_BAD_FEATURE,
                    format!("bad sort order {}", self.order),
                ))
            }
        };
        let target = match self.sort_by.to_uppercase().as_str() {
            "CREATE" => SortTarget::Create,
            "KEY" | "" => SortTarget::Key,
            "MODIFY" => SortTarget::Mod,
            "VALUE" => SortTarget::Value,
            "VERSION" => SortTarget::Version,
            _ => {
                return Err(CtlError::new(
                    EXIT_BAD_FEATURE,
                    format!("bad sort target {}", self.sort_by),
                ))
            }
        };
        // clientv3: the server sorts by key ascending anyway, so that order is sent as none.
        if target == SortTarget::Key && order == SortOrder::Ascend {
            order = SortOrder::None;
        }
        let (key, range_end) = key_range(
            &self.args[0],
            self.args.get(1).map(|s| s.as_str()),
            self.prefix,
            self.from_key,
        );
        Ok(pb::RangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            limit: self.limit,
            revision: self.rev.max(0),
            sort_order: order as i32,
            sort_target: target as i32,
            serializable,
            keys_only: self.keys_only,
            count_only: self.count_only,
            ..Default::default()
        })
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct PutArgs {
    /// lease ID (in hexadecimal) to attach to the key
    #[arg(long, default_value = "0")]
    pub lease: String,
    /// return the previous key-value pair before modification
    #[arg(long)]
    pub prev_kv: bool,
    /// updates the key using its current value
    #[arg(long)]
    pub ignore_value: bool,
    /// updates the key using its current lease
    #[arg(long)]
    pub ignore_lease: bool,
    /// <key> <value> (<value> can also be given from stdin)
    pub args: Vec<String>,
}

const PUT_ARGS: &str = "put command needs 1 argument and input from stdin or 2 arguments";

impl PutArgs {
    /// The put request (etcdctl's `getPutOp`); reads the value from stdin when not given and
    /// `stdin` allows it.
    pub fn request(&self, stdin: bool) -> Result<pb::PutRequest, CtlError> {
        if self.args.is_empty() {
            return Err(bad_args(PUT_ARGS));
        }
        if self.ignore_value && self.args.len() > 1 {
            return Err(bad_args(
                "put command needs only 1 argument when 'ignore-value' is set",
            ));
        }
        let value = if self.ignore_value {
            Vec::new()
        } else if let Some(v) = self.args.get(1) {
            v.as_bytes().to_vec()
        } else if !stdin {
            return Err(bad_args(PUT_ARGS));
        } else {
            let mut buf = Vec::new();
            let read = std::io::stdin().read_to_end(&mut buf);
            if read.is_err() || buf.is_empty() {
                return Err(bad_args(PUT_ARGS));
            }
            buf
        };
        let lease = parse_int(&self.lease, 16).map_err(|e| {
            CtlError::new(
                EXIT_BAD_ARGS,
                format!("bad lease ID ({e}), expecting ID in Hex"),
            )
        })?;
        Ok(pb::PutRequest {
            key: self.args[0].as_bytes().to_vec().into(),
            value: value.into(),
            lease,
            prev_kv: self.prev_kv,
            ignore_value: self.ignore_value,
            ignore_lease: self.ignore_lease,
        })
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct DelArgs {
    /// delete keys with matching prefix
    #[arg(long)]
    pub prefix: bool,
    /// return deleted key-value pairs
    #[arg(long)]
    pub prev_kv: bool,
    /// delete keys that are greater than or equal to the given key using byte compare
    #[arg(long)]
    pub from_key: bool,
    /// <key> [range_end]
    pub args: Vec<String>,
}

impl DelArgs {
    /// The delete request (etcdctl's `getDelOp`).
    pub fn request(&self) -> Result<pb::DeleteRangeRequest, CtlError> {
        if self.args.is_empty() || self.args.len() > 2 {
            return Err(bad_args(
                "del command needs one argument as key and an optional argument as range_end",
            ));
        }
        if self.prefix && self.from_key {
            return Err(bad_args(PREFIX_AND_FROM_KEY));
        }
        if self.args.len() > 1 && (self.prefix || self.from_key) {
            return Err(bad_args(TOO_MANY_WITH_PREFIX));
        }
        let (key, range_end) = key_range(
            &self.args[0],
            self.args.get(1).map(|s| s.as_str()),
            self.prefix,
            self.from_key,
        );
        Ok(pb::DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: self.prev_kv,
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct CompactionArgs {
    /// 'true' to wait for compaction to physically remove all old revisions
    #[arg(long)]
    pub physical: bool,
    /// <revision>
    #[arg(allow_negative_numbers = true)]
    pub args: Vec<String>,
}

pub async fn get(g: &Global, a: GetArgs) -> Result<(), CtlError> {
    let req = a.request()?;
    let mut printer = g.printer()?;
    let client = connect(g).await?;
    let resp = client.range(req).await.map_err(CtlError::rpc)?;
    if a.count_only && printer.format != super::Format::Fields {
        return Err(bad_args("--count-only is only for `--write-out=fields`"));
    }
    printer.value_only = a.print_value_only;
    printer.get(&resp)
}

pub async fn put(g: &Global, a: PutArgs) -> Result<(), CtlError> {
    let req = a.request(true)?;
    let printer = g.printer()?;
    let client = connect(g).await?;
    let resp = client.put(req).await.map_err(CtlError::rpc)?;
    printer.put(&resp)
}

pub async fn del(g: &Global, a: DelArgs) -> Result<(), CtlError> {
    let req = a.request()?;
    let printer = g.printer()?;
    let client = connect(g).await?;
    let resp = client.delete_range(req).await.map_err(CtlError::rpc)?;
    printer.del(&resp)
}

pub async fn compaction(g: &Global, a: CompactionArgs) -> Result<(), CtlError> {
    if a.args.len() != 1 {
        return Err(bad_args("compaction command needs 1 argument"));
    }
    let rev = parse_int(&a.args[0], 10).map_err(|e| CtlError::new(EXIT_ERROR, e))?;
    g.printer()?;
    let client = connect(g).await?;
    client
        .compact(pb::CompactionRequest {
            revision: rev,
            physical: a.physical,
        })
        .await
        .map_err(CtlError::rpc)?;
    super::print::out(&format!("compacted revision {rev}\n"));
    Ok(())
}
