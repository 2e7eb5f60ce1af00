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
    let admin_password =
        super::read_password(key, "grant_admin_", &c.grant_admin_password_env, &file)?;
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
    Ok(Some(portcullis_proto_pg::GrantProvisioning {
        admin_user: admin_user.clone(),
        admin_password,
        roles: c.grant_roles.clone(),
        owned,
    }))
}
