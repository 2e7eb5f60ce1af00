//! Hardening: a revocation or reload is atomic with respect to login, and
//! reaches every live session it concerns, gateway tokens derived from a
//! static token included.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use portcullis_testkit::{psql, Gateway, ADMIN_TOKEN, ALICE_TOKEN};

use crate::common::*;

/// `user`'s live sessions, as the API lists them.
fn live_sessions(gw: &Gateway, user: &str) -> usize {
    let (code, body) = curl(
        gw,
        &format!("/api/sessions?user={user}&active=true"),
        Some(ADMIN_TOKEN),
    );
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Vec<serde_json::Value>>(&body)
        .unwrap()
        .len()
}

fn revoke(gw: &Gateway, user: &str) {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-f",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
        ])
        .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args(["-d", &format!("{{\"user\":\"{user}\"}}")])
        .arg(format!("{}/api/revoke", gw.api()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Many logins of one user at once, and a revocation while some are on
/// their way upstream: afterwards no session of theirs is usable. A login
/// checked before the revocation but registered after it used to live on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_during_logins_leaves_no_usable_session() {
    // Few enough to leave the shared cluster's connections to the tests
    // running beside this one (the load test holds 500).
    const LOGINS: usize = 50;
    let gw = Arc::new(app_gateway());
    let connected = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..LOGINS {
        let (gw, connected, tx) = (gw.clone(), connected.clone(), tx.clone());
        tokio::spawn(async move {
            let client = connect(&gw, "app-db", ALICE_TOKEN).await;
            if client.is_ok() {
                connected.fetch_add(1, Ordering::SeqCst);
            }
            let _ = tx.send(client);
        });
    }
    drop(tx);
    // Revoke once some logins are through and others are still going.
    let mut clients = Vec::new();
    let mut revoked = false;
    while let Some(result) = rx.recv().await {
        clients.push(result);
        if !revoked && connected.load(Ordering::SeqCst) >= 10 {
            let gw = gw.clone();
            tokio::task::spawn_blocking(move || revoke(&gw, "alice"))
                .await
                .unwrap();
            revoked = true;
        }
    }
    let errors: Vec<String> = clients
        .iter()
        .filter_map(|c| c.as_ref().err().map(|e| format!("{e:?}")))
        .take(3)
        .collect();
    assert!(revoked, "fewer than 10 logins got through: {errors:?}");
    let usable_before = connected.load(Ordering::SeqCst);
    assert!(
        usable_before >= 10,
        "too few logins got through: {usable_before}"
    );
    // Every session of hers ends (the gateway lists none live) ...
    let gone = {
        let gw = gw.clone();
        tokio::task::spawn_blocking(move || {
            eventually(Duration::from_secs(15), || {
                (live_sessions(&gw, "alice") == 0).then_some(())
            })
        })
        .await
        .unwrap()
    };
    let left = live_sessions(&gw, "alice");
    assert!(
        gone.is_some(),
        "{left} of alice's sessions outlived the revocation"
    );
    // ... and none of the clients that got in can still run a statement.
    let mut usable = 0;
    for client in clients.into_iter().flatten() {
        if client.simple_query("select 1").await.is_ok() {
            usable += 1;
        }
    }
    assert_eq!(
        usable, 0,
        "{usable} sessions still answer after the revocation"
    );
}

/// A gateway token for `token`'s holder, by token exchange.
fn exchange(gw: &Gateway, token: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", "-f"])
        .args([
            "--data-urlencode",
            "grant_type=urn:ietf:params:oauth:grant-type:token-exchange",
        ])
        .args(["--data-urlencode", &format!("subject_token={token}")])
        .args([
            "--data-urlencode",
            "subject_token_type=urn:ietf:params:oauth:token-type:access_token",
        ])
        .arg(format!("{}/oauth/token", gw.api()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// Waits until the API lists `n` live sessions of `user` (the store has
/// their records); false if it does not within 15 s.
async fn listed_live(gw: &Arc<Gateway>, user: &'static str, n: usize) -> bool {
    let gw = gw.clone();
    tokio::task::spawn_blocking(move || {
        eventually(Duration::from_secs(15), || {
            (live_sessions(&gw, user) == n).then_some(())
        })
        .is_some()
    })
    .await
    .unwrap()
}

/// Waits until `user` has no live session; false if some outlive 15 s.
async fn all_ended(gw: &Arc<Gateway>, user: &'static str) -> bool {
    listed_live(gw, user, 0).await
}

/// Changing a static token's groups (same token text) ends its sessions
/// and the gateway tokens exchanged from it; a policy reload ends the
/// sessions it no longer admits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_reach_live_sessions_and_derived_tokens() {
    let gw = Arc::new(app_gateway());
    let derived = exchange(&gw, ALICE_TOKEN);
    let by_static = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    let by_derived = connect(&gw, "app-db", &derived).await.unwrap();
    assert!(by_derived.simple_query("select 1").await.is_ok());
    assert!(listed_live(&gw, "alice", 2).await);

    let config = gw.dir().join("portcullis.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let more_groups = text.replace(
        "user = \"alice\"\ngroups = [\"engineering\"]",
        "user = \"alice\"\ngroups = [\"engineering\", \"on-call\"]",
    );
    assert_ne!(text, more_groups);
    std::fs::write(&config, more_groups).unwrap();
    assert!(
        all_ended(&gw, "alice").await,
        "sessions outlived the group change"
    );
    assert!(by_static.simple_query("select 1").await.is_err());
    assert!(by_derived.simple_query("select 1").await.is_err());
    // The token logs in again with its new groups; what was exchanged
    // from the old entry does not.
    let again = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    let refused = connect(&gw, "app-db", &derived).await.err().unwrap();
    let (_, message) = db_error(&refused);
    assert!(message.contains("removed or changed"), "{message}");

    assert!(listed_live(&gw, "alice", 1).await);
    // A policy that no longer lets her connect ends the live session.
    let policies = gw.dir().join("policies").join("test.cedar");
    let mut cedar = std::fs::read_to_string(&policies).unwrap();
    cedar.push_str(
        "\n@id(\"alice-out\")\nforbid(principal == User::\"alice\", action == Action::\"connect\", resource);\n",
    );
    std::fs::write(&policies, cedar).unwrap();
    assert!(
        all_ended(&gw, "alice").await,
        "a session outlived the policy"
    );
    assert!(again.simple_query("select 1").await.is_err());
}

/// 10,000 half-sent logins from one address: past the per-address cap the
/// gateway closes connections before reading them, those it holds cost
/// bounded memory, and a client from another address logs in meanwhile.
/// 10,000 such logins once added 756 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_logins_are_capped_and_others_still_log_in() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const ATTEMPTS: usize = 10_000;
    const PER_ADDRESS: usize = 256;
    // No login times out while the flood lasts, so the cap is what holds.
    let gw = gateway()
        .app_db("app-db", cluster())
        .extra(&format!(
            "[limits]\nmax_unauthenticated_per_address = {PER_ADDRESS}\nlogin_timeout_secs = 300\n"
        ))
        .start();
    let before = gw.rss_kib();
    let mut opening = bytes::BytesMut::new();
    portcullis_pg_wire::encode::startup_message(
        &mut opening,
        &[("user", "raw"), ("database", "app-db")],
    );
    // The first half of a 16 KiB password message.
    let mut half_password = b"p".to_vec();
    half_password.extend_from_slice(&(16_000u32 + 4).to_be_bytes());
    half_password.extend_from_slice(&[b'x'; 8_000]);
    let (mut held, mut closed) = (Vec::new(), 0);
    for _ in 0..ATTEMPTS {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = socket
            .connect(format!("127.0.0.1:{}", gw.pg_port).parse().unwrap())
            .await
            .unwrap();
        let _ = s.write_all(&opening).await;
        // Let in: asked for a password. Over the cap: closed unread.
        let mut first = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut first)).await;
        if matches!(read, Ok(Ok(1))) && first[0] == b'R' {
            let _ = s.write_all(&half_password).await;
            held.push(s);
        } else {
            closed += 1;
        }
    }
    eprintln!(
        "{} half-sent logins held, {closed} closed unread",
        held.len()
    );
    assert!(
        !held.is_empty() && held.len() <= PER_ADDRESS,
        "{} held",
        held.len()
    );
    assert_eq!(held.len() + closed, ATTEMPTS);
    let grown_kib = gw.rss_kib().saturating_sub(before);
    eprintln!("the gateway grew by {grown_kib} KiB");
    assert!(
        grown_kib < 64 * 1024,
        "{} held logins cost {grown_kib} KiB",
        held.len()
    );
    // A client from another address is not held up.
    let client = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    assert!(client.simple_query("select 1").await.is_ok());
    drop(held);
}

