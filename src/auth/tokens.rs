//! etcd's simple tokens: `<16 random letters>.<raft index of the Authenticate entry>`, valid
//! on every member once it has applied that entry, each member forgetting a token after
//! --auth-token-ttl without use.
//!
//! The consensus core registers tokens as it applies Authenticate and drops them when a
//! user is deleted, changes password, or auth is disabled; it reads no clock, so a token it
//! registers starts without a deadline. Network executors look tokens up (which restarts
//! the TTL) and one of them sweeps every second: it gives new tokens their deadline and
//! removes those past it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use super::secrets_equal;

/// Letters a simple token's random part is drawn from (etcd's).
const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
pub const PREFIX_LEN: usize = 16;

/// A deadline not yet given.
const NO_DEADLINE: u64 = 0;

/// 16 letters from the operating system's CSPRNG, without modulo bias.
pub fn random_prefix() -> Result<String, getrandom::Error> {
    let mut out = String::with_capacity(PREFIX_LEN);
    let mut buf = [0u8; 64];
    while out.len() < PREFIX_LEN {
        getrandom::fill(&mut buf)?;
        // 52 letters: bytes below 208 (= 4 × 52) map evenly, the rest are drawn again.
        for b in buf.iter().filter(|b| **b < 208) {
            if out.len() == PREFIX_LEN {
                break;
            }
            out.push(LETTERS[(*b % 52) as usize] as char);
        }
    }
    Ok(out)
}

struct Token {
    prefix: Vec<u8>,
    user: Arc<str>,
    /// Seconds since `SimpleTokens::epoch` after which the token is gone.
    deadline: AtomicU64,
}

/// The tokens this member knows, by the raft index in their suffix (not secret). Several
/// tokens can share an index when one raft entry carries several Authenticate requests.
pub struct SimpleTokens {
    by_index: RwLock<HashMap<u64, Vec<Token>>>,
    ttl_secs: u64,
    epoch: Instant,
}

/// A token split into its parts, if it has etcd's shape.
pub fn parse(token: &str) -> Option<(&str, u64)> {
    let (prefix, index) = token.split_once('.')?;
    if index.contains('.') {
        return None;
    }
    Some((prefix, index.parse().ok()?))
}

impl SimpleTokens {
    pub fn new(ttl_secs: u64) -> SimpleTokens {
        SimpleTokens {
            by_index: RwLock::new(HashMap::new()),
            ttl_secs: ttl_secs.max(1),
            epoch: Instant::now(),
        }
    }

    fn now_secs(&self) -> u64 {
        // +1 so that no live deadline equals NO_DEADLINE.
        self.epoch.elapsed().as_secs() + 1
    }

    /// Registers a token (the core, at apply).
    pub fn assign(&self, prefix: &str, index: u64, user: &str) -> String {
        let mut map = self.by_index.write().unwrap_or_else(|e| e.into_inner());
        map.entry(index).or_default().push(Token {
            prefix: prefix.as_bytes().to_vec(),
            user: Arc::from(user),
            deadline: AtomicU64::new(NO_DEADLINE),
        });
        format!("{prefix}.{index}")
    }

    /// The user a token belongs to; restarts its TTL. The random part is compared in
    /// constant time.
    pub fn user(&self, token: &str) -> Option<Arc<str>> {
        let (prefix, index) = parse(token)?;
        let map = self.by_index.read().unwrap_or_else(|e| e.into_inner());
        let t = map
            .get(&index)?
            .iter()
            .find(|t| secrets_equal(&t.prefix, prefix.as_bytes()))?;
        t.deadline.store(self.now_secs() + self.ttl_secs, Relaxed);
        Some(t.user.clone())
    }

    /// Drops every token of `user` (deleted, or its password changed).
    pub fn invalidate_user(&self, user: &str) {
        let mut map = self.by_index.write().unwrap_or_else(|e| e.into_inner());
        for tokens in map.values_mut() {
            tokens.retain(|t| &*t.user != user);
        }
        map.retain(|_, v| !v.is_empty());
    }

    /// Drops every token (auth disabled).
    pub fn clear(&self) {
        self.by_index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Gives new tokens their deadline and removes expired ones; run about once a second.
    pub fn sweep(&self) {
        let now = self.now_secs();
        let mut map = self.by_index.write().unwrap_or_else(|e| e.into_inner());
        for tokens in map.values_mut() {
            tokens.retain(|t| {
                let d = t.deadline.load(Relaxed);
                if d == NO_DEADLINE {
                    t.deadline.store(now + self.ttl_secs, Relaxed);
                    true
                } else {
                    d >= now
                }
            });
        }
        map.retain(|_, v| !v.is_empty());
    }

    pub fn len(&self) -> usize {
        let map = self.by_index.read().unwrap_or_else(|e| e.into_inner());
        map.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_16_letters_and_differ() {
        let a = random_prefix().unwrap();
        let b = random_prefix().unwrap();
        assert_eq!(a.len(), PREFIX_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_alphabetic()));
        assert_ne!(a, b);
    }

    #[test]
    fn lookup_forged_and_invalidated_tokens() {
        let t = SimpleTokens::new(300);
        let tok = t.assign("abcdefghijklmnop", 7, "alice");
        assert_eq!(tok, "abcdefghijklmnop.7");
        assert_eq!(t.user(&tok).as_deref(), Some("alice"));
        assert!(t.user("abcdefghijklmnoq.7").is_none(), "one letter changed");
        assert!(t.user("abcdefghijklmnop.8").is_none(), "another index");
        assert!(t.user("abcdefghijklmnop").is_none());
        assert!(t.user("abcdefghijklmnop.7.7").is_none());
        t.assign("ponmlkjihgfedcba", 7, "bob");
        t.invalidate_user("alice");
        assert!(t.user(&tok).is_none());
        assert_eq!(t.user("ponmlkjihgfedcba.7").as_deref(), Some("bob"));
        t.clear();
        assert!(t.is_empty());
    }

    #[test]
    fn a_token_past_its_deadline_is_swept() {
        let t = SimpleTokens::new(1);
        let tok = t.assign("abcdefghijklmnop", 1, "alice");
        t.sweep();
        assert!(
            t.user(&tok).is_some(),
            "a new token gets a deadline, not removed"
        );
        // The deadline in the past, instead of sleeping: the same tokens under a clock
        // that started 5 s ago.
        for v in t.by_index.read().unwrap().values() {
            v[0].deadline.store(1, Relaxed);
        }
        let t2 = SimpleTokens {
            by_index: RwLock::new(std::mem::take(&mut *t.by_index.write().unwrap())),
            ttl_secs: 1,
            epoch: Instant::now() - std::time::Duration::from_secs(5),
        };
        t2.sweep();
        assert!(t2.user(&tok).is_none());
    }
}
