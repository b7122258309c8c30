//! Raw gRPC calls over HTTP/2 (h2 on tokio), for what a stock client will not send: malformed
//! frames, unknown methods, metadata of one's choosing.

use bytes::{BufMut, Bytes, BytesMut};

/// One raw gRPC call over HTTP/2: (grpc-status, grpc-message).
pub async fn raw_call(port: u16, path: &str, body: Bytes) -> (String, String) {
    raw_call_with(port, path, &[], body).await
}

/// A raw gRPC call with extra request headers (gRPC metadata).
pub async fn raw_call_with(
    port: u16,
    path: &str,
    metadata: &[(&str, &str)],
    body: Bytes,
) -> (String, String) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in metadata {
        req = req.header(*name, *value);
    }
    let req = req.body(()).unwrap();
    let (resp, mut send) = h2.send_request(req, false).unwrap();
    send.send_data(body, true).unwrap();
    response_status(resp).await
}

/// A call's (grpc-status, grpc-message), its reply read in full (from the trailers, or the
/// head of a trailers-only reply).
pub async fn response_status(resp: h2::client::ResponseFuture) -> (String, String) {
    let resp = resp.await.unwrap();
    let head = resp.headers().clone();
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.unwrap().len());
    }
    let trailers = body.trailers().await.unwrap().unwrap_or(head);
    let get = |k: &str| {
        trailers
            .get(k)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    (get("grpc-status"), get("grpc-message"))
}

/// A message in gRPC's framing (uncompressed).
pub fn frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(0);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}
