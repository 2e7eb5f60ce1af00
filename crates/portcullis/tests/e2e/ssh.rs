//! SSH end to end: the real `ssh`, `scp` and `sftp` through the gateway
//! to a throwaway OpenSSH server. Each refusal is judged by the server's
//! real state (a file that was or was not made, a port that was or was
//! not reached), after showing the same request works with the server's
//! key directly.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_testkit::{
    free_port, keygen, wait_for_port, Gateway, SshLogin, Sshd, ADMIN_TOKEN, ALICE_TOKEN,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::*;

const WEB: &str = "web-1";
const DEST: &str = "web-1@127.0.0.1";

/// Engineers may connect, open shells and move files, and run one exact
/// command; admins may do anything (and read sessions).
const POLICIES: &str = r#"
@id("ssh-connect")
permit(principal in Group::"engineering", action == Action::"connect", resource == Connection::"web-1");
@id("ssh-shell-and-files")
permit(principal in Group::"engineering", action in [Action::"ssh_shell", Action::"ssh_sftp"], resource == Connection::"web-1");
@id("ssh-one-command")
permit(principal in Group::"engineering", action == Action::"ssh_exec", resource == Connection::"web-1")
when { context has command && context.command == "echo allowed-by-policy" };
@id("admins-all")
permit(principal in Group::"admins", action, resource);
"#;

fn ssh_gateway(sshd: &Sshd, policies: &str) -> Gateway {
    gateway()
        .ssh()
        .connection(&sshd.connection(WEB))
        .policies(policies)
        .start()
}

fn alice(gw: &Gateway) -> SshLogin {
    SshLogin::new(gw.ssh_port.unwrap(), ALICE_TOKEN)
}

