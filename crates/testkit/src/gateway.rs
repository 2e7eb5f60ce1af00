use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for_port, PgCluster, READER_PASSWORD};

/// Token of `alice` (group `engineering`).
pub const ALICE_TOKEN: &str = "alice-token-5e1d";
/// Token of `admin` (group `admins`).
pub const ADMIN_TOKEN: &str = "admin-token-0c77";
/// Token of `eve` (group `contractors`: no policy lets her in).
pub const EVE_TOKEN: &str = "eve-token-a3b9";

const DEFAULT_POLICIES: &str = r#"
@id("engineering-uses-app")
permit(principal in Group::"engineering", action, resource in Connection::"app-db");
@id("admins-all")
permit(principal in Group::"admins", action, resource);
"#;

/// What a gateway under test is configured with.
pub struct GatewayBuilder {
    binary: PathBuf,
    data_dir: Option<PathBuf>,
    connections: Vec<String>,
    policies: String,
    extra: String,
    env: Vec<(String, String)>,
    ssh: bool,
}

impl GatewayBuilder {
    /// A gateway run from `binary` (tests pass `env!("CARGO_BIN_EXE_portcullis")`),
    /// with users alice, admin and eve and the default policies.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            data_dir: None,
            connections: Vec::new(),
            policies: DEFAULT_POLICIES.to_owned(),
            extra: String::new(),
            ssh: false,
            env: vec![(
                "PORTCULLIS_TEST_READER_PASSWORD".into(),
                READER_PASSWORD.into(),
            )],
        }
    }

    /// Adds connection `name` to database `app` on `cluster` as `portcullis_reader`.
    pub fn app_db(self, name: &str, cluster: &PgCluster) -> Self {
        self.connection(&format!(
            "name = \"{name}\"\nkind = \"postgres\"\nupstream = \"{}\"\ndatabase = \"app\"\n\
             user = \"portcullis_reader\"\npassword_env = \"PORTCULLIS_TEST_READER_PASSWORD\"\n",
            cluster.addr()
        ))
    }

    /// Adds a `[[connections]]` table body as written.
    pub fn connection(mut self, body: &str) -> Self {
        self.connections.push(body.to_owned());
        self
    }

    /// Replaces the policy text.
    pub fn policies(mut self, cedar: &str) -> Self {
        self.policies = cedar.to_owned();
        self
    }

    /// Keeps the store and keys in `dir` instead of the gateway's own
    /// temporary directory.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// Listens for SSH clients too (on [`Gateway::ssh_port`]).
    pub fn ssh(mut self) -> Self {
        self.ssh = true;
        self
    }

    /// Appends raw TOML (e.g. `[limits]` tables).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self
    }

    /// Sets an environment variable for the gateway.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Starts the gateway and waits until both listeners accept.
    pub fn start(self) -> Gateway {
        Gateway::start(self)
    }

    /// Runs the gateway expecting it to refuse to start; returns its stderr.
    pub fn start_expecting_failure(self) -> String {
        let mut g = Gateway::spawn(&self);
        let status = g.child.wait().expect("wait gateway");
        assert!(
            !status.success(),
            "gateway started although it should not have"
        );
        g.log()
    }
}

/// A running `portcullis serve` process with its own config and data_dir.
pub struct Gateway {
    child: Child,
    dir: PathBuf,
    binary: PathBuf,
    env: Vec<(String, String)>,
    /// PostgreSQL listener port.
    pub pg_port: u16,
    /// API port.
    pub api_port: u16,
    /// SSH port, when [`GatewayBuilder::ssh`] asked for one.
    pub ssh_port: Option<u16>,
}

impl Gateway {
    fn spawn(b: &GatewayBuilder) -> Gateway {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-gw-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let (pg_port, api_port) = (free_port(), free_port());
        let ssh_port = b.ssh.then(free_port);
        let ssh_listen = ssh_port
            .map(|p| format!("ssh = \"127.0.0.1:{p}\"\n"))
            .unwrap_or_default();
        let data_dir = b
            .data_dir
            .as_ref()
            .map_or_else(|| "./data".to_owned(), |d| d.display().to_string());
        let mut toml = format!(
            "data_dir = \"{data_dir}\"\n\n[listen]\npostgres = \"127.0.0.1:{pg_port}\"\napi = \"127.0.0.1:{api_port}\"\n{ssh_listen}\n\
             [[tokens]]\nuser = \"alice\"\ngroups = [\"engineering\"]\ntoken = \"{ALICE_TOKEN}\"\n\n\
             [[tokens]]\nuser = \"admin\"\ngroups = [\"admins\"]\ntoken = \"{ADMIN_TOKEN}\"\n\n\
             [[tokens]]\nuser = \"eve\"\ngroups = [\"contractors\"]\ntoken = \"{EVE_TOKEN}\"\n\n\
             [policy]\ndir = \"./policies\"\n\n"
        );
        for c in &b.connections {
            toml.push_str("[[connections]]\n");
            toml.push_str(c);
            toml.push('\n');
        }
        toml.push_str(&b.extra);
        std::fs::create_dir_all(dir.join("policies")).expect("policies dir");
        std::fs::write(dir.join("policies").join("test.cedar"), &b.policies)
            .expect("write policies");
        std::fs::write(dir.join("portcullis.toml"), toml).expect("write config");
        let log = std::fs::File::create(dir.join("gateway.log")).expect("log file");
        let child = spawn_serve(&b.binary, &dir, &b.env, log);
        Gateway {
            child,
            dir,
            binary: b.binary.clone(),
            env: b.env.clone(),
            pg_port,
            api_port,
            ssh_port,
        }
    }

    fn start(b: GatewayBuilder) -> Gateway {
        let g = Gateway::spawn(&b);
        let ok = wait_for_port(g.pg_port, Duration::from_secs(30))
            && wait_for_port(g.api_port, Duration::from_secs(10))
            && g.ssh_port
                .is_none_or(|p| wait_for_port(p, Duration::from_secs(10)));
        assert!(ok, "gateway did not start:\n{}", g.log());
        g
    }

    /// A libpq connection string for `dbname` as `user` (the startup user is recorded only).
    pub fn conninfo(&self, dbname: &str, extra: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={dbname} user=whoever sslmode=disable connect_timeout=20 {extra}",
            self.pg_port
        )
    }

    /// The API base URL.
    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// The generated CA certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("data").join("tls").join("ca.pem")
    }

    /// The config directory (config, policies, data).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmHWM:")
    }

    /// Current resident memory (VmRSS) in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmRSS:")
    }

    /// Sends a signal by name (`HUP`, `TERM`, `KILL`).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Starts the gateway again with the same config, ports and data
    /// directory (after [`Gateway::stop`] or a `KILL`), and waits until
    /// both listeners accept.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("gateway.log"))
            .expect("log file");
        self.child = spawn_serve(&self.binary, &self.dir, &self.env, log);
        let ok = wait_for_port(self.pg_port, Duration::from_secs(30))
            && wait_for_port(self.api_port, Duration::from_secs(10));
        assert!(ok, "gateway did not restart:\n{}", self.log());
    }

    /// Stops with SIGTERM and waits, returning whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        self.signal("TERM");
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        false
    }
}

/// `portcullis serve` with the config in `dir`, logging to `log`.
fn spawn_serve(binary: &Path, dir: &Path, env: &[(String, String)], log: std::fs::File) -> Child {
    Command::new(binary)
        .arg("serve")
        .arg("--config")
        .arg(dir.join("portcullis.toml"))
        .envs(env.iter().cloned())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn portcullis")
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("gateway files kept for inspection: {}", self.dir.display());
        }
    }
}