/// Opens `n` connections to `port` from 127.0.0.2, each sending `first`.
async fn open_from_elsewhere(port: u16, n: usize, first: &[u8]) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut held = Vec::new();
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = socket
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap();
        if !first.is_empty() {
            let _ = s.write_all(first).await;
        }
        held.push(s);
    }
    held
}

/// Whether the gateway closes `s` (EOF or reset) within `limit`.
async fn closed_by_peer(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// A slowloris on the API port: idle and half-sent requests from one
/// address are capped and closed at the header deadline, and `/healthz`
/// answers another client meanwhile. They once held the port for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_port_cannot_be_held_hostage() {
    let gw = gateway()
        .app_db("app-db", cluster())
        .extra("[limits]\napi_header_timeout_secs = 2\napi_max_connections_per_address = 32\n")
        .start();
    let mut idle = open_from_elsewhere(gw.api_port, 100, b"").await;
    let mut half =
        open_from_elsewhere(gw.api_port, 50, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    let healthy = {
        let gw_api = gw.api();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(["-s", "-m", "5", &format!("{gw_api}/healthz")])
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    assert!(
        String::from_utf8_lossy(&healthy.stdout).contains("ok"),
        "healthz: {}",
        String::from_utf8_lossy(&healthy.stdout)
    );
    for s in idle.iter_mut().chain(half.iter_mut()) {
        assert!(
            closed_by_peer(s, Duration::from_secs(20)).await,
            "an idle or half-sent API connection stayed open"
        );
    }
}

/// SIGTERM while an API client holds a half-sent request: the gateway
/// exits by the shutdown deadline. It once stayed up for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_half_sent_api_request() {
    let mut gw = gateway()
        .app_db("app-db", cluster())
        .extra("[limits]\napi_header_timeout_secs = 120\nshutdown_deadline_secs = 2\n")
        .start();
    let _half = open_from_elsewhere(gw.api_port, 1, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    // Give the gateway the connection before the signal.
    let _held = tokio::task::spawn_blocking({
        let api = gw.api();
        move || {
            std::process::Command::new("curl")
                .args(["-s", "-m", "5", &format!("{api}/healthz")])
                .output()
        }
    })
    .await;
    assert!(
        tokio::task::block_in_place(|| gw.stop()),
        "the gateway did not exit cleanly after SIGTERM:\n{}",
        gw.log()
    );
}

/// The API over TLS, verified against the gateway's CA (the same
/// certificate handling as the PostgreSQL listener).
#[test]
fn the_api_speaks_tls_with_the_gateways_certificate() {
    let gw = app_gateway();
    let https = gw.api().replace("http://127.0.0.1", "https://localhost");
    let out = std::process::Command::new("curl")
        .args(["-s", "--fail", "--cacert"])
        .arg(gw.ca_path())
        .arg(format!("{https}/healthz"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // With a bearer token, over TLS.
    let out = std::process::Command::new("curl")
        .args(["-s", "--fail", "--cacert"])
        .arg(gw.ca_path())
        .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .arg(format!("{https}/api/whoami"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("admin"));
    // The CLI, verifying the gateway's CA.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["sessions", "list", "--api", &https, "--api-ca"])
        .arg(gw.ca_path())
        .env("PORTCULLIS_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A database name with a newline cannot forge a log line: text logs
/// escape control characters in every field.
#[test]
fn a_newline_in_a_client_field_cannot_forge_a_log_line() {
    let gw = app_gateway();
    let forged = "2026-01-01T00:00:00.000000Z  INFO portcullis: FORGED admin logged in";
    let mut raw = Raw::connect(gw.pg_port);
    let mut out = bytes::BytesMut::new();
    portcullis_pg_wire::encode::startup_message(
        &mut out,
        &[("user", "raw"), ("database", &format!("nope\n{forged}"))],
    );
    raw.send(&out);
    assert!(matches!(raw.read_msg(), Some((b'R', _))));
    let mut out = bytes::BytesMut::new();
    portcullis_pg_wire::encode::password(&mut out, ALICE_TOKEN.as_bytes());
    raw.send(&out);
    assert!(raw.next_error().is_some());
    let refused = eventually(Duration::from_secs(10), || {
        gw.log().contains("FORGED").then(|| gw.log())
    })
    .expect("the refusal was not logged");
    for line in refused.lines() {
        assert!(!line.starts_with("2026-01-01"), "forged line: {line}");
    }
    assert!(refused.contains("nope\\n2026-01-01"), "{refused}");
}

/// A server posing as the upstream that asks for `method` (3: the password
/// in clear, 5: md5): what each client that connects sends after the
/// request, one entry per connection.
fn fake_upstream(method: i32) -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut len = [0u8; 4];
                if conn.read_exact(&mut len).is_err() {
                    return;
                }
                let mut startup = vec![0u8; u32::from_be_bytes(len) as usize - 4];
                let _ = conn.read_exact(&mut startup);
                let mut ask = vec![b'R'];
                let body: Vec<u8> = if method == 5 {
                    [5i32.to_be_bytes().as_slice(), b"salt"].concat()
                } else {
                    method.to_be_bytes().to_vec()
                };
                ask.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
                ask.extend_from_slice(&body);
                let _ = conn.write_all(&ask);
                let mut answer = Vec::new();
                let _ = conn.read_to_end(&mut answer);
                let _ = tx.send(answer);
            });
        }
    });
    (port, rx)
}

/// Something posing as the upstream asks for the service password in
/// clear (or as md5): libpq sends it, the gateway sends nothing unless its
/// configuration says so (and in clear only over verified TLS).
#[test]
fn an_upstream_impostor_gets_no_password() {
    const SECRET: &str = "service-secret-6d1f";
    for method in [3, 5] {
        let (port, answers) = fake_upstream(method);
        // libpq answers whatever the server asks for.
        let _ = std::process::Command::new("psql")
            .args(["-X", "-c", "select 1"])
            .arg(format!(
                "host=127.0.0.1 port={port} dbname=app user=svc sslmode=disable"
            ))
            .env("PGPASSWORD", SECRET)
            .output()
            .unwrap();
        let direct = answers.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            method == 5 || String::from_utf8_lossy(&direct).contains(SECRET),
            "libpq did not send the password in clear"
        );
        assert!(
            direct.first() == Some(&b'p'),
            "libpq sent no password message"
        );

        let gw = gateway()
            .connection(&format!(
                "name = \"fake-db\"\nkind = \"postgres\"\nupstream = \"127.0.0.1:{port}\"\ndatabase = \"app\"\nuser = \"svc\"\npassword_env = \"FAKE_PW\"\n"
            ))
            .env("FAKE_PW", SECRET)
            .start();
        let out = psql(
            &gw.conninfo("fake-db", ""),
            ADMIN_TOKEN,
            &["-c", "select 1"],
            None,
        );
        assert!(!out.ok);
        let through = answers.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            through.is_empty(),
            "the gateway answered: {:?}",
            String::from_utf8_lossy(&through)
        );
        assert!(
            gw.log().contains("the service password was not sent"),
            "{}",
            gw.log()
        );
        assert!(!gw.log().contains(SECRET));
    }
}

