//! `portcullis serve`: wires the store, the core and the adapters together.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusBuilder;
use portcullis_core::approvals::{ReviewBoard, ReviewStore};
use portcullis_core::audit::{AuditEvent, AuditStore};
use portcullis_core::evidence::{PublicKey, Signer};
use portcullis_core::identity::{RevocationStore, TokenIssuer};
use portcullis_core::{
    Core, EvidenceSettings, GatewayAuthenticator, PolicyEngine, Recorder, RecorderTask,
    SessionRegistry, SessionSettings, SessionThreads, StaticTokens,
};
use portcullis_proto_pg::{PgAdapter, PgAdapterConfig, PgTarget, Upstream};
use portcullis_store::SqliteStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::config::Config;

/// Runs the gateway until SIGINT or SIGTERM. `config_path` is reread on
/// SIGHUP and when it changes, for static tokens.
pub async fn serve(config: Config, config_path: std::path::PathBuf) -> anyhow::Result<()> {
    // First of all: a SIGTERM that arrives while the gateway starts (its
    // listeners can accept before the rest is up) must stop it cleanly,
    // not kill it with the signal's default action.
    let signals = Signals::install();
    portcullis_core::files::private_dir(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    let _one_gateway = lock_data_dir(&config.data_dir)?;
    raise_descriptor_limit();
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;

    let grants = Arc::new(portcullis_core::grants::GrantTable::default());
    let policy = Arc::new(
        PolicyEngine::from_dir(&config.policy_dir, crate::protocols::VOCABULARIES)
            .with_context(|| format!("loading policies from {}", config.policy_dir.display()))?
            .with_grants(grants.clone()),
    );
    if policy.policy_count() == 0 {
        tracing::warn!(dir = %config.policy_dir.display(), "no policies loaded: every request will be denied");
    }
    let store_path = config.data_dir.join("portcullis.db");
    let sqlite = Arc::new(
        SqliteStore::open(&store_path)
            .await
            .with_context(|| format!("opening the store {}", store_path.display()))?,
    );
    let store: Arc<dyn AuditStore> = sqlite.clone();
    let retention_store = sqlite.clone();
    let review_store: Arc<dyn ReviewStore> = sqlite.clone();
    let revocation_store: Arc<dyn RevocationStore> = sqlite;
    let (sinks, sink_tasks) = crate::sinks::start(&config.audit.sinks);
    let recovered = retention_store.take_recovered();
    for sink in &sinks {
        sink.recovered(&recovered);
    }
    let (recorder, recorder_task) = start_recorder(&config, &store, sinks).await?;
    let auth = authenticator(&config, revocation_store.as_ref()).await?;
    let hash_key = crate::masking_key::load_or_generate(
        &config.data_dir.join("keys").join("masking-hmac.key"),
    )
    .context("loading the masking key")?;
    let masking = Arc::new(
        portcullis_core::masking::Masking::new(config.masking.clone(), hash_key)
            .context("compiling the masking detectors")?,
    );
    let preauth = portcullis_core::preauth::PreAuthGate::new(config.preauth);
    let reviews = Arc::new(
        ReviewBoard::load(
            review_store,
            Arc::new(portcullis_core::identity::SystemClock),
            config.approvals.clone(),
        )
        .await
        .context("loading reviews")?
        .with_grants(grants)
        .with_recorder(recorder.clone()),
    );
    let core = Core {
        reviews: reviews.clone(),
        authenticator: auth.clone(),
        policy: policy.clone(),
        recorder,
        sessions: SessionRegistry::default(),
        masking: masking.clone(),
        settings: SessionSettings {
            expiry_grace: config.identity.expiry_grace,
            record_commands: config.record_statements,
        },
    };
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();

    if let Some(addr) = &config.postgres_listen {
        let adapter = postgres_adapter(&config, &core, &masking, &preauth)?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for PostgreSQL clients on {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, ca = %portcullis_core::tls::ca_path(&config.data_dir).display(), "PostgreSQL listener ready");
        tasks.push(tokio::spawn(adapter.serve(listener, shutdown.clone())));
    }

    let mut ssh_issuer = None;
    if let Some(addr) = &config.ssh_listen {
        let ca = Arc::new(
            portcullis_proto_ssh::ca::UserCa::load_or_generate(
                &config.data_dir.join("ssh").join("user_ca_ed25519"),
            )
            .context("loading the SSH user CA")?,
        );
        let adapter = ssh_adapter(&config, &core, ca.clone(), &preauth)?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for SSH clients on {addr}"))?;
        ssh_issuer = Some(api::ssh::SshIssuer {
            ca,
            port: listener.local_addr()?.port(),
            lifetime_secs: config.ssh.certificate_lifetime.as_secs() as i64,
        });
        tracing::info!(addr = %listener.local_addr()?, host_key = %ssh_host_key_path(&config.data_dir).display(), "SSH listener ready");
        tasks.push(tokio::spawn(adapter.serve(listener, shutdown.clone())));
    }

    if let Some(addr) = &config.api_listen {
        let state = ApiState {
            core: core.clone(),
            store: store.clone(),
            metrics,
            auth: auth.clone(),
            revocation_store: revocation_store.clone(),
            login: config.identity.login.clone(),
            recordings_dir: recordings_dir(&config.data_dir),
            ssh: ssh_issuer,
        };
        let mut router = api::router(state.clone());
        let console = crate::console::setup::build(&config, state)?;
        if let Some(console) = console {
            router = router.merge(crate::console::router(console));
        }
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for the API on {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, console = config.console.enabled, "API ready");
        tasks.push(tokio::spawn(api::server::serve(
            listener,
            router,
            api_server_config(&config)?,
            shutdown.clone(),
        )));
    }

    tasks.extend(background(&core, &config, &config_path, &auth, &shutdown));
    if config.audit.retention.is_some() || config.audit.retention_max_bytes.is_some() {
        tasks.push(tokio::spawn(keep_retention(
            retention_store,
            core.recorder.clone(),
            config.audit.clone(),
            shutdown.clone(),
        )));
    }
    wait_for_signals(signals, &policy, &config, &auth, &core, &config_path).await;
    tracing::info!("shutting down: ending sessions and flushing the audit log");
    // Held clients hear that their reviews stay open before sessions end.
    reviews.stop().await;
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let _closed = core
        .recorder
        .record(AuditEvent::note("gateway_stopped", serde_json::json!({})))
        .await;
    drop(core);
    // Writes what is queued, then the final checkpoint; its end closes the
    // sinks' queues, which then write what they hold.
    recorder_task.finish().await;
    sink_tasks.drain(std::time::Duration::from_secs(10)).await;
    tracing::info!("stopped");
    Ok(())
}

/// Starts the recorder on the store's chain, and records the start: the
/// gateway's version, its checkpoint key, and whether the previous run
/// stopped cleanly (its final checkpoint covers the whole chain). Sessions
/// a crashed run left open are ended in the chain.
async fn start_recorder(
    config: &Config,
    store: &Arc<dyn AuditStore>,
    sinks: Vec<Arc<dyn portcullis_core::EvidenceSink>>,
) -> anyhow::Result<(Recorder, RecorderTask)> {
    let key_path = config.data_dir.join("keys").join(EVIDENCE_KEY);
    let signer = Arc::new(Signer::load_or_generate(&key_path)?);
    let head = store.chain_head().await?;
    // A run ends with a final checkpoint and writes nothing after it: a
    // record past one was added to the stopped store by someone else. It
    // is said in this run's first record, which the chain then seals, and
    // `audit verify` names it.
    let previous_stop = match store.last_checkpoint().await? {
        Some(c) => match c.checkpoint() {
            Ok(c) if c.is_final && c.upto == head.seq => "clean",
            // A run that started after a clean stop and crashed before its
            // first checkpoint: its own start follows the final one.
            Ok(c) if c.is_final => {
                let next = store.kind_of(c.upto + 1).await?;
                if next.as_deref() == Some("gateway_started") {
                    "unclean"
                } else {
                    "tampered"
                }
            }
            _ => "unclean",
        },
        None if head.seq == 0 => "none",
        None => "unclean",
    };
    if previous_stop == "tampered" {
        tracing::error!(records = head.seq, "the evidence store holds records after the previous run's final checkpoint: something other than the gateway wrote it; run `portcullis audit verify`");
    }
    let key = PublicKey::of(&signer);
    let settings = EvidenceSettings {
        signer,
        checkpoint_every: config.audit.checkpoint_every,
        checkpoint_interval: config.audit.checkpoint_interval,
        checkpoint_file: config.audit.checkpoint_file.clone(),
        strict: config.audit.strict,
        sinks,
    };
    let (recorder, task) = Recorder::spawn(store.clone(), settings).await?;
    if !config.audit.strict {
        tracing::warn!("[audit] mode is buffered: statements run before their records are committed, and a killed gateway loses up to the last ~10 ms of them");
    }
    if previous_stop == "unclean" {
        tracing::warn!(records = head.seq, "the previous gateway run did not stop cleanly: records after its last checkpoint are unsealed");
    }
    let started = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "previous_stop": previous_stop,
        "mode": if config.audit.strict { "strict" } else { "buffered" },
        "checkpoint_key": key.to_hex(),
    });
    let _ = recorder
        .record(AuditEvent::note("gateway_started", started))
        .await;
    let dangling = store.dangling_sessions().await?;
    for id in &dangling {
        let end = AuditEvent::SessionEnded(portcullis_core::SessionEnd {
            id: *id,
            ended_at: time::OffsetDateTime::now_utc(),
            reason: "gateway stopped before the session ended".into(),
        });
        let _ = recorder.record(end).await;
    }
    // In the store's tables before anyone can list sessions.
    let _ = recorder.flushed().await;
    if !dangling.is_empty() {
        tracing::warn!(
            sessions = dangling.len(),
            "ended sessions left open by an earlier gateway process"
        );
    }
    Ok((recorder, task))
}

