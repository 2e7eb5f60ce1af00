//! The web console in a real browser: Debian's Chromium, headless, driven
//! by playwright-core (`tests/browser/console.mjs`), against a real
//! gateway, PostgreSQL, OpenSSH and OIDC provider. Outcomes are judged by
//! the upstream's state and the clients' own output, not by the page
//! alone. Screenshots are kept in `target/tmp/console-screenshots`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portcullis_testkit::{Browser, Gateway, OidcProvider, ADMIN_TOKEN, ALICE_TOKEN, EVE_TOKEN};
use serde_json::Value;

use crate::common::*;

const DAN: &str = "dan-token-5b1e";
const DANA: &str = "dana-token-90c4";

/// dan reviews (dba); dana is an engineer and a dba, so only the rule
/// against deciding one's own request stops her approving her statement.
const TOKENS: &str = r#"
[[tokens]]
user = "dan"
groups = ["dba"]
token = "dan-token-5b1e"

[[tokens]]
user = "dana"
groups = ["engineering", "dba"]
token = "dana-token-90c4"
"#;

const POLICIES: &str = r#"
@id("engineers-read")
permit(principal in Group::"engineering",
       action in [Action::"connect", Action::"select"],
       resource in Connection::"app-db");
@id("admins-console")
permit(principal in Group::"admins",
       action in [Action::"view_sessions", Action::"manage_sessions", Action::"view_configuration"],
       resource == Gateway::"portcullis");
@review("dba")
@id("deletes-need-dba")
permit(principal in Group::"engineering", action == Action::"delete",
       resource == Table::"app-db/public.console_held");
@review("dba")
@id("own-deletes-need-dba")
permit(principal in Group::"engineering", action == Action::"delete",
       resource == Table::"app-db/public.console_own");
"#;

