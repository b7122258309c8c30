//! TLS on the client and peer URLs (issue #15), against real processes: corekv started with
//! etcd's TLS flags, stock etcdctl 3.4 (Go's TLS) and corekvctl as clients, a rustls client
//! written here for the HTTP endpoints and raw handshakes, and etcd 3.4 itself where the test
//! checks that a flag combination is etcd's.
//!
//! Every certificate is generated here with rcgen into a temporary directory (no key is
//! committed). Every process gets SIGKILL when its guard is dropped or the test's thread ends.
//! Nothing waits a fixed time: each wait polls with a generous deadline.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use common::{free_port, require_binary, stderr, stdout, DieWithTest};

/// Longest a process may take to become ready or to exit; only a broken one takes this long.
const LIMIT: Duration = Duration::from_secs(60);

/// Raft timings for every corekv started here (fast elections).
const TIMINGS: [&str; 2] = ["--heartbeat-interval=50", "--election-timeout=500"];

// ---------------------------------------------------------------------------------------------
// Certificates

/// A certificate authority for the test, its certificate in `<dir>/<name>-ca.pem`.
struct Ca {
    name: String,
    dir: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate's file (what --cacert / --trusted-ca-file take).
    pem: PathBuf,
}

/// A certificate and key written to files.
#[derive(Clone)]
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
}

impl Leaf {
    fn cert(&self) -> &str {
        self.cert.to_str().unwrap()
    }

    fn key(&self) -> &str {
        self.key.to_str().unwrap()
    }
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("corekv test CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, issuer.pem()).unwrap();
        Ca {
            name: name.to_owned(),
            dir: dir.to_owned(),
            issuer,
            pem,
        }
    }

    fn ca(&self) -> &str {
        self.pem.to_str().unwrap()
    }

    /// The PEM of a certificate (ECDSA P-256) for `cn`, valid for 127.0.0.1 and localhost,
    /// with the given extended key usages, and its key's PEM.
    fn issue_pem(&self, cn: &str, ekus: &[ExtendedKeyUsagePurpose]) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = ekus.to_vec();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// [`Ca::issue_pem`] written to `<dir>/<ca>-<file>.pem` and `<dir>/<ca>-<file>-key.pem`.
    fn issue(&self, file: &str, cn: &str, ekus: &[ExtendedKeyUsagePurpose]) -> Leaf {
        let (cert, key) = self.issue_pem(cn, ekus);
        let leaf = Leaf {
            cert: self.dir.join(format!("{}-{file}.pem", self.name)),
            key: self.dir.join(format!("{}-{file}-key.pem", self.name)),
        };
        std::fs::write(&leaf.cert, cert).unwrap();
        std::fs::write(&leaf.key, key).unwrap();
        leaf
    }

    fn server(&self, file: &str) -> Leaf {
        self.issue(file, "127.0.0.1", &[ExtendedKeyUsagePurpose::ServerAuth])
    }

    fn client(&self, file: &str, cn: &str) -> Leaf {
        self.issue(file, cn, &[ExtendedKeyUsagePurpose::ClientAuth])
    }

    /// For a member's peer URLs: it serves and dials with the same certificate.
    fn peer(&self, file: &str) -> Leaf {
        self.issue(
            file,
            "127.0.0.1",
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }
}

/// Replaces `path` atomically: written to a temporary file beside it, then renamed over it.
fn replace_file(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

// ---------------------------------------------------------------------------------------------
// A rustls client of our own (not corekv's code)

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Path) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

/// What a TLS client trusts and presents.
struct ClientTls<'a> {
    /// None: accept any server certificate.
    ca: Option<&'a Path>,
    cert: Option<&'a Leaf>,
    alpn: &'a [&'a [u8]],
    /// Only these TLS 1.2 suites (and TLS 1.2 only) when given.
    tls12_suites: Option<Vec<rustls::SupportedCipherSuite>>,
}

impl Default for ClientTls<'_> {
    fn default() -> Self {
        ClientTls {
            ca: None,
            cert: None,
            alpn: &[b"http/1.1"],
            tls12_suites: None,
        }
    }
}

impl ClientTls<'_> {
    fn config(&self) -> Arc<ClientConfig> {
        let mut p = rustls::crypto::ring::default_provider();
        let versions: &[&rustls::SupportedProtocolVersion] = match &self.tls12_suites {
            Some(suites) => {
                p.cipher_suites = suites.clone();
                &[&rustls::version::TLS12]
            }
            None => rustls::DEFAULT_VERSIONS,
        };
        let b = ClientConfig::builder_with_provider(Arc::new(p))
            .with_protocol_versions(versions)
            .unwrap();
        let b = match self.ca {
            Some(ca) => b.with_root_certificates(roots(ca)),
            None => b.dangerous().with_custom_certificate_verifier(Arc::new(
                corekv::tls::NoServerVerification(provider()),
            )),
        };
        let mut cfg = match self.cert {
            Some(l) => b
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_file(&l.cert).unwrap()],
                    PrivateKeyDer::from_pem_file(&l.key).unwrap(),
                )
                .unwrap(),
            None => b.with_no_client_auth(),
        };
        cfg.alpn_protocols = self.alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

/// What a TLS connection settled on, and the answer to a GET over HTTP/1.1 (unless h2 was
/// negotiated: then no request is sent).
#[derive(Debug)]
struct Reply {
    alpn: Option<Vec<u8>>,
    /// The certificate the server presented.
    server_cert: Vec<u8>,
    status: String,
    body: String,
}

/// A TLS connection to 127.0.0.1:`port` and, over HTTP/1.1, `GET path`.
fn https_get(port: u16, path: &str, tls: &ClientTls) -> Result<Reply, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let conn = rustls::ClientConnection::new(
        tls.config(),
        ServerName::try_from("127.0.0.1").unwrap().to_owned(),
    )
    .unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    let alpn = s.conn.alpn_protocol().map(<[u8]>::to_vec);
    let server_cert = s
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    if alpn.as_deref() == Some(b"h2") {
        return Ok(Reply {
            alpn,
            server_cert,
            status: String::new(),
            body: String::new(),
        });
    }
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .and_then(|_| s.flush())
    .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        // A server may close without close_notify once it has answered.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(format!("read: {e}")),
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    Ok(Reply {
        alpn,
        server_cert,
        status: head.lines().next().unwrap_or_default().to_owned(),
        body: body.to_owned(),
    })
}

