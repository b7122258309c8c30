//! Which network executor serves a new client connection.
//!
//! A request served on executor 0 reaches the consensus core without crossing a thread; one
//! served elsewhere costs a wake-up of executor 0 and another of its own executor for the
//! reply (on these VMs each park/wake cycle is an io_uring wait plus glommio's membarrier, so
//! a lone put served on executor 1 measured about 2.5x the CPU of one served on executor 0).
//! The kernel's SO_REUSEPORT hash would put a lone client on either at random, so executor 0
//! accepts every connection and places it on the executor with the fewest open connections,
//! executor 0 first on a tie: one client gets the short path, many are spread evenly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Open client connections per executor, shared by all of them.
#[derive(Debug)]
pub struct ConnPlacement {
    open: Vec<AtomicUsize>,
}

impl ConnPlacement {
    pub fn new(executors: usize) -> Arc<Self> {
        assert!(executors > 0, "at least one network executor");
        Arc::new(Self {
            open: (0..executors).map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    /// Picks the executor for a new connection and counts it there. Only executor 0 places
    /// connections, so the choice and the increment need no compare-and-swap.
    pub fn place(self: &Arc<Self>) -> OpenConnection {
        // min_by_key keeps the first of equals: the lowest index, executor 0 first.
        let (executor, _) = self
            .open
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .enumerate()
            .min_by_key(|&(_, open)| open)
            .expect("at least one network executor");
        self.open[executor].fetch_add(1, Ordering::Relaxed);
        OpenConnection {
            placement: self.clone(),
            executor,
        }
    }

    #[cfg(test)]
    fn open_on(&self, executor: usize) -> usize {
        self.open[executor].load(Ordering::Relaxed)
    }
}

/// A placed connection; dropping it (when the connection ends) frees its slot.
#[derive(Debug)]
pub struct OpenConnection {
    placement: Arc<ConnPlacement>,
    executor: usize,
}

impl OpenConnection {
    pub fn executor(&self) -> usize {
        self.executor
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let before = self.placement.open[self.executor].fetch_sub(1, Ordering::Relaxed);
        debug_assert!(before > 0, "a connection closed twice");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_connection_goes_to_the_consensus_executor() {
        let p = ConnPlacement::new(4);
        let c = p.place();
        assert_eq!(c.executor(), 0);
    }

    #[test]
    fn connections_spread_evenly_and_closed_slots_are_reused() {
        let p = ConnPlacement::new(3);
        let conns: Vec<_> = (0..7).map(|_| p.place()).collect();
        let on: Vec<usize> = conns.iter().map(|c| c.executor()).collect();
        assert_eq!(on, vec![0, 1, 2, 0, 1, 2, 0]);
        assert_eq!((p.open_on(0), p.open_on(1), p.open_on(2)), (3, 2, 2));
        drop(conns);
        assert_eq!((p.open_on(0), p.open_on(1), p.open_on(2)), (0, 0, 0));
        let again = p.place();
        assert_eq!(again.executor(), 0);
    }

    #[test]
    fn a_freed_slot_elsewhere_is_filled_first() {
        let p = ConnPlacement::new(2);
        let a = p.place();
        let b = p.place();
        assert_eq!((a.executor(), b.executor()), (0, 1));
        drop(b);
        assert_eq!(p.place().executor(), 1);
    }
}
