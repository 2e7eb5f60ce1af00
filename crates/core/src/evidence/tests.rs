use time::OffsetDateTime;

use super::verify::{verify, Report, StoredRecord};
use super::*;
use crate::audit::{AuditEvent, SessionEnd};

fn event(n: u64) -> AuditEvent {
    AuditEvent::SessionEnded(SessionEnd {
        id: Uuid::from_u128(u128::from(n)),
        ended_at: OffsetDateTime::UNIX_EPOCH,
        reason: format!("reason {n}"),
    })
}

fn stored(r: &ChainRecord) -> StoredRecord {
    StoredRecord {
        seq: r.seq,
        kind: r.kind.to_owned(),
        session_id: r.session_id.map(|s| s.to_string()),
        user: r.user.clone(),
        connection: r.connection.clone(),
        line: r.line.clone(),
        hash: hex::encode(r.hash),
    }
}

/// Ten records with a checkpoint after the fifth and a final one after
/// the tenth.
fn chain(signer: &Signer) -> (Vec<StoredRecord>, Vec<SignedCheckpoint>) {
    let mut head = ChainHead::default();
    let mut records = Vec::new();
    let mut checkpoints: Vec<SignedCheckpoint> = Vec::new();
    for n in 1..=10 {
        records.push(stored(&head.append(&event(n), OffsetDateTime::UNIX_EPOCH)));
        if n == 5 || n == 10 {
            let number = checkpoints.len() as u64;
            let c = signer.checkpoint(
                checkpoints.last(),
                number,
                head,
                OffsetDateTime::UNIX_EPOCH,
                n == 10,
            );
            checkpoints.push(c);
        }
    }
    (records, checkpoints)
}

fn check(signer: &Signer, records: &[StoredRecord], checkpoints: &[SignedCheckpoint]) -> Report {
    verify::<_, _, ()>(
        PublicKey::of(signer),
        records.iter().cloned().map(Ok),
        checkpoints.iter().cloned(),
    )
    .expect("no read errors")
}

fn first_problem(report: &Report) -> (u64, String) {
    let p = report.problems.first().expect("a problem is found");
    (p.record, p.what.clone())
}

#[test]
fn an_untouched_chain_verifies_sealed() {
    let signer = Signer::ephemeral().expect("a key");
    let (records, checkpoints) = chain(&signer);
    let report = check(&signer, &records, &checkpoints);
    assert!(report.intact(), "{:?}", report.problems);
    assert_eq!(
        (report.records, report.checkpoints, report.unsealed),
        (10, 2, 0)
    );
    assert!(report.last_checkpoint.is_some_and(|c| c.is_final));
}

#[test]
fn an_edited_record_is_named() {
    let signer = Signer::ephemeral().expect("a key");
    let (mut records, checkpoints) = chain(&signer);
    records[3].line = records[3].line.replace("reason 4", "reason X");
    let (at, what) = first_problem(&check(&signer, &records, &checkpoints));
    assert_eq!(at, 4);
    assert!(what.contains("edited"), "{what}");
}

#[test]
fn a_rehashed_edit_breaks_the_link_and_a_relinked_chain_the_checkpoint() {
    let signer = Signer::ephemeral().expect("a key");
    let (mut records, checkpoints) = chain(&signer);
    records[3].line = records[3].line.replace("reason 4", "reason X");
    records[3].hash = hex::encode(Sha256::digest(records[3].line.as_bytes()));
    assert_eq!(first_problem(&check(&signer, &records, &checkpoints)).0, 5);
    // Rebuild every link after it as an attacker with the store would.
    let mut head = ChainHead {
        seq: 3,
        hash: hex::decode(&records[2].hash).unwrap().try_into().unwrap(),
    };
    for r in records.iter_mut().skip(3) {
        let body_at = r.line.find("\"body\":").unwrap();
        let prefix_end = r.line.find("\"prev\":\"").unwrap() + 8;
        r.line = format!(
            "{}{}\",{}",
            &r.line[..prefix_end],
            hex::encode(head.hash),
            &r.line[body_at..]
        );
        r.hash = hex::encode(Sha256::digest(r.line.as_bytes()));
        head.hash = Sha256::digest(r.line.as_bytes()).into();
    }
    let (at, what) = first_problem(&check(&signer, &records, &checkpoints));
    assert_eq!(at, 5);
    assert!(what.contains("rewritten"), "{what}");
}

