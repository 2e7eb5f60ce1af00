//! The audit store's write path: a batch of statement records chained
//! (canonical line and SHA-256 each) and committed in one transaction, as
//! the recorder does it. Per-row cost is the
//! batch time over its size; the fixed part (BEGIN, COMMIT, the WAL frames
//! and the hand-off to the writer thread) shows as the difference
//! between batch sizes.

// criterion_main! generates an undocumented main.
#![allow(missing_docs)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use portcullis_core::audit::{
    AuditEvent, AuditStore, CommandDetail, CommandRecord, Decision, SessionRecord,
};
use portcullis_store::SqliteStore;
use time::OffsetDateTime;
use uuid::Uuid;

fn session() -> SessionRecord {
    SessionRecord {
        id: Uuid::now_v7(),
        protocol: "postgres".into(),
        connection: "benchdb".into(),
        user: "bench".into(),
        groups: vec!["bench".into()],
        actor: None,
        auth_method: "static-token".into(),
        client_user: None,
        client_address: "127.0.0.1:5000".into(),
        application_name: Some("pgbench".into()),
        client_tls: false,
        connect_policies: vec!["policy0".into()],
        started_at: OffsetDateTime::now_utc(),
    }
}

/// A `pgbench -S` statement as the relay records it.
fn statement(session: Uuid, seq: u64) -> AuditEvent {
    AuditEvent::Command(CommandRecord {
        session_id: session,
        seq,
        kind: "query".into(),
        text: format!("SELECT abalance FROM pgbench_accounts WHERE aid = {seq};"),
        started_at: OffsetDateTime::now_utc(),
        duration_us: 80,
        error: None,
        decision: Decision {
            allowed: true,
            policies: vec!["policy0".into()].into(),
        },
        masked: None,
        detail: CommandDetail::of(&serde_json::json!({ "rows": 1 })),
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn AuditStore> = Arc::new(
        rt.block_on(SqliteStore::open(&dir.path().join("audit.db")))
            .expect("store"),
    );
    // Eight sessions at once, their statements interleaved, as under load:
    // rows then land at eight places in the key order, not only at its end.
    let sessions: Vec<SessionRecord> = (0..8).map(|_| session()).collect();
    let ids: Vec<Uuid> = sessions.iter().map(|s| s.id).collect();
    let started: Arc<[AuditEvent]> = sessions
        .into_iter()
        .map(AuditEvent::SessionStarted)
        .collect();
    let mut head = portcullis_core::evidence::ChainHead::default();
    let mut chain = |events: &[AuditEvent]| -> Arc<[portcullis_core::evidence::ChainRecord]> {
        let now = OffsetDateTime::now_utc();
        events.iter().map(|e| head.append(e, now)).collect()
    };
    rt.block_on(store.append(chain(&started)))
        .expect("session rows");
    let mut seq = 0u64;
    let mut group = c.benchmark_group("store-write");
    for size in [1usize, 16, 64, 256] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(format!("statements/{size}"), |b| {
            b.iter_batched(
                || {
                    (0..size)
                        .map(|_| {
                            seq += 1;
                            statement(ids[seq as usize % ids.len()], seq)
                        })
                        .collect::<Vec<_>>()
                },
                |batch| rt.block_on(store.append(chain(&batch))).expect("write"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
