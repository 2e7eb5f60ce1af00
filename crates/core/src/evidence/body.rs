//! The `body` of each record: the event as JSON, read back by the API with
//! the event's own `Deserialize`.
//!
//! Commands are serialised by hand around their protocol detail: the
//! detail is already JSON text (see [`CommandDetail`]), and serde's
//! `flatten` would parse it into a tree only to print it again, once per
//! command on the hot path.

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{AuditEvent, CommandDetail, Decision};
use crate::masking::MaskCounts;

/// The record kind and body of `event`.
pub fn event_body(event: &AuditEvent) -> (&'static str, String) {
    match event {
        AuditEvent::SessionStarted(s) => ("session_started", json(s)),
        AuditEvent::SessionEnded(e) => ("session_ended", json(e)),
        AuditEvent::Command(c) => {
            let head = CommandHead {
                session_id: c.session_id,
                seq: c.seq,
                kind: &c.kind,
                text: &c.text,
                started_at: Some(c.started_at),
                decision: Some(&c.decision),
                duration_us: Some(c.duration_us),
                error: Some(&c.error),
                masked: c.masked.as_ref(),
            };
            ("command", flattened(json(&head), &c.detail))
        }
        AuditEvent::CommandStarted(c) => {
            let head = CommandHead {
                session_id: c.session_id,
                seq: c.seq,
                kind: &c.kind,
                text: &c.text,
                started_at: Some(c.started_at),
                decision: Some(&c.decision),
                duration_us: None,
                error: None,
                masked: None,
            };
            ("command_started", flattened(json(&head), &c.detail))
        }
        AuditEvent::CommandFinished(c) => {
            let head = OutcomeHead {
                session_id: c.session_id,
                seq: c.seq,
                duration_us: c.duration_us,
                error: &c.error,
                masked: c.masked.as_ref(),
            };
            ("command_finished", flattened(json(&head), &c.detail))
        }
        AuditEvent::Note(n) => (n.kind, json(&n.body)),
    }
}

#[derive(Serialize)]
struct CommandHead<'a> {
    session_id: Uuid,
    seq: u64,
    kind: &'a str,
    text: &'a str,
    #[serde(with = "time::serde::rfc3339::option")]
    started_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a Option<String>>,
    decision: Option<&'a Decision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    masked: Option<&'a MaskCounts>,
}

#[derive(Serialize)]
struct OutcomeHead<'a> {
    session_id: Uuid,
    seq: u64,
    duration_us: u64,
    error: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    masked: Option<&'a MaskCounts>,
}

fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|e| serde_json::json!({ "unserialisable": e.to_string() }).to_string())
}

/// `head` (a JSON object) with the detail's fields appended, as serde's
/// `flatten` would write them.
fn flattened(mut head: String, detail: &CommandDetail) -> String {
    let fields = detail.as_json().trim();
    let inner = fields
        .strip_prefix('{')
        .and_then(|f| f.strip_suffix('}'))
        .unwrap_or("")
        .trim();
    if !inner.is_empty() && head.ends_with('}') {
        head.pop();
        head.push(',');
        head.push_str(inner);
        head.push('}');
    }
    head
}
