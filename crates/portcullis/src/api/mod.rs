//! The REST API: `/healthz`, `/metrics`, the session views, revocation,
//! token exchange and the gateway's key set. Each authenticated call is
//! decided by the same Cedar policies as everything else.

mod admin;
mod grants;
mod oauth;
mod recordings;
mod reviews;
pub mod server;
pub mod ssh;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use portcullis_core::audit::{AuditStore, SessionQuery};
use portcullis_core::identity::RevocationStore;
use portcullis_core::policy::RequestFacts;
use portcullis_core::{Action, Core, GatewayAuthenticator, Identity, Resource};
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Core services.
    pub core: Core,
    /// The audit store, for reads.
    pub store: Arc<dyn AuditStore>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The authenticator, for revocations and the gateway's own tokens.
    pub auth: Arc<GatewayAuthenticator>,
    /// Where revocations persist.
    pub revocation_store: Arc<dyn RevocationStore>,
    /// What `portcullis login` needs, if login is configured.
    pub login: Option<crate::config::identity::LoginInfo>,
    /// Where SSH recordings are kept.
    pub recordings_dir: std::path::PathBuf,
    /// The SSH user CA, when the gateway serves SSH.
    pub ssh: Option<ssh::SshIssuer>,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/sessions", get(list_sessions))
        .route("/api/sessions/{id}", get(show_session))
        .route("/api/sessions/{id}/recordings/{seq}", get(recordings::show))
        .route("/api/whoami", get(admin::whoami))
        .route("/api/ssh/certificate", post(ssh::certificate))
        .route("/api/revoke", post(admin::revoke))
        .route("/api/grants", get(grants::list).post(grants::request))
        .route("/api/grants/{id}/revoke", post(grants::revoke))
        .route("/api/reviews", get(reviews::list))
        .route("/api/reviews/{id}", get(reviews::show))
        .route("/api/reviews/{id}/approve", post(reviews::approve))
        .route("/api/reviews/{id}/deny", post(reviews::deny))
        .route("/api/login", get(oauth::login_info))
        .route("/oauth/token", post(oauth::token))
        .route("/.well-known/jwks.json", get(oauth::jwks))
        .with_state(state)
}

/// An API failure as a status and a one-line JSON error.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

async fn healthz(State(s): State<ApiState>) -> Response {
    if s.core.recorder.healthy() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "audit store unavailable\n").into_response()
    }
}

async fn metrics(State(s): State<ApiState>) -> String {
    s.metrics.render()
}

/// Authenticates the bearer token (without deciding anything).
async fn authenticate(s: &ApiState, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required".into(),
            )
        })?;
    s.core
        .authenticator
        .authenticate(token.trim())
        .await
        .map_err(|e| {
            metrics::counter!("portcullis_auth_failures_total", "reason" => e.label()).increment(1);
            ApiError(
                StatusCode::UNAUTHORIZED,
                format!("token authentication failed: {e}"),
            )
        })
}

/// Authenticates the bearer token and decides `action` on the gateway.
async fn authorize(
    s: &ApiState,
    headers: &HeaderMap,
    peer: SocketAddr,
    action: Action,
) -> Result<Identity, ApiError> {
    let identity = authenticate(s, headers).await?;
    let facts = RequestFacts {
        protocol: "api",
        client_address: peer.ip().to_string(),
        ..Default::default()
    };
    let v = s
        .core
        .policy
        .decide(&identity, action, &Resource::Gateway, &facts);
    let outcome = if v.allowed { "allow" } else { "deny" };
    metrics::counter!("portcullis_decisions_total", "action" => action.as_str(), "outcome" => outcome).increment(1);
    // Every call an identity makes on the API is evidence, allowed or not.
    let note = json!({
        "action": action.as_str(),
        "user": identity.user,
        "actor": identity.actor,
        "client_address": peer.ip().to_string(),
        "allowed": v.allowed,
        "policies": v.policies,
    });
    let _ = s
        .core
        .recorder
        .record(portcullis_core::AuditEvent::note("api_call", note))
        .await;
    if !v.allowed {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "{} on the API denied for {} ({})",
                action.as_str(),
                identity.describe(),
                v.reason()
            ),
        ));
    }
    Ok(identity)
}

async fn list_sessions(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<SessionQuery>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, peer, Action::VIEW_SESSIONS).await?;
    let list = s
        .store
        .list_sessions(&q)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(list).into_response())
}

async fn show_session(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, peer, Action::VIEW_SESSIONS).await?;
    let id = Uuid::parse_str(&id).map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a session id"),
        )
    })?;
    match s.store.session(id).await {
        Ok(Some(d)) => Ok(Json(d).into_response()),
        Ok(None) => Err(ApiError(StatusCode::NOT_FOUND, format!("no session {id}"))),
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}
