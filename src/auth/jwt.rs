//! etcd's JWT tokens (`--auth-token jwt,pub-key=…,priv-key=…,sign-method=…,ttl=…`).
//!
//! A JWT carries its user and the auth revision it was issued at, signed; any member with
//! the key checks it without having seen it issued, so unlike a simple token it needs no
//! raft entry of its own and is good on a follower at once. The member that serves
//! Authenticate signs it after the request is applied (on a network executor: an RSA
//! signature costs about a millisecond, which the consensus core must not spend).
//!
//! Claims as etcd 3.4 writes them: `username`, `revision`, `exp` (Unix seconds). A token
//! older than the current auth revision is refused with `auth: revision in header is old`
//! as etcd does, so clients re-authenticate after an auth change.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use super::AuthInfo;
use crate::tls::der;

/// etcd's default JWT lifetime.
const DEFAULT_TTL: Duration = Duration::from_secs(300);

pub struct JwtTokens {
    algorithm: Algorithm,
    /// None when only a public key was given: the member verifies tokens but cannot issue
    /// them (etcd's verify-only mode).
    signing: Option<EncodingKey>,
    verifying: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("JwtTokens")
            .field("algorithm", &self.algorithm)
            .field("verify_only", &self.signing.is_none())
            .field("ttl", &self.ttl)
            .finish()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
}

impl JwtTokens {
    /// Parses the options after `jwt,` in --auth-token and loads the key files. Errors name
    /// the option or file at fault.
    pub fn from_options(options: &str) -> Result<JwtTokens, String> {
        let (mut pub_key, mut priv_key, mut method, mut ttl) = (None, None, None, None);
        for opt in options.split(',').filter(|o| !o.is_empty()) {
            let (name, value) = opt
                .split_once('=')
                .ok_or_else(|| format!("JWT option {opt:?} is not name=value"))?;
            match name {
                "pub-key" => pub_key = Some(value),
                "priv-key" => priv_key = Some(value),
                "sign-method" => method = Some(value),
                "ttl" => ttl = Some(value),
                // etcd warns about unknown options and goes on.
                _ => tracing::warn!(option = name, "unknown JWT option ignored"),
            }
        }
        let ttl = match ttl {
            Some(t) => crate::ctl::gofmt::parse_duration(t)
                .map_err(|e| format!("JWT option ttl={t}: {e}"))?,
            None => DEFAULT_TTL,
        };
        let method = method.ok_or("JWT option sign-method is missing")?;
        let algorithm: Algorithm = method
            .parse()
            .map_err(|_| format!("JWT sign-method {method:?} is not supported"))?;
        let read =
            |path: &str| std::fs::read(path).map_err(|e| format!("JWT key file {path:?}: {e}"));
        let private = priv_key.map(read).transpose()?;
        let public = pub_key.map(read).transpose()?;
        let (signing, verifying) = keys(algorithm, private.as_deref(), public.as_deref())?;
        let mut validation = Validation::new(algorithm);
        // etcd's tokens always carry exp, but Go's parser accepts one without, and gives no
        // leeway.
        validation.required_spec_claims = HashSet::new();
        validation.leeway = 0;
        Ok(JwtTokens {
            algorithm,
            signing,
            verifying,
            validation,
            ttl,
        })
    }

    /// A signed token for `username` at auth revision `revision`.
    pub fn sign(&self, username: &str, revision: u64) -> Result<String, String> {
        let key = self
            .signing
            .as_ref()
            .ok_or("auth: token signing attempted with verify-only key")?;
        let exp = (SystemTime::now() + self.ttl)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            username: username.to_owned(),
            revision,
            exp: Some(exp),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key)
            .map_err(|e| format!("signing a JWT: {e}"))
    }

    /// The user and auth revision a token carries, if its signature, algorithm and expiry
    /// hold.
    pub fn verify(&self, token: &str) -> Option<AuthInfo> {
        match jsonwebtoken::decode::<Claims>(token, &self.verifying, &self.validation) {
            Ok(data) => Some(AuthInfo {
                username: data.claims.username,
                revision: data.claims.revision,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "invalid JWT token");
                None
            }
        }
    }
}

