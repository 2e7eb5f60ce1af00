//! Holding a statement for review inside the client's own session.
//!
//! The core's [`ReviewBoard`] keeps the reviews and their rules; this file
//! is what PostgreSQL adds: the notices psql prints while it waits, the
//! CancelRequest (Ctrl-C) that withdraws the wait, and the refusal when
//! the wait ends without an approval. The statement itself waits in the
//! relay's read buffer, undecided, and is decided again with the outcome
//! (`FrontendTracker::review_ended`): only an approval for its exact
//! text and parameters lets it through.
//!
//! Inside a transaction the gateway does not hold: the transaction's
//! locks would be held with it, and `idle_in_transaction_session_timeout`
//! could end the session under the reviewer. The review is opened all the
//! same and the statement refused at once, naming it; run again after the
//! approval, it runs (in a transaction or not).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use portcullis_core::approvals::{Outcome, ReviewAsk, ReviewBoard, Submission};
use portcullis_core::Identity;
use portcullis_pg_decide::{Denied, Hold};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::SessionError;
use crate::relay::Handoff;
use crate::tracker::ReviewVerdict;

/// How often a held client hears that its review is still waiting.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// Longest reason kept from a comment or `SET portcullis.reason`.
const REASON_LIMIT: usize = 1000;

/// What a session needs to hold statements for review.
pub struct HoldContext {
    /// The gateway's reviews.
    pub board: Arc<ReviewBoard>,
    /// Who the session acts as.
    pub identity: Identity,
    /// The session's id.
    pub session_id: String,
    /// The connection's name.
    pub connection: String,
    /// Woken by a CancelRequest with the session's key.
    pub withdraw: Arc<tokio::sync::Notify>,
}

/// What the relay knew of the server before it sent anything of the read
/// that brought the held message.
#[derive(Debug, Clone, Copy)]
pub struct ServerState {
    /// Everything sent was answered, and no transaction is open.
    pub quiet: bool,
    /// Everything sent was answered, and the transaction has failed.
    pub failed: bool,
}

/// What a held session reads from its client at most while it waits (it
/// is decided after the held statement); past it, the client waits too.
const HOLD_READ_LIMIT: usize = 256 * 1024;

/// The held session's client: its socket and the relay's read buffer.
pub struct Client<'c, R> {
    /// The client's read half.
    pub stream: &'c mut R,
    /// Where what it sends meanwhile goes (decided after the held message).
    pub buf: &'c mut BytesMut,
}