fn console_gateway() -> Gateway {
    gateway()
        .app_db("app-db", cluster())
        .policies(POLICIES)
        .extra(TOKENS)
        .start()
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Runs `scenario` of the console script against `gw`, signed in with
/// `token`.
fn browser(gw: &Gateway, scenario: &str, token: &str, env: &[(&str, String)]) -> Browser {
    let shots = portcullis_testkit::screenshot_dir(env!("CARGO_TARGET_TMPDIR"));
    let mut all = vec![
        ("CONSOLE", gw.api()),
        ("TOKEN", token.to_owned()),
        ("SCREENSHOTS", shots.display().to_string()),
    ];
    all.extend(env.iter().cloned());
    Browser::run(&browser_dir(), "console.mjs", scenario, &all)
}

/// psql through `gw` as `token`, reading statements from a pipe: the
/// session stays open until the pipe is closed.
fn open_psql(gw: &Gateway, token: &str) -> Child {
    Command::new("psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "--no-align", "--tuples-only"])
        .arg(gw.conninfo("app-db", ""))
        .env("PGPASSWORD", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql")
}

/// psql running `sql` through `gw`, in the background.
fn spawn_psql(gw: &Gateway, token: &str, sql: &str) -> Child {
    let mut psql = open_psql(gw, token);
    let mut stdin = psql.stdin.take().unwrap();
    writeln!(stdin, "{sql}").unwrap();
    drop(stdin);
    psql
}

fn finish(child: Child) -> (bool, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn live_sessions(gw: &Gateway) -> Vec<Value> {
    let (code, body) = curl(gw, "/api/sessions?active=true", Some(ADMIN_TOKEN));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The pending review, once there is one.
fn pending_review(gw: &Gateway) -> Value {
    eventually(Duration::from_secs(20), || {
        let (code, body) = curl(gw, "/api/reviews", Some(DAN));
        assert_eq!(code, 200, "{body}");
        let list: Vec<Value> = serde_json::from_str(&body).unwrap();
        list.into_iter().find(|r| r["status"] == "pending")
    })
    .expect("a review is pending")
}

#[test]
fn the_console_signs_in_with_a_token_and_the_browser_keeps_only_an_opaque_strict_cookie() {
    let gw = console_gateway();
    let mut b = browser(&gw, "token-login", ADMIN_TOKEN, &[]);
    let url = b.step("signed-out-url");
    assert!(
        url.as_str().unwrap().ends_with("/login?next=%2Fsessions")
            || url.as_str().unwrap().ends_with("/login?next=/sessions"),
        "{url}"
    );
    let refused = b.step("bad-token");
    assert!(
        refused
            .as_str()
            .unwrap()
            .contains("token authentication failed"),
        "{refused}"
    );
    assert_eq!(b.step("signed-in-as"), "admin");
    let cookies = b.step("cookies");
    let session = cookies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "__Host-portcullis")
        .unwrap_or_else(|| panic!("no session cookie in {cookies}"));
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["secure"], true);
    assert_eq!(session["sameSite"], "Strict");
    // At 360 px nothing makes the page scroll sideways.
    let overflow = b.step("overflow").as_i64().unwrap();
    assert!(overflow <= 0, "the page is {overflow}px wider than 360px");
    b.finish();
    // The token never reached the browser's storage or the log.
    assert!(!gw.log().contains(ADMIN_TOKEN));
}

#[test]
fn the_console_signs_in_through_the_oidc_issuer_with_pkce() {
    let p = OidcProvider::start(&["k1"]);
    let issuer = p.issuer();
    let gw = gateway()
        .app_db("app-db", cluster())
        .policies(POLICIES)
        .extra(&format!(
            r#"
[[oidc]]
issuer = "{issuer}"
audience = ["portcullis-cli", "portcullis-console"]
user_claim = "email"
groups_claim = "groups"

[login]
issuer = "{issuer}"
client_id = "portcullis-cli"

[console]
client_id = "portcullis-console"
"#
        ))
        .start();
    let mut b = browser(
        &gw,
        "oidc-login",
        "",
        &[
            ("OIDC_USER", "alice".into()),
            ("OIDC_PASSWORD", "alice-pw".into()),
        ],
    );
    let signed = b.step("signed-in-as");
    assert_eq!(signed["who"], "alice@example.com", "{signed}");
    assert!(
        signed["url"].as_str().unwrap().ends_with("/reviews"),
        "{signed}"
    );
    b.finish();
}

#[test]
fn a_session_appears_in_the_list_while_psql_runs_and_its_live_mark_goes_when_it_ends() {
    let gw = console_gateway();
    let mut b = browser(&gw, "live-session", ADMIN_TOKEN, &[]);
    b.step("watching");
    let launched = std::time::Instant::now();
    let mut psql = open_psql(&gw, ALICE_TOKEN);
    let seen = b.step("seen");
    // From launching psql to the row in the page, psql's login included.
    eprintln!(
        "live session shown {:?} after psql was launched",
        launched.elapsed()
    );
    assert_eq!(seen["same"], true, "the page was reloaded: {seen}");
    assert!(seen["text"].as_str().unwrap().contains("alice"), "{seen}");
    let live = live_sessions(&gw);
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0]["id"], seen["id"]);
    drop(psql.stdin.take());
    let (ok, out) = finish(psql);
    assert!(ok, "{out}");
    b.go_on();
    let ended = b.step("ended");
    assert_eq!(ended["same"], true);
    b.finish();
}

#[test]
fn a_held_statement_is_approved_from_the_inbox_and_psql_continues() {
    table("console_held", 3);
    let gw = console_gateway();
    let mut b = browser(&gw, "approve", DAN, &[]);
    b.step("watching");
    let sql = "delete from public.console_held where id = 1 returning id;";
    let psql = spawn_psql(&gw, DANA, sql);
    let review = b.step("review");
    let api_view = pending_review(&gw);
    assert_eq!(review["id"].as_str().unwrap(), api_view["id"].to_string());
    assert_eq!(review["statement"], sql);
    assert!(
        review["card"].as_str().unwrap().contains("dana"),
        "{review}"
    );
    assert_eq!(rows("console_held"), 3, "nothing runs before approval");
    b.go_on();
    let decided = b.step("decided");
    assert!(decided.as_str().unwrap().contains("approved"), "{decided}");
    let (ok, out) = finish(psql);
    assert!(ok, "{out}");
    assert!(out.starts_with("1\nDELETE 1"), "{out}");
    assert_eq!(rows("console_held"), 2);
    b.finish();
    // The reason typed in the browser is the review's record.
    let (_, body) = curl(&gw, &format!("/api/reviews/{}", api_view["id"]), Some(DAN));
    assert!(body.contains("checked the ticket"), "{body}");
}

#[test]
fn the_requester_cannot_approve_their_own_statement_in_the_console() {
    table("console_own", 3);
    let gw = console_gateway();
    let psql = spawn_psql(&gw, DANA, "delete from public.console_own where id = 2;");
    let review = pending_review(&gw);
    let mut b = browser(&gw, "self-approval", DANA, &[]);
    let refused = b.step("refused");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("nobody decides a review of their own request"),
        "{refused}"
    );
    b.finish();
    // Still pending, and nothing ran.
    let (_, body) = curl(&gw, &format!("/api/reviews/{}", review["id"]), Some(DAN));
    let now: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(now["status"], "pending", "{now}");
    assert_eq!(rows("console_own"), 3);
    let (ok, out) = api_cli(&gw, DAN, &["reviews", "deny", &review["id"].to_string()]);
    assert!(ok, "{out}");
    let (ok, out) = finish(psql);
    assert!(!ok && out.contains("was denied by dan"), "{out}");
}

