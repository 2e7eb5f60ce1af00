use super::front::{render_params, PARAM_RECORD_LIMIT};
use super::*;
use portcullis_pg_decide::gate::StatementGate;
use portcullis_pg_wire::{FrontendMessage, Param};

fn permissive_gate() -> StatementGate {
    gate_with("permit(principal, action, resource);")
}

fn gate_with(policies: &str) -> StatementGate {
    gate_in(policies, &["public"])
}

fn gate_in(policies: &str, schemas: &[&str]) -> StatementGate {
    portcullis_pg_decide::gate::test_gate(policies, schemas)
}

fn feed(front: &mut FrontendTracker, back: &mut BackendTracker, msgs: &[FrontendMessage<'_>]) {
    let mut out = Vec::new();
    let mut gate = permissive_gate();
    for m in msgs {
        front.on_message(m, &mut out, &mut gate).unwrap();
    }
    back.push(out);
}

fn respond(back: &mut BackendTracker, msgs: &[(u8, &[u8])]) -> Vec<Stmt> {
    let mut done = Vec::new();
    for (tag, body) in msgs {
        let _ = back.on_message(*tag, body, &mut done);
    }
    done
}

#[test]
fn simple_multi_statement_query() {
    let (mut f, mut b) = (FrontendTracker::new(10), BackendTracker::default());
    feed(
        &mut f,
        &mut b,
        &[FrontendMessage::Query {
            sql: "select 1; select 2".into(),
        }],
    );
    let done = respond(
        &mut b,
        &[
            (b'T', b""),
            (b'D', b""),
            (b'C', b"SELECT 1\0"),
            (b'T', b""),
            (b'D', b""),
            (b'C', b"SELECT 1\0"),
        ],
    );
    assert!(done.is_empty(), "a query finishes at ReadyForQuery");
    let done = respond(&mut b, &[(b'Z', b"I")]);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].rows, 2);
    assert!(!b.in_flight());
}

#[test]
fn extended_pipeline_with_error_skips_to_sync() {
    let (mut f, mut b) = (FrontendTracker::new(10), BackendTracker::default());
    feed(
        &mut f,
        &mut b,
        &[
            FrontendMessage::Parse {
                name: "s1".into(),
                sql: "select $1".into(),
                param_types: vec![],
            },
            FrontendMessage::Bind {
                portal: "".into(),
                statement: "s1".into(),
                param_formats: vec![],
                params: vec![Param::Value(b"7")],
                result_formats: vec![],
            },
            FrontendMessage::Execute {
                portal: "".into(),
                max_rows: 0,
            },
            FrontendMessage::Sync,
            FrontendMessage::Parse {
                name: "".into(),
                sql: "bogus".into(),
                param_types: vec![],
            },
            FrontendMessage::Bind {
                portal: "".into(),
                statement: "".into(),
                param_formats: vec![],
                params: vec![],
                result_formats: vec![],
            },
            FrontendMessage::Execute {
                portal: "".into(),
                max_rows: 0,
            },
            FrontendMessage::Sync,
        ],
    );
    let done = respond(
        &mut b,
        &[
            (b'1', b""),
            (b'2', b""),
            (b'D', b""),
            (b'C', b"SELECT 1\0"),
            (b'Z', b"I"),
        ],
    );
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].kind, "execute");
    assert_eq!(&*done[0].text, "select $1");
    assert_eq!(done[0].params.as_deref(), Some(&vec![Some("7".to_owned())]));
    assert_eq!(done[0].rows, 1);

    let done = respond(
        &mut b,
        &[(b'E', b"SERROR\0C42601\0Msyntax error\0\0"), (b'Z', b"I")],
    );
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].kind, "parse");
    // The gate refuses unparseable text itself and puts it to the server's
    // parser instead: the server's own syntax error is what is recorded.
    assert_eq!(done[0].error.as_deref(), Some("42601: syntax error"));
    assert!(done[0].decision.policies.is_empty() && !done[0].decision.allowed);
    assert!(!b.in_flight());
}

