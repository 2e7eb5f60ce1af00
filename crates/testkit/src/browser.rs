//! Headless Chromium, driven by a playwright-core script of the test's
//! own, talking to the test in lines (see `tests/browser/console.mjs`):
//! the script prints `STEP name json` where the test waits for it, reads
//! a line where it waits for the test, and ends with `STEP done` or
//! `FAILED why`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// One run of a browser script.
pub struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

/// Where the tests keep their screenshots: `PORTCULLIS_SCREENSHOTS`, or
/// `target/tmp/console-screenshots`.
pub fn screenshot_dir(target_tmp: &str) -> PathBuf {
    std::env::var_os("PORTCULLIS_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(target_tmp).join("console-screenshots"))
}

impl Browser {
    /// Runs `node script scenario` in `dir` (which holds `node_modules`
    /// with playwright-core) with `env`. Fails loudly when node, the npm
    /// package or Chromium is missing.
    pub fn run(dir: &Path, script: &str, scenario: &str, env: &[(&str, String)]) -> Self {
        assert!(
            dir.join("node_modules").join("playwright-core").exists(),
            "playwright-core is not installed: run scripts/install-deps (npm ci in {})",
            dir.display()
        );
        assert!(
            Path::new("/usr/bin/chromium").exists() || std::env::var_os("CHROMIUM").is_some(),
            "Chromium is not installed: run scripts/install-deps (Debian package chromium)"
        );
        let mut cmd = Command::new("node");
        cmd.current_dir(dir)
            .arg(script)
            .arg(scenario)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .expect("node must be installed (scripts/install-deps)");
        let stdout: ChildStdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for `STEP name` and returns its JSON (`null` when none).
    /// Panics with everything the script said when it fails first.
    pub fn step(&mut self, name: &str) -> serde_json::Value {
        loop {
            let line = match self.lines.recv_timeout(Duration::from_secs(90)) {
                Ok(l) => l,
                Err(_) => panic!(
                    "the browser did not reach step {name}; it said:\n{}",
                    self.seen.join("\n")
                ),
            };
            self.seen.push(line.clone());
            if line.starts_with("FAILED") {
                panic!(
                    "the browser script failed before step {name}:\n{}",
                    self.seen.join("\n")
                );
            }
            let Some(rest) = line.strip_prefix("STEP ") else {
                continue;
            };
            let (step, json) = rest.split_once(' ').unwrap_or((rest, "null"));
            if step == name {
                return serde_json::from_str(json).expect("step data is JSON");
            }
        }
    }

    /// Lets the script go on past a point where it waits for the test.
    pub fn go_on(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "go").expect("the browser script is gone");
        stdin.flush().expect("flush");
    }

    /// Waits for the script to finish cleanly.
    pub fn finish(mut self) {
        self.step("done");
        self.stdin.take();
        let status = self.child.wait().expect("node");
        assert!(
            status.success(),
            "the browser script failed:\n{}",
            self.seen.join("\n")
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
