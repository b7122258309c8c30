//! The server's flags, named like etcd's, and what they resolve to.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::Parser;

use crate::tls::TlsSettings;

/// What clientv3 accepts in one reply (its MaxCallRecvMsgSize, math.MaxInt32): a larger
/// Range could never reach an etcd Go client, and gRPC's 4-byte length could not frame it.
pub const DEFAULT_MAX_RANGE_BYTES: usize = i32::MAX as usize;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "corekv",
    version,
    about = "A distributed, strongly consistent key-value store that speaks the etcd v3 API"
)]
pub struct Flags {
    /// Human-readable name for this member.
    #[arg(long, default_value = "default", env = "ETCD_NAME")]
    pub name: String,
    /// Path to the data directory (default: "<name>.corekv").
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// List of URLs to listen on for client traffic.
    #[arg(
        long,
        default_value = "http://127.0.0.1:2379",
        env = "ETCD_LISTEN_CLIENT_URLS"
    )]
    pub listen_client_urls: String,
    /// List of this member's client URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        default_value = "http://127.0.0.1:2379",
        env = "ETCD_ADVERTISE_CLIENT_URLS"
    )]
    pub advertise_client_urls: String,
    /// List of URLs to listen on for peer traffic.
    #[arg(
        long,
        default_value = "http://127.0.0.1:2380",
        env = "ETCD_LISTEN_PEER_URLS"
    )]
    pub listen_peer_urls: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        default_value = "http://127.0.0.1:2380",
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS"
    )]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping (name=peerURL,...).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, default_value = "new", env = "ETCD_INITIAL_CLUSTER_STATE")]
    pub initial_cluster_state: String,
    /// Initial cluster token for the cluster during bootstrap.
    #[arg(
        long,
        default_value = "etcd-cluster",
        env = "ETCD_INITIAL_CLUSTER_TOKEN"
    )]
    pub initial_cluster_token: String,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value_t = 1572864, env = "ETCD_MAX_REQUEST_BYTES")]
    pub max_request_bytes: usize,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, default_value_t = 128, env = "ETCD_MAX_TXN_OPS")]
    pub max_txn_ops: usize,
    /// Largest reply of key-values a Range (or read-only Txn) may return; larger ones are
    /// refused before they are built (corekv's own; the default is the most an etcd Go
    /// client receives, math.MaxInt32).
    #[arg(long, default_value_t = DEFAULT_MAX_RANGE_BYTES)]
    pub max_range_bytes: usize,
    /// Maximum concurrent streams that each client can open at a time.
    #[arg(long, default_value_t = u32::MAX, env = "ETCD_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: u32,
    /// Refuse writes once the backend file exceeds this many bytes (0 means 2 GiB).
    #[arg(long, default_value_t = 0, env = "ETCD_QUOTA_BACKEND_BYTES")]
    pub quota_backend_bytes: u64,
    /// Number of committed entries between raft snapshots (which release old WAL segments).
    #[arg(long, default_value_t = 100000, env = "ETCD_SNAPSHOT_COUNT")]
    pub snapshot_count: u64,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value_t = 100, env = "ETCD_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, default_value_t = 1000, env = "ETCD_ELECTION_TIMEOUT")]
    pub election_timeout: u64,
    /// Token type for auth: `simple` (etcd's default; JWT is not served yet).
    #[arg(long, default_value = "simple", env = "ETCD_AUTH_TOKEN")]
    pub auth_token: String,
    /// Seconds an unused simple token stays valid.
    #[arg(long, default_value_t = 300, env = "ETCD_AUTH_TOKEN_TTL")]
    pub auth_token_ttl: u64,
    /// bcrypt cost of password hashes (4..=31; anything else means 10, as in etcd).
    #[arg(long, default_value_t = 10, env = "ETCD_BCRYPT_COST")]
    pub bcrypt_cost: u32,
    /// List of URLs to also serve /metrics and /health on (plain HTTP), as etcd's.
    #[arg(long, default_value = "", env = "ETCD_LISTEN_METRICS_URLS")]
    pub listen_metrics_urls: String,
    /// basic or extensive: extensive adds gRPC handling-time histograms, as etcd's.
    #[arg(long, default_value = "basic", value_parser = ["basic", "extensive"], env = "ETCD_METRICS")]
    pub metrics: String,
    /// Log level: debug, info, warn, error.
    #[arg(long, default_value = "info", env = "ETCD_LOG_LEVEL")]
    pub log_level: String,
    /// Log format: text (one readable line per event) or json (one JSON object per line,
    /// for log collectors; etcd 3.5 logs JSON by default).
    #[arg(long, default_value = "text", value_parser = ["text", "json"], env = "ETCD_LOG_FORMAT")]
    pub log_format: String,
    /// Number of network executors (one per core); default: every core.
    #[arg(long)]
    pub cores: Option<usize>,
    /// Microseconds an idle executor polls before it sleeps (corekv's own): trades idle CPU
    /// for fewer wake-ups between requests.
    #[arg(long, default_value_t = 0)]
    pub spin_us: u64,
    /// Microseconds between wake-ups of every CPU while the WAL waits for the disk (corekv's
    /// own; 0 = none): on VMs whose halted vCPUs learn of disk completions only at their next
    /// timer tick, this keeps a lone put from waiting out the tick (4 ms here).
    #[arg(long, default_value_t = 100)]
    pub wal_wake_us: u64,
    /// Enable to check data corruption before serving any client traffic: a member that
    /// restarts with data compares its HashKV with its peers' and stops on a mismatch.
    #[arg(long, env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK",
          num_args = 0..=1, default_missing_value = "true", default_value = "false",
          action = clap::ArgAction::Set)]
    pub experimental_initial_corrupt_check: bool,
    /// Duration of time between cluster corruption check passes (Go duration, e.g. 5m;
    /// 0 = off): the leader compares every member's HashKV and raises the CORRUPT alarm on
    /// a mismatch.
    #[arg(long, default_value = "0s", value_parser = crate::ctl::gofmt::parse_duration,
          env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME")]
    pub experimental_corrupt_check_time: std::time::Duration,
    /// Crash on reaching this point (tests only; see src/failpoint.rs).
    #[arg(long, hide = true)]
    pub failpoint: Option<String>,
    /// Size of each WAL segment file in bytes (corekv's own; etcd uses 64 MB).
    #[arg(long, default_value_t = 64 << 20)]
    pub wal_segment_bytes: u64,

    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE", help_heading = "Security")]
    pub cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE", help_heading = "Security")]
    pub key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA cert file (clients must then present a
    /// certificate it signed, as with etcd).
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE", help_heading = "Security")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Enable client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", help_heading = "Security",
          num_args = 0..=1, default_missing_value = "true", default_value = "false",
          action = clap::ArgAction::Set)]
    pub client_cert_auth: bool,
    /// Client TLS using generated certificates.
    #[arg(long, env = "ETCD_AUTO_TLS", help_heading = "Security",
          num_args = 0..=1, default_missing_value = "true", default_value = "false",
          action = clap::ArgAction::Set)]
    pub auto_tls: bool,
    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE", help_heading = "Security")]
    pub peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE", help_heading = "Security")]
    pub peer_key_file: Option<PathBuf>,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE", help_heading = "Security")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Enable peer client cert authentication.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", help_heading = "Security",
          num_args = 0..=1, default_missing_value = "true", default_value = "false",
          action = clap::ArgAction::Set)]
    pub peer_client_cert_auth: bool,
    /// Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file
    /// are not provided.
    #[arg(long, env = "ETCD_PEER_AUTO_TLS", help_heading = "Security",
          num_args = 0..=1, default_missing_value = "true", default_value = "false",
          action = clap::ArgAction::Set)]
    pub peer_auto_tls: bool,
    /// The validity period of the client and peer certificates that are automatically
    /// generated by etcd when you specify ClientAutoTLS and PeerAutoTLS, the unit is year.
    #[arg(
        long,
        default_value_t = 1,
        env = "ETCD_SELF_SIGNED_CERT_VALIDITY",
        help_heading = "Security"
    )]
    pub self_signed_cert_validity: u32,
    /// Comma-separated list of supported TLS cipher suites between client/server and peers
    /// (empty will be auto-populated).
    #[arg(
        long,
        default_value = "",
        env = "ETCD_CIPHER_SUITES",
        help_heading = "Security"
    )]
    pub cipher_suites: String,
}

