//! The README's quick start, run as code: corekv started as the README's first command starts
//! it (no --data-dir, so `default.corekv` relative to a fresh working directory; only the ports
//! are moved so that CI never collides), then every command of the quick start's `console`
//! blocks, verbatim, with its output compared to what the README shows. Then a restart and the
//! reads again. If the README's quick start changes, this test follows it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_get, require_binary, DieWithTest};

const README: &str = include_str!("../README.md");
const READY_LIMIT: Duration = Duration::from_secs(60);

/// One `$ command` of a console block and the lines the README shows it printing.
#[derive(Debug)]
struct Step {
    command: String,
    output: Vec<String>,
}

/// The `console` blocks of the README's "Quick start" section.
fn quick_start_steps() -> Vec<Step> {
    let start = README
        .find("## Quick start")
        .expect("the README has a Quick start section");
    let section = &README[start + 3..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_console = !in_console && line.trim() == "```console";
            continue;
        }
        if !in_console {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: cmd.to_owned(),
                output: Vec::new(),
            });
        } else {
            let step = steps.last_mut().expect("output before any command");
            step.output.push(line.to_owned());
        }
    }
    steps
}

/// Splits a command line as a POSIX shell would for these simple cases: words separated by
/// spaces, double or single quotes group, nothing else is special.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, ' ') => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(quote.is_none(), "unbalanced quote in {line:?}");
    if in_word {
        words.push(word);
    }
    words
}

