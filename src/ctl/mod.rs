//! `corekvctl`: a command-line client that behaves like etcdctl 3.4 (`ETCDCTL_API=3`) — the same
//! commands, flags, environment variables, output formats, error messages and exit codes — over
//! corekv's own client ([`crate::client`]).

mod auth;
mod bolt;
mod cluster;
mod env;
mod etcd_snapshot;
pub mod gofmt;
mod json;
mod kv;
mod lease;
mod lock;
mod print;
mod snapshot;
mod table;
mod txn;
mod watch;

use std::time::Duration;

use std::cell::{Cell, OnceCell};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::client::{run_local, Client, ClientError, ClientOptions, Credentials};
pub use print::{Format, Printer};

// etcdctl's exit codes.
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_BAD_CONNECTION: i32 = 2;
pub const EXIT_INVALID_INPUT: i32 = 3;
pub const EXIT_BAD_FEATURE: i32 = 4;
pub const EXIT_INTERRUPTED: i32 = 5;
pub const EXIT_BAD_ARGS: i32 = 128;

/// Ends a command: an exit code and what to print after "Error: " (nothing if `None`).
#[derive(Debug)]
pub struct CtlError {
    pub code: i32,
    pub msg: Option<String>,
}

impl CtlError {
    pub fn new(code: i32, msg: impl Into<String>) -> CtlError {
        CtlError {
            code,
            msg: Some(msg.into()),
        }
    }

    /// Exit with `code` without a message (what was wrong is already printed).
    pub fn silent(code: i32) -> CtlError {
        CtlError { code, msg: None }
    }

    /// A failed RPC, as etcdctl reports it (`ExitError`).
    pub fn rpc(e: ClientError) -> CtlError {
        CtlError::new(EXIT_ERROR, e.to_string())
    }
}

/// Global flags (etcdctl's persistent flags), also read from `ETCDCTL_*` variables.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// gRPC endpoints
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// dial timeout for client connections
    #[arg(long, global = true, default_value = "2s", value_parser = gofmt::parse_duration)]
    pub dial_timeout: Duration,
    /// timeout for short running command (excluding dial timeout)
    #[arg(long, global = true, default_value = "5s", value_parser = gofmt::parse_duration)]
    pub command_timeout: Duration,
    /// set the output format (fields, json, protobuf, simple, table)
    #[arg(short = 'w', long, global = true, default_value = "simple")]
    pub write_out: String,
    /// print byte strings as hex encoded strings
    #[arg(long, global = true)]
    pub hex: bool,
    /// enable client-side debug logging (accepted for etcdctl compatibility)
    #[arg(long, global = true, hide = true)]
    pub debug: bool,
    /// keepalive time for client connections (accepted for etcdctl compatibility)
    #[arg(long, global = true, hide = true, value_parser = gofmt::parse_duration)]
    pub keepalive_time: Option<Duration>,
    /// keepalive timeout for client connections (accepted for etcdctl compatibility)
    #[arg(long, global = true, hide = true, value_parser = gofmt::parse_duration)]
    pub keepalive_timeout: Option<Duration>,
    /// disable transport security for client connections
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true",
          default_value = "true", action = clap::ArgAction::Set)]
    pub insecure_transport: bool,
    /// skip server certificate verification (CAUTION: this option should be enabled only for
    /// testing purposes)
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true",
          default_value = "false", action = clap::ArgAction::Set)]
    pub insecure_skip_tls_verify: bool,
    /// identify secure client using this TLS certificate file
    #[arg(long, global = true)]
    pub cert: Option<std::path::PathBuf>,
    /// identify secure client using this TLS key file
    #[arg(long, global = true)]
    pub key: Option<std::path::PathBuf>,
    /// verify certificates of TLS-enabled secure servers using this CA bundle
    #[arg(long, global = true)]
    pub cacert: Option<std::path::PathBuf>,
    /// username[:password] for authentication (prompt if password is not supplied)
    #[arg(long, global = true, default_value = "")]
    pub user: String,
    /// password for authentication (if this option is used, --user option shouldn't include
    /// password)
    #[arg(long, global = true, default_value = "")]
    pub password: String,
    /// The credentials `--user`/`--password` give, once read (a prompt asks only once).
    #[arg(skip)]
    pub credentials: OnceCell<Option<Credentials>>,
    /// What the `ETCDCTL_*` environment said, reported once the command reads its config.
    #[arg(skip)]
    pub env: env::EnvReport,
    #[arg(skip)]
    pub env_reported: Cell<bool>,
}

impl Global {
    pub fn client_options(&self) -> Result<ClientOptions, CtlError> {
        self.options_for(self.endpoints.clone())
    }

    pub fn options_for(&self, endpoints: Vec<String>) -> Result<ClientOptions, CtlError> {
        Ok(ClientOptions {
            endpoints: endpoints.iter().map(|e| e.trim().to_string()).collect(),
            dial_timeout: self.dial_timeout,
            command_timeout: self.command_timeout,
            tls: self.tls()?,
            credentials: self.credentials()?,
        })
    }

