use std::process::Command;

/// What a psql run produced.
#[derive(Debug)]
pub struct PsqlOutput {
    /// Exit status was zero.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs the real `psql` with a connection string, the password in
/// `PGPASSWORD`, and extra arguments (`-c`, `-f`, …). `-X` skips psqlrc.
pub fn psql(conninfo: &str, password: &str, args: &[&str], stdin: Option<&str>) -> PsqlOutput {
    use std::io::Write;
    let mut cmd = Command::new("psql");
    cmd.arg("-X")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("--no-align")
        .arg("--tuples-only")
        .arg(conninfo)
        .args(args)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "20")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("psql must be installed (apt-get install postgresql-client)");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write psql stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("psql run");
    PsqlOutput {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
