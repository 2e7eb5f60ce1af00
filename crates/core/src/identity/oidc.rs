//! OpenID Connect issuers: which tokens they may sign, and how a verified
//! token's claims become an [`Identity`] (user claim, groups claim, and
//! claim rules for CI workload tokens).

use serde_json::Value;

use super::jwt::{claim_path, int_claim, str_claim, string_list};
use super::{AuthError, Credential, Identity};

/// A trusted issuer and how its tokens map to principals.
#[derive(Debug, Clone)]
pub struct OidcIssuer {
    /// Exact `iss`.
    pub issuer: String,
    /// Accepted `aud` values; a token must carry one.
    pub audiences: Vec<String>,
    /// The claim naming the principal (`email`, `sub`, …).
    pub user_claim: String,
    /// A claim path (`groups`, `realm_access.roles`) listing groups.
    pub groups_claim: Option<String>,
    /// Rules adding groups from other claims (CI workload identity).
    pub rules: Vec<ClaimRule>,
    /// Refuse tokens that match no rule.
    pub require_rule: bool,
    /// Clock skew allowed on `exp`/`nbf`, seconds.
    pub leeway_secs: u64,
    /// Skips discovery when set.
    pub jwks_uri: Option<String>,
}

/// Claims a token must carry for the rule's groups to apply. A value ending
/// in `*` matches by prefix; every other value matches exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRule {
    /// `(claim, pattern)` pairs, all of which must match.
    pub claims: Vec<(String, String)>,
    /// Groups granted when they do.
    pub groups: Vec<String>,
}

impl ClaimRule {
    /// Whether every pattern matches the token's claims.
    pub fn matches(&self, claims: &Value) -> bool {
        self.claims.iter().all(|(name, pattern)| {
            let Some(value) = claim_path(claims, name).and_then(Value::as_str) else {
                return false;
            };
            match pattern.strip_suffix('*') {
                Some(prefix) => value.starts_with(prefix),
                None => value == pattern,
            }
        })
    }
}

impl OidcIssuer {
    /// Whether a token addressed to `audiences` is meant for this entry.
    pub fn accepts_audience(&self, audiences: &[String]) -> bool {
        audiences.iter().any(|a| self.audiences.contains(a))
    }

