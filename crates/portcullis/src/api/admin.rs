//! Administration: who am I, and revocation.

use super::openapi::ErrorBody;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use portcullis_core::identity::now_secs;
use portcullis_core::Action;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{authenticate, authorize, ApiError, ApiState};

/// `GET /api/whoami`: the identity the bearer token proves.
#[utoipa::path(get, path = "/api/whoami", tag = "identity", security(("bearer" = [])),
    responses((status = 200, description = "The identity the token proves: user, groups, actor, method, expires_at", body = serde_json::Value), (status = 401, description = "No valid token", body = ErrorBody)))]
pub async fn whoami(
    State(s): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let id = authenticate(&s, &headers).await?;
    Ok(Json(json!({
        "user": id.user,
        "groups": id.groups,
        "actor": id.actor,
        "method": id.method,
        "expires_at": id.credential.expires_at,
        "description": id.describe(),
    })))
}

/// The body of `POST /api/revoke`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// The user or agent.
    user: String,
    /// Lift an earlier revocation instead.
    #[serde(default)]
    lift: bool,
}

/// `POST /api/revoke`: ends the user's live sessions (including those where
/// it acts for someone) and refuses every credential of theirs issued until
/// now. Needs `manage_sessions` on the gateway.
#[utoipa::path(post, path = "/api/revoke", tag = "identity", security(("bearer" = [])),
    request_body = RevokeRequest,
    responses((status = 200, description = "Revoked (or lifted); live sessions ended (`manage_sessions`)", body = serde_json::Value),
              (status = 400, description = "No user", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Denied by policy", body = ErrorBody)))]
pub async fn revoke(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(req): Json<RevokeRequest>,
) -> Result<Json<Value>, ApiError> {
    let admin = authorize(&s, &headers, peer, Action::MANAGE_SESSIONS).await?;
    let user = req.user.trim();
    if user.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "user must not be empty".into(),
        ));
    }
    let store_error = |e: portcullis_core::StoreError| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the revocation could not be stored: {e}"),
        )
    };
    if req.lift {
        let existed = s
            .revocation_store
            .delete_revocation(user)
            .await
            .map_err(store_error)?;
        s.auth.revocations().lift(user);
        tracing::warn!(user, by = %admin.describe(), "revocation lifted");
        let note =
            json!({ "user": user, "by": admin.user, "actor": admin.actor, "existed": existed });
        let _ = s
            .core
            .recorder
            .record(portcullis_core::AuditEvent::note("revocation_lifted", note))
            .await;
        return Ok(Json(json!({ "user": user, "lifted": existed })));
    }
    // Stored first: a revocation the gateway would forget on restart is not
    // reported as done.
    let at = now_secs();
    s.revocation_store
        .save_revocation(user, at, &admin.describe())
        .await
        .map_err(store_error)?;
    s.auth.revocations().revoke(user, at);
    let ended = s.core.sessions.kill_user(user);
    metrics::counter!("portcullis_revocations_total").increment(1);
    tracing::warn!(user, by = %admin.describe(), sessions_ended = ended, "access revoked");
    let note = json!({ "user": user, "revoked_at": at, "by": admin.user, "actor": admin.actor, "sessions_ended": ended });
    let _ = s
        .core
        .recorder
        .record(portcullis_core::AuditEvent::note("revocation", note))
        .await;
    Ok(Json(
        json!({ "user": user, "revoked_at": at, "sessions_ended": ended }),
    ))
}
