//! Builds the console from the configuration: its OIDC client, the views
//! and probes of every connection, and the evidence check.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use portcullis_core::evidence::{PublicKey, Signer};

use super::{ConnectionView, Connections, Console, EvidenceCheck, OidcClient};
use crate::api::ApiState;
use crate::config::Config;

/// The console over `api`, or `None` when `[console] enabled = false`.
pub fn build(config: &Config, api: ApiState) -> anyhow::Result<Option<Console>> {
    if !config.console.enabled {
        return Ok(None);
    }
    let oidc = config.identity.login.as_ref().map(|login| {
        Arc::new(OidcClient::new(
            login.issuer.clone(),
            config
                .console
                .client_id
                .clone()
                .unwrap_or_else(|| login.client_id.clone()),
            config
                .console
                .client_secret
                .as_ref()
                .map(|s| s.expose().clone()),
            login.scopes.clone(),
            config.console.url.clone(),
        ))
    });
    let key_path = config
        .data_dir
        .join("keys")
        .join(crate::serve::EVIDENCE_KEY);
    let key =
        PublicKey::of(&Signer::load_or_generate(&key_path).context("loading the checkpoint key")?);
    let evidence = EvidenceCheck::new(
        config.data_dir.join("portcullis.db"),
        key,
        config.audit.checkpoint_interval * 2 + Duration::from_secs(10),
    );
    Ok(Some(Console {
        api,
        logins: Arc::default(),
        oidc,
        connections: Arc::new(Connections::new(connection_views(config)?)),
        evidence: Arc::new(evidence),
        streams: Arc::default(),
    }))
}

/// Every connection as the console shows it. Passwords, keys and the
/// names of the variables holding them are left out on purpose.
fn connection_views(config: &Config) -> anyhow::Result<Vec<ConnectionView>> {
    let mut views = Vec::new();
    for c in &config.connections {
        let upstream = crate::serve::pg_upstream(config, c)?;
        let mut settings = vec![
            ("upstream", c.upstream.clone()),
            ("database", c.database.clone()),
            ("service user", c.user.clone()),
            ("upstream TLS", tls_name(c.tls).into()),
            ("upstream authentication", auth_name(c.auth).into()),
            (
                "credential",
                if c.password.is_some() {
                    "held by the gateway (not shown)"
                } else {
                    "none"
                }
                .into(),
            ),
        ];
        if let Some(ca) = &c.ca_file {
            settings.push(("upstream CA file", ca.display().to_string()));
        }
        if c.grants.is_some() {
            settings.push(("grants", "provisions temporary roles".into()));
        }
        views.push(ConnectionView {
            name: c.name.clone(),
            kind: "postgres",
            settings,
            probe: Arc::new(portcullis_proto_pg::probe::PgProbe(Arc::new(upstream))),
        });
    }
    for t in &config.ssh_targets {
        let pin = t.host_key_fingerprint();
        views.push(ConnectionView {
            name: t.name.clone(),
            kind: "ssh",
            settings: vec![
                ("upstream", t.upstream.clone()),
                ("account", t.user.clone()),
                ("pinned host key", pin),
                ("credential", "the gateway's key (not shown)".into()),
            ],
            probe: Arc::new(portcullis_proto_ssh::probe::SshProbe {
                target: Arc::new(t.clone()),
                timeout: config.upstream_connect_timeout,
            }),
        });
    }
    Ok(views)
}

/// `upstream_tls` as the configuration spells it.
fn tls_name(tls: portcullis_proto_pg::UpstreamTls) -> &'static str {
    use portcullis_proto_pg::UpstreamTls::*;
    match tls {
        Disable => "disable",
        Require => "require",
        VerifyFull => "verify-full",
    }
}

/// `upstream_auth` as the configuration spells it.
fn auth_name(auth: portcullis_proto_pg::UpstreamAuth) -> &'static str {
    use portcullis_proto_pg::UpstreamAuth::*;
    match auth {
        ScramSha256 => "scram-sha-256",
        Md5 => "md5",
        Password => "password",
    }
}
