//! The watch hub: which watcher wants which event. It runs on the consensus core beside the
//! MVCC store, sees every applied write, and produces ordered responses per watch stream.
//!
//! Watchers are either synced (they get events as writes are applied) or catching up
//! (they get history in chunks, pulled by their stream, until they reach the current
//! revision and become synced again) — etcd's synced/unsynced groups, with the stream
//! deciding when a lagging client can take more.

use std::collections::HashMap;

use bytes::Bytes;
use slab::Slab;

use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb::{event::EventType, Event};
use crate::server::message::{DeliveryKind, WatchCommand, WatchDelivery};

/// Revisions replayed per history chunk (etcd's watchBatchMaxRevs).
const CHUNK_REVISIONS: i64 = 1000;

/// Where the hub reads history and revisions from (the MVCC store).
pub trait History {
    fn current_revision(&self) -> i64;
    fn compact_revision(&self) -> i64;
    /// Events of revisions `from_rev..=to_rev` on keys in the range, in revision order, with
    /// prev_kv filled when there was one.
    fn events(&self, key: &[u8], range_end: &[u8], from_rev: i64, to_rev: i64) -> Vec<Event>;
}

/// The keys a watcher covers, in etcd's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Keys {
    One(Bytes),
    /// [start, end); an empty end means every key from start on.
    Range(Bytes, Bytes),
}

impl Keys {
    fn contains(&self, key: &[u8]) -> bool {
        match self {
            Keys::One(k) => k.as_ref() == key,
            Keys::Range(start, end) => {
                key >= start.as_ref() && (end.is_empty() || key < end.as_ref())
            }
        }
    }

    /// (key, range_end) as MVCC ranges take them.
    fn as_range(&self) -> (&[u8], &[u8]) {
        match self {
            Keys::One(k) => (k, &[]),
            Keys::Range(s, e) if e.is_empty() => (s, b"\0"),
            Keys::Range(s, e) => (s, e),
        }
    }
}

struct Watcher {
    executor: u16,
    stream: u64,
    watch_id: i64,
    keys: Keys,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    fragment: bool,
    synced: bool,
    /// Events sent since the last progress notification.
    active: bool,
}

type StreamKey = (u16, u64);

#[derive(Default)]
struct StreamWatchers {
    ids: HashMap<i64, usize>,
    next_auto_id: i64,
}

/// Response header fields the hub cannot know by itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeaderInfo {
    pub cluster_id: u64,
    pub member_id: u64,
    pub raft_term: u64,
}

pub struct WatchHub {
    watchers: Slab<Watcher>,
    streams: HashMap<StreamKey, StreamWatchers>,
    /// Synced single-key watchers by key, and synced range watchers.
    synced_keys: HashMap<Bytes, Vec<usize>>,
    synced_ranges: Vec<usize>,
    /// Events matched during the current apply batch, per watcher.
    pending: HashMap<usize, Vec<Event>>,
    out: Vec<(u16, WatchDelivery)>,
    pub header: HeaderInfo,
    prev_kv_watchers: usize,
    progress_every: u64,
    last_progress: u64,
}

impl WatchHub {
    /// `progress_every`: ticks between progress notifications (etcd: 10 minutes).
    pub fn new(progress_every: u64) -> WatchHub {
        WatchHub {
            watchers: Slab::new(),
            streams: HashMap::new(),
            synced_keys: HashMap::new(),
            synced_ranges: Vec::new(),
            pending: HashMap::new(),
            out: Vec::new(),
            header: HeaderInfo::default(),
            prev_kv_watchers: 0,
            progress_every: progress_every.max(1),
            last_progress: 0,
        }
    }

    pub fn watcher_count(&self) -> usize {
        self.watchers.len()
    }