#[test]
fn binary_params_are_hex_and_long_ones_cut() {
    let v = render_params(&[1], &[Param::Value(&[0xde, 0xad])]);
    assert_eq!(v, vec![Some("\\xdead".to_owned())]);
    let long = vec![b'a'; PARAM_RECORD_LIMIT + 5];
    let v = render_params(&[], &[Param::Value(&long)]);
    assert!(v[0]
        .as_deref()
        .unwrap()
        .ends_with(&format!("…({} bytes)", long.len())));
}

#[test]
fn fastpath_is_refused() {
    let mut f = FrontendTracker::new(1);
    let mut out = Vec::new();
    let mut g = permissive_gate();
    assert!(f
        .on_message(&FrontendMessage::FunctionCall { oid: 1 }, &mut out, &mut g)
        .is_err());
}

#[test]
fn prepared_statement_limit() {
    let mut f = FrontendTracker::new(1);
    let mut out = Vec::new();
    let mut g = permissive_gate();
    let parse = |name: &'static str| FrontendMessage::Parse {
        name: name.into(),
        sql: "select 1".into(),
        param_types: vec![],
    };
    f.on_message(&parse("a"), &mut out, &mut g).unwrap();
    f.on_message(&parse(""), &mut out, &mut g).unwrap();
    assert!(f.on_message(&parse("b"), &mut out, &mut g).is_err());
}

#[test]
fn a_denied_query_is_replaced_and_its_error_rewritten() {
    let mut f = FrontendTracker::new(10);
    let mut b = BackendTracker::default();
    let mut g = gate_with("permit(principal, action == Action::\"select\", resource);");
    let mut out = Vec::new();
    let fwd = f
        .on_message(
            &FrontendMessage::Query {
                sql: "delete from users".into(),
            },
            &mut out,
            &mut g,
        )
        .unwrap();
    match fwd {
        Forward::Instead(stand_in) => {
            assert!(String::from_utf8_lossy(stand_in.bytes()).contains("PORTCULLIS DENIED"))
        }
        Forward::AsIs(_) | Forward::Hold(_) => panic!("a denied statement went upstream"),
    }
    b.push(out);
    let mut done = Vec::new();
    let replaced = b
        .on_message(b'E', b"SERROR\0C42601\0Msyntax error\0\0", &mut done)
        .unwrap()
        .expect("rewritten");
    let text = String::from_utf8_lossy(&replaced).into_owned();
    assert!(
        text.contains("42501") && text.contains("delete on db/public.users denied"),
        "{text}"
    );
    let _ = b.on_message(b'Z', b"I", &mut done);
    assert_eq!(done.len(), 1);
    assert!(!done[0].decision.allowed);
    assert!(done[0]
        .error
        .as_deref()
        .unwrap_or("")
        .starts_with("42501: portcullis: delete"));
}

#[test]
fn a_prepared_statement_is_decided_again_when_the_search_path_changes() {
    let mut f = FrontendTracker::new(10);
    let mut g = gate_in(
        r#"permit(principal, action, resource);
           forbid(principal, action, resource == Table::"db/public.api_keys");"#,
        &["other"],
    );
    let mut out = Vec::new();
    let parse = FrontendMessage::Parse {
        name: "s1".into(),
        sql: "select * from api_keys".into(),
        param_types: vec![],
    };
    assert!(matches!(
        f.on_message(&parse, &mut out, &mut g).unwrap(),
        Forward::AsIs(_)
    ));
    let set = FrontendMessage::Query {
        sql: "set search_path = public".into(),
    };
    assert!(matches!(
        f.on_message(&set, &mut out, &mut g).unwrap(),
        Forward::AsIs(_)
    ));
    let bind = FrontendMessage::Bind {
        portal: "".into(),
        statement: "s1".into(),
        param_formats: vec![],
        params: vec![],
        result_formats: vec![],
    };
    match f.on_message(&bind, &mut out, &mut g).unwrap() {
        Forward::Instead(stand_in) => {
            assert!(String::from_utf8_lossy(stand_in.bytes()).contains("\u{1}portcullis denied"))
        }
        Forward::AsIs(_) | Forward::Hold(_) => {
            panic!("the statement now reads public.api_keys and must be refused at Bind")
        }
    }
}