/// The signing and verifying keys for `algorithm`, as etcd picks them: HMAC signs and
/// verifies with the private key file's bytes; RSA and ECDSA verify with the public key,
/// which is derived from the private key when only that is given.
fn keys(
    algorithm: Algorithm,
    private: Option<&[u8]>,
    public: Option<&[u8]>,
) -> Result<(Option<EncodingKey>, DecodingKey), String> {
    use Algorithm::*;
    let bad = |what: &str, e: &dyn std::fmt::Display| format!("JWT {what}: {e}");
    match algorithm {
        HS256 | HS384 | HS512 => {
            let secret = private.ok_or("JWT sign-method HS* needs priv-key (the secret)")?;
            Ok((
                Some(EncodingKey::from_secret(secret)),
                DecodingKey::from_secret(secret),
            ))
        }
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
            let signing = private
                .map(|p| EncodingKey::from_rsa_pem(p).map_err(|e| bad("priv-key", &e)))
                .transpose()?;
            let verifying = match (public, private) {
                (Some(p), _) => DecodingKey::from_rsa_pem(p).map_err(|e| bad("pub-key", &e))?,
                (None, Some(p)) => DecodingKey::from_rsa_der(&rsa_public_of(p)?),
                (None, None) => return Err("JWT needs pub-key or priv-key".into()),
            };
            Ok((signing, verifying))
        }
        ES256 | ES384 => {
            let pkcs8 = private.map(ec_private_pkcs8).transpose()?;
            let signing = pkcs8.as_ref().map(|k| EncodingKey::from_ec_der(k));
            let verifying = match (public, &pkcs8) {
                (Some(p), _) => DecodingKey::from_ec_pem(p).map_err(|e| bad("pub-key", &e))?,
                (None, Some(k)) => DecodingKey::from_ec_der(&ec_public_of(algorithm, k)?),
                (None, None) => return Err("JWT needs pub-key or priv-key".into()),
            };
            Ok((signing, verifying))
        }
        EdDSA => {
            let signing = private
                .map(|p| EncodingKey::from_ed_pem(p).map_err(|e| bad("priv-key", &e)))
                .transpose()?;
            let public = public.ok_or("JWT sign-method EdDSA needs pub-key")?;
            let verifying = DecodingKey::from_ed_pem(public).map_err(|e| bad("pub-key", &e))?;
            Ok((signing, verifying))
        }
    }
}

/// The PKCS#1 public key of an RSA private key in PEM (PKCS#1 or PKCS#8).
fn rsa_public_of(pem: &[u8]) -> Result<Vec<u8>, String> {
    use ring::signature::KeyPair;
    use rustls_pki_types::{pem::PemObject, PrivateKeyDer};
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("JWT priv-key: {e}"))?;
    let pair = match &key {
        PrivateKeyDer::Pkcs1(k) => ring::rsa::KeyPair::from_der(k.secret_pkcs1_der()),
        PrivateKeyDer::Pkcs8(k) => ring::rsa::KeyPair::from_pkcs8(k.secret_pkcs8_der()),
        _ => return Err("JWT priv-key: not an RSA key".into()),
    }
    .map_err(|e| format!("JWT priv-key: {e}"))?;
    Ok(pair.public_key().as_ref().to_vec())
}

/// An EC private key in PEM as PKCS#8 DER. OpenSSL writes SEC1 (`EC PRIVATE KEY`) by
/// default and Go reads it, so corekv takes it too and wraps it in PKCS#8 for ring.
fn ec_private_pkcs8(pem: &[u8]) -> Result<Vec<u8>, String> {
    use rustls_pki_types::{pem::PemObject, PrivateKeyDer};
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("JWT priv-key: {e}"))?;
    match &key {
        PrivateKeyDer::Pkcs8(k) => Ok(k.secret_pkcs8_der().to_vec()),
        PrivateKeyDer::Sec1(k) => sec1_to_pkcs8(k.secret_sec1_der())
            .ok_or_else(|| "JWT priv-key: malformed EC PRIVATE KEY".into()),
        _ => Err("JWT priv-key: not an EC key".into()),
    }
}

/// The uncompressed public point of a PKCS#8 EC key, as ring verifies with.
fn ec_public_of(algorithm: Algorithm, pkcs8: &[u8]) -> Result<Vec<u8>, String> {
    use ring::signature::{self, KeyPair};
    let alg = match algorithm {
        Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        _ => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
    };
    let rng = ring::rand::SystemRandom::new();
    let pair = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8, &rng)
        .map_err(|e| format!("JWT priv-key (does it match sign-method?): {e}"))?;
    Ok(pair.public_key().as_ref().to_vec())
}

