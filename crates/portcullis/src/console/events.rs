//! Server-sent events that tell a page to refresh: the live sessions list
//! when a session starts or ends, the reviews inbox when a review the
//! viewer may see changes. Events carry no content of their own; the page
//! fetches itself again, through the same decisions as any request.
//!
//! A stream checks its viewer's token again on every event and ends when
//! it no longer holds; it also ends after a while, and the browser's
//! EventSource reconnects (through the same checks).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use portcullis_core::Action;

use super::{Console, ConsoleError};

/// How long one stream lives before the browser reconnects.
const STREAM_LIFETIME: Duration = Duration::from_secs(300);

fn sse<S>(stream: S) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// `GET /events/sessions`: `sessions` whenever a session starts or ends.
pub async fn sessions(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    c.viewer_allowed(&headers, peer, "/sessions", Action::VIEW_SESSIONS)
        .await?;
    let changes = c.api.core.sessions.changes();
    let until = Instant::now() + STREAM_LIFETIME;
    let events = stream::unfold(
        (c, headers, changes),
        move |(c, headers, mut changes)| async move {
            let left = until.checked_duration_since(Instant::now())?;
            tokio::time::timeout(left, changes.changed())
                .await
                .ok()?
                .ok()?;
            // Another start or end in the same instant is one refresh.
            changes.mark_unchanged();
            c.viewer(&headers, peer, "/sessions").await.ok()?;
            let event = Event::default()
                .event("sessions")
                .data(c.api.core.sessions.len().to_string());
            Some((Ok(event), (c, headers, changes)))
        },
    );
    Ok(sse(events))
}

/// `GET /events/reviews`: `reviews` whenever a review the viewer may see
/// is asked for, decided or ends.
pub async fn reviews(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    c.viewer(&headers, peer, "/reviews").await?;
    let board = c.api.core.reviews.subscribe();
    let until = Instant::now() + STREAM_LIFETIME;
    let events = stream::unfold(
        (c, headers, board),
        move |(c, headers, mut board)| async move {
            loop {
                let left = until.checked_duration_since(Instant::now())?;
                let review = match tokio::time::timeout(left, board.recv()).await.ok()? {
                    Ok(e) => Some(e.review),
                    // Missed some: refresh anyway.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                };
                let viewer = c.viewer(&headers, peer, "/reviews").await.ok()?;
                let seen = match &review {
                    Some(r) => crate::api::reviews::may_see(&c.api, &viewer.identity, peer, r),
                    None => true,
                };
                if seen {
                    let id = review.map(|r| r.id.to_string()).unwrap_or_default();
                    let event = Event::default().event("reviews").data(id);
                    return Some((Ok(event), (c, headers, board)));
                }
            }
        },
    );
    Ok(sse(events))
}
