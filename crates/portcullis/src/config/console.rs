//! `[console]`: the web console served with the API.

use serde::Deserialize;

use portcullis_core::secret::Secret;

/// `[console]`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console at `/` of the API listener (default true).
    pub enabled: Option<bool>,
    /// The console's client at the `[login]` issuer (default: the CLI's
    /// `login.client_id`); its redirect URI is `<url>/login/callback`.
    pub client_id: Option<String>,
    /// The environment variable holding that client's secret, for a
    /// confidential client.
    pub client_secret_env: Option<String>,
    /// The console's address as browsers reach it (`https://gw.example:8443`),
    /// for the redirect URI; default: the scheme and Host of the request.
    pub url: Option<String>,
}

/// `[console]`, validated.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Whether the console is served.
    pub enabled: bool,
    /// The OIDC client id, if set.
    pub client_id: Option<String>,
    /// Its secret, if it has one.
    pub client_secret: Option<Secret<String>>,
    /// The console's public URL.
    pub url: Option<String>,
}

/// Validates `[console]`; `Err((key, message))`.
pub fn validate(raw: ConsoleConfig) -> Result<ConsoleSettings, (String, String)> {
    let client_secret = match raw.client_secret_env {
        Some(var) => match std::env::var(&var) {
            Ok(v) if !v.is_empty() => Some(Secret::new(v)),
            _ => {
                return Err((
                    "console.client_secret_env".into(),
                    format!("the environment variable {var} is not set"),
                ))
            }
        },
        None => None,
    };
    if let Some(url) = &raw.url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err((
                "console.url".into(),
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
    }
    Ok(ConsoleSettings {
        enabled: raw.enabled.unwrap_or(true),
        client_id: raw.client_id,
        client_secret,
        url: raw.url.map(|u| u.trim_end_matches('/').to_owned()),
    })
}