/// A configuration mistake, reported as one line before exiting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// One member of the initial cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub id: u64,
}

/// Flags checked and resolved.
#[derive(Clone, Debug)]
pub struct Config {
    pub flags: Flags,
    pub data_dir: PathBuf,
    /// Where clients connect (--listen-client-urls).
    pub client_listen: Vec<Url>,
    pub client_urls: Vec<String>,
    /// Where peers connect (--listen-peer-urls).
    pub peer_listen: Vec<Url>,
    pub peer_urls: Vec<String>,
    /// TLS for the https:// client URLs (certificate files; --auto-tls is resolved at
    /// start, when the data dir exists).
    pub client_tls: TlsSettings,
    /// TLS for the https:// peer URLs, and for dialing https:// peers.
    pub peer_tls: TlsSettings,
    pub initial_cluster: Vec<InitialMember>,
    pub member_id: u64,
    pub cluster_id: u64,
    pub cores: usize,
    /// --auth-token jwt,…, its keys loaded.
    pub jwt: Option<std::sync::Arc<crate::auth::jwt::JwtTokens>>,
}

/// One URL of a URL flag, checked and resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// As given, without a trailing slash.
    pub url: String,
    pub addr: SocketAddr,
    /// The scheme is https://.
    pub tls: bool,
    /// The host as written (what a TLS certificate is checked against).
    pub host: String,
}

