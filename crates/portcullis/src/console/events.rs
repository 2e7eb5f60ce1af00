//! Server-sent events that tell a page to refresh: the live sessions list
//! when a session starts or ends, the reviews inbox when a review the
//! viewer may see changes. Events carry no content of their own; the page
//! fetches itself again, through the same decisions as any request.
//!
//! A stream checks its viewer's token, and its permission, again on every
//! event and every 15 s, and ends when either no longer holds. It ends
//! after five minutes anyway, and the browser's EventSource reconnects
//! (through the same checks). Streams hold API connections, so they are
//! capped apart from them: 256 in all, 4 per identity.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use portcullis_core::approvals::Review;
use portcullis_core::Action;
use tokio::sync::{broadcast, watch};

use super::{Console, ConsoleError, Viewer};

/// How long one stream lives before the browser reconnects.
const STREAM_LIFETIME: Duration = Duration::from_secs(300);
/// How often a quiet stream checks that its viewer still may follow it.
const RECHECK: Duration = Duration::from_secs(15);
/// Streams open at once, and per identity.
const MAX_STREAMS: usize = 256;
const MAX_STREAMS_PER_USER: usize = 4;

/// Open streams, in all and per identity.
#[derive(Default)]
pub struct StreamSlots {
    open: Mutex<HashMap<String, usize>>,
}

/// One open stream's place; given back when the stream ends.
struct Slot {
    slots: Arc<StreamSlots>,
    user: String,
}

impl StreamSlots {
    fn take(self: &Arc<Self>, user: &str) -> Result<Slot, ConsoleError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = open.values().sum();
        let theirs = open.get(user).copied().unwrap_or(0);
        if total >= MAX_STREAMS || theirs >= MAX_STREAMS_PER_USER {
            return Err(ConsoleError::Page(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many live pages open ({theirs} of yours, {total} in all); close some, or reload without live updates"),
            ));
        }
        *open.entry(user.to_owned()).or_default() += 1;
        Ok(Slot {
            slots: self.clone(),
            user: user.to_owned(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

fn sse<S>(stream: S) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(RECHECK))
        .into_response()
}

/// What a stream keeps between events.
struct Follow<T> {
    console: Console,
    headers: HeaderMap,
    peer: SocketAddr,
    source: T,
    until: Instant,
    _slot: Slot,
}

impl<T> Follow<T> {
    /// The viewer, if their token and (for `needs`) policy still hold.
    async fn still_allowed(&self, needs: Option<Action>) -> Option<Viewer> {
        let viewer = self
            .console
            .viewer(&self.headers, self.peer, "/")
            .await
            .ok()?;
        let allowed = needs.is_none_or(|action| {
            crate::api::reviews::gateway_allows(
                &self.console.api,
                &viewer.identity,
                self.peer,
                action,
            )
        });
        allowed.then_some(viewer)
    }

    /// Time left, at most one recheck interval; `None` once the stream's
    /// life is over.
    fn next_wait(&self) -> Option<Duration> {
        let left = self.until.checked_duration_since(Instant::now())?;
        Some(left.min(RECHECK))
    }
}

/// `GET /events/sessions`: `sessions` whenever a session starts or ends.
pub async fn sessions(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let viewer = c
        .viewer_allowed(&headers, peer, "/sessions", Action::VIEW_SESSIONS)
        .await?;
    let follow = Follow {
        _slot: c.streams.take(&viewer.identity.user)?,
        source: c.api.core.sessions.changes(),
        console: c,
        headers,
        peer,
        until: Instant::now() + STREAM_LIFETIME,
    };
    Ok(sse(stream::unfold(follow, next_session_change)))
}

async fn next_session_change(
    mut f: Follow<watch::Receiver<u64>>,
) -> Option<(Result<Event, Infallible>, Follow<watch::Receiver<u64>>)> {
    loop {
        let wait = f.next_wait()?;
        let changed = tokio::time::timeout(wait, f.source.changed()).await;
        f.still_allowed(Some(Action::VIEW_SESSIONS)).await?;
        match changed {
            Ok(Ok(())) => {
                // Another start or end in the same instant is one refresh.
                f.source.mark_unchanged();
                let live = f.console.api.core.sessions.len().to_string();
                return Some((Ok(Event::default().event("sessions").data(live)), f));
            }
            Ok(Err(_)) => return None,
            Err(_) => continue,
        }
    }
}

/// `GET /events/reviews`: `reviews` whenever a review the viewer may see
/// is asked for, decided or ends.
pub async fn reviews(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let viewer = c.viewer(&headers, peer, "/reviews").await?;
    let follow = Follow {
        _slot: c.streams.take(&viewer.identity.user)?,
        source: c.api.core.reviews.subscribe(),
        console: c,
        headers,
        peer,
        until: Instant::now() + STREAM_LIFETIME,
    };
    Ok(sse(stream::unfold(follow, next_review_change)))
}

async fn next_review_change(
    mut f: Follow<broadcast::Receiver<portcullis_core::approvals::ReviewEvent>>,
) -> Option<(
    Result<Event, Infallible>,
    Follow<broadcast::Receiver<portcullis_core::approvals::ReviewEvent>>,
)> {
    loop {
        let wait = f.next_wait()?;
        let received = tokio::time::timeout(wait, f.source.recv()).await;
        let viewer = f.still_allowed(None).await?;
        let review: Option<Review> = match received {
            Ok(Ok(e)) => Some(e.review),
            // Missed some: refresh anyway.
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => None,
            Ok(Err(broadcast::error::RecvError::Closed)) => return None,
            Err(_) => continue,
        };
        let seen = review.as_ref().is_none_or(|r| {
            crate::api::reviews::may_see(&f.console.api, &viewer.identity, f.peer, r)
        });
        if seen {
            let id = review.map(|r| r.id.to_string()).unwrap_or_default();
            return Some((Ok(Event::default().event("reviews").data(id)), f));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_capped_per_identity_and_given_back() {
        let slots = Arc::new(StreamSlots::default());
        let held: Vec<_> = (0..MAX_STREAMS_PER_USER)
            .map(|_| slots.take("eve").ok().unwrap())
            .collect();
        assert!(slots.take("eve").is_err());
        assert!(slots.take("admin").is_ok());
        drop(held);
        assert!(slots.take("eve").is_ok());
    }
}
