//! `lock` and `elect`, on the concurrency recipes (same keys as etcd's, so they interoperate
//! with etcdctl).

use clap::Args;

use super::{
    command_failure, connect, termination_signals, until_signal, CtlError, Global, Printer,
    EXIT_BAD_ARGS, EXIT_ERROR,
};
use crate::client::concurrency::{observe_election, Election, Mutex, Session};
use crate::client::{Client, ClientError};
use crate::proto::etcdserverpb as pb;

#[derive(Args, Debug)]
pub struct LockArgs {
    /// timeout for session
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,
    /// <lockname> [exec-command arg1 arg2 ...]
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ElectArgs {
    /// observation mode
    #[arg(short = 'l', long)]
    pub listen: bool,
    /// <election-name> [proposal]
    pub args: Vec<String>,
}

/// etcd's default session TTL (what `elect` uses).
const DEFAULT_SESSION_TTL: i64 = 60;

fn rpc(e: ClientError) -> CtlError {
    CtlError::new(EXIT_ERROR, e.to_string())
}

/// Prints `key` as etcdctl does after winning a lock or an election (a get of it); `lost` is
/// the error when the key is already gone.
async fn print_key(
    printer: &Printer,
    client: &Client,
    key: &[u8],
    lost: Option<&str>,
) -> Result<(), CtlError> {
    let resp = client
        .range(pb::RangeRequest {
            key: key.to_vec().into(),
            ..Default::default()
        })
        .await
        .map_err(rpc)?;
    if let (true, Some(msg)) = (resp.kvs.is_empty(), lost) {
        return Err(CtlError::new(EXIT_ERROR, msg));
    }
    printer.get(&resp)
}

pub async fn lock(g: &Global, a: LockArgs) -> Result<(), CtlError> {
    // Like pflag, the first `--` only separates (clap keeps it in a trailing list).
    let mut args = a.args.clone();
    if let Some(i) = args.iter().position(|x| x == "--") {
        args.remove(i);
    }
    let Some((name, cmd)) = args.split_first() else {
        return Err(CtlError::new(
            EXIT_BAD_ARGS,
            "lock takes a lock name argument and an optional command to execute",
        ));
    };
    let printer = g.printer()?;
    let client = connect(g).await?;
    let signals = termination_signals();
    let ttl = if a.ttl > 0 {
        a.ttl
    } else {
        DEFAULT_SESSION_TTL
    };
    let session = Session::new(&client, ttl).await.map_err(rpc)?;
    let mut mutex = Mutex::new(&session, name);
    // A signal while waiting gives up (the key is removed with the session's lease).
    match until_signal(&signals, mutex.lock()).await {
        None => {
            let _ = session.close().await;
            return Err(CtlError::new(EXIT_ERROR, "context canceled"));
        }
        Some(r) => r.map_err(rpc)?,
    }
    if !cmd.is_empty() {
        let rev = mutex.header().map_or(0, |h| h.revision);
        let key = String::from_utf8_lossy(mutex.key()).into_owned();
        let status = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .env("ETCD_LOCK_KEY", key)
            .env("ETCD_LOCK_REV", rev.to_string())
            .status();
        let unlocked = mutex.unlock().await;
        let _ = session.close().await;
        return match command_failure(status) {
            None => unlocked.map_err(rpc),
            Some(f) => Err(CtlError::new(EXIT_ERROR, f)),
        };
    }
    print_key(&printer, &client, mutex.key(), Some("lock lost on init")).await?;
    if until_signal(&signals, session.done()).await.is_none() {
        let r = mutex.unlock().await.map_err(rpc);
        let _ = session.close().await;
        return r;
    }
    Err(CtlError::new(EXIT_ERROR, "session expired"))
}

pub async fn elect(g: &Global, a: ElectArgs) -> Result<(), CtlError> {
    if a.args.len() != 1 && a.args.len() != 2 {
        return Err(CtlError::new(
            EXIT_BAD_ARGS,
            "elect takes one election name argument and an optional proposal argument",
        ));
    }
    let printer = g.printer()?;
    let client = connect(g).await?;
    let name = &a.args[0];
    if a.args.len() == 1 {
        if !a.listen {
            return Err(CtlError::new(
                EXIT_BAD_ARGS,
                "no proposal argument but -l not set",
            ));
        }
        let signals = termination_signals();
        let mut failed = None;
        let observing = observe_election(&client, name, |resp| {
            if failed.is_none() {
                failed = printer.get(&resp).err();
            }
        });
        let observed = until_signal(&signals, observing).await;
        if let Some(e) = failed {
            return Err(e);
        }
        return match observed {
            None => Ok(()),
            Some(_) => Err(CtlError::new(EXIT_ERROR, "elect: observer lost")),
        };
    }
    if a.listen {
        return Err(CtlError::new(EXIT_BAD_ARGS, "proposal given but -l is set"));
    }
    let signals = termination_signals();
    let session = Session::new(&client, DEFAULT_SESSION_TTL)
        .await
        .map_err(rpc)?;
    let mut election = Election::new(&session, name);
    match until_signal(&signals, election.campaign(a.args[1].as_bytes())).await {
        None => {
            let _ = election.resign().await;
            let _ = session.close().await;
            return Err(CtlError::new(EXIT_ERROR, "context canceled"));
        }
        Some(r) => r.map_err(rpc)?,
    }
    print_key(&printer, &client, election.key(), None).await?;
    if until_signal(&signals, session.done()).await.is_some() {
        return Err(CtlError::new(EXIT_ERROR, "elect: session expired"));
    }
    let r = election.resign().await.map_err(rpc);
    let _ = session.close().await;
    r
}
