//! Ephemeral upstream roles for grants.
//!
//! When a connection names a provisioning credential, an approved grant of
//! role R becomes a PostgreSQL role `portcullis_grant_<id>`: `LOGIN`,
//! `IN ROLE R`, with a random password only this process knows. The
//! grantee's new sessions on that connection log in as it. At the grant's
//! end (or revocation) its live sessions hear so, the role is set
//! `NOLOGIN`, its backends are terminated, what it owns is reassigned or
//! dropped as configured, and the role is dropped. `VALID UNTIL` is set
//! too, but only as a backstop: it stops password logins, not sessions.
//!
//! A reconciler compares the roles with the prefix against the grants in
//! force at start-up and every [`RECONCILE_EVERY`]: a role without a grant
//! (a crash between approval and end, say) is torn down, and a grant
//! whose role or password is missing (the password lives in memory only)
//! gets a fresh one. No elevated credential outlives its grant by more
//! than that interval, even across a crash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::BytesMut;
use portcullis_core::approvals::ReviewBoard;
use portcullis_core::grants::ActiveGrant;
use portcullis_core::{Identity, Secret};
use portcullis_pg_wire::{encode, BackendMessage};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::error::SessionError;
use crate::framed::read_message;
use crate::relay::Notices;
use crate::stream::Stream;
use crate::upstream::Upstream;

/// Grant roles' names start so unless a connection says otherwise;
/// nothing else should. Gateways that share an upstream (and not a store)
/// need a prefix each, or each would remove the other's roles.
pub const ROLE_PREFIX: &str = "portcullis_grant_";

/// How often roles are compared with grants.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(30);

/// What a grant role owns when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedObjects {
    /// Dropped with it (`DROP OWNED`).
    Drop,
    /// Given to this role (`REASSIGN OWNED … TO`), then its privileges dropped.
    ReassignTo(String),
}

/// How one connection provisions grant roles.
#[derive(Debug, Clone)]
pub struct GrantProvisioning {
    /// A role with `CREATEROLE` (and the right to terminate the grant
    /// roles' backends, and ADMIN OPTION on the granted roles where the
    /// server asks for it).
    pub admin_user: String,
    /// Its password.
    pub admin_password: Option<Secret<String>>,
    /// The roles grants may give.
    pub roles: Vec<String>,
    /// What a grant role owns at its end.
    pub owned: OwnedObjects,
    /// The prefix of grant roles' names ([`ROLE_PREFIX`] by default).
    pub role_prefix: String,
}

impl GrantProvisioning {
    /// The role name of grant `id`.
    pub fn role_name(&self, id: u64) -> String {
        format!("{}{id}", self.role_prefix)
    }
}

/// A grant role in force.
struct Live {
    connection: String,
    user: String,
    actor: Option<String>,
    /// The upstream that logs in as the role.
    upstream: Arc<Upstream>,
    /// The sessions running as it: their notices, and what ends them.
    sessions: Vec<(Weak<Notices>, CancellationToken)>,
}

/// One connection's provisioning.
struct Provisioned {
    base: Arc<Upstream>,
    admin: Upstream,
    config: GrantProvisioning,
}

