//! Signing in and out: with the OIDC issuer (authorization code with
//! PKCE), or by pasting a token (static tokens in local mode, or any token
//! the gateway accepts).

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;

use super::auth::{challenge, nonce_of, random_token, same_origin, tokens_match};
use super::{cookies, view, Console, ConsoleError};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: view::Nav,
    issuer: Option<String>,
    next: String,
    form_token: String,
    message: Option<String>,
}

/// Query of the sign-in page.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    why: Option<String>,
}

/// Where to go after signing in: a path of the console, never another
/// site (`//evil`, `/\evil`).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.to_owned()
        }
        _ => "/sessions".to_owned(),
    }
}

fn login_page(c: &Console, next: String, message: Option<String>, status: StatusCode) -> Response {
    let form_token = random_token(24);
    let page = LoginPage {
        nav: view::Nav::anonymous(),
        issuer: c.oidc.as_ref().map(|o| o.issuer.clone()),
        next,
        form_token: form_token.clone(),
        message,
    };
    let mut r = (status, view::render(&page)).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        cookies::set(cookies::PRE_LOGIN, &form_token, "Strict", Some(3600)),
    );
    r
}

/// `GET /login`.
pub async fn page(State(c): State<Console>, Query(q): Query<LoginQuery>) -> Response {
    login_page(
        &c,
        safe_next(q.next.as_deref()),
        (q.why.as_deref() == Some("ended")).then(|| {
            "your session ended: its token expired or was revoked; sign in again".to_owned()
        }),
        StatusCode::OK,
    )
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    token: String,
    form_token: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /login`: signs in with a token.
pub async fn with_token(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Result<Response, ConsoleError> {
    same_origin(&headers)?;
    let next = safe_next(form.next.as_deref());
    let bound = cookies::get(&headers, cookies::PRE_LOGIN).unwrap_or_default();
    if !tokens_match(&bound, &form.form_token) {
        return Ok(login_page(
            &c,
            next,
            Some("the sign-in form expired or came from another page; try again".into()),
            StatusCode::FORBIDDEN,
        ));
    }
    let token = form.token.trim().to_owned();
    match c.api.core.authenticator.authenticate(&token).await {
        Ok(identity) => {
            tracing::info!(user = %identity.describe(), %peer, "console sign-in with a token");
            record_sign_in(&c, &identity, peer, "token").await;
            Ok(signed_in(&c, token, &identity.describe(), &next, false))
        }
        Err(e) => {
            metrics::counter!("portcullis_auth_failures_total", "reason" => e.label()).increment(1);
            tracing::info!(%peer, error = %e, "console sign-in refused");
            Ok(login_page(
                &c,
                next,
                Some(format!("token authentication failed: {e}")),
                StatusCode::UNAUTHORIZED,
            ))
        }
    }
}

/// Sets the session cookie and goes on to `next`. After the issuer's
/// cross-site redirect, a page of our own moves on (a `SameSite=Strict`
/// cookie is not sent on the rest of a cross-site redirect chain).
fn signed_in(c: &Console, token: String, user: &str, next: &str, via_redirect: bool) -> Response {
    let cookie = c.logins.add(token, user);
    let mut r = if via_redirect {
        let escaped = askama::filters::escape(next, askama::filters::Html)
            .map(|e| e.to_string())
            .unwrap_or_else(|_| "/sessions".into());
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={escaped}\"><title>Signed in</title></head><body><p>Signed in. <a href=\"{escaped}\">Continue</a></p></body></html>"
        );
        super::html(body).into_response()
    } else {
        super::see_other(next)
    };
    let h = r.headers_mut();
    h.append(
        header::SET_COOKIE,
        cookies::set(cookies::SESSION, &cookie, "Strict", None),
    );
    h.append(header::SET_COOKIE, cookies::clear(cookies::PRE_LOGIN));
    h.append(header::SET_COOKIE, cookies::clear(cookies::OIDC));
    r
}

/// `GET /login/oidc`: sends the browser to the issuer.
pub async fn start_oidc(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    scheme: Option<Extension<crate::api::server::Scheme>>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response, ConsoleError> {
    let oidc = c.oidc.clone().ok_or_else(|| {
        ConsoleError::Page(
            StatusCode::NOT_FOUND,
            "sign-in with an OIDC issuer is not configured ([login])".into(),
        )
    })?;
    let (authorize, _) = oidc
        .endpoints()
        .await
        .map_err(|e| ConsoleError::Page(StatusCode::BAD_GATEWAY, e))?;
    let redirect_uri = match &oidc.public_url {
        Some(base) => format!("{}/login/callback", base.trim_end_matches('/')),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .ok_or_else(|| {
                    ConsoleError::Page(StatusCode::BAD_REQUEST, "the request has no Host".into())
                })?;
            let scheme = scheme.map(|Extension(s)| s.0).unwrap_or("http");
            format!("{scheme}://{host}/login/callback")
        }
    };
    let verifier = random_token(32);
    let nonce = random_token(16);
    let binding = random_token(24);
    let state = c.logins.start(
        peer.ip(),
        verifier.clone(),
        nonce.clone(),
        binding.clone(),
        redirect_uri.clone(),
        safe_next(q.next.as_deref()),
    );
    let mut url = reqwest::Url::parse(authorize).map_err(|_| {
        ConsoleError::Page(
            StatusCode::BAD_GATEWAY,
            "the issuer's authorization endpoint is not a URL".into(),
        )
    })?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &oidc.client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", &oidc.scopes)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    let mut r = super::see_other(url.as_str());
    r.headers_mut().append(
        header::SET_COOKIE,
        cookies::set(cookies::OIDC, &binding, "Lax", Some(600)),
    );
    Ok(r)
}

/// The issuer's redirect back.
#[derive(Debug, Deserialize)]
pub struct Callback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// `GET /login/callback`.
pub async fn callback(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Result<Response, ConsoleError> {
    let fail = |status, m: String| Ok(login_page(&c, "/sessions".into(), Some(m), status));
    let oidc = c.oidc.clone().ok_or_else(|| {
        ConsoleError::Page(
            StatusCode::NOT_FOUND,
            "OIDC sign-in is not configured".into(),
        )
    })?;
    if let Some(e) = q.error {
        // Only the error code is shown, and only as a code: the rest of a
        // redirect anyone can craft would be their words on our page.
        let code: String = e
            .chars()
            .filter(|c| c.is_ascii_lowercase() || *c == '_')
            .take(40)
            .collect();
        tracing::info!(error = %code, description = ?q.error_description, "the issuer refused a console sign-in");
        return fail(
            StatusCode::UNAUTHORIZED,
            format!("the issuer refused the sign-in ({code})"),
        );
    }
    let pending = q.state.as_deref().and_then(|s| c.logins.finish(s));
    let bound = cookies::get(&headers, cookies::OIDC).unwrap_or_default();
    let (Some(pending), Some(code)) = (pending, q.code) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "this sign-in is unknown or expired; start again".into(),
        );
    };
    // The state must come back to the browser that was sent away with it.
    if !tokens_match(&pending.binding, &bound) {
        tracing::warn!(%peer, "console OIDC callback refused: its state belongs to another browser");
        return fail(
            StatusCode::FORBIDDEN,
            "this sign-in was started in another browser; start again".into(),
        );
    }
    let token = match oidc.id_token(&pending, &code).await {
        Ok(t) => t,
        Err(e) => return fail(StatusCode::BAD_GATEWAY, e),
    };
    let identity = match c.api.core.authenticator.authenticate(&token).await {
        Ok(i) => i,
        Err(e) => {
            return fail(
                StatusCode::UNAUTHORIZED,
                format!("token authentication failed: {e}"),
            )
        }
    };
    if nonce_of(&token).as_deref() != Some(pending.nonce.as_str()) {
        tracing::warn!(%peer, "console OIDC callback refused: the ID token's nonce does not match");
        return fail(
            StatusCode::FORBIDDEN,
            "the ID token does not carry this sign-in's nonce".into(),
        );
    }
    tracing::info!(user = %identity.describe(), %peer, "console sign-in through the issuer");
    record_sign_in(&c, &identity, peer, "oidc").await;
    Ok(signed_in(
        &c,
        token,
        &identity.describe(),
        &pending.next,
        true,
    ))
}

/// Records a sign-in in the evidence chain: who, how, from where.
async fn record_sign_in(
    c: &Console,
    identity: &portcullis_core::Identity,
    peer: SocketAddr,
    how: &str,
) {
    let note = serde_json::json!({
        "user": identity.user,
        "actor": identity.actor,
        "auth_method": identity.method,
        "via": how,
        "client_address": peer.ip().to_string(),
    });
    let _ = c
        .api
        .core
        .recorder
        .record(portcullis_core::AuditEvent::note("console_sign_in", note))
        .await;
}

/// `POST /logout`.
pub async fn logout(
    State(c): State<Console>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<super::CsrfForm>,
) -> Result<Response, ConsoleError> {
    c.poster(&headers, peer, &form.csrf).await?;
    if let Some(cookie) = cookies::get(&headers, cookies::SESSION) {
        c.logins.remove(&cookie);
    }
    let mut r = super::see_other("/login");
    r.headers_mut()
        .append(header::SET_COOKIE, cookies::clear(cookies::SESSION));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_the_console() {
        assert_eq!(safe_next(Some("/reviews")), "/reviews");
        assert_eq!(safe_next(Some("//evil.example")), "/sessions");
        assert_eq!(safe_next(Some("/\\evil.example")), "/sessions");
        assert_eq!(safe_next(Some("https://evil.example")), "/sessions");
        assert_eq!(safe_next(None), "/sessions");
    }
}
