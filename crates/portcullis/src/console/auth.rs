//! Console sign-in state: the browsers signed in (an opaque cookie for
//! each, the token it stands for kept only in memory), the OIDC sign-ins
//! in flight, and the checks every form post passes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::ConsoleError;

/// Browsers signed in at once; the oldest is signed out past this.
const MAX_LOGINS: usize = 10_000;
/// Browsers one identity may have signed in at once; its own oldest is
/// signed out past this, so that nobody can push everyone else out by
/// signing in over and over.
const MAX_LOGINS_PER_USER: usize = 16;
/// OIDC sign-ins in flight from one address; its own oldest is dropped.
const MAX_PENDING_PER_ADDRESS: usize = 16;
/// The longest a console session lasts, whatever its token says.
const MAX_LOGIN_AGE: Duration = Duration::from_secs(12 * 3600);
/// OIDC sign-ins in flight at once, and how long each may take.
const MAX_PENDING: usize = 1_000;
const PENDING_TTL: Duration = Duration::from_secs(600);

/// A random URL-safe value of `bytes` bytes.
pub fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// Compares two secrets in constant time.
pub fn tokens_match(expected: &str, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// Refuses a form post a browser marks as sent from another origin
/// (`Sec-Fetch-Site`, `Origin`): a second wall behind the CSRF token.
pub fn same_origin(headers: &HeaderMap) -> Result<(), ConsoleError> {
    let refuse = |what: String| {
        tracing::warn!(what, "console form refused: sent from another origin");
        Err(ConsoleError::Page(
            StatusCode::FORBIDDEN,
            format!("this form was sent from another site ({what}); the console accepts forms only from its own pages"),
        ))
    };
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        if site != "same-origin" && site != "none" {
            return refuse(format!("Sec-Fetch-Site: {site}"));
        }
    }
    if let (Some(origin), Some(host)) = (text(header::ORIGIN), text(header::HOST)) {
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
        if origin_host != host {
            return refuse(format!("Origin: {origin}"));
        }
    }
    Ok(())
}

struct Login {
    token: String,
    csrf: String,
    user: String,
    since: Instant,
}

/// An OIDC sign-in between the redirect to the issuer and its return.
pub struct PendingLogin {
    /// PKCE verifier.
    pub verifier: String,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// The value of the browser's OIDC cookie.
    pub binding: String,
    /// The redirect URI sent (the token request repeats it).
    pub redirect_uri: String,
    /// Where to go once signed in.
    pub next: String,
    from: std::net::IpAddr,
    since: Instant,
}

/// Browsers signed in, and OIDC sign-ins in flight. Kept in memory: a
/// restart signs everyone out, and no token is ever written down.
#[derive(Default)]
pub struct ConsoleLogins {
    logins: Mutex<HashMap<[u8; 32], Login>>,
    pending: Mutex<HashMap<String, PendingLogin>>,
}

fn key(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

impl ConsoleLogins {
    /// Signs a browser in as `user` with `token`; returns its cookie value.
    pub fn add(&self, token: String, user: &str) -> String {
        let cookie = random_token(32);
        let mut map = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, l| l.since.elapsed() < MAX_LOGIN_AGE);
        make_room(
            &mut map,
            |l| l.user == user,
            MAX_LOGINS_PER_USER,
            MAX_LOGINS,
        );
        map.insert(
            key(&cookie),
            Login {
                token,
                csrf: random_token(32),
                user: user.to_owned(),
                since: Instant::now(),
            },
        );
        cookie
    }

    /// The token and CSRF token behind a cookie.
    pub fn get(&self, cookie: &str) -> Option<(String, String)> {
        let map = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key(cookie))
            .filter(|l| l.since.elapsed() < MAX_LOGIN_AGE)
            .map(|l| (l.token.clone(), l.csrf.clone()))
    }

    /// Signs a browser out.
    pub fn remove(&self, cookie: &str) {
        let mut map = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&key(cookie));
    }

    /// Starts an OIDC sign-in from `from`; returns its `state`.
    pub fn start(
        &self,
        from: std::net::IpAddr,
        verifier: String,
        nonce: String,
        binding: String,
        redirect_uri: String,
        next: String,
    ) -> String {
        let state = random_token(24);
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, p| p.since.elapsed() < PENDING_TTL);
        make_room(
            &mut map,
            |p| p.from == from,
            MAX_PENDING_PER_ADDRESS,
            MAX_PENDING,
        );
        map.insert(
            state.clone(),
            PendingLogin {
                verifier,
                nonce,
                binding,
                redirect_uri,
                next,
                from,
                since: Instant::now(),
            },
        );
        state
    }

    /// Takes the sign-in of `state` (once: a replayed `state` finds none).
    pub fn finish(&self, state: &str) -> Option<PendingLogin> {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(state)
            .filter(|p| p.since.elapsed() < PENDING_TTL)
    }
}

/// Something timed kept in a table: its age decides who goes first.
trait Aged {
    fn since(&self) -> Instant;
}

impl Aged for Login {
    fn since(&self) -> Instant {
        self.since
    }
}

impl Aged for PendingLogin {
    fn since(&self) -> Instant {
        self.since
    }
}

