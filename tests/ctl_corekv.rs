//! The CLI step list (`common::ctl_steps::STEPS`) against corekv.
//!
//! - Stock etcdctl on etcd vs stock etcdctl on corekv: whatever etcdctl can do, the corekv
//!   server must answer like etcd.
//! - Stock etcdctl vs corekvctl, both on corekv (twin servers with the same IDs).
//!
//! Outputs are compared byte for byte after the normalizations of `common::ctl` (IDs, ports,
//! lease IDs, timings). Where corekv is known to answer differently, the step is listed below
//! with the reason; the test fails on any other difference, and also when a listed difference
//! is gone (so the list shrinks as the server is fixed).

mod common;

use common::ctl::{diff, ids, report, Mismatch, Mode, Output, Side, Step, Tool};
use common::ctl_steps::STEPS;
use common::{Kind, Server};

/// A step whose output is known to differ, and why.
struct Known {
    /// The step's arguments and extra environment, as written in `STEPS` (every step with
    /// these matches).
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    why: &'static str,
}

const fn known(args: &'static [&'static str], why: &'static str) -> Known {
    Known {
        args,
        env: &[],
        why,
    }
}

const DB_SIZE: &str = "dbSize: corekv's backend file grows in 1 MiB steps (1.1 MB after a few \
                       writes), etcd's bbolt file is about 20 kB";

/// Where corekv answers stock etcdctl differently from etcd. (`endpoint status --cluster` and
/// `defrag --cluster` are not here: etcdctl sends `http://host:port` as their HTTP/2
/// :authority, which corekv's patched h2 accepts; see third_party/h2/PATCHED.md.)
const SERVER_DIFFERENCES: &[Known] = &[
    known(&["endpoint", "status"], DB_SIZE),
    known(&["endpoint", "status", "-w", "table"], DB_SIZE),
    known(&["endpoint", "status", "--cluster"], DB_SIZE),
];

/// Where etcdctl and corekvctl print differently against corekv: both print what corekv
/// answered, so these are server differences too.
const CLIENT_DIFFERENCES: &[Known] = &[];

/// Table borders and padding with runs of `-` and spaces squeezed to one: two servers' member
/// IDs can differ in hex length, and column widths follow.
fn squeeze_tables(s: &str) -> String {
    s.split_inclusive('\n')
        .map(|line| {
            if !(line.starts_with('+') || line.starts_with('|')) {
                return line.to_string();
            }
            let mut out = String::with_capacity(line.len());
            for c in line.chars() {
                if (c == ' ' || c == '-') && out.ends_with(c) {
                    continue;
                }
                out.push(c);
            }
            out
        })
        .collect()
}

fn same(a: &Output, b: &Output, step: &Step) -> bool {
    match step.mode {
        Mode::CodeOnly => a.status == b.status,
        _ => a == b,
    }
}

/// Sorts the mismatches of a run into known and unexpected ones; returns what is wrong (empty
/// if nothing).
fn judge(a: &Side, b: &Side, bad: Vec<Mismatch>, known: &[Known], squeeze: bool) -> String {
    let mut known_seen = vec![false; known.len()];
    let mut unexpected = Vec::new();
    for m in bad {
        let (oa, ob) = if squeeze {
            let sq = |o: &Output| Output {
                stdout: squeeze_tables(&o.stdout),
                stderr: squeeze_tables(&o.stderr),
                status: o.status.clone(),
            };
            (sq(&m.a), sq(&m.b))
        } else {
            (m.a.clone(), m.b.clone())
        };
        if same(&oa, &ob, &m.step) {
            continue;
        }
        match known
            .iter()
            .position(|k| k.args == m.step.args && k.env == m.step.env)
        {
            Some(i) => known_seen[i] = true,
            None => unexpected.push(m),
        }
    }
    // Shown with the test's output (on failure, or with --nocapture).
    for (k, seen) in known.iter().zip(&known_seen) {
        if *seen {
            eprintln!("known difference: {:?} env {:?}: {}", k.args, k.env, k.why);
        }
    }
    let mut problems = String::new();
    if !unexpected.is_empty() {
        problems.push_str(&format!(
            "{} of {} steps differ (not in the known list):{}",
            unexpected.len(),
            STEPS.len(),
            report(a, b, &unexpected)
        ));
    }
    for (k, seen) in known.iter().zip(&known_seen) {
        if !seen {
            problems.push_str(&format!(
                "\nlisted as a known difference but now the same ({}): {:?} env {:?} — \
                 remove it from the list",
                k.why, k.args, k.env
            ));
        }
    }
    problems
}

/// Runs every step with `tool_a` on a fresh `kind_a` server and `tool_b` on a fresh `kind_b`
/// server, both advertising one peer URL, and judges the differences.
fn compare((kind_a, tool_a): (Kind, Tool), (kind_b, tool_b): (Kind, Tool), known: &[Known]) {
    let peer = format!("http://127.0.0.1:{}", common::free_port());
    let sa = Server::start_advertising(kind_a, &peer);
    let sb = Server::start_advertising(kind_b, &peer);
    // Two servers of one kind advertising one URL have the same IDs, so even table widths
    // match; etcd and corekv hash it each their own way, and the widths of ID columns can
    // differ: squeeze table padding then.
    let squeeze = kind_a != kind_b;
    if !squeeze {
        assert_eq!(ids(&sa), ids(&sb), "twin servers with different IDs");
    }
    let mut a = Side::new(tool_a, &sa);
    let mut b = Side::new(tool_b, &sb);
    let bad = diff(&mut a, &mut b, STEPS);
    let problems = judge(&a, &b, bad, known, squeeze);
    assert!(problems.is_empty(), "{problems}");
}

#[test]
fn corekv_answers_etcdctl_like_etcd() {
    compare(
        (Kind::Etcd, Tool::Etcdctl),
        (Kind::Corekv, Tool::Etcdctl),
        SERVER_DIFFERENCES,
    );
}

#[test]
fn corekvctl_prints_what_etcdctl_prints_on_corekv() {
    compare(
        (Kind::Corekv, Tool::Etcdctl),
        (Kind::Corekv, Tool::Corekvctl),
        CLIENT_DIFFERENCES,
    );
}
