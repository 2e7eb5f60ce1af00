//! `[[oidc]]`, `[auth]`, `[token_exchange]` and `[login]`: the identity
//! part of the configuration, and its validation.

use std::collections::BTreeMap;
use std::time::Duration;

use portcullis_core::identity::{ClaimRule, OidcIssuer};
use serde::Deserialize;

/// `[[oidc]]`: a trusted OpenID Connect issuer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Exact issuer URL; discovery is at `/.well-known/openid-configuration`.
    pub issuer: String,
    /// Accepted audience, or a list of them.
    pub audience: OneOrMany,
    /// The claim naming the principal; `sub` by default.
    pub user_claim: Option<String>,
    /// A claim path listing groups; nested paths with dots.
    pub groups_claim: Option<String>,
    /// Refuse tokens matching no `[[oidc.rules]]` entry.
    #[serde(default)]
    pub require_rule: bool,
    /// Clock skew allowed on exp/nbf, seconds (default 30).
    pub leeway_secs: Option<u64>,
    /// Key set URL, skipping discovery.
    pub jwks_uri: Option<String>,
    /// Claim rules granting groups.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `[[oidc.rules]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Claim patterns, all of which must match (`*` suffix: prefix match).
    pub claims: BTreeMap<String, String>,
    /// Groups granted.
    pub groups: Vec<String>,
}

/// `[auth]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Seconds a session may outlive its token (default 0).
    pub session_expiry_grace_secs: u64,
    /// Never refetch an issuer's keys more often than this.
    pub jwks_min_refresh_secs: u64,
    /// Refetch an issuer's keys at least this often.
    pub jwks_max_age_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            session_expiry_grace_secs: 0,
            jwks_min_refresh_secs: 10,
            jwks_max_age_secs: 600,
        }
    }
}

/// `[token_exchange]`: the gateway's own tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenExchangeConfig {
    /// `iss` of gateway tokens.
    pub issuer: String,
    /// Lifetime of gateway tokens, seconds (capped by the input tokens').
    pub ttl_secs: u64,
}

impl Default for TokenExchangeConfig {
    fn default() -> Self {
        Self {
            issuer: "portcullis".into(),
            ttl_secs: 900,
        }
    }
}

/// `[login]`: what `portcullis login` uses.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// The issuer people log in at (one of the `[[oidc]]` issuers).
    pub issuer: String,
    /// The public client the CLI uses there.
    pub client_id: String,
    /// Scopes to request.
    pub scopes: Option<String>,
    /// The PostgreSQL address clients should dial (default: listen.postgres).
    pub postgres: Option<String>,
}

/// What `portcullis login` learns from `GET /api/login`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LoginInfo {
    /// Issuer URL.
    pub issuer: String,
    /// Public client id.
    pub client_id: String,
    /// Scopes.
    pub scopes: String,
    /// PostgreSQL address, if the gateway serves PostgreSQL.
    pub postgres: Option<String>,
    /// Whether the gateway serves SSH (login then certifies a key).
    #[serde(default)]
    pub ssh: bool,
}

/// Identity settings, validated.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// Trusted issuers.
    pub issuers: Vec<OidcIssuer>,
    /// Session grace after token expiry.
    pub expiry_grace: Duration,
    /// JWKS refresh timing.
    pub refresh: portcullis_core::identity::jwks::Refresh,
    /// Gateway token issuer name.
    pub token_issuer: String,
    /// Gateway token lifetime.
    pub token_ttl: Duration,
    /// Login settings, if login is offered.
    pub login: Option<LoginInfo>,
}

/// Whether `url` is an acceptable issuer: https, or http on loopback.
fn check_issuer_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Ok(());
    }
    if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split('/').next().unwrap_or_default();
        let host = host
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            return Ok(());
        }
        return Err(format!(
            "{url:?} must use https (plain http is accepted only for loopback issuers)"
        ));
    }
    Err(format!("{url:?} is not an https URL"))
}

