//! `portcullis replay` and `portcullis sessions export`: recorded sessions
//! read back through the API, as they happened or as rows for other tools.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use portcullis_core::audit::{CommandRecord, SessionDetail, SessionSummary};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::client::{one_line_safe, terminal_safe, ApiClient};

/// How `replay` paces its output.
pub struct Pace {
    /// Play the gaps between statements at this speed (2.0: twice as
    /// fast); `None` prints at once.
    pub speed: Option<f64>,
    /// Keep polling a live session until it ends.
    pub follow: bool,
    /// Play terminal recordings unescaped.
    pub raw: bool,
}

/// Prints session `id` as it happened: each statement at its offset from
/// the session's start, with its decision, outcome and masking.
pub async fn replay(api: &ApiClient, id: &str, pace: Pace) -> anyhow::Result<()> {
    if pace.speed.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
        bail!("--speed must be a positive number");
    }
    let mut out = std::io::stdout().lock();
    let mut detail = fetch(api, id).await?;
    header(&mut out, &detail)?;
    let start = detail.summary.session.started_at;
    let mut shown = 0u64;
    let mut last = start;
    loop {
        let already = shown;
        for command in detail.commands.iter().filter(|c| c.seq > already) {
            if let Some(speed) = pace.speed {
                let gap = (command.started_at - last).as_seconds_f64().max(0.0) / speed;
                tokio::time::sleep(Duration::from_secs_f64(gap.min(3600.0))).await;
            }
            last = command.started_at;
            shown = command.seq;
            statement(&mut out, command, start)?;
            if command.detail.field("recording").is_some() {
                let playback = crate::replay_cast::Playback {
                    speed: pace.speed,
                    raw: pace.raw,
                };
                match api.recording(id, command.seq).await {
                    Ok(cast) => crate::replay_cast::play(&mut out, &cast, playback).await?,
                    Err(e) => writeln!(out, "    (recording not played: {e:#})")?,
                }
            }
        }
        out.flush()?;
        if !pace.follow || detail.summary.ended_at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        detail = fetch(api, id).await?;
    }
    match (&detail.summary.ended_at, &detail.summary.end_reason) {
        (Some(t), reason) => writeln!(
            out,
            "[{}] session ended: {}",
            offset(*t, start),
            one_line_safe(reason.as_deref().unwrap_or("-"))
        )?,
        (None, _) => writeln!(out, "(the session is still open; --follow waits for it)")?,
    }
    Ok(())
}

async fn fetch(api: &ApiClient, id: &str) -> anyhow::Result<SessionDetail> {
    serde_json::from_value(api.session(id).await?).context("unexpected session")
}

fn offset(t: OffsetDateTime, start: OffsetDateTime) -> String {
    format!("+{:.3}s", (t - start).as_seconds_f64().max(0.0))
}

fn header(out: &mut impl Write, d: &SessionDetail) -> std::io::Result<()> {
    let s = &d.summary.session;
    let who = match &s.actor {
        Some(a) => format!("{a} acting for {}", s.user),
        None => s.user.clone(),
    };
    writeln!(
        out,
        "session {} · {} on {} ({}) from {} · started {}",
        s.id,
        one_line_safe(&who),
        s.connection,
        s.protocol,
        s.client_address,
        s.started_at.format(&Rfc3339).unwrap_or_default()
    )
}

fn statement(
    out: &mut impl Write,
    c: &CommandRecord,
    start: OffsetDateTime,
) -> std::io::Result<()> {
    let decision = if c.decision.allowed { "allow" } else { "deny" };
    let policies = if c.decision.policies.is_empty() {
        String::new()
    } else {
        format!(" ({})", c.decision.policies.join(", "))
    };
    writeln!(
        out,
        "[{}] #{} {} {decision}{policies}",
        offset(c.started_at, start),
        c.seq,
        c.kind
    )?;
    for line in terminal_safe(&c.text).lines() {
        writeln!(out, "    {line}")?;
    }
    if let Some(serde_json::Value::Array(p)) = c.detail.field("params") {
        let shown: Vec<String> = p
            .iter()
            .map(|v| v.as_str().map_or_else(|| "NULL".into(), str::to_owned))
            .collect();
        writeln!(out, "    params: {}", one_line_safe(&shown.join(", ")))?;
    }
    writeln!(out, "    → {}", one_line_safe(&outcome(c)))
}

/// One line: rows or error, time, masking.
fn outcome(c: &CommandRecord) -> String {
    let mut text = match (&c.error, rows(c)) {
        (Some(e), _) => format!("error {e}"),
        (None, Some(r)) => format!("{r} rows"),
        (None, None) => "ok".into(),
    };
    match c.detail.field("outcome").as_ref().and_then(|o| o.as_str()) {
        Some("running") => text = "running".into(),
        Some(_) => text = "outcome not recorded (the gateway stopped while it ran)".into(),
        None => {}
    }
    if let Some(status) = c.detail.field("exit_status") {
        text.push_str(&format!(", exit status {status}"));
    }
    text.push_str(&format!(", {:.1} ms", c.duration_us as f64 / 1000.0));
    let masked = masked(c);
    if masked > 0 {
        text.push_str(&format!(", {masked} values masked"));
    }
    if let Some(review) = c.detail.field("review") {
        text.push_str(&format!(", approved in review {review}"));
    }
    text
}

