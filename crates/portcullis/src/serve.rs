//! `portcullis serve`: wires the store, the core and the adapters together.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusBuilder;
use portcullis_core::audit::AuditStore;
use portcullis_core::{Core, PolicyEngine, Recorder, SessionRegistry, StaticTokens};
use portcullis_proto_pg::{PgAdapter, PgAdapterConfig, PgTarget, Upstream};
use portcullis_store::SqliteStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::tls_material;

/// Runs the gateway until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;

    let policy = Arc::new(
        PolicyEngine::from_dir(&config.policy_dir)
            .with_context(|| format!("loading policies from {}", config.policy_dir.display()))?,
    );
    if policy.policy_count() == 0 {
        tracing::warn!(dir = %config.policy_dir.display(), "no policies loaded: every request will be denied");
    }
    let store_path = config.data_dir.join("portcullis.db");
    let store: Arc<dyn AuditStore> = Arc::new(
        SqliteStore::open(&store_path)
            .await
            .with_context(|| format!("opening the store {}", store_path.display()))?,
    );
    let dangling = store
        .close_dangling("gateway stopped before the session ended")
        .await?;
    if dangling > 0 {
        tracing::warn!(
            sessions = dangling,
            "closed sessions left open by an earlier gateway process"
        );
    }
    let (recorder, recorder_task) = Recorder::spawn(store.clone());
    let core = Core {
        authenticator: Arc::new(StaticTokens::new(config.tokens.clone())),
        policy: policy.clone(),
        recorder,
        sessions: SessionRegistry::default(),
    };
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();

    if let Some(addr) = &config.postgres_listen {
        let tls = tls_material::load_or_generate(
            config.tls_files.as_ref(),
            &config.data_dir,
            &config.tls_hostnames,
        )?;
        let mut targets = HashMap::new();
        for c in &config.connections {
            let tls = portcullis_proto_pg::tls::client_config(c.tls, c.ca_file.as_deref())
                .with_context(|| format!("upstream TLS for connection {}", c.name))?;
            let target = PgTarget {
                name: c.name.clone(),
                upstream: c.upstream.clone(),
                database: c.database.clone(),
                user: c.user.clone(),
                password: c.password.clone(),
                tls: c.tls,
                ca_file: c.ca_file.clone(),
            };
            targets.insert(
                c.name.clone(),
                Arc::new(Upstream::new(target, tls, config.upstream_connect_timeout)),
            );
        }
        let adapter = PgAdapter::new(
            PgAdapterConfig {
                tls: Some(tls),
                plaintext: config.plaintext,
                targets,
                limits: config.limits.clone(),
                record_statements: config.record_statements,
            },
            core.clone(),
        );
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for PostgreSQL clients on {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, ca = %tls_material::ca_path(&config.data_dir).display(), "PostgreSQL listener ready");
        tasks.push(tokio::spawn(adapter.serve(listener, shutdown.clone())));
    }

    if let Some(addr) = &config.api_listen {
        let state = ApiState {
            core: core.clone(),
            store: store.clone(),
            metrics,
        };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for the API on {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "API ready");
        let app = api::router(state).into_make_service_with_connect_info::<SocketAddr>();
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
            {
                tracing::error!(error = %e, "API server failed");
            }
        }));
    }

    tasks.push(tokio::spawn(watch_policies(
        policy.clone(),
        config.policy_dir.clone(),
        shutdown.clone(),
    )));
    wait_for_signals(&policy, &config).await;
    tracing::info!("shutting down: ending sessions and flushing the audit log");
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    drop(core);
    recorder_task.finish().await;
    tracing::info!("stopped");
    Ok(())
}

/// Names, sizes and modification times of the policy files: changes when
/// any file is added, removed or edited.
fn policy_fingerprint(
    dir: &std::path::Path,
) -> Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "cedar"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.path(), m.len(), m.modified().ok()))
        })
        .collect();
    out.sort();
    out
}

/// Reloads the policies when their files change. Polling (every second)
/// keeps it simple and works on every filesystem; a reload that fails keeps
/// the previous set and logs why.
async fn watch_policies(
    policy: Arc<PolicyEngine>,
    dir: std::path::PathBuf,
    stop: CancellationToken,
) {
    let mut last = policy_fingerprint(&dir);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        let now = policy_fingerprint(&dir);
        if now == last {
            continue;
        }
        last = now;
        match policy.reload(&dir) {
            Ok(n) => tracing::info!(policies = n, "policy files changed: reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "policy files changed but are invalid; keeping the previous set")
            }
        }
    }
}

/// Returns on SIGINT/SIGTERM; reloads policies on SIGHUP.
async fn wait_for_signals(policy: &PolicyEngine, config: &Config) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => match policy.reload(&config.policy_dir) {
                Ok(n) => tracing::info!(policies = n, "policies reloaded"),
                Err(e) => tracing::error!(error = %e, "policy reload rejected; keeping the previous set"),
            },
        }
    }
}