/// A relay posing as the upstream: it ends the client's TLS with its own
/// certificate (which `upstream_tls = "require"` does not check) and opens
/// its own TLS to the real server, seeing everything in between.
async fn tls_interceptor(real: String) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let own = portcullis_core::tls::generate_ca_and_server(&["localhost".into()]).unwrap();
    let accept = tokio_rustls::TlsAcceptor::from(
        portcullis_core::tls::server_config(
            own.cert_pem.as_bytes(),
            own.key_pem.as_bytes(),
            "interceptor",
            &[],
        )
        .unwrap(),
    );
    let connect = tokio_rustls::TlsConnector::from(
        portcullis_proto_pg::tls::client_config(portcullis_proto_pg::UpstreamTls::Require, None)
            .unwrap()
            .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let (accept, connect, real) = (accept.clone(), connect.clone(), real.clone());
            tokio::spawn(async move {
                let mut ssl_request = [0u8; 8];
                client.read_exact(&mut ssl_request).await?;
                client.write_all(b"S").await?;
                let mut client = accept.accept(client).await?;
                let mut server = tokio::net::TcpStream::connect(&real).await?;
                server.write_all(&ssl_request).await?;
                let mut answer = [0u8; 1];
                server.read_exact(&mut answer).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let mut server = connect.connect(name, server).await?;
                tokio::io::copy_bidirectional(&mut client, &mut server).await?;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    port
}

/// With `upstream_tls = "require"` the gateway does not verify the
/// upstream's certificate, so a relay can pose as the upstream. SCRAM is
/// bound to the TLS connection (`SCRAM-SHA-256-PLUS`): the real server
/// sees the relay's certificate in the binding and refuses, where a client
/// that does not bind logs in through the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_interceptor_cannot_complete_the_upstream_login() {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let g = portcullis_core::tls::generate_ca_and_server(&names).unwrap();
    let real = portcullis_testkit::PgCluster::start(portcullis_testkit::ClusterOptions {
        tls: Some((g.cert_pem.clone(), g.key_pem.clone())),
        ..Default::default()
    });
    let relay = tls_interceptor(real.addr()).await;
    // libpq without binding logs in through the relay.
    let direct = tokio::task::spawn_blocking(move || {
        psql(
            &format!(
                "host=127.0.0.1 port={relay} dbname=app user=tls_user sslmode=require channel_binding=disable"
            ),
            portcullis_testkit::READER_PASSWORD,
            &["-c", "select 'through the relay'"],
            None,
        )
    })
    .await
    .unwrap();
    assert!(direct.ok, "{}", direct.stderr);
    let gw = gateway()
        .connection(&format!(
            "name = \"relayed\"\nkind = \"postgres\"\nupstream = \"127.0.0.1:{relay}\"\ndatabase = \"app\"\n\
             user = \"tls_user\"\npassword_env = \"TLS_PW\"\nupstream_tls = \"require\"\n"
        ))
        .env("TLS_PW", portcullis_testkit::READER_PASSWORD)
        .start();
    let conninfo = gw.conninfo("relayed", "");
    let through = tokio::task::spawn_blocking(move || {
        psql(
            &conninfo,
            ADMIN_TOKEN,
            &["-c", "select 'through the relay'"],
            None,
        )
    })
    .await
    .unwrap();
    assert!(!through.ok, "the gateway logged in through the relay");
    assert!(gw.log().contains("channel binding"), "{}", gw.log());
}

/// An issuer that types `email_verified` as the string `"false"`: the
/// gateway reads claims strictly, so a string is not a verified address.
#[test]
fn a_loosely_typed_claim_is_refused() {
    let p = portcullis_testkit::OidcProvider::start(&["k1"]);
    let gw = crate::identity::oidc_gateway(&p, "");
    let token = p
        .login("portcullis-cli", "mallory", "mallory-pw")
        .get("id_token");
    // The issuer did send the string.
    assert_eq!(
        crate::identity::claims_of(&token)["email_verified"],
        "false"
    );
    let out = psql(
        &gw.conninfo("app-db", ""),
        &token,
        &["-c", "select 1"],
        None,
    );
    assert!(!out.ok);
    assert!(
        out.stderr.contains("email_verified claim is not a boolean"),
        "{}",
        out.stderr
    );
}