fn rows(c: &CommandRecord) -> Option<u64> {
    c.detail.field("rows").and_then(|r| r.as_u64())
}

fn masked(c: &CommandRecord) -> u64 {
    c.masked
        .as_ref()
        .map_or(0, |m| m.by_class.values().sum::<u64>())
}

/// What `sessions export` selects.
pub struct ExportFilter {
    /// `jsonl` or `csv`.
    pub format: String,
    /// API query parameters (user, connection, since, until).
    pub query: Vec<(&'static str, String)>,
    /// Only allowed (`allow`) or denied (`deny`) statements.
    pub decision: Option<String>,
}

const CSV_HEADER: &str = "session_id,user,actor,connection,protocol,seq,kind,started_at,duration_us,allowed,policies,rows,masked,error,text";

/// Writes one row per statement of every matching session.
pub async fn export(api: &ApiClient, filter: ExportFilter) -> anyhow::Result<()> {
    let csv = match filter.format.as_str() {
        "csv" => true,
        "jsonl" => false,
        other => bail!("--format {other}: use jsonl or csv"),
    };
    let allowed = match filter.decision.as_deref() {
        None => None,
        Some("allow") => Some(true),
        Some("deny") => Some(false),
        Some(other) => bail!("--decision {other}: use allow or deny"),
    };
    let mut query = filter.query;
    query.push(("limit", u32::MAX.to_string()));
    let sessions: Vec<SessionSummary> =
        serde_json::from_value(api.sessions(&query).await?).context("unexpected session list")?;
    let mut out = std::io::stdout().lock();
    if csv {
        writeln!(out, "{CSV_HEADER}")?;
    }
    // Oldest first, like the sessions themselves.
    for summary in sessions.iter().rev() {
        let detail = fetch(api, &summary.session.id.to_string()).await?;
        for c in detail
            .commands
            .iter()
            .filter(|c| allowed.is_none_or(|a| c.decision.allowed == a))
        {
            let line = if csv {
                csv_row(&detail, c)
            } else {
                json_row(&detail, c).to_string()
            };
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

fn json_row(d: &SessionDetail, c: &CommandRecord) -> serde_json::Value {
    let s = &d.summary.session;
    serde_json::json!({
        "session_id": s.id,
        "user": s.user,
        "actor": s.actor,
        "connection": s.connection,
        "protocol": s.protocol,
        "statement": c,
    })
}

fn csv_row(d: &SessionDetail, c: &CommandRecord) -> String {
    let s = &d.summary.session;
    let fields = [
        s.id.to_string(),
        s.user.clone(),
        s.actor.clone().unwrap_or_default(),
        s.connection.clone(),
        s.protocol.clone(),
        c.seq.to_string(),
        c.kind.clone(),
        c.started_at.format(&Rfc3339).unwrap_or_default(),
        c.duration_us.to_string(),
        c.decision.allowed.to_string(),
        c.decision.policies.join(" "),
        rows(c).map(|r| r.to_string()).unwrap_or_default(),
        masked(c).to_string(),
        c.error.clone().unwrap_or_default(),
        c.text.clone(),
    ];
    fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",")
}

/// RFC 4180: quoted when it holds a comma, quote or line break, quotes
/// doubled. A field a spreadsheet would run as a formula (`=`, `+`, `-`,
/// `@`, tab or carriage return first) is prefixed with `'`, and control
/// characters other than newline and tab are escaped: statements are
/// client input, and a CSV is read in spreadsheets and terminals.
fn csv_field(f: &str) -> String {
    let f = terminal_safe(f);
    let f = if f.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{f}")
    } else {
        f.into_owned()
    };
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;
    use crate::client::{one_line_safe, terminal_safe};

    #[test]
    fn text_for_a_terminal_cannot_steer_it_or_fake_a_line() {
        assert_eq!(terminal_safe("select 1\n  from t"), "select 1\n  from t");
        assert_eq!(
            terminal_safe("\u{1b}]0;pwned\u{7}"),
            "\\u{1b}]0;pwned\\u{7}"
        );
        assert_eq!(terminal_safe("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(
            one_line_safe("x\n[+0.000s] #1 query allow"),
            "x\\n[+0.000s] #1 query allow"
        );
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("select 1"), "select 1");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(csv_field("-- note\nselect 1"), "\"'-- note\nselect 1\"");
        assert_eq!(csv_field("\t=1+1"), "'\t=1+1");
        assert_eq!(csv_field("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
    }
}
