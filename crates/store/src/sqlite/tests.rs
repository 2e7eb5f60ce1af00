use super::*;
use portcullis_core::audit::SessionEnd;

fn session(user: &str) -> SessionRecord {
    SessionRecord {
        id: Uuid::now_v7(),
        protocol: "postgres".into(),
        connection: "app-db".into(),
        user: user.into(),
        groups: vec!["engineering".into()],
        actor: None,
        auth_method: "static-token".into(),
        client_user: Some("whoever".into()),
        client_address: "127.0.0.1:5000".into(),
        application_name: Some("psql".into()),
        client_tls: true,
        connect_policies: vec!["p:1".into()],
        started_at: OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
    }
}

fn statement(s: &SessionRecord, seq: u64) -> CommandRecord {
    CommandRecord {
        session_id: s.id,
        seq,
        kind: "execute".into(),
        text: "select $1".into(),
        started_at: s.started_at,
        duration_us: 42,
        error: None,
        decision: Decision {
            allowed: true,
            policies: vec!["p:1".into()].into(),
        },
        masked: None,
        detail: CommandDetail::of(&serde_json::json!({
            "params": ["1", null],
            "prepared_name": "s1",
            "rows": 1,
        })),
    }
}

#[tokio::test]
async fn round_trip_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("audit.db"))
        .await
        .unwrap();
    let a = session("alice");
    let b = session("bob");
    let st = statement(&a, 1);
    store
        .write(Arc::new([
            AuditEvent::SessionStarted(a.clone()),
            AuditEvent::SessionStarted(b.clone()),
            AuditEvent::Command(st.clone()),
            AuditEvent::SessionEnded(SessionEnd {
                id: b.id,
                ended_at: b.started_at,
                reason: "client terminated".into(),
            }),
        ]))
        .await
        .unwrap();

    let all = store.list_sessions(&SessionQuery::default()).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].session.id, b.id, "newest first");
    let active = store
        .list_sessions(&SessionQuery {
            active: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].session, a);

    let detail = store.session(a.id).await.unwrap().unwrap();
    assert_eq!(detail.commands, vec![st]);
    assert_eq!(detail.summary.command_count, 1);
    assert!(store.session(Uuid::now_v7()).await.unwrap().is_none());

    assert_eq!(store.close_dangling("gateway restarted").await.unwrap(), 1);
    let reopened = SqliteStore::open(&dir.path().join("audit.db"))
        .await
        .unwrap();
    let a2 = reopened.session(a.id).await.unwrap().unwrap();
    assert_eq!(a2.summary.end_reason.as_deref(), Some("gateway restarted"));
}

#[tokio::test]
async fn revocations_persist_and_lift() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.save_revocation("alice", 100, "root").await.unwrap();
    store.save_revocation("alice", 200, "root").await.unwrap();
    store.save_revocation("agent-x", 150, "root").await.unwrap();
    drop(store);
    let store = SqliteStore::open(&path).await.unwrap();
    let mut list = store.revocations().await.unwrap();
    list.sort();
    assert_eq!(list, vec![("agent-x".into(), 150), ("alice".into(), 200)]);
    assert!(store.delete_revocation("alice").await.unwrap());
    assert!(!store.delete_revocation("alice").await.unwrap());
    assert_eq!(store.revocations().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_batch_of_any_size_is_stored_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("audit.db"))
        .await
        .unwrap();
    let a = session("alice");
    let mut batch = vec![AuditEvent::SessionStarted(a.clone())];
    let statements: Vec<CommandRecord> = (1..=300).map(|seq| statement(&a, seq)).collect();
    batch.extend(statements.iter().cloned().map(AuditEvent::Command));
    store.write(batch.into()).await.unwrap();
    let detail = store.session(a.id).await.unwrap().unwrap();
    assert_eq!(detail.commands, statements);
}

