use super::*;
use portcullis_core::audit::{
    AuditEvent, AuditStore, CommandDetail, CommandOutcome, CommandRecord, CommandStart, Decision,
    DecisionFilter, SessionEnd, SessionQuery, SessionRecord,
};
use portcullis_core::evidence::ChainHead;
use std::sync::Arc;
use time::OffsetDateTime;
use uuid::Uuid;

/// Chains `events` after the store's head and appends them.
async fn append(store: &SqliteStore, events: Vec<AuditEvent>) {
    let mut head = store.chain_head().await.unwrap();
    let records: Arc<[_]> = events
        .iter()
        .map(|e| head.append(e, OffsetDateTime::now_utc()))
        .collect();
    store.append(records).await.unwrap();
}

fn ts(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

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
    append(
        &store,
        vec![
            AuditEvent::SessionStarted(a.clone()),
            AuditEvent::SessionStarted(b.clone()),
            AuditEvent::Command(st.clone()),
            AuditEvent::SessionEnded(SessionEnd {
                id: b.id,
                ended_at: b.started_at,
                reason: "client terminated".into(),
            }),
        ],
    )
    .await;

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

    let mine = store
        .list_sessions(&SessionQuery {
            user: Some("bob".into()),
            since: Some(OffsetDateTime::now_utc() - time::Duration::minutes(1)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    let future = store
        .list_sessions(&SessionQuery {
            since: Some(OffsetDateTime::now_utc() + time::Duration::minutes(1)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(future.is_empty());

    let reopened = SqliteStore::open(&dir.path().join("audit.db"))
        .await
        .unwrap();
    assert_eq!(reopened.dangling_sessions().await.unwrap(), vec![a.id]);
    assert_eq!(reopened.chain_head().await.unwrap().seq, 4);
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
    append(&store, batch).await;
    let detail = store.session(a.id).await.unwrap().unwrap();
    assert_eq!(detail.commands, statements);
}

#[tokio::test]
async fn a_retried_batch_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("audit.db"))
        .await
        .unwrap();
    let a = session("alice");
    let mut head = ChainHead::default();
    let records: Arc<[_]> = [
        AuditEvent::SessionStarted(a.clone()),
        AuditEvent::Command(statement(&a, 1)),
    ]
    .iter()
    .map(|e| head.append(e, OffsetDateTime::now_utc()))
    .collect();
    store.append(records.clone()).await.unwrap();
    store.append(records).await.unwrap();
    assert_eq!(store.chain_head().await.unwrap(), head);
    let detail = store.session(a.id).await.unwrap().unwrap();
    assert_eq!(detail.commands, vec![statement(&a, 1)]);
}

/// A command recorded before it ran and its outcome after read back as
/// one; one whose outcome never came says so.
#[tokio::test]
async fn a_started_command_and_its_outcome_read_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("audit.db"))
        .await
        .unwrap();
    let a = session("alice");
    let whole = statement(&a, 1);
    let start = |seq| {
        AuditEvent::CommandStarted(CommandStart {
            session_id: a.id,
            seq,
            kind: "execute".into(),
            text: whole.text.clone(),
            started_at: whole.started_at,
            decision: whole.decision.clone(),
            detail: CommandDetail::of(
                &serde_json::json!({ "params": ["1", null], "prepared_name": "s1" }),
            ),
        })
    };
    append(
        &store,
        vec![
            AuditEvent::SessionStarted(a.clone()),
            start(1),
            start(2),
            AuditEvent::CommandFinished(CommandOutcome {
                session_id: a.id,
                seq: 1,
                duration_us: 42,
                error: None,
                masked: None,
                detail: CommandDetail::of(&serde_json::json!({ "rows": 1 })),
            }),
        ],
    )
    .await;
    let detail = store.session(a.id).await.unwrap().unwrap();
    assert_eq!(detail.commands[0], whole);
    assert_eq!(
        detail.commands[1].detail.field("outcome"),
        Some(serde_json::json!("running"))
    );
    assert_eq!(detail.summary.command_count, 2);
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

/// A store from before the evidence chain keeps its history: opening it
/// moves sessions and commands into the chain, SQL facts included.
#[tokio::test]
async fn a_store_from_before_the_chain_keeps_its_history() {
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
                NULL, '127.0.0.1:1', NULL, 0, '[]', ?, ?, 'client terminated')",
            rusqlite::params![a.id.to_string(), ts(a.started_at), ts(a.started_at)],
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
    assert_eq!(command.detail.field("rows"), Some(serde_json::json!(7)));
    assert_eq!(
        detail.summary.end_reason.as_deref(),
        Some("client terminated")
    );
    // history_imported, the session's start, its command, its end.
    assert_eq!(store.chain_head().await.unwrap().seq, 4);
    drop(store);
    // Opening again imports nothing twice.
    let again = SqliteStore::open(&path).await.unwrap();
    assert_eq!(again.chain_head().await.unwrap().seq, 4);
    let key = portcullis_core::evidence::Signer::ephemeral().expect("a key");
    let report = verify_store(&path, portcullis_core::evidence::PublicKey::of(&key), &[]).unwrap();
    assert!(report.intact(), "{:?}", report.problems);
    assert_eq!(report.unsealed, 4);
}

/// A record number someone else took is not skipped: the gateway's record
/// would be lost behind theirs, so the write fails.
#[tokio::test]
async fn a_record_number_taken_by_someone_else_fails_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("audit.db"))
        .await
        .unwrap();
    let a = session("alice");
    let mut ours = ChainHead::default();
    let mut theirs = ChainHead::default();
    let now = OffsetDateTime::now_utc();
    let forged: Arc<[_]> = [AuditEvent::SessionStarted(session("mallory"))]
        .iter()
        .map(|e| theirs.append(e, now))
        .collect();
    store.append(forged).await.unwrap();
    let genuine: Arc<[_]> = [AuditEvent::SessionStarted(a)]
        .iter()
        .map(|e| ours.append(e, now))
        .collect();
    let err = store.append(genuine).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("record 1 in the store is not the one the gateway wrote"),
        "{err}"
    );
}

