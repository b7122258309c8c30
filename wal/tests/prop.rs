//! Property test: random batches of random sizes, appended concurrently,
//! across segment boundaries, with reopen cycles (changing the segment size
//! of new segments) and releases; after every reopen the log holds exactly
//! what was made durable.

mod common;
use common::*;
use proptest::prelude::*;
use std::rc::Rc;
use wal::{Position, Wal};

#[derive(Clone, Debug)]
enum Op {
    /// Batches appended at once by concurrent tasks: (record type, size).
    Append(Vec<Vec<(u8, usize)>>),
    /// Close and reopen; new segments get this size.
    Reopen(u64),
    /// Release before the position of the record at this fraction of the log.
    Release(f64),
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..300,
        3 => 300usize..3000,
        1 => 3000usize..7900,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec(prop::collection::vec((any::<u8>(), size()), 1..6), 1..5)
            .prop_map(Op::Append),
        2 => prop::sample::select(vec![8u64 << 10, 12 << 10, 16 << 10, 32 << 10]).prop_map(Op::Reopen),
        1 => (0.0f64..1.2).prop_map(Op::Release),
    ]
}

type Model = Vec<(Position, u8, Vec<u8>)>;

async fn check_reopen(dir: &std::path::Path, seg: u64, model: &Model) -> Wal {
    let (w, rec) = Wal::open(dir, opts(seg)).await.unwrap();
    assert!(rec.truncated.is_none(), "{:?}", rec.truncated);
    let got: Model = rec
        .records
        .into_iter()
        .map(|r| (r.position, r.record_type, r.payload))
        .collect();
    assert_eq!(got.len(), model.len());
    assert!(got == *model, "recovered log differs from what was durable");
    if let Some(last) = model.last() {
        assert!(rec.last_valid > last.0);
    }
    w
}

fn run_ops(ops: Vec<Op>) {
    run(move || async move {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = 8 << 10;
        let mut model: Model = Vec::new();
        let mut w = Rc::new(check_reopen(dir.path(), seg, &model).await);
        let mut n = 0usize;
        for op in ops {
            match op {
                Op::Append(batches) => {
                    let tasks: Vec<_> = batches
                        .into_iter()
                        .map(|batch| {
                            let recs: Vec<(u8, Vec<u8>)> = batch
                                .into_iter()
                                .map(|(t, len)| {
                                    n += 1;
                                    (t, payload(n, len))
                                })
                                .collect();
                            let w = w.clone();
                            glommio::spawn_local(async move {
                                let refs: Vec<(u8, &[u8])> =
                                    recs.iter().map(|(t, p)| (*t, p.as_slice())).collect();
                                let pos = w.append_batch(&refs).await.unwrap();
                                pos.into_iter()
                                    .zip(recs)
                                    .map(|(p, (t, r))| (p, t, r))
                                    .collect::<Model>()
                            })
                        })
                        .collect();
                    for t in tasks {
                        model.extend(t.await);
                    }
                    model.sort_by_key(|r| r.0);
                }
                Op::Reopen(s) => {
                    Rc::try_unwrap(w).ok().unwrap().close().await.unwrap();
                    seg = s;
                    w = Rc::new(check_reopen(dir.path(), seg, &model).await);
                }
                Op::Release(f) => {
                    let i = (model.len() as f64 * f) as usize;
                    let at = match model.get(i) {
                        Some(r) => r.0,
                        None => Position::from_lsn(u64::MAX),
                    };
                    let before = w.segment_paths().len();
                    let removed = w.release_before(at).await.unwrap();
                    let segs = w.segment_paths();
                    assert_eq!(segs.len(), before - removed);
                    let name = segs[0].file_name().unwrap().to_str().unwrap().to_owned();
                    let first = u64::from_str_radix(&name[17..33], 16).unwrap();
                    assert!(
                        first <= at.lsn(),
                        "a segment holding records at or after {at} was removed"
                    );
                    model.retain(|r| r.0.lsn() >= first);
                }
            }
        }
        Rc::try_unwrap(w).ok().unwrap().close().await.unwrap();
        check_reopen(dir.path(), seg, &model)
            .await
            .close()
            .await
            .unwrap();
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn durable_appends_survive_reopen(ops in prop::collection::vec(op(), 1..14)) {
        run_ops(ops);
    }
}
