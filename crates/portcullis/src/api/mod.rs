//! The REST API: `/healthz`, `/metrics`, the session views, revocation,
//! token exchange and the gateway's key set. Each authenticated call is
//! decided by the same Cedar policies as everything else.

mod admin;
pub(crate) mod grants;
mod oauth;
pub mod openapi;
pub(crate) mod recordings;
pub(crate) mod reviews;
pub mod server;
pub mod ssh;

use openapi::ErrorBody;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use portcullis_core::audit::{AuditStore, SessionQuery};
use portcullis_core::identity::RevocationStore;
use portcullis_core::policy::RequestFacts;
use portcullis_core::{Action, Core, GatewayAuthenticator, Identity, Resource};
use serde_json::json;
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
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

/// The API's routes, with `/api/openapi.json` describing them.
pub fn router(state: ApiState) -> Router {
    let (router, _) = routes().split_for_parts();
    router.with_state(state)
}

/// Every route of the API, each registered with its handler's OpenAPI
/// annotation, so that the document and the router are one list.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi::serve))
        .routes(routes!(list_sessions))
        .routes(routes!(show_session))
        .routes(routes!(recordings::show))
        .routes(routes!(admin::whoami))
        .routes(routes!(ssh::certificate))
        .routes(routes!(admin::revoke))
        .routes(routes!(grants::list, grants::request))
        .routes(routes!(grants::revoke))
        .routes(routes!(reviews::list))
        .routes(routes!(reviews::show))
        .routes(routes!(reviews::approve))
        .routes(routes!(reviews::deny))
        .routes(routes!(oauth::login_info))
        .routes(routes!(oauth::token))
        .routes(routes!(oauth::jwks))
}

/// An API failure as a status and a one-line JSON error.
pub struct ApiError(pub(crate) StatusCode, pub(crate) String);

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

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Serving, and the audit store takes records", body = String),
              (status = 503, description = "The audit store is unavailable", body = String)))]
async fn healthz(State(s): State<ApiState>) -> Response {
    if s.core.recorder.healthy() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "audit store unavailable\n").into_response()
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", body = String)))]
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
    permit(s, &identity, peer, action, "api").await?;
    Ok(identity)
}

/// Decides `action` on the gateway for `identity`, and records the call,
/// allowed or not: every call an identity makes, through the API or the
/// console (`via`), is evidence.
pub(crate) async fn permit(
    s: &ApiState,
    identity: &Identity,
    peer: SocketAddr,
    action: Action,
    via: &'static str,
) -> Result<(), ApiError> {
    let facts = RequestFacts {
        protocol: "api",
        client_address: peer.ip().to_string(),
        ..Default::default()
    };
    let v = s
        .core
        .policy
        .decide(identity, action, &Resource::Gateway, &facts);
    let outcome = if v.allowed { "allow" } else { "deny" };
    metrics::counter!("portcullis_decisions_total", "action" => action.as_str(), "outcome" => outcome).increment(1);
    let note = json!({
        "action": action.as_str(),
        "user": identity.user,
        "actor": identity.actor,
        "client_address": peer.ip().to_string(),
        "via": via,
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
                "{} {} denied for {} ({})",
                action.as_str(),
                if via == "api" {
                    "on the API"
                } else {
                    "in the console"
                },
                identity.describe(),
                v.reason()
            ),
        ));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/sessions", tag = "sessions", security(("bearer" = [])),
    params(SessionQuery),
    responses((status = 200, description = "Sessions, newest first (`view_sessions`)", body = [portcullis_core::audit::SessionSummary]),
              (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Denied by policy", body = ErrorBody)))]
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

#[utoipa::path(get, path = "/api/sessions/{id}", tag = "sessions", security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id (UUID)")),
    responses((status = 200, description = "The session and its commands (`view_sessions`); each command also carries its protocol's fields (SQL: params, rows; SSH: exit_status, recording)", body = portcullis_core::audit::SessionDetail),
              (status = 400, description = "Not a session id", body = ErrorBody),
              (status = 404, description = "No such session", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Denied by policy", body = ErrorBody)))]
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
