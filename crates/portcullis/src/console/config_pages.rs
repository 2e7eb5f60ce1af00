//! The policy what-if, the connections page (configuration without
//! secrets, and whether each upstream accepts the gateway now), and the
//! audit verification status.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use portcullis_core::evidence::PublicKey;
pub use portcullis_core::probe::UpstreamProbe;
use portcullis_core::{Action, Identity};
use serde::Deserialize;

use super::{view, Console, ConsoleError};
use crate::whatif::{what_if as decide_what_if, WhatIf};

/// A configured connection as the console may show it: never a password,
/// a key or a secret's name.
pub struct ConnectionView {
    /// Its name.
    pub name: String,
    /// `postgres` or `ssh`.
    pub kind: &'static str,
    /// What it is configured with, secrets left out.
    pub settings: Vec<(&'static str, String)>,
    /// How to check it.
    pub probe: Arc<dyn UpstreamProbe>,
}

/// Probes run at most this often; a page load within it shows the last.
const PROBE_REUSE: Duration = Duration::from_secs(10);
/// A probe that takes longer than this is reported as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// A health check of every connection: when it ran (for the page, and
/// for reuse) and each connection's result, in `views` order.
struct HealthCheck {
    at: Instant,
    shown_as: String,
    results: Vec<Result<String, String>>,
}

/// Every configured connection, with the last health check.
pub struct Connections {
    views: Vec<ConnectionView>,
    last: tokio::sync::Mutex<Option<HealthCheck>>,
}

impl Connections {
    /// The connections, sorted by name.
    pub fn new(mut views: Vec<ConnectionView>) -> Self {
        views.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            views,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Names of connections of `kind`.
    pub fn names(&self, kind: &str) -> Vec<String> {
        self.views
            .iter()
            .filter(|v| v.kind == kind)
            .map(|v| v.name.clone())
            .collect()
    }

    /// Checks every upstream at once (or reuses a check under 10 s old);
    /// returns when the check ran and each result.
    async fn health(&self) -> (String, Vec<Result<String, String>>) {
        let mut last = self.last.lock().await;
        if let Some(check) = last.as_ref().filter(|c| c.at.elapsed() < PROBE_REUSE) {
            return (check.shown_as.clone(), check.results.clone());
        }
        let checks = self.views.iter().map(|v| async move {
            match tokio::time::timeout(PROBE_TIMEOUT, v.probe.probe()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
            }
        });
        let results = futures_util::future::join_all(checks).await;
        let when = view::when(&time::OffsetDateTime::now_utc());
        *last = Some(HealthCheck {
            at: Instant::now(),
            shown_as: when.clone(),
            results: results.clone(),
        });
        (when, results)
    }
}

/// A connection row of the page.
pub struct ConnectionRow {
    pub name: String,
    pub kind: &'static str,
    pub settings: Vec<(&'static str, String)>,
    pub healthy: bool,
    pub health: String,
}

#[derive(Template)]
#[template(path = "connections.html")]
struct ConnectionsPage {
    nav: view::Nav,
    checked: String,
    rows: Vec<ConnectionRow>,
}

/// `GET /connections` (`view_configuration`).
pub async fn connections(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let viewer = c
        .viewer_allowed(&headers, peer, "/connections", Action::VIEW_CONFIGURATION)
        .await?;
    let (checked, results) = c.connections.health().await;
    let rows = c
        .connections
        .views
        .iter()
        .zip(results)
        .map(|(v, r)| ConnectionRow {
            name: v.name.clone(),
            kind: v.kind,
            settings: v.settings.clone(),
            healthy: r.is_ok(),
            health: r.unwrap_or_else(|e| e),
        })
        .collect();
    Ok(super::page(&ConnectionsPage {
        nav: c.nav(&viewer, "/connections"),
        checked,
        rows,
    }))
}

/// The what-if form.
#[derive(Debug, Default, Deserialize)]
pub struct WhatIfForm {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub groups: String,
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub connection: String,
    #[serde(default)]
    pub search_path: String,
    #[serde(default)]
    pub sql: String,
}

#[derive(Template)]
#[template(path = "policy.html")]
struct WhatIfPage {
    nav: view::Nav,
    form: WhatIfForm,
    connections: Vec<String>,
    users: Vec<(String, String)>,
    result: Option<WhatIf>,
    command: String,
}

fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The `portcullis policy check` line that asks the same question.
fn cli_line(f: &WhatIfForm, search_path: &[String]) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = format!(
        "portcullis policy check --user {} --connection {}",
        quote(f.user.trim()),
        quote(f.connection.trim())
    );
    let groups = list(&f.groups);
    if !groups.is_empty() {
        line.push_str(&format!(" --groups {}", quote(&groups.join(","))));
    }
    line.push_str(&format!(" --search-path {}", quote(&search_path.join(","))));
    line.push_str(&format!(" {}", quote(&f.sql)));
    line
}

/// `GET /policy` (`view_configuration`): decides a statement for anyone,
/// as `portcullis policy check` does, with the policies in force.
pub async fn what_if(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(form): Query<WhatIfForm>,
) -> Result<Response, ConsoleError> {
    let viewer = c
        .viewer_allowed(&headers, peer, "/policy", Action::VIEW_CONFIGURATION)
        .await?;
    let connections = c.connections.names("postgres");
    let mut result = None;
    let mut command = String::new();
    if !form.sql.trim().is_empty() {
        if form.user.trim().is_empty() || !connections.contains(&form.connection) {
            return Err(ConsoleError::Page(
                StatusCode::BAD_REQUEST,
                "a what-if needs a user and one of the PostgreSQL connections".into(),
            ));
        }
        let search_path = match list(&form.search_path) {
            p if p.is_empty() => vec!["public".to_owned()],
            p => p,
        };
        let identity = Identity {
            user: form.user.trim().to_owned(),
            groups: list(&form.groups),
            actor: Some(form.actor.trim().to_owned()).filter(|a| !a.is_empty()),
            method: "what-if",
            credential: Default::default(),
        };
        command = cli_line(&form, &search_path);
        // Analysis is CPU work, bounded by the URL's size but not small:
        // off the threads that serve requests.
        let (engine, connection, sql) = (
            c.api.core.policy.clone(),
            form.connection.clone(),
            form.sql.clone(),
        );
        let decided = tokio::task::spawn_blocking(move || {
            decide_what_if(engine, identity, &connection, search_path, &sql)
        })
        .await
        .map_err(|e| ConsoleError::Page(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        result = Some(decided);
    }
    // Principals to pick from: who has used the gateway lately, for a
    // viewer who may see sessions anyway.
    let may_see =
        crate::api::reviews::gateway_allows(&c.api, &viewer.identity, peer, Action::VIEW_SESSIONS);
    let recent = if may_see {
        c.api
            .store
            .list_sessions(&portcullis_core::audit::SessionQuery {
                limit: Some(200),
                ..Default::default()
            })
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut users: Vec<(String, String)> = Vec::new();
    for s in recent {
        if !users.iter().any(|(u, _)| *u == s.session.user) {
            users.push((s.session.user, s.session.groups.join(",")));
        }
    }
    Ok(super::page(&WhatIfPage {
        nav: c.nav(&viewer, "/policy"),
        form,
        connections,
        users,
        result,
        command,
    }))
}

/// When a verification ran (as shown), whether the evidence holds, and
/// the report's lines.
type Verification = (String, bool, Vec<String>);

/// A verification this recent answers a new request: a full pass reads
/// the whole store.
const VERIFY_REUSE: Duration = Duration::from_secs(10);

/// How the console verifies the evidence chain: the same check as
/// `portcullis audit verify --live`, over the embedded store.
pub struct EvidenceCheck {
    /// The store file.
    pub store: PathBuf,
    /// The checkpoint key.
    pub key: PublicKey,
    /// How recent the last checkpoint must be for an unsealed tail.
    pub live_window: Duration,
    last: Mutex<Option<(Instant, Verification)>>,
    running: tokio::sync::Mutex<()>,
    started: Instant,
}

impl EvidenceCheck {
    /// A check of `store` with `key`.
    pub fn new(store: PathBuf, key: PublicKey, live_window: Duration) -> Self {
        Self {
            store,
            key,
            live_window,
            last: Mutex::new(None),
            running: tokio::sync::Mutex::new(()),
            started: Instant::now(),
        }
    }

    /// The last verification, if one finished within `fresh_for`.
    fn last(&self, fresh_for: Option<Duration>) -> Option<Verification> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref()
            .filter(|(at, _)| fresh_for.is_none_or(|d| at.elapsed() < d))
            .map(|(_, v)| v.clone())
    }

    /// Verifies now (one verification at a time; one that finished while
    /// this waited, or less than 10 s ago, is the answer).
    async fn run(&self, recorder: &portcullis_core::Recorder) -> Verification {
        let asked = Instant::now();
        let _one = self.running.lock().await;
        if let Some(recent) = self.last(Some(asked.elapsed().max(VERIFY_REUSE))) {
            return recent;
        }
        // What was recorded until now is checked, not only what the
        // store's writer has committed so far.
        recorder.flushed().await;
        let (store, key, window) = (self.store.clone(), self.key.clone(), self.live_window);
        let up_for = self.started.elapsed();
        let outcome = tokio::task::spawn_blocking(move || {
            portcullis_store::verify_store(&store, key.clone(), &[])
                .map(|report| crate::audit::report_lines(&report, &key, Some(window), Some(up_for)))
        })
        .await;
        let (intact, lines) = match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => (false, vec![format!("the store could not be read: {e}")]),
            Err(e) => (false, vec![format!("the verification failed: {e}")]),
        };
        let done = (view::when(&time::OffsetDateTime::now_utc()), intact, lines);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), done.clone()));
        done
    }
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: view::Nav,
    checked: String,
    intact: bool,
    lines: Vec<String>,
}

async fn audit_page(c: &Console, viewer: &super::Viewer, fresh: bool) -> Response {
    let (checked, intact, lines) = match c.evidence.last(None) {
        Some(last) if !fresh => last,
        _ => c.evidence.run(&c.api.core.recorder).await,
    };
    super::page(&AuditPage {
        nav: c.nav(viewer, "/audit"),
        checked,
        intact,
        lines,
    })
}

/// `GET /audit` (`view_sessions`): the last verification, or a first one.
pub async fn audit(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let viewer = c
        .viewer_allowed(&headers, peer, "/audit", Action::VIEW_SESSIONS)
        .await?;
    Ok(audit_page(&c, &viewer, false).await)
}

/// `POST /audit`: verifies again now.
pub async fn verify(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<super::CsrfForm>,
) -> Result<Response, ConsoleError> {
    let viewer = c
        .poster_allowed(&headers, peer, &form.csrf, Action::VIEW_SESSIONS)
        .await?;
    Ok(audit_page(&c, &viewer, true).await)
}
