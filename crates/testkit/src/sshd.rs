//! A throwaway OpenSSH server, and the real OpenSSH clients logging in
//! with a token.
//!
//! The server runs as the test's own user (root in CI, with `PermitRootLogin
//! prohibit-password`), with its own host key and an `authorized_keys`
//! holding only the key the gateway is given, on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for_port};

/// Where Debian's openssh-server puts the daemon.
const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd.
pub struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The account the gateway logs in as.
    pub user: String,
    /// Its host key, as `ssh-ed25519 AAAA…`.
    pub host_key: String,
}

/// Makes an Ed25519 key pair at `path` with `ssh-keygen`; returns the
/// public half's line.
pub fn keygen(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen must be installed (openssh-client)");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(path.with_extension("pub")).expect("public key");
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Sshd {
    /// Starts a server that lets in only the gateway's key.
    pub fn start() -> Sshd {
        Sshd::start_with("")
    }

    /// Like [`Sshd::start`], with `extra` lines of `sshd_config` first
    /// (sshd takes the first value it reads of each keyword).
    pub fn start_with(extra: &str) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: apt-get install openssh-server"
        );
        let dir = tempfile::Builder::new()
            .prefix("portcullis-sshd-")
            .tempdir()
            .expect("temp dir");
        let host_key = keygen(&dir.path().join("host_key"));
        let gateway_public = keygen(&dir.path().join("gateway_key"));
        std::fs::write(
            dir.path().join("authorized_keys"),
            format!("{gateway_public}\n"),
        )
        .expect("authorized_keys");
        let user = current_user();
        if user == "root" {
            // Privilege separation needs it; the service would make it.
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let port = free_port();
        let d = dir.path().display();
        let config = format!(
            "{extra}Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
             AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n\
             UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             Subsystem sftp internal-sftp\nAllowTcpForwarding yes\nAllowAgentForwarding yes\n\
             AcceptEnv LANG LC_*\nPrintMotd no\nLogLevel VERBOSE\n"
        );
        std::fs::write(dir.path().join("sshd_config"), config).expect("sshd_config");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-f")
            .arg(dir.path().join("sshd_config"))
            .arg("-E")
            .arg(dir.path().join("sshd.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sshd");
        let sshd = Sshd {
            child,
            dir,
            port,
            user,
            host_key,
        };
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "sshd did not start:\n{}",
            sshd.log()
        );
        sshd
    }

    /// The private key its `authorized_keys` lets in (0600).
    pub fn gateway_key(&self) -> PathBuf {
        self.dir.path().join("gateway_key")
    }

    /// A `[[connections]]` body for it named `name`, pinning `host_key`.
    pub fn connection_pinned(&self, name: &str, host_key: &str) -> String {
        format!(
            "name = \"{name}\"\nkind = \"ssh\"\nupstream = \"127.0.0.1:{}\"\nuser = \"{}\"\n\
             private_key_file = \"{}\"\nhost_key = \"{host_key}\"\n",
            self.port,
            self.user,
            self.gateway_key().display()
        )
    }

    /// A `[[connections]]` body for it named `name`.
    pub fn connection(&self, name: &str) -> String {
        self.connection_pinned(name, &self.host_key)
    }

    /// `ssh` straight to the server with the gateway's key, as someone
    /// holding that key could: the baseline attack tests compare with.
    pub fn direct(&self) -> Command {
        let mut c = Command::new("ssh");
        c.args(quiet_options())
            .arg("-i")
            .arg(self.gateway_key())
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-p"])
            .arg(self.port.to_string())
            .arg(format!("{}@127.0.0.1", self.user));
        c
    }

    /// `scp -O` (legacy, an exec) straight to the server with the
    /// gateway's key; add the source and `USER@127.0.0.1:PATH`.
    pub fn direct_legacy_scp(&self) -> Command {
        let mut c = Command::new("scp");
        c.args(quiet_options())
            .arg("-O")
            .arg("-i")
            .arg(self.gateway_key())
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-P"])
            .arg(self.port.to_string());
        c
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Options every test client uses: no known_hosts or user config, quiet.
fn quiet_options() -> [&'static str; 8] {
    [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ]
}

/// The OpenSSH clients logging in to a gateway with a token, answered by
/// `SSH_ASKPASS` (so no terminal is needed to type it).
pub struct SshLogin {
    dir: tempfile::TempDir,
    port: u16,
}

impl SshLogin {
    /// Clients for the gateway's SSH port that answer `token` when asked.
    pub fn new(port: u16, token: &str) -> SshLogin {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-ssh-")
            .tempdir()
            .expect("temp dir");
        let askpass = dir.path().join("askpass");
        std::fs::write(&askpass, format!("#!/bin/sh\necho '{token}'\n")).expect("askpass");
        let _ = Command::new("chmod").arg("700").arg(&askpass).status();
        SshLogin { dir, port }
    }

    fn client(&self, program: &str, port_flag: &str) -> Command {
        let mut c = Command::new(program);
        c.args(quiet_options())
            .args([
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "BatchMode=no",
                port_flag,
            ])
            .arg(self.port.to_string())
            .env("SSH_ASKPASS", self.dir.path().join("askpass"))
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env_remove("SSH_AUTH_SOCK");
        c
    }

    /// `ssh -p PORT` (add the destination and command).
    pub fn ssh(&self) -> Command {
        self.client("ssh", "-p")
    }

    /// `scp -P PORT` (add the files).
    pub fn scp(&self) -> Command {
        self.client("scp", "-P")
    }

    /// `sftp -P PORT` (add the destination).
    pub fn sftp(&self) -> Command {
        self.client("sftp", "-P")
    }
}
