//! Reviews: list, show, approve, deny.
//!
//! Deciding needs no API permission of its own: the policy that asked for
//! the review names who decides (`@review("dba")`), and the board refuses
//! anyone outside those groups and anyone party to the request. Seeing a
//! review needs `view_sessions`, or being its requester or one of its
//! possible reviewers.

use super::openapi::ErrorBody;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use portcullis_core::approvals::{Review, ReviewError};
use portcullis_core::policy::RequestFacts;
use portcullis_core::{Action, Identity, Resource};
use serde::Deserialize;

use super::{authenticate, ApiError, ApiState};

/// Query of `GET /api/reviews`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `open` (pending and approved, the default) or `all`.
    #[serde(default)]
    status: Option<String>,
    /// At most this many (with `all`; default 50).
    #[serde(default)]
    limit: Option<u32>,
}

/// The body of approve and deny.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Why, in the reviewer's words.
    #[serde(default)]
    reason: Option<String>,
}

/// Whether `who` asked for `review` (its requester, through any agent, or
/// the agent it came through, acting as itself), or may decide it. An
/// agent acting for someone else sees only that someone's.
pub(crate) fn involved(who: &Identity, review: &Review) -> bool {
    let requester = who.user == review.requester;
    let its_agent = who.actor.is_none() && review.actor.as_deref() == Some(who.user.as_str());
    requester || its_agent || review.rules.iter().any(|r| r.admits(&who.groups))
}

/// Whether `who` may see `review`.
pub(crate) fn may_see(s: &ApiState, who: &Identity, peer: SocketAddr, review: &Review) -> bool {
    involved(who, review) || gateway_allows(s, who, peer, Action::VIEW_SESSIONS)
}

/// Whether policy allows `who` `action` on the gateway.
pub(crate) fn gateway_allows(
    s: &ApiState,
    who: &Identity,
    peer: SocketAddr,
    action: Action,
) -> bool {
    let facts = RequestFacts {
        protocol: "api",
        client_address: peer.ip().to_string(),
        ..Default::default()
    };
    s.core
        .policy
        .decide(who, action, &Resource::Gateway, &facts)
        .allowed
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// `GET /api/reviews`.
#[utoipa::path(get, path = "/api/reviews", tag = "reviews", security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "Reviews the caller may see: as requester, possible reviewer, or with `view_sessions`", body = [Review]),
              (status = 400, description = "A bad status", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody)))]
pub async fn list(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Review>>, ApiError> {
    let who = authenticate(&s, &headers).await?;
    let reviews = listed(&s, q.status.as_deref(), q.limit.unwrap_or(50)).await?;
    Ok(Json(visible(&s, &who, peer, reviews)))
}

/// Open reviews (`status` absent or `open`), or the newest `limit` of all.
pub(crate) async fn listed(
    s: &ApiState,
    status: Option<&str>,
    limit: u32,
) -> Result<Vec<Review>, ApiError> {
    match status.unwrap_or("open") {
        "open" => Ok(s.core.reviews.open()),
        "all" => s
            .core
            .reviews
            .history(limit.min(1000))
            .await
            .map_err(internal),
        other => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("status {other:?} is not one of open, all"),
        )),
    }
}

/// The reviews of `reviews` that `who` may see.
pub(crate) fn visible(
    s: &ApiState,
    who: &Identity,
    peer: SocketAddr,
    reviews: Vec<Review>,
) -> Vec<Review> {
    let all = gateway_allows(s, who, peer, Action::VIEW_SESSIONS);
    reviews
        .into_iter()
        .filter(|r| all || involved(who, r))
        .collect()
}

fn review_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a review id"),
        )
    })
}

/// `GET /api/reviews/{id}`.
#[utoipa::path(get, path = "/api/reviews/{id}", tag = "reviews", security(("bearer" = [])),
    params(("id" = u64, Path, description = "Review id")),
    responses((status = 200, description = "The review", body = Review),
              (status = 404, description = "No such review the caller may see", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody)))]
pub async fn show(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Review>, ApiError> {
    let who = authenticate(&s, &headers).await?;
    let id = review_id(&id)?;
    match s.core.reviews.get(id).await.map_err(internal)? {
        Some(r) if may_see(&s, &who, peer, &r) => Ok(Json(r)),
        // Unseen and absent look alike.
        _ => Err(ApiError(StatusCode::NOT_FOUND, format!("no review {id}"))),
    }
}

/// `POST /api/reviews/{id}/approve`.
#[utoipa::path(post, path = "/api/reviews/{id}/approve", tag = "reviews", security(("bearer" = [])),
    params(("id" = u64, Path, description = "Review id")),
    request_body(content = Option<DecisionBody>, description = "Why, in the reviewer's words"),
    responses((status = 200, description = "Approves it; the review after the decision", body = Review),
              (status = 403, description = "The caller asked for it, or is not among its reviewers", body = ErrorBody),
              (status = 404, description = "No such review", body = ErrorBody),
              (status = 409, description = "Already decided or over", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody)))]
