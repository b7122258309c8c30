//! TLS on the client and peer ports, and for corekv's own clients: rustls with ring as the one
//! crypto provider, certificates in PEM files named by etcd's flags, re-read when the files
//! change (etcd reads them again at every handshake), and etcd's automatic self-signed
//! certificates ([`autocert`]).

pub mod autocert;
pub mod der;
pub mod member;
pub mod stream;
mod suites;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

pub use stream::Stream;
pub use suites::parse_cipher_suites;

/// ALPN for the client port: gRPC clients ask for h2; curl and browsers may take either.
pub const CLIENT_PORT_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// One side's TLS (the client URLs', the peer URLs', or a client's), as etcd's flags give it.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    /// Require and verify the other side's certificate (etcd: also implied by a trusted CA).
    pub client_cert_auth: bool,
    /// The certificate is corekv's own self-signed one: a dialer does not verify what the
    /// other side presents (each member has its own), as etcd's auto TLS does.
    pub self_signed: bool,
    /// Do not verify the server's certificate (etcdctl's --insecure-skip-tls-verify).
    pub insecure_skip_verify: bool,
    /// TLS 1.2 suites to offer; empty means rustls's defaults. TLS 1.3 suites are always on
    /// (Go's TLS, and so etcd, does not let them be chosen either).
    pub cipher_suites: Vec<rustls::SupportedCipherSuite>,
}

impl TlsSettings {
    /// A certificate and key are configured.
    pub fn has_cert(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }

    fn files(&self) -> Vec<&Path> {
        [&self.cert_file, &self.key_file, &self.trusted_ca_file]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
            .collect()
    }

    fn provider(&self) -> Arc<CryptoProvider> {
        let mut p = rustls::crypto::ring::default_provider();
        if !self.cipher_suites.is_empty() {
            p.cipher_suites
                .retain(|s| s.version() == &rustls::version::TLS13);
            p.cipher_suites.extend(self.cipher_suites.iter().copied());
        }
        Arc::new(p)
    }
}

/// The certificate chain in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificate file {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate file {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1, as Go's tls package takes them).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("no private key in {}", path.display())
        }
        e => format!("cannot read key file {}: {e}", path.display()),
    })
}

fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("trusted CA file {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The system's trusted roots, for a client given no CA file (as Go's TLS uses them).
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots
}

/// A cert file and a key file, or neither.
fn cert_and_key(s: &TlsSettings) -> Result<Option<(&Path, &Path)>, String> {
    match (&s.cert_file, &s.key_file) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        (Some(c), None) => Err(format!(
            "a certificate ({}) needs its key file",
            c.display()
        )),
        (None, Some(k)) => Err(format!(
            "a key ({}) needs its certificate file",
            k.display()
        )),
    }
}

/// A listener's TLS configuration; the errors name the file at fault.
pub fn server_config(s: &TlsSettings, alpn: &[&[u8]]) -> Result<ServerConfig, String> {
    let Some((cert, key)) = cert_and_key(s)? else {
        return Err("TLS needs a certificate and a key".into());
    };
    let (certs, key_der) = (read_certs(cert)?, read_key(key)?);
    let provider = s.provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| e.to_string())?;
    // As etcd: a trusted CA file alone already makes client certificates required.
    let builder = match &s.trusted_ca_file {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(ca)?), provider)
                    .build()
                    .map_err(|e| format!("trusted CA file {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None if s.client_cert_auth && !s.self_signed => {
            return Err("client certificate authentication needs a trusted CA file".into())
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(certs, key_der).map_err(|e| {
        format!(
            "certificate {} and key {} cannot be used together: {e}",
            cert.display(),
            key.display()
        )
    })?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// The HTTP/2 dialer's TLS of etcdctl's client flags (`--cert`, `--key`, `--cacert`,
/// `--insecure-skip-tls-verify`), as etcdctl, corekv-bench and the proxy's upstream take them:
/// None (plaintext) unless a file is given or the caller `wants` TLS anyway.
pub fn client_tls_from_flags(
    cert: Option<&Path>,
    key: Option<&Path>,
    cacert: Option<&Path>,
    insecure_skip_verify: bool,
    wants: bool,
) -> Result<Option<Arc<ClientConfig>>, String> {
    if cert.is_none() && key.is_none() && cacert.is_none() && !wants {
        return Ok(None);
    }
    let s = TlsSettings {
        cert_file: cert.map(Path::to_path_buf),
        key_file: key.map(Path::to_path_buf),
        trusted_ca_file: cacert.map(Path::to_path_buf),
        insecure_skip_verify,
        ..Default::default()
    };
    client_config(&s, &[b"h2"]).map(|c| Some(Arc::new(c)))
}

/// A dialer's TLS configuration: verifies the server against the trusted CA (or the
/// system's roots), and presents the certificate when one is configured.
pub fn client_config(s: &TlsSettings, alpn: &[&[u8]]) -> Result<ClientConfig, String> {
    let provider = s.provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| e.to_string())?;
    let builder = if s.insecure_skip_verify || s.self_signed {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoServerVerification(provider)))
    } else {
        let roots = match &s.trusted_ca_file {
            Some(ca) => read_roots(ca)?,
            None => system_roots(),
        };
        builder.with_root_certificates(roots)
    };
    let mut cfg = match cert_and_key(s)? {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| {
                format!(
                    "certificate {} and key {} cannot be used together: {e}",
                    cert.display(),
                    key.display()
                )
            })?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// The name a dialer checks the server's certificate against: the URL's host.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| format!("{host:?}: {e}"))
}

