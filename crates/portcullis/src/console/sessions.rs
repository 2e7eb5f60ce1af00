//! Sessions: the filtered list (live ones marked), one session's commands
//! with their decisions, its terminal recordings, and the kill button.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use portcullis_core::audit::{CommandRecord, DecisionFilter, SessionQuery, SessionSummary};
use portcullis_core::Action;
use serde::Deserialize;
use uuid::Uuid;

use super::{view, Console, ConsoleError};

/// The list's filters, as the form sends them (empty fields are absent).
#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub connection: String,
    #[serde(default)]
    pub decision: String,
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub live: String,
}

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// A `datetime-local` value (`2026-12-07T18:40`, read as UTC), or RFC 3339.
fn parse_time(field: &str, text: &str) -> Result<Option<time::OffsetDateTime>, ConsoleError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let rfc3339 = time::format_description::well_known::Rfc3339;
    let local = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let local_s =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    time::OffsetDateTime::parse(text, &rfc3339)
        .or_else(|_| time::PrimitiveDateTime::parse(text, &local).map(|t| t.assume_utc()))
        .or_else(|_| time::PrimitiveDateTime::parse(text, &local_s).map(|t| t.assume_utc()))
        .map(Some)
        .map_err(|_| {
            ConsoleError::Page(
                StatusCode::BAD_REQUEST,
                format!("{field} {text:?} is not a time (2026-12-07T18:40, UTC)"),
            )
        })
}

impl Filters {
    fn query(&self) -> Result<SessionQuery, ConsoleError> {
        let decision = match self.decision.as_str() {
            "" => None,
            "denied" => Some(DecisionFilter::Denied),
            "allowed" => Some(DecisionFilter::Allowed),
            other => {
                return Err(ConsoleError::Page(
                    StatusCode::BAD_REQUEST,
                    format!("decision {other:?} is not one of denied, allowed"),
                ))
            }
        };
        Ok(SessionQuery {
            user: some(&self.user),
            actor: some(&self.actor),
            connection: some(&self.connection),
            decision,
            active: !self.live.is_empty(),
            limit: Some(200),
            since: parse_time("since", &self.since)?,
            until: parse_time("until", &self.until)?,
        })
    }
}

/// A session as the list shows it.
pub struct Row {
    pub id: String,
    pub started: String,
    pub user: String,
    pub actor: String,
    pub connection: String,
    pub protocol: String,
    pub commands: u64,
    pub live: bool,
    pub ended: String,
}

impl Row {
    fn of(s: &SessionSummary, live: bool) -> Self {
        Row {
            id: s.session.id.to_string(),
            started: view::when(&s.session.started_at),
            user: s.session.user.clone(),
            actor: s.session.actor.clone().unwrap_or_default(),
            connection: s.session.connection.clone(),
            protocol: s.session.protocol.clone(),
            commands: s.command_count,
            live,
            ended: match (&s.ended_at, &s.end_reason) {
                (Some(at), Some(why)) => format!("ended {} ({why})", view::when(at)),
                (Some(at), None) => format!("ended {}", view::when(at)),
                // Not ended in the record, and not live here: the gateway
                // stopped without recording its end (a crash).
                (None, _) if !live => "ended; its end is not recorded yet".into(),
                (None, _) => String::new(),
            },
        }
    }
}

/// Whether a live session the store does not list yet passes the filters
/// that can be judged without its records (a decision filter cannot).
fn matches_live(q: &SessionQuery, l: &portcullis_core::sessions::LiveSession) -> bool {
    let started = started_at(l.id);
    q.decision.is_none()
        && q.user.as_ref().is_none_or(|u| *u == l.identity.user)
        && q.actor
            .as_ref()
            .is_none_or(|a| Some(a) == l.identity.actor.as_ref())
        && q.connection.as_ref().is_none_or(|c| *c == l.connection)
        && q.since.is_none_or(|t| started.is_some_and(|s| s >= t))
        && q.until.is_none_or(|t| started.is_some_and(|s| s < t))
}

