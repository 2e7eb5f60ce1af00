//! Admission: tokens, connections, connect policy, upstream credentials, TLS.

use portcullis_testkit::{
    free_port, psql, ClusterOptions, PgCluster, ADMIN_TOKEN, ALICE_TOKEN, EVE_TOKEN, MD5_PASSWORD,
    READER_PASSWORD,
};

use crate::common::*;

#[test]
fn psql_reaches_the_upstream_as_the_service_user() {
    let gw = app_gateway();
    let out = psql(
        &gw.conninfo("app-db", ""),
        ALICE_TOKEN,
        &["-c", "select current_user, current_database()"],
        None,
    );
    assert!(out.ok, "{}\n{}", out.stderr, gw.log());
    assert_eq!(out.stdout.trim(), "portcullis_reader|app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_with_28p01() {
    let gw = app_gateway();
    let e = connect(&gw, "app-db", "not-a-token")
        .await
        .expect_err("must be refused");
    let (code, msg) = db_error(&e);
    assert_eq!(code, "28P01");
    assert_eq!(
        msg,
        "portcullis: token authentication failed: the token is not valid"
    );

    let out = psql(
        &gw.conninfo("app-db", ""),
        "not-a-token",
        &["-c", "select 1"],
        None,
    );
    assert!(!out.ok);
    assert!(
        out.stderr.contains("token authentication failed"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_missing_token_is_refused_with_28p01() {
    let gw = app_gateway();
    let err = Raw::login(gw.pg_port, "app-db", "").expect_err("must be refused");
    assert_eq!(
        err,
        (
            "28P01".into(),
            "portcullis: token authentication failed: no token was presented".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_connection_is_3d000_and_named() {
    let gw = app_gateway();
    let e = connect(&gw, "no-such-db", ALICE_TOKEN)
        .await
        .expect_err("must be refused");
    assert_eq!(
        db_error(&e),
        (
            "3D000".into(),
            "portcullis: connection \"no-such-db\" does not exist".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_a_cedar_decision_denied_by_default() {
    let gw = app_gateway();
    let e = connect(&gw, "app-db", EVE_TOKEN)
        .await
        .expect_err("eve has no permit");
    assert_eq!(
        db_error(&e),
        (
            "42501".into(),
            "portcullis: connect to app-db denied for eve (no policy permits it)".into()
        )
    );

    // A forbid names the policy that decided.
    let gw = gateway()
        .app_db("app-db", cluster())
        .policies(
            r#"permit(principal, action == Action::"connect", resource);
               @id("no-alice-on-app")
               forbid(principal == User::"alice", action, resource == Connection::"app-db");"#,
        )
        .start();
    let e = connect(&gw, "app-db", ALICE_TOKEN)
        .await
        .expect_err("forbidden");
    let (code, msg) = db_error(&e);
    assert_eq!(code, "42501");
    assert!(msg.ends_with("(policy no-alice-on-app)"), "{msg}");
    assert!(connect(&gw, "app-db", EVE_TOKEN).await.is_ok());
}

#[test]
fn scram_md5_and_trust_upstreams_all_work() {
    let c = cluster();
    let gw = gateway()
        .app_db("scram-db", c)
        .connection(&format!(
            "name = \"md5-db\"\nkind = \"postgres\"\nupstream = \"{}\"\ndatabase = \"app\"\nuser = \"md5_user\"\npassword_env = \"MD5_PW\"\nupstream_auth = \"md5\"\n",
            c.addr()
        ))
        .connection(&format!(
            "name = \"trust-db\"\nkind = \"postgres\"\nupstream = \"{}\"\ndatabase = \"app\"\nuser = \"trust_user\"\n",
            c.addr()
        ))
        .env("MD5_PW", MD5_PASSWORD)
        .start();
    for (db, user) in [
        ("scram-db", "portcullis_reader"),
        ("md5-db", "md5_user"),
        ("trust-db", "trust_user"),
    ] {
        let out = psql(
            &gw.conninfo(db, ""),
            ADMIN_TOKEN,
            &["-c", "select current_user"],
            None,
        );
        assert!(out.ok, "{db}: {}\n{}", out.stderr, gw.log());
        assert_eq!(out.stdout.trim(), user);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_reported_and_others_keep_working() {
    let c = cluster();
    let gw = gateway()
        .app_db("app-db", c)
        .connection(&format!(
            "name = \"down-db\"\nkind = \"postgres\"\nupstream = \"127.0.0.1:{}\"\ndatabase = \"app\"\nuser = \"x\"\n",
            free_port()
        ))
        .start();
    let e = connect(&gw, "down-db", ADMIN_TOKEN)
        .await
        .expect_err("down");
    let (code, msg) = db_error(&e);
    assert_eq!(code, "08001");
    assert!(
        msg.starts_with("portcullis: cannot reach upstream of down-db"),
        "{msg}"
    );
    let client = connect(&gw, "app-db", ALICE_TOKEN)
        .await
        .expect("app-db still served");
    assert_eq!(
        client
            .query_one("select 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_service_credential_does_not_leak_it() {
    let c = cluster();
    let gw = gateway()
        .connection(&format!(
            "name = \"bad-cred\"\nkind = \"postgres\"\nupstream = \"{}\"\ndatabase = \"app\"\nuser = \"portcullis_reader\"\npassword_env = \"WRONG\"\n",
            c.addr()
        ))
        .env("WRONG", "wrong-password-123")
        .start();
    let e = connect(&gw, "bad-cred", ADMIN_TOKEN)
        .await
        .expect_err("refused upstream");
    let (code, msg) = db_error(&e);
    assert_eq!(code, "08001");
    assert_eq!(
        msg,
        "portcullis: the upstream of bad-cred refused the gateway's service credential"
    );
    assert!(!gw.log().contains("wrong-password-123"));
}

#[test]
fn tls_with_the_generated_ca_passes_verify_full() {
    let gw = app_gateway();
    let ca = gw.ca_path();
    for host in ["localhost", "127.0.0.1"] {
        let conninfo = format!(
            "host={host} port={} dbname=app-db user=alice sslmode=verify-full sslrootcert={}",
            gw.pg_port,
            ca.display()
        );
        let out = psql(&conninfo, ALICE_TOKEN, &["-c", "select 42"], None);
        assert!(out.ok, "{host}: {}", out.stderr);
        assert_eq!(out.stdout.trim(), "42");
    }
}

#[test]
fn plaintext_token_login_is_refused_when_tls_is_required() {
    let gw = gateway()
        .app_db("app-db", cluster())
        .extra("[tls]\nplaintext_login = \"never\"\n")
        .start();
    let out = psql(
        &gw.conninfo("app-db", ""),
        ALICE_TOKEN,
        &["-c", "select 1"],
        None,
    );
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("TLS is required to present a token here"),
        "{}",
        out.stderr
    );
    let out = psql(
        &gw.conninfo("app-db", "")
            .replace("sslmode=disable", "sslmode=require"),
        ALICE_TOKEN,
        &["-c", "select 1"],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
}

#[test]
fn tls_to_the_upstream_require_and_verify_full() {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let g = portcullis_core::tls::generate_ca_and_server(&names).unwrap();
    let other = portcullis_core::tls::generate_ca_and_server(&names).unwrap();
    let c = PgCluster::start(ClusterOptions {
        tls: Some((g.cert_pem.clone(), g.key_pem.clone())),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &g.ca_cert_pem).unwrap();
    std::fs::write(dir.path().join("other-ca.pem"), &other.ca_cert_pem).unwrap();
    let conn = |name: &str, mode: &str, ca: &str| {
        format!(
            "name = \"{name}\"\nkind = \"postgres\"\nupstream = \"{}\"\ndatabase = \"app\"\nuser = \"tls_user\"\n\
             password_env = \"TLS_PW\"\nupstream_tls = \"{mode}\"\n{ca}",
            c.addr()
        )
    };
    let ca_line = |f: &str| format!("upstream_ca = \"{}\"\n", dir.path().join(f).display());
    let gw = gateway()
        .connection(&conn("tls-require", "require", ""))
        .connection(&conn("tls-verify", "verify-full", &ca_line("ca.pem")))
        .connection(&conn(
            "tls-wrong-ca",
            "verify-full",
            &ca_line("other-ca.pem"),
        ))
        .connection(&conn("tls-off", "disable", ""))
        .env("TLS_PW", READER_PASSWORD)
        .start();
    let q = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";
    for db in ["tls-require", "tls-verify"] {
        let out = psql(&gw.conninfo(db, ""), ADMIN_TOKEN, &["-c", q], None);
        assert!(out.ok, "{db}: {}\n{}", out.stderr, gw.log());
        assert_eq!(out.stdout.trim(), "t");
    }
    let out = psql(
        &gw.conninfo("tls-wrong-ca", ""),
        ADMIN_TOKEN,
        &["-c", q],
        None,
    );
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("TLS to upstream of tls-wrong-ca failed"),
        "{}",
        out.stderr
    );
    // The upstream only lets tls_user in over TLS, so plain TCP is refused there.
    let out = psql(&gw.conninfo("tls-off", ""), ADMIN_TOKEN, &["-c", q], None);
    assert!(!out.ok);
    assert!(out.stderr.contains("refused"), "{}", out.stderr);
}

#[test]
fn an_oversized_startup_packet_is_refused() {
    let gw = app_gateway();
    let mut r = Raw::connect(gw.pg_port);
    r.send(&20_000u32.to_be_bytes());
    assert!(r.is_closed());
    // A correct client still gets in.
    assert!(Raw::login(gw.pg_port, "app-db", ALICE_TOKEN).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quote_hiding_client_encodings_are_refused_however_they_are_set() {
    let gw = app_gateway();
    // In the startup packet.
    let out = std::process::Command::new("psql")
        .arg("-X")
        .arg(gw.conninfo("app-db", ""))
        .arg("-c")
        .arg("select 1")
        .env("PGPASSWORD", ALICE_TOKEN)
        .env("PGCLIENTENCODING", "SJIS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("client_encoding \"SJIS\" is not allowed"),
        "{stderr}"
    );
    // Every name the server accepts for a safe encoding is accepted.
    for alias in ["utf-8", "Unicode", "UTF_8"] {
        let out = std::process::Command::new("psql")
            .arg("-X")
            .arg(gw.conninfo("app-db", ""))
            .arg("-c")
            .arg("show client_encoding")
            .env("PGPASSWORD", ALICE_TOKEN)
            .env("PGCLIENTENCODING", alias)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{alias}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // By SET.
    let client = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    let e = client
        .batch_execute("set client_encoding = 'SJIS'")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "42501");
    // By set_config with constants: decided as the SET it is.
    let e = client
        .batch_execute("select set_config('client_encoding', 'SJIS', false)")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "42501");
    // By set_config of a name the gateway cannot read, which the policy
    // lets alice call: the server reports the change and the gateway ends
    // the session rather than misread it.
    let e = client
        .batch_execute("select set_config(n, 'SJIS', false) from (values ('client_encoding')) v(n)")
        .await
        .unwrap_err();
    let text = format!("{e:?}");
    assert!(
        text.contains("switched client_encoding") || e.is_closed(),
        "{text}"
    );
    assert!(
        client.batch_execute("select 1").await.is_err(),
        "the session must be over"
    );
}