/// Validates the identity sections; errors are `(key, message)`.
pub fn validate(
    oidc: Vec<OidcConfig>,
    auth: AuthConfig,
    exchange: TokenExchangeConfig,
    login: Option<LoginConfig>,
    postgres_listen: Option<&str>,
) -> Result<IdentitySettings, (String, String)> {
    let mut issuers = Vec::new();
    for (i, o) in oidc.into_iter().enumerate() {
        let key = format!("oidc[{i}]");
        check_issuer_url(&o.issuer).map_err(|m| (format!("{key}.issuer"), m))?;
        if let Some(u) = &o.jwks_uri {
            check_issuer_url(u).map_err(|m| (format!("{key}.jwks_uri"), m))?;
        }
        let audiences = o.audience.into_vec();
        if audiences.is_empty() || audiences.iter().any(String::is_empty) {
            return Err((
                format!("{key}.audience"),
                "must name at least one audience".into(),
            ));
        }
        if o.require_rule && o.rules.is_empty() {
            return Err((
                format!("{key}.require_rule"),
                "is set but no [[oidc.rules]] are given".into(),
            ));
        }
        let mut rules = Vec::new();
        for (j, r) in o.rules.into_iter().enumerate() {
            if r.claims.is_empty() {
                return Err((
                    format!("{key}.rules[{j}].claims"),
                    "must name at least one claim".into(),
                ));
            }
            rules.push(ClaimRule {
                claims: r.claims.into_iter().collect(),
                groups: r.groups,
            });
        }
        issuers.push(OidcIssuer {
            issuer: o.issuer.trim_end_matches('/').to_owned(),
            audiences,
            user_claim: o.user_claim.unwrap_or_else(|| "sub".into()),
            groups_claim: o.groups_claim.filter(|g| !g.is_empty()),
            rules,
            require_rule: o.require_rule,
            leeway_secs: o.leeway_secs.unwrap_or(30).min(300),
            jwks_uri: o.jwks_uri,
        });
    }
    if exchange.issuer.is_empty() {
        return Err(("token_exchange.issuer".into(), "must not be empty".into()));
    }
    if issuers.iter().any(|i| i.issuer == exchange.issuer) {
        return Err((
            "token_exchange.issuer".into(),
            "must differ from every [[oidc]] issuer".into(),
        ));
    }
    if !(60..=86_400).contains(&exchange.ttl_secs) {
        return Err((
            "token_exchange.ttl_secs".into(),
            "must be between 60 and 86400".into(),
        ));
    }
    let login = match login {
        None => None,
        Some(l) => {
            let issuer = l.issuer.trim_end_matches('/').to_owned();
            let Some(entry) = issuers.iter().find(|i| i.issuer == issuer) else {
                return Err((
                    "login.issuer".into(),
                    format!("{issuer:?} is not one of the [[oidc]] issuers"),
                ));
            };
            if !issuers
                .iter()
                .any(|i| i.issuer == issuer && i.audiences.contains(&l.client_id))
            {
                return Err((
                    "login.client_id".into(),
                    format!(
                        "ID tokens for {:?} would be refused: add it to the audience of the [[oidc]] entry for {}",
                        l.client_id, entry.issuer
                    ),
                ));
            }
            Some(LoginInfo {
                issuer,
                client_id: l.client_id,
                scopes: l
                    .scopes
                    .unwrap_or_else(|| "openid email groups offline_access".into()),
                postgres: l.postgres.or_else(|| postgres_listen.map(str::to_owned)),
                ssh: false,
            })
        }
    };
    Ok(IdentitySettings {
        issuers,
        expiry_grace: Duration::from_secs(auth.session_expiry_grace_secs),
        refresh: portcullis_core::identity::jwks::Refresh {
            max_age: Duration::from_secs(auth.jwks_max_age_secs.max(1)),
            min_interval: Duration::from_secs(auth.jwks_min_refresh_secs),
        },
        token_issuer: exchange.issuer,
        token_ttl: Duration::from_secs(exchange.ttl_secs),
        login,
    })
}

#[cfg(test)]
mod tests {
    use super::check_issuer_url;

    #[test]
    fn issuers_are_https_or_loopback() {
        assert!(check_issuer_url("https://idp.example.com").is_ok());
        assert!(check_issuer_url("http://127.0.0.1:9000").is_ok());
        assert!(check_issuer_url("http://localhost:9000/realms/x").is_ok());
        assert!(check_issuer_url("http://[::1]:9000").is_ok());
        assert!(check_issuer_url("http://idp.example.com").is_err());
        assert!(check_issuer_url("http://127.0.0.1.evil.com").is_err());
        assert!(check_issuer_url("ftp://x").is_err());
    }
}