/// Whether `GET /health` over TLS answers healthy.
fn healthy_tls(port: u16, tls: &ClientTls) -> bool {
    https_get(port, "/health", tls).is_ok_and(|r| r.body.contains("\"true\""))
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A server process (corekv or etcd), its output in a log file; SIGKILL on drop.
struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(bin: &Path, args: &[String], log: &Path) -> Proc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .die_with_test()
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        Proc {
            child: Some(child),
            log: log.to_owned(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `ready` until it holds; Err (with the log) if the process exits first or
    /// [`LIMIT`] passes.
    fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("exited at start ({status}); log:\n{}", self.log()));
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready within {LIMIT:?}; log:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the process exits by itself (panics after [`LIMIT`]).
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {LIMIT:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `log()` contains `needle` (panics with the log after [`LIMIT`]).
fn wait_log(what: &str, needle: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + LIMIT;
    while !log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{what}: no {needle:?} in the log within {LIMIT:?}; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a killed server's port can be bound again (corekv's listening sockets
/// outlive its process by a few milliseconds).
fn wait_port_free(port: u16) {
    let deadline = Instant::now() + LIMIT;
    while TcpListener::bind(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} still taken");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A single-member server: which binary, its ports and data dir, its flags.
struct Single {
    bin: PathBuf,
    /// Holds the data dir and the log; removed on drop.
    _dir: tempfile::TempDir,
    data_dir: PathBuf,
    log: PathBuf,
    /// Its client URLs' ports, in the order of `schemes`.
    client_ports: Vec<u16>,
    schemes: Vec<&'static str>,
    peer_port: u16,
    flags: Vec<String>,
    proc: Option<Proc>,
}

impl Single {
    /// A server (not started) listening for clients on one URL per scheme in `schemes`.
    fn new(bin: &Path, schemes: &[&'static str], flags: &[&str]) -> Single {
        let dir = tempfile::tempdir().unwrap();
        Single {
            bin: bin.to_owned(),
            data_dir: dir.path().join("data"),
            log: dir.path().join("server.log"),
            _dir: dir,
            client_ports: schemes.iter().map(|_| free_port()).collect(),
            schemes: schemes.to_vec(),
            peer_port: free_port(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            proc: None,
        }
    }

    fn corekv(schemes: &[&'static str], flags: &[&str]) -> Single {
        Single::new(common::corekv_bin(), schemes, flags)
    }

    /// Client URL number `i`.
    fn url(&self, i: usize) -> String {
        format!("{}://127.0.0.1:{}", self.schemes[i], self.client_ports[i])
    }

    fn args(&self) -> Vec<String> {
        let urls: Vec<String> = (0..self.schemes.len()).map(|i| self.url(i)).collect();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut args = vec![
            "--name=default".to_owned(),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--listen-client-urls={}", urls.join(",")),
            format!("--advertise-client-urls={}", urls.join(",")),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=default={peer}"),
        ];
        args.extend(TIMINGS.iter().map(|s| s.to_string()));
        args.extend(self.flags.iter().cloned());
        args
    }

    /// Starts the process (not waiting for anything).
    fn spawn(&mut self) -> &mut Proc {
        self.proc = Some(Proc::spawn(&self.bin, &self.args(), &self.log));
        self.proc.as_mut().unwrap()
    }

    /// Starts it and waits until `ready` holds; panics with the log if it does not.
    fn start(&mut self, ready: impl FnMut() -> bool) {
        if let Err(e) = self.spawn().wait_ready(ready) {
            panic!("the server did not start: {e}");
        }
    }

    /// Kills it, waits for its ports, starts it again (same flags and data dir) and waits
    /// until `ready`.
    fn restart(&mut self, ready: impl FnMut() -> bool) {
        self.kill();
        for &p in self.client_ports.iter().chain([&self.peer_port]) {
            wait_port_free(p);
        }
        self.start(ready);
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

/// Stock etcdctl (API v3) with `args`, none of the caller's ETCDCTL_* variables.
fn etcdctl_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(require_binary("etcdctl"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ETCDCTL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("ETCDCTL_API", "3").args(args).die_with_test();
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn etcdctl(args: &[&str]) -> Output {
    run(etcdctl_cmd(args))
}

fn corekvctl(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corekvctl"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ETCDCTL_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).die_with_test();
    run(cmd)
}

/// Asserts the command succeeded and printed exactly `want` on stdout.
#[track_caller]
fn assert_out(what: &str, o: &Output, want: &str) {
    assert!(
        o.status.success() && stdout(o) == want,
        "{what}: {}\nstdout: {:?} (want {want:?})\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// Asserts the command failed (a client refused, or unable to talk to the server).
#[track_caller]
fn assert_fails(what: &str, o: &Output) {
    assert!(
        !o.status.success(),
        "{what}: succeeded but should have failed\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// Short timeouts for clients that are expected to fail (Go's client retries until then).
const FAIL_FAST: [&str; 2] = ["--dial-timeout=1s", "--command-timeout=2s"];

/// A long-running `etcdctl watch`, its stdout lines delivered to a channel.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn start(args: &[&str]) -> Watch {
        let mut child = etcdctl_cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watch { child, lines }
    }

    /// Waits for exactly these next lines (panics after [`LIMIT`]).
    #[track_caller]
    fn expect(&self, want: &[&str]) {
        for w in want {
            match self.lines.recv_timeout(LIMIT) {
                Ok(l) => assert_eq!(&l, w, "the watch printed something else"),
                Err(e) => panic!("the watch printed no {w:?} ({e})"),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Server-only TLS (certificate and key, no trusted CA): etcdctl and corekvctl with --cacert
/// over https://, the HTTP endpoints over TLS, ALPN h2 for gRPC.
#[test]
fn server_tls_serves_etcdctl_corekvctl_and_health() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "ca1");
    let other = Ca::new(pki.path(), "ca2");
    let server = ca.server("server");
    let mut s = Single::corekv(
        &["https"],
        &["--cert-file", server.cert(), "--key-file", server.key()],
    );
    let port = s.client_ports[0];
    let trust = ClientTls {
        ca: Some(&ca.pem),
        ..Default::default()
    };
    s.start(|| healthy_tls(port, &trust));
    let ep = s.url(0);

    // /health and /version over TLS (HTTP/1.1), verified against the CA.
    let r = https_get(port, "/health", &trust).unwrap();
    assert_eq!(r.status, "HTTP/1.1 200 OK");
    assert!(r.body.contains("\"health\":\"true\""), "{}", r.body);
    assert_eq!(r.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let r = https_get(port, "/version", &trust).unwrap();
    assert!(r.body.contains("etcdserver"), "{r:?}");
    // A gRPC client asks for h2 and gets it.
    let r = https_get(
        port,
        "/",
        &ClientTls {
            ca: Some(&ca.pem),
            alpn: &[b"h2"],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.alpn.as_deref(), Some(&b"h2"[..]));
    // A client trusting another CA refuses the server.
    let e = https_get(
        port,
        "/health",
        &ClientTls {
            ca: Some(&other.pem),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.contains("handshake"), "{e}");

    // Stock etcdctl.
    let tls = ["--endpoints", &ep, "--cacert", ca.ca()];
    assert_out(
        "etcdctl put",
        &etcdctl(&[&tls[..], &["put", "k", "v1"]].concat()),
        "OK\n",
    );
    assert_out(
        "etcdctl get",
        &etcdctl(&[&tls[..], &["get", "k"]].concat()),
        "k\nv1\n",
    );
    // Without the CA, etcdctl does not trust the server (system roots only).
    assert_fails(
        "etcdctl without --cacert",
        &etcdctl(&[&["--endpoints", &ep], &FAIL_FAST[..], &["get", "k"]].concat()),
    );
    assert_fails(
        "etcdctl with the wrong CA",
        &etcdctl(
            &[
                &["--endpoints", &ep, "--cacert", other.ca()],
                &FAIL_FAST[..],
                &["get", "k"],
            ]
            .concat(),
        ),
    );

    // corekvctl.
    assert_out(
        "corekvctl put",
        &corekvctl(&[&tls[..], &["put", "k", "v2"]].concat()),
        "OK\n",
    );
    assert_out(
        "corekvctl get",
        &corekvctl(&[&tls[..], &["get", "k"]].concat()),
        "k\nv2\n",
    );
    let o = corekvctl(&[&tls[..], &["endpoint", "health"]].concat());
    assert!(
        o.status.success() && stderr(&o).contains(&format!("{ep} is healthy")),
        "corekvctl endpoint health: {}\n{}{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    // etcdctl reads what corekvctl wrote.
    assert_out(
        "etcdctl get",
        &etcdctl(&[&tls[..], &["get", "k", "--print-value-only"]].concat()),
        "v2\n",
    );
}

/// Mutual TLS: a client with a certificate from the trusted CA is served; one with a
/// certificate from another CA, or with none, is refused at the handshake (and logged), and
/// the good client's stream keeps being served meanwhile.
#[test]
fn mutual_tls_refuses_wrong_and_missing_client_certs() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "ca1");
    let other = Ca::new(pki.path(), "ca2");
    let server = ca.server("server");
    let good = ca.client("client", "root");
    let bad = other.client("client", "root");
    let mut s = Single::corekv(
        &["https"],
        &[
            "--cert-file",
            server.cert(),
            "--key-file",
            server.key(),
            "--trusted-ca-file",
            ca.ca(),
            "--client-cert-auth",
        ],
    );
    let port = s.client_ports[0];
    let good_tls = ClientTls {
        ca: Some(&ca.pem),
        cert: Some(&good),
        ..Default::default()
    };
    s.start(|| healthy_tls(port, &good_tls));
    let ep = s.url(0);
    let good_args = [
        "--endpoints",
        &ep,
        "--cacert",
        ca.ca(),
        "--cert",
        good.cert(),
        "--key",
        good.key(),
    ];

    assert_out(
        "etcdctl with a good client certificate",
        &etcdctl(&[&good_args[..], &["put", "k", "v1"]].concat()),
        "OK\n",
    );
    // A good client that stays connected: a watch from revision 1 (its first event proves
    // the stream is up).
    let watch = Watch::start(&[&good_args[..], &["watch", "k", "--rev=1"]].concat());
    watch.expect(&["PUT", "k", "v1"]);

    // A certificate from another CA.
    let before = s.log().matches("rejected connection").count();
    assert_fails(
        "etcdctl with a client certificate from another CA",
        &etcdctl(
            &[
                &["--endpoints", &ep, "--cacert", ca.ca()],
                &["--cert", bad.cert(), "--key", bad.key()],
                &FAIL_FAST[..],
                &["get", "k"],
            ]
            .concat(),
        ),
    );
    wait_log("client cert from another CA", "rejected connection", || {
        s.log()
            .lines()
            .filter(|l| l.contains("rejected connection"))
            .skip(before)
            .collect::<Vec<_>>()
            .join("\n")
    });
    // No client certificate at all.
    let before = s.log().matches("rejected connection").count();
    assert_fails(
        "etcdctl without a client certificate",
        &etcdctl(
            &[
                &["--endpoints", &ep, "--cacert", ca.ca()],
                &FAIL_FAST[..],
                &["get", "k"],
            ]
            .concat(),
        ),
    );
    wait_log("no client cert", "rejected connection", || {
        s.log()
            .lines()
            .filter(|l| l.contains("rejected connection"))
            .skip(before)
            .collect::<Vec<_>>()
            .join("\n")
    });
    let log = s.log();
    let rejected: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("rejected connection from 127.0.0.1:"))
        .collect();
    assert!(
        !rejected.is_empty() && rejected.iter().all(|l| l.contains("TLS handshake")),
        "the refusals are logged as TLS handshake failures:\n{log}"
    );
    // The same refusals from our own rustls client: the server's alert ends the connection.
    for (what, tls) in [
        (
            "another CA",
            ClientTls {
                ca: Some(&ca.pem),
                cert: Some(&bad),
                ..Default::default()
            },
        ),
        (
            "no certificate",
            ClientTls {
                ca: Some(&ca.pem),
                ..Default::default()
            },
        ),
    ] {
        let r = https_get(port, "/health", &tls);
        assert!(r.is_err(), "a client with {what} was served: {r:?}");
    }

    // The good clients are still served: the watch sees a new put, and a new connection
    // works.
    assert_out(
        "etcdctl put after the refusals",
        &etcdctl(&[&good_args[..], &["put", "k", "v2"]].concat()),
        "OK\n",
    );
    watch.expect(&["PUT", "k", "v2"]);
    assert!(healthy_tls(port, &good_tls));
}

/// --auto-tls: a self-signed certificate in <data-dir>/fixtures/client, a "not for
/// production" warning, etcdctl with --insecure-skip-tls-verify --insecure-transport=false,
/// and the same certificate after a restart.
#[test]
fn auto_tls_self_signed_certificate_reused_on_restart() {
    let mut s = Single::corekv(&["https"], &["--auto-tls"]);
    let port = s.client_ports[0];
    let any = ClientTls::default();
    s.start(|| healthy_tls(port, &any));
    let ep = s.url(0);
    let fixtures = s.data_dir.join("fixtures").join("client");
    let cert_pem = std::fs::read(fixtures.join("cert.pem")).expect("fixtures/client/cert.pem");
    assert!(
        fixtures.join("key.pem").is_file(),
        "fixtures/client/key.pem"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(fixtures.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
    }
    let log = s.log();
    assert!(
        log.lines()
            .any(|l| l.contains("self-signed") && l.contains("not for production")),
        "no 'not for production' warning:\n{log}"
    );
    // The server presents the certificate in the file, and it is valid for 127.0.0.1 by
    // itself (its own trust anchor).
    let file_der = CertificateDer::from_pem_slice(&cert_pem).unwrap().to_vec();
    assert_eq!(
        https_get(port, "/health", &any).unwrap().server_cert,
        file_der
    );
    assert!(healthy_tls(
        port,
        &ClientTls {
            ca: Some(&fixtures.join("cert.pem")),
            ..Default::default()
        }
    ));

    check_auto_tls_etcdctl_flags(&ep, "corekv");
    // --insecure-skip-tls-verify alone failed because etcdctl still verified the
    // certificate: its handshake ended with a bad_certificate alert.
    wait_log(
        "etcdctl --insecure-skip-tls-verify alone",
        "received fatal alert: BadCertificate",
        || s.log(),
    );

    // A restart reuses the certificate: the file is unchanged and is what is served.
    s.restart(|| healthy_tls(port, &any));
    assert_eq!(
        std::fs::read(fixtures.join("cert.pem")).unwrap(),
        cert_pem,
        "the restart replaced the certificate"
    );
    assert_eq!(
        https_get(port, "/health", &any).unwrap().server_cert,
        file_der
    );
    let insecure = [
        "--endpoints",
        &ep,
        "--insecure-skip-tls-verify",
        "--insecure-transport=false",
    ];
    assert_out(
        "etcdctl get after the restart",
        &etcdctl(&[&insecure[..], &["get", "auto", "--print-value-only"]].concat()),
        "tls\n",
    );
}

/// The etcdctl 3.4 flags that reach an auto-TLS server over https:// (run against corekv
/// and against etcd 3.4 itself): --insecure-skip-tls-verify takes effect only with
/// --insecure-transport=false (which defaults to true); alone, etcdctl still dials TLS and
/// verifies the self-signed certificate against the system roots, and fails.
fn check_auto_tls_etcdctl_flags(ep: &str, server: &str) {
    let insecure = [
        "--endpoints",
        ep,
        "--insecure-skip-tls-verify",
        "--insecure-transport=false",
    ];
    assert_out(
        &format!("{server}: etcdctl --insecure-skip-tls-verify --insecure-transport=false put"),
        &etcdctl(&[&insecure[..], &["put", "auto", "tls"]].concat()),
        "OK\n",
    );
    assert_out(
        &format!("{server}: etcdctl --insecure-skip-tls-verify --insecure-transport=false get"),
        &etcdctl(&[&insecure[..], &["get", "auto"]].concat()),
        "auto\ntls\n",
    );
    assert_fails(
        &format!("{server}: etcdctl --insecure-skip-tls-verify alone"),
        &etcdctl(
            &[
                &["--endpoints", ep, "--insecure-skip-tls-verify"],
                &FAIL_FAST[..],
                &["get", "auto"],
            ]
            .concat(),
        ),
    );
    assert_fails(
        &format!("{server}: etcdctl verifying the self-signed certificate"),
        &etcdctl(&[&["--endpoints", ep], &FAIL_FAST[..], &["get", "auto"]].concat()),
    );
}

/// The same etcdctl flags against etcd 3.4 started with --auto-tls: the combination the
/// corekv test uses is etcd's.
#[test]
fn auto_tls_etcdctl_flags_are_etcds() {
    let mut s = Single::new(&require_binary("etcd"), &["https"], &["--auto-tls"]);
    // etcd's self-signed key is ECDSA P-521, which ring (our client) cannot verify: wait for
    // its log line instead of asking /health.
    let log = s.log.clone();
    s.start(|| {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("serving client requests on"))
    });
    assert!(s.data_dir.join("fixtures/client/cert.pem").is_file());
    check_auto_tls_etcdctl_flags(&s.url(0), "etcd 3.4");
}

/// Rotation: the certificate files replaced (renamed over) while a client is connected; new
/// connections get the new certificate, the connected client keeps working; a broken file
/// then keeps the certificate in use.
#[test]
fn certificate_rotation_and_broken_file() {
    let pki = tempfile::tempdir().unwrap();
    let ca1 = Ca::new(pki.path(), "ca1");
    let ca2 = Ca::new(pki.path(), "ca2");
    // The files the server reads: cert A (from CA1) at first.
    let a = ca1.server("a");
    let live = Leaf {
        cert: pki.path().join("server.pem"),
        key: pki.path().join("server-key.pem"),
    };
    std::fs::copy(&a.cert, &live.cert).unwrap();
    std::fs::copy(&a.key, &live.key).unwrap();
    let mut s = Single::corekv(
        &["https"],
        &["--cert-file", live.cert(), "--key-file", live.key()],
    );
    let port = s.client_ports[0];
    let trust1 = ClientTls {
        ca: Some(&ca1.pem),
        ..Default::default()
    };
    let trust2 = ClientTls {
        ca: Some(&ca2.pem),
        ..Default::default()
    };
    s.start(|| healthy_tls(port, &trust1));
    let ep = s.url(0);
    let with_ca1 = ["--endpoints", &ep, "--cacert", ca1.ca()];
    let with_ca2 = ["--endpoints", &ep, "--cacert", ca2.ca()];
    assert_out(
        "put with cert A",
        &etcdctl(&[&with_ca1[..], &["put", "r", "a"]].concat()),
        "OK\n",
    );
    // The running client: a watch on a connection made with cert A.
    let watch = Watch::start(&[&with_ca1[..], &["watch", "r", "--rev=1"]].concat());
    watch.expect(&["PUT", "r", "a"]);
    assert!(https_get(port, "/health", &trust2).is_err());

    // Rotate to cert B (from CA2): each file written aside and renamed over.
    let (b_cert, b_key) = ca2.issue_pem("127.0.0.1", &[ExtendedKeyUsagePurpose::ServerAuth]);
    replace_file(&live.key, &b_key);
    replace_file(&live.cert, &b_cert);
    let deadline = Instant::now() + LIMIT;
    while !healthy_tls(port, &trust2) {
        assert!(
            Instant::now() < deadline,
            "new connections do not get cert B; log:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let e = https_get(port, "/health", &trust1).unwrap_err();
    assert!(
        e.contains("handshake"),
        "CA1 still trusted after rotation: {e}"
    );
    assert_out(
        "etcdctl --cacert CA2 after rotation",
        &etcdctl(&[&with_ca2[..], &["put", "r", "b"]].concat()),
        "OK\n",
    );
    assert_fails(
        "etcdctl --cacert CA1 after rotation",
        &etcdctl(&[&with_ca1[..], &FAIL_FAST[..], &["get", "r"]].concat()),
    );
    // The connection made before the rotation is still served.
    watch.expect(&["PUT", "r", "b"]);

    // A broken certificate file: the server keeps cert B and says why.
    let log_before = s.log().len();
    replace_file(
        &live.cert,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    );
    // The next handshake notices the change.
    assert!(healthy_tls(port, &trust2), "cert B is no longer served");
    wait_log(
        "a broken certificate file",
        "keeping the certificate in use",
        || s.log()[log_before..].to_owned(),
    );
    assert!(healthy_tls(port, &trust2));
    assert_out(
        "etcdctl --cacert CA2 with a broken file",
        &etcdctl(&[&with_ca2[..], &["get", "r", "--print-value-only"]].concat()),
        "b\n",
    );
    assert!(https_get(port, "/health", &trust1).is_err());
    assert_out(
        "put with a broken file",
        &etcdctl(&[&with_ca2[..], &["put", "r", "c"]].concat()),
        "OK\n",
    );
    watch.expect(&["PUT", "r", "c"]);
}

/// Bad input on the client ports (a TLS one and a plaintext one on the same server):
/// plaintext on the TLS port, TLS on the plaintext port, a silent connection, half a
/// ClientHello, garbage. Each fails alone; everyone else is served meanwhile.
#[test]
fn bad_input_on_client_ports() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "ca1");
    let server = ca.server("server");
    let mut s = Single::corekv(
        &["https", "http"],
        &["--cert-file", server.cert(), "--key-file", server.key()],
    );
    let (tls_port, plain_port) = (s.client_ports[0], s.client_ports[1]);
    let trust = ClientTls {
        ca: Some(&ca.pem),
        ..Default::default()
    };
    s.start(|| healthy_tls(tls_port, &trust) && common::http_get(plain_port, "/health").is_some());
    let ep = s.url(0);
    let good = ["--endpoints", &ep, "--cacert", ca.ca()];
    let served = |what: &str, value: &str| {
        assert_out(
            &format!("put ({what})"),
            &etcdctl(&[&good[..], &["put", "k", value]].concat()),
            "OK\n",
        );
        assert_out(
            &format!("get ({what})"),
            &etcdctl(&[&good[..], &["get", "k", "--print-value-only"]].concat()),
            &format!("{value}\n"),
        );
        assert!(healthy_tls(tls_port, &trust), "/health over TLS ({what})");
    };

    // Stalled connections first, held open while the rest runs: one sends nothing, one
    // half a ClientHello.
    let silent = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    let mut half = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    let hello = {
        let mut conn = rustls::ClientConnection::new(
            trust.config(),
            ServerName::try_from("127.0.0.1").unwrap(),
        )
        .unwrap();
        let mut buf = Vec::new();
        conn.write_tls(&mut buf).unwrap();
        buf
    };
    assert_eq!(hello[0], 0x16, "a ClientHello is a handshake record");
    half.write_all(&hello[..hello.len() / 2]).unwrap();
    served("with two stalled connections open", "v1");

    // A plaintext gRPC client (etcdctl with http://) on the TLS port fails.
    let plain_on_tls = format!("http://127.0.0.1:{tls_port}");
    let started = Instant::now();
    assert_fails(
        "etcdctl with http:// on the TLS port",
        &etcdctl(
            &[
                &["--endpoints", &plain_on_tls],
                &FAIL_FAST[..],
                &["get", "k"],
            ]
            .concat(),
        ),
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "etcdctl took {:?} to give up",
        started.elapsed()
    );
    served("after plaintext gRPC on the TLS port", "v2");

    // A plaintext HTTP/1 request on the TLS port gets Go's answer.
    let mut c = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert_eq!(
        answer,
        "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
    );

    // TLS on the plaintext port: the handshake fails (our client, and etcdctl).
    let e = https_get(plain_port, "/health", &trust).unwrap_err();
    assert!(e.contains("handshake"), "{e}");
    let tls_on_plain = format!("https://127.0.0.1:{plain_port}");
    assert_fails(
        "etcdctl with https:// on the plaintext port",
        &etcdctl(
            &[
                &["--endpoints", &tls_on_plain, "--cacert", ca.ca()],
                &FAIL_FAST[..],
                &["get", "k"],
            ]
            .concat(),
        ),
    );
    // The plaintext port still serves plaintext.
    assert!(common::http_get(plain_port, "/health").is_some_and(|b| b.contains("\"true\"")));

    // Garbage on the TLS port: not TLS at all, and a handshake record full of junk. Each
    // connection is closed by the server.
    for junk in [
        &b"\x00\x01\x02garbage garbage garbage\r\n\r\n"[..],
        &b"\x16\x03\x01\x00\x10not a client hello, just junk bytes"[..],
    ] {
        let mut c = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
        c.write_all(junk).unwrap();
        assert_closed_by_server(&mut c, "garbage");
    }
    served("after garbage", "v3");

    // The stalled connections: the server closes them (its handshake limit), and everyone
    // else was served while they were open.
    let mut silent = silent;
    assert_closed_by_server(&mut silent, "a connection that sent nothing");
    assert_closed_by_server(&mut half, "half a ClientHello");
    served("after the stalled connections", "v4");
    // Each kind of refusal was logged as such.
    let log = s.log();
    for why in [
        "plaintext on a TLS port",
        "TLS handshake",
        "no handshake within the time allowed",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("rejected connection from 127.0.0.1:") && l.contains(why)),
            "no refusal logged for {why:?}:\n{log}"
        );
    }
}

/// Reads until the server closes the connection (EOF or reset); panics if it stays open
/// for [`LIMIT`].
#[track_caller]
fn assert_closed_by_server(c: &mut TcpStream, what: &str) {
    c.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return,
            // A TLS alert may come first.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{what}: the server did not close the connection: {e}"),
        }
    }
}

/// Flags and files that stop the server at start, each with a line saying why.
#[test]
fn bad_tls_flags_stop_the_server() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "ca1");
    let server = ca.server("server");
    let missing = pki.path().join("missing-cert.pem");
    let missing = missing.to_str().unwrap();
    let missing_ca = pki.path().join("missing-ca.pem");
    let missing_ca = missing_ca.to_str().unwrap();
    let cases: [(&[&str], &[&str], String); 4] = [
        (
            &["https"],
            &["--cert-file", missing, "--key-file", server.key()],
            missing.to_owned(),
        ),
        (&["https"], &[], String::new()),
        (
            &["https"],
            &[
                "--cert-file",
                server.cert(),
                "--key-file",
                server.key(),
                "--cipher-suites",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_NO_SUCH_SUITE",
            ],
            "unexpected TLS cipher suite".to_owned(),
        ),
        (
            &["https"],
            &[
                "--cert-file",
                server.cert(),
                "--key-file",
                server.key(),
                "--trusted-ca-file",
                missing_ca,
            ],
            missing_ca.to_owned(),
        ),
    ];
    for (schemes, flags, want) in cases {
        let mut s = Single::corekv(schemes, flags);
        let want = if want.is_empty() {
            format!(
                "TLS key/cert (--cert-file, --key-file) must be provided for client url {} with HTTPS scheme",
                s.url(0)
            )
        } else {
            want
        };
        let status = s.spawn().wait_exit();
        let log = s.log();
        assert!(
            !status.success(),
            "{flags:?}: exited successfully; log:\n{log}"
        );
        assert!(
            log.lines().any(|l| l.contains(&want)),
            "{flags:?}: no line with {want:?}; log:\n{log}"
        );
    }
}

/// --cipher-suites by Go's name with an ECDSA certificate: a TLS 1.2 client offering only
/// that suite is served, one offering only another is not; Go's client (TLS 1.3) is served.
#[test]
fn known_cipher_suite_is_served() {
    use rustls::crypto::ring::cipher_suite as cs;
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "ca1");
    let server = ca.server("server");
    let mut s = Single::corekv(
        &["https"],
        &[
            "--cert-file",
            server.cert(),
            "--key-file",
            server.key(),
            "--cipher-suites",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ],
    );
    let port = s.client_ports[0];
    let only = |suite| ClientTls {
        ca: Some(&ca.pem),
        tls12_suites: Some(vec![suite]),
        ..Default::default()
    };
    s.start(|| healthy_tls(port, &only(cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)));
    let r = https_get(
        port,
        "/health",
        &only(cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    )
    .unwrap();
    assert_eq!(r.status, "HTTP/1.1 200 OK");
    for other in [
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ] {
        let r = https_get(port, "/health", &only(other));
        assert!(r.is_err(), "{other:?} was accepted: {r:?}");
    }
    let ep = s.url(0);
    assert_out(
        "etcdctl with --cipher-suites on the server",
        &etcdctl(&["--endpoints", &ep, "--cacert", ca.ca(), "put", "c", "s"]),
        "OK\n",
    );
}

// ---------------------------------------------------------------------------------------------
// Clusters with peer TLS

/// A corekv cluster on 127.0.0.1: plaintext client URLs, https:// peer URLs.
struct TlsCluster {
    dir: tempfile::TempDir,
    token: String,
    names: Vec<String>,
    client_ports: Vec<u16>,
    peer_ports: Vec<u16>,
    procs: Vec<Option<Proc>>,
}

impl TlsCluster {
    fn new(n: usize) -> TlsCluster {
        let dir = tempfile::tempdir().unwrap();
        let token = format!(
            "tls-{}-{}",
            std::process::id(),
            dir.path().file_name().unwrap().to_string_lossy()
        );
        TlsCluster {
            dir,
            token,
            names: (0..n).map(|i| format!("m{i}")).collect(),
            client_ports: (0..n).map(|_| free_port()).collect(),
            peer_ports: (0..n).map(|_| free_port()).collect(),
            procs: (0..n).map(|_| None).collect(),
        }
    }

    fn peer_url(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.peer_ports[i])
    }

    fn client_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.client_ports[i])
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}.log"))
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}.data"))
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    fn initial_cluster(&self, members: impl Iterator<Item = usize>) -> String {
        members
            .map(|i| format!("{}={}", self.names[i], self.peer_url(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Member `i`'s arguments with `initial_cluster` and `state`, plus `flags`.
    fn args(&self, i: usize, initial_cluster: &str, state: &str, flags: &[&str]) -> Vec<String> {
        let mut args = vec![
            format!("--name={}", self.names[i]),
            format!("--data-dir={}", self.data_dir(i).display()),
            format!("--listen-client-urls={}", self.client_url(i)),
            format!("--advertise-client-urls={}", self.client_url(i)),
            format!("--listen-peer-urls={}", self.peer_url(i)),
            format!("--initial-advertise-peer-urls={}", self.peer_url(i)),
            format!("--initial-cluster={initial_cluster}"),
            format!("--initial-cluster-state={state}"),
            format!("--initial-cluster-token={}", self.token),
        ];
        args.extend(TIMINGS.iter().map(|s| s.to_string()));
        args.extend(flags.iter().map(|s| s.to_string()));
        args
    }

    /// Starts every member (`flags(i)` for member i) and waits until each is healthy.
    fn start<'a>(&mut self, flags: impl Fn(usize) -> Vec<&'a str>) {
        let n = self.names.len();
        let ic = self.initial_cluster(0..n);
        for i in 0..n {
            let args = self.args(i, &ic, "new", &flags(i));
            self.procs[i] = Some(Proc::spawn(common::corekv_bin(), &args, &self.log_path(i)));
        }
        for i in 0..n {
            let port = self.client_ports[i];
            let r = self.procs[i].as_mut().unwrap().wait_ready(|| {
                common::http_get(port, "/health").is_some_and(|b| b.contains("\"true\""))
            });
            if let Err(e) = r {
                panic!("member m{i} did not start: {e}\n{}", self.logs());
            }
        }
    }

    fn logs(&self) -> String {
        (0..self.names.len())
            .map(|i| format!("--- m{i}:\n{}\n", self.log(i)))
            .collect()
    }

    fn etcdctl(&self, i: usize, args: &[&str]) -> Output {
        let ep = format!("127.0.0.1:{}", self.client_ports[i]);
        etcdctl(&[&["--endpoints", &ep][..], args].concat())
    }

    /// Put on member 0; on member 2 a linearizable get, then a serializable one, both see it.
    fn check_replication(&self, key: &str, value: &str) {
        assert_out("put on m0", &self.etcdctl(0, &["put", key, value]), "OK\n");
        let want = format!("{key}\n{value}\n");
        assert_out(
            "linearizable get on m2",
            &self.etcdctl(2, &["get", key]),
            &want,
        );
        assert_out(
            "serializable get on m2",
            &self.etcdctl(2, &["get", key, "--consistency=s"]),
            &want,
        );
    }
}

/// Three members with peer TLS and peer client-certificate auth form a cluster and
/// replicate; a fourth with a certificate from another CA is refused by them, and the
/// cluster keeps serving.
#[test]
fn cluster_with_peer_tls_refuses_untrusted_member() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "ca1");
    let other = Ca::new(pki.path(), "ca2");
    let certs: Vec<Leaf> = (0..3).map(|i| ca.peer(&format!("m{i}"))).collect();
    let mut c = TlsCluster::new(4);
    // Only the first three form the cluster.
    c.names.truncate(3);
    let ca_file = ca.ca().to_owned();
    c.start(|i| {
        vec![
            "--peer-cert-file",
            certs[i].cert(),
            "--peer-key-file",
            certs[i].key(),
            "--peer-trusted-ca-file",
            &ca_file,
            "--peer-client-cert-auth",
        ]
    });

    let o = c.etcdctl(0, &["member", "list"]);
    assert!(o.status.success(), "member list: {}", stderr(&o));
    let list = stdout(&o);
    assert_eq!(list.lines().count(), 3, "{list}");
    for i in 0..3 {
        assert!(
            list.contains(&format!("m{i}, {}, {}", c.peer_url(i), c.client_url(i))),
            "m{i} is not listed with its https:// peer URL:\n{list}"
        );
    }
    c.check_replication("peer", "tls");

    // A fourth member trusting the same CA but with a certificate from another CA, trying
    // to join: the members refuse its handshake.
    c.names.push("m3".to_owned());
    let intruder = other.peer("m3");
    let ic = c.initial_cluster(0..4);
    let args = c.args(
        3,
        &ic,
        "existing",
        &[
            "--peer-cert-file",
            intruder.cert(),
            "--peer-key-file",
            intruder.key(),
            "--peer-trusted-ca-file",
            &ca_file,
            "--peer-client-cert-auth",
        ],
    );
    let mut m3 = Proc::spawn(common::corekv_bin(), &args, &c.log_path(3));
    let deadline = Instant::now() + LIMIT;
    let refused = loop {
        let found = (0..3).find_map(|i| {
            c.log(i)
                .lines()
                .find(|l| l.contains("refused a peer connection"))
                .map(str::to_owned)
        });
        if let Some(line) = found {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no member logged a refused peer connection within {LIMIT:?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(refused.contains("TLS handshake"), "{refused}");
    // It cannot join: it stops with an error.
    let status = m3.wait_exit();
    assert!(
        !status.success(),
        "m3 exited successfully; its log:\n{}",
        c.log(3)
    );
    // The cluster is untouched and serving.
    let o = c.etcdctl(1, &["member", "list"]);
    assert_eq!(stdout(&o).lines().count(), 3, "{}", stdout(&o));
    c.check_replication("after", "intruder");
}

/// Three members with --peer-auto-tls: each generates its own certificate under
/// fixtures/peer, the cluster forms over https:// and replicates.
#[test]
fn cluster_with_peer_auto_tls() {
    let mut c = TlsCluster::new(3);
    c.start(|_| vec!["--peer-auto-tls"]);
    let certs: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            let d = c.data_dir(i).join("fixtures").join("peer");
            assert!(
                d.join("key.pem").is_file(),
                "m{i}: no fixtures/peer/key.pem"
            );
            std::fs::read(d.join("cert.pem")).expect("fixtures/peer/cert.pem")
        })
        .collect();
    assert!(
        certs[0] != certs[1] && certs[1] != certs[2] && certs[0] != certs[2],
        "the members share a certificate"
    );
    for i in 0..3 {
        let log = c.log(i);
        assert!(
            log.lines()
                .any(|l| l.contains("peer TLS") && l.contains("not for production")),
            "m{i}: no 'not for production' warning:\n{log}"
        );
    }
    let o = c.etcdctl(1, &["member", "list"]);
    let list = stdout(&o);
    for i in 0..3 {
        assert!(list.contains(&c.peer_url(i)), "{list}");
    }
    c.check_replication("auto", "peer");
    // A member's peer port speaks TLS (with its own self-signed certificate).
    let mut tcp = TcpStream::connect(("127.0.0.1", c.peer_ports[0])).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut conn = rustls::ClientConnection::new(
        ClientTls {
            alpn: &[],
            ..Default::default()
        }
        .config(),
        ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .expect("TLS handshake with a member's peer port");
    }
    let presented = conn.peer_certificates().unwrap()[0].to_vec();
    let file = CertificateDer::from_pem_slice(&certs[0]).unwrap().to_vec();
    assert_eq!(
        presented, file,
        "m0's peer port presents its fixtures/peer cert"
    );
}

/// With --client-cert-auth, the common name of a verified client certificate is the user of
/// a call that carries no token (etcd's AuthInfoFromTLS), and a token still wins over it.
/// The same etcdctl sequence runs against etcd 3.4 and corekv, each with mutual TLS, and
/// every step's exit status and output must be the same.
#[test]
fn client_certificate_common_name_is_the_user() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "ca");
    let server = ca.server("server");
    let root = ca.client("root", "root");
    let alice = ca.client("alice", "alice");
    let stranger = ca.client("stranger", "stranger");
    let flags = [
        "--cert-file",
        server.cert(),
        "--key-file",
        server.key(),
        "--trusted-ca-file",
        ca.ca(),
        "--client-cert-auth",
    ];
    // (certificate, extra etcdctl arguments): no --user unless given, so the CN decides.
    let steps: &[(&Leaf, &[&str])] = &[
        (&root, &["user", "add", "root:rootpw"]),
        (&root, &["user", "grant-role", "root", "root"]),
        (&root, &["role", "add", "reader"]),
        (&root, &["role", "grant-permission", "reader", "read", "k"]),
        (&root, &["user", "add", "alice:alicepw"]),
        (&root, &["user", "grant-role", "alice", "reader"]),
        (&root, &["put", "k", "v"]),
        (&root, &["auth", "enable"]),
        // The CN is the user: root may do anything, alice only read k.
        (&root, &["put", "k", "v2"]),
        (&root, &["user", "list"]),
        (&alice, &["get", "k"]),
        (&alice, &["put", "k", "mine"]),
        (&alice, &["get", "other"]),
        (&alice, &["user", "list"]),
        // A CN that is no user.
        (&stranger, &["get", "k"]),
        // A token wins over the certificate, both ways.
        (&alice, &["--user=root:rootpw", "put", "k", "v3"]),
        (&root, &["--user=alice:alicepw", "put", "k", "v4"]),
        (&root, &["auth", "disable"]),
        (&alice, &["put", "k", "v5"]),
    ];
    let mut seen = Vec::new();
    for bin in [require_binary("etcd"), common::corekv_bin().to_path_buf()] {
        let mut s = Single::new(&bin, &["https"], &flags);
        let port = s.client_ports[0];
        let trust = ClientTls {
            ca: Some(&ca.pem),
            cert: Some(&root),
            ..Default::default()
        };
        s.start(|| healthy_tls(port, &trust));
        let ep = s.url(0);
        let outputs: Vec<(bool, String, String)> = steps
            .iter()
            .map(|(cert, args)| {
                let tls = ["--endpoints", &ep, "--cacert", ca.ca()];
                let who = ["--cert", cert.cert(), "--key", cert.key()];
                let o = etcdctl(&[&tls[..], &who[..], &FAIL_FAST[..], args].concat());
                // Without the timestamps and client ids of etcdctl's retry warnings.
                let clean = |t: String| common::differential::normalize(&t.replace(&ep, "<ep>"));
                (o.status.success(), clean(stdout(&o)), clean(stderr(&o)))
            })
            .collect();
        seen.push(outputs);
    }
    for (i, (step, (etcd, corekv))) in steps.iter().zip(seen[0].iter().zip(&seen[1])).enumerate() {
        assert_eq!(
            corekv,
            etcd,
            "step {i} ({:?} as {}) differs: corekv's answer first",
            step.1,
            step.0.cert()
        );
    }
    // The sequence did what it says: alice was refused her put while auth was on.
    assert!(seen[1][10].0 && !seen[1][11].0, "{:?}", &seen[1][10..12]);
}
