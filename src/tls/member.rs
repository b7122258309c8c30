//! A member's TLS, resolved at start from its flags as etcd resolves them: certificates read
//! (a bad or missing file stops the member, naming the file), auto TLS generated under the
//! data dir, and warnings where a flag is ignored.

use std::sync::Arc;

use super::{autocert, ClientTls, ServerTls, TlsSettings, CLIENT_PORT_ALPN};
use crate::config::{Config, Url};

/// What the member's listeners and its peer dialer use.
pub struct MemberTls {
    /// For the https:// client URLs.
    pub client: Option<Arc<ServerTls>>,
    /// For the https:// peer URLs.
    pub peer_server: Option<Arc<ServerTls>>,
    /// For dialing https:// peers, with this member's peer certificate.
    pub peer_dial: Option<Arc<ClientTls>>,
}

/// The settings one side serves with: its certificate files, or (with auto TLS and none
/// given) a self-signed certificate under `fixtures/<side>` in the data dir.
fn side_settings(
    cfg: &Config,
    given: &TlsSettings,
    auto: bool,
    side: &str,
    listen: &[Url],
) -> Result<Option<TlsSettings>, String> {
    if given.has_cert() {
        if auto {
            tracing::warn!("ignoring {side} auto TLS since certs given");
        }
        for u in listen.iter().filter(|u| !u.tls) {
            tracing::warn!(
                "scheme is HTTP while key and cert files are present; ignoring key and cert files ({side} url {})",
                u.url
            );
        }
        return Ok(Some(given.clone()));
    }
    if !auto {
        return Ok(None);
    }
    let hosts: Vec<String> = listen.iter().map(|u| u.host.clone()).collect();
    let dir = cfg.data_dir.join("fixtures").join(side);
    let mut s = autocert::self_signed(&dir, &hosts, cfg.flags.self_signed_cert_validity)?;
    s.cipher_suites = given.cipher_suites.clone();
    tracing::warn!(
        "{side} TLS uses a self-signed certificate ({}): not for production",
        dir.display()
    );
    Ok(Some(s))
}

pub fn resolve(cfg: &Config) -> Result<MemberTls, String> {
    let client = side_settings(
        cfg,
        &cfg.client_tls,
        cfg.flags.auto_tls,
        "client",
        &cfg.client_listen,
    )?;
    let client =
        match client {
            Some(s) if cfg.client_listen.iter().any(|u| u.tls) => Some(Arc::new(
                ServerTls::server(s, "client TLS", CLIENT_PORT_ALPN)?,
            )),
            _ => None,
        };
    let peer = side_settings(
        cfg,
        &cfg.peer_tls,
        cfg.flags.peer_auto_tls,
        "peer",
        &cfg.peer_listen,
    )?;
    let peer_server = match &peer {
        Some(s) if cfg.peer_listen.iter().any(|u| u.tls) => {
            Some(Arc::new(ServerTls::server(s.clone(), "peer TLS", &[])?))
        }
        _ => None,
    };
    // A peer trusted CA alone also serves to check the peers this member dials.
    let dial = match peer {
        Some(s) => Some(s),
        None if cfg.peer_tls.trusted_ca_file.is_some() => Some(cfg.peer_tls.clone()),
        None => None,
    };
    let peer_dial = match dial {
        Some(s) => Some(Arc::new(ClientTls::client(s, "peer TLS", &[])?)),
        None => None,
    };
    Ok(MemberTls {
        client,
        peer_server,
        peer_dial,
    })
}
