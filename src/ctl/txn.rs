//! `txn`: etcdctl's transaction syntax, read from stdin (with prompts when `-i`).
//!
//! Three blocks, each ended by an empty line: compares (`mod("k") > "5"`, `value("k") = "v"`,
//! `ver(..)`, `create(..)`, `lease(..)`), then the success ops and the failure ops, each a
//! `get`/`put`/`del` command line with the same flags as the commands themselves.

use std::io::BufRead;

use clap::{Args, Parser, Subcommand};

use super::gofmt::{argify, parse_int, quote, scan_quoted};
use super::kv::{DelArgs, GetArgs, PutArgs};
use super::print::out;
use super::{connect, CtlError, Global, EXIT_BAD_ARGS, EXIT_INVALID_INPUT};
use crate::proto::etcdserverpb as pb;
use pb::compare::{CompareResult, CompareTarget, TargetUnion};

#[derive(Args, Debug)]
pub struct TxnArgs {
    /// Input transaction in interactive mode
    #[arg(short = 'i', long)]
    pub interactive: bool,
    pub args: Vec<String>,
}

/// One request line of a txn: the get, put and del commands.
#[derive(Parser, Debug)]
#[command(no_binary_name = true, infer_subcommands = true)]
struct OpLine {
    #[command(subcommand)]
    op: Op,
}

#[derive(Subcommand, Debug)]
enum Op {
    Get(GetArgs),
    Put(PutArgs),
    Del(DelArgs),
}

fn invalid(msg: String) -> CtlError {
    CtlError::new(EXIT_INVALID_INPUT, msg)
}

/// Reads one line; like Go's `ReadString('\n')`, a last line without a newline is an error.
fn read_line(r: &mut impl BufRead) -> Result<String, CtlError> {
    let mut buf = Vec::new();
    match r.read_until(b'\n', &mut buf) {
        Ok(_) if buf.ends_with(b"\n") => Ok(String::from_utf8_lossy(&buf).into_owned()),
        Ok(_) => Err(invalid("EOF".into())),
        Err(e) => Err(invalid(e.to_string())),
    }
}

/// Reads lines until an empty one, parsing each with `parse`.
fn read_block<T>(
    r: &mut impl BufRead,
    parse: impl Fn(&str) -> Result<T, CtlError>,
) -> Result<Vec<T>, CtlError> {
    let mut items = Vec::new();
    loop {
        let line = read_line(r)?;
        let line = line.trim();
        if line.is_empty() {
            return Ok(items);
        }
        items.push(parse(line)?);
    }
}

/// Parses one compare line (etcdctl's `parseCompare`).
pub fn parse_compare(line: &str) -> Result<pb::Compare, CtlError> {
    let Some((target, rest)) = line.split_once('(') else {
        return Err(invalid(format!("malformed comparison: {line}")));
    };
    // fmt.Sscanf(rest, "%q) %s %q", &key, &op, &val)
    let mut key = Vec::new();
    let mut op = String::new();
    let mut val = Vec::new();
    let mut n = 0;
    if let Some((k, after)) = scan_quoted(rest) {
        key = k;
        n = 1;
        if let Some(after) = after.strip_prefix(')') {
            let after = after.trim_start_matches([' ', '\t', '\r']);
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            if end > 0 {
                op = after[..end].to_string();
                n = 2;
                if let Some((v, _)) = scan_quoted(&after[end..]) {
                    val = v;
                    n = 3;
                }
            }
        }
    }
    if n != 3 {
        return Err(invalid(format!(
            "malformed comparison: {line}; got {target}({}) {op} {}",
            quote(&key),
            quote(&val)
        )));
    }
    let result = match op.as_str() {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        _ => {
            return Err(invalid(format!(
                "malformed comparison: {line} (unknown operator {op})"
            )))
        }
    };
    let bad = || invalid(format!("invalid txn compare request: {line}"));
    let int = |base| parse_int(&String::from_utf8_lossy(&val), base).map_err(|_| bad());
    let (target, union) = match target {
        "ver" | "version" => (CompareTarget::Version, TargetUnion::Version(int(10)?)),
        "c" | "create" => (CompareTarget::Create, TargetUnion::CreateRevision(int(10)?)),
        "m" | "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(int(10)?)),
        "val" | "value" => (CompareTarget::Value, TargetUnion::Value(val.clone().into())),
        // etcdctl 3.4 crashes on lease compares; corekvctl takes the lease ID in hex, as --lease.
        "lease" => (CompareTarget::Lease, TargetUnion::Lease(int(16)?)),
        other => {
            return Err(invalid(format!(
                "malformed comparison: {line} (unknown target {other})"
            )))
        }
    };
    Ok(pb::Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        range_end: Default::default(),
        target_union: Some(union),
    })
}

/// cobra's usage text for the commands a txn line can hold (`name` may be a prefix).
fn usage(name: &str) -> Option<&'static str> {
    const GET: &str = r#"Usage:
   get [options] <key> [range_end] [flags]

