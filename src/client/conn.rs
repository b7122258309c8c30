//! The HTTP/2 connection under a [`super::Client`]: dialing endpoints in order, redialing after
//! the connection breaks, starting gRPC calls on it, and (with credentials) the auth token
//! they carry.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use glommio::net::TcpStream;
use h2::client::SendRequest;
use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Request, Uri};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::stream::{send_flow_controlled, StreamReceiver, StreamSender};
use super::{ClientError, ClientOptions, Credentials};
use crate::net::grpc::{encode_message, Code};
use crate::proto::etcdserverpb as pb;

/// etcd's gRPC metadata key for the auth token.
static TOKEN: HeaderName = HeaderName::from_static("token");

/// A live HTTP/2 connection.
struct Live {
    send: SendRequest<Bytes>,
    authority: Authority,
    endpoint: String,
    /// Set by the connection task when the connection ends.
    closed: Rc<Cell<bool>>,
}

pub(super) struct Connection {
    opts: ClientOptions,
    live: RefCell<Option<Live>>,
    /// One redial at a time; the others wait and then use its connection.
    dialing: glommio::sync::Semaphore,
    /// Present only with credentials: without them a call pays one branch for auth.
    auth: Option<Box<AuthState>>,
}

/// The token calls carry, and how it is renewed.
struct AuthState {
    creds: Credentials,
    /// The `token` header value (None while auth is disabled on the server). A clone shares
    /// the bytes: attaching it to a call allocates nothing.
    token: RefCell<Option<HeaderValue>>,
    /// Bumped whenever `token` changes, so calls refused together renew it once.
    generation: Cell<u64>,
    /// One Authenticate at a time.
    renewing: glommio::sync::Semaphore,
}

/// Whether a call refused with `e` may succeed with a new token (clientv3's
/// shouldRefreshToken: its ErrInvalidAuthToken, ErrAuthOldRevision and, with credentials,
/// ErrUserEmpty).
fn wants_new_token(e: &ClientError) -> bool {
    let Some(s) = e.status() else {
        return false;
    };
    matches!(
        (s.code, s.message.as_str()),
        (Code::Unauthenticated, "etcdserver: invalid auth token")
            | (Code::InvalidArgument, "etcdserver: user name is empty")
            | (
                Code::InvalidArgument,
                "etcdserver: revision of auth store is old"
            )
    )
}

fn auth_not_enabled(e: &ClientError) -> bool {
    e.status()
        .is_some_and(|s| s.message == "etcdserver: authentication is not enabled")
}

fn token_header(token: &str) -> Result<HeaderValue, ClientError> {
    HeaderValue::from_str(token)
        .map_err(|_| ClientError::Decode(format!("the server sent an unusable token {token:?}")))
}

/// Runs `fut`, or fails with [`ClientError::Timeout`] after `limit`.
pub(super) async fn with_timeout<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    futures_lite::future::or(fut, async move {
        glommio::timer::sleep(limit).await;
        Err(ClientError::Timeout)
    })
    .await
}

/// An endpoint (`host:port`, `http://host:port` or `https://host:port`, maybe with a
/// trailing `/`): its `host:port`, and whether it is dialed with TLS.
fn parse_endpoint(endpoint: &str, tls_configured: bool) -> Result<(&str, bool), ClientError> {
    let (rest, tls) = if let Some(r) = endpoint.strip_prefix("https://") {
        (r, true)
    } else if let Some(r) = endpoint.strip_prefix("http://") {
        (r, false)
    } else if endpoint.starts_with("unix://") || endpoint.starts_with("unixs://") {
        return Err(ClientError::Transport(format!(
            "{endpoint}: unix socket endpoints are not supported by this client"
        )));
    } else {
        (endpoint, tls_configured)
    };
    Ok((rest.trim_end_matches('/'), tls))
}

/// The TLS configuration for an https:// endpoint when none was given: the system's roots.
fn default_tls() -> Result<Arc<rustls::ClientConfig>, ClientError> {
    crate::tls::client_config(&crate::tls::TlsSettings::default(), &[b"h2"])
        .map(Arc::new)
        .map_err(ClientError::Transport)
}

/// Cancels a task when dropped, unless disarmed.
struct CancelOnDrop(Option<glommio::task::JoinHandle<()>>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.cancel();
        }
    }
}

