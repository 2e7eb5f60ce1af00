//! `portcullis login` and `portcullis token`: OpenID Connect login for
//! people (authorization code with PKCE through a loopback redirect, or the
//! device authorization grant), exchanged for a gateway token.

use std::time::Duration;

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use reqwest::Url;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::config::identity::LoginInfo;
use crate::credentials::Credentials;

/// How long to wait for the user to finish logging in.
const LOGIN_WAIT: Duration = Duration::from_secs(300);
/// Renew the gateway token when it has less than this left.
const RENEW_MARGIN_SECS: i64 = 30;

/// The provider endpoints discovery gives.
struct Provider {
    authorization_endpoint: String,
    token_endpoint: String,
    device_endpoint: Option<String>,
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

fn random_b64(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

async fn json_response(resp: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .with_context(|| format!("{what}: the answer is not JSON (HTTP {status})"))?;
    if !status.is_success() {
        let code = body.get("error").and_then(Value::as_str).unwrap_or("error");
        let why = body
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or("");
        bail!("{what} refused ({status}): {code}: {why}");
    }
    Ok(body)
}

async fn discover(issuer: &str) -> anyhow::Result<Provider> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let doc = json_response(
        http()
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach the identity provider at {issuer}"))?,
        "provider discovery",
    )
    .await?;
    let get = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
    if get("issuer").as_deref().map(|i| i.trim_end_matches('/'))
        != Some(issuer.trim_end_matches('/'))
    {
        bail!("the provider at {issuer} names a different issuer in its discovery document");
    }
    Ok(Provider {
        authorization_endpoint: get("authorization_endpoint")
            .context("discovery has no authorization_endpoint")?,
        token_endpoint: get("token_endpoint").context("discovery has no token_endpoint")?,
        device_endpoint: get("device_authorization_endpoint"),
    })
}

/// Exchanges the provider's ID token for a gateway token.
async fn exchange(gateway: &str, id_token: &str) -> anyhow::Result<(String, i64)> {
    let resp = http()
        .post(format!("{gateway}/oauth/token"))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", id_token),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:id_token",
            ),
        ])
        .send()
        .await
        .with_context(|| format!("cannot reach the gateway at {gateway}"))?;
    let body = json_response(resp, "the gateway's token exchange").await?;
    let token = body
        .get("access_token")
        .and_then(Value::as_str)
        .context("the gateway returned no access_token")?
        .to_owned();
    let expires_in = body.get("expires_in").and_then(Value::as_i64).unwrap_or(0);
    Ok((token, expires_in))
}

/// The unverified `sub`/`nonce` of a token, for messages and the nonce
/// check (the gateway verifies the signature).
fn peek_claim(token: &str, name: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let v: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    v.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// Options of `portcullis login`.
pub struct LoginArgs {
    /// The gateway's API URL.
    pub gateway: String,
    /// Use the device authorization grant.
    pub device: bool,
    /// Do not try to open a browser.
    pub no_browser: bool,
}

/// Runs `portcullis login`.
pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let gateway = args.gateway.trim_end_matches('/').to_owned();
    let info: LoginInfo = {
        let resp = http()
            .get(format!("{gateway}/api/login"))
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {gateway}"))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .context("the gateway's /api/login is not JSON")?;
        if !status.is_success() {
            bail!(
                "the gateway does not offer login: {}",
                body.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given")
            );
        }
        serde_json::from_value(body).context("the gateway's /api/login is malformed")?
    };
    let provider = discover(&info.issuer).await?;
    let tokens = if args.device {
        device_flow(&info, &provider).await?
    } else {
        code_flow(&info, &provider, args.no_browser).await?
    };
    let id_token = tokens
        .get("id_token")
        .and_then(Value::as_str)
        .context("the provider returned no id_token")?;
    let (access_token, expires_in) = exchange(&gateway, id_token).await?;
    let user = peek_claim(&access_token, "sub").unwrap_or_default();
    let creds = Credentials {
        gateway,
        postgres: info.postgres.clone(),
        token_endpoint: provider.token_endpoint,
        client_id: info.client_id,
        refresh_token: tokens
            .get("refresh_token")
            .and_then(Value::as_str)
            .map(str::to_owned),
        access_token,
        expires_at: portcullis_core::identity::now_secs() + expires_in,
        user,
    };
    creds.save()?;
    eprintln!(
        "Logged in as {} (token valid for {} min{}).",
        creds.user,
        expires_in / 60,
        if creds.refresh_token.is_some() {
            ", renewed automatically"
        } else {
            ""
        }
    );
    if creds.postgres.is_some() {
        eprintln!(
            "Next: portcullis connect <connection>, or PGPASSWORD=$(portcullis token) psql …"
        );
    }
    if info.ssh {
        let certified = crate::ssh_client::certify(&creds.gateway, &creds.access_token).await?;
        eprintln!(
            "SSH: a certificate for {} is in {}; `portcullis ssh <connection>`, or ssh -p {} -i {} <connection>@<gateway host>",
            certified.key.display(),
            certified.certificate.display(),
            certified.ssh_port,
            certified.key.display()
        );
    }
    Ok(())
}