/// Parses "http://host:port" or "https://host:port" URLs the way etcd's flags take them
/// (comma separated).
pub fn parse_urls(flag: &str, value: &str) -> Result<Vec<Url>, ConfigError> {
    let mut urls = Vec::new();
    for raw in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |why: &str| ConfigError(format!("--{flag}: invalid URL {raw:?}: {why}"));
        let (rest, tls) = if let Some(r) = raw.strip_prefix("http://") {
            (r, false)
        } else if let Some(r) = raw.strip_prefix("https://") {
            (r, true)
        } else {
            return Err(bad("the scheme must be http:// or https://"));
        };
        let hostport = rest.trim_end_matches('/');
        if hostport.contains('/') {
            return Err(bad("a URL here carries no path"));
        }
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| bad(&e.to_string()))?
            .next()
            .ok_or_else(|| bad("the host does not resolve"))?;
        let Some((host, port)) = hostport.rsplit_once(':') else {
            return Err(bad("a port is required"));
        };
        if port.parse::<u16>().is_err() {
            return Err(bad("a port is required"));
        }
        urls.push(Url {
            url: raw.trim_end_matches('/').to_owned(),
            addr,
            tls,
            host: host.to_owned(),
        });
    }
    if urls.is_empty() {
        return Err(ConfigError(format!("--{flag}: no URL given")));
    }
    Ok(urls)
}

/// The URLs as strings.
fn strings(urls: Vec<Url>) -> Vec<String> {
    urls.into_iter().map(|u| u.url).collect()
}