/// Prunes evidence past `[audit] retention` or `retention_max_size`, a
/// checkpoint's stretch at a time, after recording in the chain how far it
/// will go (so verification knows the start is pruned, not deleted).
/// Looks once per checkpoint interval: finding nothing to do is two small
/// queries.
async fn keep_retention(
    store: Arc<SqliteStore>,
    recorder: Recorder,
    audit: crate::config::audit::AuditSettings,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(audit.checkpoint_interval) => {}
        }
        let cutoff = audit.retention.map(|age| {
            time::OffsetDateTime::now_utc().unix_timestamp()
                - i64::try_from(age.as_secs()).unwrap_or(i64::MAX)
        });
        let cut = match store.retention_cut(cutoff, audit.retention_max_bytes).await {
            Ok(Some(cut)) => cut,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "retention could not read the store");
                continue;
            }
        };
        let note = serde_json::json!({ "through": cut.through, "anchor_checkpoint": cut.anchor });
        if recorder
            .record(AuditEvent::note("retention", note))
            .await
            .is_err()
            || !recorder.durable().await
        {
            continue;
        }
        match store.prune(cut).await {
            Ok(removed) => tracing::info!(
                removed,
                through = cut.through,
                anchor = cut.anchor,
                "retention pruned the oldest evidence"
            ),
            Err(e) => tracing::warn!(error = %e, "retention could not prune the store"),
        }
    }
}

