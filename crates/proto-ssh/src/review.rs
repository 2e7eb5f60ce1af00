//! Holding a shell or exec for review inside the client's own session:
//! the client's channel waits, with a progress line on its stderr, until a
//! reviewer approves (it runs), denies, or the wait ends (it is refused).
//! Closing the channel withdraws the review.

use std::time::Duration;

use portcullis_core::approvals::{Outcome, ReviewAsk, Submission};
use portcullis_core::Verdict;
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelMsg};
use sha2::{Digest, Sha256};

use crate::request::Classified;
use crate::session::{Conn, Live};
use crate::PROTOCOL;

/// How often a held client hears that its review is still waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// Holds the request until its review ends; `Err`: the line that refuses
/// it.
pub(crate) async fn hold(
    conn: &Conn,
    live: &Live,
    request: &Classified,
    verdict: &Verdict,
    client: &mut Channel<Msg>,
    handle: &Handle,
) -> Result<(), String> {
    let board = &conn.shared.core.reviews;
    let action = request.action.as_str();
    let hash = hex::encode(Sha256::digest(
        format!(
            "{PROTOCOL}\0{}\0{action}\0{}",
            live.connection, request.text
        )
        .as_bytes(),
    ));
    let ask = ReviewAsk {
        identity: live.identity.clone(),
        session_id: Some(live.session_id.clone()),
        connection: live.connection.clone(),
        protocol: PROTOCOL.to_owned(),
        action: action.to_owned(),
        policies: verdict.policies.clone(),
        rules: verdict.reviews.clone(),
        statement: request.text.clone(),
        params: Vec::new(),
        hash,
        reason: None,
    };
    let id = client.id();
    let say = |line: String| async move {
        let _ = handle
            .extended_data(id, 1, format!("{line}\r\n").into_bytes())
            .await;
    };
    let (review, wait) = match board.submit(ask).await {
        Err(e) => return Err(format!("portcullis: {action} needs review, and {e}")),
        Ok(Submission::Approved(approved)) => {
            say(format!(
                "portcullis: review {} approved; running it",
                approved.review()
            ))
            .await;
            return Ok(());
        }
        Ok(Submission::Waiting { review, wait }) => (review, wait),
    };
    let review_id = review.id;
    let reviewers = review.reviewers();
    say(format!(
        "portcullis: {action} needs approval by {reviewers}; review {review_id} is waiting (portcullis reviews approve {review_id})"
    ))
    .await;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let slice =
            PROGRESS_EVERY.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let outcome = tokio::select! {
            o = board.wait(review_id, slice) => o,
            msg = client.wait() => match msg {
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                    let _ = board.withdraw(review_id, "the client closed the channel").await;
                    return Err(format!("portcullis: review {review_id} withdrawn: the client went away"));
                }
                Some(_) => continue,
            },
            () = conn.done.cancelled() => {
                let _ = board.withdraw(review_id, "the session ended").await;
                return Err(format!("portcullis: review {review_id} withdrawn: the session ended"));
            }
        };
        match outcome {
            Outcome::Approved(_) => {
                say(format!("portcullis: review {review_id} approved; running it")).await;
                return Ok(());
            }
            Outcome::Pending if tokio::time::Instant::now() < deadline => {
                say(format!("portcullis: review {review_id} is still waiting for approval by {reviewers}")).await;
            }
            Outcome::Pending => {
                return Err(format!(
                    "portcullis: review {review_id} was not decided within {}s; once it is approved, run it again",
                    wait.as_secs()
                ))
            }
            Outcome::Denied { by, reason } => {
                return Err(format!(
                    "portcullis: review {review_id} was denied by {by}{}",
                    reason.map(|r| format!(": {r}")).unwrap_or_default()
                ))
            }
            Outcome::Ended(status) => {
                return Err(format!(
                    "portcullis: review {review_id} is {}; run it again to ask anew",
                    status.as_str()
                ))
            }
            Outcome::Stopping => {
                return Err(format!("portcullis: the gateway is stopping; review {review_id} stays open"))
            }
        }
    }
}
