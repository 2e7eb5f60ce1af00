use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::{free_port, wait_for_port, MD5_PASSWORD, READER_PASSWORD};

/// How to set up a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Serve TLS with this (cert PEM, key PEM); adds a `tls_user` that may only log in over TLS.
    pub tls: Option<(String, String)>,
    /// Extra postgresql.conf lines.
    pub extra_conf: String,
}

/// A throwaway PostgreSQL cluster on a loopback port.
pub struct PgCluster {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    owned: bool,
}

fn is_root() -> bool {
    // SAFETY-free check: `id -u` is on every Debian system.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL server binary, as the `postgres` user when we are root.
fn pg_command(bin: &Path, tool: &str) -> Command {
    let exe = bin.join(tool);
    if is_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The PostgreSQL server binaries: `$PG_BIN`, or the newest under /usr/lib/postgresql.
fn server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PG_BIN") {
        return PathBuf::from(p);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect(
            "PostgreSQL server binaries are missing: apt-get install postgresql (or set PG_BIN)",
        )
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .pop()
        .expect("no initdb found under /usr/lib/postgresql/*/bin")
}

const SEED: &str = r#"
CREATE ROLE portcullis_reader LOGIN PASSWORD 'READER';
SET password_encryption = 'md5';
CREATE ROLE md5_user LOGIN PASSWORD 'MD5PW';
RESET password_encryption;
CREATE ROLE trust_user LOGIN;
CREATE ROLE tls_user LOGIN PASSWORD 'READER';
CREATE DATABASE app OWNER portcullis_reader;
\c app
SET ROLE portcullis_reader;
CREATE TABLE people (
    id      int PRIMARY KEY,
    name    text NOT NULL,
    email   text NOT NULL,
    ssn     text NOT NULL,
    card    text NOT NULL
);
INSERT INTO people
SELECT i, 'Person ' || i, 'person' || i || '@example.com',
       lpad((100000000 + i)::text, 9, '0'), '4111111111111111'
FROM generate_series(1, 100) AS i;
CREATE TABLE items (id serial PRIMARY KEY, label text);
RESET ROLE;
GRANT ALL ON ALL TABLES IN SCHEMA public TO md5_user, trust_user, tls_user;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO md5_user, trust_user, tls_user;
"#;

impl PgCluster {
    /// The cluster shared by every test in this process (started on first use).
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let mut c = PgCluster::start(ClusterOptions::default());
            // Stopped by the watchdog when the process exits, not by Drop.
            c.owned = false;
            c
        })
    }

    /// Starts a new cluster with the `app` database seeded.
    pub fn start(opts: ClusterOptions) -> PgCluster {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("portcullis-pg-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let data = dir.join("data");
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("-R").arg("postgres:postgres").arg(&dir);
                    c
                },
                "chown",
            );
        }
        let mut initdb = pg_command(&bin, "initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .arg("-U")
            .arg("postgres")
            .arg("--auth=trust")
            .arg("--no-sync")
            .arg("-E")
            .arg("UTF8")
            .arg("--locale=C");
        run(initdb, "initdb");

        let port = free_port();
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 700\n\
             shared_buffers = 32MB\nlog_min_messages = warning\n{}\n",
            dir.display(),
            opts.extra_conf
        );
        let mut hba = String::from(
            "local all all trust\n\
             host all trust_user 127.0.0.1/32 trust\n\
             host all md5_user 127.0.0.1/32 md5\n",
        );
        if let Some((cert, key)) = &opts.tls {
            std::fs::write(data.join("server.crt"), cert).expect("write cert");
            std::fs::write(data.join("server.key"), key).expect("write key");
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
            hba.push_str("hostssl all tls_user 127.0.0.1/32 scram-sha-256\nhostnossl all tls_user 127.0.0.1/32 reject\n");
        }
        hba.push_str("host all all 127.0.0.1/32 scram-sha-256\n");
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        if is_root() {
            let mut c = Command::new("chown");
            c.arg("-R").arg("postgres:postgres").arg(&dir);
            run(c, "chown");
            let mut c = Command::new("chmod");
            c.arg("0600").arg(data.join("server.key"));
            if opts.tls.is_some() {
                run(c, "chmod");
            }
        }

        let mut start = pg_command(&bin, "pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("postgres.log"))
            .arg("-w")
            .arg("-t")
            .arg("60")
            .arg("start");
        run(start, "pg_ctl start");
        assert!(
            wait_for_port(port, Duration::from_secs(30)),
            "postgres did not listen on {port}"
        );
        spawn_watchdog(&bin, &dir);

        let cluster = PgCluster {
            dir,
            port,
            bin,
            owned: true,
        };
        let seed = SEED
            .replace("READER", READER_PASSWORD)
            .replace("MD5PW", MD5_PASSWORD);
        cluster.superuser_sql("postgres", &seed);
        cluster
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` for gateway configs.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// Runs SQL as the superuser over the Unix socket (not through the gateway).
    pub fn superuser_sql(&self, db: &str, sql: &str) -> String {
        let out = self.run_superuser(db, sql);
        assert!(
            out.status.success(),
            "superuser SQL failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            sql
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Runs SQL as the superuser like [`PgCluster::superuser_sql`], for
    /// SQL expected to fail: its output followed by its errors.
    pub fn superuser_sql_result(&self, db: &str, sql: &str) -> String {
        let out = self.run_superuser(db, sql);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn run_superuser(&self, db: &str, sql: &str) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new("psql")
            .arg("-X")
            .arg("-q")
            .arg("-v")
            .arg("ON_ERROR_STOP=1")
            .arg("--no-align")
            .arg("--tuples-only")
            .arg("-h")
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg("postgres")
            .arg("-d")
            .arg(db)
            .arg("-f")
            .arg("-")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("psql must be installed");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(sql.as_bytes()).expect("write SQL to psql");
        }
        child.wait_with_output().expect("psql run")
    }

    /// Stops the server (fast shutdown), keeping its data.
    pub fn stop(&self) {
        let mut c = pg_command(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-m")
            .arg("fast")
            .arg("-w")
            .arg("stop");
        run(c, "pg_ctl stop");
    }

    /// Starts it again after [`PgCluster::stop`].
    pub fn restart(&self) {
        let mut c = pg_command(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .arg("-w")
            .arg("start");
        run(c, "pg_ctl start");
        assert!(wait_for_port(self.port, Duration::from_secs(30)));
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open conf");
    f.write_all(text.as_bytes()).expect("append conf");
}

/// A detached shell that stops the cluster and removes its files once this
/// test process is gone, even if it panicked or was killed.
fn spawn_watchdog(bin: &Path, dir: &Path) {
    let script = format!(
        "while [ -d /proc/{pid} ]; do sleep 0.5; done; {pg_ctl} -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        pg_ctl = bin.join("pg_ctl").display(),
        data = dir.join("data").display(),
        dir = dir.display(),
    );
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.arg("-u")
            .arg("postgres")
            .arg("--")
            .arg("sh")
            .arg("-c")
            .arg(script);
        c
    } else {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    };
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // Deliberately not waited for: it must outlive this process.
    #[allow(clippy::zombie_processes)]
    let _watchdog = c.spawn().expect("spawn cluster watchdog");
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.owned {
            let mut c = pg_command(&self.bin, "pg_ctl");
            c.arg("-D")
                .arg(self.dir.join("data"))
                .arg("-m")
                .arg("immediate")
                .arg("stop");
            let _ = c.output();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