/// What identifies a file's contents cheaply: a rotation (rename over, or rewrite) changes it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp(Option<(std::time::SystemTime, u64, u64)>);

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    Stamp(std::fs::metadata(path).ok().map(|m| {
        (
            m.modified().unwrap_or(std::time::UNIX_EPOCH),
            m.len(),
            m.ino(),
        )
    }))
}

/// A TLS configuration built from files, rebuilt when they change. A rebuild that fails
/// (a half-written or bad file) keeps the previous configuration and logs why, once per
/// change of the files.
pub struct Reloading<T> {
    settings: TlsSettings,
    /// What this configuration is for, in log lines ("client TLS", "peer TLS").
    what: &'static str,
    alpn: &'static [&'static [u8]],
    build: fn(&TlsSettings, &[&[u8]]) -> Result<T, String>,
    state: Mutex<(Vec<Stamp>, Arc<T>)>,
}

pub type ServerTls = Reloading<ServerConfig>;
pub type ClientTls = Reloading<ClientConfig>;

impl<T> Reloading<T> {
    fn new(
        settings: TlsSettings,
        what: &'static str,
        alpn: &'static [&'static [u8]],
        build: fn(&TlsSettings, &[&[u8]]) -> Result<T, String>,
    ) -> Result<Reloading<T>, String> {
        let stamps = settings.files().into_iter().map(stamp).collect();
        let first = build(&settings, alpn).map_err(|e| format!("{what}: {e}"))?;
        Ok(Reloading {
            settings,
            what,
            alpn,
            build,
            state: Mutex::new((stamps, Arc::new(first))),
        })
    }

    /// The configuration for the next handshake: rebuilt first if a file changed.
    pub fn current(&self) -> Arc<T> {
        let stamps: Vec<Stamp> = self.settings.files().into_iter().map(stamp).collect();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 != stamps {
            state.0 = stamps;
            match (self.build)(&self.settings, self.alpn) {
                Ok(c) => {
                    tracing::info!("{}: reloaded the certificate files", self.what);
                    state.1 = Arc::new(c);
                }
                Err(e) => tracing::warn!(
                    "{}: keeping the certificate in use; the changed files do not load: {e}",
                    self.what
                ),
            }
        }
        state.1.clone()
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }
}

impl ServerTls {
    pub fn server(
        settings: TlsSettings,
        what: &'static str,
        alpn: &'static [&'static [u8]],
    ) -> Result<ServerTls, String> {
        Reloading::new(settings, what, alpn, server_config)
    }
}

impl ClientTls {
    pub fn client(
        settings: TlsSettings,
        what: &'static str,
        alpn: &'static [&'static [u8]],
    ) -> Result<ClientTls, String> {
        Reloading::new(settings, what, alpn, client_config)
    }
}

/// Accepts any server certificate but still checks the handshake's signatures, for
/// --insecure-skip-tls-verify and between members with self-signed certificates.
/// Accepts any server certificate but still checks the handshake's signatures (etcdctl's
/// --insecure-skip-tls-verify; also the tests' way to read an auto-TLS certificate).
#[derive(Debug)]
pub struct NoServerVerification(pub Arc<CryptoProvider>);

impl ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