/// Authorization code with PKCE (RFC 7636, S256) through a loopback
/// redirect (RFC 8252 §7.3).
async fn code_flow(info: &LoginInfo, p: &Provider, no_browser: bool) -> anyhow::Result<Value> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("opening the loopback redirect listener")?;
    let redirect = format!(
        "http://127.0.0.1:{}/callback",
        listener.local_addr()?.port()
    );
    let verifier = random_b64(32);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = random_b64(16);
    let nonce = random_b64(16);
    let mut url =
        Url::parse(&p.authorization_endpoint).context("the authorization endpoint is not a URL")?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &info.client_id)
        .append_pair("redirect_uri", &redirect)
        .append_pair("scope", &info.scopes)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    eprintln!("Open this URL in a browser to log in:\n\n  {url}\n");
    if !no_browser {
        let _ = std::process::Command::new("xdg-open")
            .arg(url.as_str())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    let code = tokio::time::timeout(LOGIN_WAIT, wait_for_code(&listener, &state))
        .await
        .context("login timed out after 5 minutes")??;
    let resp = http()
        .post(&p.token_endpoint)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("client_id", &info.client_id),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .context("cannot reach the provider's token endpoint")?;
    let tokens = json_response(resp, "the provider's token endpoint").await?;
    let id_token = tokens
        .get("id_token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if peek_claim(id_token, "nonce").as_deref() != Some(nonce.as_str()) {
        bail!("the ID token's nonce does not match this login; refusing it");
    }
    Ok(tokens)
}

/// Serves the loopback redirect until the provider sends the code.
///
/// Hand-written: one request line from the user's own browser is all there
/// is to read, and a web framework for it would outweigh the rest.
async fn wait_for_code(listener: &TcpListener, state: &str) -> anyhow::Result<String> {
    loop {
        let (mut conn, _) = listener.accept().await?;
        let mut buf = vec![0u8; 8192];
        let mut n = 0;
        while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf[n..])).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(k)) => n += k,
                Ok(Err(_)) => break,
            }
        }
        let head = String::from_utf8_lossy(&buf[..n]);
        let target = head
            .lines()
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("/");
        let url = Url::parse(&format!("http://127.0.0.1{target}"))?;
        if url.path() != "/callback" {
            let _ = conn
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            continue;
        }
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        let (status, page, result) = if q.get("state").map(String::as_str) != Some(state) {
            (
                "400 Bad Request",
                "This login link is not for this session.",
                None,
            )
        } else if let Some(e) = q.get("error") {
            let why = q.get("error_description").cloned().unwrap_or_default();
            (
                "400 Bad Request",
                "Login failed; see the terminal.",
                Some(Err(anyhow::anyhow!(
                    "login failed at the provider: {e}: {why}"
                ))),
            )
        } else if let Some(code) = q.get("code") {
            (
                "200 OK",
                "Logged in to Portcullis. You can close this tab.",
                Some(Ok(code.clone())),
            )
        } else {
            ("400 Bad Request", "The provider sent no code.", None)
        };
        let body = format!("<!doctype html><p>{page}</p>\n");
        let _ = conn
            .write_all(format!("HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes())
            .await;
        if let Some(r) = result {
            return r;
        }
    }
}