#[test]
fn a_what_if_in_the_console_decides_as_policy_check_does() {
    let gw = console_gateway();
    for (sql, outcome) in [
        ("delete from console_held where id = 1", "review"),
        ("select * from orders join console_held on true", "allow"),
        ("update orders set id = 1", "deny"),
    ] {
        let mut b = browser(
            &gw,
            "what-if",
            ADMIN_TOKEN,
            &[
                ("WHATIF_USER", "alice".into()),
                ("WHATIF_GROUPS", "engineering".into()),
                ("WHATIF_CONNECTION", "app-db".into()),
                ("WHATIF_SQL", sql.into()),
            ],
        );
        let decision = b.step("decision");
        b.finish();
        assert_eq!(decision["outcome"], outcome, "{decision}");
        let policies = gw.dir().join("policies");
        let (ok, cli_text) = cli(&[
            "policy",
            "check",
            "--dir",
            policies.to_str().unwrap(),
            "--user",
            "alice",
            "--groups",
            "engineering",
            "--connection",
            "app-db",
            sql,
        ]);
        assert!(ok, "{cli_text}");
        assert_eq!(decision["text"].as_str().unwrap(), cli_text, "{sql}");
        assert!(!decision["pairs"].as_array().unwrap().is_empty());
    }
}

#[test]
fn a_forged_form_post_from_another_origin_is_refused_and_the_session_lives() {
    let gw = console_gateway();
    let mut psql = open_psql(&gw, ALICE_TOKEN);
    let id = eventually(Duration::from_secs(10), || {
        live_sessions(&gw)
            .first()
            .map(|s| s["id"].as_str().unwrap().to_owned())
    })
    .expect("a live session");
    let mut b = browser(&gw, "csrf", ADMIN_TOKEN, &[("SESSION", id.clone())]);
    let forged = b.step("forged");
    assert_eq!(forged["status"], 403, "{forged}");
    assert!(
        forged["body"].as_str().unwrap().contains("another site")
            || forged["body"].as_str().unwrap().contains("CSRF"),
        "{forged}"
    );
    // The session survived: psql still runs statements through it.
    let stdin = psql.stdin.as_mut().unwrap();
    writeln!(stdin, "select 'still-here';").unwrap();
    assert_eq!(live_sessions(&gw).len(), 1);
    // The console's own button, with its token, does end it: the forged
    // post was refused for where it came from, not for what it asked.
    b.go_on();
    let state = b.step("killed");
    assert!(!state.as_str().unwrap().contains("live"), "{state}");
    b.finish();
    assert!(live_sessions(&gw).is_empty());
    // psql's next statement finds its session gone.
    writeln!(psql.stdin.as_mut().unwrap(), "select 'after-' || 'kill';").unwrap();
    let (ok, out) = finish(psql);
    assert!(out.contains("still-here"), "{out}");
    assert!(!ok && !out.contains("after-kill"), "{out}");
}