#[test]
fn messages_after_an_extended_error_are_skipped_until_sync() {
    let (mut f, mut b) = (FrontendTracker::new(10), BackendTracker::default());
    feed(
        &mut f,
        &mut b,
        &[
            FrontendMessage::Parse {
                name: "".into(),
                sql: "select 1/0".into(),
                param_types: vec![],
            },
            FrontendMessage::Bind {
                portal: "".into(),
                statement: "".into(),
                param_formats: vec![],
                params: vec![],
                result_formats: vec![],
            },
            FrontendMessage::Execute {
                portal: "".into(),
                max_rows: 0,
            },
        ],
    );
    let done = respond(
        &mut b,
        &[
            (b'1', b""),
            (b'2', b""),
            (b'E', b"SERROR\0C22012\0Mdivision by zero\0\0"),
        ],
    );
    assert_eq!(done.len(), 1);
    // Sent after the error arrived: the server ignores it.
    feed(
        &mut f,
        &mut b,
        &[
            FrontendMessage::Query {
                sql: "delete from users".into(),
            },
            FrontendMessage::Sync,
        ],
    );
    let done = respond(&mut b, &[(b'Z', b"I")]);
    assert!(
        done.is_empty(),
        "the skipped query must not be recorded as run"
    );
    assert!(!b.in_flight());
}

/// A gate and trackers with every detector, for a principal who may do
/// everything but see values in clear.
fn masking_session() -> (StatementGate, FrontendTracker, BackendTracker) {
    use portcullis_core::masking::{Detector, HashKey, Masking, MaskingRules};
    let masking = std::sync::Arc::new(
        Masking::new(
            MaskingRules {
                detectors: Detector::ALL.to_vec(),
                ..MaskingRules::default()
            },
            HashKey::new(vec![3; 32]),
        )
        .unwrap(),
    );
    let gate = gate_with(
        r#"permit(principal, action, resource);
           forbid(principal, action == Action::"unmask", resource);"#,
    )
    .with_masking(masking.clone());
    (
        gate,
        FrontendTracker::new(10),
        BackendTracker::with_masking(masking),
    )
}

/// A RowDescription of one text column (type 25) of an unknown table.
fn note_description() -> Vec<u8> {
    let mut description = Vec::new();
    description.extend_from_slice(&1i16.to_be_bytes());
    description.extend_from_slice(b"note\0");
    description.extend_from_slice(&0u32.to_be_bytes());
    description.extend_from_slice(&0i16.to_be_bytes());
    description.extend_from_slice(&25u32.to_be_bytes());
    description.extend_from_slice(&(-1i16).to_be_bytes());
    description.extend_from_slice(&(-1i32).to_be_bytes());
    description.extend_from_slice(&0i16.to_be_bytes());
    description
}

/// A row masking cannot read (here: more values than its description
/// has columns) is never passed on, and the client hears 42501 with what
/// went wrong, not a protocol violation.
#[test]
fn a_row_that_cannot_be_masked_is_refused_with_42501() {
    let (mut gate, mut front, mut back) = masking_session();
    let mut out = Vec::new();
    front
        .on_message(
            &FrontendMessage::Query {
                sql: "select note from t".into(),
            },
            &mut out,
            &mut gate,
        )
        .unwrap();
    back.push(out);
    let description = note_description();
    let mut done = Vec::new();
    back.on_message(b'T', &description, &mut done).unwrap();
    let mut row = BytesMut::new();
    portcullis_pg_wire::rows::encode_data_row(&mut row, [Some(&b"a"[..]), Some(&b"b"[..])]);
    let err = back.on_message(b'D', &row[5..], &mut done).unwrap_err();
    assert_eq!(err.sqlstate(), "42501", "{err}");
    assert!(
        err.to_string()
            .starts_with("portcullis: result withheld: a result row could not be masked"),
        "{err}"
    );
}

