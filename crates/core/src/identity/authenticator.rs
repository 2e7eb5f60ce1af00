//! The gateway's authenticator: routes a credential to the verifier for
//! its kind (static token, the gateway's own token, or a trusted OIDC
//! issuer's), then applies revocations.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use super::clock::{Clock, SystemClock};
use super::jwks::{Refresh, RemoteKeys};
use super::jwt::{self, Expectations, Unverified};
use super::{
    AuthError, Authenticator, Identity, OidcIssuer, Revocations, StaticTokens, TokenIssuer,
};

/// Every way this gateway accepts a credential.
pub struct GatewayAuthenticator {
    statics: RwLock<Arc<StaticTokens>>,
    issuers: Vec<OidcIssuer>,
    keys: HashMap<String, Arc<RemoteKeys>>,
    own: Option<Arc<TokenIssuer>>,
    revocations: Arc<Revocations>,
    clock: Arc<dyn Clock>,
}

impl GatewayAuthenticator {
    /// An authenticator over the configured credentials.
    pub fn new(
        statics: StaticTokens,
        issuers: Vec<OidcIssuer>,
        own: Option<Arc<TokenIssuer>>,
        refresh: Refresh,
    ) -> Self {
        let mut keys = HashMap::new();
        for i in &issuers {
            keys.entry(i.issuer.clone()).or_insert_with(|| {
                Arc::new(RemoteKeys::new(&i.issuer, i.jwks_uri.clone(), refresh))
            });
        }
        Self {
            statics: RwLock::new(Arc::new(statics)),
            issuers,
            keys,
            own,
            revocations: Arc::new(Revocations::default()),
            clock: Arc::new(SystemClock),
        }
    }

    /// Reads the time from `clock` (tests move a [`super::ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Revocations in force (shared with the API that edits them).
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// The gateway's own token issuer, if token exchange is on.
    pub fn token_issuer(&self) -> Option<&Arc<TokenIssuer>> {
        self.own.as_ref()
    }

    /// Replaces the static tokens (config reload); returns the ids of
    /// tokens that are gone, so their live sessions can be ended.
    pub fn replace_static(&self, tokens: StaticTokens) -> Vec<String> {
        let mut slot = self.statics.write().unwrap_or_else(|p| p.into_inner());
        let kept = tokens.ids();
        let gone = slot
            .ids()
            .into_iter()
            .filter(|id| !kept.contains(id))
            .collect();
        *slot = Arc::new(tokens);
        gone
    }

    /// Installs an issuer's key set as if just fetched; false if the
    /// issuer is not configured.
    pub fn preload_keys(&self, issuer: &str, set: super::jwks::KeySet) -> bool {
        self.keys.get(issuer).map(|k| k.preload(set)).is_some()
    }

    /// Fetches every issuer's keys now, so the first login does not wait.
    pub async fn warm_up(&self) {
        for k in self.keys.values() {
            k.prefetch().await;
        }
    }

    /// Verifies without the revocation check.
    async fn verify(&self, credential: &str) -> Result<Identity, AuthError> {
        if credential.is_empty() {
            return Err(AuthError::Missing);
        }
        if !jwt::looks_like_jwt(credential) {
            let statics = self
                .statics
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return statics.verify(credential);
        }
        let t = jwt::peek(credential)?;
        if let Some(own) = self.own.as_ref().filter(|o| o.issuer() == t.issuer) {
            return own.verify_at(&t, self.clock.now_secs());
        }
        self.verify_oidc(&t).await
    }

    async fn verify_oidc(&self, t: &Unverified<'_>) -> Result<Identity, AuthError> {
        let shown: String = t.issuer.chars().take(120).collect();
        let Some(keys) = self.keys.get(&t.issuer) else {
            return Err(AuthError::Rejected(format!(
                "the token's issuer {shown:?} is not trusted"
            )));
        };
        // One issuer may be configured several times (people through the
        // CLI's audience, agents through another); the audience picks.
        let entry = self
            .issuers
            .iter()
            .find(|i| i.issuer == t.issuer && i.accepts_audience(&t.audiences))
            .ok_or_else(|| {
                let expected: Vec<&str> = self
                    .issuers
                    .iter()
                    .filter(|i| i.issuer == t.issuer)
                    .flat_map(|i| i.audiences.iter().map(String::as_str))
                    .collect();
                AuthError::Rejected(format!(
                    "the token's audience is not accepted (expected {})",
                    expected.join(" or ")
                ))
            })?;
        let kid = t.header.kid.as_deref();
        let set = keys.keys_for(kid, t.alg).await?;
        let key = set.find(kid, t.alg).ok_or_else(|| {
            AuthError::Rejected(format!(
                "the token's signing key ({} {}) is not published by its issuer",
                t.header.alg,
                kid.map(|k| format!("kid {:?}", k.chars().take(64).collect::<String>()))
                    .unwrap_or_else(|| "without a kid".into())
            ))
        })?;
        let claims = jwt::verify(
            t,
            key,
            &Expectations {
                issuer: &entry.issuer,
                audiences: &entry.audiences,
                leeway_secs: entry.leeway_secs,
                now: self.clock.now_secs(),
            },
        )?;
        entry.identity(&claims)
    }
}

#[async_trait]
impl Authenticator for GatewayAuthenticator {
    async fn authenticate(&self, credential: &str) -> Result<Identity, AuthError> {
        let id = self.verify(credential).await?;
        self.revocations.check(&id)?;
        Ok(id)
    }

    fn still_valid(&self, identity: &Identity) -> Result<(), AuthError> {
        self.revocations.check(identity)?;
        let statics = self
            .statics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let own = identity
            .credential
            .id
            .iter()
            .filter(|id| id.starts_with("static:"));
        for id in own.chain(&identity.credential.sources) {
            if !statics.contains(id) {
                return Err(AuthError::Rejected(format!(
                    "the static token {id} it rests on was removed or changed"
                )));
            }
        }
        Ok(())
    }
}