#[test]
fn pages_are_decided_by_policy_and_refusals_say_why() {
    let gw = console_gateway();
    let login = |token: &str| -> String {
        // Sign in with curl as a browser would: the form, its cookie, the post.
        let jar = gw.dir().join(format!("jar-{}", &token[..3]));
        let page = Command::new("curl")
            .args(["-s", "-c"])
            .arg(&jar)
            .arg(format!("{}/login", gw.api()))
            .output()
            .unwrap();
        let html = String::from_utf8_lossy(&page.stdout).into_owned();
        let form_token = html
            .split("name=\"form_token\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_owned();
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-b"])
            .arg(&jar)
            .arg("-c")
            .arg(&jar)
            .args(["--data-urlencode", &format!("token={token}")])
            .args(["--data-urlencode", &format!("form_token={form_token}")])
            .arg(format!("{}/login", gw.api()))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "303");
        jar.display().to_string()
    };
    let get = |jar: &str, path: &str| -> (String, String) {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "-b", jar])
            .arg(format!("{}{path}", gw.api()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_owned(), body.to_owned())
    };
    let eve = login(EVE_TOKEN);
    let (code, body) = get(&eve, "/sessions");
    assert_eq!(code, "403", "{body}");
    assert!(
        body.contains("view_sessions in the console denied for eve (no policy permits it)"),
        "{body}"
    );
    let (code, _) = get(&eve, "/connections");
    assert_eq!(code, "403");
    // Anyone signed in has an inbox: it lists only what they may see.
    let (code, body) = get(&eve, "/reviews");
    assert_eq!(code, "200", "{body}");

    let admin = login(ADMIN_TOKEN);
    let (code, body) = get(&admin, "/connections");
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("reachable"), "{body}");
    assert!(
        !body.contains(portcullis_testkit::READER_PASSWORD),
        "{body}"
    );
    assert!(!body.contains("PORTCULLIS_TEST_READER_PASSWORD"), "{body}");
    let (code, body) = get(&admin, "/audit");
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("evidence intact"), "{body}");
    // Signed out: every page sends the browser to sign in.
    let (code, _) = get("/dev/null", "/reviews");
    assert_eq!(code, "303");
}

#[test]
fn a_recorded_ssh_shell_plays_in_the_terminal_player() {
    use portcullis_testkit::{SshLogin, Sshd};
    let sshd = Sshd::start();
    let gw = gateway()
        .ssh()
        .connection(&sshd.connection("web-1"))
        .policies(
            r#"
permit(principal in Group::"engineering", action in [Action::"connect", Action::"ssh_shell"], resource == Connection::"web-1");
permit(principal in Group::"admins", action == Action::"view_sessions", resource == Gateway::"portcullis");
"#,
        )
        .start();
    let login = SshLogin::new(gw.ssh_port.unwrap(), ALICE_TOKEN);
    let mut shell = login
        .ssh()
        .args(["-tt", "web-1@127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Only the server can print the product: the player shows what the
    // server sent, not what was typed.
    shell
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo played-$((6*7))-back\nexit\n")
        .unwrap();
    let out = shell.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("played-42-back"),
        "{out:?}"
    );
    let id = eventually(Duration::from_secs(10), || {
        let (_, body) = curl(&gw, "/api/sessions", Some(ADMIN_TOKEN));
        let list: Vec<Value> = serde_json::from_str(&body).ok()?;
        let s = list.first()?;
        s["ended_at"]
            .is_string()
            .then(|| s["id"].as_str().unwrap().to_owned())
    })
    .expect("the shell's session ended");
    let mut b = browser(
        &gw,
        "replay",
        ADMIN_TOKEN,
        &[("SESSION", id), ("MARKER", "played-42-back".into())],
    );
    let played = b.step("played");
    assert!(
        played.as_str().unwrap().contains("played-42-back"),
        "{played}"
    );
    b.finish();
}