/// A row reaches the client only through the gate of a decided statement:
/// one that no statement's description covers is refused, even with
/// masking off, and an Execute's rows with no description pass only when
/// nothing needs masking.
#[test]
fn a_row_no_decided_statement_covers_is_refused() {
    let mut back = BackendTracker::default();
    let mut done = Vec::new();
    let mut row = BytesMut::new();
    portcullis_pg_wire::rows::encode_data_row(&mut row, [Some(&b"secret"[..])]);
    let err = back.on_message(b'D', &row[5..], &mut done).unwrap_err();
    assert_eq!(err.sqlstate(), "42501", "{err}");

    // With masking off, an Execute's rows need no description.
    let (mut f, mut b) = (FrontendTracker::new(10), BackendTracker::default());
    feed(
        &mut f,
        &mut b,
        &[
            FrontendMessage::Parse {
                name: "".into(),
                sql: "select 1".into(),
                param_types: vec![],
            },
            FrontendMessage::Bind {
                portal: "".into(),
                statement: "".into(),
                param_formats: vec![],
                params: vec![],
                result_formats: vec![],
            },
            FrontendMessage::Execute {
                portal: "".into(),
                max_rows: 0,
            },
            FrontendMessage::Sync,
        ],
    );
    let mut done = Vec::new();
    for (tag, body) in [(b'1', &b""[..]), (b'2', b"")] {
        b.on_message(tag, body, &mut done).unwrap();
    }
    assert_eq!(b.on_message(b'D', &row[5..], &mut done).unwrap(), None);
}

/// Every masked Execute of a prepared statement, the first and every
/// later one, goes after the gateway's own Describe, whose answer the
/// client never sees and whose columns mask the rows: the server may have
/// re-planned the statement against other relations in between, and only
/// its description of now says where the rows come from.
#[test]
fn every_masked_execute_is_described_first() {
    let (mut gate, mut front, mut back) = masking_session();
    let description = note_description();
    let mut row = BytesMut::new();
    portcullis_pg_wire::rows::encode_data_row(&mut row, [Some(&b"mail me at a@b.example"[..])]);
    let parse = FrontendMessage::Parse {
        name: "s1".into(),
        sql: "select note from t".into(),
        param_types: vec![],
    };
    let mut done = Vec::new();
    for round in 0..3 {
        let answers = back.take_answered();
        front.resolve(&answers, &mut gate);
        let mut msgs = Vec::new();
        if round == 0 {
            msgs.push(parse.clone());
        }
        msgs.extend([
            FrontendMessage::Bind {
                portal: "".into(),
                statement: "s1".into(),
                param_formats: vec![],
                params: vec![],
                result_formats: vec![],
            },
            FrontendMessage::Execute {
                portal: "".into(),
                max_rows: 0,
            },
            FrontendMessage::Sync,
        ]);
        let mut out = Vec::new();
        let mut replaced = 0;
        for m in &msgs {
            if let Forward::Instead(_) = front.on_message(m, &mut out, &mut gate).unwrap() {
                replaced += 1;
            }
        }
        assert_eq!(replaced, 1, "round {round}: the Execute goes out described");
        assert!(out.iter().any(|p| matches!(p, Pending::MaskDescribe)));
        back.push(out);
        if round == 0 {
            back.on_message(b'1', b"", &mut done).unwrap();
        }
        back.on_message(b'2', b"", &mut done).unwrap();
        let ours = back.on_message(b'T', &description, &mut done).unwrap();
        assert_eq!(ours.map(|b| b.len()), Some(0), "not forwarded");
        let masked = back.on_message(b'D', &row[5..], &mut done).unwrap();
        assert!(
            masked.is_some(),
            "round {round}: masked through the description"
        );
        for (tag, body) in [(b'C', &b"SELECT 1\0"[..]), (b'Z', b"I")] {
            back.on_message(tag, body, &mut done).unwrap();
        }
    }
}