Flags:
      --consistency string   Linearizable(l) or Serializable(s) (default "l")
      --from-key             Get keys that are greater than or equal to the given key using byte compare
  -h, --help                 help for get
      --keys-only            Get only the keys
      --limit int            Maximum number of results
      --order string         Order of results; ASCEND or DESCEND (ASCEND by default)
      --prefix               Get keys with matching prefix
      --print-value-only     Only write values when using the "simple" output format
      --rev int              Specify the kv revision
      --sort-by string       Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION

"#;
    const PUT: &str = r#"Usage:
   put [options] <key> <value> (<value> can also be given from stdin) [flags]

Flags:
  -h, --help           help for put
      --ignore-lease   updates the key using its current lease
      --ignore-value   updates the key using its current value
      --lease string   lease ID (in hexadecimal) to attach to the key (default "0")
      --prev-kv        return the previous key-value pair before modification

"#;
    const DEL: &str = r#"Usage:
   del [options] <key> [range_end] [flags]

Flags:
      --from-key   delete keys that are greater than or equal to the given key using byte compare
  -h, --help       help for del
      --prefix     delete keys with matching prefix
      --prev-kv    return deleted key-value pairs

"#;
    [("get", GET), ("put", PUT), ("del", DEL)]
        .into_iter()
        .find(|(cmd, _)| !name.is_empty() && cmd.starts_with(name))
        .map(|(_, u)| u)
}

/// Parses one request line (etcdctl's `parseRequestUnion`).
pub fn parse_op(line: &str) -> Result<pb::RequestOp, CtlError> {
    use pb::request_op::Request;
    let args = argify(line).map_err(invalid)?;
    if args.len() < 2 {
        return Err(invalid(format!("invalid txn compare request: {line}")));
    }
    let parsed = OpLine::try_parse_from(&args).map_err(|e| {
        // cobra shows the usage of a command whose flags failed to parse.
        if e.kind() != clap::error::ErrorKind::InvalidSubcommand {
            if let Some(usage) = usage(&args[0]) {
                super::print::err(usage);
            }
        }
        invalid(format!("invalid txn request: {line}"))
    })?;
    let request = match parsed.op {
        Op::Get(a) => Request::RequestRange(a.request()?),
        Op::Put(a) => Request::RequestPut(a.request(false)?),
        Op::Del(a) => Request::RequestDeleteRange(a.request()?),
    };
    Ok(pb::RequestOp {
        request: Some(request),
    })
}

/// Reads a whole transaction from `r`, printing the prompts when `interactive`.
pub fn read_txn(r: &mut impl BufRead, interactive: bool) -> Result<pb::TxnRequest, CtlError> {
    let prompt = |s: &str| {
        if interactive {
            out(&format!("{s}\n"));
        }
    };
    prompt("compares:");
    let compare = read_block(r, parse_compare)?;
    prompt("success requests (get, put, del):");
    let success = read_block(r, parse_op)?;
    prompt("failure requests (get, put, del):");
    let failure = read_block(r, parse_op)?;
    Ok(pb::TxnRequest {
        compare,
        success,
        failure,
    })
}

pub async fn run(g: &Global, a: TxnArgs) -> Result<(), CtlError> {
    if !a.args.is_empty() {
        return Err(CtlError::new(
            EXIT_BAD_ARGS,
            "txn command does not accept argument",
        ));
    }
    let printer = g.printer()?;
    let client = connect(g).await?;
    let req = read_txn(&mut std::io::stdin().lock(), a.interactive)?;
    let resp = client.txn(req).await.map_err(CtlError::rpc)?;
    printer.txn(&resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compares_like_etcdctl() {
        let c = parse_compare(r#"mod("k1") > "0""#).unwrap();
        assert_eq!(c.key, "k1");
        assert_eq!(c.result, CompareResult::Greater as i32);
        assert_eq!(c.target_union, Some(TargetUnion::ModRevision(0)));
        let c = parse_compare(r#"value("a b") != "x y""#).unwrap();
        assert_eq!(c.target_union, Some(TargetUnion::Value("x y".into())));
        let e = parse_compare(r#"mod("k1") > 0"#).unwrap_err();
        assert_eq!(
            e.msg.unwrap(),
            r#"malformed comparison: mod("k1") > 0; got mod("k1") > """#
        );
        let e = parse_compare(r#"ver("k") = "x""#).unwrap_err();
        assert_eq!(
            e.msg.unwrap(),
            r#"invalid txn compare request: ver("k") = "x""#
        );
    }

    #[test]
    fn reads_a_whole_txn() {
        let input = "value(\"k\") = \"v\"\n\nput k v2\nget k --prefix\n\ndel k\n\n";
        let t = read_txn(&mut input.as_bytes(), false).unwrap();
        assert_eq!(
            (t.compare.len(), t.success.len(), t.failure.len()),
            (1, 2, 1)
        );
        let e = read_txn(&mut "value(\"k\") = \"v\"\n\n".as_bytes(), false).unwrap_err();
        assert_eq!(e.msg.unwrap(), "EOF");
    }
}
