//! Issuers' signing keys: parsing a JWK Set into verification keys, and
//! keeping each issuer's set fresh (discovery, cache, refetch on an unknown
//! `kid`, rate-limited so a stream of forged kids cannot hammer the issuer).
//!
//! The network is behind [`DocumentFetcher`]: the gateway fetches over
//! HTTPS ([`HttpFetcher`]); tests inject documents, and the end-to-end
//! tests run the real OpenID Connect provider. Nothing here is on the
//! policy path: keys are fetched while a credential is verified, before
//! any decision.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::AuthError;

/// Largest discovery document or key set accepted, bytes.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// One usable verification key.
struct VerifyKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// An issuer's keys, ready to verify. Keys that cannot be used safely (HMAC
/// `oct` keys, encryption keys, curves other than P-256 and Ed25519) are
/// left out rather than trusted.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.kid, k.alg)))
            .finish()
    }
}

impl KeySet {
    /// Parses a JWK Set (`{"keys": [...]}`).
    pub fn from_jwks(doc: &Value) -> Result<Self, String> {
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("the key set has no \"keys\" array")?;
        let mut out = Vec::new();
        for k in keys {
            if let Some(key) = Self::usable(k) {
                out.push(key);
            }
        }
        Ok(Self { keys: out })
    }

    fn usable(k: &Value) -> Option<VerifyKey> {
        let s = |n: &str| k.get(n).and_then(Value::as_str);
        if s("use").is_some_and(|u| u != "sig") {
            return None;
        }
        let (alg, key) = match (s("kty")?, s("crv")) {
            ("RSA", _) => (
                Algorithm::RS256,
                DecodingKey::from_rsa_components(s("n")?, s("e")?).ok()?,
            ),
            ("EC", Some("P-256")) => (
                Algorithm::ES256,
                DecodingKey::from_ec_components(s("x")?, s("y")?).ok()?,
            ),
            ("OKP", Some("Ed25519")) => (
                Algorithm::EdDSA,
                DecodingKey::from_ed_components(s("x")?).ok()?,
            ),
            _ => return None,
        };
        // A key pinned to another algorithm (RS384, say) is not ours to use.
        let named = s("alg");
        let matches = match alg {
            Algorithm::RS256 => named.is_none_or(|a| a == "RS256"),
            Algorithm::ES256 => named.is_none_or(|a| a == "ES256"),
            _ => named.is_none_or(|a| a == "EdDSA" || a == "Ed25519"),
        };
        matches.then(|| VerifyKey {
            kid: s("kid").map(str::to_owned),
            alg,
            key,
        })
    }

    /// A set holding one key, for the gateway's own tokens.
    pub fn single(kid: &str, alg: Algorithm, key: DecodingKey) -> Self {
        Self {
            keys: vec![VerifyKey {
                kid: Some(kid.to_owned()),
                alg,
                key,
            }],
        }
    }

    /// The key for `kid` and `alg`. A token without a `kid` may use the only
    /// key of its algorithm.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&DecodingKey> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid) && k.alg == alg)
                .map(|k| &k.key),
            None => {
                let mut same = self.keys.iter().filter(|k| k.alg == alg);
                match (same.next(), same.next()) {
                    (Some(k), None) => Some(&k.key),
                    _ => None,
                }
            }
        }
    }

    /// How many keys are usable.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Fetch timing for [`RemoteKeys`].
#[derive(Debug, Clone, Copy)]
pub struct Refresh {
    /// Refetch at least this often, so rotation without a new kid (rare) is
    /// still seen.
    pub max_age: Duration,
    /// Never refetch more often than this, whatever tokens arrive.
    pub min_interval: Duration,
}

impl Default for Refresh {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(600),
            min_interval: Duration::from_secs(10),
        }
    }
}

struct Cached {
    set: Arc<KeySet>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
}

/// Where discovery documents and key sets come from.
#[async_trait::async_trait]
pub trait DocumentFetcher: Send + Sync {
    /// The JSON document at `url`, or why it could not be had.
    async fn get_json(&self, url: &str) -> Result<Value, String>;
}

/// Fetches over HTTP(S): no redirects, short timeouts, bounded size.
pub struct HttpFetcher {
    http: reqwest::Client,
}

impl Default for HttpFetcher {
    fn default() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { http }
    }
}

#[async_trait::async_trait]
impl DocumentFetcher for HttpFetcher {
    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let resp = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", resp.status()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(format!("GET {url}: document too large"));
        }
        let body = resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("GET {url}: document too large"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
    }
}