/// Whether `actual` matches the README's `expected` line, where `...` stands for anything.
fn line_matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split("...").collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let mut rest = actual;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// The README's command as a process: `cargo run --release --bin X --` becomes the binary
/// cargo built for this test, `etcdctl` stock etcdctl. Both find the server through
/// ETCDCTL_ENDPOINTS, so the words after the program are the README's own.
fn command_for(step: &Step, endpoint: &str) -> Command {
    let words = shell_words(&step.command);
    let (program, args): (PathBuf, &[String]) = match words.first().map(String::as_str) {
        Some("cargo") => {
            let dash = words
                .iter()
                .position(|w| w == "--")
                .expect("a cargo run command passes its arguments after --");
            let bin = words
                .windows(2)
                .find(|w| w[0] == "--bin")
                .map(|w| w[1].as_str())
                .expect("a cargo run command names its --bin");
            let path = match bin {
                "corekvctl" => PathBuf::from(env!("CARGO_BIN_EXE_corekvctl")),
                other => panic!("the quick start runs an unknown binary {other}"),
            };
            (path, &words[dash + 1..])
        }
        Some("etcdctl") => (require_binary("etcdctl"), &words[1..]),
        other => panic!("the quick start runs an unknown program {other:?}"),
    };
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars() {
        if k.starts_with("ETCDCTL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .env("ETCDCTL_ENDPOINTS", endpoint)
        .args(args);
    cmd
}

fn run_step(step: &Step, endpoint: &str) {
    let out = command_for(step, endpoint)
        .stdin(Stdio::null())
        .die_with_test()
        .output()
        .expect("the command runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`{}` failed ({}): {stderr}",
        step.command,
        out.status
    );
    let got: Vec<&str> = stdout.lines().collect();
    let ok = got.len() == step.output.len()
        && step
            .output
            .iter()
            .zip(&got)
            .all(|(want, got)| line_matches(want, got));
    assert!(
        ok,
        "`{}` printed\n{stdout}\nbut the README shows\n{}",
        step.command,
        step.output.join("\n")
    );
}

/// corekv started in `cwd` with the given flags, as a user would from a shell there.
struct Corekv {
    child: Option<Child>,
    cwd: PathBuf,
    flags: Vec<String>,
    client_port: u16,
    log: PathBuf,
}

impl Corekv {
    /// Starts corekv with `flags` plus listen/advertise flags on free ports.
    fn start(cwd: &Path, flags: &[&str]) -> Corekv {
        let client_port = free_port();
        let peer_port = free_port();
        let mut all: Vec<String> = vec![
            format!("--listen-client-urls=http://127.0.0.1:{client_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{client_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
        ];
        all.extend(flags.iter().map(|f| f.to_string()));
        let mut s = Corekv {
            child: None,
            cwd: cwd.to_owned(),
            flags: all,
            client_port,
            log: cwd.join("corekv.log"),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_corekv"))
            .current_dir(&self.cwd)
            .args(&self.flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .die_with_test()
            .spawn()
            .expect("corekv runs");
        self.child = Some(child);
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("corekv exited at start ({status}); log:\n{}", self.log());
            }
            if http_get(self.client_port, "/health").is_some_and(|b| b.contains("\"true\"")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "corekv not healthy within {READY_LIMIT:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, then the same command again in the same directory.
    fn restart(&mut self) {
        self.kill();
        // The killed process's listening sockets linger a moment (io_uring teardown).
        let deadline = Instant::now() + READY_LIMIT;
        while std::net::TcpListener::bind(("127.0.0.1", self.client_port)).is_err() {
            assert!(Instant::now() < deadline, "client port still taken");
            std::thread::sleep(Duration::from_millis(5));
        }
        self.spawn();
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Corekv {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn the_readme_quick_start_works_against_the_default_data_dir() {
    let steps = quick_start_steps();
    assert!(
        steps.iter().any(|s| s.command.starts_with("cargo run"))
            && steps.iter().any(|s| s.command.starts_with("etcdctl")),
        "the quick start lost its corekvctl or etcdctl commands: {steps:?}"
    );
    let cwd = tempfile::tempdir().unwrap();
    let mut server = Corekv::start(cwd.path(), &[]);
    for step in &steps {
        run_step(step, &server.endpoint());
    }

    let data_dir = cwd.path().join("default.corekv");
    assert!(
        data_dir.join("member").join("wal").is_dir(),
        "the WAL is not under {}",
        data_dir.display()
    );
    let log = server.log();
    assert!(
        log.contains(&format!("data_dir={}", data_dir.display())),
        "the start line does not name the absolute data dir {}:\n{log}",
        data_dir.display()
    );
    assert!(
        !log.contains('\x1b'),
        "terminal colour codes in a log that is not a terminal:\n{log:?}"
    );

    // What was written survives a restart: every read of the quick start answers the same.
    server.restart();
    let reads: Vec<&Step> = steps
        .iter()
        .filter(|s| shell_words(&s.command).iter().any(|w| w == "get"))
        .collect();
    assert!(!reads.is_empty(), "the quick start reads nothing back");
    for step in reads {
        run_step(step, &server.endpoint());
    }
}

#[test]
fn a_relative_data_dir_works_and_json_logs_are_json_lines() {
    let cwd = tempfile::tempdir().unwrap();
    let mut server = Corekv::start(
        cwd.path(),
        &["--data-dir", "mydata", "--log-format", "json"],
    );
    let put = Step {
        command: "etcdctl put k v".into(),
        output: vec!["OK".into()],
    };
    let get = Step {
        command: "etcdctl get k --print-value-only".into(),
        output: vec!["v".into()],
    };
    run_step(&put, &server.endpoint());
    server.restart();
    run_step(&get, &server.endpoint());
    assert!(cwd.path().join("mydata/member/db").is_file());

    let log = server.log();
    let mut serving = 0;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line:?}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
        if v.get("message").and_then(|m| m.as_str()) == Some("corekv is serving") {
            serving += 1;
            let dir = v["data_dir"].as_str().expect("data_dir is logged");
            assert_eq!(Path::new(dir), cwd.path().join("mydata"));
        }
    }
    assert_eq!(serving, 2, "one start line per start:\n{log}");
}

#[test]
fn readme_console_lines_match_with_placeholders() {
    assert!(line_matches("a...c", "abbbc"));
    assert!(line_matches("{\"x\":...,\"y\":2}", "{\"x\":17,\"y\":2}"));
    assert!(!line_matches("a...c", "abd"));
    assert!(!line_matches("OK", "OK "));
    assert_eq!(
        shell_words(r#"put mykey "this is awesome""#),
        vec!["put", "mykey", "this is awesome"]
    );
}
