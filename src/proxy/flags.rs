//! `corekv grpc-proxy start` flags, named and defaulted as etcd 3.4's.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use crate::client::ClientOptions;
use crate::tls::TlsSettings;

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "corekv grpc-proxy start",
    about = "A stateless gRPC proxy in front of a corekv (or etcd) cluster"
)]
pub struct ProxyFlags {
    /// Comma-separated cluster endpoints.
    #[arg(long, default_value = "127.0.0.1:2379", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:23790")]
    pub listen_addr: String,
    /// Address to register under --resolver-prefix (must be reachable by clients).
    #[arg(long, default_value = "127.0.0.1:23790")]
    pub advertise_client_url: String,
    /// Prefix to register the proxy under (shared by all proxies of a cluster).
    #[arg(long, default_value = "")]
    pub resolver_prefix: String,
    /// TTL in seconds of the registration's lease.
    #[arg(long, default_value_t = 0)]
    pub resolver_ttl: i64,
    /// String to prefix to all keys, for namespacing requests.
    #[arg(long, default_value = "")]
    pub namespace: String,
    /// Also serve /metrics on this address (host:port or http://host:port).
    #[arg(long, default_value = "")]
    pub metrics_addr: String,
    /// Certificate to present to the cluster's members.
    #[arg(long, help_heading = "Upstream TLS")]
    pub cert: Option<PathBuf>,
    /// Key of --cert.
    #[arg(long, help_heading = "Upstream TLS")]
    pub key: Option<PathBuf>,
    /// CA bundle that verifies the members' certificates.
    #[arg(long, help_heading = "Upstream TLS")]
    pub cacert: Option<PathBuf>,
    /// Do not verify the members' certificates (testing only).
    #[arg(long, help_heading = "Upstream TLS")]
    pub insecure_skip_tls_verify: bool,
    /// Certificate the proxy's listener presents.
    #[arg(long, help_heading = "Listener TLS")]
    pub cert_file: Option<PathBuf>,
    /// Key of --cert-file.
    #[arg(long, help_heading = "Listener TLS")]
    pub key_file: Option<PathBuf>,
    /// CA bundle that verifies clients' certificates (and requires them).
    #[arg(long, help_heading = "Listener TLS")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Log level: debug, info, warn, error.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Accepted for etcd's Procfile; profiling is not served.
    #[arg(long, hide = true)]
    pub enable_pprof: bool,
}

/// Resolver registration: the key prefix, the address registered and the lease's TTL.
#[derive(Clone, Debug)]
pub struct Register {
    pub prefix: String,
    pub addr: String,
    pub ttl: i64,
}

/// The flags checked and resolved.
pub struct Settings {
    pub listen: SocketAddr,
    pub listen_tls: Option<Arc<crate::tls::ServerTls>>,
    pub metrics_addr: Option<SocketAddr>,
    pub upstream: ClientOptions,
    pub namespace: String,
    pub register: Option<Register>,
    /// --advertise-client-url, and the registrations' prefix (under --namespace) when
    /// --resolver-prefix is given, for MemberList ([`super::cluster`]).
    pub advertise: String,
    pub resolver_prefix: Option<String>,
}

fn addr(flag: &str, s: &str) -> Result<SocketAddr, String> {
    let hp = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .unwrap_or(s)
        .trim_end_matches('/');
    hp.to_socket_addrs()
        .map_err(|e| format!("--{flag} {s}: {e}"))?
        .next()
        .ok_or_else(|| format!("--{flag} {s}: no address"))
}

impl ProxyFlags {
    /// etcd's checks of the flags, with its words.
    pub fn settings(&self) -> Result<Settings, String> {
        let register = match (self.resolver_prefix.is_empty(), self.resolver_ttl) {
            (false, ttl) if ttl < 1 => {
                return Err("invalid resolver-ttl 0; must be >= 1 when resolver-prefix is set".into())
            }
            (true, ttl) if ttl > 0 => {
                return Err(format!("invalid resolver-prefix \"\" when resolver-ttl {ttl} is set"))
            }
            (false, _) if self.advertise_client_url.is_empty() => {
                return Err("invalid advertise-client-url \"\"; must be set when resolver-prefix and resolver-ttl are set".into())
            }
            // Under --namespace, as etcd's proxy registers with its namespaced client.
            (false, ttl) => Some(Register {
                prefix: format!("{}{}", self.namespace, self.resolver_prefix),
                addr: self.advertise_client_url.clone(),
                ttl,
            }),
            (true, _) => None,
        };
        if self.endpoints.iter().all(|e| e.trim().is_empty()) {
            return Err("--endpoints: no endpoint given".into());
        }
        let upstream_tls = crate::tls::client_tls_from_flags(
            self.cert.as_deref(),
            self.key.as_deref(),
            self.cacert.as_deref(),
            self.insecure_skip_tls_verify,
            self.insecure_skip_tls_verify,
        )?;
        let listen_tls = match (&self.cert_file, &self.key_file) {
            (None, None) if self.trusted_ca_file.is_none() => None,
            (Some(_), Some(_)) => {
                let s = TlsSettings {
                    cert_file: self.cert_file.clone(),
                    key_file: self.key_file.clone(),
                    trusted_ca_file: self.trusted_ca_file.clone(),
                    client_cert_auth: self.trusted_ca_file.is_some(),
                    ..Default::default()
                };
                Some(Arc::new(crate::tls::ServerTls::server(
                    s,
                    "proxy listener",
                    crate::tls::CLIENT_PORT_ALPN,
                )?))
            }
            _ => return Err("--cert-file and --key-file go together".into()),
        };
        let mut upstream = ClientOptions::new(
            self.endpoints
                .iter()
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect(),
        );
        upstream.tls = upstream_tls;
        // A proxy's calls have their clients' deadlines; the option bounds opening a stream.
        upstream.command_timeout = std::time::Duration::from_secs(5);
        upstream.dial_timeout = std::time::Duration::from_secs(1);
        Ok(Settings {
            listen: addr("listen-addr", &self.listen_addr)?,
            listen_tls,
            metrics_addr: match self.metrics_addr.as_str() {
                "" => None,
                a => Some(addr("metrics-addr", a)?),
            },
            upstream,
            namespace: self.namespace.clone(),
            resolver_prefix: register.as_ref().map(|r| r.prefix.clone()),
            register,
            advertise: self.advertise_client_url.clone(),
        })
    }
}