/// Holds `data_dir/portcullis.lock` for the life of the process: two
/// gateways on one data_dir would each continue the evidence chain from
/// where they found it, and the second would empty the first one's staging
/// files.
fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("portcullis.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another gateway is running with data_dir {} (it holds {})",
            data_dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// The checkpoint signing key's file name in `data_dir/keys`.
pub const EVIDENCE_KEY: &str = "evidence-ed25519.pk8";

/// The authenticator: static tokens, OIDC issuers, the gateway's own
/// token issuer, and the revocations in the store.
async fn authenticator(
    config: &Config,
    revocation_store: &dyn RevocationStore,
) -> anyhow::Result<Arc<GatewayAuthenticator>> {
    let key_path = config.data_dir.join("keys").join("token-signing.pem");
    let token_issuer = TokenIssuer::load_or_generate(
        &key_path,
        &config.identity.token_issuer,
        config.identity.token_ttl,
    )
    .map_err(anyhow::Error::msg)
    .context("loading the token-signing key")?;
    let auth = Arc::new(GatewayAuthenticator::new(
        StaticTokens::new(config.tokens.clone()),
        config.identity.issuers.clone(),
        Some(Arc::new(token_issuer)),
        config.identity.refresh,
    ));
    auth.revocations().load(
        revocation_store
            .revocations()
            .await
            .context("loading revocations")?,
    );
    {
        let auth = auth.clone();
        tokio::spawn(async move { auth.warm_up().await });
    }
    Ok(auth)
}

/// The tasks that run beside the listeners: policy and config reloads,
/// expiring reviews, webhooks.
fn background(
    core: &Core,
    config: &Config,
    config_path: &std::path::Path,
    auth: &Arc<GatewayAuthenticator>,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(watch_policies(
            core.policy.clone(),
            core.clone(),
            config.policy_dir.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(watch_config(
            auth.clone(),
            core.clone(),
            config_path.to_path_buf(),
            shutdown.clone(),
        )),
        tokio::spawn(sweep_reviews(core.reviews.clone(), shutdown.clone())),
        tokio::spawn(crate::webhooks::run(
            config.webhooks.clone(),
            core.reviews.clone(),
            shutdown.clone(),
        )),
    ]
}

/// Ends reviews past their time even when nobody looks at them, so the
/// store and the API say "expired" and webhooks fire.
async fn sweep_reviews(reviews: Arc<ReviewBoard>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
        if let Err(e) = reviews.sweep().await {
            tracing::warn!(error = %e, "expiring stale reviews failed");
        }
    }
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
    core: Core,
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
            Ok(n) => {
                let ended = core.end_sessions_no_longer_admitted();
                tracing::info!(
                    policies = n,
                    sessions_ended = ended,
                    "policy files changed: reloaded"
                );
                let note = serde_json::json!({ "policies": n, "sessions_ended": ended, "generation": policy.generation() });
                let _ = core
                    .recorder
                    .record(AuditEvent::note("policy_reloaded", note))
                    .await;
            }
            Err(e) => {
                tracing::error!(error = %e, "policy files changed but are invalid; keeping the previous set");
                let note = serde_json::json!({ "error": e.to_string() });
                let _ = core
                    .recorder
                    .record(AuditEvent::note("policy_reload_rejected", note))
                    .await;
            }
        }
    }
}

