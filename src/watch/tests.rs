use bytes::Bytes;

use super::*;
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::mvccpb::KeyValue;

/// History kept as a list of events, one per revision from 2 on.
struct FakeHistory {
    events: Vec<Event>,
    compacted: i64,
}

impl FakeHistory {
    fn new() -> Self {
        FakeHistory {
            events: Vec::new(),
            compacted: 0,
        }
    }

    /// Records a put of `key` at the next revision and returns its event.
    fn put(&mut self, key: &str) -> Event {
        let rev = self.current_revision() + 1;
        let ev = Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: Bytes::copy_from_slice(key.as_bytes()),
                mod_revision: rev,
                create_revision: rev,
                version: 1,
                value: Bytes::from_static(b"v"),
                lease: 0,
            }),
            prev_kv: Some(KeyValue::default()),
        };
        self.events.push(ev.clone());
        ev
    }
}

impl History for FakeHistory {
    fn current_revision(&self) -> i64 {
        1 + self.events.len() as i64
    }
    fn compact_revision(&self) -> i64 {
        self.compacted
    }
    fn events(&self, key: &[u8], end: &[u8], from: i64, to: i64) -> Vec<Event> {
        let keys = match end {
            [] => Keys::One(Bytes::copy_from_slice(key)),
            [0] => Keys::Range(Bytes::copy_from_slice(key), Bytes::new()),
            e => Keys::Range(Bytes::copy_from_slice(key), Bytes::copy_from_slice(e)),
        };
        self.events
            .iter()
            .filter(|e| {
                let kv = e.kv.as_ref().unwrap();
                kv.mod_revision >= from && kv.mod_revision <= to && keys.contains(&kv.key)
            })
            .cloned()
            .collect()
    }
}

fn create(key: &str, end: &str) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(end.as_bytes()),
        ..Default::default()
    }
}

fn apply(hub: &mut WatchHub, h: &mut FakeHistory, key: &str) {
    let ev = h.put(key);
    hub.notify(&[ev]);
    hub.flush(h.current_revision());
}

fn revisions(d: &WatchDelivery) -> Vec<i64> {
    d.response
        .events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().mod_revision)
        .collect()
}

#[test]
fn watch_created_then_live_events_for_matching_keys_only() {
    let mut hub = WatchHub::new(100);
    let mut h = FakeHistory::new();
    hub.command(0, 1, WatchCommand::Create(create("a", "")), &h);
    hub.command(0, 1, WatchCommand::Create(create("b", "c")), &h);
    let out = hub.take_deliveries();
    assert_eq!(out.len(), 2);
    assert!(out
        .iter()
        .all(|(_, d)| d.response.created && d.kind == DeliveryKind::Control));
    assert_eq!(out[0].1.response.watch_id, 0);
    assert_eq!(out[1].1.response.watch_id, 1);
    apply(&mut hub, &mut h, "a");
    apply(&mut hub, &mut h, "bb");
    apply(&mut hub, &mut h, "c");
    let out = hub.take_deliveries();
    assert_eq!(out.len(), 2);
    assert_eq!(
        (out[0].1.response.watch_id, revisions(&out[0].1)),
        (0, vec![2])
    );
    assert_eq!(
        (out[1].1.response.watch_id, revisions(&out[1].1)),
        (1, vec![3])
    );
    assert!(
        out[0].1.response.events[0].prev_kv.is_none(),
        "prev_kv not asked for"
    );
}

#[test]
fn watch_filters_and_prev_kv() {
    let mut hub = WatchHub::new(100);
    let mut h = FakeHistory::new();
    let mut c = create("a", "");
    c.filters = vec![FilterType::Noput as i32];
    hub.command(0, 1, WatchCommand::Create(c), &h);
    let mut c = create("a", "");
    c.prev_kv = true;
    hub.command(0, 1, WatchCommand::Create(c), &h);
    hub.take_deliveries();
    apply(&mut hub, &mut h, "a");
    let out = hub.take_deliveries();
    assert_eq!(out.len(), 1, "the NOPUT watcher got a put");
    assert_eq!(out[0].1.response.watch_id, 1);
    assert!(out[0].1.response.events[0].prev_kv.is_some());
}

