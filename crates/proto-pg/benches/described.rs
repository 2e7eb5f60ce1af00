//! The row-description cache: the session's own cost (both trackers) of
//! one masked Execute of a prepared statement, Bind, Execute and Sync
//! through their answers, when its description is cached against when
//! the gateway must ask for it (a Describe added before the Execute and
//! its RowDescription read). What the cache saves beyond this, one
//! message each way and the server's answer, is in `bench/run`.

// criterion_main! generates an undocumented main.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_core::masking::{Detector, HashKey, Masking, MaskingRules};
use portcullis_pg_decide::gate::test_gate;
use portcullis_pg_decide::StatementGate;
use portcullis_pg_wire::FrontendMessage;
use portcullis_proto_pg::tracker::{BackendTracker, FrontendTracker, Learned};

fn description() -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&2i16.to_be_bytes());
    for (name, table, column) in [(&b"id\0"[..], 16_400u32, 1i16), (b"note\0", 16_400, 2)] {
        d.extend_from_slice(name);
        d.extend_from_slice(&table.to_be_bytes());
        d.extend_from_slice(&column.to_be_bytes());
        d.extend_from_slice(&25u32.to_be_bytes());
        d.extend_from_slice(&(-1i16).to_be_bytes());
        d.extend_from_slice(&(-1i32).to_be_bytes());
        d.extend_from_slice(&0i16.to_be_bytes());
    }
    d
}

struct Session {
    gate: StatementGate,
    front: FrontendTracker,
    back: BackendTracker,
    out: Vec<portcullis_proto_pg::tracker::Pending>,
    done: Vec<portcullis_proto_pg::tracker::Stmt>,
}

impl Session {
    fn new() -> Self {
        let masking = Arc::new(
            Masking::new(
                MaskingRules {
                    detectors: Detector::ALL.to_vec(),
                    ..MaskingRules::default()
                },
                HashKey::new(vec![3; 32]),
            )
            .unwrap(),
        );
        let gate = test_gate(
            r#"permit(principal, action, resource);
               forbid(principal, action == Action::"unmask", resource);"#,
            &["public"],
        )
        .with_masking(masking.clone());
        let mut s = Self {
            gate,
            front: FrontendTracker::new(100),
            back: BackendTracker::with_masking(masking),
            out: Vec::new(),
            done: Vec::new(),
        };
        let parse = FrontendMessage::Parse {
            name: "s1".into(),
            sql: "select id, note from t where id = $1".into(),
            param_types: vec![],
        };
        s.front.on_message(&parse, &mut s.out, &mut s.gate).unwrap();
        s.back.push(s.out.drain(..));
        s.back.on_message(b'1', b"", &mut s.done).unwrap();
        s
    }

    /// One Bind/Execute/Sync and its answers: a row, its completion.
    fn execute(&mut self, description: &[u8], row: &[u8]) {
        let answers = self.back.take_answered();
        self.front.resolve(&answers, &mut self.gate);
        self.front.learn(self.back.take_learned());
        for m in [
            FrontendMessage::Bind {
                portal: "".into(),
                statement: "s1".into(),
                param_formats: vec![],
                params: vec![portcullis_pg_wire::Param::Value(b"7")],
                result_formats: vec![],
            },
            FrontendMessage::Execute {
                portal: "".into(),
                max_rows: 0,
            },
            FrontendMessage::Sync,
        ] {
            self.front
                .on_message(&m, &mut self.out, &mut self.gate)
                .unwrap();
        }
        let described = self
            .out
            .iter()
            .any(|p| matches!(p, portcullis_proto_pg::tracker::Pending::MaskDescribe(_)));
        self.back.push(self.out.drain(..));
        self.back.on_message(b'2', b"", &mut self.done).unwrap();
        if described {
            self.back
                .on_message(b'T', description, &mut self.done)
                .unwrap();
        }
        self.back.on_message(b'D', row, &mut self.done).unwrap();
        self.back
            .on_message(b'C', b"SELECT 1\0", &mut self.done)
            .unwrap();
        self.back.on_message(b'Z', b"I", &mut self.done).unwrap();
        self.done.clear();
    }
}

fn bench(c: &mut Criterion) {
    let description = description();
    let mut row = BytesMut::new();
    portcullis_pg_wire::rows::encode_data_row(
        &mut row,
        [
            Some(&b"7"[..]),
            Some(&b"shipped to the customer on time"[..]),
        ],
    );
    let row = &row[5..];
    let mut g = c.benchmark_group("masked prepared execute");
    let mut cached = Session::new();
    g.bench_function("description cached", |b| {
        b.iter(|| cached.execute(&description, row))
    });
    let mut asked = Session::new();
    g.bench_function("description asked for", |b| {
        b.iter(|| {
            asked.front.learn(vec![Learned::Forget]);
            asked.execute(&description, row)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
