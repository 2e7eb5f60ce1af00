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