    /// etcdctl's authCfgFromCmd: `--user name:password`, or `--user name --password pw`, or
    /// `--user name` and a `Password: ` prompt. Like clientv3, an empty user name or password
    /// means no authentication at all.
    fn credentials(&self) -> Result<Option<Credentials>, CtlError> {
        if let Some(c) = self.credentials.get() {
            return Ok(c.clone());
        }
        let (user, password) = if self.user.is_empty() {
            (String::new(), String::new())
        } else if !self.password.is_empty() {
            (self.user.clone(), self.password.clone())
        } else {
            match self.user.split_once(':') {
                Some((u, p)) => (u.to_string(), p.to_string()),
                None => (
                    self.user.clone(),
                    auth::ask_password("Password: ").map_err(|e| CtlError::new(EXIT_ERROR, e))?,
                ),
            }
        };
        let c =
            (!user.is_empty() && !password.is_empty()).then(|| Credentials::new(user, password));
        Ok(self.credentials.get_or_init(|| c).clone())
    }

    /// TLS as etcdctl sets it up: with a certificate, key or CA given, or transport security
    /// asked for; https:// endpoints get TLS either way (see [`ClientOptions::tls`]).
    fn tls(&self) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, CtlError> {
        let https = self.endpoints.iter().any(|e| e.starts_with("https://"));
        crate::tls::client_tls_from_flags(
            self.cert.as_deref(),
            self.key.as_deref(),
            self.cacert.as_deref(),
            self.insecure_skip_tls_verify,
            !self.insecure_transport || (https && self.insecure_skip_tls_verify),
        )
        .map_err(|e| CtlError::new(EXIT_BAD_ARGS, e))
    }

    /// Reports the environment's warnings (once); a conflicting variable ends the command.
    fn check_env(&self) -> Result<(), CtlError> {
        if !self.env_reported.replace(true) {
            print::err(&self.env.lines.concat());
        }
        if self.env.fatal {
            return Err(CtlError::silent(EXIT_ERROR));
        }
        Ok(())
    }

    /// The printer for `-w`/`--hex`, for a command that dials: etcdctl checks the format
    /// before dialing, after reading the credentials (so a `Password: ` prompt comes first).
    pub fn printer(&self) -> Result<Printer, CtlError> {
        self.check_env()?;
        self.credentials()?;
        self.local_printer()
    }

    /// The printer for a command that does not dial (`snapshot status`).
    pub fn local_printer(&self) -> Result<Printer, CtlError> {
        self.check_env()?;
        Ok(Printer {
            format: Format::parse(&self.write_out)?,
            hex: self.hex,
            value_only: false,
        })
    }
}

/// A simple command line client for corekv (and etcd3), command for command like etcdctl.
#[derive(Parser, Debug)]
#[command(
    name = "corekvctl",
    infer_subcommands = true,
    disable_version_flag = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Gets the key or a range of keys
    Get(kv::GetArgs),
    /// Puts the given key into the store
    Put(kv::PutArgs),
    /// Removes the specified key or range of keys [key, range_end)
    Del(kv::DelArgs),
    /// Txn processes all the requests in one transaction
    Txn(txn::TxnArgs),
    /// Compacts the event history in etcd
    Compaction(kv::CompactionArgs),
    /// Watches events stream on keys or prefixes
    Watch(watch::WatchArgs),
    /// Lease related commands
    #[command(subcommand, arg_required_else_help = true)]
    Lease(lease::LeaseCmd),
    /// Membership related commands
    #[command(subcommand, arg_required_else_help = true)]
    Member(cluster::MemberCmd),
    /// Endpoint related commands
    Endpoint(cluster::EndpointArgs),
    /// Alarm related commands
    #[command(subcommand, arg_required_else_help = true)]
    Alarm(cluster::AlarmCmd),
    /// Defragments the storage of the etcd members with given endpoints
    Defrag(cluster::DefragArgs),
    /// Transfers leadership to another etcd cluster member.
    MoveLeader(cluster::MoveLeaderArgs),
    /// Manages etcd node snapshots
    #[command(subcommand, arg_required_else_help = true)]
    Snapshot(snapshot::SnapshotCmd),
    /// User related commands
    #[command(subcommand, arg_required_else_help = true)]
    User(auth::UserCmd),
    /// Role related commands
    #[command(subcommand, arg_required_else_help = true)]
    Role(auth::RoleCmd),
    /// Enable or disable authentication
    #[command(subcommand, arg_required_else_help = true)]
    Auth(auth::AuthCmd),
    /// Acquires a named lock
    Lock(lock::LockArgs),
    /// Observes and participates in leader election
    Elect(lock::ElectArgs),
    /// Prints the version of corekvctl
    Version,
}

