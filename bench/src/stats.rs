//! Latencies and errors: what each executor records, how the records merge, and the report
//! (etcd benchmark's text layout, or one JSON object).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The percentiles etcd's benchmark prints.
const PERCENTILES: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];

/// Latencies (microseconds) and errors of one kind of request, on one executor or merged.
#[derive(Clone, Debug)]
pub struct Recorder {
    pub hist: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            // 1 µs .. 10 min at 3 significant digits.
            hist: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
            errors: BTreeMap::new(),
        }
    }
}

impl Recorder {
    pub fn ok(&mut self, latency: Duration) {
        let us = (latency.as_nanos() / 1000).clamp(1, 600_000_000) as u64;
        self.hist.saturating_record(us);
    }

    pub fn err(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    pub fn err_n(&mut self, kind: impl Into<String>, n: u64) {
        if n > 0 {
            *self.errors.entry(kind.into()).or_default() += n;
        }
    }

    pub fn merge(&mut self, other: &Recorder) {
        self.hist
            .add(&other.hist)
            .expect("histograms with equal bounds");
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Latency figures in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub min_ms: f64,
    pub avg_ms: f64,
    pub stddev_ms: f64,
    pub max_ms: f64,
    pub p10_ms: f64,
    pub p25_ms: f64,
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

impl Latency {
    pub fn of(r: &Recorder) -> Latency {
        let h = &r.hist;
        if h.is_empty() {
            return Latency::default();
        }
        let q = |p: f64| ms(h.value_at_quantile(p / 100.0));
        Latency {
            count: h.len(),
            min_ms: ms(h.min()),
            avg_ms: h.mean() / 1000.0,
            stddev_ms: h.stdev() / 1000.0,
            max_ms: ms(h.max()),
            p10_ms: q(10.0),
            p25_ms: q(25.0),
            p50_ms: q(50.0),
            p75_ms: q(75.0),
            p90_ms: q(90.0),
            p95_ms: q(95.0),
            p99_ms: q(99.0),
            p999_ms: q(99.9),
        }
    }
}

/// One bar of the response-time histogram: requests with latency in (previous bound, le_ms].
#[derive(Clone, Debug, Serialize)]
pub struct Bucket {
    pub le_ms: f64,
    pub count: u64,
}

/// etcd's layout: ten equal-width buckets from the fastest to the slowest request (eleven
/// bounds, the first holding only the fastest).
pub fn buckets(r: &Recorder) -> Vec<Bucket> {
    let h = &r.hist;
    if h.is_empty() {
        return vec![];
    }
    let (lo, hi) = (h.min(), h.max());
    let step = (hi - lo) as f64 / 10.0;
    let mut out: Vec<Bucket> = (0..=10)
        .map(|i| Bucket {
            le_ms: ms(if i == 10 {
                hi
            } else {
                lo + (step * i as f64) as u64
            }),
            count: 0,
        })
        .collect();
    // Each recorded value (at histogram precision) goes to the first bucket whose bound holds
    // it, so the counts add up to the number of requests exactly.
    for v in h.iter_recorded() {
        let value = ms(h.lowest_equivalent(v.value_iterated_to()));
        let i = out.iter().position(|b| value <= b.le_ms).unwrap_or(10);
        out[i].count += v.count_at_value();
    }
    out
}

/// CPU used by the benchmark process itself.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClientCpu {
    /// User + system CPU seconds of the whole bench process during the measured phase.
    pub cpu_s: f64,
    /// `cpu_s` / wall seconds: 1.0 = one core fully busy.
    pub cores_used: f64,
    /// The busiest client executor thread's CPU / wall (1.0 = that thread never idled: the
    /// client, not the server, limited the rate).
    pub busiest_executor: f64,
    pub executors: usize,
}

/// The final report of one benchmark run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub workload: String,
    pub endpoints: Vec<String>,
    pub conns: usize,
    pub clients: usize,
    /// What the server says it is (Status.version).
    pub server_version: String,
    /// Successful requests (for watch workloads: events delivered).
    pub requests: u64,
    pub duration_s: f64,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub avg_ms: f64,
    /// Failed requests, all kinds.
    pub errors: u64,
    /// Failed requests by error text.
    pub error_kinds: BTreeMap<String, u64>,
    pub latency: Latency,
    pub histogram: Vec<Bucket>,
    pub client_cpu: ClientCpu,
    /// Workload-specific figures (read/write split, watch creation, puts behind events, ...).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Extra text sections for the human-readable report.
    #[serde(skip)]
    pub sections: Vec<(String, Recorder)>,
    #[serde(skip)]
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(workload: &str, rec: &Recorder, duration: Duration) -> Report {
        let lat = Latency::of(rec);
        let secs = duration.as_secs_f64();
        Report {
            workload: workload.to_string(),
            endpoints: vec![],
            conns: 0,
            clients: 0,
            server_version: String::new(),
            requests: rec.count(),
            duration_s: secs,
            requests_per_sec: if secs > 0.0 {
                rec.count() as f64 / secs
            } else {
                0.0
            },
            p50_ms: lat.p50_ms,
            p90_ms: lat.p90_ms,
            p99_ms: lat.p99_ms,
            p999_ms: lat.p999_ms,
            avg_ms: lat.avg_ms,
            errors: rec.error_count(),
            error_kinds: rec.errors.clone(),
            latency: lat,
            histogram: buckets(rec),
            client_cpu: ClientCpu::default(),
            extra: serde_json::Map::new(),
            sections: vec![],
            notes: vec![],
        }
    }

    pub fn extra(&mut self, key: &str, value: impl Serialize) {
        self.extra.insert(
            key.to_string(),
            serde_json::to_value(value).expect("serializable"),
        );
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("serializable report")
    }

    /// The text report, laid out like etcd's benchmark tool.
    pub fn text(&self, main: &Recorder) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n{} against {}",
            self.workload,
            self.endpoints.join(",")
        );
        if !self.server_version.is_empty() {
            let _ = writeln!(s, "  Server version:\t{}", self.server_version);
        }
        let _ = writeln!(
            s,
            "  Connections:\t{}\n  Clients:\t{}",
            self.conns, self.clients
        );
        s.push_str(&summary_text("Summary", main, self.duration_s));
        for (name, rec) in &self.sections {
            s.push_str(&summary_text(name, rec, self.duration_s));
        }
        let c = &self.client_cpu;
        let _ = writeln!(
            s,
            "\nClient CPU:\n  {:.2} s over {:.2} s = {:.2} cores; busiest of {} executor(s): {:.0}% busy{}",
            c.cpu_s,
            self.duration_s,
            c.cores_used,
            c.executors,
            c.busiest_executor * 100.0,
            if c.busiest_executor > 0.9 {
                " (the client may be the bottleneck: give it more --client-cores)"
            } else {
                ""
            }
        );
        for n in &self.notes {
            let _ = writeln!(s, "  {n}");
        }
        s
    }
}

