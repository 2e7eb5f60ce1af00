use super::*;

fn feed(front: &mut FrontendTracker, back: &mut BackendTracker, msgs: &[FrontendMessage<'_>]) {
    let mut out = Vec::new();
    for m in msgs {
        front.on_message(m, &mut out).unwrap();
    }
    back.push(out);
}

fn respond(back: &mut BackendTracker, msgs: &[(u8, &[u8])]) -> Vec<Stmt> {
    let mut done = Vec::new();
    for (tag, body) in msgs {
        back.on_message(*tag, body, &mut done);
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
            sql: "select 1; select 2",
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
                name: "s1",
                sql: "select $1",
                param_types: vec![],
            },
            FrontendMessage::Bind {
                portal: "",
                statement: "s1",
                param_formats: vec![],
                params: vec![Param::Value(b"7")],
                result_formats: vec![],
            },
            FrontendMessage::Execute {
                portal: "",
                max_rows: 0,
            },
            FrontendMessage::Sync,
            FrontendMessage::Parse {
                name: "",
                sql: "bogus",
                param_types: vec![],
            },
            FrontendMessage::Bind {
                portal: "",
                statement: "",
                param_formats: vec![],
                params: vec![],
                result_formats: vec![],
            },
            FrontendMessage::Execute {
                portal: "",
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
    assert_eq!(done[0].error.as_deref(), Some("42601: syntax error"));
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
    assert!(f
        .on_message(&FrontendMessage::FunctionCall { oid: 1 }, &mut out)
        .is_err());
}

#[test]
fn prepared_statement_limit() {
    let mut f = FrontendTracker::new(1);
    let mut out = Vec::new();
    f.on_message(
        &FrontendMessage::Parse {
            name: "a",
            sql: "x",
            param_types: vec![],
        },
        &mut out,
    )
    .unwrap();
    f.on_message(
        &FrontendMessage::Parse {
            name: "",
            sql: "x",
            param_types: vec![],
        },
        &mut out,
    )
    .unwrap();
    assert!(f
        .on_message(
            &FrontendMessage::Parse {
                name: "b",
                sql: "x",
                param_types: vec![]
            },
            &mut out
        )
        .is_err());
}
