//! CPU time of another process, from /proc/<pid>/stat (utime + stime: all its threads).

use std::collections::HashMap;

/// Clock ticks per second (the unit of utime and stime).
fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of `pid` in seconds, or None if it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text).map(|ticks| ticks as f64 / ticks_per_sec())
}

/// utime + stime of each of the kernel's worker threads (kworker/*, ksoftirqd/*), in ticks, by
/// pid. Disk I/O a server submits is partly finished there (for direct O_DSYNC writes the
/// completion and the cache flush run in a kworker), so this is CPU spent for the server that
/// its own /proc figure does not show; on a machine doing nothing else it is mostly that.
pub fn kernel_worker_ticks() -> HashMap<u32, u64> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            if !is_kernel_worker(&text) {
                return None;
            }
            Some((pid, parse_stat(&text)?))
        })
        .collect()
}

/// Seconds of CPU the kernel workers used between two `kernel_worker_ticks` snapshots. Workers
/// come and go: one that started in between counts in full, one that exited in between is left
/// out (its last ticks are lost, rather than its whole lifetime subtracted, which made the
/// machine-wide sum go negative).
pub fn kernel_worker_cpu_between(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> f64 {
    let ticks: u64 = after
        .iter()
        .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum();
    ticks as f64 / ticks_per_sec()
}

/// Whether a /proc/<pid>/stat line is a kernel worker thread's.
fn is_kernel_worker(stat: &str) -> bool {
    let name = stat.find('(').map_or("", |i| &stat[i + 1..]);
    name.starts_with("kworker/") || name.starts_with("ksoftirqd/")
}

/// utime + stime (fields 14 and 15) in ticks. The command name (field 2) is in parentheses and
/// may hold spaces, so fields are counted from the last ')'.
fn parse_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 -> index 11, stime index 12.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 40 0 0 20 0 7 0 \
                    100 1000000 100 18446744073709551615";
        assert_eq!(parse_stat(line), Some(290));
    }

    #[test]
    fn tells_kernel_workers() {
        assert!(is_kernel_worker("77 (kworker/1:2H-kblockd) I 2 0 0"));
        assert!(is_kernel_worker("15 (ksoftirqd/1) S 2 0 0"));
        assert!(!is_kernel_worker("1234 (etcd) S 1 1234"));
    }

    #[test]
    fn workers_that_exit_do_not_make_the_sum_negative() {
        let before = HashMap::from([(10, 500), (11, 7)]);
        // 10 exited, 11 ran 3 ticks, 12 is new (2 ticks).
        let after = HashMap::from([(11, 10), (12, 2)]);
        let tps = ticks_per_sec();
        assert_eq!(kernel_worker_cpu_between(&before, &after), 5.0 / tps);
        // 10's pid reused by a new worker with fewer ticks: nothing, not a negative figure.
        let reused = HashMap::from([(10, 1)]);
        assert_eq!(kernel_worker_cpu_between(&before, &reused), 0.0);
    }

    #[test]
    fn reads_own_cpu() {
        let me = std::process::id();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(cpu_seconds(me).is_some());
    }
}