/// When a session started, from its UUIDv7 id.
fn started_at(id: Uuid) -> Option<time::OffsetDateTime> {
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?)
        .ok()
        .map(|t| t + time::Duration::nanoseconds(i64::from(nanos)))
}

impl Row {
    fn live(l: &portcullis_core::sessions::LiveSession) -> Self {
        Row {
            id: l.id.to_string(),
            started: started_at(l.id).map(|t| view::when(&t)).unwrap_or_default(),
            user: l.identity.user.clone(),
            actor: l.identity.actor.clone().unwrap_or_default(),
            connection: l.connection.clone(),
            protocol: l.protocol.to_owned(),
            commands: 0,
            live: true,
            ended: String::new(),
        }
    }
}

#[derive(Template)]
#[template(path = "sessions.html")]
struct ListPage {
    nav: view::Nav,
    filters: Filters,
    rows: Vec<Row>,
    live_count: usize,
}

/// `GET /sessions`.
pub async fn list(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(filters): Query<Filters>,
) -> Result<Response, ConsoleError> {
    let viewer = c
        .viewer_allowed(&headers, peer, "/sessions", Action::VIEW_SESSIONS)
        .await?;
    let q = filters.query()?;
    let found = c
        .api
        .store
        .list_sessions(&q)
        .await
        .map_err(|e| ConsoleError::Page(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let registry = &c.api.core.sessions;
    let mut rows: Vec<Row> = found
        .iter()
        .map(|s| Row::of(s, s.ended_at.is_none() && registry.is_live(s.session.id)))
        .collect();
    // The registry is the truth about what is live; the store can lag
    // behind it by a moment (its writer commits behind the session), so
    // live sessions it does not list yet are shown from the registry.
    let listed: std::collections::HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut unlisted: Vec<Row> = registry
        .list()
        .iter()
        .filter(|l| !listed.contains(&l.id.to_string()) && matches_live(&q, l))
        .map(Row::live)
        .collect();
    unlisted.reverse();
    unlisted.append(&mut rows);
    let rows = unlisted;
    Ok(super::page(&ListPage {
        nav: c.nav(&viewer, "/sessions"),
        filters,
        rows,
        live_count: registry.len(),
    }))
}

/// A command as the detail page shows it.
pub struct CommandRow {
    pub seq: u64,
    pub kind: String,
    pub text: String,
    pub started: String,
    pub allowed: bool,
    pub policies: String,
    pub rows: String,
    pub masked: String,
    pub error: String,
    pub duration: String,
    pub review: String,
    pub recording: Option<String>,
    pub other: String,
}

impl CommandRow {
    fn of(session: Uuid, c: &CommandRecord) -> Self {
        let detail: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(c.detail.as_json()).unwrap_or_default();
        let number = |k: &str| detail.get(k).and_then(|v| v.as_u64());
        let recording = detail
            .get("recording")
            .filter(|r| r.is_object())
            .map(|_| format!("/sessions/{session}/recordings/{}.cast", c.seq));
        let shown = ["rows", "review", "recording", "params", "prepared_name"];
        let other: Vec<String> = detail
            .iter()
            .filter(|(k, v)| !shown.contains(&k.as_str()) && !v.is_null())
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let mut text = c.text.clone();
        if let Some(params) = detail.get("params").and_then(|p| p.as_array()) {
            text.push_str(&format!(
                "\n-- parameters: {}",
                serde_json::Value::Array(params.clone())
            ));
        }
        CommandRow {
            seq: c.seq,
            kind: c.kind.clone(),
            text,
            started: view::when(&c.started_at),
            allowed: c.decision.allowed,
            policies: c.decision.policies.join(", "),
            rows: number("rows").map(|n| n.to_string()).unwrap_or_default(),
            masked: c
                .masked
                .as_ref()
                .map(|m| {
                    m.by_column
                        .iter()
                        .map(|(col, n)| format!("{col}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
            error: c.error.clone().unwrap_or_default(),
            duration: view::duration_us(c.duration_us),
            review: number("review").map(|n| n.to_string()).unwrap_or_default(),
            recording,
            other: other.join("; "),
        }
    }
}

#[derive(Template)]
#[template(path = "session.html")]
struct DetailPage {
    nav: view::Nav,
    row: Row,
    groups: String,
    client: String,
    policies: String,
    commands: Vec<CommandRow>,
}

fn session_id(id: &str) -> Result<Uuid, ConsoleError> {
    Uuid::parse_str(id).map_err(|_| {
        ConsoleError::Page(StatusCode::NOT_FOUND, format!("{id:?} is not a session id"))
    })
}

/// `GET /sessions/{id}`.
pub async fn detail(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let here = format!("/sessions/{}", view::query_escape(&id));
    let viewer = c
        .viewer_allowed(&headers, peer, &here, Action::VIEW_SESSIONS)
        .await?;
    let id = session_id(&id)?;
    let d = c
        .api
        .store
        .session(id)
        .await
        .map_err(|e| ConsoleError::Page(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .ok_or_else(|| ConsoleError::Page(StatusCode::NOT_FOUND, format!("no session {id}")))?;
    let live = d.summary.ended_at.is_none() && c.api.core.sessions.is_live(id);
    let s = &d.summary.session;
    let page = DetailPage {
        nav: c.nav(&viewer, "/sessions"),
        row: Row::of(&d.summary, live),
        groups: s.groups.join(", "),
        client: format!(
            "{}{}{}",
            s.client_address,
            if s.client_tls { ", TLS" } else { "" },
            s.application_name
                .as_deref()
                .map(|a| format!(", {a}"))
                .unwrap_or_default()
        ),
        policies: s.connect_policies.join(", "),
        commands: d
            .commands
            .iter()
            .map(|cmd| CommandRow::of(id, cmd))
            .collect(),
    };
    Ok(super::page(&page))
}

/// `POST /sessions/{id}/kill`: ends a live session (`manage_sessions`).
pub async fn kill(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<super::CsrfForm>,
) -> Result<Response, ConsoleError> {
    let viewer = c
        .poster_allowed(&headers, peer, &form.csrf, Action::MANAGE_SESSIONS)
        .await?;
    let id = session_id(&id)?;
    let registry = &c.api.core.sessions;
    let mut changes = registry.changes();
    let ended = registry.kill(id);
    // The page that follows shows it ended: wait (briefly) for the
    // session to close and leave the registry.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        while registry.is_live(id) && changes.changed().await.is_ok() {}
    })
    .await;
    tracing::warn!(session = %id, by = %viewer.identity.describe(), ended, "session killed from the console");
    let note = serde_json::json!({
        "session_id": id,
        "by": viewer.identity.user,
        "actor": viewer.identity.actor,
        "was_live": ended,
    });
    let _ = c
        .api
        .core
        .recorder
        .record(portcullis_core::AuditEvent::note("session_killed", note))
        .await;
    if !ended {
        return Err(ConsoleError::Page(
            StatusCode::CONFLICT,
            format!("session {id} is not live"),
        ));
    }
    Ok(super::see_other(&format!("/sessions/{id}")))
}

/// `GET /sessions/{id}/recordings/{seq}.cast`: a terminal recording for
/// the player, served only while it matches its record.
pub async fn recording(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((id, file)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    c.viewer_allowed(&headers, peer, "/sessions", Action::VIEW_SESSIONS)
        .await?;
    let id = session_id(&id)?;
    let seq: u64 = file
        .strip_suffix(".cast")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            ConsoleError::Page(StatusCode::NOT_FOUND, format!("no recording {file:?}"))
        })?;
    let body = crate::api::recordings::verified(&c.api, id, seq).await?;
    Ok(([(header::CONTENT_TYPE, "application/x-asciicast")], body).into_response())
}