/// `ssh -tt` to web-1, its three streams piped.
fn interactive_shell(login: &SshLogin) -> Child {
    login
        .ssh()
        .args(["-tt", DEST])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `cmd` with `input` on its stdin (a pipe, closed afterwards).
fn run_with_input(mut cmd: Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The gateway's sessions, newest first.
fn sessions(gw: &Gateway) -> Vec<Value> {
    let (code, body) = curl(gw, "/api/sessions", Some(ADMIN_TOKEN));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The commands of the newest session, once it has ended.
fn last_session(gw: &Gateway) -> (String, Vec<Value>) {
    let id = eventually(Duration::from_secs(10), || {
        let list = sessions(gw);
        let newest = list.first()?;
        newest["ended_at"]
            .is_string()
            .then(|| newest["id"].as_str().unwrap().to_owned())
    })
    .expect("a session ended");
    let (code, body) = curl(gw, &format!("/api/sessions/{id}"), Some(ADMIN_TOKEN));
    assert_eq!(code, 200, "{body}");
    let detail: Value = serde_json::from_str(&body).unwrap();
    (id, detail["statements"].as_array().unwrap().clone())
}

#[test]
fn a_shell_is_recorded_and_its_replay_shows_what_was_typed_and_printed() {
    let sshd = Sshd::start();
    let gw = ssh_gateway(&sshd, POLICIES);
    let alice = alice(&gw);
    let mut shell = alice.ssh();
    shell.args(["-tt", DEST]);
    let out = run_with_input(shell, "echo typed-$((6*7))\nexit\n");
    assert!(
        text(&out.stdout).contains("typed-42"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let (id, commands) = last_session(&gw);
    assert_eq!(commands.len(), 1, "{commands:?}");
    assert_eq!(commands[0]["kind"], "shell");
    assert_eq!(
        commands[0]["decision"]["policies"][0],
        "ssh-shell-and-files"
    );
    assert_eq!(commands[0]["exit_status"], 0);
    let (ok, replay) = api_cli(&gw, ADMIN_TOKEN, &["replay", &id]);
    assert!(ok, "{replay}");
    // What was typed (echoed by the terminal) and what only the server
    // could print (the arithmetic's result).
    assert!(replay.contains("echo typed-$((6*7))"), "{replay}");
    assert!(replay.contains("typed-42"), "{replay}");

    let file = gw.dir().join("data/recordings").join(&id).join("1.cast");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let path = format!("/api/sessions/{id}/recordings/1");
    let (code, cast) = curl(&gw, &path, Some(ADMIN_TOKEN));
    assert_eq!(code, 200, "{cast}");
    let header: Value = serde_json::from_str(cast.lines().next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);

    // A recording changed on disk no longer matches its record.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all(b"[9.0,\"o\",\"forged\"]\n")
        .unwrap();
    let (code, body) = curl(&gw, &path, Some(ADMIN_TOKEN));
    assert_eq!(code, 409, "{body}");
    let (_, replay) = api_cli(&gw, ADMIN_TOKEN, &["replay", &id]);
    assert!(
        !replay.contains("forged") && replay.contains("does not match its record"),
        "{replay}"
    );
}

#[test]
fn an_exec_runs_only_as_policy_says_and_a_refusal_names_its_reason() {
    let sshd = Sshd::start();
    let gw = ssh_gateway(&sshd, POLICIES);
    let alice = alice(&gw);
    let marker = tempfile::tempdir().unwrap().keep().join("made-by-exec");
    let touch = format!("touch {}", marker.display());
    // scp's own command with a shell command after it: not a transfer.
    let smuggled = format!("scp -t /tmp; {touch}");
    for command in [&touch, &smuggled] {
        let direct = sshd
            .direct()
            .arg(command.as_str())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            marker.exists(),
            "the command works straight to the server: {}",
            text(&direct.stderr)
        );
        std::fs::remove_file(&marker).unwrap();

        let out = alice
            .ssh()
            .args([DEST, command])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("denied for alice (no policy permits it)")
                && stderr.contains("exec of"),
            "{stderr}"
        );
        assert!(!marker.exists(), "{command:?} ran through the gateway");
    }
    let (_, commands) = last_session(&gw);
    assert_eq!(commands[0]["kind"], "exec");
    assert_eq!(commands[0]["decision"]["allowed"], false);

    // ssh_sftp alone does not run legacy scp, an exec through the login
    // shell (which runs ~/.ssh/rc and the shell's startup files).
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.txt");
    std::fs::write(&source, "payload\n").unwrap();
    let uploaded = dir.path().join("uploaded.txt");
    // Straight to the server it is an ordinary upload. (What makes it
    // dangerous, ~/.ssh/rc run before it, is not replayed here: that
    // would write the test user's own ~/.ssh/rc.)
    let direct = sshd
        .direct_legacy_scp()
        .arg(&source)
        .arg(format!("{}@127.0.0.1:{}", sshd.user, uploaded.display()))
        .output()
        .unwrap();
    assert!(direct.status.success(), "{}", text(&direct.stderr));
    assert!(uploaded.exists());
    std::fs::remove_file(&uploaded).unwrap();
    let up = alice
        .scp()
        .arg("-O")
        .arg(&source)
        .arg(format!("{DEST}:{}", uploaded.display()))
        .output()
        .unwrap();
    assert!(!up.status.success());
    assert!(
        text(&up.stderr).contains("it needs ssh_exec as well as ssh_sftp"),
        "{}",
        text(&up.stderr)
    );
    assert!(!uploaded.exists(), "legacy scp ran with ssh_sftp alone");

    let out = alice
        .ssh()
        .args([DEST, "echo allowed-by-policy"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "allowed-by-policy\n");
    let (_, commands) = last_session(&gw);
    assert_eq!(commands[0]["exit_status"], 0);
    assert_eq!(commands[0]["bytes_out"], 18);
    assert_eq!(commands[0]["decision"]["policies"][0], "ssh-one-command");
}

fn sha256_file(path: &std::path::Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn scp_moves_50_mib_whole_both_ways_and_sftp_lists_a_directory() {
    let sshd = Sshd::start();
    // Legacy scp runs through the login shell: it needs ssh_exec too,
    // here granted for legacy scp only (`path` is set for nothing else).
    let policies = format!(
        "{POLICIES}\n@id(\"ssh-legacy-scp\")\npermit(principal in Group::\"engineering\", action == Action::\"ssh_exec\", resource == Connection::\"web-1\")\nwhen {{ context has path }};\n"
    );
    let gw = ssh_gateway(&sshd, &policies);
    let alice = alice(&gw);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.bin");
    let mut random = Vec::with_capacity(50 << 20);
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .take(50 << 20)
        .read_to_end(&mut random)
        .unwrap();
    std::fs::write(&source, &random).unwrap();
    let want = sha256_file(&source);
    // Current scp speaks sftp; `-O` is the legacy protocol (an exec).
    for (mode, flags) in [("sftp", &[][..]), ("legacy", &["-O"][..])] {
        let remote = dir.path().join(format!("uploaded-{mode}.bin"));
        let back = dir.path().join(format!("downloaded-{mode}.bin"));
        let up = alice
            .scp()
            .args(flags)
            .arg(&source)
            .arg(format!("{DEST}:{}", remote.display()))
            .output()
            .unwrap();
        assert!(up.status.success(), "{mode} upload: {}", text(&up.stderr));
        let down = alice
            .scp()
            .args(flags)
            .arg(format!("{DEST}:{}", remote.display()))
            .arg(&back)
            .output()
            .unwrap();
        assert!(
            down.status.success(),
            "{mode} download: {}",
            text(&down.stderr)
        );
        assert_eq!(sha256_file(&remote), want, "{mode}");
        assert_eq!(sha256_file(&back), want, "{mode}");
    }
    let (_, commands) = last_session(&gw);
    assert_eq!(commands[0]["kind"], "scp");
    assert!(
        commands[0]["text"].as_str().unwrap().starts_with("scp -f "),
        "{commands:?}"
    );

    let mut sftp = alice.sftp();
    sftp.args(["-b", "-", DEST]);
    let out = run_with_input(sftp, &format!("ls {}\n", dir.path().display()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    assert!(
        listing.contains("uploaded-sftp.bin") && listing.contains("source.bin"),
        "{listing}"
    );
    let (_, commands) = last_session(&gw);
    assert_eq!(commands[0]["kind"], "sftp");
}

/// An echo server on a free port, counting the connections it accepted.
fn echo_server() -> (u16, Arc<AtomicUsize>) {
    let port = free_port();
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    if stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, accepted)
}

/// Sends `ping` through local port `port`; what came back.
fn ping(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"ping\n");
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    text(&buf[..n])
}

/// `ssh -N` with the local forwards `ports` (local, remote), until its
/// local ports accept.
fn forwarding(mut ssh: Command, ports: &[(u16, u16)]) -> Child {
    ssh.arg("-N");
    for (local, remote) in ports {
        ssh.arg("-L").arg(format!("{local}:127.0.0.1:{remote}"));
    }
    let child = ssh
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for (local, _) in ports {
        assert!(
            wait_for_port(*local, Duration::from_secs(10)),
            "ssh -L did not listen"
        );
    }
    child
}

#[test]
fn a_local_forward_reaches_the_allowed_port_and_not_the_denied_one() {
    let (allowed, _) = echo_server();
    let (denied, denied_accepts) = echo_server();
    let sshd = Sshd::start();
    let mut direct = sshd.direct();
    direct.arg("-o").arg("ExitOnForwardFailure=yes");
    let local = free_port();
    let mut tunnel = forwarding(direct, &[(local, denied)]);
    assert_eq!(
        ping(local),
        "ping\n",
        "the forward works straight to the server"
    );
    tunnel.kill().unwrap();
    let _ = tunnel.wait();
    denied_accepts.store(0, Ordering::SeqCst);

    let policies = format!(
        "{POLICIES}\n@id(\"ssh-forward-echo\")\npermit(principal in Group::\"engineering\", action == Action::\"ssh_forward\", resource == Connection::\"web-1\")\nwhen {{ context has port && context has host && context.port == {allowed} && context.host == \"127.0.0.1\" }};\n"
    );
    let gw = ssh_gateway(&sshd, &policies);
    let alice = alice(&gw);
    let (to_allowed, to_denied) = (free_port(), free_port());
    let mut ssh = alice.ssh();
    ssh.arg(DEST);
    let mut tunnel = forwarding(ssh, &[(to_allowed, allowed), (to_denied, denied)]);
    // Both in one session: the refusal leaves the rest working.
    for (port, want) in [(to_denied, ""), (to_allowed, "ping\n"), (to_denied, "")] {
        assert_eq!(ping(port), want, "through local port {port}:\n{}", gw.log());
    }
    assert_eq!(
        denied_accepts.load(Ordering::SeqCst),
        0,
        "the denied port was reached"
    );
    tunnel.kill().unwrap();
    let _ = tunnel.wait();
    let (_, commands) = last_session(&gw);
    // Waiting for the local ports opened a forward each, too.
    let refused: Vec<&Value> = commands
        .iter()
        .filter(|c| c["decision"]["allowed"] == false)
        .collect();
    assert!(refused.len() >= 2, "{commands:?}");
    assert!(
        refused
            .iter()
            .all(|c| c["text"] == format!("127.0.0.1:{denied}")),
        "{refused:?}"
    );
    let passed = commands
        .iter()
        .find(|c| c["decision"]["allowed"] == true && c["bytes_in"] == 5)
        .unwrap_or_else(|| panic!("{commands:?}"));
    assert_eq!(passed["kind"], "forward");
    assert_eq!(passed["bytes_out"], 5);
}

#[test]
fn a_server_whose_host_key_is_not_the_pinned_one_is_refused() {
    let sshd = Sshd::start();
    let elsewhere = tempfile::tempdir().unwrap();
    let other_key = keygen(&elsewhere.path().join("other"));
    let gw = gateway()
        .ssh()
        .connection(&sshd.connection_pinned(WEB, &other_key))
        .policies(POLICIES)
        .start();
    let alice = alice(&gw);
    let out = alice
        .ssh()
        .args([DEST, "echo hi"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!text(&out.stdout).contains("hi"));
    assert!(
        gw.log()
            .contains("is not the one pinned in the configuration"),
        "{}",
        gw.log()
    );
    // The gateway stopped before it authenticated: the server never saw
    // its key offered.
    assert!(!sshd.log().contains("Accepted publickey"), "{}", sshd.log());
    assert!(sessions(&gw).is_empty());
}

#[test]
fn revocation_ends_a_live_shell_within_two_seconds() {
    let sshd = Sshd::start();
    let gw = ssh_gateway(&sshd, POLICIES);
    let alice = alice(&gw);
    let mut shell = interactive_shell(&alice);
    let mut stdin = shell.stdin.take().unwrap();
    stdin.write_all(b"echo ready-$((1+1))\n").unwrap();
    let mut stdout = shell.stdout.take().unwrap();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            all.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&all).contains("ready-2") {
                let _ = seen_tx.send(());
            }
        }
    });
    seen_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the shell ran");

    let started = Instant::now();
    let answer = revoke(&gw, "alice");
    assert!(answer.contains("\"sessions_ended\":1"), "{answer}");
    let ended = eventually(Duration::from_secs(5), || shell.try_wait().unwrap());
    let took = started.elapsed();
    assert!(ended.is_some(), "the shell outlived its revocation");
    assert!(took < Duration::from_secs(2), "ended after {took:?}");
    drop(stdin);
    let (_, commands) = last_session(&gw);
    assert_eq!(commands[0]["kind"], "shell");
    let list = sessions(&gw);
    assert!(
        list[0]["end_reason"]
            .as_str()
            .unwrap()
            .contains("ended by the gateway"),
        "{list:?}"
    );
}

#[test]
fn a_shell_under_review_waits_in_the_session_until_another_identity_approves() {
    let sshd = Sshd::start();
    let policies = POLICIES.replace(
        "@id(\"ssh-shell-and-files\")",
        "@id(\"ssh-shell-and-files\")\n@review(\"admins\")",
    );
    let gw = ssh_gateway(&sshd, &policies);
    let alice = alice(&gw);
    let mut shell = interactive_shell(&alice);
    let review = eventually(Duration::from_secs(20), || {
        let (_, body) = curl(&gw, "/api/reviews", Some(ADMIN_TOKEN));
        let list: Vec<Value> = serde_json::from_str(&body).ok()?;
        list.into_iter().find(|r| r["status"] == "pending")
    })
    .expect("the shell waits for review");
    assert_eq!(review["action"], "ssh_shell");
    let id = review["id"].as_u64().unwrap().to_string();
    let (ok, out) = api_cli(&gw, ADMIN_TOKEN, &["reviews", "approve", &id]);
    assert!(ok, "{out}");
    let mut stdin = shell.stdin.take().unwrap();
    stdin.write_all(b"echo approved-$((2+3))\nexit\n").unwrap();
    drop(stdin);
    let out = shell.wait_with_output().unwrap();
    assert!(
        text(&out.stdout).contains("approved-5"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains(&format!("review {id} approved")),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_session_whose_recording_reaches_its_cap_ends_rather_than_run_unrecorded() {
    let sshd = Sshd::start();
    let gw = gateway()
        .ssh()
        .connection(&sshd.connection(WEB))
        .policies(POLICIES)
        .extra("[ssh]\nmax_recording_size = \"16KiB\"\n")
        .start();
    let admin = SshLogin::new(gw.ssh_port.unwrap(), ADMIN_TOKEN);
    let out = admin
        .ssh()
        .args([DEST, "head -c 200000 /dev/zero | tr '\\0' x"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let got = out.stdout.len();
    assert!(
        got < 16 * 1024,
        "{got} bytes reached the client past a 16 KiB cap"
    );
    let (id, commands) = last_session(&gw);
    let recording = &commands[0]["recording"];
    let on_disk =
        std::fs::metadata(gw.dir().join("data/recordings").join(&id).join("1.cast")).unwrap();
    assert!(on_disk.len() <= 16 * 1024, "{recording:?}");
    let list = sessions(&gw);
    assert!(
        list[0]["end_reason"]
            .as_str()
            .unwrap()
            .contains("cap of 16384 bytes"),
        "{list:?}"
    );
}

#[test]
fn an_allowed_command_cannot_be_changed_by_the_clients_environment() {
    // A server that takes BASH_ENV from clients runs that file before any
    // command run through bash: an allowed command becomes any command.
    let sshd = Sshd::start_with("AcceptEnv BASH_ENV LANG LC_*\n");
    let gw = ssh_gateway(&sshd, POLICIES);
    let alice = alice(&gw);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("made-by-bash-env");
    let script = dir.path().join("evil.sh");
    std::fs::write(&script, format!("touch {}\n", marker.display())).unwrap();
    let with_env = |mut c: Command| {
        c.args(["-o", "SendEnv=BASH_ENV"]).env("BASH_ENV", &script);
        c
    };
    let direct = with_env(sshd.direct())
        .arg("echo allowed-by-policy")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(direct.status.success(), "{}", text(&direct.stderr));
    assert!(marker.exists(), "BASH_ENV runs straight to the server");
    std::fs::remove_file(&marker).unwrap();

    let mut ssh = with_env(alice.ssh());
    ssh.args([DEST, "echo allowed-by-policy"])
        .stdin(Stdio::null());
    let out = ssh.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "allowed-by-policy\n");
    assert!(
        !marker.exists(),
        "BASH_ENV reached the server through the gateway"
    );
}