/// One issuer's keys, fetched through OIDC discovery and cached.
pub struct RemoteKeys {
    issuer: String,
    jwks_uri: Option<String>,
    fetcher: Arc<dyn DocumentFetcher>,
    refresh: Refresh,
    cached: RwLock<Cached>,
    // One fetch at a time per issuer: concurrent logins with a new kid wait
    // for the same fetch instead of each starting one.
    fetching: tokio::sync::Mutex<()>,
}

impl RemoteKeys {
    /// Keys for `issuer`, fetched over HTTP; `jwks_uri` skips discovery
    /// when given.
    pub fn new(issuer: &str, jwks_uri: Option<String>, refresh: Refresh) -> Self {
        Self::with_fetcher(issuer, jwks_uri, refresh, Arc::new(HttpFetcher::default()))
    }

    /// Keys for `issuer`, fetched through `fetcher`.
    pub fn with_fetcher(
        issuer: &str,
        jwks_uri: Option<String>,
        refresh: Refresh,
        fetcher: Arc<dyn DocumentFetcher>,
    ) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            jwks_uri,
            fetcher,
            refresh,
            cached: RwLock::new(Cached {
                set: Arc::new(KeySet::default()),
                fetched: None,
                attempted: None,
            }),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Installs `set` as if just fetched (benchmarks, and tests that must
    /// not reach the issuer).
    pub fn preload(&self, set: KeySet) {
        self.install(set);
    }

    /// The issuer these keys belong to.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn snapshot(&self) -> (Arc<KeySet>, Option<Instant>, Option<Instant>) {
        let c = self.cached.read().unwrap_or_else(|p| p.into_inner());
        (c.set.clone(), c.fetched, c.attempted)
    }

    /// Fetches the key set now (at startup), unless it is fresh.
    pub async fn prefetch(&self) {
        let (_, fetched, _) = self.snapshot();
        if fetched.is_some_and(|t| t.elapsed() < self.refresh.max_age) {
            return;
        }
        let _one = self.fetching.lock().await;
        match self.fetch().await {
            Ok(new) => {
                self.install(new);
            }
            Err(why) => {
                tracing::warn!(issuer = %self.issuer, error = %why, "fetching the issuer's signing keys failed");
            }
        }
    }

    fn install(&self, set: KeySet) -> Arc<KeySet> {
        let set = Arc::new(set);
        let mut c = self.cached.write().unwrap_or_else(|p| p.into_inner());
        c.set = set.clone();
        c.fetched = Some(Instant::now());
        c.attempted = c.fetched;
        tracing::info!(issuer = %self.issuer, keys = set.len(), "fetched the issuer's signing keys");
        set
    }