/// The client and peer TLS settings from the flags, checked against the listen URLs as etcd
/// checks them: an https:// URL needs a certificate (or auto TLS).
fn tls_settings(
    flags: &Flags,
    client_listen: &[Url],
    peer_listen: &[Url],
) -> Result<(TlsSettings, TlsSettings), ConfigError> {
    let cipher_suites =
        crate::tls::parse_cipher_suites(&flags.cipher_suites).map_err(ConfigError)?;
    let client = TlsSettings {
        cert_file: flags.cert_file.clone(),
        key_file: flags.key_file.clone(),
        trusted_ca_file: flags.trusted_ca_file.clone(),
        client_cert_auth: flags.client_cert_auth,
        cipher_suites: cipher_suites.clone(),
        ..Default::default()
    };
    let peer = TlsSettings {
        cert_file: flags.peer_cert_file.clone(),
        key_file: flags.peer_key_file.clone(),
        trusted_ca_file: flags.peer_trusted_ca_file.clone(),
        client_cert_auth: flags.peer_client_cert_auth,
        cipher_suites,
        ..Default::default()
    };
    let sides = [
        (
            &client,
            client_listen,
            flags.auto_tls,
            "client",
            "--cert-file, --key-file",
            "",
        ),
        (
            &peer,
            peer_listen,
            flags.peer_auto_tls,
            "peer",
            "--peer-cert-file, --peer-key-file",
            "peer-",
        ),
    ];
    for (tls, listen, auto, side, file_flags, prefix) in sides {
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(ConfigError(format!(
                "--{prefix}cert-file and --{prefix}key-file must be given together"
            )));
        }
        if let Some(u) = listen.iter().find(|u| u.tls) {
            if !tls.has_cert() && !auto {
                return Err(ConfigError(format!(
                    "TLS key/cert ({file_flags}) must be provided for {side} url {} with HTTPS scheme",
                    u.url
                )));
            }
            if tls.client_cert_auth && tls.trusted_ca_file.is_none() && !auto {
                return Err(ConfigError(format!(
                    "--{prefix}client-cert-auth needs --{prefix}trusted-ca-file"
                )));
            }
        }
    }
    Ok((client, peer))
}

/// The first 8 bytes of a SHA-1 digest, big-endian: how etcd turns names into IDs.
fn sha1_id(bytes: &[u8]) -> u64 {
    let digest = sha1_smol::Sha1::from(bytes).digest().bytes();
    u64::from_be_bytes(digest[..8].try_into().expect("SHA-1 has 20 bytes"))
}

/// A member's ID as etcd derives it: SHA-1 over its sorted peer URLs and the cluster token
/// (etcd's membership.NewMember; a member added at runtime also mixes in the time).
pub fn member_id(peer_urls: &[String], token: &str, unix_time: Option<i64>) -> u64 {
    let mut sorted = peer_urls.to_vec();
    sorted.sort();
    let mut b = sorted.concat().into_bytes();
    b.extend_from_slice(token.as_bytes());
    if let Some(t) = unix_time {
        b.extend_from_slice(t.to_string().as_bytes());
    }
    sha1_id(&b)
}

/// The cluster ID as etcd derives it: SHA-1 over the sorted member IDs (8 bytes each).
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let b: Vec<u8> = ids.iter().flat_map(|i| i.to_be_bytes()).collect();
    sha1_id(&b)
}