#[test]
fn watch_duplicate_id_and_empty_range_fail_like_etcd() {
    let mut hub = WatchHub::new(100);
    let h = FakeHistory::new();
    let mut c = create("a", "");
    c.watch_id = 7;
    hub.command(0, 1, WatchCommand::Create(c.clone()), &h);
    hub.command(0, 1, WatchCommand::Create(c), &h);
    hub.command(0, 1, WatchCommand::Create(create("b", "a")), &h);
    let out = hub.take_deliveries();
    assert_eq!(out[0].1.response.watch_id, 7);
    let dup = &out[1].1.response;
    assert!(dup.created && dup.canceled);
    assert_eq!(dup.watch_id, -1);
    assert_eq!(
        dup.cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    assert_eq!(
        out[2].1.response.cancel_reason,
        "mvcc: watcher range is empty"
    );
}

#[test]
fn watch_from_an_old_revision_catches_up_in_chunks_then_goes_live() {
    let mut hub = WatchHub::new(100);
    let mut h = FakeHistory::new();
    for _ in 0..2500 {
        h.put("k");
    }
    let mut c = create("k", "");
    c.start_revision = 2;
    hub.command(0, 1, WatchCommand::Create(c), &h);
    let out = hub.take_deliveries();
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].1.kind, DeliveryKind::CatchUp { next_rev: 1002 });
    assert_eq!(revisions(&out[1].1), (2..=1001).collect::<Vec<_>>());
    // Writes while the watcher catches up reach it through history, not live.
    apply(&mut hub, &mut h, "k");
    assert!(hub.take_deliveries().is_empty());
    let resync = |from_rev| WatchCommand::Resync {
        watch_id: 0,
        from_rev,
    };
    hub.command(0, 1, resync(1002), &h);
    let out = hub.take_deliveries();
    assert_eq!(out[0].1.kind, DeliveryKind::CatchUp { next_rev: 2002 });
    hub.command(0, 1, resync(2002), &h);
    let out = hub.take_deliveries();
    assert_eq!(out[0].1.kind, DeliveryKind::CaughtUp);
    assert_eq!(revisions(&out[0].1), (2002..=2502).collect::<Vec<_>>());
    apply(&mut hub, &mut h, "k");
    let out = hub.take_deliveries();
    assert_eq!(
        (out[0].1.kind, revisions(&out[0].1)),
        (DeliveryKind::Live, vec![2503])
    );
}

#[test]
fn watch_on_a_compacted_revision_is_canceled_with_the_compact_revision() {
    let mut hub = WatchHub::new(100);
    let mut h = FakeHistory::new();
    for _ in 0..10 {
        h.put("k");
    }
    h.compacted = 5;
    let mut c = create("k", "");
    c.start_revision = 3;
    hub.command(0, 1, WatchCommand::Create(c), &h);
    let out = hub.take_deliveries();
    assert!(out[0].1.response.created);
    let r = &out[1].1.response;
    assert!(r.canceled);
    assert_eq!(r.compact_revision, 5);
    assert_eq!(hub.watcher_count(), 0);
}

#[test]
fn watch_cancel_answers_known_ids_only_and_close_drops_the_stream() {
    let mut hub = WatchHub::new(100);
    let mut h = FakeHistory::new();
    hub.command(0, 1, WatchCommand::Create(create("a", "")), &h);
    hub.command(0, 2, WatchCommand::Create(create("a", "")), &h);
    hub.take_deliveries();
    hub.command(0, 1, WatchCommand::Cancel(0), &h);
    hub.command(0, 1, WatchCommand::Cancel(9), &h);
    let out = hub.take_deliveries();
    assert_eq!(out.len(), 1);
    assert!(out[0].1.response.canceled);
    hub.command(0, 2, WatchCommand::Close, &h);
    assert_eq!(hub.watcher_count(), 0);
    apply(&mut hub, &mut h, "a");
    assert!(hub.take_deliveries().is_empty());
}

#[test]
fn watch_ten_thousand_watchers_each_get_every_event_in_order() {
    let mut hub = WatchHub::new(100);
    let mut h = FakeHistory::new();
    for i in 0..10_000u64 {
        let c = if i % 2 == 0 {
            create("k", "")
        } else {
            create("a", "z")
        };
        hub.command((i % 2) as u16, i, WatchCommand::Create(c), &h);
    }
    hub.take_deliveries();
    for _ in 0..5 {
        apply(&mut hub, &mut h, "k");
    }
    let out = hub.take_deliveries();
    let mut per_stream: HashMap<u64, Vec<i64>> = HashMap::new();
    for (_, d) in &out {
        per_stream.entry(d.stream).or_default().extend(revisions(d));
    }
    assert_eq!(per_stream.len(), 10_000);
    assert!(per_stream.values().all(|v| *v == vec![2, 3, 4, 5, 6]));
}