pub async fn approve(
    state: State<ApiState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    id: Path<String>,
    body: Option<Json<DecisionBody>>,
) -> Result<Json<Review>, ApiError> {
    decide(state, peer, headers, id, body, true).await
}

/// `POST /api/reviews/{id}/deny`.
#[utoipa::path(post, path = "/api/reviews/{id}/deny", tag = "reviews", security(("bearer" = [])),
    params(("id" = u64, Path, description = "Review id")),
    request_body(content = Option<DecisionBody>, description = "Why, in the reviewer's words"),
    responses((status = 200, description = "Denies it; the review after the decision", body = Review),
              (status = 403, description = "The caller asked for it, or is not among its reviewers", body = ErrorBody),
              (status = 404, description = "No such review", body = ErrorBody),
              (status = 409, description = "Already decided or over", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody)))]
pub async fn deny(
    state: State<ApiState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    id: Path<String>,
    body: Option<Json<DecisionBody>>,
) -> Result<Json<Review>, ApiError> {
    decide(state, peer, headers, id, body, false).await
}

async fn decide(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<DecisionBody>>,
    approve: bool,
) -> Result<Json<Review>, ApiError> {
    let who = authenticate(&s, &headers).await?;
    let id = review_id(&id)?;
    let reason = body.and_then(|Json(b)| b.reason);
    decide_as(&s, &who, peer, id, approve, reason)
        .await
        .map(Json)
}

/// Approves or denies review `id` as `who`, under the board's rules (the
/// API and the console both decide through here).
pub(crate) async fn decide_as(
    s: &ApiState,
    who: &Identity,
    peer: SocketAddr,
    id: u64,
    approve: bool,
    reason: Option<String>,
) -> Result<Review, ApiError> {
    // A review the caller may not see answers as if it did not exist,
    // whatever they post: the board's refusals would say it does, and
    // what it needs.
    match s.core.reviews.get(id).await.map_err(internal)? {
        Some(r) if may_see(s, who, peer, &r) => {}
        _ => return Err(ApiError(StatusCode::NOT_FOUND, format!("no review {id}"))),
    }
    let reason = reason
        .map(|r| r.trim().chars().take(1000).collect::<String>())
        .filter(|r| !r.is_empty());
    match s.core.reviews.decide(id, who, approve, reason).await {
        Ok(r) => {
            tracing::info!(review = id, by = %who.describe(), approve, status = r.status.as_str(), "review decided");
            metrics::counter!("portcullis_review_decisions_total", "decision" => if approve { "approve" } else { "deny" }).increment(1);
            Ok(r)
        }
        Err(e) => {
            let status = match &e {
                ReviewError::NotFound(_) => StatusCode::NOT_FOUND,
                ReviewError::Closed(..) | ReviewError::AlreadyApproved { .. } => {
                    StatusCode::CONFLICT
                }
                ReviewError::OwnRequest { .. } | ReviewError::NotAReviewer { .. } => {
                    tracing::warn!(review = id, by = %who.describe(), error = %e, "review decision refused");
                    StatusCode::FORBIDDEN
                }
                ReviewError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
                ReviewError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err(ApiError(status, e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::approvals::{ReviewRule, ReviewStatus};

    fn who(user: &str, actor: Option<&str>, groups: &[&str]) -> Identity {
        Identity {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            actor: actor.map(str::to_owned),
            method: "test",
            credential: Default::default(),
        }
    }

    #[test]
    fn an_agent_acting_for_someone_else_is_not_involved() {
        let review = Review {
            id: 1,
            status: ReviewStatus::Pending,
            requester: "alice".into(),
            actor: Some("agent-x".into()),
            session_id: None,
            connection: "app-db".into(),
            protocol: "postgres".into(),
            action: "delete on app-db/public.t".into(),
            policies: vec![],
            rules: vec![ReviewRule::from_annotations("p", "dba", None, None).unwrap()],
            statement: "delete from t".into(),
            params: vec![],
            hash: String::new(),
            reason: None,
            created_at: 0,
            expires_at: 1,
            decisions: vec![],
            approved_at: None,
            approval_expires_at: None,
            ended_at: None,
            end_note: None,
            grant: None,
        };
        assert!(involved(&who("alice", None, &[]), &review));
        assert!(involved(&who("alice", Some("agent-y"), &[]), &review));
        assert!(involved(&who("agent-x", None, &[]), &review));
        assert!(involved(&who("dan", None, &["dba"]), &review));
        assert!(!involved(&who("bob", Some("agent-x"), &[]), &review));
        assert!(!involved(&who("bob", None, &["dev"]), &review));
    }
}
