//! `watch`: prints events as etcdctl does, optionally runs a command per event
//! (`watch key -- cmd args`, with `ETCD_WATCH_*` in its environment), or reads `watch ...` and
//! `progress` lines from stdin (`-i`). All watches share one watch stream, as with clientv3; a
//! broken stream is reopened and each watch resumes after the last revision it saw.

use std::collections::{HashMap, VecDeque};
use std::io::BufRead;
use std::time::Duration;

use clap::{Args, Parser};

use super::gofmt::{argify, quote, quote_list};
use super::print::{err, out};
use super::{
    connect, CtlError, Global, Printer, EXIT_BAD_ARGS, EXIT_INTERRUPTED, EXIT_INVALID_INPUT,
};
use crate::client::{prefix_range_end, Client, ClientError, WatchSender, WatchStream};
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb::event::EventType;

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    /// Interactive mode
    #[arg(short = 'i', long)]
    pub interactive: bool,
    #[command(flatten)]
    pub opts: WatchOpts,
}

/// The flags and arguments of one watch (on the command line or an interactive line).
#[derive(Args, Debug, Clone, Default)]
pub struct WatchOpts {
    /// Watch on a prefix if prefix is set
    #[arg(long)]
    pub prefix: bool,
    /// Revision to start watching
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub rev: i64,
    /// get the previous key-value pair before the event happens
    #[arg(long)]
    pub prev_kv: bool,
    /// [key or prefix] [range_end]
    pub args: Vec<String>,
    /// [exec-command arg1 arg2 ...] after `--`
    #[arg(last = true)]
    pub exec: Vec<String>,
}

/// An interactive `watch ...` line.
#[derive(Parser, Debug)]
#[command(no_binary_name = true)]
struct Line {
    #[command(flatten)]
    opts: WatchOpts,
}

const BAD_ARGS_NUM: &str = "bad number of arguments";
const BAD_ARGS_CONFLICT_ENV: &str = "bad number of arguments (found conflicting environment key)";
const BAD_ARGS_SEPARATOR: &str = "bad number of arguments (found separator --, but no commands)";

struct Env {
    key: String,
    range_end: String,
}

impl Env {
    fn read() -> Result<Env, CtlError> {
        let key = std::env::var("ETCDCTL_WATCH_KEY").unwrap_or_default();
        let range_end = std::env::var("ETCDCTL_WATCH_RANGE_END").unwrap_or_default();
        if key.is_empty() && !range_end.is_empty() {
            return Err(CtlError::new(
                EXIT_BAD_ARGS,
                format!(
                    "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={}",
                    quote(range_end.as_bytes())
                ),
            ));
        }
        Ok(Env { key, range_end })
    }

    /// The key arguments: the positional ones, or the environment's.
    fn args(&self, opts: &WatchOpts) -> Result<Vec<String>, &'static str> {
        if self.key.is_empty() {
            if opts.args.is_empty() {
                return Err(BAD_ARGS_NUM);
            }
            return Ok(opts.args.clone());
        }
        if !opts.args.is_empty() {
            return Err(BAD_ARGS_CONFLICT_ENV);
        }
        let mut v = vec![self.key.clone()];
        if !self.range_end.is_empty() {
            v.push(self.range_end.clone());
        }
        Ok(v)
    }
}

/// The create request for a watch (etcdctl's `getWatchChan`).
fn create_request(opts: &WatchOpts, args: &[String]) -> Result<pb::WatchCreateRequest, String> {
    let Some(key) = args.first() else {
        return Err(BAD_ARGS_NUM.into());
    };
    let mut key = key.as_bytes().to_vec();
    let mut range_end = Vec::new();
    if args.len() == 2 {
        if opts.prefix {
            return Err("`range_end` and `--prefix` are mutually exclusive".into());
        }
        range_end = args[1].as_bytes().to_vec();
    }
    if opts.prefix {
        if key.is_empty() {
            key = vec![0];
            range_end = vec![0];
        } else {
            range_end = prefix_range_end(&key);
        }
    }
    Ok(pb::WatchCreateRequest {
        key: key.into(),
        range_end: range_end.into(),
        start_revision: opts.rev,
        prev_kv: opts.prev_kv,
        ..Default::default()
    })
}

