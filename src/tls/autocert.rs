//! etcd's automatic TLS (--auto-tls, --peer-auto-tls): a self-signed certificate for the
//! listen hosts, kept in the data dir (`fixtures/client`, `fixtures/peer`) and reused on
//! restart, as etcd keeps it.

use std::io::Write as _;
use std::path::Path;

use super::TlsSettings;

/// The certificate and key in `dir` (cert.pem, key.pem), generated when either is missing.
/// `hosts` are the listen URLs' hosts (IP addresses or DNS names).
pub fn self_signed(dir: &Path, hosts: &[String], valid_years: u32) -> Result<TlsSettings, String> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if !(cert_path.is_file() && key_path.is_file()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let (cert_pem, key_pem) = generate(hosts, valid_years)?;
        write_private(&key_path, key_pem.as_bytes())?;
        std::fs::write(&cert_path, cert_pem)
            .map_err(|e| format!("cannot write {}: {e}", cert_path.display()))?;
        tracing::info!(
            "generated a self-signed certificate in {} for {}",
            dir.display(),
            hosts.join(",")
        );
    }
    Ok(TlsSettings {
        cert_file: Some(cert_path),
        key_file: Some(key_path),
        self_signed: true,
        ..Default::default()
    })
}

/// A self-signed certificate and its key, both PEM. The key is ECDSA P-256 (etcd uses
/// P-521, which ring does not sign with).
pub fn generate(hosts: &[String], valid_years: u32) -> Result<(String, String), String> {
    let mut sans: Vec<String> = hosts.to_vec();
    sans.sort();
    sans.dedup();
    let mut params = rcgen::CertificateParams::new(sans).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "etcd");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + time::Duration::days(365 * i64::from(valid_years.max(1)));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    // Client auth too: a member dials its peers with the same certificate.
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes a file only its owner can read (a private key).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
