//! What every page shares: the navigation, rendering, headers, and the
//! small formatting helpers templates call.

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use time::OffsetDateTime;

use super::Viewer;

/// The navigation bar: who is signed in, which page is current, and the
/// CSRF token for the sign-out form.
pub struct Nav {
    /// `alice`, or `agent-x acting for alice`; empty when signed out.
    pub who: String,
    /// The current page's path (`/sessions`), to mark its link.
    pub here: &'static str,
    /// The session's CSRF token.
    pub csrf: String,
}

impl Nav {
    /// The bar of a page shown to nobody signed in.
    pub fn anonymous() -> Self {
        Self {
            who: String::new(),
            here: "",
            csrf: String::new(),
        }
    }

    /// The bar of `viewer`'s page at `here`.
    pub fn for_viewer(viewer: &Viewer, here: &'static str) -> Self {
        Self {
            who: viewer.identity.describe(),
            here,
            csrf: viewer.csrf.clone(),
        }
    }

    /// The links, with `aria-current` on the current one.
    pub fn links(&self) -> Vec<(&'static str, &'static str, bool)> {
        [
            ("/sessions", "Sessions"),
            ("/reviews", "Reviews"),
            ("/grants", "Grants"),
            ("/policy", "Policy what-if"),
            ("/connections", "Connections"),
            ("/audit", "Audit"),
        ]
        .into_iter()
        .map(|(href, label)| (href, label, href == self.here))
        .collect()
    }
}

/// Renders a template; a template failure is a 500 with a plain message.
pub fn render<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(body) => Html(body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// Percent-encodes `s` for a query value.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A time as `2026-12-07 18:40:12 UTC`.
pub fn when(t: &OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Seconds since the epoch as [`when`] shows them.
pub fn when_unix(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .map(|t| when(&t))
        .unwrap_or_else(|_| secs.to_string())
}

/// Microseconds as `12.3 ms`.
pub fn duration_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else {
        format!("{:.1} ms", us as f64 / 1e3)
    }
}

/// Headers every console answer carries: no framing, no sniffing, no
/// referrer to other sites (same-origin still gets one, and with it the
/// `Origin` the form check reads: under `no-referrer` browsers send
/// `Origin: null`), a content security policy with no inline script, and no
/// caching of pages that show evidence.
pub async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let is_asset = request.uri().path().starts_with("/assets/");
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    // The terminal player compiles its WebAssembly terminal, hence
    // 'wasm-unsafe-eval'; it sets element styles, hence 'unsafe-inline'
    // for styles only.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
