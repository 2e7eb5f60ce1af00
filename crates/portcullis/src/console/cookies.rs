//! The console's cookies. `__Host-` names make the browser insist on
//! `Secure`, `Path=/` and no `Domain`, so a sibling host cannot plant one.
//! Browsers treat loopback as secure, so `Secure` holds for a gateway on
//! 127.0.0.1 over plain HTTP too.

use axum::http::{header, HeaderMap, HeaderValue};

/// The signed-in session (opaque; the gateway keeps what it stands for).
pub const SESSION: &str = "__Host-portcullis";
/// Binds the sign-in form to the browser that loaded it (login CSRF).
pub const PRE_LOGIN: &str = "__Host-portcullis-login";
/// Binds an OIDC redirect's `state` to the browser that started it. Lax,
/// because the issuer's redirect back is a cross-site navigation.
pub const OIDC: &str = "__Host-portcullis-oidc";

/// The value of cookie `name`, if the request carries it.
pub fn get(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` for `name` (`HttpOnly`, `Secure`, `Path=/`).
pub fn set(name: &str, value: &str, same_site: &str, max_age_secs: Option<u64>) -> HeaderValue {
    let age = max_age_secs
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    let text = format!("{name}={value}; Path=/; HttpOnly; Secure; SameSite={same_site}{age}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A `Set-Cookie` that removes `name`.
pub fn clear(name: &str) -> HeaderValue {
    set(name, "", "Strict", Some(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_cookie_among_several_headers_and_pairs() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-portcullis=xyz"),
        );
        assert_eq!(get(&h, "b").as_deref(), Some("2"));
        assert_eq!(get(&h, SESSION).as_deref(), Some("xyz"));
        assert_eq!(get(&h, "c"), None);
    }
}
