//! Grants: asking for a role for a while, listing, revoking. Approving
//! goes through `/api/reviews/{id}/approve` like any review, under the
//! same rules.

use super::openapi::ErrorBody;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use portcullis_core::approvals::rule::parse_duration;
use portcullis_core::approvals::{statement_hash, GrantTerms, Review, ReviewAsk, ReviewError};
use portcullis_core::policy::{ContextValue, RequestFacts};
use portcullis_core::{Action, Resource};
use serde::Deserialize;

use super::{authenticate, ApiError, ApiState};

/// The body of `POST /api/grants`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// The connection.
    connection: String,
    /// The role asked for.
    role: String,
    /// For how long: `30m`, `2h`.
    duration: String,
    /// Why (a ticket, say).
    #[serde(default)]
    reason: Option<String>,
}

/// Query of `GET /api/grants`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `open` (pending and in force, the default) or `all`.
    #[serde(default)]
    status: Option<String>,
}

/// The longest grant anyone may ask for; longer asks are refused, not cut.
pub const MAX_GRANT: Duration = Duration::from_secs(24 * 3600);

fn bad(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

/// `POST /api/grants`: opens a grant request, decided by `request_grant`
/// on the connection; the permit's `@review` names who approves.
#[utoipa::path(post, path = "/api/grants", tag = "grants", security(("bearer" = [])),
    request_body = GrantRequest,
    responses((status = 201, description = "The grant request, pending review (`request_grant` on the connection)", body = portcullis_core::approvals::Review),
              (status = 400, description = "A bad role or duration", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Denied by policy", body = ErrorBody)))]
pub async fn request(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(req): Json<GrantRequest>,
) -> Result<(StatusCode, Json<Review>), ApiError> {
    let who = authenticate(&s, &headers).await?;
    let role = req.role.trim();
    if role.is_empty()
        || !role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(bad(format!(
            "role {role:?} must be a plain role name (letters, digits, _ and -)"
        )));
    }
    let duration = parse_duration(&req.duration).map_err(bad)?;
    if duration > MAX_GRANT {
        return Err(bad(format!(
            "a grant lasts at most {}h",
            MAX_GRANT.as_secs() / 3600
        )));
    }
    let facts = RequestFacts {
        protocol: "api",
        client_address: peer.ip().to_string(),
        ..Default::default()
    }
    .with("role", ContextValue::Str(role.to_owned()))
    .with(
        "duration_secs",
        ContextValue::Long(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)),
    );
    let resource = Resource::Connection(req.connection.clone());
    let v = s
        .core
        .policy
        .decide(&who, Action::REQUEST_GRANT, &resource, &facts);
    if !v.allowed {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "request_grant of {role} on {} denied for {} ({})",
                req.connection,
                who.describe(),
                v.reason()
            ),
        ));
    }
    if v.reviews.is_empty() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "grants are given only through review, and the permit that allows request_grant ({}) names no @review",
                v.policies.join(", ")
            ),
        ));
    }
    let minutes = duration.as_secs().div_ceil(60);
    let statement = format!("grant role {role} on {} for {minutes} min", req.connection);
    let ask = ReviewAsk {
        identity: who.clone(),
        session_id: None,
        connection: req.connection.clone(),
        protocol: "api".into(),
        action: format!("request_grant on {}", req.connection),
        policies: v.policies.clone(),
        rules: v.reviews,
        hash: statement_hash(&statement, &[]),
        statement,
        params: Vec::new(),
        reason: req.reason.map(|r| r.chars().take(1000).collect()),
    };
    let terms = GrantTerms {
        role: role.to_owned(),
        duration_secs: duration.as_secs(),
    };
    let review = s
        .core
        .reviews
        .request_grant(ask, terms)
        .await
        .map_err(|e| match e {
            ReviewError::TooMany { .. } => ApiError(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
            e => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        })?;
    tracing::info!(grant = review.id, by = %who.describe(), role, connection = %req.connection, "grant requested");
    Ok((StatusCode::CREATED, Json(review)))
}

/// `GET /api/grants`: grant requests and grants the caller may see.
#[utoipa::path(get, path = "/api/grants", tag = "grants", security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "Grants and grant requests the caller may see", body = [portcullis_core::approvals::Review]), (status = 401, description = "No valid token", body = ErrorBody)))]
pub async fn list(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Review>>, ApiError> {
    let who = authenticate(&s, &headers).await?;
    let reviews = super::reviews::listed(&s, q.status.as_deref(), 1000).await?;
    let grants = reviews.into_iter().filter(|r| r.grant.is_some()).collect();
    Ok(Json(super::reviews::visible(&s, &who, peer, grants)))
}

/// `POST /api/grants/{id}/revoke`: ends a grant now (or its pending
/// request). Its grantee, its reviewers and `manage_sessions` may.
#[utoipa::path(post, path = "/api/grants/{id}/revoke", tag = "grants", security(("bearer" = [])),
    params(("id" = u64, Path, description = "Grant (review) id")),
    responses((status = 200, description = "The grant, ended now", body = portcullis_core::approvals::Review),
              (status = 404, description = "No such grant the caller may see", body = ErrorBody),
              (status = 409, description = "Already over", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Denied by policy", body = ErrorBody)))]
pub async fn revoke(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Review>, ApiError> {
    let who = authenticate(&s, &headers).await?;
    let id: u64 = id
        .parse()
        .map_err(|_| bad(format!("{id:?} is not a grant id")))?;
    revoke_as(&s, &who, peer, id).await.map(Json)
}

/// Ends grant `id` as `who` (the API and the console both revoke through
/// here).
pub(crate) async fn revoke_as(
    s: &ApiState,
    who: &portcullis_core::Identity,
    peer: SocketAddr,
    id: u64,
) -> Result<Review, ApiError> {
    let review = s
        .core
        .reviews
        .get(id)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .filter(|r| r.grant.is_some() && super::reviews::may_see(s, who, peer, r))
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no grant {id}")))?;
    if !super::reviews::involved(who, &review)
        && !super::reviews::gateway_allows(s, who, peer, Action::MANAGE_SESSIONS)
    {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "{} may not revoke grant {id}: its grantee, its reviewers and manage_sessions may",
                who.describe()
            ),
        ));
    }
    match s.core.reviews.revoke(id, &who.describe()).await {
        Ok(r) => {
            tracing::warn!(grant = id, by = %who.describe(), "grant revoked");
            Ok(r)
        }
        Err(e @ ReviewError::NotFound(_)) => Err(ApiError(StatusCode::NOT_FOUND, e.to_string())),
        Err(e @ ReviewError::Closed(..)) => Err(ApiError(StatusCode::CONFLICT, e.to_string())),
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}