/// Rereads the static tokens from the config file; ends live sessions
/// that rest on a token that is gone or changed (gateway tokens exchanged
/// from one included). Other settings need a restart.
fn reload_tokens(auth: &GatewayAuthenticator, core: &Core, path: &std::path::Path) {
    match Config::load(path) {
        Ok(c) => {
            let gone = auth.replace_static(StaticTokens::new(c.tokens));
            let ended = core.end_sessions_no_longer_admitted();
            tracing::info!(
                removed = gone.len(),
                sessions_ended = ended,
                "static tokens reloaded"
            );
            let note = serde_json::json!({ "tokens_removed": gone.len(), "sessions_ended": ended });
            core.recorder
                .record_without_waiting(AuditEvent::note("config_reloaded", note));
        }
        Err(e) => {
            tracing::error!(error = %e, "config reload rejected; keeping the previous tokens");
            let note = serde_json::json!({ "error": e.to_string() });
            core.recorder
                .record_without_waiting(AuditEvent::note("config_reload_rejected", note));
        }
    }
}

/// Reloads static tokens when the config file changes (polled every second,
/// like the policies).
async fn watch_config(
    auth: Arc<GatewayAuthenticator>,
    core: Core,
    path: std::path::PathBuf,
    stop: CancellationToken,
) {
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    };
    let mut last = stamp(&path);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        let now = stamp(&path);
        if now != last {
            last = now;
            reload_tokens(&auth, &core, &path);
        }
    }
}

/// The signals the gateway acts on, caught from the start of `serve`:
/// one that arrives before `wait_for_signals` waits is kept for it.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// `None` (logged) when the handlers cannot be installed.
    fn install() -> Option<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(int), Ok(hup)) => Some(Self { term, int, hup }),
            _ => {
                tracing::error!("cannot install signal handlers; stop with SIGKILL");
                None
            }
        }
    }
}

/// Returns on SIGINT/SIGTERM; reloads policies and static tokens on SIGHUP.
async fn wait_for_signals(
    signals: Option<Signals>,
    policy: &PolicyEngine,
    config: &Config,
    auth: &GatewayAuthenticator,
    core: &Core,
    config_path: &std::path::Path,
) {
    let Some(Signals {
        mut term,
        mut int,
        mut hup,
    }) = signals
    else {
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                let note = match policy.reload(&config.policy_dir) {
                    Ok(n) => {
                        tracing::info!(policies = n, "policies reloaded");
                        AuditEvent::note("policy_reloaded", serde_json::json!({ "policies": n, "generation": policy.generation() }))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "policy reload rejected; keeping the previous set");
                        AuditEvent::note("policy_reload_rejected", serde_json::json!({ "error": e.to_string() }))
                    }
                };
                let _ = core.recorder.record(note).await;
                // Ends sessions the new policies or tokens no longer admit.
                reload_tokens(auth, core, config_path);
            }
        }
    }
}

/// Raises the soft limit on open descriptors to the hard limit: every
/// session holds two sockets, and the common soft limit of 1,024 would be
/// spent by about 500 sessions (or by idle sockets anyone can open).
fn raise_descriptor_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open descriptor limit"),
    }
}