/// Keeps grant roles in step with the grants in force.
pub struct GrantRoles {
    connections: HashMap<String, Provisioned>,
    live: Mutex<HashMap<u64, Live>>,
    board: Arc<ReviewBoard>,
    /// One change at a time: a grant's role is made or dropped whole.
    working: tokio::sync::Mutex<()>,
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl GrantRoles {
    /// Provisioning for `connections` (name → the connection's upstream and
    /// its provisioning), following `board`'s grants.
    pub fn new(
        connections: Vec<(Arc<Upstream>, GrantProvisioning)>,
        board: Arc<ReviewBoard>,
    ) -> Self {
        let connections = connections
            .into_iter()
            .map(|(base, config)| {
                let mut target = base.target.clone();
                target.user = config.admin_user.clone();
                target.password = config.admin_password.clone();
                let admin = Upstream::new(target, base.tls.clone(), base.connect_timeout);
                (
                    base.target.name.clone(),
                    Provisioned {
                        base,
                        admin,
                        config,
                    },
                )
            })
            .collect();
        Self {
            connections,
            live: Mutex::new(HashMap::new()),
            board,
            working: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The upstream `identity`'s new sessions on `connection` log in
    /// through: its grant role's, while a grant is in force.
    pub fn upstream_for(&self, identity: &Identity, connection: &str) -> Option<Arc<Upstream>> {
        let in_force: Vec<u64> = self.board.grants().all().iter().map(|g| g.id).collect();
        self.lock()
            .iter()
            .filter(|(id, _)| in_force.contains(id))
            .find(|(_, l)| {
                l.connection == connection && l.user == identity.user && l.actor == identity.actor
            })
            .map(|(_, l)| l.upstream.clone())
    }

    /// Tells a session running through `upstream` (a grant role's) when
    /// its grant ends.
    pub fn attach(
        &self,
        upstream: &Arc<Upstream>,
        notices: &Arc<Notices>,
        kill: &CancellationToken,
    ) {
        if let Some(l) = self
            .lock()
            .values_mut()
            .find(|l| Arc::ptr_eq(&l.upstream, upstream))
        {
            l.sessions.retain(|(w, _)| w.strong_count() > 0);
            l.sessions.push((Arc::downgrade(notices), kill.clone()));
        }
    }

    /// Follows the board: provisions on approval, tears down at the end,
    /// and reconciles now and every [`RECONCILE_EVERY`].
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        if self.connections.is_empty() {
            return;
        }
        let mut events = self.board.subscribe();
        let mut tick = tokio::time::interval(RECONCILE_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.reconcile().await,
                e = events.recv() => match e {
                    Ok(e) if e.review.grant.is_some() => self.reconcile().await,
                    Ok(_) => {}
                    // Missed events: the reconciler sees the state itself.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.reconcile().await,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// Makes the grant roles match the grants in force, on every
    /// provisioning connection.
    pub async fn reconcile(&self) {
        let _working = self.working.lock().await;
        let grants = self.board.grants().all();
        for (name, p) in &self.connections {
            if let Err(e) = self.reconcile_connection(name, p, &grants).await {
                metrics::counter!("portcullis_grant_role_failures_total").increment(1);
                tracing::warn!(connection = %name, error = %e, "reconciling grant roles failed; retrying later");
            }
        }
    }

    async fn reconcile_connection(
        &self,
        name: &str,
        p: &Provisioned,
        grants: &[ActiveGrant],
    ) -> Result<(), SessionError> {
        let mut admin = p.admin.login(&[]).await?;
        let (stream, buf) = (&mut admin.stream, &mut admin.leftover);
        let escaped = p
            .config
            .role_prefix
            .replace('\\', "\\\\")
            .replace('_', "\\_")
            .replace('%', "\\%");
        let pattern = quote_literal(&format!("{escaped}%"));
        let existing: Vec<String> = run_sql(
            stream,
            buf,
            &format!("SELECT rolname FROM pg_catalog.pg_roles WHERE rolname LIKE {pattern}"),
        )
        .await?
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect();
        let wanted: Vec<&ActiveGrant> = grants
            .iter()
            .filter(|g| g.connection == name && p.config.roles.contains(&g.role))
            .collect();
        // Each role on its own, so that one that cannot be removed holds
        // up nothing else; ended ones first, so that nothing elevated stays
        // a moment longer than needed.
        let mut failures = Vec::new();
        for role in &existing {
            if wanted.iter().any(|g| p.config.role_name(g.id) == *role) {
                continue;
            }
            let sessions = self.end_sessions_of(name, role, &p.config);
            match teardown(stream, buf, role, &p.config.owned).await {
                Ok(()) => tracing::info!(connection = %name, role = %role, "grant role removed"),
                Err(e) => {
                    // Its backends may live on: end the gateway's sessions
                    // that run as it, whatever the server still allows.
                    for kill in sessions {
                        kill.cancel();
                    }
                    failures.push(format!("{role}: {e}"));
                }
            }
        }
        self.lock()
            .retain(|id, l| l.connection != name || wanted.iter().any(|g| g.id == *id));
        for g in wanted {
            if let Err(e) = self.make_ready(stream, buf, name, p, g, &existing).await {
                failures.push(format!("{}: {e}", p.config.role_name(g.id)));
            }
        }
        let _ = stream.shutdown().await;
        if failures.is_empty() {
            Ok(())
        } else {
            Err(SessionError::upstream(failures.join("; ")))
        }
    }

    /// Makes grant `g`'s role ready for its sessions, unless it is.
    async fn make_ready(
        &self,
        stream: &mut Stream,
        buf: &mut BytesMut,
        name: &str,
        p: &Provisioned,
        g: &ActiveGrant,
        existing: &[String],
    ) -> Result<(), SessionError> {
        let role = p.config.role_name(g.id);
        let known = self.lock().contains_key(&g.id);
        if known && existing.contains(&role) {
            return Ok(());
        }
        let password = Secret::new(hex::encode(rand::random::<[u8; 24]>()));
        provision(stream, buf, &role, g, &password, existing.contains(&role)).await?;
        let mut target = p.base.target.clone();
        target.user = role.clone();
        target.password = Some(password);
        let mut upstream = Upstream::new(target, p.base.tls.clone(), p.base.connect_timeout);
        upstream.views = p.base.views.clone();
        upstream.traces_columns = p.base.traces_columns;
        self.lock().insert(
            g.id,
            Live {
                connection: name.to_owned(),
                user: g.user.clone(),
                actor: g.actor.clone(),
                upstream: Arc::new(upstream),
                sessions: Vec::new(),
            },
        );
        tracing::info!(connection = %name, role = %role, granted = %g.role, grant = g.id, "grant role ready");
        Ok(())
    }

    /// Warns the sessions running as `role` on `connection` that they end
    /// now; returns what ends each of them.
    fn end_sessions_of(
        &self,
        connection: &str,
        role: &str,
        config: &GrantProvisioning,
    ) -> Vec<CancellationToken> {
        let live = self.lock();
        let ending = live
            .iter()
            .filter(|(id, l)| l.connection == connection && config.role_name(**id) == role);
        let mut kills = Vec::new();
        for (id, l) in ending {
            for (notices, kill) in &l.sessions {
                if let Some(notices) = notices.upgrade() {
                    notices.push(format!(
                        "portcullis: grant {id} has ended; this session runs as its role and is ended now"
                    ));
                    kills.push(kill.clone());
                }
            }
        }
        kills
    }
}

/// Creates (or, after a restart, re-keys) the role of grant `g`.
async fn provision(
    stream: &mut Stream,
    buf: &mut BytesMut,
    role: &str,
    g: &ActiveGrant,
    password: &Secret<String>,
    exists: bool,
) -> Result<(), SessionError> {
    let until = time::OffsetDateTime::from_unix_timestamp(g.expires_at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let (role_q, pw, until) = (
        quote_ident(role),
        quote_literal(password.expose()),
        quote_literal(&until),
    );
    let sql = if exists {
        format!("ALTER ROLE {role_q} LOGIN PASSWORD {pw} VALID UNTIL {until}")
    } else {
        format!(
            "CREATE ROLE {role_q} LOGIN PASSWORD {pw} IN ROLE {} VALID UNTIL {until}",
            quote_ident(&g.role)
        )
    };
    run_sql(stream, buf, &sql).await.map(drop)
}

/// Ends a grant role: no new logins, no live backends, nothing owned,
/// then gone.
async fn teardown(
    stream: &mut Stream,
    buf: &mut BytesMut,
    role: &str,
    owned: &OwnedObjects,
) -> Result<(), SessionError> {
    let q = quote_ident(role);
    let l = quote_literal(role);
    run_sql(stream, buf, &format!("ALTER ROLE {q} NOLOGIN")).await?;
    // Signalling its backends and dropping what it owns need the role's
    // privileges; a CREATEROLE admin may take them (a superuser has them).
    run_sql(stream, buf, &format!("GRANT {q} TO CURRENT_USER")).await?;
    run_sql(
        stream,
        buf,
        &format!(
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = {l}"
        ),
    )
    .await?;
    // Without its memberships it holds nothing elevated, even if what it
    // owns keeps it from being dropped below (which is retried).
    let memberships = run_sql(
        stream,
        buf,
        &format!(
            "SELECT r.rolname FROM pg_catalog.pg_auth_members m \
             JOIN pg_catalog.pg_roles r ON r.oid = m.roleid \
             JOIN pg_catalog.pg_roles u ON u.oid = m.member WHERE u.rolname = {l}"
        ),
    )
    .await?;
    for granted in memberships
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
    {
        run_sql(
            stream,
            buf,
            &format!("REVOKE {} FROM {q}", quote_ident(&granted)),
        )
        .await?;
    }
    if let OwnedObjects::ReassignTo(to) = owned {
        run_sql(
            stream,
            buf,
            &format!("REASSIGN OWNED BY {q} TO {}", quote_ident(to)),
        )
        .await?;
    }
    run_sql(stream, buf, &format!("DROP OWNED BY {q}")).await?;
    run_sql(stream, buf, &format!("DROP ROLE {q}"))
        .await
        .map(drop)
}

/// Runs `sql` (one statement) and returns its rows as text.
async fn run_sql(
    stream: &mut Stream,
    buf: &mut BytesMut,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, SessionError> {
    let mut out = BytesMut::new();
    encode::query(&mut out, sql);
    stream.write_all(&out).await?;
    stream.flush().await?;
    let mut rows = Vec::new();
    let mut failed = None;
    loop {
        let (tag, body) = read_message(stream, buf, 1 << 20).await?;
        match BackendMessage::decode(tag, &body)? {
            BackendMessage::DataRow(row) => rows.push(crate::upstream::text_columns(row)),
            BackendMessage::ErrorResponse(e) => {
                failed = Some(e.message().unwrap_or("").to_owned());
            }
            BackendMessage::ReadyForQuery(_) => break,
            _ => {}
        }
    }
    match failed {
        // Never the statement: it may hold a password.
        Some(message) => Err(SessionError::upstream(format!(
            "provisioning grant roles: {message}"
        ))),
        None => Ok(rows),
    }
}