/// Staged records are safe from a killed process: opening the store again
/// commits those that continue its chain, drops a line cut short, and sets
/// aside a file that does not continue it.
#[tokio::test]
async fn staged_records_are_committed_when_the_store_opens_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let a = session("alice");
    let mut head = ChainHead::default();
    let now = OffsetDateTime::now_utc();
    {
        let store = SqliteStore::open(&path).await.unwrap();
        let first: Arc<[_]> = [AuditEvent::SessionStarted(a.clone())]
            .iter()
            .map(|e| head.append(e, now))
            .collect();
        store.append(first).await.unwrap();
        let staged: Arc<[_]> = [
            AuditEvent::Command(statement(&a, 1)),
            AuditEvent::Command(statement(&a, 2)),
        ]
        .iter()
        .map(|e| head.append(e, now))
        .collect();
        store.stage(&staged).unwrap();
        // Killed here: staged, never committed.
    }
    let staged_file = dir.path().join("audit.db.staged-a");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&staged_file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"seq\":4,\"cut sho"))
        .unwrap();
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.chain_head().await.unwrap(), head);
    let detail = store.session(a.id).await.unwrap().unwrap();
    assert_eq!(detail.commands, vec![statement(&a, 1), statement(&a, 2)]);
    assert_eq!(std::fs::metadata(&staged_file).unwrap().len(), 0);
    drop(store);
    // A file that does not continue the chain is not used.
    let mut other = ChainHead::default();
    let foreign: Vec<_> = [AuditEvent::SessionStarted(session("mallory"))]
        .iter()
        .map(|e| other.append(e, now))
        .collect();
    std::fs::write(&staged_file, format!("{}\n", foreign[0].line)).unwrap();
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.chain_head().await.unwrap(), head);
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("rejected"));
    assert!(aside, "the foreign staging file was set aside");
}

