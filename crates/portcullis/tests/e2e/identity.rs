//! Identity against a real OpenID Connect provider (npm `oidc-provider`):
//! tokens as passwords, groups, CI workload rules, token exchange for
//! agents, key rotation, refusals, revocation, expiry and the login client.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portcullis_testkit::{
    base64url, curl as curl_raw, psql, Gateway, OidcProvider, ADMIN_TOKEN, ALICE_TOKEN,
};
use serde_json::Value;

use crate::common::*;

const POLICIES: &str = r#"
@id("engineering-uses-app")
permit(principal in Group::"engineering", action, resource in Connection::"app-db");
@id("admins-all")
permit(principal in Group::"admins", action, resource);
@id("deployers-read")
permit(principal in Group::"app-deployers", action in [Action::"connect", Action::"read"], resource in Connection::"app-db");
@id("agents-only-read")
forbid(principal, action in [Action::"write", Action::"ddl", Action::"admin"], resource)
when { context has actor };
"#;

/// A gateway trusting `p` for people (the CLI clients) and for services
/// (client-credentials tokens for `urn:portcullis`, mapped by rules).
pub(crate) fn oidc_gateway(p: &OidcProvider, auth: &str) -> Gateway {
    let issuer = p.issuer();
    gateway()
        .app_db("app-db", cluster())
        .policies(POLICIES)
        .extra(&format!(
            r#"
[auth]
{auth}

[[oidc]]
issuer = "{issuer}"
audience = ["portcullis-cli", "short-cli"]
user_claim = "email"
groups_claim = "groups"
leeway_secs = 0

[[oidc]]
issuer = "{issuer}"
audience = "es-cli"
user_claim = "email"
groups_claim = "realm_access.roles"

[[oidc]]
issuer = "{issuer}"
audience = "urn:portcullis"
user_claim = "sub"
require_rule = true

[[oidc.rules]]
claims = {{ repository = "acme/app", ref = "refs/heads/main" }}
groups = ["app-deployers"]

[[oidc.rules]]
claims = {{ client_id = "agent-*" }}
groups = ["agents"]

[login]
issuer = "{issuer}"
client_id = "portcullis-cli"
"#
        ))
        .start()
}

fn run_psql(gw: &Gateway, token: &str, sql: &str) -> portcullis_testkit::PsqlOutput {
    psql(&gw.conninfo("app-db", ""), token, &["-c", sql], None)
}

pub(crate) fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64_decode(payload);
    serde_json::from_slice(&bytes).unwrap()
}

fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = A.iter().position(|&a| a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

/// `token` with its payload replaced by `f(claims)`, signature kept.
fn with_claims(token: &str, f: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims_of(token);
    f(&mut c);
    format!(
        "{}.{}.{}",
        parts[0],
        base64url(c.to_string().as_bytes()),
        parts[2]
    )
}

/// `token` with its header replaced.
fn with_header(token: &str, header: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", base64url(header.as_bytes()), parts[1], parts[2])
}

fn api_post_form(gw: &Gateway, path: &str, fields: &[(&str, &str)]) -> (u16, Value) {
    let mut args = vec!["-w".to_owned(), "\n%{http_code}".to_owned()];
    for (k, v) in fields {
        args.push("--data-urlencode".into());
        args.push(format!("{k}={v}"));
    }
    args.push(format!("{}{path}", gw.api()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = curl_raw(&a);
    let (body, code) = out.rsplit_once('\n').unwrap();
    (
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// `user`'s sessions once `complete` holds for them and every one has
/// ended: records reach the store up to the recorder's linger (10 ms) after
/// a session ends, so a query right after psql exits can miss them. After
/// 5 s, whatever is there, for the caller's assertion to show.
fn sessions_of(gw: &Gateway, user: &str, complete: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let fetch = || {
        let (code, body) = curl(gw, &format!("/api/sessions?user={user}"), Some(ADMIN_TOKEN));
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<Vec<Value>>(&body).unwrap()
    };
    eventually(Duration::from_secs(5), || {
        let s = fetch();
        (complete(&s) && s.iter().all(|s| !s["ended_at"].is_null())).then_some(s)
    })
    .unwrap_or_else(fetch)
}

#[test]
fn oidc_tokens_are_passwords_and_carry_groups() {
    let p = OidcProvider::start(&["k1", "es-1"]);
    let gw = oidc_gateway(&p, "");
    let alice = p
        .login("portcullis-cli", "alice", "alice-pw")
        .get("id_token");
    let out = run_psql(&gw, &alice, "select count(*) from people");
    assert!(out.ok, "{}\n{}", out.stderr, gw.log());
    let s = sessions_of(&gw, "alice@example.com", |s| !s.is_empty());
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0]["auth_method"], "oidc");
    assert_eq!(s[0]["groups"], serde_json::json!(["engineering"]));

    // bob is a contractor: no policy lets him connect.
    let bob = p.login("portcullis-cli", "bob", "bob-pw").get("id_token");
    let out = run_psql(&gw, &bob, "select 1");
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("connect to app-db denied for bob@example.com"),
        "{}",
        out.stderr
    );

    // ES256 signatures, and groups from a nested claim path.
    let es = p.login("es-cli", "alice", "alice-pw").get("id_token");
    assert!(
        es.starts_with(&base64url(br#"{"alg":"ES256""#)[..10]),
        "an ES256 token"
    );
    let out = run_psql(&gw, &es, "select 1");
    assert!(out.ok, "{}", out.stderr);

    // The API takes the same tokens as bearer tokens.
    let (code, body) = curl(&gw, "/api/whoami", Some(&alice));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"user\":\"alice@example.com\""), "{body}");
}

#[test]
fn bad_tokens_are_refused_each_with_its_reason() {
    let p = OidcProvider::start(&["k1"]);
    let stranger = OidcProvider::start(&["k1"]);
    let gw = oidc_gateway(&p, "");
    let good = p
        .login("portcullis-cli", "alice", "alice-pw")
        .get("id_token");
    let short = p.login("short-cli", "alice", "alice-pw").get("id_token");
    let foreign = stranger
        .login("portcullis-cli", "alice", "alice-pw")
        .get("id_token");
    let header = |alg: &str, kid: &str| format!(r#"{{"alg":"{alg}","kid":"{kid}","typ":"JWT"}}"#);

    let wrong_aud = with_claims(&good, |c| c["aud"] = "someone-else".into());
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "forged",
            with_claims(&good, |c| c["email"] = "root@example.com".into()),
            "signature does not verify",
        ),
        ("wrong issuer", foreign, "is not trusted"),
        (
            "alg none",
            format!(
                "{}.{}.",
                base64url(br#"{"alg":"none"}"#),
                good.split('.').nth(1).unwrap()
            ),
            "alg \"none\" is refused",
        ),
        (
            "hmac",
            with_header(&good, &header("HS256", "k1")),
            "algorithm \"HS256\" is not accepted",
        ),
        (
            "unknown kid",
            with_header(&good, &header("RS256", "never-published")),
            "kid \"never-published\") is not published",
        ),
        ("wrong audience", wrong_aud, "audience is not accepted"),
        (
            "garbage",
            "eyJhbGciOi.not-base64!.x".into(),
            "not base64url",
        ),
    ];
    for (name, token, expected) in &cases {
        let out = run_psql(&gw, token, "select 1");
        assert!(!out.ok, "{name} was accepted");
        assert!(out.stderr.contains(expected), "{name}: {}", out.stderr);
        assert!(
            !out.stderr.contains(token.as_str()),
            "{name}: the token was echoed"
        );
    }
    // The same refusal on the API.
    let (code, body) = curl(&gw, "/api/whoami", Some(&cases[0].1));
    assert_eq!(code, 401);
    assert!(body.contains("signature does not verify"), "{body}");

    // Expiry: the short client's ID tokens live 3 seconds (no leeway here).
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = run_psql(&gw, &short, "select 1");
    assert!(
        out.stderr.contains("the token has expired"),
        "{}",
        out.stderr
    );

    // After all that, good tokens still work and the gateway still serves.
    assert!(run_psql(&gw, &good, "select 1").ok);
    // Nothing secret was logged.
    assert!(!gw.log().contains(&good), "a token reached the log");
}

#[test]
fn keys_rotate_without_a_restart() {
    let mut p = OidcProvider::start(&["k1"]);
    let gw = oidc_gateway(&p, "jwks_min_refresh_secs = 0\njwks_max_age_secs = 2");
    let old = p
        .login("portcullis-cli", "alice", "alice-pw")
        .get("id_token");
    assert!(run_psql(&gw, &old, "select 1").ok);

    // The provider publishes a new key and signs with it; the old one stays
    // published for a while.
    p.rotate(&["k2", "k1"]);
    let new = p
        .login("portcullis-cli", "alice", "alice-pw")
        .get("id_token");
    assert_eq!(
        serde_json::from_slice::<Value>(&base64_decode(new.split('.').next().unwrap())).unwrap()
            ["kid"],
        "k2"
    );
    let out = run_psql(&gw, &new, "select 1");
    assert!(out.ok, "new key not picked up: {}", out.stderr);
    assert!(
        run_psql(&gw, &old, "select 1").ok,
        "old key still published"
    );

    // The old key is withdrawn: once the cache ages out, its tokens fail.
    p.rotate(&["k2"]);
    std::thread::sleep(Duration::from_millis(2500));
    let out = run_psql(&gw, &old, "select 1");
    assert!(
        out.stderr.contains("is not published by its issuer"),
        "{}",
        out.stderr
    );
    assert!(run_psql(&gw, &new, "select 1").ok);
}

#[test]
fn an_agent_acts_for_a_user_through_token_exchange() {
    let p = OidcProvider::start(&["k1"]);
    let gw = oidc_gateway(&p, "");
    let alice = p
        .login("portcullis-cli", "alice", "alice-pw")
        .get("id_token");
    let agent = p.client_token("agent-x");
    let jwt = "urn:ietf:params:oauth:token-type:jwt";
    let grant = "urn:ietf:params:oauth:grant-type:token-exchange";
    let (code, body) = api_post_form(
        &gw,
        "/oauth/token",
        &[
            ("grant_type", grant),
            ("subject_token", &alice),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:id_token",
            ),
            ("actor_token", &agent),
            ("actor_token_type", jwt),
        ],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["issued_token_type"], jwt);
    assert_eq!(body["token_type"], "Bearer");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let claims = claims_of(&token);
    assert_eq!(claims["sub"], "alice@example.com");
    assert_eq!(claims["act"]["sub"], "agent-x");
    assert!(
        body["expires_in"].as_i64().unwrap() <= 600,
        "capped by the input tokens"
    );

    // The key is published for anyone who wants to verify gateway tokens.
    let (code, jwks) = curl(&gw, "/.well-known/jwks.json", None);
    assert_eq!(code, 200);
    let jwks: Value = serde_json::from_str(&jwks).unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");

    // Policy sees the actor: reads pass, writes are forbidden for agents.
    let out = run_psql(&gw, &token, "select count(*) from people");
    assert!(out.ok, "{}", out.stderr);
    let out = run_psql(&gw, &token, "insert into items(name) values ('x')");
    assert!(!out.ok);
    assert!(
        out.stderr.contains("denied (policy agents-only-read)"),
        "{}",
        out.stderr
    );
    // alice herself may write (the statement may fail upstream for lack of
    // a grant, but not because of the gateway).
    let out = run_psql(&gw, &alice, "insert into items(name) values ('x')");
    assert!(!out.stderr.contains("agents-only-read"), "{}", out.stderr);

    // Sessions and statements say who acted for whom.
    let s = sessions_of(&gw, "alice@example.com", |s| {
        s.iter().filter(|s| s["actor"] == "agent-x").count() >= 2
    });
    let delegated: Vec<&Value> = s.iter().filter(|s| s["actor"] == "agent-x").collect();
    assert_eq!(delegated.len(), 2, "{s:?}");
    assert!(delegated
        .iter()
        .all(|s| s["auth_method"] == "gateway-token"));

    // Refusals follow RFC 8693 / RFC 6749 error codes.
    let (code, body) = api_post_form(&gw, "/oauth/token", &[("grant_type", "password")]);
    assert_eq!(
        (code, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (code, body) = api_post_form(&gw, "/oauth/token", &[("grant_type", grant)]);
    assert_eq!(
        (code, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (code, body) = api_post_form(
        &gw,
        "/oauth/token",
        &[
            ("grant_type", grant),
            ("subject_token", &alice),
            ("subject_token_type", jwt),
            (
                "actor_token",
                &with_claims(&agent, |c| c["sub"] = "root".into()),
            ),
            ("actor_token_type", jwt),
        ],
    );
    assert_eq!(
        (code, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("actor_token: the token's signature does not verify"));
    // A delegated token cannot be delegated again.
    let (code, body) = api_post_form(
        &gw,
        "/oauth/token",
        &[
            ("grant_type", grant),
            ("subject_token", &token),
            ("subject_token_type", jwt),
            ("actor_token", &agent),
            ("actor_token_type", jwt),
        ],
    );
    assert_eq!(code, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("already delegated"),
        "{body}"
    );
}

#[test]
fn ci_jobs_get_exactly_their_rule_s_scope() {
    let p = OidcProvider::start(&["k1"]);
    let gw = oidc_gateway(&p, "");
    let main = p.client_token("ci-app-main");
    let out = run_psql(&gw, &main, "select count(*) from people");
    assert!(out.ok, "{}", out.stderr);
    let out = run_psql(&gw, &main, "delete from items");
    assert!(!out.ok);
    assert!(
        out.stderr.contains("delete on app-db/public.items denied"),
        "{}",
        out.stderr
    );
    let s = sessions_of(&gw, "repo:acme/app:environment:production", |s| {
        s.len() >= 2
    });
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(s[0]["groups"], serde_json::json!(["app-deployers"]));

    // A pull-request build of the same repository matches no rule.
    let pr = p.client_token("ci-app-pr");
    let out = run_psql(&gw, &pr, "select 1");
    assert!(out.stderr.contains("no rule for issuer"), "{}", out.stderr);
    assert!(
        out.stderr.contains("ref=refs/pull/7/merge"),
        "{}",
        out.stderr
    );
    let other = p.client_token("ci-other");
    let out = run_psql(&gw, &other, "select 1");
    assert!(
        out.stderr.contains("repository=acme/other"),
        "{}",
        out.stderr
    );
}

/// A psql that keeps its session open, reading statements from stdin.
fn open_psql(gw: &Gateway, token: &str) -> std::process::Child {
    let mut child = Command::new("psql")
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            &gw.conninfo("app-db", ""),
        ])
        .env("PGPASSWORD", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"select 'ready';\n")
        .unwrap();
    child
}

/// Waits for the session to be listed as live, then returns.
fn wait_live(gw: &Gateway, user: &str) {
    let live = eventually(Duration::from_secs(15), || {
        let (_, body) = curl(
            gw,
            &format!("/api/sessions?user={user}&active=true"),
            Some(ADMIN_TOKEN),
        );
        (body.contains("\"id\"")).then_some(())
    });
    assert!(live.is_some(), "no live session for {user}:\n{}", gw.log());
}

/// Waits until `user` has no live session (the gateway ended it), then
/// lets psql try another statement and returns (seconds until the gateway
/// ended the session, psql's stderr).
fn wait_ended(
    gw: &Gateway,
    user: &str,
    mut child: std::process::Child,
    limit: Duration,
) -> (f64, String) {
    let start = Instant::now();
    let ended = eventually(limit, || {
        let (_, body) = curl(
            gw,
            &format!("/api/sessions?user={user}&active=true"),
            Some(ADMIN_TOKEN),
        );
        (body.trim() == "[]").then_some(())
    });
    let secs = start.elapsed().as_secs_f64();
    assert!(ended.is_some(), "the session was not ended:\n{}", gw.log());
    // psql notices only when it next talks to the server.
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"select 'after';\n");
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "psql kept working");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("after"));
    (secs, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn end_reason(gw: &Gateway, user: &str) -> String {
    let s = sessions_of(gw, user, |s| !s.is_empty());
    s[0]["end_reason"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn revocation_ends_live_sessions_and_refuses_tokens() {
    let p = OidcProvider::start(&["k1"]);
    let gw = oidc_gateway(&p, "");
    let alice = p
        .login("portcullis-cli", "alice", "alice-pw")
        .get("id_token");
    let child = open_psql(&gw, &alice);
    wait_live(&gw, "alice@example.com");

    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["revoke", "--user", "alice@example.com"])
        .env("PORTCULLIS_API", gw.api())
        .env("PORTCULLIS_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 live session(s) ended"));
    let (_, stderr) = wait_ended(&gw, "alice@example.com", child, Duration::from_secs(10));
    eprintln!(
        "revocation ended the live session within {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        stderr.contains("ended by the gateway") || stderr.contains("closed the connection"),
        "{stderr}"
    );
    assert!(end_reason(&gw, "alice@example.com").contains("ended by the gateway"));

    // Her token is refused from now on, on every door.
    let out = run_psql(&gw, &alice, "select 1");
    assert!(
        out.stderr
            .contains("access for alice@example.com has been revoked"),
        "{}",
        out.stderr
    );
    let (code, _) = curl(&gw, "/api/whoami", Some(&alice));
    assert_eq!(code, 401);
    // Only admins may revoke.
    let out = Command::new(BIN)
        .args(["revoke", "--user", "admin"])
        .env("PORTCULLIS_API", gw.api())
        .env("PORTCULLIS_TOKEN", ALICE_TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("manage_sessions on the API denied"));

    // The revocation survives a restart of the same gateway (it is in the
    // store): her old token is still refused.
    let mut gw = gw;
    assert!(gw.stop());
    gw.restart();
    let out = run_psql(&gw, &alice, "select 1");
    assert!(
        out.stderr
            .contains("access for alice@example.com has been revoked"),
        "{}",
        out.stderr
    );
    // A login after the revocation (a later iat) is accepted again.
    std::thread::sleep(Duration::from_millis(1100));
    let fresh = p
        .login("portcullis-cli", "alice", "alice-pw")
        .get("id_token");
    assert!(run_psql(&gw, &fresh, "select 1").ok);
}

#[test]
fn sessions_end_when_their_token_expires() {
    let p = OidcProvider::start(&["k1"]);
    let gw = oidc_gateway(&p, "");
    let short = p.login("short-cli", "alice", "alice-pw").get("id_token");
    let child = open_psql(&gw, &short);
    wait_live(&gw, "alice@example.com");
    let (_, stderr) = wait_ended(&gw, "alice@example.com", child, Duration::from_secs(15));
    assert!(
        stderr.contains("expired; reconnect with a fresh token")
            || stderr.contains("closed the connection"),
        "{stderr}"
    );
    let reason = end_reason(&gw, "alice@example.com");
    assert!(
        reason.contains("the token for alice@example.com expired"),
        "{reason}"
    );
}

#[test]
fn static_tokens_are_disabled_by_config_reload() {
    let gw = app_gateway();
    let child = open_psql(&gw, ALICE_TOKEN);
    wait_live(&gw, "alice");
    let config = gw.dir().join("portcullis.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let without_alice = text.replace(
        &format!("token = \"{ALICE_TOKEN}\""),
        "token = \"alice-rotated-token-1\"",
    );
    assert_ne!(text, without_alice);
    std::fs::write(&config, without_alice).unwrap();
    let (_, stderr) = wait_ended(&gw, "alice", child, Duration::from_secs(10));
    assert!(
        stderr.contains("ended by the gateway") || stderr.contains("closed the connection"),
        "{stderr}"
    );
    let out = run_psql(&gw, ALICE_TOKEN, "select 1");
    assert!(
        out.stderr
            .contains("token authentication failed: the token is not valid"),
        "{}",
        out.stderr
    );
    assert!(run_psql(&gw, "alice-rotated-token-1", "select 1").ok);
}

/// Runs the CLI with its own config directory.
fn portcullis(home: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("XDG_CONFIG_HOME", home)
        .env_remove("PORTCULLIS_GATEWAY");
    c
}

#[test]
fn login_token_and_connect_for_people() {
    let p = OidcProvider::start(&["k1"]);
    let gw = oidc_gateway(&p, "");
    let home = tempfile::tempdir().unwrap();

    let mut login = portcullis(
        home.path(),
        &["login", "--gateway", &gw.api(), "--no-browser"],
    )
    .stderr(Stdio::piped())
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    // Read the URL it prints, then play the browser.
    let mut stderr = login.stderr.take().unwrap();
    let url = {
        use std::io::Read;
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while !seen.contains("/auth?") || !seen.ends_with("\n\n") {
            let n = stderr.read(&mut buf).unwrap();
            assert!(n > 0, "login exited early: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        seen.split_whitespace()
            .find(|w| w.contains("/auth?"))
            .unwrap()
            .to_owned()
    };
    let callback = p.authorize_redirect(&url, "alice", "alice-pw");
    assert!(callback.starts_with("http://127.0.0.1:"), "{callback}");
    let page = curl_raw(&[&callback]);
    assert!(page.contains("Logged in"), "{page}");
    let status = login.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("Logged in as alice@example.com"), "{rest}");

    // Stored for the user only.
    let stored = home.path().join("portcullis").join("credentials.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // `portcullis token` prints a gateway token psql can use.
    let out = portcullis(home.path(), &["token"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(claims_of(&token)["iss"], "portcullis");
    assert!(run_psql(&gw, &token, "select 1").ok);

    // An expired gateway token is renewed through the refresh token.
    let mut creds: Value =
        serde_json::from_str(&std::fs::read_to_string(&stored).unwrap()).unwrap();
    creds["expires_at"] = 0.into();
    std::fs::write(&stored, creds.to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let out = portcullis(home.path(), &["token"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let renewed = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_ne!(renewed, token);
    assert!(run_psql(&gw, &renewed, "select 1").ok);

    // `portcullis connect` opens a port that needs no password.
    let port = portcullis_testkit::free_port();
    let mut connect = portcullis(
        home.path(),
        &["connect", "app-db", "--port", &port.to_string()],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    assert!(
        portcullis_testkit::wait_for_port(port, Duration::from_secs(20)),
        "connect did not listen"
    );
    let out = Command::new("psql")
        .args([
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-d",
            "app-db",
            "-c",
            "select count(*) from people",
        ])
        .env_remove("PGPASSWORD")
        .env("PGCONNECT_TIMEOUT", "20")
        .output()
        .unwrap();
    let _ = connect.kill();
    let _ = connect.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = sessions_of(&gw, "alice@example.com", |s| s.len() >= 3);
    assert!(s.len() >= 3, "{s:?}");

    // Without a login, the commands say what to do.
    let empty = tempfile::tempdir().unwrap();
    let out = portcullis(empty.path(), &["token"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `portcullis login`"));
}

#[test]
fn device_login_for_machines_without_a_browser() {
    let p = OidcProvider::start(&["k1"]);
    let gw = oidc_gateway(&p, "");
    let home = tempfile::tempdir().unwrap();
    let mut login = portcullis(home.path(), &["login", "--device", "--gateway", &gw.api()])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = login.stderr.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("enter the code") {
        let n = std::io::Read::read(&mut stderr, &mut buf).unwrap();
        assert!(n > 0, "login exited early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let uri = seen
        .split_whitespace()
        .find(|w| w.contains("/device?user_code="))
        .unwrap();
    p.approve_device(uri, "alice", "alice-pw");
    let status = login.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(status.success(), "{rest}");
    let out = portcullis(home.path(), &["token"]).output().unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(claims_of(&token)["sub"], "alice@example.com");
    assert!(run_psql(&gw, &token, "select 1").ok);
}