/// Starts HTTP/2 on `io` and proves the server speaks it (a ping); the request sender and
/// a flag the connection task sets when the connection ends.
async fn start_h2<S>(
    io: S,
    addr: SocketAddr,
) -> Result<(SendRequest<Bytes>, Rc<Cell<bool>>), ClientError>
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    let (send, mut conn) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(1 << 20)
        .max_header_list_size(64 << 10)
        .max_send_buffer_size(1 << 20)
        .handshake::<_, Bytes>(io.compat())
        .await
        .map_err(|e| ClientError::Transport(format!("http2 handshake with {addr}: {e}")))?;
    // The handshake only sends our preface; a ping proves the peer speaks HTTP/2.
    let mut ping = conn
        .ping_pong()
        .expect("a fresh connection has its ping-pong");
    let closed = Rc::new(Cell::new(false));
    let flag = closed.clone();
    let driver = glommio::spawn_local(async move {
        if let Err(e) = conn.await {
            tracing::debug!("client connection ended: {e}");
        }
        flag.set(true);
    })
    .detach();
    // Until the ping is answered, giving up (error or timeout) closes the connection.
    let guard = CancelOnDrop(Some(driver));
    ping.ping(h2::Ping::opaque())
        .await
        .map_err(|e| ClientError::Transport(format!("http2 ping to {addr}: {e}")))?;
    guard.disarm();
    Ok((send, closed))
}