/// Makes room for one more entry: drops the oldest of `theirs` when they
/// hold `per_owner` already, else the oldest of all when the table holds
/// `total`. An owner who floods the table pushes out only their own.
fn make_room<K: Clone + std::hash::Hash + Eq, V: Aged>(
    map: &mut HashMap<K, V>,
    theirs: impl Fn(&V) -> bool,
    per_owner: usize,
    total: usize,
) {
    let evict = if map.values().filter(|v| theirs(v)).count() >= per_owner {
        oldest(map, theirs)
    } else if map.len() >= total {
        oldest(map, |_| true)
    } else {
        None
    };
    if let Some(k) = evict {
        map.remove(&k);
    }
}

/// The key of the oldest entry `pick` accepts.
fn oldest<K: Clone + std::hash::Hash + Eq, V: Aged>(
    map: &HashMap<K, V>,
    pick: impl Fn(&V) -> bool,
) -> Option<K> {
    map.iter()
        .filter(|(_, v)| pick(v))
        .min_by_key(|(_, v)| v.since())
        .map(|(k, _)| k.clone())
}

/// The console's client at the OIDC issuer (`[login]`, `[console]`).
pub struct OidcClient {
    /// The issuer.
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// The client secret, for a confidential client.
    pub client_secret: Option<String>,
    /// Scopes asked for.
    pub scopes: String,
    /// The console's own URL, for the redirect URI (else the request's
    /// Host).
    pub public_url: Option<String>,
    endpoints: tokio::sync::OnceCell<(String, String)>,
}

impl OidcClient {
    /// A client of `issuer`.
    pub fn new(
        issuer: String,
        client_id: String,
        client_secret: Option<String>,
        scopes: String,
        public_url: Option<String>,
    ) -> Self {
        Self {
            issuer,
            client_id,
            client_secret,
            scopes,
            public_url,
            endpoints: tokio::sync::OnceCell::new(),
        }
    }

    /// The issuer's authorization and token endpoints, by discovery.
    pub async fn endpoints(&self) -> Result<&(String, String), String> {
        self.endpoints
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.issuer.trim_end_matches('/')
                );
                let doc: serde_json::Value = http()
                    .get(&url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| {
                        format!("the issuer's discovery document could not be fetched: {e}")
                    })?
                    .json()
                    .await
                    .map_err(|e| format!("the issuer's discovery document is not JSON: {e}"))?;
                let field = |name: &str| {
                    doc.get(name)
                        .and_then(|v| v.as_str())
                        .map(str::to_owned)
                        .ok_or_else(|| format!("the issuer's discovery document has no {name}"))
                };
                Ok((field("authorization_endpoint")?, field("token_endpoint")?))
            })
            .await
    }

    /// Exchanges an authorization code for an ID token.
    pub async fn id_token(&self, pending: &PendingLogin, code: &str) -> Result<String, String> {
        let (_, token_endpoint) = self.endpoints().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", pending.redirect_uri.as_str()),
            ("client_id", self.client_id.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        if let Some(secret) = &self.client_secret {
            form.push(("client_secret", secret.as_str()));
        }
        let resp = http()
            .post(token_endpoint)
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("the issuer's token endpoint could not be reached: {e}"))?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|_| format!("the issuer's token endpoint answered HTTP {status}, not JSON"))?;
        if !status.is_success() {
            let code = body
                .get("error")
                .and_then(|v| v.as_str())
                .unwrap_or("error");
            return Err(format!("the issuer refused the sign-in ({status}): {code}"));
        }
        body.get("id_token")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                "the issuer's answer has no id_token (is the openid scope asked for?)".into()
            })
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap_or_default()
}

/// PKCE S256 challenge of `verifier`.
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The `nonce` claim of a token the authenticator has verified.
pub fn nonce_of(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let json: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    json.get("nonce")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_cross_site_post_is_refused_and_a_same_origin_one_passes() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9999"),
        );
        assert!(same_origin(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(same_origin(&h).is_err());
    }

    #[test]
    fn a_state_is_used_once_and_logins_are_found_by_cookie() {
        let l = ConsoleLogins::default();
        let here = std::net::IpAddr::from([127, 0, 0, 1]);
        let state = l.start(
            here,
            "v".into(),
            "n".into(),
            "b".into(),
            "r".into(),
            "/".into(),
        );
        assert!(l.finish(&state).is_some());
        assert!(l.finish(&state).is_none());
        let cookie = l.add("tok".into(), "alice");
        assert_eq!(l.get(&cookie).map(|(t, _)| t).as_deref(), Some("tok"));
        l.remove(&cookie);
        assert!(l.get(&cookie).is_none());
        assert!(!tokens_match("", ""));
    }

    #[test]
    fn one_user_signing_in_over_and_over_pushes_out_only_their_own() {
        let l = ConsoleLogins::default();
        let admin = l.add("admin-token".into(), "admin");
        for _ in 0..100 {
            l.add("eve-token".into(), "eve");
        }
        assert!(l.get(&admin).is_some());
        let eves = l
            .logins
            .lock()
            .unwrap()
            .values()
            .filter(|x| x.user == "eve")
            .count();
        assert_eq!(eves, MAX_LOGINS_PER_USER);
        let victim = std::net::IpAddr::from([10, 0, 0, 1]);
        let flood = std::net::IpAddr::from([10, 0, 0, 2]);
        let pending = |from| {
            l.start(
                from,
                "v".into(),
                "n".into(),
                "b".into(),
                "r".into(),
                "/".into(),
            )
        };
        let state = pending(victim);
        for _ in 0..100 {
            pending(flood);
        }
        assert!(l.finish(&state).is_some());
        assert!(tokens_match("abc", "abc"));
    }
}
