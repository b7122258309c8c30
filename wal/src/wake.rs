//! Threads that keep every CPU from sleeping through a disk completion.
//!
//! On some virtual machines a vCPU that halts while a thread waits for the disk learns of the
//! completion only at its next timer tick. Measured on this project's Firecracker VMs (4 ms
//! ticks, 2 vCPUs): a 4 KiB O_DSYNC write or an fdatasync that the disk finished in ~0.2 ms
//! returned after 3.4–4 ms whenever the CPUs were otherwise idle, so a lone client's put took
//! 4 ms, ten times etcd's. etcd does not see it because Go's runtime keeps waking (its
//! sysmon thread sleeps 20 µs at a time while goroutines are in system calls). A timer on the
//! waiting executor alone was not enough: the wait is finished by kernel threads (io_uring's
//! workers, the journal, the interrupt) on whichever CPU they run, so every CPU needs one.
//!
//! While at least one [`InFlight`] guard lives, one thread per CPU this process may run on
//! sleeps `every` and wakes, over and over; when the last guard goes they park. Each wake-up
//! costs a few µs of CPU, and only while the WAL waits for the disk; they are SCHED_IDLE, so
//! they never take a busy CPU from the server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Duration;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// One waker per CPU, started at the first guard; its period is the first guard's.
static WAKERS: OnceLock<Vec<Thread>> = OnceLock::new();

/// Keeps the wakers running while it lives.
pub struct InFlight(());

impl InFlight {
    pub fn new(every: Duration) -> InFlight {
        let wakers = WAKERS.get_or_init(|| start(every));
        if IN_FLIGHT.fetch_add(1, Ordering::AcqRel) == 0 {
            wakers.iter().for_each(Thread::unpark);
        }
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let before = IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "an InFlight guard dropped twice");
    }
}

/// Guards alive now (for tests).
pub fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::Acquire)
}

fn start(every: Duration) -> Vec<Thread> {
    allowed_cpus()
        .into_iter()
        .filter_map(|cpu| {
            std::thread::Builder::new()
                .name(format!("wal-wake-{cpu}"))
                .spawn(move || {
                    pin_to(cpu);
                    run_only_when_idle();
                    loop {
                        if IN_FLIGHT.load(Ordering::Acquire) > 0 {
                            std::thread::sleep(every);
                        } else {
                            std::thread::park();
                        }
                    }
                })
                // Without a waker the WAL is only slower on such VMs, never wrong.
                .ok()
                .map(|h| h.thread().clone())
        })
        .collect()
}

/// The CPUs in this thread's affinity mask (what `taskset` or a cgroup allows).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills the zeroed set we own; CPU_ISSET reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// SCHED_IDLE: a waker runs only on a CPU with nothing else to run, which is the only CPU it
/// has to wake; on a busy one it costs its timer interrupt, not a preemption of the server.
fn run_only_when_idle() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sets the calling thread's policy from a parameter we own.
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t we own with one bit set, applied to the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
}
