//! `GET /health` with etcd's semantics (etcdhttp.checkHealth): unhealthy while an alarm is
//! raised (unless `?exclude=NAME` leaves it out), while the member knows no leader, or when a
//! linearizable read through raft does not complete within a second. Each failure is logged
//! with its reason, as etcd logs it.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;

use crate::api::Api;
use crate::proto::etcdserverpb as pb;
use crate::server::message::Request;

/// etcd's timeout for the health check's read.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Ok when healthy, else why not.
pub async fn check(api: &Api, query: &str) -> Result<(), String> {
    let m = &api.metrics;
    if !m.published.load(Relaxed) {
        return Err("this member has not published itself to the cluster yet".into());
    }
    let excluded = |alarm: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("exclude="))
            .any(|a| a == alarm)
    };
    if m.nospace() && !excluded("NOSPACE") {
        return Err("alarm NOSPACE is raised".into());
    }
    if m.corrupt() && !excluded("CORRUPT") {
        return Err("alarm CORRUPT is raised".into());
    }
    if m.has_leader.load(Relaxed) == 0 {
        return Err("no leader".into());
    }
    let probe = pb::RangeRequest {
        key: Bytes::from_static(b"health"),
        ..Default::default()
    };
    let read = async { Some(api.core.call(Request::Range(probe)).await) };
    let timeout = async {
        glommio::timer::sleep(READ_TIMEOUT).await;
        None
    };
    match futures_lite::future::or(read, timeout).await {
        Some(Ok(_)) => Ok(()),
        Some(Err(status)) => Err(format!("linearizable read failed: {}", status.message)),
        None => Err(format!(
            "linearizable read did not complete within {READ_TIMEOUT:?}"
        )),
    }
}

/// The status code and body of `/health`, logging why when unhealthy.
pub async fn answer(api: &Api, query: &str) -> (u16, &'static str) {
    match check(api, query).await {
        Ok(()) => (200, r#"{"health":"true"}"#),
        Err(reason) => {
            tracing::warn!("/health error; {reason} (status code 503)");
            (503, r#"{"health":"false"}"#)
        }
    }
}