/// One watch of the shared stream.
struct Watcher {
    create: pb::WatchCreateRequest,
    exec: Vec<String>,
    /// The last revision delivered, to resume after.
    last_rev: i64,
    done: bool,
}

/// All watches on one stream, and where each server-side watch id leads.
struct Hub {
    printer: Printer,
    watchers: Vec<Watcher>,
    pending: VecDeque<usize>,
    by_id: HashMap<i64, usize>,
}

fn watch_request(create: pb::WatchCreateRequest) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
    }
}

fn progress_request() -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
            pb::WatchProgressRequest {},
        )),
    }
}

/// How clientv3 describes a canceled watch.
fn cancel_error(r: &pb::WatchResponse) -> String {
    // A create refused (clientv3's addSubstream: no watch ID, or a reason) ends the stream
    // with the reason as its error, as is (a permission denied reads "rpc error: code =
    // PermissionDenied desc = etcdserver: permission denied").
    if r.created && (r.watch_id == -1 || !r.cancel_reason.is_empty()) {
        return r.cancel_reason.clone();
    }
    if r.compact_revision != 0 {
        "etcdserver: mvcc: required revision has been compacted".into()
    } else if !r.cancel_reason.is_empty() {
        ClientError::Status(crate::client::Status::new(
            crate::client::Code::FailedPrecondition,
            r.cancel_reason.clone(),
        ))
        .to_string()
    } else {
        "etcdserver: mvcc: required revision is a future revision".into()
    }
}

fn is_progress_notify(r: &pb::WatchResponse) -> bool {
    r.events.is_empty()
        && !r.canceled
        && !r.created
        && r.compact_revision == 0
        && r.header.as_ref().is_some_and(|h| h.revision != 0)
}

impl Hub {
    fn add(&mut self, create: pb::WatchCreateRequest, exec: Vec<String>) -> usize {
        self.watchers.push(Watcher {
            create,
            exec,
            last_rev: 0,
            done: false,
        });
        self.watchers.len() - 1
    }

    fn active(&self) -> bool {
        self.watchers.iter().any(|w| !w.done)
    }

    /// The create request that resumes watcher `i` after what it has seen.
    fn resume_request(&self, i: usize) -> pb::WatchRequest {
        let w = &self.watchers[i];
        let mut c = w.create.clone();
        if w.last_rev > 0 {
            c.start_revision = w.last_rev + 1;
        }
        watch_request(c)
    }

    /// Prints one response for watcher `i` and runs its command per event.
    fn deliver(&mut self, i: usize, r: &pb::WatchResponse) -> Result<(), CtlError> {
        if r.canceled {
            err(&format!("watch was canceled ({})\n", cancel_error(r)));
            self.watchers[i].done = true;
        }
        if is_progress_notify(r) {
            let rev = r.header.as_ref().map_or(0, |h| h.revision);
            out(&format!("progress notify: {rev}\n"));
        }
        if let Some(h) = &r.header {
            self.watchers[i].last_rev = self.watchers[i].last_rev.max(h.revision);
        }
        self.printer.watch(r)?;
        let exec = &self.watchers[i].exec;
        if exec.is_empty() {
            return Ok(());
        }
        for ev in &r.events {
            let kv = ev.kv.clone().unwrap_or_default();
            let name = if ev.r#type == EventType::Delete as i32 {
                "DELETE"
            } else {
                "PUT"
            };
            let status = std::process::Command::new(&exec[0])
                .args(&exec[1..])
                .env(
                    "ETCD_WATCH_REVISION",
                    r.header.as_ref().map_or(0, |h| h.revision).to_string(),
                )
                .env("ETCD_WATCH_EVENT_TYPE", quote(name.as_bytes()))
                .env("ETCD_WATCH_KEY", quote(&kv.key))
                .env("ETCD_WATCH_VALUE", quote(&kv.value))
                .status();
            if let Some(f) = super::command_failure(status) {
                err(&format!("command {} error ({f})\n", quote_list(exec)));
                return Err(CtlError::silent(1));
            }
        }
        Ok(())
    }

    /// Routes one response of the stream.
    fn dispatch(&mut self, r: pb::WatchResponse) -> Result<(), CtlError> {
        if r.created && !r.canceled {
            if let Some(i) = self.pending.pop_front() {
                self.by_id.insert(r.watch_id, i);
            }
            return Ok(());
        }
        if r.watch_id == -1 && is_progress_notify(&r) {
            for i in 0..self.watchers.len() {
                if !self.watchers[i].done {
                    self.deliver(i, &r)?;
                }
            }
            return Ok(());
        }
        let i = match self.by_id.get(&r.watch_id) {
            Some(&i) => i,
            None if r.canceled => match self.pending.pop_front() {
                Some(i) => i,
                None => return Ok(()),
            },
            None => return Ok(()),
        };
        if r.canceled {
            self.by_id.remove(&r.watch_id);
        }
        self.deliver(i, &r)
    }
}