async fn dial(
    endpoint: &str,
    timeout: Duration,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Live, ClientError> {
    let (hp, use_tls) = parse_endpoint(endpoint, tls.is_some())?;
    let authority: Authority = hp
        .parse()
        .map_err(|e| ClientError::Transport(format!("bad endpoint {endpoint:?}: {e}")))?;
    let tls = match (use_tls, tls) {
        (false, _) => None,
        (true, Some(t)) => Some(t.clone()),
        (true, None) => Some(default_tls()?),
    };
    let server_name = match &tls {
        Some(_) => Some(
            crate::tls::server_name(authority.host())
                .map_err(|e| ClientError::Transport(format!("bad endpoint {endpoint:?}: {e}")))?,
        ),
        None => None,
    };
    let addrs: Vec<SocketAddr> = hp
        .to_socket_addrs()
        .map_err(|e| ClientError::Transport(format!("dial tcp {hp}: {e}")))?
        .collect();
    let mut last = ClientError::Transport(format!("dial tcp {hp}: no addresses"));
    for addr in addrs {
        let attempt = async {
            // A zero dial timeout means none (as in etcd's client); glommio refuses a zero one.
            let tcp = if timeout.is_zero() {
                TcpStream::connect(addr).await
            } else {
                TcpStream::connect_timeout(addr, timeout).await
            }
            .map_err(|e| ClientError::Transport(format!("dial tcp {addr}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            match (&tls, &server_name) {
                (Some(config), Some(name)) => {
                    let s = futures_rustls::TlsConnector::from(config.clone())
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| {
                            ClientError::Transport(format!("tls handshake with {addr}: {e}"))
                        })?;
                    start_h2(s, addr).await
                }
                _ => start_h2(tcp, addr).await,
            }
        };
        let attempt = if timeout.is_zero() {
            futures_lite::future::FutureExt::boxed_local(attempt)
        } else {
            futures_lite::future::FutureExt::boxed_local(with_timeout(timeout, attempt))
        };
        match attempt.await {
            Ok((send, closed)) => {
                return Ok(Live {
                    send,
                    authority,
                    endpoint: endpoint.to_string(),
                    closed,
                });
            }
            Err(ClientError::Timeout) => {
                last = ClientError::Transport(format!("dial tcp {addr}: i/o timeout"))
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl Connection {
    pub(super) async fn connect(opts: ClientOptions) -> Result<Connection, ClientError> {
        let auth = match &opts.credentials {
            None => None,
            Some(c) => Some(Box::new(AuthState {
                token: RefCell::new(c.token.as_deref().map(token_header).transpose()?),
                creds: c.clone(),
                generation: Cell::new(0),
                renewing: glommio::sync::Semaphore::new(1),
            })),
        };
        let conn = Connection {
            live: RefCell::new(None),
            dialing: glommio::sync::Semaphore::new(1),
            opts,
            auth,
        };
        conn.dial_any().await?;
        if let Some(a) = &conn.auth {
            if a.token.borrow().is_none() {
                with_timeout(conn.opts.command_timeout, conn.renew_token(0)).await?;
            }
        }
        Ok(conn)
    }

    /// The token calls carry now.
    pub(super) fn token(&self) -> Option<String> {
        let a = self.auth.as_ref()?;
        let t = a.token.borrow();
        t.as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// Auth.Authenticate, sent without a token (a stale one would be refused).
    pub(super) async fn authenticate(
        &self,
        req: &pb::AuthenticateRequest,
    ) -> Result<pb::AuthenticateResponse, ClientError> {
        with_timeout(self.opts.command_timeout, async {
            self.call(super::path::AUTHENTICATE, req, false).await.0
        })
        .await
    }

    /// Authenticates again, unless the token changed since generation `seen` (another call
    /// renewed it meanwhile). Auth found disabled leaves no token: calls go without one.
    async fn renew_token(&self, seen: u64) -> Result<(), ClientError> {
        let Some(a) = &self.auth else {
            return Ok(());
        };
        let _permit = a
            .renewing
            .acquire_permit(1)
            .await
            .map_err(ClientError::transport)?;
        if a.generation.get() != seen {
            return Ok(());
        }
        let req = pb::AuthenticateRequest {
            name: a.creds.user.clone(),
            password: a.creds.password.clone(),
        };
        let token = match self
            .call::<_, pb::AuthenticateResponse>(super::path::AUTHENTICATE, &req, false)
            .await
            .0
        {
            Ok(resp) => Some(token_header(&resp.token)?),
            Err(e) if auth_not_enabled(&e) => None,
            Err(e) => return Err(e),
        };
        *a.token.borrow_mut() = token;
        a.generation.set(seen + 1);
        Ok(())
    }

    pub(super) fn options(&self) -> &ClientOptions {
        &self.opts
    }

    pub(super) fn endpoint(&self) -> String {
        self.live
            .borrow()
            .as_ref()
            .map(|l| l.endpoint.clone())
            .unwrap_or_default()
    }

    async fn dial_any(&self) -> Result<(), ClientError> {
        if self.opts.endpoints.is_empty() {
            return Err(ClientError::Transport("no endpoints given".into()));
        }
        let mut last = None;
        for ep in &self.opts.endpoints {
            match dial(ep, self.opts.dial_timeout, self.opts.tls.as_ref()).await {
                Ok(live) => {
                    *self.live.borrow_mut() = Some(live);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one endpoint was tried"))
    }

    /// A request sender on a live connection (redialing if the last one closed) and the
    /// authority to put in requests.
    async fn sender(&self) -> Result<(SendRequest<Bytes>, Authority), ClientError> {
        if let Some(pair) = self.current() {
            return Ok(pair);
        }
        let _permit = self
            .dialing
            .acquire_permit(1)
            .await
            .map_err(ClientError::transport)?;
        if let Some(pair) = self.current() {
            return Ok(pair);
        }
        self.dial_any().await?;
        self.current()
            .ok_or_else(|| ClientError::Transport("connection closed".into()))
    }

    fn current(&self) -> Option<(SendRequest<Bytes>, Authority)> {
        let live = self.live.borrow();
        let live = live.as_ref()?;
        if live.closed.get() {
            return None;
        }
        Some((live.send.clone(), live.authority.clone()))
    }

    /// Starts a call: waits until the connection takes another stream, sends the head (with
    /// the token if `with_token` and there is one). Also returns the token's generation.
    async fn start(
        &self,
        path: &str,
        has_leader: bool,
        with_token: bool,
    ) -> Result<(h2::SendStream<Bytes>, h2::client::ResponseFuture, u64), ClientError> {
        self.start_with(path, has_leader, with_token, &[]).await
    }

    /// [`Connection::start`] with more metadata (a proxy passes its caller's on).
    async fn start_with(
        &self,
        path: &str,
        has_leader: bool,
        with_token: bool,
        metadata: &[(HeaderName, HeaderValue)],
    ) -> Result<(h2::SendStream<Bytes>, h2::client::ResponseFuture, u64), ClientError> {
        let (send, authority) = self.sender().await?;
        let mut send = send.ready().await.map_err(ClientError::transport)?;
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| ClientError::Transport(format!("bad method path {path:?}: {e}")))?;
        let mut req = Request::post(uri)
            .body(())
            .expect("a request from valid parts");
        let headers = req.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("corekv-client/", env!("CARGO_PKG_VERSION"))),
        );
        if has_leader {
            headers.insert("hasleader", HeaderValue::from_static("true"));
        }
        for (name, value) in metadata {
            headers.insert(name.clone(), value.clone());
        }
        let mut generation = 0;
        if let (Some(a), true) = (&self.auth, with_token) {
            if let Some(t) = a.token.borrow().as_ref() {
                headers.insert(TOKEN.clone(), t.clone());
            }
            generation = a.generation.get();
        }
        let (head, body) = send
            .send_request(req, false)
            .map_err(ClientError::transport)?;
        Ok((body, head, generation))
    }

    /// One unary call, without a timeout or retry, and the token generation it carried.
    async fn call<Req, Resp>(
        &self,
        path: &str,
        req: &Req,
        with_token: bool,
    ) -> (Result<Resp, ClientError>, u64)
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let (mut body, head, generation) = match self.start(path, false, with_token).await {
            Ok(started) => started,
            Err(e) => return (Err(e), 0),
        };
        let resp = async {
            send_flow_controlled(&mut body, encode_message(req), true).await?;
            StreamReceiver::<Resp>::new(head).unary().await
        };
        (resp.await, generation)
    }

    pub(super) async fn unary<Req, Resp>(&self, path: &str, req: &Req) -> Result<Resp, ClientError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        with_timeout(self.opts.command_timeout, async {
            match self.call(path, req, true).await {
                // Refused for its token: renew it once and try once more, as clientv3 does.
                // (A call refused so was not applied: the token is checked first.)
                (Err(e), seen) if self.auth.is_some() && wants_new_token(&e) => {
                    self.renew_token(seen).await?;
                    self.call(path, req, true).await.0
                }
                (result, _) => result,
            }
        })
        .await
    }

    /// One unary call of an encoded request (without its gRPC prefix) carrying `metadata`:
    /// the reply message's bytes. No timeout and no retry: a proxy's caller has its own
    /// deadline, and dropping the call resets its stream.
    pub(super) async fn unary_raw(
        &self,
        path: &str,
        body: Bytes,
        metadata: &[(HeaderName, HeaderValue)],
    ) -> Result<Bytes, ClientError> {
        let (mut send, head, _) = self.start_with(path, false, true, metadata).await?;
        send_flow_controlled(&mut send, crate::net::grpc::frame(&body), true).await?;
        StreamReceiver::<()>::new(head).unary_raw().await
    }

    /// A streaming call carrying `metadata`, its messages as bytes.
    pub(super) async fn open_stream_raw(
        &self,
        path: &str,
        metadata: &[(HeaderName, HeaderValue)],
    ) -> Result<(StreamSender<()>, StreamReceiver<()>), ClientError> {
        let (body, head, _) = with_timeout(
            self.opts.command_timeout,
            self.start_with(path, false, true, metadata),
        )
        .await?;
        Ok((StreamSender::new(body), StreamReceiver::new(head)))
    }

    pub(super) async fn open_stream<Req, Resp>(
        &self,
        path: &str,
        has_leader: bool,
    ) -> Result<(StreamSender<Req>, StreamReceiver<Resp>), ClientError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let (body, head, _) = with_timeout(
            self.opts.command_timeout,
            self.start(path, has_leader, true),
        )
        .await?;
        Ok((StreamSender::new(body), StreamReceiver::new(head)))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_endpoint;

    #[test]
    fn endpoints_parse_like_etcdctl() {
        assert_eq!(
            parse_endpoint("127.0.0.1:2379", false).unwrap(),
            ("127.0.0.1:2379", false)
        );
        // Without a scheme, TLS when it is configured; a scheme decides by itself.
        assert_eq!(
            parse_endpoint("127.0.0.1:2379", true).unwrap(),
            ("127.0.0.1:2379", true)
        );
        assert_eq!(
            parse_endpoint("http://localhost:2379/", true).unwrap(),
            ("localhost:2379", false)
        );
        assert_eq!(parse_endpoint("https://x:1", false).unwrap(), ("x:1", true));
        assert!(parse_endpoint("unixs://x:1", false).is_err());
    }
}