/// How the review of `hold` ends, as the relay decides the held message
/// again; `None`: the client went away. Without `holds` (a gateway that
/// takes no reviews) the statement is refused.
pub async fn decide<R: AsyncRead + Unpin>(
    holds: Option<&HoldContext>,
    hold: &Hold,
    set_reason: Option<&str>,
    server: ServerState,
    pending: &Handoff,
    client: Client<'_, R>,
) -> Result<Option<ReviewVerdict>, SessionError> {
    match holds {
        Some(ctx) => self::hold(ctx, hold, set_reason, server, pending, client).await,
        None => Ok(Some(ReviewVerdict::Refused(Denied::new(
            format!(
                "portcullis: {} needs approval by {}, and this gateway takes no reviews; it is refused",
                hold.need.actions.join("; "),
                hold.need
                    .rules
                    .iter()
                    .map(|r| r.describe())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
            hold.need.policies.clone().into(),
        )))),
    }
}

/// Holds `hold` until its review ends, telling the client with notices.
/// Reads what the client sends meanwhile, up to a limit. `None`: the
/// client went away.
async fn hold<R: AsyncRead + Unpin>(
    ctx: &HoldContext,
    hold: &Hold,
    set_reason: Option<&str>,
    server: ServerState,
    pending: &Handoff,
    client: Client<'_, R>,
) -> Result<Option<ReviewVerdict>, SessionError> {
    let need = &hold.need;
    if server.failed && hold.alone {
        // It would fail without running: no review, no approval used up.
        return Ok(Some(ReviewVerdict::Refused(Denied::new(
            "portcullis: the statement needs review, and the transaction has failed: roll it back first".into(),
            need.policies.clone().into(),
        ).with_sqlstate("25P02"))));
    }
    let ask = ReviewAsk {
        identity: ctx.identity.clone(),
        session_id: Some(ctx.session_id.clone()),
        connection: ctx.connection.clone(),
        protocol: crate::server::PROTOCOL.to_owned(),
        action: need.actions.join("; "),
        policies: need.policies.clone(),
        rules: need.rules.clone(),
        statement: hold.statement.to_string(),
        params: hold.params.clone(),
        hash: hold.key.clone(),
        reason: comment_reason(&hold.statement).or_else(|| set_reason.map(str::to_owned)),
    };
    let refuse = |message: String| {
        Some(ReviewVerdict::Refused(Denied::new(
            message,
            need.policies.clone().into(),
        )))
    };
    let (review, wait) = match ctx.board.submit(ask).await {
        Err(e @ portcullis_core::approvals::ReviewError::TooMany { .. }) => {
            return Ok(refuse(format!("portcullis: the statement needs review, and {e}")))
        }
        Err(e) => {
            return Ok(refuse(format!(
                "portcullis: the statement needs review, and the review could not be recorded ({e}); it is refused"
            )))
        }
        Ok(Submission::Approved(approved)) => {
            let id = approved.review();
            notify(pending, format!("portcullis: review {id} approved; running the statement")).await;
            return Ok(Some(ReviewVerdict::Approved(approved)));
        }
        Ok(Submission::Waiting { review, wait }) => (review, wait),
    };
    let id = review.id;
    let reviewers = review.reviewers();
    if !(hold.alone && server.quiet) {
        return Ok(refuse(format!(
            "portcullis: {} needs approval by {reviewers}; review {id} is open, but inside a transaction a statement is not held: once review {id} is approved (portcullis reviews approve {id}), run the same statement again",
            need.actions.join("; ")
        )));
    }
    let held = Waiting {
        id,
        reviewers,
        wait,
        refused_with: need.policies.clone(),
    };
    held.until_decided(ctx, pending, client).await
}

/// A client held on review `id`.
struct Waiting {
    id: u64,
    reviewers: String,
    wait: Duration,
    /// The policies a refusal names.
    refused_with: Vec<String>,
}

impl Waiting {
    fn refuse(&self, message: String) -> Option<ReviewVerdict> {
        Some(ReviewVerdict::Refused(Denied::new(
            message,
            self.refused_with.clone().into(),
        )))
    }

    /// Waits for the decision, with a progress notice every
    /// [`PROGRESS_EVERY`], until the wait's end; a CancelRequest or the
    /// client's going away withdraws the review.
    async fn until_decided<R: AsyncRead + Unpin>(
        &self,
        ctx: &HoldContext,
        pending: &Handoff,
        client: Client<'_, R>,
    ) -> Result<Option<ReviewVerdict>, SessionError> {
        let Client { stream, buf } = client;
        let id = self.id;
        // Armed before the first notice: a Ctrl-C after it must count.
        let withdrawn = ctx.withdraw.notified();
        tokio::pin!(withdrawn);
        withdrawn.as_mut().enable();
        notify(
            pending,
            format!(
                "portcullis: review {id} is waiting for approval by {} (portcullis reviews approve {id})",
                self.reviewers
            ),
        )
        .await;
        let started = tokio::time::Instant::now();
        let deadline = started + self.wait;
        loop {
            let now = tokio::time::Instant::now();
            let slice = PROGRESS_EVERY.min(deadline.saturating_duration_since(now));
            let outcome = tokio::select! {
                o = ctx.board.wait(id, slice) => o,
                () = &mut withdrawn => {
                    let _ = ctx.board.withdraw(id, "the client canceled the statement").await;
                    return Ok(Some(ReviewVerdict::Refused(
                        Denied::new(
                            format!("portcullis: review {id} withdrawn: the client canceled the statement"),
                            self.refused_with.clone().into(),
                        )
                        .with_sqlstate("57014"),
                    )));
                }
                n = stream.read_buf(buf), if buf.len() < HOLD_READ_LIMIT => {
                    if n? == 0 {
                        let _ = ctx.board.withdraw(id, "the client disconnected").await;
                        return Ok(None);
                    }
                    continue;
                }
            };
            match outcome {
                Outcome::Pending if tokio::time::Instant::now() < deadline => {
                    let waited = started.elapsed().as_secs();
                    notify(
                        pending,
                        format!(
                            "portcullis: review {id} is still waiting for approval by {} ({waited}s of {}s)",
                            self.reviewers,
                            self.wait.as_secs()
                        ),
                    )
                    .await;
                }
                Outcome::Approved(approved) => {
                    notify(
                        pending,
                        format!("portcullis: review {id} approved; running the statement"),
                    )
                    .await;
                    return Ok(Some(ReviewVerdict::Approved(approved)));
                }
                other => return self.ended(other),
            }
        }
    }

    /// How a wait that ended without an approval answers the client.
    fn ended(&self, outcome: Outcome) -> Result<Option<ReviewVerdict>, SessionError> {
        let id = self.id;
        Ok(match outcome {
            Outcome::Approved(approved) => Some(ReviewVerdict::Approved(approved)),
            Outcome::Pending => self.refuse(format!(
                "portcullis: review {id} was not decided within {}s; it stays open: once it is approved (portcullis reviews approve {id}), run the same statement again",
                self.wait.as_secs()
            )),
            Outcome::Denied { by, reason } => self.refuse(format!(
                "portcullis: review {id} was denied by {by}{}",
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            )),
            Outcome::Ended(status) => self.refuse(format!(
                "portcullis: review {id} is {}; run the statement again to ask anew",
                status.as_str()
            )),
            Outcome::Stopping => {
                return Err(SessionError::not_allowed(format!(
                    "the gateway is stopping; review {id} stays open: once it is approved, connect again and run the same statement"
                )))
            }
        })
    }
}

/// Queues a notice, and yields so the upstream side writes it now.
async fn notify(pending: &Handoff, text: String) {
    pending.notice(text);
    tokio::task::yield_now().await;
}

/// The reason in a leading `/* reason: … */` comment.
fn comment_reason(sql: &str) -> Option<String> {
    let body = sql.trim_start().strip_prefix("/*")?;
    let end = body.find("*/")?;
    let inner = body[..end].trim();
    let (key, reason) = inner.split_once(':')?;
    (key.trim().eq_ignore_ascii_case("reason")).then(|| clip(reason.trim()))
}

/// The reason of `SET [SESSION] portcullis.reason = '…'` (or `TO`).
pub fn reason_setting(sql: &str) -> Option<String> {
    let t = sql.trim().trim_end_matches(';').trim_end();
    let rest = strip_word(t, "set")?;
    let rest = strip_word(rest, "session").unwrap_or(rest);
    let rest = strip_word(rest, "portcullis.reason")?;
    let rest = rest
        .strip_prefix('=')
        .map(str::trim_start)
        .or_else(|| strip_word(rest, "to"))?;
    let quoted = rest.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(clip(&quoted.replace("''", "'")))
}

/// `text` after a leading `word` (any case) and the blanks that follow.
fn strip_word<'t>(text: &'t str, word: &str) -> Option<&'t str> {
    let head = text.get(..word.len())?;
    let rest = &text[word.len()..];
    let ends =
        rest.is_empty() || !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_' || c == '.');
    (head.eq_ignore_ascii_case(word) && ends).then(|| rest.trim_start())
}

fn clip(text: &str) -> String {
    text.chars().take(REASON_LIMIT).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_from_comments_and_settings() {
        assert_eq!(
            comment_reason("/* reason: TICKET-1 */ delete from t").as_deref(),
            Some("TICKET-1")
        );
        assert_eq!(comment_reason("delete from t /* reason: x */"), None);
        assert_eq!(
            reason_setting("SET portcullis.reason = 'it''s TICKET-2';").as_deref(),
            Some("it's TICKET-2")
        );
        assert_eq!(
            reason_setting("set session portcullis.reason to 'x'").as_deref(),
            Some("x")
        );
        assert_eq!(reason_setting("set portcullis.reasons = 'x'"), None);
        assert_eq!(reason_setting("select 1"), None);
    }
}
