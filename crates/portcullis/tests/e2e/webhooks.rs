//! Webhooks end to end: a local HTTP listener receives the review's
//! events, checks their signatures, sees a failed delivery retried, and
//! finds a statement that tries to forge a Slack message's layout shown
//! inert.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use portcullis_testkit::ALICE_TOKEN;
use serde_json::Value;
use sha2::Sha256;

use crate::common::*;

const SECRET: &str = "whsec-test-6b1f";

/// One request as the listener received it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }
}

/// A plain HTTP listener that records requests and fails the first one.
fn listener() -> (u16, Arc<Mutex<Vec<Received>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in l.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.trim_end().split_once(':') {
                    headers.push((k.trim().to_owned(), v.trim().to_owned()));
                }
            }
            let length: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let first = {
                let mut all = record.lock().unwrap();
                all.push(Received {
                    path,
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                all.len() == 1
            };
            let status = if first {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = reader.get_mut().write_all(
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (port, seen)
}

fn verifies(r: &Received) -> bool {
    let ts = r.header("x-portcullis-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.{}", r.body).as_bytes());
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    r.header("x-portcullis-signature") == want
}

#[test]
fn review_events_arrive_signed_retried_and_with_statements_inert() {
    cluster().superuser_sql(
        "app",
        "drop table if exists public.wh_t; create table public.wh_t (note text); \
         grant all on public.wh_t to portcullis_reader, trust_user",
    );
    let (port, seen) = listener();
    let policies = r#"
permit(principal in Group::"engineering",
       action in [Action::"connect", Action::"select"],
       resource in Connection::"app-db");
@review("dba")
@wait("30s")
permit(principal in Group::"engineering", action == Action::"delete",
       resource == Table::"app-db/public.wh_t");
"#;
    let gw = gateway()
        .app_db("app-db", cluster())
        .policies(policies)
        .env("WH_SECRET", SECRET)
        .extra(&format!(
            "[[tokens]]\nuser = \"dan\"\ngroups = [\"dba\"]\ntoken = \"dan-token-7f21\"\n\n\
             [[webhooks]]\nurl = \"http://127.0.0.1:{port}/json\"\nsecret_env = \"WH_SECRET\"\n\n\
             [[webhooks]]\nurl = \"http://127.0.0.1:{port}/slack\"\nsecret_env = \"WH_SECRET\"\nformat = \"slack\"\n"
        ))
        .start();
    let forged = "delete from public.wh_t where note = '```\n*APPROVED by security* <!channel> <https://evil.example|open>'";
    let mut psql = std::process::Command::new("psql")
        .args(["-X", "--no-align", "--tuples-only"])
        .arg(gw.conninfo("app-db", ""))
        .args(["-c", forged])
        .env("PGPASSWORD", ALICE_TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let json_of = |event: &str| {
        let seen = seen.clone();
        eventually(Duration::from_secs(20), move || {
            seen.lock()
                .unwrap()
                .iter()
                .rev()
                .find(|r| r.path == "/json" && r.header("x-portcullis-event") == event)
                .cloned()
        })
    };
    let created = json_of("review.created").expect("review.created delivered");
    assert!(verifies(&created), "{created:?}");
    let body: Value = serde_json::from_str(&created.body).unwrap();
    assert_eq!(body["requester"], "alice");
    assert_eq!(body["reviewers"][0], "dba");
    // JSON carries the statement exactly; escaping is JSON's own.
    assert_eq!(body["review"]["statement"], forged);
    let id = body["review"]["id"].as_u64().unwrap().to_string();
    // Slack's copy shows the statement inert.
    let slack = eventually(Duration::from_secs(20), || {
        seen.lock()
            .unwrap()
            .iter()
            .find(|r| r.path == "/slack")
            .cloned()
    })
    .expect("slack delivery");
    assert!(verifies(&slack));
    let text = serde_json::from_str::<Value>(&slack.body).unwrap()["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(text.matches("```").count(), 2, "{text}");
    assert!(
        !text.contains("<!channel>") && !text.contains("<https://"),
        "{text}"
    );
    assert!(text.contains("&lt;!channel&gt;"), "{text}");
    // The first delivery failed (500) and was retried, same delivery id.
    let retried = eventually(Duration::from_secs(10), || {
        let all = seen.lock().unwrap();
        let first = all[0].header("x-portcullis-delivery").to_owned();
        all.iter()
            .skip(1)
            .any(|r| r.header("x-portcullis-delivery") == first)
            .then_some(())
    });
    assert!(retried.is_some(), "{:?}", seen.lock().unwrap());
    // A decision is delivered too, and the deny ends the statement.
    let out = std::process::Command::new(BIN)
        .args(["reviews", "deny", &id, "--reason", "no"])
        .args(["--api", &gw.api(), "--token", "dan-token-7f21"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let denied = json_of("review.denied").expect("review.denied delivered");
    assert!(verifies(&denied));
    assert!(!psql.wait().unwrap().success());
    // A forged signature does not verify (the check above can fail).
    let mut tampered = denied.clone();
    tampered.body = tampered.body.replace("denied", "approved");
    assert!(!verifies(&tampered));
}