/// Opens the shared stream and (re)creates every active watch on it.
async fn open(client: &Client, hub: &mut Hub) -> Result<(WatchSender, WatchStream), ClientError> {
    let (mut tx, rx) = client.watch().await?;
    hub.pending.clear();
    hub.by_id.clear();
    for i in 0..hub.watchers.len() {
        if !hub.watchers[i].done {
            tx.send(&hub.resume_request(i)).await?;
            hub.pending.push_back(i);
        }
    }
    Ok((tx, rx))
}

/// Pause before reopening a broken watch stream.
const RETRY: Duration = Duration::from_millis(500);

/// Watches until every watch is canceled by the server.
async fn run_hub(client: &Client, hub: &mut Hub) -> Result<(), CtlError> {
    while hub.active() {
        let (_tx, mut rx) = match open(client, hub).await {
            Ok(pair) => pair,
            Err(_) => {
                glommio::timer::sleep(RETRY).await;
                continue;
            }
        };
        while let Ok(Some(r)) = rx.message().await {
            hub.dispatch(r)?;
            if !hub.active() {
                return Ok(());
            }
        }
        glommio::timer::sleep(RETRY).await;
    }
    Ok(())
}

/// True when the raw command line has `--` as its last argument after `watch`.
fn trailing_separator() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let Some(pos) = args.iter().position(|a| a == "watch") else {
        return false;
    };
    let rest = &args[pos + 1..];
    rest.iter()
        .position(|a| a == "--")
        .is_some_and(|i| i + 1 == rest.len())
}

pub async fn run(g: &Global, a: WatchArgs) -> Result<(), CtlError> {
    let env = Env::read()?;
    if a.interactive {
        return interactive(g, env).await;
    }
    if trailing_separator() {
        return Err(CtlError::new(EXIT_BAD_ARGS, BAD_ARGS_SEPARATOR));
    }
    let args = env
        .args(&a.opts)
        .map_err(|e| CtlError::new(EXIT_BAD_ARGS, e))?;
    let printer = g.printer()?;
    let client = connect(g).await?;
    let create = create_request(&a.opts, &args).map_err(|e| CtlError::new(EXIT_BAD_ARGS, e))?;
    let mut hub = Hub {
        printer,
        watchers: Vec::new(),
        pending: VecDeque::new(),
        by_id: HashMap::new(),
    };
    hub.add(create, a.opts.exec.clone());
    run_hub(&client, &mut hub).await?;
    Err(CtlError::new(
        EXIT_INTERRUPTED,
        "watch is canceled by the server",
    ))
}

/// What an interactive line asks for.
enum Request {
    Watch(pb::WatchCreateRequest, Vec<String>),
    Progress,
}

