//! Admin commands that talk to a running gateway's API.

use anyhow::{bail, Context};
use portcullis_core::audit::{SessionDetail, SessionSummary};
use time::format_description::well_known::Rfc3339;

/// Where the API is and who is asking.
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// The JSON body of a successful answer, or the API's one-line error.
async fn answer(resp: reqwest::Response) -> anyhow::Result<serde_json::Value> {
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .context("the API answered with invalid JSON")?;
    if !status.is_success() {
        let msg = body
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("no reason given");
        bail!("API refused ({status}): {msg}");
    }
    Ok(body)
}

impl ApiClient {
    /// A client for `base` (e.g. `http://127.0.0.1:8099`, or `https://`
    /// verified with `ca` when given) with a bearer token.
    pub fn new(
        base: &str,
        token: Option<String>,
        ca: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let token = token.context("no API token: pass --token or set PORTCULLIS_TOKEN")?;
        let mut http = reqwest::Client::builder();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} holds no PEM certificate", ca.display()))?;
            http = http.add_root_certificate(cert);
        }
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: http.build().context("setting up the API client")?,
        })
    }

    /// GETs a JSON answer.
    pub async fn get_json(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<serde_json::Value> {
        self.get(path, query).await
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .query(query)
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway API at {}", self.base))?;
        answer(resp).await
    }

    /// POSTs a JSON body.
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway API at {}", self.base))?;
        answer(resp).await
    }

    /// `GET /api/sessions`.
    pub async fn sessions(&self, query: &[(&str, String)]) -> anyhow::Result<serde_json::Value> {
        self.get("/api/sessions", query).await
    }

    /// `GET /api/sessions/{id}/recordings/{seq}`: an asciicast, as text.
    pub async fn recording(&self, id: &str, seq: u64) -> anyhow::Result<String> {
        let url = format!("{}/api/sessions/{id}/recordings/{seq}", self.base);
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway API at {}", self.base))?;
        if !resp.status().is_success() {
            return answer(resp).await.map(|_| String::new());
        }
        resp.text().await.context("reading the recording")
    }

    /// `GET /api/sessions/{id}`.
    pub async fn session(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        self.get(&format!("/api/sessions/{id}"), &[]).await
    }
}

/// Client-supplied text made safe for a terminal: control characters
/// other than newline and tab, and the invisible characters that reorder
/// text (bidirectional overrides and isolates), are escaped, so a recorded
/// statement cannot move the cursor, retitle the window, hide lines or
/// show itself reversed when an auditor reads it.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    escaped(text, |c| c == '\n' || c == '\t')
}

/// Like [`terminal_safe`], on one line: newlines and tabs are escaped too,
/// so a value cannot print what looks like another record.
pub fn one_line_safe(text: &str) -> std::borrow::Cow<'_, str> {
    escaped(text, |_| false)
}

fn escaped(text: &str, keep: impl Fn(char) -> bool) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        !keep(c)
            && (c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn when(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// A session list as an aligned table.
pub fn print_sessions(v: serde_json::Value) -> anyhow::Result<()> {
    let list: Vec<SessionSummary> = serde_json::from_value(v).context("unexpected session list")?;
    println!(
        "{:<36}  {:<20}  {:<12}  {:<25}  {:>5}  ENDED",
        "ID", "WHO", "CONNECTION", "STARTED", "STMTS"
    );
    for s in list {
        let who = match &s.session.actor {
            Some(a) => format!("{a} for {}", s.session.user),
            None => s.session.user.clone(),
        };
        println!(
            "{:<36}  {:<20}  {:<12}  {:<25}  {:>5}  {}",
            s.session.id,
            who,
            s.session.connection,
            when(s.session.started_at),
            s.command_count,
            match (&s.ended_at, &s.end_reason) {
                (Some(_), Some(r)) => r.clone(),
                (Some(t), None) => when(*t),
                (None, _) => "(active)".into(),
            }
        );
    }
    Ok(())
}

/// One session with its statements.
pub fn print_session(v: serde_json::Value) -> anyhow::Result<()> {
    let d: SessionDetail = serde_json::from_value(v).context("unexpected session")?;
    let s = &d.summary.session;
    println!("session     {}", s.id);
    match &s.actor {
        Some(a) => println!(
            "who         {a} acting for {} (groups: {})",
            s.user,
            s.groups.join(", ")
        ),
        None => println!("who         {} (groups: {})", s.user, s.groups.join(", ")),
    }
    println!(
        "auth        {} (client said user={})",
        s.auth_method,
        one_line_safe(s.client_user.as_deref().unwrap_or("-"))
    );
    println!("connection  {} via {}", s.connection, s.protocol);
    println!(
        "client      {} tls={} app={}",
        s.client_address,
        s.client_tls,
        one_line_safe(s.application_name.as_deref().unwrap_or("-"))
    );
    println!("admitted by {}", s.connect_policies.join(", "));
    println!("started     {}", when(s.started_at));
    if let Some(t) = d.summary.ended_at {
        println!(
            "ended       {} ({})",
            when(t),
            d.summary.end_reason.as_deref().unwrap_or("")
        );
    }
    println!();
    for st in &d.commands {
        let rows = st.detail.field("rows").and_then(|r| r.as_u64());
        let outcome = match (&st.error, rows) {
            (Some(e), _) => format!("error {}", one_line_safe(e)),
            (None, Some(r)) => format!("{r} rows"),
            (None, None) => "ok".into(),
        };
        println!(
            "#{:<4} {:<8} {:>8}µs  {}  [{}]",
            st.seq,
            st.kind,
            st.duration_us,
            outcome,
            if st.decision.allowed {
                "allowed"
            } else {
                "denied"
            }
        );
        println!(
            "      {}",
            terminal_safe(&st.text).replace('\n', "\n      ")
        );
        if let Some(serde_json::Value::Array(p)) = st.detail.field("params") {
            let shown: Vec<String> = p
                .iter()
                .map(|v| v.as_str().map_or_else(|| "NULL".into(), str::to_owned))
                .collect();
            println!("      params: {}", one_line_safe(&shown.join(", ")));
        }
    }
    Ok(())
}
