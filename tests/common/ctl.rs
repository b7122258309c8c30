//! Differential testing of command-line clients: the same steps run by two (tool, server)
//! sides, outputs compared after normalizing what legitimately differs between two servers
//! (member and cluster IDs, ports, lease IDs, timings).
//!
//! A side is a CLI (`etcdctl` or `corekvctl`) talking to a server (etcd or corekv). The step
//! list lives in `ctl_steps.rs`, in one place for every pairing.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{DieWithTest, Server};
use corekv::client::{run_local, Client, ClientOptions};

/// The server's (member ID, cluster ID), from a Status call.
pub fn ids(server: &Server) -> (u64, u64) {
    let opts = ClientOptions::new(vec![server.endpoint()]);
    run_local(move || async move {
        let client = Client::connect(opts).await.expect("connect to the server");
        let h = client.status().await.expect("status").header.unwrap();
        (h.member_id, h.cluster_id)
    })
}

/// Which command-line client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Etcdctl,
    Corekvctl,
}

impl Tool {
    pub fn path(self) -> PathBuf {
        match self {
            Tool::Etcdctl => super::require_binary("etcdctl"),
            Tool::Corekvctl => PathBuf::from(env!("CARGO_BIN_EXE_corekvctl")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tool::Etcdctl => "etcdctl",
            Tool::Corekvctl => "corekvctl",
        }
    }
}

/// How a step is run and compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Run to completion; stdout, stderr and exit code must match.
    Run,
    /// Like `Run`, with remaining lease TTLs (which tick) blanked.
    Ttl,
    /// Like `Run`, with every number, duration and run of padding blanked (sizes, timings).
    Loose,
    /// Only the exit code must match (usage errors that cobra and clap word differently).
    CodeOnly,
    /// A command that runs until stopped: read this many stdout lines, then SIGINT it.
    Stream(usize),
}

/// One command of a differential run.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    /// Arguments; `{L0}`, `{L1}`… stand for this side's leases in hex, `{MEMBER}` for its member
    /// ID in hex, `{EP}` for its endpoint.
    pub args: &'static [&'static str],
    /// Standard input (closed right after, or kept open while a `Stream` step runs).
    pub stdin: Option<&'static str>,
    /// Extra environment; `{EP}` in a value stands for this side's endpoint.
    pub env: &'static [(&'static str, &'static str)],
    pub mode: Mode,
}

/// What a command printed and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub status: String,
}

/// A CLI pointed at a server, with what its outputs need normalized.
pub struct Side<'a> {
    pub tool: Tool,
    pub server: &'a Server,
    /// Where the CLI connects: the server's endpoint, or a proxy's in front of it.
    endpoint: String,
    /// (text, placeholder) pairs replaced in outputs, longest first.
    replace: Vec<(String, String)>,
    member_hex: String,
    leases: Vec<i64>,
}