/// Parses an interactive line; `Ok(None)` after printing why it is ignored.
fn parse_line(l: &str, env: &Env) -> Result<Option<Request>, CtlError> {
    let args = argify(l).map_err(|e| CtlError::new(EXIT_INVALID_INPUT, e))?;
    let Some(first) = args.first() else {
        err(&format!(
            "Invalid command: {l} (watch and progress supported)\n"
        ));
        return Ok(None);
    };
    match first.as_str() {
        "watch" => {
            if args.len() < 2 && env.key.is_empty() {
                err(&format!(
                    "Invalid command {l} (command type or key is not provided)\n"
                ));
                return Ok(None);
            }
            if args.last().is_some_and(|a| a == "--") {
                return Err(CtlError::new(EXIT_BAD_ARGS, BAD_ARGS_SEPARATOR));
            }
            let line = Line::try_parse_from(&args[1..])
                .map_err(|e| CtlError::new(EXIT_BAD_ARGS, e.to_string().trim().to_string()))?;
            let wargs = env
                .args(&line.opts)
                .map_err(|e| CtlError::new(EXIT_BAD_ARGS, e))?;
            match create_request(&line.opts, &wargs) {
                Ok(c) => Ok(Some(Request::Watch(c, line.opts.exec))),
                Err(e) => {
                    err(&format!("Invalid command {l} ({e})\n"));
                    Ok(None)
                }
            }
        }
        "progress" => Ok(Some(Request::Progress)),
        _ => {
            err(&format!("Invalid command {l} (only support watch)\n"));
            Ok(None)
        }
    }
}

async fn interactive(g: &Global, env: Env) -> Result<(), CtlError> {
    let printer = g.printer()?;
    let client = connect(g).await?;
    // stdin is read by a thread so events keep printing while it waits.
    let (line_tx, lines) = flume::unbounded::<Result<String, String>>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut r = stdin.lock();
        loop {
            let mut buf = String::new();
            let res = match r.read_line(&mut buf) {
                Ok(_) if buf.ends_with('\n') => Ok(buf),
                Ok(_) => Err("EOF".to_string()),
                Err(e) => Err(e.to_string()),
            };
            let stop = res.is_err();
            if line_tx.send(res).is_err() || stop {
                break;
            }
        }
    });
    let hub = std::rc::Rc::new(std::cell::RefCell::new(Hub {
        printer,
        watchers: Vec::new(),
        pending: VecDeque::new(),
        by_id: HashMap::new(),
    }));
    let (mut tx, mut rx) = client.watch().await.map_err(CtlError::rpc)?;
    // Responses are handled by their own task; a failure there ends the command.
    let (fail_tx, fail) = flume::bounded::<CtlError>(1);
    let h = hub.clone();
    let _reader = glommio::spawn_local(async move {
        while let Ok(Some(r)) = rx.message().await {
            let result = h.borrow_mut().dispatch(r);
            if let Err(e) = result {
                let _ = fail_tx.send(e);
                return;
            }
        }
    });
    loop {
        let next = futures_lite::future::or(async { Ok(lines.recv_async().await) }, async {
            Err(fail.recv_async().await)
        })
        .await;
        let line = match next {
            Ok(Ok(Ok(line))) => line,
            Ok(Ok(Err(e))) => {
                return Err(CtlError::new(
                    EXIT_INVALID_INPUT,
                    format!("Error reading watch request line: {e}"),
                ))
            }
            Ok(Err(_)) => return Ok(()),
            Err(Ok(e)) => return Err(e),
            Err(Err(_)) => return Ok(()),
        };
        let l = line.strip_suffix('\n').unwrap_or(&line);
        match parse_line(l, &env)? {
            None => {}
            Some(Request::Watch(create, exec)) => {
                let i = hub.borrow_mut().add(create.clone(), exec);
                hub.borrow_mut().pending.push_back(i);
                tx.send(&watch_request(create))
                    .await
                    .map_err(CtlError::rpc)?;
            }
            Some(Request::Progress) => tx.send(&progress_request()).await.map_err(CtlError::rpc)?,
        }
    }
}
