//! Outgoing webhooks for reviews and grants: a new review, each decision,
//! a grant given, and its end.
//!
//! Each delivery is a JSON POST signed with HMAC-SHA256 over
//! `<timestamp>.<body>` (headers `X-Portcullis-Timestamp` and
//! `X-Portcullis-Signature: sha256=<hex>`, as Stripe and Slack sign theirs,
//! so a receiver can refuse replays), retried with backoff. The `slack`
//! format posts `{"text": …}` for an incoming-webhook URL; statement text
//! in it is escaped so that it cannot close the code block it is shown in
//! or forge links and mentions.
//!
//! Webhooks only tell: nothing they answer approves anything. A failed
//! delivery is logged and counted (`portcullis_webhook_failures_total`).

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use portcullis_core::approvals::{Review, ReviewBoard, ReviewEvent};
use portcullis_core::Secret;
use serde_json::json;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

/// How a webhook's body is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// The event and the whole review, as JSON.
    Json,
    /// A Slack incoming-webhook message.
    Slack,
}

/// One configured webhook.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Where to POST.
    pub url: String,
    /// The HMAC key.
    pub secret: Secret<String>,
    /// The body's layout.
    pub format: WebhookFormat,
}

/// Attempts per delivery; the waits between them double from one second.
const ATTEMPTS: u32 = 5;

/// Deliveries waiting per webhook; past it, events are dropped (and
/// counted) rather than held without bound.
const QUEUE: usize = 1024;

/// The event's name: `review.created`, `review.approved`, `grant.approved`
/// (a grant given), `grant.expired` (its end), …
fn event_name(e: &ReviewEvent) -> String {
    let subject = if e.review.grant.is_some() {
        "grant"
    } else {
        "review"
    };
    format!("{subject}.{}", e.kind)
}

/// The JSON body: the event, who should hear of it, and the review.
pub fn json_body(e: &ReviewEvent) -> String {
    json!({
        "event": event_name(e),
        "requester": e.review.requester,
        "actor": e.review.actor,
        "reviewers": e.review.rules.iter().flat_map(|r| r.groups.clone()).collect::<Vec<_>>(),
        "review": e.review,
    })
    .to_string()
}

/// Text shown in Slack markup, unable to change the message's layout:
/// `&`, `<` and `>` are escaped as Slack asks (no links, mentions or
/// channel pings), and backticks, which no escape exists for inside a code
/// block, become a look-alike that cannot end it.
pub fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '`' => out.push('\u{2035}'),
            c => out.push(c),
        }
    }
    out
}

/// The Slack body.
pub fn slack_body(e: &ReviewEvent) -> String {
    let r: &Review = &e.review;
    let who = match &r.actor {
        Some(a) => format!("{a} acting for {}", r.requester),
        None => r.requester.clone(),
    };
    let what = match &r.grant {
        Some(g) => format!("grant of role {} on {}", g.role, r.connection),
        None => format!("review {} on {}", r.id, r.connection),
    };
    let headline = format!(
        "{} {}: {} by {} (needs {})",
        event_name(e),
        r.id,
        what,
        who,
        r.reviewers()
    );
    let mut text = format!(
        "*{}*\n```{}```",
        slack_escape(&headline),
        slack_escape(&r.statement)
    );
    if let Some(reason) = &r.reason {
        text.push_str(&format!("\nreason: {}", slack_escape(reason)));
    }
    if let Some(last) = r.decisions.last() {
        text.push_str(&format!(
            "\nlast decision: {} by {}{}",
            if last.approve { "approved" } else { "denied" },
            slack_escape(&last.by),
            last.reason
                .as_deref()
                .map(|x| format!(": {}", slack_escape(x)))
                .unwrap_or_default()
        ));
    }
    json!({ "text": text }).to_string()
}

/// `sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>`.
pub fn signature(secret: &[u8], timestamp: i64, body: &str) -> String {
    // An HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delivers `board`'s events to `hooks` until `stop`.
pub async fn run(hooks: Vec<Webhook>, board: Arc<ReviewBoard>, stop: CancellationToken) {
    if hooks.is_empty() {
        return;
    }
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks disabled: no HTTP client");
            return;
        }
    };
    let mut queues = Vec::new();
    for hook in hooks {
        let (tx, rx) = tokio::sync::mpsc::channel::<ReviewEvent>(QUEUE);
        tokio::spawn(deliver_all(hook, http.clone(), rx, stop.clone()));
        queues.push(tx);
    }
    let mut events = board.subscribe();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = events.recv() => e,
        };
        match event {
            Ok(e) => {
                for q in &queues {
                    if q.try_send(e.clone()).is_err() {
                        metrics::counter!("portcullis_webhook_failures_total", "why" => "queue_full").increment(1);
                        tracing::warn!(event = %event_name(&e), "a webhook's queue is full; event dropped");
                    }
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                metrics::counter!("portcullis_webhook_failures_total", "why" => "lagged")
                    .increment(n);
                tracing::warn!(missed = n, "webhooks fell behind; events dropped");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Delivers one webhook's events in order, each with its retries.
async fn deliver_all(
    hook: Webhook,
    http: reqwest::Client,
    mut rx: tokio::sync::mpsc::Receiver<ReviewEvent>,
    stop: CancellationToken,
) {
    while let Some(e) = rx.recv().await {
        let body = match hook.format {
            WebhookFormat::Json => json_body(&e),
            WebhookFormat::Slack => slack_body(&e),
        };
        let name = event_name(&e);
        let delivery = uuid::Uuid::now_v7().to_string();
        let mut wait = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            let timestamp = portcullis_core::identity::now_secs();
            let sent = http
                .post(&hook.url)
                .header("content-type", "application/json")
                .header("x-portcullis-event", &name)
                .header("x-portcullis-delivery", &delivery)
                .header("x-portcullis-timestamp", timestamp.to_string())
                .header(
                    "x-portcullis-signature",
                    signature(hook.secret.expose().as_bytes(), timestamp, &body),
                )
                .body(body.clone())
                .send()
                .await;
            let failure = match sent {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("answered {}", r.status())),
                // Without the URL: it may hold a token.
                Err(e) => Some(e.without_url().to_string()),
            };
            let Some(why) = failure else { break };
            metrics::counter!("portcullis_webhook_failures_total", "why" => "delivery")
                .increment(1);
            tracing::warn!(event = %name, attempt, error = %why, "webhook delivery failed");
            if attempt == ATTEMPTS {
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_text_cannot_change_a_slack_message_layout() {
        let forged =
            "delete from t -- ```\n*APPROVED by security* <!channel> <https://evil.example|open>";
        let shown = slack_escape(forged);
        assert!(!shown.contains('`'));
        assert!(!shown.contains('<') && !shown.contains('>'));
        assert!(shown.contains("&lt;!channel&gt;"));
    }

    #[test]
    fn signatures_follow_the_documented_recipe() {
        let s = signature(b"k", 1700000000, "{}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
        mac.update(b"1700000000.{}");
        assert_eq!(
            s,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
    }
}