#[tokio::test]
async fn a_failed_batch_leaves_nothing_and_the_next_one_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("audit.db"))
        .await
        .unwrap();
    let a = session("alice");
    let orphan = session("nobody");
    // The orphan's statement names a session never started: the foreign
    // key refuses it, after the first two rows went in.
    let failing = Arc::new([
        AuditEvent::SessionStarted(a.clone()),
        AuditEvent::Command(statement(&a, 1)),
        AuditEvent::Command(statement(&orphan, 1)),
    ]);
    let err = store.write(failing).await.unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
    assert!(
        store.session(a.id).await.unwrap().is_none(),
        "a failed batch is rolled back whole"
    );
    store
        .write(Arc::new([
            AuditEvent::SessionStarted(a.clone()),
            AuditEvent::Command(statement(&a, 1)),
        ]))
        .await
        .unwrap();
    let detail = store.session(a.id).await.unwrap().unwrap();
    assert_eq!(detail.commands, vec![statement(&a, 1)]);
}

#[tokio::test]
async fn a_write_that_panics_fails_alone_and_the_writer_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let _store = SqliteStore::open(&path).await.unwrap();
    let writer = WriteThread::start(&path).unwrap();
    let err = writer
        .run(|conn| -> rusqlite::Result<()> {
            conn.execute_batch("BEGIN; DELETE FROM sessions;")?;
            panic!("a bug in a write");
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
    // The next write runs on a fresh connection: no transaction is left
    // open from the one that panicked.
    let open = writer.run(|conn| Ok(conn.is_autocommit())).await.unwrap();
    assert!(open, "a transaction outlived the panic");
}

/// A store written before commands had a protocol-specific detail keeps
/// its SQL facts: the migration moves them into `detail`.
#[tokio::test]
async fn a_store_from_before_version_2_keeps_its_sql_facts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let a = session("alice");
    {
        let old = rusqlite::Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE sessions (id TEXT PRIMARY KEY, protocol TEXT NOT NULL, connection TEXT NOT NULL,
                user TEXT NOT NULL, groups TEXT NOT NULL, actor TEXT, auth_method TEXT NOT NULL,
                client_user TEXT, client_address TEXT NOT NULL, application_name TEXT,
                client_tls INTEGER NOT NULL, connect_policies TEXT NOT NULL, started_at TEXT NOT NULL,
                ended_at TEXT, end_reason TEXT);
             CREATE TABLE statements (session_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
                text TEXT NOT NULL, params TEXT, prepared_name TEXT, started_at TEXT NOT NULL,
                duration_us INTEGER NOT NULL, rows INTEGER, error TEXT, allowed INTEGER NOT NULL,
                policies TEXT NOT NULL, masked TEXT, PRIMARY KEY (session_id, seq));",
        )
        .unwrap();
        old.execute(
            "INSERT INTO sessions VALUES (?, 'postgres', 'app-db', 'alice', '[]', NULL, 'static-token',
                NULL, '127.0.0.1:1', NULL, 0, '[]', ?, NULL, NULL)",
            rusqlite::params![a.id.to_string(), ts(a.started_at)],
        )
        .unwrap();
        old.execute(
            "INSERT INTO statements VALUES (?, 1, 'execute', 'select $1', '[\"1\",null]', 's1', ?, 42, 7,
                NULL, 1, '[\"p:1\"]', NULL)",
            rusqlite::params![a.id.to_string(), ts(a.started_at)],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let detail = store.session(a.id).await.unwrap().unwrap();
    let command = &detail.commands[0];
    assert_eq!(command.text, "select $1");
    assert_eq!(
        command.detail.field("params"),
        Some(serde_json::json!(["1", null]))
    );
    assert_eq!(
        command.detail.field("prepared_name"),
        Some(serde_json::json!("s1"))
    );
    assert_eq!(command.detail.field("rows"), Some(serde_json::json!(7)));
    // A row an older binary writes after the migration is read from the
    // old columns.
    drop(store);
    {
        let old = rusqlite::Connection::open(&path).unwrap();
        old.execute(
            "INSERT INTO statements (session_id, seq, kind, text, params, prepared_name, started_at,
                duration_us, rows, error, allowed, policies) VALUES (?, 2, 'execute', 'select 2',
                NULL, 's2', ?, 1, 3, NULL, 1, '[]')",
            rusqlite::params![a.id.to_string(), ts(a.started_at)],
        )
        .unwrap();
    }
    // Opening again runs no step twice.
    let again = SqliteStore::open(&path).await.unwrap();
    let detail = again.session(a.id).await.unwrap().unwrap();
    assert_eq!(
        detail.commands[0].detail.field("rows"),
        Some(serde_json::json!(7))
    );
}