/// Dials the global endpoints. A failure reads like etcdctl's (whose dial never fails but
/// whose first call then runs into its deadline), after a line saying what really happened.
pub async fn connect(g: &Global) -> Result<Client, CtlError> {
    g.check_env()?;
    connect_with(g.client_options()?).await
}

/// With credentials the client authenticates while connecting, as clientv3 does: a failure
/// then ends the command with `ExitBadConnection` (the server's refusal, or a deadline).
pub async fn connect_with(opts: ClientOptions) -> Result<Client, CtlError> {
    let auth = opts.credentials.is_some();
    Client::connect(opts.clone()).await.map_err(|e| match e {
        ClientError::Status(_) if auth => CtlError::new(EXIT_BAD_CONNECTION, e.to_string()),
        e => {
            dial_warning(&opts.endpoints, &e);
            let code = if auth {
                EXIT_BAD_CONNECTION
            } else {
                EXIT_ERROR
            };
            CtlError::new(code, ClientError::Timeout.to_string())
        }
    })
}

/// etcdctl logs failed attempts as one JSON line on stderr; corekvctl does the same.
pub fn dial_warning(endpoints: &[String], e: &ClientError) {
    let mut j = json::Json::new();
    j.begin_obj();
    j.str("level", "warn");
    j.str("msg", "dial failed");
    j.str("endpoints", &endpoints.join(","));
    j.str("error", &e.to_string());
    j.end_obj();
    print::err(&(j.finish() + "\n"));
}

async fn run(cli: Cli) -> Result<(), CtlError> {
    let g = &cli.global;
    match cli.cmd {
        Cmd::Get(a) => kv::get(g, a).await,
        Cmd::Put(a) => kv::put(g, a).await,
        Cmd::Del(a) => kv::del(g, a).await,
        Cmd::Txn(a) => txn::run(g, a).await,
        Cmd::Compaction(a) => kv::compaction(g, a).await,
        Cmd::Watch(a) => watch::run(g, a).await,
        Cmd::Lease(c) => lease::run(g, c).await,
        Cmd::Member(c) => cluster::member(g, c).await,
        Cmd::Endpoint(a) => cluster::endpoint(g, a).await,
        Cmd::Alarm(c) => cluster::alarm(g, c).await,
        Cmd::Defrag(a) => cluster::defrag(g, a).await,
        Cmd::MoveLeader(a) => cluster::move_leader(g, a).await,
        Cmd::Snapshot(c) => snapshot::run(g, c).await,
        Cmd::User(c) => auth::user(g, c).await,
        Cmd::Role(c) => auth::role(g, c).await,
        Cmd::Auth(c) => auth::auth(g, c).await,
        Cmd::Lock(a) => lock::lock(g, a).await,
        Cmd::Elect(a) => lock::elect(g, a).await,
        Cmd::Version => {
            print::out(&format!(
                "corekvctl version: {}\nAPI version: 3.4\n",
                env!("CARGO_PKG_VERSION")
            ));
            Ok(())
        }
    }
}

/// Prints "Error: ..." like etcdctl and returns the exit code.
fn report(e: CtlError) -> i32 {
    if let Some(msg) = e.msg {
        print::err(&format!("Error: {msg}\n"));
    }
    e.code
}

/// The `corekvctl` entry point.
pub fn main() -> ! {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let cli = match parsed {
        Ok((mut cli, matches)) => {
            let watch = matches!(cli.cmd, Cmd::Watch(_));
            cli.global.env = env::apply(&mut cli.global, &matches, watch);
            cli
        }
        Err(e) => {
            use clap::error::ErrorKind;
            let _ = e.print();
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                // cobra prints usage for a missing subcommand and exits 0 too.
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => EXIT_ERROR,
            };
            std::process::exit(code);
        }
    };
    let code = run_local(move || async move {
        match run(cli).await {
            Ok(()) => 0,
            Err(e) => report(e),
        }
    });
    std::process::exit(code)
}

/// A stream of SIGINT/SIGTERM arrivals, for commands that clean up before exiting (lock,
/// elect). Signals are caught by a helper thread from the moment this is called.
pub fn termination_signals() -> flume::Receiver<i32> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let (tx, rx) = flume::unbounded();
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .expect("cannot install signal handlers");
    std::thread::spawn(move || {
        for s in signals.forever() {
            if tx.send(s).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs `fut` unless a termination signal arrives first (then `None`).
pub async fn until_signal<T>(
    signals: &flume::Receiver<i32>,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        let _ = signals.recv_async().await;
        None
    })
    .await
}

/// Why a child command failed, in Go's words ("exit status 1"), or `None` if it succeeded.
pub fn command_failure(status: std::io::Result<std::process::ExitStatus>) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) if s.success() => None,
        Ok(s) => Some(match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(sig)) => format!("signal: {sig}"),
            _ => s.to_string(),
        }),
        Err(e) => Some(e.to_string()),
    }
}
