//! `[approvals]`: how long reviews wait and stay valid.

use portcullis_core::approvals::rule::parse_duration;
use portcullis_core::approvals::ReviewSettings;
use serde::Deserialize;

/// `[approvals]`, durations written as `90s`, `15m` or `2h`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// How long a client is held when its policy has no `@wait` (120s).
    pub default_wait: Option<String>,
    /// The longest hold any `@wait` gets (1h).
    pub max_wait: Option<String>,
    /// How long a review stays open for decisions (1h).
    pub review_ttl: Option<String>,
    /// How long an approval may wait to be used (10m).
    pub approval_validity: Option<String>,
}

/// The settings, or the offending (key, message).
pub fn validate(raw: ApprovalsConfig) -> Result<ReviewSettings, (String, String)> {
    let defaults = ReviewSettings::default();
    let read = |key: &str, value: Option<String>, default| match value {
        None => Ok(default),
        Some(text) => parse_duration(&text).map_err(|e| (format!("approvals.{key}"), e)),
    };
    let settings = ReviewSettings {
        default_wait: read("default_wait", raw.default_wait, defaults.default_wait)?,
        max_wait: read("max_wait", raw.max_wait, defaults.max_wait)?,
        review_ttl: read("review_ttl", raw.review_ttl, defaults.review_ttl)?,
        approval_validity: read(
            "approval_validity",
            raw.approval_validity,
            defaults.approval_validity,
        )?,
    };
    if settings.default_wait > settings.max_wait {
        return Err((
            "approvals.default_wait".into(),
            "must not be longer than approvals.max_wait".into(),
        ));
    }
    Ok(settings)
}

/// A connection's grant provisioning, or the offending (key, message).
pub fn grant_provisioning(
    key: &str,
    c: &super::ConnectionConfig,
    abs: impl Fn(&std::path::Path) -> std::path::PathBuf,
) -> Result<Option<portcullis_proto_pg::GrantProvisioning>, (String, String)> {
    let Some(admin_user) = &c.grant_admin_user else {
        if !c.grant_roles.is_empty() || c.grant_owned.is_some() {
            return Err((
                format!("{key}.grant_roles"),
                "grant roles need grant_admin_user, the role that provisions them".into(),
            ));
        }
        return Ok(None);
    };
    let file = c.grant_admin_password_file.as_deref().map(&abs);
    let fields = ("grant_admin_password_env", "grant_admin_password_file");
    let admin_password = super::read_secret(key, fields, &c.grant_admin_password_env, &file)?;
    let owned = match c.grant_owned.as_deref().unwrap_or("drop") {
        "drop" => portcullis_proto_pg::OwnedObjects::Drop,
        other => match other.strip_prefix("reassign:") {
            Some(role) if !role.trim().is_empty() => {
                portcullis_proto_pg::OwnedObjects::ReassignTo(role.trim().to_owned())
            }
            _ => {
                return Err((
                    format!("{key}.grant_owned"),
                    format!("{other:?} is not drop or reassign:<role>"),
                ))
            }
        },
    };
    if c.grant_roles.is_empty() {
        return Err((
            format!("{key}.grant_roles"),
            "name the roles grants may give".into(),
        ));
    }
    let role_prefix = c
        .grant_role_prefix
        .clone()
        .unwrap_or_else(|| portcullis_proto_pg::provision::ROLE_PREFIX.to_owned());
    let plain = role_prefix
        .chars()
        .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
    if role_prefix.len() < 3 || role_prefix.len() > 40 || !plain {
        return Err((
            format!("{key}.grant_role_prefix"),
            format!("{role_prefix:?} must be 3 to 40 lowercase letters, digits or _"),
        ));
    }
    Ok(Some(portcullis_proto_pg::GrantProvisioning {
        admin_user: admin_user.clone(),
        admin_password,
        roles: c.grant_roles.clone(),
        owned,
        role_prefix,
    }))
}

/// `[[webhooks]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST (http or https).
    pub url: String,
    /// Environment variable holding the HMAC key deliveries are signed with.
    pub secret_env: Option<String>,
    /// Or a file holding it (first line).
    pub secret_file: Option<std::path::PathBuf>,
    /// `json` (default) or `slack`.
    pub format: Option<String>,
}

/// The webhooks, or the offending (key, message).
pub fn webhooks(
    raw: &[WebhookConfig],
    abs: impl Fn(&std::path::Path) -> std::path::PathBuf,
) -> Result<Vec<crate::webhooks::Webhook>, (String, String)> {
    let mut out = Vec::new();
    for (i, w) in raw.iter().enumerate() {
        let key = format!("webhooks[{i}]");
        if !(w.url.starts_with("https://") || w.url.starts_with("http://")) {
            return Err((
                format!("{key}.url"),
                "must be an http:// or https:// URL".into(),
            ));
        }
        let file = w.secret_file.as_deref().map(&abs);
        let secret = super::read_secret(&key, ("secret_env", "secret_file"), &w.secret_env, &file)?
            .ok_or_else(|| {
                (
                    key.clone(),
                    "set secret_env or secret_file: deliveries are signed with it".into(),
                )
            })?;
        let format = match w.format.as_deref().unwrap_or("json") {
            "json" => crate::webhooks::WebhookFormat::Json,
            "slack" => crate::webhooks::WebhookFormat::Slack,
            other => {
                return Err((
                    format!("{key}.format"),
                    format!("{other:?} is not one of json, slack"),
                ))
            }
        };
        out.push(crate::webhooks::Webhook {
            url: w.url.clone(),
            secret,
            format,
        });
    }
    Ok(out)
}