#[test]
fn deleted_reordered_and_inserted_records_are_named() {
    let signer = Signer::ephemeral().expect("a key");
    let (records, checkpoints) = chain(&signer);
    let mut deleted = records.clone();
    deleted.remove(6);
    let (at, what) = first_problem(&check(&signer, &deleted, &checkpoints));
    assert_eq!(at, 8);
    assert!(what.contains("missing"), "{what}");

    let mut reordered = records.clone();
    reordered.swap(2, 3);
    let (s2, s3) = (reordered[2].seq, reordered[3].seq);
    reordered[2].seq = s3;
    reordered[3].seq = s2;
    assert_eq!(
        first_problem(&check(&signer, &reordered, &checkpoints)).0,
        3
    );

    let mut inserted = records.clone();
    let mut forged = inserted[1].clone();
    forged.line = forged.line.replace("reason 2", "forged");
    inserted.insert(2, forged);
    for (i, r) in inserted.iter_mut().enumerate() {
        r.seq = i as u64 + 1;
    }
    assert_eq!(first_problem(&check(&signer, &inserted, &checkpoints)).0, 3);
}

#[test]
fn a_truncated_tail_is_caught_by_the_final_checkpoint() {
    let signer = Signer::ephemeral().expect("a key");
    let (mut records, checkpoints) = chain(&signer);
    records.truncate(8);
    let (at, what) = first_problem(&check(&signer, &records, &checkpoints));
    assert_eq!(at, 10);
    assert!(what.contains("truncated"), "{what}");
    // Without the final checkpoint the tail shows as unsealed.
    let report = check(&signer, &records, &checkpoints[..1]);
    assert!(report.intact());
    assert_eq!(report.unsealed, 3);
    assert!(!report.last_checkpoint.unwrap().is_final);
}

#[test]
fn a_checkpoint_signed_by_another_key_is_refused() {
    let signer = Signer::ephemeral().expect("a key");
    let (records, checkpoints) = chain(&signer);
    let other = Signer::ephemeral().expect("a key");
    let (_, what) = first_problem(&check(&other, &records, &checkpoints));
    assert!(what.contains("not signed"), "{what}");
}

#[test]
fn retention_behind_a_checkpoint_verifies_and_deletion_without_it_does_not() {
    let signer = Signer::ephemeral().expect("a key");
    let (records, checkpoints) = chain(&signer);
    let mut head = ChainHead {
        seq: 10,
        hash: hex::decode(&records[9].hash).unwrap().try_into().unwrap(),
    };
    // The next run starts, then prunes behind checkpoint 1.
    let start = AuditEvent::note(
        "gateway_started",
        serde_json::json!({ "previous_stop": "clean" }),
    );
    let note = AuditEvent::note(
        "retention",
        serde_json::json!({ "through": 5, "anchor_checkpoint": 1 }),
    );
    let mut kept: Vec<StoredRecord> = records[5..].to_vec();
    kept.push(stored(&head.append(&start, OffsetDateTime::UNIX_EPOCH)));
    kept.push(stored(&head.append(&note, OffsetDateTime::UNIX_EPOCH)));
    let last = signer.checkpoint(
        checkpoints.last(),
        2,
        head,
        OffsetDateTime::UNIX_EPOCH,
        true,
    );
    let anchored = [checkpoints[0].clone(), checkpoints[1].clone(), last.clone()];
    let report = check(&signer, &kept, &anchored);
    assert!(report.intact(), "{:?}", report.problems);
    assert_eq!(report.first_record, Some(6));

    let without_note = &kept[..kept.len() - 1];
    let report = check(&signer, without_note, &checkpoints);
    assert!(!report.intact());
    assert_eq!(first_problem(&report).0, 6);
}

#[test]
fn a_record_after_a_final_checkpoint_must_be_a_gateway_start() {
    let signer = Signer::ephemeral().expect("a key");
    let (mut records, checkpoints) = chain(&signer);
    let mut head = ChainHead {
        seq: 10,
        hash: hex::decode(&records[9].hash).unwrap().try_into().unwrap(),
    };
    records.push(stored(&head.append(&event(99), OffsetDateTime::UNIX_EPOCH)));
    let last = signer.checkpoint(
        checkpoints.last(),
        2,
        head,
        OffsetDateTime::UNIX_EPOCH,
        true,
    );
    let sealed = [checkpoints[0].clone(), checkpoints[1].clone(), last];
    let (at, what) = first_problem(&check(&signer, &records, &sealed));
    assert_eq!(at, 11);
    assert!(what.contains("only a gateway's start"), "{what}");
}
