//! SSH certificate login: `portcullis ssh` (and `portcullis login`) get a
//! short-lived certificate from the gateway's CA, and plain `ssh` then
//! logs in with no password; a certificate from any other CA, or one
//! whose user was revoked, does not.

use std::path::Path;
use std::process::{Command, Stdio};

use portcullis_testkit::{keygen, Gateway, Sshd, ADMIN_TOKEN, ALICE_TOKEN};

use crate::common::*;

const POLICIES: &str = r#"
@id("ssh-connect")
permit(principal in Group::"engineering", action == Action::"connect", resource == Connection::"web-1");
@id("ssh-one-command")
permit(principal in Group::"engineering", action == Action::"ssh_exec", resource == Connection::"web-1")
when { context has command && context.command == "echo allowed-by-policy" };
@id("admins-all")
permit(principal in Group::"admins", action, resource);
"#;

/// Options that keep ssh from asking anything: no password prompt, no
/// known_hosts.
const NO_QUESTIONS: [&str; 8] = [
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
];

/// A gateway with `web-1` on `sshd` and this file's policies.
fn web_gateway(sshd: &Sshd) -> Gateway {
    gateway()
        .ssh()
        .connection(&sshd.connection("web-1"))
        .policies(POLICIES)
        .start()
}

fn portcullis_ssh(home: &Path, gw: &Gateway, token: &str, command: &str) -> std::process::Output {
    let api = gw.api();
    let mut args = vec!["ssh", "web-1", "--api", &api, "--token", token, "--"];
    args.extend(NO_QUESTIONS);
    args.push(command);
    Command::new(BIN)
        .args(&args)
        .env("XDG_CONFIG_HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Plain ssh with `key` (its certificate beside it as `KEY-cert.pub`).
fn plain_ssh(gw: &Gateway, key: &Path, command: &str) -> std::process::Output {
    Command::new("ssh")
        .args(["-F", "/dev/null", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(key)
        .args(NO_QUESTIONS)
        .arg("-p")
        .arg(gw.ssh_port.unwrap().to_string())
        .args(["web-1@127.0.0.1", command])
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_gateway_certificate_logs_plain_ssh_in_until_its_user_is_revoked() {
    let sshd = Sshd::start();
    let gw = web_gateway(&sshd);
    let home = tempfile::tempdir().unwrap();
    let out = portcullis_ssh(home.path(), &gw, ALICE_TOKEN, "echo allowed-by-policy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "allowed-by-policy\n");

    let key = home.path().join("portcullis/ssh/id_ed25519");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = plain_ssh(&gw, &key, "echo allowed-by-policy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, body) = curl(&gw, "/api/sessions", Some(ADMIN_TOKEN));
    assert_eq!(code, 200);
    let sessions: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(sessions[0]["auth_method"], "ssh-certificate");
    assert_eq!(sessions[0]["user"], "alice");

    let answer = revoke(&gw, "alice");
    assert!(answer.contains("\"sessions_ended\""), "{answer}");
    let out = plain_ssh(&gw, &key, "echo allowed-by-policy");
    assert!(
        !out.status.success(),
        "a revoked user's certificate still logs in"
    );
    assert!(gw.log().contains("has been revoked"), "{}", gw.log());
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let sshd = Sshd::start();
    let gw = web_gateway(&sshd);
    let dir = tempfile::tempdir().unwrap();
    keygen(&dir.path().join("rogue_ca"));
    keygen(&dir.path().join("id"));
    // A well-formed OpenSSH user certificate from a CA the gateway does
    // not know, carrying an identity in the gateway's own format: an
    // administrator's.
    let forged = r#"extension:identity@portcullis={"user":"mallory","groups":["admins"],"actor":null,"method":"static-token","issued_at":null,"expires_at":4102444800,"id":null,"sources":[]}"#;
    let signed = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(dir.path().join("rogue_ca"))
        .args(["-I", "mallory", "-n", "mallory", "-V", "+1h", "-O", forged])
        .arg(dir.path().join("id.pub"))
        .output()
        .unwrap();
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    assert!(dir.path().join("id-cert.pub").exists());
    let out = plain_ssh(&gw, &dir.path().join("id"), "echo allowed-by-policy");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
    assert!(
        gw.log().contains("SSH certificate login refused"),
        "{}",
        gw.log()
    );
    let (_, body) = curl(&gw, "/api/sessions", Some(ADMIN_TOKEN));
    assert_eq!(body.trim(), "[]");
}

#[test]
fn a_shell_is_warned_then_ended_when_its_token_expires() {
    let p = portcullis_testkit::OidcProvider::start(&["k1"]);
    let sshd = Sshd::start();
    let issuer = p.issuer();
    let gw = gateway()
        .ssh()
        .connection(&sshd.connection("web-1"))
        .policies(
            r#"permit(principal, action in [Action::"connect", Action::"ssh_shell"], resource == Connection::"web-1");
permit(principal in Group::"admins", action, resource);"#,
        )
        .extra(&format!(
            "[auth]\nsession_expiry_grace_secs = 2\n\n[ssh]\nexpiry_warning_secs = 30\n\n\
             [[oidc]]\nissuer = \"{issuer}\"\naudience = \"short-cli\"\nuser_claim = \"email\"\nleeway_secs = 0\n"
        ))
        .start();
    // An ID token that lives 3 s: the session may outlive it by 2 s.
    let short = p.login("short-cli", "alice", "alice-pw").get("id_token");
    let login = portcullis_testkit::SshLogin::new(gw.ssh_port.unwrap(), &short);
    let started = std::time::Instant::now();
    let mut shell = login
        .ssh()
        .args(["-tt", "web-1@127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = shell.stdin.take().unwrap();
    let ended = eventually(std::time::Duration::from_secs(20), || {
        shell.try_wait().unwrap()
    });
    let took = started.elapsed();
    drop(stdin);
    assert!(ended.is_some(), "the shell outlived its token");
    let out = shell.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("this session ends in"), "{stderr}");
    assert!(stderr.contains("expired"), "{stderr}");
    assert!(
        took < std::time::Duration::from_secs(15),
        "ended after {took:?}"
    );
    let reason = eventually(std::time::Duration::from_secs(10), || {
        let (_, body) = curl(&gw, "/api/sessions", Some(ADMIN_TOKEN));
        let sessions: serde_json::Value = serde_json::from_str(&body).ok()?;
        sessions[0]["end_reason"].as_str().map(str::to_owned)
    })
    .expect("the session's end is recorded");
    assert!(reason.contains("expired"), "{reason}");
}
