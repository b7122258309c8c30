//! TLS for the load generator (etcdctl's --cacert, --cert, --key, --insecure-skip-tls-verify,
//! --insecure-transport) and the certificates `compare --tls` gives every server: one CA, a
//! server certificate for 127.0.0.1 and a client certificate, so each server is measured with
//! mutual TLS and the same keys.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use corekv::client::ClientOptions;

/// The TLS every client of this process dials with (set once, from the flags or by compare).
static CLIENT_TLS: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();

/// Client TLS flags, as etcdctl's.
#[derive(clap::Args, Debug, Clone)]
pub struct TlsFlags {
    // Explicit ids: `key` is also the range workload's positional argument.
    /// Verify certificates of TLS-enabled secure servers using this CA bundle.
    #[arg(long, id = "tls_cacert", global = true)]
    pub cacert: Option<PathBuf>,
    /// Identify secure client using this TLS certificate file.
    #[arg(long, id = "tls_cert", global = true)]
    pub cert: Option<PathBuf>,
    /// Identify secure client using this TLS key file.
    #[arg(long, id = "tls_key", global = true)]
    pub key: Option<PathBuf>,
    /// Skip server certificate verification.
    #[arg(long, global = true)]
    pub insecure_skip_tls_verify: bool,
    /// Disable transport security for endpoints without a scheme (https:// ones get TLS anyway).
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true",
          default_value = "true", action = clap::ArgAction::Set)]
    pub insecure_transport: bool,
}

/// What no flags mean: plaintext for endpoints without a scheme, as clap's defaults give.
impl Default for TlsFlags {
    fn default() -> Self {
        TlsFlags {
            cacert: None,
            cert: None,
            key: None,
            insecure_skip_tls_verify: false,
            insecure_transport: true,
        }
    }
}

impl TlsFlags {
    /// The flags as arguments for another corekv-bench process.
    pub fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (flag, path) in [
            ("--cacert", &self.cacert),
            ("--cert", &self.cert),
            ("--key", &self.key),
        ] {
            if let Some(p) = path {
                v.push(format!("{flag}={}", p.display()));
            }
        }
        if self.insecure_skip_tls_verify {
            v.push("--insecure-skip-tls-verify".into());
        }
        v
    }

    /// Sets the TLS every client of this process uses.
    pub fn install(&self) -> Result<(), String> {
        let cfg = corekv::tls::client_tls_from_flags(
            self.cert.as_deref(),
            self.key.as_deref(),
            self.cacert.as_deref(),
            self.insecure_skip_tls_verify,
            !self.insecure_transport || self.insecure_skip_tls_verify,
        )?;
        CLIENT_TLS
            .set(cfg)
            .map_err(|_| "the client TLS is set once".to_string())
    }
}

/// Client options for `endpoints` with this process's TLS (and credentials, if it has any:
/// see `crate::auth`).
pub fn options(endpoints: Vec<String>) -> ClientOptions {
    let mut o = ClientOptions::new(endpoints);
    o.tls = CLIENT_TLS.get().cloned().flatten();
    crate::auth::add_to(&mut o);
    o
}

/// Certificates for a benchmark with mutual TLS, written under a directory.
pub struct BenchCerts {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client: TlsFlags,
}

impl BenchCerts {
    /// A CA, and a server and a client certificate it signed (ECDSA P-256, as etcd's own
    /// examples and Kubernetes' use), in `dir`.
    pub fn generate(dir: &Path) -> Result<BenchCerts, String> {
        let e = |e: rcgen::Error| e.to_string();
        let ca_key = rcgen::KeyPair::generate().map_err(e)?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "corekv-bench CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(e)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf = |cn: &str, sans: Vec<String>| -> Result<(String, String), String> {
            let key = rcgen::KeyPair::generate().map_err(e)?;
            let mut p = rcgen::CertificateParams::new(sans).map_err(e)?;
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            p.extended_key_usages = vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = p.signed_by(&key, &issuer).map_err(e)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (server_pem, server_key) =
            leaf("server", vec!["127.0.0.1".into(), "localhost".into()])?;
        let (client_pem, client_key) = leaf("root", vec![])?;
        let write = |name: &str, text: &str| -> Result<PathBuf, String> {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok(p)
        };
        let ca = write("ca.pem", &ca_cert.pem())?;
        Ok(BenchCerts {
            server_cert: write("server.pem", &server_pem)?,
            server_key: write("server-key.pem", &server_key)?,
            client: TlsFlags {
                cacert: Some(ca.clone()),
                cert: Some(write("client.pem", &client_pem)?),
                key: Some(write("client-key.pem", &client_key)?),
                insecure_skip_tls_verify: false,
                insecure_transport: true,
            },
            ca,
        })
    }

    /// The server flags for mutual TLS (etcd's and corekv's alike).
    pub fn server_flags(&self) -> Vec<String> {
        vec![
            format!("--cert-file={}", self.server_cert.display()),
            format!("--key-file={}", self.server_key.display()),
            format!("--trusted-ca-file={}", self.ca.display()),
            "--client-cert-auth".to_string(),
        ]
    }
}
