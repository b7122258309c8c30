//! kill -9 under concurrent write load: after a restart every acknowledged write is there,
//! with its value and revision.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{Kind, Server};
use etcd_client::Client;

const WRITERS: usize = 32;
/// Acknowledged writes to wait for before the kill.
const KILL_AFTER: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_kill_9() {
    // A small snapshot count and 1 MiB WAL segments, so the run crosses snapshots and WAL
    // segment releases too, and recovery starts from a log whose first segments are gone.
    let mut server = Server::start_with(
        Kind::Corekv,
        &["--snapshot-count", "500", "--wal-segment-bytes", "1048576"],
    );
    let acked: Arc<Mutex<Vec<(String, String, i64)>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let endpoint = server.endpoint();
        let acked = acked.clone();
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut c) = Client::connect([endpoint], None).await else {
                return;
            };
            for i in 0.. {
                let key = format!("w{w}/{i}");
                // About 1 KiB per write: several WAL segments fill before the kill.
                let value = format!("value-{w}-{i}-{}", "x".repeat(1000));
                match c.put(key.clone(), value.clone(), None).await {
                    Ok(r) => {
                        let rev = r.header().unwrap().revision();
                        acked.lock().unwrap().push((key, value, rev));
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    while count.load(Ordering::SeqCst) < KILL_AFTER {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.kill();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= KILL_AFTER);

    server.restart();
    let mut c = Client::connect([server.endpoint()], None).await.unwrap();
    let mut revisions = std::collections::HashSet::new();
    for (key, value, rev) in &acked {
        let r = c.get(key.as_str(), None).await.unwrap();
        let kv = r.kvs().first().unwrap_or_else(|| {
            let max_acked = acked.iter().map(|a| a.2).max().unwrap_or(0);
            panic!(
                "acknowledged {key} (revision {rev}) is gone; the store is at revision {} after \
                 restart, {} writes were acknowledged up to revision {max_acked}; log:\n{}",
                r.header().unwrap().revision(),
                acked.len(),
                server.log()
            )
        });
        assert_eq!(kv.value_str().unwrap(), value, "{key}");
        assert_eq!(kv.mod_revision(), *rev, "{key}");
        assert!(revisions.insert(*rev), "revision {rev} acknowledged twice");
    }
    // The store keeps serving writes after recovery, at the next revision.
    let max = *revisions.iter().max().unwrap();
    let r = c.put("after", "restart", None).await.unwrap();
    assert!(r.header().unwrap().revision() > max);
}