/// RFC 5915's ECPrivateKey (with its curve in `[0] parameters`) wrapped as RFC 5208's
/// PrivateKeyInfo with algorithm id-ecPublicKey and that curve.
fn sec1_to_pkcs8(sec1: &[u8]) -> Option<Vec<u8>> {
    const ID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let (0x30, mut fields, _) = der::next(sec1)? else {
        return None;
    };
    let mut curve = None;
    while !fields.is_empty() {
        let (tag, contents, rest) = der::next(fields)?;
        if tag == 0xa0 {
            let (0x06, oid, _) = der::next(contents)? else {
                return None;
            };
            curve = Some(oid);
        }
        fields = rest;
    }
    let algorithm = [
        der::encode(0x06, ID_EC_PUBLIC_KEY),
        der::encode(0x06, curve?),
    ]
    .concat();
    let info = [
        der::encode(0x02, &[0]),
        der::encode(0x30, &algorithm),
        der::encode(0x04, sec1),
    ]
    .concat();
    Some(der::encode(0x30, &info))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, name: &str, data: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p.to_string_lossy().into_owned()
    }

    #[test]
    fn es256_signs_and_verifies_and_a_verify_only_key_cannot_issue() {
        let dir = tempfile::tempdir().unwrap();
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let priv_only = write(dir.path(), "p8.pem", &pair.serialize_pem());
        let tokens =
            JwtTokens::from_options(&format!("priv-key={priv_only},sign-method=ES256,ttl=1m"))
                .unwrap();
        let t = tokens.sign("alice", 7).unwrap();
        assert_eq!(
            tokens.verify(&t),
            Some(AuthInfo {
                username: "alice".into(),
                revision: 7
            })
        );
        // A verify-only member (public key only) accepts it and cannot issue.
        let public = write(dir.path(), "pub.pem", &pair.public_key_pem());
        let verifier =
            JwtTokens::from_options(&format!("pub-key={public},sign-method=ES256")).unwrap();
        assert!(verifier.verify(&t).is_some());
        assert!(verifier.sign("alice", 7).is_err());
        // A SEC1 key without its curve cannot be wrapped (OpenSSL's carry it; the
        // end-to-end test in tests/auth_tokens.rs uses one).
        assert!(sec1_to_pkcs8(&der::encode(0x30, &der::encode(0x02, &[1]))).is_none());
    }

    #[test]
    fn tampered_expired_foreign_and_wrong_algorithm_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = write(dir.path(), "secret", "0123456789abcdef0123456789abcdef");
        let tokens =
            JwtTokens::from_options(&format!("priv-key={secret},sign-method=HS256")).unwrap();
        let t = tokens.sign("alice", 3).unwrap();
        assert!(tokens.verify(&t).is_some());
        // Tampered claims: the payload of a token for root, with alice's signature.
        let root = tokens.sign("root", 3).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let root_parts: Vec<&str> = root.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], root_parts[1], parts[2]);
        assert!(tokens.verify(&forged).is_none());
        // Signed with another secret.
        let other = write(dir.path(), "other", "another secret entirely..........");
        let foreign = JwtTokens::from_options(&format!("priv-key={other},sign-method=HS256"))
            .unwrap()
            .sign("alice", 3)
            .unwrap();
        assert!(tokens.verify(&foreign).is_none());
        // Expired: exp in the past.
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                username: "alice".into(),
                revision: 3,
                exp: Some(1),
            },
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert!(tokens.verify(&expired).is_none());
        // Another algorithm with the same secret.
        let hs512 = JwtTokens::from_options(&format!("priv-key={secret},sign-method=HS512"))
            .unwrap()
            .sign("alice", 3)
            .unwrap();
        assert!(tokens.verify(&hs512).is_none());
        assert!(tokens.verify("not.a.token").is_none());
        assert!(tokens.verify("").is_none());
    }

    #[test]
    fn bad_options_are_named() {
        let e = JwtTokens::from_options("sign-method=RS256,priv-key=/nonexistent").unwrap_err();
        assert!(e.contains("/nonexistent"), "{e}");
        let e = JwtTokens::from_options("sign-method=XX256,priv-key=/x").unwrap_err();
        assert!(e.contains("XX256"), "{e}");
        let e = JwtTokens::from_options("priv-key=/x").unwrap_err();
        assert!(e.contains("sign-method"), "{e}");
        let e = JwtTokens::from_options("sign-method=HS256,ttl=5").unwrap_err();
        assert!(e.contains("ttl"), "{e}");
    }
}