    /// A key set that holds `kid`/`alg` if the issuer publishes it, fetching
    /// when the cache is stale or lacks the key (at most once per
    /// `min_interval`).
    pub async fn keys_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<KeySet>, AuthError> {
        let (set, fetched, _) = self.snapshot();
        let fresh = fetched.is_some_and(|t| t.elapsed() < self.refresh.max_age);
        if fresh && set.find(kid, alg).is_some() {
            return Ok(set);
        }
        let _one = self.fetching.lock().await;
        let (set, fetched_again, attempted) = self.snapshot();
        if fetched_again != fetched && set.find(kid, alg).is_some() {
            return Ok(set); // another task fetched while we waited
        }
        if attempted.is_some_and(|t| t.elapsed() < self.refresh.min_interval) {
            return Ok(set); // rate-limited: decide with what we have
        }
        match self.fetch().await {
            Ok(new) => Ok(self.install(new)),
            Err(why) => {
                self.cached
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .attempted = Some(Instant::now());
                tracing::warn!(issuer = %self.issuer, error = %why, "fetching the issuer's signing keys failed");
                if set.find(kid, alg).is_some() {
                    Ok(set) // a stale key still verifies; the issuer is briefly away
                } else {
                    Err(AuthError::Unavailable(format!(
                        "the signing keys of {} could not be fetched",
                        self.issuer
                    )))
                }
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let uri = match &self.jwks_uri {
            Some(u) => u.clone(),
            None => {
                let url = format!("{}/.well-known/openid-configuration", self.issuer);
                let doc = self.fetcher.get_json(&url).await?;
                // OpenID Connect Discovery 1.0 §4.3: the document must name
                // exactly the issuer it was fetched for.
                let named = doc
                    .get("issuer")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if named.trim_end_matches('/') != self.issuer {
                    return Err(format!(
                        "discovery names issuer {named:?}, not {:?}",
                        self.issuer
                    ));
                }
                doc.get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or("discovery has no jwks_uri")?
                    .to_owned()
            }
        };
        KeySet::from_jwks(&self.fetcher.get_json(&uri).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_signature_keys_of_allowed_kinds_are_kept() {
        let set = KeySet::from_jwks(&json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "RSA", "use": "enc", "kid": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "alg": "RS384", "kid": "rs384", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "good", "n": "sXch", "e": "AQAB"},
            {"kty": "OKP", "crv": "X25519", "kid": "x", "x": "AAAA"},
        ]}))
        .unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.find(Some("good"), Algorithm::RS256).is_some());
        assert!(set.find(Some("good"), Algorithm::ES256).is_none());
        assert!(set.find(Some("hmac"), Algorithm::RS256).is_none());
        // Without a kid, the only RS256 key is used.
        assert!(set.find(None, Algorithm::RS256).is_some());
    }

    /// Serves discovery and key-set documents from memory and counts the
    /// fetches, so the cache's rules are tested without a network.
    #[derive(Default)]
    struct Documents {
        docs: std::sync::Mutex<std::collections::HashMap<String, Value>>,
        fetches: std::sync::atomic::AtomicUsize,
    }

    impl Documents {
        fn put(&self, url: &str, doc: Value) {
            self.docs.lock().unwrap().insert(url.to_owned(), doc);
        }
        fn fetches(&self) -> usize {
            self.fetches.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl DocumentFetcher for Documents {
        async fn get_json(&self, url: &str) -> Result<Value, String> {
            self.fetches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.docs
                .lock()
                .unwrap()
                .get(url)
                .cloned()
                .ok_or_else(|| format!("GET {url}: HTTP 404"))
        }
    }

    fn rsa_key(kid: &str) -> Value {
        json!({"kty": "RSA", "kid": kid, "n": "sXch", "e": "AQAB"})
    }

    fn idp(keys: &[&str]) -> Arc<Documents> {
        let docs = Arc::new(Documents::default());
        docs.put(
            "https://idp.test/.well-known/openid-configuration",
            json!({"issuer": "https://idp.test", "jwks_uri": "https://idp.test/jwks"}),
        );
        let keys: Vec<Value> = keys.iter().map(|k| rsa_key(k)).collect();
        docs.put("https://idp.test/jwks", json!({ "keys": keys }));
        docs
    }

    #[tokio::test]
    async fn discovery_then_keys_and_an_unknown_kid_refetches() {
        let docs = idp(&["k1"]);
        let refresh = Refresh {
            max_age: Duration::from_secs(3600),
            min_interval: Duration::ZERO,
        };
        let keys = RemoteKeys::with_fetcher("https://idp.test/", None, refresh, docs.clone());
        let set = keys.keys_for(Some("k1"), Algorithm::RS256).await.unwrap();
        assert!(set.find(Some("k1"), Algorithm::RS256).is_some());
        assert_eq!(docs.fetches(), 2, "discovery, then the key set");
        keys.keys_for(Some("k1"), Algorithm::RS256).await.unwrap();
        assert_eq!(docs.fetches(), 2, "a cached key costs no fetch");
        // The issuer rotates: the new kid is fetched.
        docs.put(
            "https://idp.test/jwks",
            json!({"keys": [rsa_key("k1"), rsa_key("k2")]}),
        );
        let set = keys.keys_for(Some("k2"), Algorithm::RS256).await.unwrap();
        assert!(set.find(Some("k2"), Algorithm::RS256).is_some());
        assert_eq!(docs.fetches(), 4);
    }

    #[tokio::test]
    async fn unknown_kids_fetch_at_most_once_per_interval() {
        let docs = idp(&["k1"]);
        let refresh = Refresh {
            max_age: Duration::from_secs(3600),
            min_interval: Duration::from_secs(3600),
        };
        let keys = RemoteKeys::with_fetcher("https://idp.test", None, refresh, docs.clone());
        keys.keys_for(Some("k1"), Algorithm::RS256).await.unwrap();
        assert_eq!(docs.fetches(), 2);
        for kid in ["forged-1", "forged-2", "forged-3"] {
            let set = keys.keys_for(Some(kid), Algorithm::RS256).await.unwrap();
            assert!(set.find(Some(kid), Algorithm::RS256).is_none());
        }
        assert_eq!(docs.fetches(), 2, "a stream of forged kids fetches nothing");
    }

    #[tokio::test]
    async fn discovery_must_name_the_issuer_and_an_unreachable_issuer_is_unavailable() {
        let docs = Arc::new(Documents::default());
        docs.put(
            "https://idp.test/.well-known/openid-configuration",
            json!({"issuer": "https://evil.test", "jwks_uri": "https://evil.test/jwks"}),
        );
        let keys =
            RemoteKeys::with_fetcher("https://idp.test", None, Refresh::default(), docs.clone());
        let e = keys
            .keys_for(Some("k1"), Algorithm::RS256)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the signing keys of https://idp.test could not be fetched"
        );
        assert_eq!(
            docs.fetches(),
            1,
            "the key set of another issuer is never fetched"
        );
    }
}
