//! Auth for the load generator (`--user name[:password]`, `--password`, as etcdctl's) and the
//! users, role and permission `compare --auth` sets up on every server it measures with auth.
//!
//! The load generator authenticates once, before the run, and every connection it opens sends
//! that token (a bcrypt check on the server per connection would land in the measurement);
//! compare authenticates for it (`--token`), outside the server CPU it measures.

use std::sync::OnceLock;

use corekv::client::{Client, ClientOptions, Credentials};
use corekv::proto::authpb::{permission, Permission};
use corekv::proto::etcdserverpb as pb;

/// The credentials (with the token) every client of this process uses; unset: none.
static CLIENT_AUTH: OnceLock<Credentials> = OnceLock::new();

/// The user compare's load generators run as, its role and password.
pub const BENCH_USER: &str = "bench";
pub const BENCH_ROLE: &str = "bench";
pub const BENCH_PASSWORD: &str = "bench-pw";
const ROOT_PASSWORD: &str = "root-pw";

/// The load generator flags for the bench user with `token`.
pub fn bench_user_args(token: &str) -> Vec<String> {
    vec![
        format!("--user={BENCH_USER}:{BENCH_PASSWORD}"),
        format!("--token={token}"),
    ]
}

/// A token for the bench user, through the first of `endpoints`.
pub fn bench_token(endpoints: &[String]) -> Result<String, String> {
    authenticate(endpoints, Credentials::new(BENCH_USER, BENCH_PASSWORD))
}

/// Authenticates as `c` through the first of `endpoints` that answers.
fn authenticate(endpoints: &[String], c: Credentials) -> Result<String, String> {
    let eps = endpoints.to_vec();
    corekv::client::run_local(move || async move {
        let mut last = String::from("no endpoints");
        for ep in eps {
            let mut opts = crate::tls::options(vec![ep.clone()]);
            opts.credentials = None;
            let client = match Client::connect(opts).await {
                Ok(client) => client,
                Err(e) => {
                    last = format!("{ep}: {e}");
                    continue;
                }
            };
            return client
                .authenticate(&c.user, &c.password)
                .await
                .map(|r| r.token)
                .map_err(|e| format!("authenticate as {} at {ep}: {e}", c.user));
        }
        Err(last)
    })
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct AuthFlags {
    /// Authenticate as this user: NAME:PASSWORD, or NAME with --password. The token is obtained
    /// once, before the run, and sent by every connection.
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// The password for --user (when --user has none).
    #[arg(long, global = true)]
    pub password: Option<String>,
    /// A token of --user's (from Authenticate) to send instead of authenticating first; if the
    /// server refuses it, the client authenticates with --user's password.
    #[arg(long, global = true)]
    pub token: Option<String>,
}

impl AuthFlags {
    /// The user and password given, if any.
    fn credentials(&self) -> Result<Option<Credentials>, String> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        let (name, password) = match (&self.password, user.split_once(':')) {
            (Some(p), _) => (user.as_str(), p.as_str()),
            (None, Some((n, p))) => (n, p),
            (None, None) => {
                return Err("--user NAME needs a password: NAME:PASSWORD or --password".into())
            }
        };
        Ok(Some(Credentials::new(name, password)))
    }

    /// Authenticates through the first of `endpoints` that answers (unless --token gives the
    /// token) and makes every client of this process send the token (see [`add_to`]).
    /// Nothing without --user or --token.
    pub fn install(&self, endpoints: &[String]) -> Result<(), String> {
        let creds = match (self.credentials()?, &self.token) {
            (None, None) => return Ok(()),
            (None, Some(t)) => Credentials {
                token: Some(t.clone()),
                ..Credentials::new("", "")
            },
            (Some(c), Some(t)) => Credentials {
                token: Some(t.clone()),
                ..c
            },
            (Some(c), None) => Credentials {
                token: Some(authenticate(endpoints, c.clone())?),
                ..c
            },
        };
        CLIENT_AUTH
            .set(creds)
            .map_err(|_| "the client credentials are set once".to_string())
    }
}

/// Gives `o` this process's credentials and token, if it has any.
pub fn add_to(o: &mut ClientOptions) {
    o.credentials = CLIENT_AUTH.get().cloned();
}

/// On a server without auth: the root user (with the root role), role `bench` with readwrite
/// on every key from "\0" on (the benchmark's 8-byte keys begin with the Go varint of their
/// number, so they share no narrower prefix; `bench` is not root, so every request is checked
/// against it), user `bench` with that role; then auth on.
pub fn set_up(endpoints: &[String]) -> Result<(), String> {
    let eps = endpoints.to_vec();
    corekv::client::run_local(move || async move {
        let c = Client::connect(crate::tls::options(eps))
            .await
            .map_err(|e| e.to_string())?;
        let user = |name: &str, password: &str| pb::AuthUserAddRequest {
            name: name.into(),
            password: password.into(),
            options: None,
        };
        let step =
            |what: &'static str| move |e: corekv::client::ClientError| format!("{what}: {e}");
        c.user_add(user("root", ROOT_PASSWORD))
            .await
            .map_err(step("user add root"))?;
        c.user_grant_role("root", "root")
            .await
            .map_err(step("user grant-role root root"))?;
        c.role_add(BENCH_ROLE).await.map_err(step("role add"))?;
        let every_key = Permission {
            perm_type: permission::Type::Readwrite as i32,
            key: vec![0].into(),
            range_end: vec![0].into(),
        };
        c.role_grant_permission(BENCH_ROLE, every_key)
            .await
            .map_err(step("role grant-permission"))?;
        c.user_add(user(BENCH_USER, BENCH_PASSWORD))
            .await
            .map_err(step("user add bench"))?;
        c.user_grant_role(BENCH_USER, BENCH_ROLE)
            .await
            .map_err(step("user grant-role bench bench"))?;
        c.auth_enable().await.map_err(step("auth enable"))?;
        Ok(())
    })
}