    /// Whether any watcher asked for prev_kv (else writes need not look it up).
    pub fn wants_prev_kv(&self) -> bool {
        self.prev_kv_watchers > 0
    }

    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: self.header.cluster_id,
            member_id: self.header.member_id,
            revision,
            raft_term: self.header.raft_term,
        })
    }

    fn send(
        &mut self,
        executor: u16,
        stream: u64,
        kind: DeliveryKind,
        response: pb::WatchResponse,
    ) {
        let fragment = false;
        self.out.push((
            executor,
            WatchDelivery {
                stream,
                kind,
                fragment,
                response,
            },
        ));
    }

    pub fn take_deliveries(&mut self) -> Vec<(u16, WatchDelivery)> {
        std::mem::take(&mut self.out)
    }

    pub fn command(&mut self, executor: u16, stream: u64, cmd: WatchCommand, h: &dyn History) {
        match cmd {
            WatchCommand::Create(c) => self.create(executor, stream, c, h),
            WatchCommand::Refuse(reason) => {
                let response = refused(self.header(h.current_revision()), &reason);
                self.send(executor, stream, DeliveryKind::Control, response);
            }
            WatchCommand::Cancel(id) => self.cancel(executor, stream, id, h),
            WatchCommand::Progress => {
                let response = pb::WatchResponse {
                    header: self.header(h.current_revision()),
                    watch_id: -1,
                    ..Default::default()
                };
                self.send(executor, stream, DeliveryKind::Control, response);
            }
            WatchCommand::Resync { watch_id, from_rev } => {
                if let Some(&idx) = self
                    .streams
                    .get(&(executor, stream))
                    .and_then(|s| s.ids.get(&watch_id))
                {
                    self.unsync(idx);
                    self.catch_up(idx, from_rev, h);
                }
            }
            WatchCommand::Close => {
                if let Some(s) = self.streams.remove(&(executor, stream)) {
                    for idx in s.ids.into_values() {
                        self.remove(idx);
                    }
                }
            }
        }
    }

    fn create(&mut self, executor: u16, stream: u64, c: pb::WatchCreateRequest, h: &dyn History) {
        let current = h.current_revision();
        let key = if c.key.is_empty() {
            Bytes::from_static(b"\0")
        } else {
            c.key.clone()
        };
        let keys = match c.range_end.as_ref() {
            [] => Keys::One(key),
            [0] => Keys::Range(key, Bytes::new()),
            end => Keys::Range(key, Bytes::copy_from_slice(end)),
        };
        let fail = |hub: &mut Self, reason: &str| {
            let response = refused(hub.header(current), reason);
            hub.send(executor, stream, DeliveryKind::Control, response);
        };
        if let Keys::Range(s, e) = &keys {
            if !e.is_empty() && s >= e {
                return fail(self, "mvcc: watcher range is empty");
            }
        }
        let sw = self.streams.entry((executor, stream)).or_default();
        let watch_id = if c.watch_id == 0 {
            while sw.ids.contains_key(&sw.next_auto_id) {
                sw.next_auto_id += 1;
            }
            let id = sw.next_auto_id;
            sw.next_auto_id += 1;
            id
        } else if sw.ids.contains_key(&c.watch_id) {
            return fail(self, "mvcc: duplicate watch ID provided on the WatchStream");
        } else {
            c.watch_id
        };
        let no_put = c
            .filters
            .contains(&(pb::watch_create_request::FilterType::Noput as i32));
        let no_delete = c
            .filters
            .contains(&(pb::watch_create_request::FilterType::Nodelete as i32));
        self.prev_kv_watchers += c.prev_kv as usize;
        let idx = self.watchers.insert(Watcher {
            executor,
            stream,
            watch_id,
            keys,
            no_put,
            no_delete,
            prev_kv: c.prev_kv,
            progress_notify: c.progress_notify,
            fragment: c.fragment,
            synced: false,
            active: false,
        });
        sw.ids.insert(watch_id, idx);
        let response = pb::WatchResponse {
            header: self.header(current),
            watch_id,
            created: true,
            ..Default::default()
        };
        self.send(executor, stream, DeliveryKind::Control, response);
        let start = if c.start_revision == 0 {
            current + 1
        } else {
            c.start_revision
        };
        if start > current {
            self.sync(idx);
        } else {
            self.catch_up(idx, start, h);
        }
    }

    fn cancel(&mut self, executor: u16, stream: u64, watch_id: i64, h: &dyn History) {
        let Some(idx) = self
            .streams
            .get_mut(&(executor, stream))
            .and_then(|s| s.ids.remove(&watch_id))
        else {
            return; // etcd answers nothing for an unknown watch id
        };
        self.remove(idx);
        let response = pb::WatchResponse {
            header: self.header(h.current_revision()),
            watch_id,
            canceled: true,
            ..Default::default()
        };
        self.send(executor, stream, DeliveryKind::Control, response);
    }

    fn remove(&mut self, idx: usize) {
        self.remove_indexed(idx);
        self.pending.remove(&idx);
        let w = self.watchers.remove(idx);
        self.prev_kv_watchers -= w.prev_kv as usize;
    }

    fn sync(&mut self, idx: usize) {
        let w = &mut self.watchers[idx];
        if w.synced {
            return;
        }
        w.synced = true;
        match &w.keys {
            Keys::One(k) => self.synced_keys.entry(k.clone()).or_default().push(idx),
            Keys::Range(..) => self.synced_ranges.push(idx),
        }
    }

    fn unsync(&mut self, idx: usize) {
        self.remove_indexed(idx);
        self.watchers[idx].synced = false;
    }

    fn remove_indexed(&mut self, idx: usize) {
        let w = &self.watchers[idx];
        if !w.synced {
            return;
        }
        match &w.keys {
            Keys::One(k) => {
                if let Some(v) = self.synced_keys.get_mut(k) {
                    v.retain(|i| *i != idx);
                    if v.is_empty() {
                        self.synced_keys.remove(k);
                    }
                }
            }
            Keys::Range(..) => self.synced_ranges.retain(|i| *i != idx),
        }
    }

    /// Sends the watcher the next chunk of history from `from_rev`; a watcher that reaches
    /// the current revision becomes synced.
    fn catch_up(&mut self, idx: usize, from_rev: i64, h: &dyn History) {
        let current = h.current_revision();
        let compacted = h.compact_revision();
        let w = &self.watchers[idx];
        let (executor, stream, watch_id) = (w.executor, w.stream, w.watch_id);
        if from_rev < compacted {
            // etcd's compaction notice carries no revision in its header.
            let response = pb::WatchResponse {
                header: self.header(0),
                watch_id,
                canceled: true,
                compact_revision: compacted,
                ..Default::default()
            };
            self.send(executor, stream, DeliveryKind::Control, response);
            if let Some(s) = self.streams.get_mut(&(executor, stream)) {
                s.ids.remove(&watch_id);
            }
            self.remove(idx);
            return;
        }
        let to_rev = current.min(from_rev.saturating_add(CHUNK_REVISIONS - 1));
        let events = if from_rev <= to_rev {
            let (key, end) = w.keys.as_range();
            h.events(key, end, from_rev, to_rev)
        } else {
            Vec::new()
        };
        let events = self.filter(idx, events.iter());
        let done = to_rev >= current;
        let kind = if done {
            DeliveryKind::CaughtUp
        } else {
            DeliveryKind::CatchUp {
                next_rev: to_rev + 1,
            }
        };
        if done {
            self.sync(idx);
        }
        self.respond(idx, events, current, kind);
    }

    fn filter<'a>(&self, idx: usize, events: impl Iterator<Item = &'a Event>) -> Vec<Event> {
        let w = &self.watchers[idx];
        events
            .filter(|e| {
                let put = e.r#type == EventType::Put as i32;
                !(put && w.no_put || !put && w.no_delete)
            })
            .map(|e| {
                let mut e = e.clone();
                if !w.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }

    fn respond(&mut self, idx: usize, events: Vec<Event>, revision: i64, kind: DeliveryKind) {
        let w = &mut self.watchers[idx];
        if !events.is_empty() {
            w.active = true;
        }
        let (executor, stream, watch_id, fragment) = (w.executor, w.stream, w.watch_id, w.fragment);
        let response = pb::WatchResponse {
            header: self.header(revision),
            watch_id,
            events,
            ..Default::default()
        };
        self.out.push((
            executor,
            WatchDelivery {
                stream,
                kind,
                fragment,
                response,
            },
        ));
    }

    /// Matches the events of one applied write against synced watchers.
    pub fn notify(&mut self, events: &[Event]) {
        for ev in events {
            let Some(kv) = ev.kv.as_ref() else { continue };
            if let Some(ws) = self.synced_keys.get(&kv.key) {
                for idx in ws {
                    self.pending.entry(*idx).or_default().push(ev.clone());
                }
            }
            for idx in &self.synced_ranges {
                if self.watchers[*idx].keys.contains(&kv.key) {
                    self.pending.entry(*idx).or_default().push(ev.clone());
                }
            }
        }
    }

    /// Sends what `notify` matched since the last flush: one response per watcher.
    pub fn flush(&mut self, revision: i64) {
        if self.pending.is_empty() {
            return;
        }
        let mut pending: Vec<(usize, Vec<Event>)> = self.pending.drain().collect();
        // Deterministic order across watchers (per stream order is what clients see).
        pending.sort_unstable_by_key(|(idx, _)| *idx);
        for (idx, evs) in pending {
            let evs = self.filter(idx, evs.iter());
            if !evs.is_empty() {
                self.respond(idx, evs, revision, DeliveryKind::Live);
            }
        }
    }

    /// The store was replaced by a snapshot: watchers that were synced (had seen every event
    /// before `from_rev`) catch up from the new store's history.
    pub fn resync_all(&mut self, from_rev: i64, h: &dyn History) {
        let synced: Vec<usize> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.synced)
            .map(|(idx, _)| idx)
            .collect();
        for idx in synced {
            self.unsync(idx);
            self.pending.remove(&idx);
            self.catch_up(idx, from_rev, h);
        }
    }

    /// Sends progress notifications to idle synced watchers that asked for them.
    pub fn tick(&mut self, now: u64, revision: i64) {
        if now < self.last_progress + self.progress_every {
            return;
        }
        self.last_progress = now;
        let mut due = Vec::new();
        for (idx, w) in self.watchers.iter_mut() {
            if w.progress_notify && w.synced && !std::mem::take(&mut w.active) {
                due.push(idx);
            }
        }
        for idx in due {
            self.respond(idx, Vec::new(), revision, DeliveryKind::Live);
        }
    }
}

#[cfg(test)]
mod tests;

/// The answer to a create that makes no watcher: created and canceled at once, with why.
fn refused(header: Option<pb::ResponseHeader>, reason: &str) -> pb::WatchResponse {
    pb::WatchResponse {
        header,
        watch_id: -1,
        created: true,
        canceled: true,
        cancel_reason: reason.to_owned(),
        ..Default::default()
    }
}