/// The PostgreSQL adapter with every configured connection.
fn postgres_adapter(
    config: &Config,
    core: &Core,
    masking: &portcullis_core::masking::Masking,
    preauth: &portcullis_core::preauth::PreAuthGate,
) -> anyhow::Result<PgAdapter> {
    let tls = portcullis_core::tls::load_or_generate(
        config.tls_files.as_ref(),
        &config.data_dir,
        &config.tls_hostnames,
        portcullis_proto_pg::ALPN,
    )?;
    let mut targets = HashMap::new();
    for c in &config.connections {
        let mut upstream = pg_upstream(config, c)?;
        upstream.traces_columns = masking.columns_of(&c.name).next().is_some();
        targets.insert(c.name.clone(), Arc::new(upstream));
    }
    let provisioned: Vec<_> = config
        .connections
        .iter()
        .filter_map(|c| Some((targets.get(&c.name)?.clone(), c.grants.clone()?)))
        .collect();
    let grant_roles = (!provisioned.is_empty()).then(|| {
        Arc::new(portcullis_proto_pg::GrantRoles::new(
            provisioned,
            core.reviews.clone(),
        ))
    });
    Ok(PgAdapter::new(
        PgAdapterConfig {
            tls: Some(tls),
            plaintext: config.plaintext,
            targets,
            limits: config.limits.clone(),
            preauth: preauth.clone(),
            grant_roles,
        },
        core.clone(),
    )
    .with_session_threads(Arc::new(
        SessionThreads::start(config.session_threads).context("starting session threads")?,
    )))
}

/// The upstream of PostgreSQL connection `c`: where it is, its TLS and
/// the service credential the gateway logs in with.
pub fn pg_upstream(config: &Config, c: &crate::config::Connection) -> anyhow::Result<Upstream> {
    let tls = portcullis_proto_pg::tls::client_config(c.tls, c.ca_file.as_deref())
        .with_context(|| format!("upstream TLS for connection {}", c.name))?;
    let target = PgTarget {
        name: c.name.clone(),
        upstream: c.upstream.clone(),
        database: c.database.clone(),
        user: c.user.clone(),
        password: c.password.clone(),
        tls: c.tls,
        auth: c.auth,
        ca_file: c.ca_file.clone(),
    };
    Ok(Upstream::new(target, tls, config.upstream_connect_timeout))
}

/// Where the SSH host key is kept.
fn ssh_host_key_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("ssh").join("host_ed25519")
}

/// The SSH adapter: its host key (made on first start) and its targets.
fn ssh_adapter(
    config: &Config,
    core: &Core,
    ca: Arc<portcullis_proto_ssh::ca::UserCa>,
    preauth: &portcullis_core::preauth::PreAuthGate,
) -> anyhow::Result<portcullis_proto_ssh::SshAdapter> {
    let host_key =
        portcullis_proto_ssh::host_key::load_or_generate(&ssh_host_key_path(&config.data_dir))
            .context("loading the SSH host key")?;
    let settings = portcullis_proto_ssh::SshSettings {
        recordings_dir: recordings_dir(&config.data_dir),
        record_input: config.ssh.record_input,
        max_recording_bytes: config.ssh.max_recording_bytes,
        expiry_warning: config.ssh.expiry_warning,
        login_timeout: config.limits.login_timeout,
        upstream_timeout: config.upstream_connect_timeout,
        preauth: preauth.clone(),
    };
    portcullis_core::files::private_dir(&settings.recordings_dir)
        .context("creating the recordings directory")?;
    Ok(portcullis_proto_ssh::SshAdapter::new(
        core.clone(),
        config.ssh_targets.clone(),
        settings,
        host_key,
        ca,
    ))
}

/// Where terminal recordings are kept (`data_dir/recordings/SESSION/N.cast`).
pub fn recordings_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("recordings")
}

/// How the API port is served: its TLS (the PostgreSQL listener's
/// certificate), plaintext rule, caps and deadlines.
fn api_server_config(config: &Config) -> anyhow::Result<api::server::ApiServerConfig> {
    let tls = portcullis_core::tls::load_or_generate(
        config.tls_files.as_ref(),
        &config.data_dir,
        &config.tls_hostnames,
        &[b"http/1.1"],
    )
    .context("loading the API's TLS certificate")?;
    Ok(api::server::ApiServerConfig {
        tls: Some(tls),
        plaintext: config.plaintext_api,
        connections: portcullis_core::preauth::PreAuthGate::guarding("api", config.api_connections),
        header_timeout: config.api_header_timeout,
        request_timeout: config.api_request_timeout,
        shutdown_deadline: config.shutdown_deadline,
    })
}
