//! `portcullis audit`: verifying the evidence chain and printing the key
//! that signs its checkpoints. Both read `data_dir` directly, so they work
//! with the gateway stopped, and on a copy of the store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use portcullis_core::evidence::verify::Report;
use portcullis_core::evidence::{PublicKey, SignedCheckpoint, Signer};

use crate::config::Config;
use crate::serve::EVIDENCE_KEY;

/// `portcullis audit …`.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the evidence chain and its signed checkpoints; exits non-zero
    /// naming the first bad record.
    Verify {
        /// The gateway's config file (the store is found through data_dir).
        #[arg(long, short, default_value = "portcullis.toml")]
        config: PathBuf,
        /// Exported checkpoints (`[audit] checkpoint_file`) to check
        /// against the store's.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// The checkpoint key to trust (hex), pinned out of band. Default:
        /// the gateway's own key in data_dir.
        #[arg(long)]
        public_key: Option<String>,
        /// The gateway is running: records newer than its last checkpoint
        /// are expected, as long as that checkpoint is recent.
        #[arg(long)]
        live: bool,
    },
    /// Print the public key that signs checkpoints (hex), to pin it.
    Key {
        /// The gateway's config file.
        #[arg(long, short, default_value = "portcullis.toml")]
        config: PathBuf,
    },
}

/// Runs an audit command; `Ok(false)`: verification failed.
pub fn run(command: AuditCommand) -> anyhow::Result<bool> {
    match command {
        AuditCommand::Key { config } => {
            let (data_dir, _) = Config::audit_only(&config)?;
            println!("{}", PublicKey::of(&signer(&data_dir)?).to_hex());
            Ok(true)
        }
        AuditCommand::Verify {
            config,
            checkpoints,
            public_key,
            live,
        } => {
            let (data_dir, audit) = Config::audit_only(&config)?;
            let key = match public_key {
                Some(hex) => PublicKey::from_hex(&hex)?,
                None => PublicKey::of(&signer(&data_dir)?),
            };
            let exported = match &checkpoints {
                Some(path) => read_checkpoints(path)?,
                None => Vec::new(),
            };
            let store = data_dir.join("portcullis.db");
            let report = portcullis_store::verify_store(&store, key.clone(), &exported)
                .with_context(|| format!("reading {}", store.display()))?;
            let window = audit.checkpoint_interval * 2 + Duration::from_secs(10);
            Ok(print_report(&report, &key, live.then_some(window)))
        }
    }
}

fn signer(data_dir: &Path) -> anyhow::Result<Signer> {
    let path = data_dir.join("keys").join(EVIDENCE_KEY);
    if !path.exists() {
        bail!(
            "{} does not exist: the gateway has not run with this data_dir (or pass --public-key)",
            path.display()
        );
    }
    Ok(Signer::load_or_generate(&path)?)
}

fn read_checkpoints(path: &Path) -> anyhow::Result<Vec<SignedCheckpoint>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a checkpoint", path.display(), i + 1))
        })
        .collect()
}

/// Prints the report; true when the evidence holds.
fn print_report(report: &Report, key: &PublicKey, live: Option<Duration>) -> bool {
    let (intact, lines) = report_lines(report, key, live, None);
    for line in lines {
        println!("{line}");
    }
    intact
}

/// The report as `audit verify` prints it, and whether the evidence
/// holds. With `live`, records past the last checkpoint are accepted while
/// that checkpoint is younger than the window (a running gateway writes
/// one every interval). The console shows the same lines; it passes
/// `up_for`, how long this gateway has run: before its first checkpoint
/// is due, its unsealed records are its own newest.
pub fn report_lines(
    report: &Report,
    key: &PublicKey,
    live: Option<Duration>,
    up_for: Option<Duration>,
) -> (bool, Vec<String>) {
    let mut out = Vec::new();
    macro_rules! say {
        ($($arg:tt)*) => { out.push(format!($($arg)*)) };
    }
    say!("checkpoint key: {} (id {})", key.to_hex(), key.id());
    match (report.first_record, report.last_record) {
        (Some(first), Some(last)) if first > 1 => say!(
            "records: {} ({first}..{last}; retention removed records before {first})",
            report.records
        ),
        (Some(first), Some(last)) => say!("records: {} ({first}..{last})", report.records),
        _ => say!("records: none"),
    }
    match &report.last_checkpoint {
        Some(c) => say!(
            "checkpoints: {} (last: {} at {}, covers record {}{})",
            report.checkpoints,
            c.number,
            c.at,
            c.upto,
            if c.is_final { ", final" } else { "" }
        ),
        None => say!("checkpoints: none"),
    }
    for p in &report.problems {
        if p.record > 0 {
            say!("BAD record {}: {}", p.record, p.what);
        } else {
            say!("BAD: {}", p.what);
        }
    }
    let mut intact = report.intact();
    let last = report.last_checkpoint.as_ref();
    let sealed_by_final = last.is_some_and(|c| c.is_final) && report.unsealed == 0;
    if !sealed_by_final {
        // Not ended by a clean stop: a running gateway (accepted with
        // --live while its last checkpoint is recent, as a running one
        // writes one every interval), or one that crashed or was rolled
        // back to an earlier checkpoint.
        let recent = last.is_some_and(|c| {
            let at =
                time::OffsetDateTime::parse(&c.at, &time::format_description::well_known::Rfc3339);
            let age = at.map(|at| time::OffsetDateTime::now_utc() - at);
            !c.is_final && matches!((age, live), (Ok(age), Some(window)) if age < window)
        });
        let first_due = matches!((up_for, live), (Some(up), Some(window)) if up < window);
        if first_due && !recent {
            say!(
                "unsealed: the newest {} records follow the last checkpoint (this gateway started {}s ago and seals them at its first checkpoint)",
                report.unsealed,
                up_for.map_or(0, |u| u.as_secs())
            );
        } else if recent {
            say!(
                "unsealed: the newest {} records follow the last checkpoint (the running gateway seals them at its next one)",
                report.unsealed
            );
        } else {
            let tail = if report.unsealed > 0 {
                format!(" ({} records follow the last checkpoint)", report.unsealed)
            } else {
                String::new()
            };
            let hint = if live.is_some() {
                ""
            } else {
                " (for a running gateway, use --live)"
            };
            say!(
                "BAD: the chain does not end with a final checkpoint{tail}: the gateway did not stop cleanly, or its tail and final checkpoint were removed{hint}"
            );
            intact = false;
        }
    }
    say!(
        "{}",
        if intact {
            "evidence intact"
        } else {
            "evidence NOT intact"
        }
    );
    (intact, out)
}