impl Config {
    pub fn from_flags(flags: Flags) -> Result<Config, ConfigError> {
        if flags.name.is_empty() {
            return Err(ConfigError("--name must not be empty".into()));
        }
        let data_dir = flags
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.corekv", flags.name)));
        // Resolved once, against the directory corekv was started in: every file under it is
        // then opened by an absolute path, and the log names the directory unambiguously.
        let data_dir = std::path::absolute(&data_dir).map_err(|e| {
            ConfigError(format!(
                "--data-dir: cannot resolve {}: {e}",
                data_dir.display()
            ))
        })?;
        let client_listen = parse_urls("listen-client-urls", &flags.listen_client_urls)?;
        let client_urls = strings(parse_urls(
            "advertise-client-urls",
            &flags.advertise_client_urls,
        )?);
        let peer_listen = parse_urls("listen-peer-urls", &flags.listen_peer_urls)?;
        let peer_urls = strings(parse_urls(
            "initial-advertise-peer-urls",
            &flags.initial_advertise_peer_urls,
        )?);
        let (client_tls, peer_tls) = tls_settings(&flags, &client_listen, &peer_listen)?;
        match flags.initial_cluster_state.as_str() {
            "new" | "existing" => {}
            other => {
                return Err(ConfigError(format!(
                    "--initial-cluster-state: {other:?} is neither \"new\" nor \"existing\""
                )))
            }
        }
        let initial = flags
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={}", flags.name, peer_urls.join(",")));
        let mut by_name: Vec<InitialMember> = Vec::new();
        for part in initial.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, url) = part.split_once('=').ok_or_else(|| {
                ConfigError(format!("--initial-cluster: {part:?} is not name=URL"))
            })?;
            let urls = strings(parse_urls("initial-cluster", url)?);
            match by_name.iter_mut().find(|m| m.name == name) {
                Some(m) => m.peer_urls.extend(urls),
                None => by_name.push(InitialMember {
                    name: name.to_owned(),
                    peer_urls: urls,
                    id: 0,
                }),
            }
        }
        let mut seen = std::collections::HashSet::new();
        for url in by_name.iter().flat_map(|m| &m.peer_urls) {
            if !seen.insert(url) {
                return Err(ConfigError(format!(
                    "--initial-cluster has the peer URL {url} more than once"
                )));
            }
        }
        for m in &mut by_name {
            m.id = member_id(&m.peer_urls, &flags.initial_cluster_token, None);
        }
        // As etcd: a member restarted from its data dir takes its identity and the members
        // from there, so the --initial-* flags are not checked (they may be stale, e.g. after
        // a MemberUpdate moved this member's peer URL).
        let restarting = data_dir.join("member").join("identity").is_file();
        if restarting {
            let placeholder = InitialMember {
                name: flags.name.clone(),
                peer_urls: peer_urls.clone(),
                id: member_id(&peer_urls, &flags.initial_cluster_token, None),
            };
            if !by_name.iter().any(|m| m.name == flags.name) {
                by_name.push(placeholder);
            }
        }
        let me = by_name
            .iter()
            .find(|m| m.name == flags.name)
            .ok_or_else(|| {
                ConfigError(format!(
                    "--initial-cluster has no member named {:?} (this member's --name)",
                    flags.name
                ))
            })?;
        let mut mine = me.peer_urls.clone();
        let mut adv = peer_urls.clone();
        mine.sort();
        adv.sort();
        if mine != adv && !restarting {
            return Err(ConfigError(format!(
                "--initial-cluster has {} for {:?} but --initial-advertise-peer-urls is {}",
                mine.join(","),
                flags.name,
                adv.join(",")
            )));
        }
        let member_id = me.id;
        let ids: Vec<u64> = by_name.iter().map(|m| m.id).collect();
        let cluster_id = cluster_id(&ids);
        let jwt = match flags.auth_token.split_once(',') {
            _ if flags.auth_token == "simple" => None,
            Some(("jwt", options)) => Some(std::sync::Arc::new(
                crate::auth::jwt::JwtTokens::from_options(options)
                    .map_err(|e| ConfigError(format!("--auth-token: {e}")))?,
            )),
            _ => {
                return Err(ConfigError(format!(
                    "--auth-token {:?}: expected simple or jwt,<options>",
                    flags.auth_token
                )))
            }
        };
        if flags.max_txn_ops == 0 {
            return Err(ConfigError("--max-txn-ops must be at least 1".into()));
        }
        if flags.heartbeat_interval == 0 || flags.election_timeout < 5 * flags.heartbeat_interval {
            return Err(ConfigError(
                "--election-timeout must be at least 5 times --heartbeat-interval".into(),
            ));
        }
        let online = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cores = flags.cores.unwrap_or(online);
        if cores == 0 {
            return Err(ConfigError("--cores must be at least 1".into()));
        }
        Ok(Config {
            data_dir,
            client_listen,
            client_urls,
            peer_listen,
            peer_urls,
            client_tls,
            peer_tls,
            initial_cluster: by_name,
            member_id,
            cluster_id,
            cores,
            jwt,
            flags,
        })
    }

    /// The auth settings from the flags.
    pub fn auth_options(&self) -> crate::auth::AuthOptions {
        let cost = self.flags.bcrypt_cost;
        crate::auth::AuthOptions {
            // etcd falls back to bcrypt's default cost when the flag is out of range.
            bcrypt_cost: if (4..=31).contains(&cost) { cost } else { 10 },
            token_ttl_secs: self.flags.auth_token_ttl,
            jwt: self.jwt.clone(),
            client_cert_auth: self.flags.client_cert_auth,
        }
    }

    /// The election timeout in raft ticks (one tick per heartbeat interval).
    pub fn election_ticks(&self) -> usize {
        (self.flags.election_timeout / self.flags.heartbeat_interval) as usize
    }

    /// etcd's request timeout (5 s + 2 election timeouts), in raft ticks.
    pub fn request_timeout_ticks(&self) -> u64 {
        ((5000 + 2 * self.flags.election_timeout) / self.flags.heartbeat_interval).max(1)
    }

    /// --experimental-corrupt-check-time in raft ticks (0: off; at least one tick).
    pub fn corrupt_check_ticks(&self) -> u64 {
        let ms = self.flags.experimental_corrupt_check_time.as_millis() as u64;
        if ms == 0 {
            return 0;
        }
        (ms / self.flags.heartbeat_interval.max(1)).max(1)
    }

    /// The 2 GiB default applies when --quota-backend-bytes is 0.
    pub fn quota_bytes(&self) -> u64 {
        match self.flags.quota_backend_bytes {
            0 => 2 << 30,
            q => q,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut v = vec!["corekv"];
        v.extend_from_slice(args);
        Flags::try_parse_from(v).unwrap()
    }

    #[test]
    fn defaults_are_etcds() {
        let c = Config::from_flags(flags(&[])).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(c.data_dir, cwd.join("default.corekv"));
        assert_eq!(c.client_listen[0].addr, "127.0.0.1:2379".parse().unwrap());
        assert_eq!(c.peer_listen[0].addr, "127.0.0.1:2380".parse().unwrap());
        assert!(!c.client_listen[0].tls && !c.peer_listen[0].tls);
        assert_eq!(c.initial_cluster.len(), 1);
        assert_eq!(c.flags.max_request_bytes, 1572864);
        assert_eq!(c.election_ticks(), 10);
    }

    #[test]
    fn bad_urls_are_rejected_with_the_flag_named() {
        for bad in [
            "localhost:2379",
            "http://127.0.0.1",
            "ftp://x:1",
            "http://[::1:2379",
        ] {
            let e = Config::from_flags(flags(&["--listen-client-urls", bad])).unwrap_err();
            assert!(e.0.contains("--listen-client-urls"), "{bad}: {}", e.0);
        }
    }

    #[test]
    fn ids_are_etcds() {
        // From a 3-member etcd 3.4 cluster started with these flags.
        let cluster = "a=http://127.0.0.1:12380,b=http://127.0.0.1:22380,c=http://127.0.0.1:32380";
        let a = Config::from_flags(flags(&[
            "--name",
            "a",
            "--initial-cluster",
            cluster,
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:12380",
            "--initial-cluster-token",
            "tkn",
        ]))
        .unwrap();
        assert_eq!(a.member_id, 0x77f4_1cbd_7102_8a3a);
        let ids: Vec<u64> = a.initial_cluster.iter().map(|m| m.id).collect();
        assert_eq!(
            ids,
            [
                0x77f4_1cbd_7102_8a3a,
                0xe523_2947_0e35_c0c0,
                0x763c_9e70_aa15_678a
            ]
        );
        assert_eq!(a.cluster_id, 11064646220597656917);
    }

    #[test]
    fn mismatched_cluster_flags_are_one_clear_line() {
        let e = Config::from_flags(flags(&[
            "--name",
            "x",
            "--initial-cluster",
            "a=http://127.0.0.1:1",
        ]))
        .unwrap_err();
        assert!(e.0.contains("no member named \"x\""), "{}", e.0);
        let e = Config::from_flags(flags(&[
            "--name",
            "a",
            "--initial-cluster",
            "a=http://127.0.0.1:2380,b=http://127.0.0.1:2380",
        ]))
        .unwrap_err();
        assert!(e.0.contains("more than once"), "{}", e.0);
    }

    #[test]
    fn member_ids_agree_across_members() {
        let cluster = "a=http://127.0.0.1:1,b=http://127.0.0.1:2";
        let a = Config::from_flags(flags(&[
            "--name",
            "a",
            "--initial-cluster",
            cluster,
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:1",
        ]))
        .unwrap();
        let b = Config::from_flags(flags(&[
            "--name",
            "b",
            "--initial-cluster",
            cluster,
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2",
        ]))
        .unwrap();
        assert_eq!(a.cluster_id, b.cluster_id);
        assert_eq!(a.initial_cluster, b.initial_cluster);
        assert_ne!(a.member_id, b.member_id);
    }
}
