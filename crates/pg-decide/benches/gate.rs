//! Classification plus decision per statement: cold (a parse per call),
//! cached (the same text again in a session: parse and decision reused),
//! and new literals (the simple protocol's usual case: a text never seen,
//! whose shape was: scanned, then the parse and decision reused).

// criterion_main! generates an undocumented main.
#![allow(missing_docs)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use portcullis_core::{Identity, PolicyEngine};
use portcullis_pg_decide::gate::{GateDecision, ParseCache, StatementGate};

const POLICIES: &str = r#"
permit(principal in Group::"engineering",
       action in [Action::"connect", Action::"select"],
       resource in Connection::"app-db");
forbid(principal, action, resource == Table::"app-db/public.api_keys");
permit(principal in Group::"engineering",
       action in [Action::"insert", Action::"update", Action::"delete"],
       resource in Connection::"app-db");
"#;

const OLTP: &[(&str, &str)] = &[
    ("point-select", "SELECT abalance FROM pgbench_accounts WHERE aid = $1"),
    ("update", "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"),
    (
        "insert",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
    ),
    (
        "join",
        "SELECT o.id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status = $1 ORDER BY o.id LIMIT 50",
    ),
];

fn gate(engine: &Arc<PolicyEngine>, cache: Arc<ParseCache>) -> StatementGate {
    StatementGate::new(
        engine.clone(),
        cache,
        Identity {
            user: "alice".into(),
            groups: vec!["engineering".into()],
            actor: None,
            method: "bench",
            credential: Default::default(),
        },
        "app-db".into(),
        "svc".into(),
        "127.0.0.1".into(),
        vec!["public".into()],
    )
}

fn bench(c: &mut Criterion) {
    let engine = Arc::new(
        PolicyEngine::from_text(POLICIES, &[&portcullis_pg_decide::vocabulary::SQL])
            .expect("policies"),
    );
    let mut group = c.benchmark_group("classify+decide");
    for (name, sql) in OLTP {
        group.bench_function(format!("uncached/{name}"), |b| {
            b.iter_batched(
                || gate(&engine, Arc::new(ParseCache::default())),
                |mut g| assert!(matches!(g.check(sql), GateDecision::Allow { .. })),
                BatchSize::SmallInput,
            )
        });
        let mut g = gate(&engine, Arc::new(ParseCache::default()));
        g.check(sql);
        group.bench_function(format!("cached/{name}"), |b| {
            b.iter(|| assert!(matches!(g.check(sql), GateDecision::Allow { .. })))
        });
    }
    // The simple protocol: every call a new literal value.
    let mut g = gate(&engine, Arc::new(ParseCache::default()));
    let mut n = 0u64;
    group.bench_function("new-literal/point-select", |b| {
        b.iter(|| {
            n += 1;
            let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {n}");
            assert!(matches!(g.check(&sql), GateDecision::Allow { .. }))
        })
    });
    group.finish();
    // The two ways to the literal-free key, side by side: PostgreSQL's
    // scanner, and the quick walk plain texts take.
    c.bench_function("scan-only/point-select-literal", |b| {
        b.iter(|| {
            portcullis_pg_sql::literal_free_key(
                "SELECT abalance FROM pgbench_accounts WHERE aid = 12345",
            )
            .expect("key")
        })
    });
    c.bench_function("quick-key-only/point-select-literal", |b| {
        b.iter(|| {
            portcullis_pg_sql::quick_literal_free_key(
                "SELECT abalance FROM pgbench_accounts WHERE aid = 12345",
            )
            .expect("key")
        })
    });
    // One Cedar decision on its own, entities reused: the floor under the
    // cached figures above.
    let alice = Identity {
        user: "alice".into(),
        groups: vec!["engineering".into()],
        actor: None,
        method: "bench",
        credential: Default::default(),
    };
    use portcullis_core::policy::ContextValue;
    use portcullis_pg_decide::vocabulary as sql;
    let table = sql::table("app-db", "public.pgbench_accounts");
    let facts = portcullis_core::RequestFacts {
        protocol: "postgres",
        client_address: "127.0.0.1".into(),
        extra: Vec::new(),
    }
    .with(sql::STATEMENT_KIND, ContextValue::Str("select".into()))
    .with(sql::STATEMENT, ContextValue::Str(OLTP[0].1.into()));
    c.bench_function("decide-only/select-table", |b| {
        b.iter(|| {
            assert!(
                engine
                    .decide(
                        &alice,
                        sql::action(portcullis_pg_sql::SqlAction::Select),
                        &table,
                        &facts
                    )
                    .allowed
            )
        })
    });
    let mut parse = c.benchmark_group("parse-only");
    for (name, sql) in OLTP {
        parse.bench_function(*name, |b| {
            b.iter(|| portcullis_pg_sql::analyze(sql).expect("parses"))
        });
    }
    parse.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
