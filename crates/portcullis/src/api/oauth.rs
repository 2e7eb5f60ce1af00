//! OAuth endpoints: token exchange (RFC 8693) at `/oauth/token`, the
//! gateway's key set, and what `portcullis login` needs to know.

use super::openapi::ErrorBody;
use std::collections::HashMap;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use portcullis_core::identity::exchange::{
    self, ACCEPTED_TOKEN_TYPES, GRANT_TYPE, ISSUED_TOKEN_TYPE,
};
use portcullis_core::Identity;
use serde_json::json;

use super::{ApiError, ApiState};

/// An OAuth error response (RFC 6749 §5.2).
fn oauth_error(code: &str, description: impl Into<String>) -> Response {
    let mut r = (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": code, "error_description": description.into() })),
    )
        .into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

/// `GET /.well-known/jwks.json`: the key gateway tokens are signed with.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "identity",
    responses((status = 200, description = "The public keys of the gateway's own tokens", body = serde_json::Value),
              (status = 404, description = "Token exchange is off", body = ErrorBody)))]
pub async fn jwks(State(s): State<ApiState>) -> Response {
    match s.auth.token_issuer() {
        Some(i) => Json(i.jwks()).into_response(),
        None => ApiError(StatusCode::NOT_FOUND, "token exchange is off".into()).into_response(),
    }
}

/// The form of `POST /oauth/token` (RFC 8693), for the document only: the
/// handler reads the form as a map, to name what is missing or wrong.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TokenExchangeForm {
    /// `urn:ietf:params:oauth:grant-type:token-exchange`.
    grant_type: String,
    /// The token of the user acted for.
    subject_token: String,
    /// Its type (`urn:ietf:params:oauth:token-type:id_token`, `…:jwt`, `…:access_token`).
    subject_token_type: String,
    /// The agent's own token, when it acts for the subject.
    actor_token: Option<String>,
    /// Its type.
    actor_token_type: Option<String>,
    /// `urn:portcullis` or the gateway's issuer.
    audience: Option<String>,
    /// `urn:ietf:params:oauth:token-type:jwt` or `…:access_token`.
    requested_token_type: Option<String>,
}

/// `GET /api/login`: the issuer and client `portcullis login` uses.
#[utoipa::path(get, path = "/api/login", tag = "identity",
    responses((status = 200, description = "The issuer and client `portcullis login` uses", body = serde_json::Value),
              (status = 404, description = "Login is not configured", body = ErrorBody)))]
pub async fn login_info(State(s): State<ApiState>) -> Response {
    match &s.login {
        Some(l) => Json(l).into_response(),
        None => ApiError(
            StatusCode::NOT_FOUND,
            "login is not configured on this gateway (see [login] in the config)".into(),
        )
        .into_response(),
    }
}

/// Verifies one presented token of a declared type.
async fn verify(
    s: &ApiState,
    form: &HashMap<String, String>,
    name: &str,
) -> Result<Option<Identity>, Response> {
    let Some(token) = form.get(name).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let type_key = format!("{name}_type");
    match form.get(&type_key).map(String::as_str) {
        Some(t) if ACCEPTED_TOKEN_TYPES.contains(&t) => {}
        Some(t) => {
            return Err(oauth_error(
                "invalid_request",
                format!(
                    "{type_key} {t:?} is not supported (use urn:ietf:params:oauth:token-type:jwt)"
                ),
            ))
        }
        None => {
            return Err(oauth_error(
                "invalid_request",
                format!("{type_key} is required"),
            ))
        }
    }
    s.core
        .authenticator
        .authenticate(token)
        .await
        .map(Some)
        .map_err(|e| {
            metrics::counter!("portcullis_auth_failures_total", "reason" => e.label()).increment(1);
            oauth_error("invalid_grant", format!("{name}: {e}"))
        })
}

/// `POST /oauth/token`: token exchange. The subject token is the user's;
/// an optional actor token is the agent's own. The result is a short-lived
/// gateway token whose `act` claim names the agent.
#[utoipa::path(post, path = "/oauth/token", tag = "identity",
    request_body(content = TokenExchangeForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "A gateway token (RFC 8693 token exchange): access_token, issued_token_type, token_type, expires_in", body = serde_json::Value),
              (status = 400, description = "An OAuth error: error, error_description", body = serde_json::Value)))]
pub async fn token(
    State(s): State<ApiState>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(issuer) = s.auth.token_issuer().cloned() else {
        return oauth_error("unsupported_grant_type", "token exchange is off");
    };
    match form.get("grant_type").map(String::as_str) {
        Some(GRANT_TYPE) => {}
        Some(other) => {
            return oauth_error(
                "unsupported_grant_type",
                format!("grant_type {other:?} is not supported (only {GRANT_TYPE})"),
            )
        }
        None => return oauth_error("invalid_request", "grant_type is required"),
    }
    if let Some(t) = form.get("requested_token_type") {
        if t != ISSUED_TOKEN_TYPE && t != "urn:ietf:params:oauth:token-type:access_token" {
            return oauth_error(
                "invalid_request",
                format!("requested_token_type {t:?} cannot be issued"),
            );
        }
    }
    if let Some(aud) = form.get("audience") {
        if aud != portcullis_core::identity::gateway_token::AUDIENCE && aud != issuer.issuer() {
            return oauth_error(
                "invalid_target",
                format!("tokens for audience {aud:?} are not issued here"),
            );
        }
    }
    let subject = match verify(&s, &form, "subject_token").await {
        Ok(Some(id)) => id,
        Ok(None) => return oauth_error("invalid_request", "subject_token is required"),
        Err(r) => return r,
    };
    let actor = match verify(&s, &form, "actor_token").await {
        Ok(a) => a,
        Err(r) => return r,
    };
    match exchange::exchange(&issuer, &subject, actor.as_ref()) {
        Ok(t) => {
            metrics::counter!("portcullis_token_exchanges_total").increment(1);
            tracing::info!(principal = %t.identity.describe(), expires_in = t.expires_in, "gateway token issued");
            let mut r = Json(json!({
                "access_token": t.token,
                "issued_token_type": ISSUED_TOKEN_TYPE,
                "token_type": "Bearer",
                "expires_in": t.expires_in,
            }))
            .into_response();
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            r
        }
        Err(e) => oauth_error("invalid_grant", e.to_string()),
    }
}
