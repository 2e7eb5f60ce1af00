//! The reviews inbox and the grants page. Who may see and decide a review
//! is the API's rule, through the API's own functions: its possible
//! reviewers, its requester and `view_sessions` see it; the board refuses
//! a decision by its requester or by anyone outside its reviewer groups.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use portcullis_core::approvals::{Review, ReviewStatus};
use serde::Deserialize;

use super::{view, Console, ConsoleError, Viewer};
use crate::api::reviews::{listed, visible};

/// A review as the inbox shows it.
pub struct Item {
    pub id: u64,
    pub status: String,
    pub pending: bool,
    pub requester: String,
    pub actor: String,
    pub connection: String,
    pub action: String,
    pub statement: String,
    pub params: String,
    pub reason: String,
    pub reviewers: String,
    pub policies: String,
    pub asked: String,
    pub expires: String,
    pub decisions: Vec<String>,
    pub grant: String,
    pub session: String,
    /// Whether the viewer is its requester (the page says they cannot
    /// decide it; the board refuses it regardless).
    pub own: bool,
    pub end_note: String,
}

impl Item {
    fn of(r: &Review, viewer: &Viewer) -> Self {
        let who = &viewer.identity;
        Item {
            id: r.id,
            status: r.status.as_str().to_owned(),
            pending: r.status == ReviewStatus::Pending,
            requester: r.requester.clone(),
            actor: r.actor.clone().unwrap_or_default(),
            connection: r.connection.clone(),
            action: r.action.clone(),
            statement: r.statement.clone(),
            params: if r.params.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&r.params).unwrap_or_default()
            },
            reason: r.reason.clone().unwrap_or_default(),
            reviewers: r.reviewers(),
            policies: r.policies.join(", "),
            asked: view::when_unix(r.created_at),
            expires: view::when_unix(r.approval_expires_at.unwrap_or(r.expires_at)),
            decisions: r
                .decisions
                .iter()
                .map(|d| {
                    format!(
                        "{} by {}{} at {}{}",
                        if d.approve { "approved" } else { "denied" },
                        d.by,
                        d.actor
                            .as_deref()
                            .map(|a| format!(" (through {a})"))
                            .unwrap_or_default(),
                        view::when_unix(d.at),
                        d.reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    )
                })
                .collect(),
            grant: r
                .grant
                .as_ref()
                .map(|g| format!("role {} for {}", g.role, human_secs(g.duration_secs)))
                .unwrap_or_default(),
            session: r.session_id.clone().unwrap_or_default(),
            own: who.user == r.requester
                || (who.actor.is_none() && r.actor.as_deref() == Some(who.user.as_str())),
            end_note: r.end_note.clone().unwrap_or_default(),
        }
    }
}

fn human_secs(secs: u64) -> String {
    match secs {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[derive(Template)]
#[template(path = "reviews.html")]
struct InboxPage {
    nav: view::Nav,
    items: Vec<Item>,
    message: Option<String>,
    refused: bool,
}

async fn inbox_page(
    c: &Console,
    viewer: &Viewer,
    message: Option<String>,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let open = listed(&c.api, Some("open"), 50).await?;
    let items = visible(&c.api, &viewer.identity, viewer.peer, open)
        .iter()
        .filter(|r| r.grant.is_none() || r.status == ReviewStatus::Pending)
        .map(|r| Item::of(r, viewer))
        .collect();
    let page = InboxPage {
        nav: c.nav(viewer, "/reviews"),
        items,
        refused: status != StatusCode::OK,
        message,
    };
    let mut r = super::page(&page);
    *r.status_mut() = status;
    Ok(r)
}

/// `GET /reviews`: open reviews the viewer may see.
pub async fn inbox(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let viewer = c.viewer(&headers, peer, "/reviews").await?;
    inbox_page(&c, &viewer, None, StatusCode::OK).await
}

/// An approve or deny form.
#[derive(Debug, Deserialize)]
pub struct DecisionForm {
    csrf: String,
    decision: String,
    #[serde(default)]
    reason: String,
}

/// `POST /reviews/{id}/decide`.
pub async fn decide(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Form(form): Form<DecisionForm>,
) -> Result<Response, ConsoleError> {
    let viewer = c.poster(&headers, peer, &form.csrf).await?;
    let approve = match form.decision.as_str() {
        "approve" => true,
        "deny" => false,
        other => {
            return Err(ConsoleError::Page(
                StatusCode::BAD_REQUEST,
                format!("decision {other:?} is not approve or deny"),
            ))
        }
    };
    let reason = Some(form.reason);
    match crate::api::reviews::decide_as(&c.api, &viewer.identity, peer, id, approve, reason).await
    {
        Ok(r) => {
            let done = format!("review {id} is now {}", r.status.as_str());
            inbox_page(&c, &viewer, Some(done), StatusCode::OK).await
        }
        Err(e) => inbox_page(&c, &viewer, Some(e.1), e.0).await,
    }
}

#[derive(Template)]
#[template(path = "grants.html")]
struct GrantsPage {
    nav: view::Nav,
    active: Vec<Item>,
    past: Vec<Item>,
    message: Option<String>,
}

async fn grants_page(
    c: &Console,
    viewer: &Viewer,
    message: Option<String>,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let all = listed(&c.api, Some("all"), 200).await?;
    let grants: Vec<Review> = visible(&c.api, &viewer.identity, viewer.peer, all)
        .into_iter()
        .filter(|r| r.grant.is_some())
        .collect();
    let (active, past): (Vec<_>, Vec<_>) = grants.iter().partition(|r| !r.status.is_final());
    let page = GrantsPage {
        nav: c.nav(viewer, "/grants"),
        active: active.iter().map(|r| Item::of(r, viewer)).collect(),
        past: past.iter().map(|r| Item::of(r, viewer)).collect(),
        message,
    };
    let mut r = super::page(&page);
    *r.status_mut() = status;
    Ok(r)
}

/// `GET /grants`: grants and grant requests the viewer may see.
pub async fn grants(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let viewer = c.viewer(&headers, peer, "/grants").await?;
    grants_page(&c, &viewer, None, StatusCode::OK).await
}

/// `POST /grants/{id}/revoke`.
pub async fn revoke_grant(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Form(form): Form<super::CsrfForm>,
) -> Result<Response, ConsoleError> {
    let viewer = c.poster(&headers, peer, &form.csrf).await?;
    match crate::api::grants::revoke_as(&c.api, &viewer.identity, peer, id).await {
        Ok(r) => {
            let done = format!("grant {id} is now {}", r.status.as_str());
            grants_page(&c, &viewer, Some(done), StatusCode::OK).await
        }
        Err(e) => grants_page(&c, &viewer, Some(e.1), e.0).await,
    }
}
