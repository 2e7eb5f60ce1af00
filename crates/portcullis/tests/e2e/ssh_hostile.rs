//! SSH driven by a raw russh client: what OpenSSH never sends (a client
//! that stops reading, so the gateway's writes to it never complete, and
//! then tries to go on after it was revoked; a terminal asked without
//! echo), and what it sends only from a real terminal (window changes).

use std::sync::Arc;
use std::time::Duration;

use portcullis_testkit::{Sshd, ADMIN_TOKEN, ALICE_TOKEN};
use russh::client;

use crate::common::*;

const POLICIES: &str = r#"
@id("ssh-connect-and-shell")
permit(principal in Group::"engineering", action in [Action::"connect", Action::"ssh_shell"], resource == Connection::"web-1");
@id("admins-all")
permit(principal in Group::"admins", action, resource);
"#;

struct AnyHost;

impl client::Handler for AnyHost {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKey,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// A gateway with `web-1` on `sshd` and this file's policies.
fn web_gateway(sshd: &Sshd) -> portcullis_testkit::Gateway {
    gateway()
        .ssh()
        .connection(&sshd.connection("web-1"))
        .policies(POLICIES)
        .start()
}

/// A raw client with `config`, logged in to web-1 as alice.
async fn alice_raw(
    gw: &portcullis_testkit::Gateway,
    config: client::Config,
) -> client::Handle<AnyHost> {
    let address = ("127.0.0.1", gw.ssh_port.unwrap());
    let mut session = client::connect(Arc::new(config), address, AnyHost)
        .await
        .unwrap();
    let auth = session
        .authenticate_password("web-1", ALICE_TOKEN)
        .await
        .unwrap();
    assert!(auth.success());
    session
}

/// Everything the channel printed on stdout until it closed.
async fn printed_until_closed(shell: &mut russh::Channel<client::Msg>) -> String {
    let mut printed = Vec::new();
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(20), shell.wait())
        .await
        .expect("the shell ends")
    {
        if let russh::ChannelMsg::Data { data } = msg {
            printed.extend_from_slice(&data);
        }
    }
    String::from_utf8_lossy(&printed).into_owned()
}

/// Disconnects `session`; the id of the session, once its end is recorded.
async fn leave(gw: &portcullis_testkit::Gateway, session: client::Handle<AnyHost>) -> String {
    session
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await
        .unwrap();
    eventually(Duration::from_secs(10), || {
        let (_, body) = curl(gw, "/api/sessions", Some(ADMIN_TOKEN));
        let list: serde_json::Value = serde_json::from_str(&body).ok()?;
        list[0]["ended_at"].as_str()?;
        list[0]["id"].as_str().map(str::to_owned)
    })
    .expect("the session ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_still_cut_off_when_revoked() {
    let sshd = Sshd::start();
    let gw = web_gateway(&sshd);
    // Never lets the gateway send a byte of channel data.
    let config = client::Config {
        window_size: 0,
        ..Default::default()
    };
    let session = alice_raw(&gw, config).await;
    let shell = session.channel_open_session().await.unwrap();
    shell.request_shell(false).await.unwrap();
    // Refusals (exec is not permitted) the gateway must write to a client
    // that takes nothing: its queues to this client fill up.
    for _ in 0..12 {
        let refused = session.channel_open_session().await.unwrap();
        refused.exec(false, "id").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("typed-after-revocation");

    let revoked = revoke(&gw, "alice");
    assert!(revoked.contains("\"sessions_ended\":1"), "{revoked}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The shell the client opened before may no longer run anything.
    let typed = format!("touch {}\n", marker.display());
    let _ = shell.data(typed.as_bytes()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!marker.exists(), "a command ran after the revocation");
    assert!(session.is_closed(), "the revoked connection is still open");
    let ended = eventually(Duration::from_secs(10), || {
        let (_, body) = curl(&gw, "/api/sessions", Some(ADMIN_TOKEN));
        let list: serde_json::Value = serde_json::from_str(&body).ok()?;
        list[0]["ended_at"].as_str().map(str::to_owned)
    });
    assert!(ended.is_some(), "the session's end was never recorded");
}

#[test]
fn a_connection_that_never_says_its_ssh_version_is_closed_at_the_login_deadline() {
    use std::io::Read;
    let gw = gateway()
        .ssh()
        .policies(POLICIES)
        .extra("[limits]\nlogin_timeout_secs = 2\n")
        .start();
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", gw.ssh_port.unwrap())).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match idle.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => panic!("still open after {:?}: {e}", started.elapsed()),
        }
    }
    assert!(seen.starts_with(b"SSH-2.0-Portcullis"), "{seen:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_asked_without_echo_still_shows_the_commands_typed() {
    let sshd = Sshd::start();
    let gw = web_gateway(&sshd);
    let session = alice_raw(&gw, client::Config::default()).await;
    let mut shell = session.channel_open_session().await.unwrap();
    // ECHO 0: without the gateway's say, what is typed would show nowhere.
    let no_echo = [(russh::Pty::ECHO, 0)];
    shell
        .request_pty(false, "xterm", 80, 24, 0, 0, &no_echo)
        .await
        .unwrap();
    shell.request_shell(false).await.unwrap();
    shell
        .data(&b"echo hidden-$((3*4))\nexit\n"[..])
        .await
        .unwrap();
    let printed = printed_until_closed(&mut shell).await;
    assert!(printed.contains("hidden-12"), "{printed}");
    let id = leave(&gw, session).await;
    let (ok, replay) = api_cli(&gw, ADMIN_TOKEN, &["replay", &id]);
    assert!(ok, "{replay}");
    assert!(replay.contains("echo hidden-$((3*4))"), "{replay}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_change_reaches_the_server_and_the_recording() {
    let sshd = Sshd::start();
    let gw = web_gateway(&sshd);
    let session = alice_raw(&gw, client::Config::default()).await;
    let mut shell = session.channel_open_session().await.unwrap();
    shell
        .request_pty(false, "xterm", 80, 24, 0, 0, &[])
        .await
        .unwrap();
    shell.request_shell(false).await.unwrap();
    shell.window_change(100, 40, 0, 0).await.unwrap();
    shell.data(&b"stty size\nexit\n"[..]).await.unwrap();
    let printed = printed_until_closed(&mut shell).await;
    assert!(printed.contains("40 100"), "{printed}");
    let id = leave(&gw, session).await;
    let cast =
        std::fs::read_to_string(gw.dir().join("data/recordings").join(&id).join("1.cast")).unwrap();
    let header: serde_json::Value = serde_json::from_str(cast.lines().next().unwrap()).unwrap();
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(80), Some(24))
    );
    assert!(cast.contains("\"r\",\"100x40\""), "{cast}");
}