/// Under steady load the committer never quite catches up with the file
/// being written: staging moves to the other file, so the first can be
/// emptied once committed, and a crash then still finds what only the
/// second holds.
#[tokio::test]
async fn staging_takes_turns_between_two_files_and_recovers_from_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let a = session("alice");
    let now = OffsetDateTime::now_utc();
    let mut head = ChainHead::default();
    let size = |side: &str| {
        std::fs::metadata(dir.path().join(format!("audit.db.staged-{side}")))
            .unwrap()
            .len()
    };
    {
        let store = SqliteStore::open(&path).await.unwrap();
        let mut in_a = vec![head.append(&AuditEvent::SessionStarted(a.clone()), now)];
        store.stage(&in_a).unwrap();
        let mut seq = 0;
        while size("a") < 4 << 20 {
            let batch: Vec<_> = (0..100)
                .map(|_| {
                    seq += 1;
                    head.append(&AuditEvent::Command(statement(&a, seq)), now)
                })
                .collect();
            store.stage(&batch).unwrap();
            in_a.extend(batch);
        }
        let more = head.append(&AuditEvent::Command(statement(&a, seq + 1)), now);
        store.stage(&[more]).unwrap();
        assert!(size("b") > 0, "staging moved to the second file");
        // The committer catches up with the first file only.
        store.append(in_a.into()).await.unwrap();
        assert_eq!(size("a"), 0);
        assert!(size("b") > 0);
        // Killed here.
    }
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.chain_head().await.unwrap(), head);
}

/// A write cut short by a full disk, then retried, leaves a fragment
/// (here cut inside a character) before whole lines: opening the store
/// still reads every whole record, and does not fail on the bytes.
#[tokio::test]
async fn a_fragment_in_a_staging_file_does_not_hide_the_records_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let a = session("alice");
    let now = OffsetDateTime::now_utc();
    let mut head = ChainHead::default();
    drop(SqliteStore::open(&path).await.unwrap());
    let mut first = statement(&a, 1);
    first.text = "select '日本'".into();
    let records: Vec<_> = [
        AuditEvent::SessionStarted(a.clone()),
        AuditEvent::Command(first),
    ]
    .iter()
    .map(|e| head.append(e, now))
    .collect();
    let second = records[1].line.as_bytes();
    let cut = second.iter().position(|b| *b >= 0x80).unwrap() + 1;
    let mut bytes = Vec::new();
    bytes.extend_from_slice(records[0].line.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(&second[..cut]);
    bytes.extend_from_slice(second);
    bytes.push(b'\n');
    std::fs::write(dir.path().join("audit.db.staged-a"), bytes).unwrap();
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.chain_head().await.unwrap(), head);
    assert_eq!(store.take_recovered().len(), 2);
}

#[tokio::test]
async fn sessions_filter_by_actor_and_by_whether_a_command_was_denied() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("audit.db"))
        .await
        .unwrap();
    let mut by_agent = session("alice");
    by_agent.actor = Some("agent-x".into());
    let plain = session("alice");
    let mut denied = statement(&plain, 1);
    denied.decision.allowed = false;
    append(
        &store,
        vec![
            AuditEvent::SessionStarted(by_agent.clone()),
            AuditEvent::SessionStarted(plain.clone()),
            AuditEvent::Command(statement(&by_agent, 1)),
            AuditEvent::Command(denied),
        ],
    )
    .await;
    let ids = |q: SessionQuery| {
        let store = &store;
        async move {
            let list = store.list_sessions(&q).await.unwrap();
            list.iter().map(|s| s.session.id).collect::<Vec<_>>()
        }
    };
    let agent = ids(SessionQuery {
        actor: Some("agent-x".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(agent, vec![by_agent.id]);
    let refused = ids(SessionQuery {
        decision: Some(DecisionFilter::Denied),
        ..Default::default()
    })
    .await;
    assert_eq!(refused, vec![plain.id]);
    let clean = ids(SessionQuery {
        decision: Some(DecisionFilter::Allowed),
        ..Default::default()
    })
    .await;
    assert_eq!(clean, vec![by_agent.id]);
}