    /// The identity verified `claims` prove.
    pub fn identity(&self, claims: &Value) -> Result<Identity, AuthError> {
        let user = str_claim(claims, &self.user_claim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                AuthError::Rejected(format!("the token has no {:?} claim", self.user_claim))
            })?;
        // Typed strictly: `"false"` (a string) is not a verified address,
        // and neither is anything else but `true`. Issuers that send no
        // `email_verified` at all are trusted for their addresses.
        if self.user_claim == "email" {
            match claims.get("email_verified") {
                None | Some(Value::Bool(true)) => {}
                Some(Value::Bool(false)) => {
                    return Err(AuthError::Rejected(
                        "the token's email is not verified".into(),
                    ))
                }
                Some(_) => {
                    return Err(AuthError::Rejected(
                        "the token's email_verified claim is not a boolean".into(),
                    ))
                }
            }
        }
        let mut groups = self
            .groups_claim
            .as_deref()
            .map(|path| string_list(claim_path(claims, path)))
            .unwrap_or_default();
        let mut matched = false;
        for rule in self.rules.iter().filter(|r| r.matches(claims)) {
            matched = true;
            groups.extend(rule.groups.iter().cloned());
        }
        if self.require_rule && !matched {
            return Err(AuthError::Rejected(format!(
                "no rule for issuer {} matches this token ({})",
                self.issuer,
                self.rule_claims_summary(claims)
            )));
        }
        groups.sort();
        groups.dedup();
        Ok(Identity {
            user: user.to_owned(),
            groups,
            actor: actor_of(claims)?,
            method: "oidc",
            credential: Credential {
                issued_at: int_claim(claims, "iat"),
                expires_at: int_claim(claims, "exp"),
                id: str_claim(claims, "jti").map(str::to_owned),
                sources: Vec::new(),
            },
        })
    }

    /// The values of the claims the rules look at, so a refusal says what
    /// the token carried (claims are not secrets; the token is).
    fn rule_claims_summary(&self, claims: &Value) -> String {
        let mut names: Vec<&str> = self
            .rules
            .iter()
            .flat_map(|r| r.claims.iter().map(|(n, _)| n.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
            .iter()
            .map(|n| {
                let v = claim_path(claims, n)
                    .and_then(Value::as_str)
                    .unwrap_or("<absent>");
                format!("{n}={v}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The agent named by an RFC 8693 `act` claim. Only the outermost actor is
/// the one acting now; nested `act` records earlier hops and is refused,
/// since policy sees a single actor.
pub fn actor_of(claims: &Value) -> Result<Option<String>, AuthError> {
    let Some(act) = claims.get("act") else {
        return Ok(None);
    };
    let sub = act
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AuthError::Rejected("the token's act claim names no sub".into()))?;
    if act.get("act").is_some() {
        return Err(AuthError::Rejected(
            "the token carries a chain of actors; only one is accepted".into(),
        ));
    }
    Ok(Some(sub.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn github() -> OidcIssuer {
        OidcIssuer {
            issuer: "https://token.actions.githubusercontent.com".into(),
            audiences: vec!["portcullis".into()],
            user_claim: "sub".into(),
            groups_claim: None,
            rules: vec![
                ClaimRule {
                    claims: vec![
                        ("repository".into(), "acme/app".into()),
                        ("ref".into(), "refs/heads/main".into()),
                    ],
                    groups: vec!["app-deployers".into()],
                },
                ClaimRule {
                    claims: vec![("repository".into(), "acme/*".into())],
                    groups: vec!["acme-ci".into()],
                },
            ],
            require_rule: true,
            leeway_secs: 30,
            jwks_uri: None,
        }
    }

    #[test]
    fn workload_rules_grant_groups_and_refuse_strangers() {
        let i = github();
        let main = json!({"sub": "repo:acme/app:ref:refs/heads/main", "repository": "acme/app", "ref": "refs/heads/main"});
        let id = i.identity(&main).unwrap();
        assert_eq!(id.user, "repo:acme/app:ref:refs/heads/main");
        assert_eq!(id.groups, vec!["acme-ci", "app-deployers"]);
        let pr = json!({"sub": "x", "repository": "acme/app", "ref": "refs/pull/1/merge"});
        assert_eq!(i.identity(&pr).unwrap().groups, vec!["acme-ci"]);
        let other = json!({"sub": "x", "repository": "evil/app", "ref": "refs/heads/main"});
        let e = i.identity(&other).unwrap_err().to_string();
        assert!(
            e.contains("no rule") && e.contains("repository=evil/app"),
            "{e}"
        );
    }

    #[test]
    fn nested_groups_and_actor() {
        let mut i = github();
        i.user_claim = "email".into();
        i.groups_claim = Some("realm_access.roles".into());
        i.rules.clear();
        i.require_rule = false;
        let c = json!({"email": "a@x", "realm_access": {"roles": ["b", "a"]}, "act": {"sub": "agent-x"}});
        let id = i.identity(&c).unwrap();
        assert_eq!(id.groups, vec!["a", "b"]);
        assert_eq!(id.describe(), "agent-x acting for a@x");
        let unverified = json!({"email": "a@x", "email_verified": false});
        assert!(i.identity(&unverified).is_err());
        // Typed strictly: a string is not a boolean.
        for loose in [json!("false"), json!("true"), json!(0), json!(null)] {
            let c = json!({"email": "a@x", "email_verified": loose});
            let e = i.identity(&c).unwrap_err().to_string();
            assert!(
                e.contains("not a boolean") || e.contains("not verified"),
                "{e}"
            );
        }
        let verified = json!({"email": "a@x", "email_verified": true});
        assert!(i.identity(&verified).is_ok());
        let chain = json!({"email": "a@x", "act": {"sub": "b", "act": {"sub": "c"}}});
        assert!(i.identity(&chain).is_err());
        assert!(i.identity(&json!({"sub": "s"})).is_err());
    }
}
