//! --resolver-prefix: the proxy registers its address under `<prefix>/<addr>` with a lease of
//! --resolver-ttl seconds kept alive while it runs, as etcd's proxy does (etcd's endpoint
//! manager's format, so etcd's resolver reads it), and registers again when the lease is lost.

use std::time::Duration;

use crate::client::Client;
use crate::proto::etcdserverpb as pb;

use super::flags::Register;

/// The value etcd's endpoints manager stores: the address and the proxy's metadata.
fn value(addr: &str) -> String {
    let meta = serde_json::json!({ "name": hostname() }).to_string();
    serde_json::json!({ "Op": 0, "Addr": addr, "Metadata": meta }).to_string()
}

/// The host's name (Go's os.Hostname).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}

pub async fn run(client: Client, r: Register) {
    loop {
        if let Err(e) = session(&client, &r).await {
            tracing::warn!("registration under {}: {e}; trying again", r.prefix);
        }
        glommio::timer::sleep(Duration::from_secs(1)).await;
    }
}

/// One lease: granted, the key put with it, kept alive until it is lost.
async fn session(client: &Client, r: &Register) -> Result<(), crate::client::ClientError> {
    let lease = client
        .lease_grant(pb::LeaseGrantRequest { ttl: r.ttl, id: 0 })
        .await?;
    let key = format!("{}/{}", r.prefix, r.addr);
    client
        .put(pb::PutRequest {
            key: key.clone().into(),
            value: value(&r.addr).into(),
            lease: lease.id,
            ..Default::default()
        })
        .await?;
    tracing::info!("registered {:?} with {}-second lease", r.addr, r.ttl);
    let (mut send, mut recv) = client.lease_keep_alive().await?;
    loop {
        send.send(&pb::LeaseKeepAliveRequest { id: lease.id })
            .await?;
        match recv.message().await? {
            Some(resp) if resp.ttl > 0 => {}
            _ => {
                tracing::warn!("session expired; possible network partition or server restart");
                return Ok(());
            }
        }
        glommio::timer::sleep(Duration::from_secs((r.ttl as u64 / 3).max(1))).await;
    }
}
