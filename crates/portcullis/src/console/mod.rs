//! The web console: server-rendered pages for reviewers, auditors and
//! admins, served with the API (`[listen] api`) at `/`.
//!
//! It holds no logic of its own about who may do what: each page and
//! action is decided by the same Cedar policies and the same functions as
//! the API (`permit`, `reviews::decide_as`, `grants::revoke_as`,
//! `recordings::verified`), and each is recorded as an `api_call` with
//! `"via": "console"`. The browser holds only an opaque session cookie;
//! the token behind it stays in the gateway's memory and is verified again
//! on every request, so revocation and expiry end a console session as
//! they end any other.

mod assets;
mod auth;
mod config_pages;
mod cookies;
mod events;
mod login;
mod reviews;
mod sessions;
pub mod setup;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use portcullis_core::{Action, Identity};

use crate::api::{ApiError, ApiState};
pub use auth::{ConsoleLogins, OidcClient};
pub use config_pages::{ConnectionView, Connections, EvidenceCheck};

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    /// The API's state: the same core, store and policies.
    pub api: ApiState,
    /// Signed-in browsers.
    pub logins: Arc<ConsoleLogins>,
    /// Sign-in through the OIDC issuer, when `[login]` names one.
    pub oidc: Option<Arc<OidcClient>>,
    /// The configured connections, and how to check each.
    pub connections: Arc<Connections>,
    /// How to verify the evidence chain.
    pub evidence: Arc<EvidenceCheck>,
    /// Live-update streams open.
    pub streams: Arc<events::StreamSlots>,
}

/// The console's routes.
pub fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/sessions") }))
        .route("/login", get(login::page).post(login::with_token))
        .route("/login/oidc", get(login::start_oidc))
        .route("/login/callback", get(login::callback))
        .route("/logout", post(login::logout))
        .route("/sessions", get(sessions::list))
        .route("/sessions/{id}", get(sessions::detail))
        .route("/sessions/{id}/kill", post(sessions::kill))
        .route("/sessions/{id}/recordings/{file}", get(sessions::recording))
        .route("/reviews", get(reviews::inbox))
        .route("/reviews/{id}/decide", post(reviews::decide))
        .route("/grants", get(reviews::grants))
        .route("/grants/{id}/revoke", post(reviews::revoke_grant))
        .route("/policy", get(config_pages::what_if))
        .route("/connections", get(config_pages::connections))
        .route(
            "/audit",
            get(config_pages::audit).post(config_pages::verify),
        )
        .route("/events/sessions", get(events::sessions))
        .route("/events/reviews", get(events::reviews))
        .route("/assets/{file}", get(assets::serve))
        .layer(axum::middleware::from_fn(view::security_headers))
        .with_state(console)
}

/// A signed-in browser's identity, verified again for this request.
pub struct Viewer {
    /// Who.
    pub identity: Identity,
    /// The session's CSRF token, which every form must carry back.
    pub csrf: String,
    /// The client's address.
    pub peer: SocketAddr,
}

/// A console failure: a page saying what went wrong, or a redirect to the
/// sign-in page.
pub enum ConsoleError {
    /// Not signed in (or no longer): sign in, then come back to `next`.
    SignIn {
        /// Where to come back to.
        next: String,
        /// Whether a session was ended (its token expired or was revoked):
        /// the sign-in page says so. A fixed word, not text, so that a
        /// link cannot make the page say something of its own.
        ended: bool,
    },
    /// A refusal or failure with its status.
    Page(StatusCode, String),
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        ConsoleError::Page(e.0, e.1)
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: view::Nav,
    status: u16,
    title: &'static str,
    message: String,
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        match self {
            ConsoleError::SignIn { next, ended } => {
                let mut url = format!("/login?next={}", view::query_escape(&next));
                if ended {
                    url.push_str("&why=ended");
                }
                Redirect::to(&url).into_response()
            }
            ConsoleError::Page(status, message) => {
                let page = ErrorPage {
                    nav: view::Nav::anonymous(),
                    status: status.as_u16(),
                    title: status.canonical_reason().unwrap_or("Error"),
                    message,
                };
                (status, view::render(&page)).into_response()
            }
        }
    }
}

impl Console {
    /// The signed-in viewer of a request, or a redirect to sign in.
    pub async fn viewer(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        here: &str,
    ) -> Result<Viewer, ConsoleError> {
        let sign_in = |ended: bool| ConsoleError::SignIn {
            next: here.to_owned(),
            ended,
        };
        let Some(cookie) = cookies::get(headers, cookies::SESSION) else {
            return Err(sign_in(false));
        };
        let Some((token, csrf)) = self.logins.get(&cookie) else {
            return Err(sign_in(false));
        };
        match self.api.core.authenticator.authenticate(&token).await {
            Ok(identity) => Ok(Viewer {
                identity,
                csrf,
                peer,
            }),
            Err(e) => {
                // Expired or revoked: the console session ends with it.
                self.logins.remove(&cookie);
                tracing::info!(%peer, error = %e, "console session ended: its token no longer holds");
                Err(sign_in(true))
            }
        }
    }

    /// The viewer, once policy allows them `action` on the gateway.
    pub async fn viewer_allowed(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        here: &str,
        action: Action,
    ) -> Result<Viewer, ConsoleError> {
        let viewer = self.viewer(headers, peer, here).await?;
        crate::api::permit(&self.api, &viewer.identity, peer, action, "console").await?;
        Ok(viewer)
    }

    /// The viewer of a form post, once its CSRF token and origin check.
    pub async fn poster(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        csrf: &str,
    ) -> Result<Viewer, ConsoleError> {
        auth::same_origin(headers)?;
        let viewer = self.viewer(headers, peer, "/").await?;
        if !auth::tokens_match(&viewer.csrf, csrf) {
            tracing::warn!(user = %viewer.identity.describe(), %peer, "console form refused: its CSRF token is missing or wrong");
            return Err(ConsoleError::Page(
                StatusCode::FORBIDDEN,
                "this form did not come from the console (its CSRF token is missing or wrong); reload the page and try again".into(),
            ));
        }
        Ok(viewer)
    }

    /// The viewer of a form post, once it passes [`Console::poster`] and
    /// policy allows them `action` on the gateway.
    pub async fn poster_allowed(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        csrf: &str,
        action: Action,
    ) -> Result<Viewer, ConsoleError> {
        let viewer = self.poster(headers, peer, csrf).await?;
        crate::api::permit(&self.api, &viewer.identity, peer, action, "console").await?;
        Ok(viewer)
    }

    /// The navigation bar for `viewer`.
    pub fn nav(&self, viewer: &Viewer, here: &'static str) -> view::Nav {
        view::Nav::for_viewer(viewer, here)
    }
}

/// A form that carries only its CSRF token.
#[derive(Debug, serde::Deserialize)]
pub struct CsrfForm {
    /// The session's CSRF token.
    pub csrf: String,
}

/// A rendered page, or the error page when a template fails.
pub fn page<T: Template>(t: &T) -> Response {
    view::render(t).into_response()
}

/// A 303 to `to`, after a form post.
pub fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

/// `Html` of a string, for handlers that build no template.
pub fn html(body: String) -> Html<String> {
    Html(body)
}
