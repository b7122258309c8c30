//! `lease grant | revoke | timetolive | list | keep-alive`.

use clap::Subcommand;

use super::gofmt::{hex16, parse_int};
use super::print::out;
use super::{connect, CtlError, Format, Global, EXIT_BAD_ARGS, EXIT_BAD_CONNECTION, EXIT_ERROR};
use crate::client::concurrency::keep_alive_loop;
use crate::client::ClientError;
use crate::proto::etcdserverpb as pb;

#[derive(Subcommand, Debug)]
pub enum LeaseCmd {
    /// Creates leases
    Grant {
        /// <ttl>
        #[arg(allow_negative_numbers = true)]
        args: Vec<String>,
    },
    /// Revokes leases
    Revoke {
        /// <leaseID>
        args: Vec<String>,
    },
    /// Get lease information
    Timetolive {
        /// Get keys attached to this lease
        #[arg(long)]
        keys: bool,
        /// <leaseID>
        args: Vec<String>,
    },
    /// List all active leases
    List,
    /// Keeps leases alive (renew)
    KeepAlive {
        /// Resets the keep-alive time to its original value and exits immediately
        #[arg(long)]
        once: bool,
        /// <leaseID>
        args: Vec<String>,
    },
}

fn bad_args(msg: &str) -> CtlError {
    CtlError::new(EXIT_BAD_ARGS, msg)
}

/// A lease ID argument, in hex (etcdctl's `leaseFromArgs`).
fn lease_id(arg: &str) -> Result<i64, CtlError> {
    parse_int(arg, 16).map_err(|e| {
        CtlError::new(
            EXIT_BAD_ARGS,
            format!("bad lease ID arg ({e}), expecting ID in Hex"),
        )
    })
}

fn one_arg<'a>(args: &'a [String], msg: &str) -> Result<&'a str, CtlError> {
    match args {
        [a] => Ok(a),
        _ => Err(bad_args(msg)),
    }
}

pub async fn run(g: &Global, cmd: LeaseCmd) -> Result<(), CtlError> {
    match cmd {
        LeaseCmd::Grant { args } => {
            let ttl = one_arg(&args, "lease grant command needs TTL argument")?;
            let ttl = parse_int(ttl, 10)
                .map_err(|e| CtlError::new(EXIT_BAD_ARGS, format!("bad TTL ({e})")))?;
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client
                .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })
                .await
                .map_err(|e| CtlError::new(EXIT_ERROR, format!("failed to grant lease ({e})")))?;
            printer.grant(&resp)
        }
        LeaseCmd::Revoke { args } => {
            let id = lease_id(one_arg(&args, "lease revoke command needs 1 argument")?)?;
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client
                .lease_revoke(pb::LeaseRevokeRequest { id })
                .await
                .map_err(|e| CtlError::new(EXIT_ERROR, format!("failed to revoke lease ({e})")))?;
            printer.revoke(id, &resp)
        }
        LeaseCmd::Timetolive { keys, args } => {
            let arg = one_arg(&args, "lease timetolive command needs lease ID as argument")?;
            let printer = g.printer()?;
            let client = connect(g).await?;
            let id = lease_id(arg)?;
            let resp = client
                .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys })
                .await
                .map_err(bad_connection)?;
            printer.time_to_live(&resp, keys)
        }
        LeaseCmd::List => {
            let printer = g.printer()?;
            let client = connect(g).await?;
            let resp = client.lease_leases().await.map_err(bad_connection)?;
            printer.leases(&resp)
        }
        LeaseCmd::KeepAlive { once, args } => {
            let arg = one_arg(&args, "lease keep-alive command needs lease ID as argument")?;
            let id = lease_id(arg)?;
            let printer = g.printer()?;
            let client = connect(g).await?;
            if once {
                return keep_alive_once(&client, &printer, id).await;
            }
            let mut failed = None;
            keep_alive_loop(&client, id, |r| {
                if failed.is_none() {
                    failed = printer.keep_alive(r).err();
                }
            })
            .await;
            if let Some(e) = failed {
                return Err(e);
            }
            if printer.format == Format::Simple {
                out(&format!("lease {} expired or revoked.\n", hex16(id)));
            }
            Ok(())
        }
    }
}

/// etcdctl exits with `ExitBadConnection` when timetolive, list or keep-alive fail.
fn bad_connection(e: ClientError) -> CtlError {
    CtlError::new(EXIT_BAD_CONNECTION, e.to_string())
}

async fn keep_alive_once(
    client: &crate::client::Client,
    printer: &super::Printer,
    id: i64,
) -> Result<(), CtlError> {
    let (mut tx, mut rx) = client.lease_keep_alive().await.map_err(bad_connection)?;
    tx.send(&pb::LeaseKeepAliveRequest { id })
        .await
        .map_err(bad_connection)?;
    let resp = rx
        .message()
        .await
        .map_err(bad_connection)?
        .ok_or_else(|| CtlError::new(EXIT_BAD_CONNECTION, "keep-alive stream closed"))?;
    tx.close();
    if resp.ttl <= 0 {
        return Err(CtlError::new(
            EXIT_BAD_CONNECTION,
            "etcdserver: requested lease not found",
        ));
    }
    printer.keep_alive(&resp)
}