/// etcd's "Summary / Response time histogram / Latency distribution / Error distribution".
pub fn summary_text(title: &str, rec: &Recorder, secs: f64) -> String {
    let mut s = String::new();
    let lat = Latency::of(rec);
    if rec.count() > 0 {
        let _ = writeln!(s, "\n{title}:");
        let _ = writeln!(s, "  Total:\t{secs:.4} secs.");
        let _ = writeln!(s, "  Slowest:\t{:.4} secs.", lat.max_ms / 1000.0);
        let _ = writeln!(s, "  Fastest:\t{:.4} secs.", lat.min_ms / 1000.0);
        let _ = writeln!(s, "  Average:\t{:.4} secs.", lat.avg_ms / 1000.0);
        let _ = writeln!(s, "  Stddev:\t{:.4} secs.", lat.stddev_ms / 1000.0);
        let rps = if secs > 0.0 {
            rec.count() as f64 / secs
        } else {
            0.0
        };
        let _ = writeln!(s, "  Requests/sec:\t{rps:.4}");
        let _ = writeln!(s, "\nResponse time histogram:");
        let bs = buckets(rec);
        let max = bs.iter().map(|b| b.count).max().unwrap_or(0).max(1);
        for b in &bs {
            let bar = "∎".repeat((b.count * 40 / max) as usize);
            let _ = writeln!(s, "  {:.4} [{}]\t|{}", b.le_ms / 1000.0, b.count, bar);
        }
        let _ = writeln!(s, "\nLatency distribution:");
        for p in PERCENTILES {
            let v = rec.hist.value_at_quantile(p / 100.0);
            let _ = writeln!(s, "  {p}% in {:.4} secs.", ms(v) / 1000.0);
        }
    } else {
        let _ = writeln!(s, "\n{title}: no successful requests");
    }
    if !rec.errors.is_empty() {
        let _ = writeln!(s, "\nError distribution:");
        for (k, v) in &rec.errors {
            let _ = writeln!(s, "  [{v}]\t{k}");
        }
    }
    s
}

/// The median of the finite values (NaN if there are none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_every_request() {
        let mut r = Recorder::default();
        for us in [100u64, 150, 200, 900, 1000, 5000, 5001, 20_000] {
            r.ok(Duration::from_micros(us));
        }
        let b = buckets(&r);
        assert_eq!(b.len(), 11);
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 8);
        assert_eq!(b[0].count, 1);
        let lat = Latency::of(&r);
        assert!((lat.p50_ms - 0.9).abs() < 0.01, "{lat:?}");
    }

    #[test]
    fn errors_merge_by_kind() {
        let mut a = Recorder::default();
        a.err("x");
        a.ok(Duration::from_millis(1));
        let mut b = Recorder::default();
        b.err("x");
        b.err("y");
        a.merge(&b);
        assert_eq!(a.error_count(), 3);
        assert_eq!(a.errors["x"], 2);
        assert_eq!(a.count(), 1);
    }
}