impl<'a> Side<'a> {
    /// `tool` on `server` (asked for its member and cluster IDs, to normalize them).
    pub fn new(tool: Tool, server: &'a Server) -> Side<'a> {
        Side::through(tool, server, &server.endpoint())
    }

    /// `tool` on `server` through `endpoint` (a proxy in front of it): both endpoints read
    /// as `{EP}` in outputs.
    pub fn through(tool: Tool, server: &'a Server, endpoint: &str) -> Side<'a> {
        let (member_id, cluster_id) = ids(server);
        let mut replace = Vec::new();
        for (id, name) in [(member_id, "{MEMBER}"), (cluster_id, "{CLUSTER}")] {
            replace.push((format!("{id:x}"), name.to_string()));
            replace.push((id.to_string(), name.to_string()));
        }
        replace.push((server.endpoint(), "{EP}".to_string()));
        if endpoint != server.endpoint() {
            replace.push((endpoint.to_string(), "{EP}".to_string()));
        }
        let peer = server.peer_url();
        replace.push((
            peer.trim_start_matches("http://").to_string(),
            "{PEER}".into(),
        ));
        replace.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        Side {
            tool,
            server,
            endpoint: endpoint.to_string(),
            replace,
            member_hex: format!("{member_id:x}"),
            leases: Vec::new(),
        }
    }

    fn args(&self, step: &Step) -> Vec<String> {
        step.args
            .iter()
            .map(|a| {
                let mut a = a.replace("{MEMBER}", &self.member_hex);
                a = a.replace("{EP}", &self.endpoint);
                for (i, l) in self.leases.iter().enumerate() {
                    a = a.replace(&format!("{{L{i}}}"), &format!("{l:016x}"));
                }
                a
            })
            .collect()
    }

    fn command(&self, step: &Step) -> Command {
        let mut cmd = Command::new(self.tool.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("ETCDCTL_") {
                cmd.env_remove(k);
            }
        }
        let endpoint = self.endpoint.clone();
        cmd.env("ETCDCTL_API", "3")
            .env("ETCDCTL_ENDPOINTS", &endpoint)
            .envs(
                step.env
                    .iter()
                    .map(|(k, v)| (k, v.replace("{EP}", &endpoint))),
            )
            .args(self.args(step))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if step.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .die_with_test();
        cmd
    }

    /// Runs one step and returns its normalized output.
    pub fn run(&mut self, step: &Step) -> Output {
        let mut child = self
            .command(step)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.tool.name()));
        let mut stdin = child.stdin.take();
        if let (Some(w), Some(text)) = (stdin.as_mut(), step.stdin) {
            w.write_all(text.as_bytes()).expect("write stdin");
        }
        let raw = match step.mode {
            Mode::Stream(lines) => stream(&mut child, stdin, lines),
            _ => {
                drop(stdin);
                finish(&mut child)
            }
        };
        self.learn_leases(&raw.stdout);
        self.normalize(raw, step.mode)
    }

    /// Remembers lease IDs as grants print them (simple and JSON).
    fn learn_leases(&mut self, out: &str) {
        let mut found = Vec::new();
        let lines: Vec<&str> = out.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            // -w fields: `"ID" : N` then `"TTL" : N` (grant, keep-alive).
            if let Some(id) = line.strip_prefix("\"ID\" : ") {
                let ttl_next = lines
                    .get(i + 1)
                    .is_some_and(|l| l.starts_with("\"TTL\" : "));
                if let (true, Ok(id)) = (ttl_next, id.parse()) {
                    found.push(id);
                }
            }
            if let Some(rest) = line.strip_prefix("lease ") {
                if rest.contains(" granted with TTL(") && !rest.contains("remaining") {
                    if let Ok(id) = i64::from_str_radix(&rest[..16.min(rest.len())], 16) {
                        found.push(id);
                    }
                }
            }
            if let Some(pos) = line.find("\"ID\":") {
                if line.contains("\"TTL\":") && line.contains("\"Error\":") {
                    let digits: String = line[pos + 5..]
                        .chars()
                        .take_while(|c| c.is_ascii_digit())
                        .collect();
                    if let Ok(id) = digits.parse() {
                        found.push(id);
                    }
                }
            }
        }
        for id in found {
            if !self.leases.contains(&id) {
                self.leases.push(id);
                for (form, i) in [
                    (format!("{id:016x}"), self.leases.len() - 1),
                    (id.to_string(), self.leases.len() - 1),
                ] {
                    self.replace.push((form, format!("{{L{i}}}")));
                }
                self.replace
                    .sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
            }
        }
    }

    fn normalize(&self, raw: Output, mode: Mode) -> Output {
        let fix = |s: &str| {
            let mut s = s.to_string();
            for (from, to) in &self.replace {
                s = s.replace(from.as_str(), to);
            }
            for tool in ["etcdctl version: ", "corekvctl version: "] {
                if let Some(pos) = s.find(tool) {
                    let end = s[pos..].find('\n').map_or(s.len(), |e| pos + e);
                    s.replace_range(pos..end, "{TOOL} version");
                }
            }
            s = blank_timestamps(&s);
            match mode {
                Mode::Ttl => {
                    for p in ["remaining(", "\"ttl\":", "\"TTL\" : "] {
                        s = blank_number_after(&s, p);
                    }
                    sort_attached_keys(&s)
                }
                Mode::Loose => loosen(&s),
                _ => s,
            }
        };
        // etcdctl's client library logs failed attempts as JSON lines; they are noise here.
        let stderr: String = raw
            .stderr
            .lines()
            .filter(|l| !l.starts_with("{\"level\":"))
            .map(|l| format!("{l}\n"))
            .collect();
        Output {
            stdout: fix(&raw.stdout),
            stderr: fix(&stderr),
            status: raw.status,
        }
    }
}

