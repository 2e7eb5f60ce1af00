//! Shared helpers for the end-to-end tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use portcullis_pg_wire::{encode, next_frame, BackendMessage};
use portcullis_testkit::{Gateway, GatewayBuilder, PgCluster};
use tokio_postgres::NoTls;

/// The gateway binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

pub fn gateway() -> GatewayBuilder {
    GatewayBuilder::new(BIN)
}

pub fn cluster() -> &'static PgCluster {
    PgCluster::shared()
}

/// A gateway with `app-db` on the shared cluster.
pub fn app_gateway() -> Gateway {
    gateway().app_db("app-db", cluster()).start()
}

/// tokio-postgres through the gateway, its connection driven in the background.
pub async fn connect(
    gw: &Gateway,
    db: &str,
    token: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let conninfo = format!("{} password={token}", gw.conninfo(db, ""));
    let (client, conn) = tokio_postgres::connect(&conninfo, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The SQLSTATE and message of a tokio-postgres error from the server.
pub fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    let d = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e:?}"));
    (d.code().code().to_owned(), d.message().to_owned())
}

/// `curl` against the API: (HTTP status, body).
pub fn curl(gw: &Gateway, path: &str, token: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.arg("-s")
        .arg("-w")
        .arg("\n%{http_code}")
        .arg(format!("{}{path}", gw.api()));
    if let Some(t) = token {
        c.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    let out = c.output().expect("curl must be installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Polls `f` until it returns Some or the timeout passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A hand-driven protocol client, for input no real client would send.
#[derive(Debug)]
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Startup and password; returns after ReadyForQuery, or the error (code, message).
    pub fn login(port: u16, db: &str, token: &str) -> Result<Raw, (String, String)> {
        let mut r = Raw::connect(port);
        let mut out = BytesMut::new();
        encode::startup_message(&mut out, &[("user", "raw"), ("database", db)]);
        r.send(&out);
        match r.read_msg() {
            Some((b'R', _)) => {}
            other => panic!("expected an authentication request, got {other:?}"),
        }
        let mut out = BytesMut::new();
        encode::password(&mut out, token.as_bytes());
        r.send(&out);
        loop {
            match r.read_msg() {
                Some((b'Z', _)) => return Ok(r),
                Some((b'E', body)) => return Err(error_fields(&body)),
                Some(_) => continue,
                None => panic!("connection closed during login"),
            }
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// The next message, or None on EOF or read error.
    pub fn read_msg(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Ok(Some(f)) = next_frame(&self.buf, 1 << 30) {
                let msg = self.buf.split_to(f.len);
                return Some((f.tag, msg[5..].to_vec()));
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until an ErrorResponse (returned) or EOF (None).
    pub fn next_error(&mut self) -> Option<(String, String)> {
        while let Some((tag, body)) = self.read_msg() {
            if tag == b'E' {
                return Some(error_fields(&body));
            }
        }
        None
    }

    /// Whether the peer has closed the connection (EOF within the read timeout).
    pub fn is_closed(&mut self) -> bool {
        while self.read_msg().is_some() {}
        true
    }
}

pub fn error_fields(body: &[u8]) -> (String, String) {
    match BackendMessage::decode(b'E', body) {
        Ok(BackendMessage::ErrorResponse(f)) => (
            f.code().unwrap_or_default().to_owned(),
            f.message().unwrap_or_default().to_owned(),
        ),
        _ => panic!("bad ErrorResponse"),
    }
}

/// Active upstream backends whose query contains `marker`.
pub fn backends_running(marker: &str) -> u64 {
    cluster()
        .superuser_sql(
            "postgres",
            &format!(
                "select count(*) from pg_stat_activity where query like '%{marker}%' and pid <> pg_backend_pid()"
            ),
        )
        .parse()
        .unwrap_or(u64::MAX)
}

/// Only `connect` and `select` on app-db.
pub const SELECT_ONLY: &str = r#"
permit(principal, action in [Action::"connect", Action::"select"],
       resource in Connection::"app-db");
"#;

/// A gateway with app-db under `policies` and the extra configuration
/// `extra` (masking tables, say).
pub fn app_gateway_with(policies: &str, extra: &str) -> portcullis_testkit::Gateway {
    gateway()
        .app_db("app-db", cluster())
        .policies(policies)
        .extra(extra)
        .start()
}

/// psql straight to the shared cluster's `app` as `trust_user`, the role
/// attack tests use to show what the server itself does: (succeeded,
/// output followed by errors).
pub fn direct_psql(sql: &str) -> (bool, String) {
    let out = portcullis_testkit::psql(
        &format!(
            "host=127.0.0.1 port={} dbname=app user=trust_user",
            cluster().port()
        ),
        "",
        &["-c", sql],
        None,
    );
    (out.ok, format!("{}{}", out.stdout, out.stderr))
}

/// psql through `gw` to app-db as alice: (succeeded, output and errors).
pub fn alice_psql(gw: &portcullis_testkit::Gateway, sql: &str) -> (bool, String) {
    let out = portcullis_testkit::psql(
        &gw.conninfo("app-db", ""),
        portcullis_testkit::ALICE_TOKEN,
        &["-c", sql],
        None,
    );
    (out.ok, format!("{}{}", out.stdout, out.stderr))
}

/// `portcullis ARGS --api <gw> --token <token>`: (succeeded, output and errors).
pub fn api_cli(gw: &Gateway, token: &str, args: &[&str]) -> (bool, String) {
    let api = gw.api();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--api", &api, "--token", token]);
    cli(&all)
}

/// Runs the `portcullis` binary with `args`: (succeeded, stdout then stderr).
pub fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().expect("portcullis");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `POST /api/revoke` for `user` as admin: the API's answer.
pub fn revoke(gw: &Gateway, user: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-X", "POST", "-H"])
        .arg(format!(
            "Authorization: Bearer {}",
            portcullis_testkit::ADMIN_TOKEN
        ))
        .args(["-H", "content-type: application/json", "-d"])
        .arg(serde_json::json!({ "user": user }).to_string())
        .arg(format!("{}/api/revoke", gw.api()))
        .output()
        .expect("curl must be installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh table of `rows` rows the gateway's service user may change.
pub fn table(name: &str, rows: u32) {
    cluster().superuser_sql(
        "app",
        &format!(
            "drop table if exists {name}; create table {name} (id int); \
             insert into {name} select generate_series(1, {rows}); \
             grant all on {name} to portcullis_reader, trust_user"
        ),
    );
}

pub fn rows(name: &str) -> u32 {
    let (ok, out) = direct_psql(&format!("select count(*) from {name}"));
    assert!(ok, "{out}");
    out.trim().parse().unwrap()
}