/// The device authorization grant (RFC 8628), for machines without a
/// browser.
async fn device_flow(info: &LoginInfo, p: &Provider) -> anyhow::Result<Value> {
    let endpoint = p
        .device_endpoint
        .as_deref()
        .context("the provider does not offer the device authorization grant")?;
    let resp = http()
        .post(endpoint)
        .form(&[
            ("client_id", info.client_id.as_str()),
            ("scope", info.scopes.as_str()),
        ])
        .send()
        .await
        .context("cannot reach the provider's device endpoint")?;
    let d = json_response(resp, "the provider's device endpoint").await?;
    let s = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_owned);
    let device_code = s("device_code").context("no device_code")?;
    let user_code = s("user_code").context("no user_code")?;
    let uri = s("verification_uri_complete")
        .or_else(|| s("verification_uri"))
        .context("no verification_uri")?;
    eprintln!("On any device, open\n\n  {uri}\n\nand enter the code {user_code}\n");
    let mut interval = d
        .get("interval")
        .and_then(Value::as_u64)
        .unwrap_or(5)
        .max(1);
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(d.get("expires_in").and_then(Value::as_u64).unwrap_or(300));
    loop {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        if tokio::time::Instant::now() > deadline {
            bail!("the device code expired before the login was finished");
        }
        let resp = http()
            .post(&p.token_endpoint)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", &device_code),
                ("client_id", &info.client_id),
            ])
            .send()
            .await
            .context("cannot reach the provider's token endpoint")?;
        let ok = resp.status().is_success();
        let body: Value = resp
            .json()
            .await
            .context("the token endpoint's answer is not JSON")?;
        if ok {
            return Ok(body);
        }
        match body.get("error").and_then(Value::as_str) {
            Some("authorization_pending") => {}
            Some("slow_down") => interval += 5,
            Some(e) => bail!(
                "login failed at the provider: {e}: {}",
                body.get("error_description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            ),
            None => bail!("the token endpoint refused without a reason"),
        }
    }
}

/// The stored login with a gateway token that is still good, renewing it
/// through the refresh token when it is about to expire.
pub async fn fresh_credentials() -> anyhow::Result<Credentials> {
    let mut c = Credentials::load()?;
    if c.remaining() > RENEW_MARGIN_SECS {
        return Ok(c);
    }
    let Some(refresh) = c.refresh_token.clone() else {
        bail!(
            "your login for {} has expired: run `portcullis login`",
            c.user
        );
    };
    let resp = http()
        .post(&c.token_endpoint)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("client_id", c.client_id.as_str()),
        ])
        .send()
        .await
        .context("cannot reach the identity provider to renew the login")?;
    let tokens = json_response(resp, "renewing the login")
        .await
        .with_context(|| {
            format!(
                "your login for {} has expired: run `portcullis login`",
                c.user
            )
        })?;
    let id_token = tokens
        .get("id_token")
        .and_then(Value::as_str)
        .context("the provider's refresh returned no id_token: run `portcullis login`")?;
    let (token, expires_in) = exchange(&c.gateway, id_token).await?;
    c.access_token = token;
    c.expires_at = portcullis_core::identity::now_secs() + expires_in;
    if let Some(r) = tokens.get("refresh_token").and_then(Value::as_str) {
        c.refresh_token = Some(r.to_owned());
    }
    c.save()?;
    Ok(c)
}

/// Runs `portcullis token`: prints a good gateway token.
pub async fn print_token() -> anyhow::Result<()> {
    let c = fresh_credentials().await?;
    println!("{}", c.access_token);
    Ok(())
}