/// The longest a step may take before the test gives up on it.
const STEP_LIMIT: Duration = Duration::from_secs(60);

fn status_text(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => s.to_string(),
    }
}

fn reader(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        loop {
            let mut line = Vec::new();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx
                        .send(String::from_utf8_lossy(&line).into_owned())
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    rx
}

fn wait(child: &mut Child, deadline: Instant) -> ExitStatus {
    loop {
        if let Some(s) = child.try_wait().expect("wait for a child") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a command ran past {STEP_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn finish(child: &mut Child) -> Output {
    let out = reader(child.stdout.take().expect("piped"));
    let err = reader(child.stderr.take().expect("piped"));
    let status = wait(child, Instant::now() + STEP_LIMIT);
    Output {
        stdout: out.iter().collect(),
        stderr: err.iter().collect(),
        status: status_text(status),
    }
}

/// Reads `lines` lines of stdout (or until the command exits), then interrupts it.
fn stream(child: &mut Child, stdin: Option<std::process::ChildStdin>, lines: usize) -> Output {
    let out = reader(child.stdout.take().expect("piped"));
    let err = reader(child.stderr.take().expect("piped"));
    let deadline = Instant::now() + STEP_LIMIT;
    let mut stdout = String::new();
    for _ in 0..lines {
        match out.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => stdout.push_str(&l),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!(
                    "no line {} within {STEP_LIMIT:?}; got so far:\n{stdout}",
                    lines
                );
            }
        }
    }
    if child.try_wait().expect("poll a child").is_none() {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
    }
    let status = wait(child, deadline);
    drop(stdin);
    stdout.extend(out.iter());
    Output {
        stdout,
        stderr: err.iter().collect(),
        status: status_text(status),
    }
}

/// Blanks capnslog timestamps (`2006-01-02 15:04:05.000000 W | ...`) at line starts.
fn blank_timestamps(s: &str) -> String {
    let shape = "dddd-dd-dd dd:dd:dd.dddddd ";
    s.split_inclusive('\n')
        .map(|line| {
            let b = line.as_bytes();
            let is_ts = b.len() > shape.len()
                && shape.bytes().zip(b).all(|(p, c)| match p {
                    b'd' => c.is_ascii_digit(),
                    p => p == *c,
                });
            if is_ts {
                format!("{{TS}} {}", &line[shape.len()..])
            } else {
                line.to_string()
            }
        })
        .collect()
}

/// A lease's attached keys come in the server's map order: sort them (simple `attached
/// keys([..])`, JSON `"keys":[..]`, fields `"Key" : ..` lines).
fn sort_attached_keys(s: &str) -> String {
    let mut s = s.to_string();
    for (open, close, sep) in [("attached keys([", "])", " "), ("\"keys\":[", "]", ",")] {
        if let Some(start) = s.find(open).map(|p| p + open.len()) {
            if let Some(len) = s[start..].find(close) {
                let mut items: Vec<&str> = s[start..start + len].split(sep).collect();
                items.sort_unstable();
                let joined = items.join(sep);
                s.replace_range(start..start + len, &joined);
            }
        }
    }
    let mut lines: Vec<&str> = s.split_inclusive('\n').collect();
    let keys: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("\"Key\" : "))
        .collect();
    let mut sorted: Vec<&str> = keys.iter().map(|&i| lines[i]).collect();
    sorted.sort_unstable();
    for (i, line) in keys.into_iter().zip(sorted) {
        lines[i] = line;
    }
    lines.concat()
}

/// Replaces the number right after each `prefix` with `N`.
fn blank_number_after(s: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(prefix) {
        out.push_str(&rest[..pos + prefix.len()]);
        rest = &rest[pos + prefix.len()..];
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .unwrap_or(rest.len());
        if digits > 0 {
            out.push('N');
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// Blanks Go durations, numbers and padding: what is left is the shape of the output.
fn loosen(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            while chars
                .peek()
                .is_some_and(|c| c.is_ascii_digit() || *c == '.')
            {
                chars.next();
            }
            // A unit right after a number: a duration or a size ("1.5ms", "20 kB" keeps "kB").
            while chars
                .peek()
                .is_some_and(|c| matches!(c, 'n' | 'µ' | 'm' | 's' | 'h'))
            {
                chars.next();
            }
            out.push('N');
        } else if c == ' ' || c == '-' {
            if !out.ends_with(c) {
                out.push(c);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One disagreement between the sides.
pub struct Mismatch {
    pub step: Step,
    pub a: Output,
    pub b: Output,
}

/// Runs every step on both sides (a first, then b) and returns where they disagree.
pub fn diff(a: &mut Side, b: &mut Side, steps: &[Step]) -> Vec<Mismatch> {
    let mut bad = Vec::new();
    for step in steps {
        let oa = a.run(step);
        let ob = b.run(step);
        let same = match step.mode {
            Mode::CodeOnly => oa.status == ob.status,
            _ => oa == ob,
        };
        if !same {
            bad.push(Mismatch {
                step: *step,
                a: oa,
                b: ob,
            });
        }
    }
    bad
}

/// A readable report of mismatches.
pub fn report(a: &Side, b: &Side, bad: &[Mismatch]) -> String {
    let mut s = String::new();
    for m in bad {
        s.push_str(&format!(
            "\n=== {:?} (stdin {:?}, env {:?}, {:?})\n--- {} on {}: {}\n{}--- stderr\n{}--- {} on {}: {}\n{}--- stderr\n{}",
            m.step.args,
            m.step.stdin,
            m.step.env,
            m.step.mode,
            a.tool.name(),
            a.server.kind.name(),
            m.a.status,
            m.a.stdout,
            m.a.stderr,
            b.tool.name(),
            b.server.kind.name(),
            m.b.status,
            m.b.stdout,
            m.b.stderr,
        ));
    }
    s
}

/// Shorthands for writing step lists.
pub const fn run(args: &'static [&'static str]) -> Step {
    Step {
        args,
        stdin: None,
        env: &[],
        mode: Mode::Run,
    }
}

pub const fn with_stdin(args: &'static [&'static str], stdin: &'static str) -> Step {
    Step {
        args,
        stdin: Some(stdin),
        env: &[],
        mode: Mode::Run,
    }
}

pub const fn with_env(
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
) -> Step {
    Step {
        args,
        stdin: None,
        env,
        mode: Mode::Run,
    }
}

pub const fn mode(args: &'static [&'static str], mode: Mode) -> Step {
    Step {
        args,
        stdin: None,
        env: &[],
        mode,
    }
}

pub const fn stream_with_stdin(
    args: &'static [&'static str],
    stdin: &'static str,
    lines: usize,
) -> Step {
    Step {
        args,
        stdin: Some(stdin),
        env: &[],
        mode: Mode::Stream(lines),
    }
}

/// A long-running CLI process (lock, elect, watch) a test drives line by line.
pub struct Spawned {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Spawned {
    /// Starts `tool` with `args` against `endpoint`.
    pub fn start(tool: Tool, endpoint: &str, args: &[&str]) -> Spawned {
        let mut cmd = Command::new(tool.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("ETCDCTL_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .env("ETCDCTL_API", "3")
            .env("ETCDCTL_ENDPOINTS", endpoint)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .die_with_test()
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.name()));
        let lines = reader(child.stdout.take().expect("piped"));
        let stderr = reader(child.stderr.take().expect("piped"));
        Spawned {
            child,
            lines,
            stderr,
        }
    }

    /// The next stdout line (without its newline); panics after [`STEP_LIMIT`].
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(STEP_LIMIT) {
            Ok(l) => l.trim_end_matches('\n').to_string(),
            Err(e) => {
                let _ = self.child.kill();
                let err: String = self.stderr.try_iter().collect();
                panic!("no output line ({e:?}); stderr:\n{err}");
            }
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("poll a child").is_none()
    }

    /// Sends SIGINT.
    pub fn interrupt(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
    }

    /// Waits for the exit; returns the status and the rest of stdout and stderr.
    pub fn finish(mut self) -> Output {
        let status = wait(&mut self.child, Instant::now() + STEP_LIMIT);
        Output {
            stdout: self.lines.iter().collect(),
            stderr: self.stderr.iter().collect(),
            status: status_text(status),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
