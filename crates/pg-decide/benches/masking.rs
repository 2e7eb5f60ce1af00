//! Masking cost: detector scanning throughput on mixed text (every
//! detector in one automaton), and the cost per result row of a
//! `RowMasker` (a row of id, classified e-mail, name and a note, in text
//! format), against a row with nothing to mask.

// criterion_main! generates an undocumented main.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portcullis_core::masking::{
    Detector, Finding, HashKey, MaskCounts, Masking, MaskingRules, Scanner, SensitiveColumn,
    Strategy,
};
use portcullis_pg_decide::catalog::ViewCatalog;
use portcullis_pg_decide::masker::RowMasker;
use portcullis_pg_decide::GateDecision;
use portcullis_pg_wire::rows::{encode_data_row, FieldDescription};

/// About 1 MiB of log-like text: words, numbers, dates, and now and then
/// an e-mail address or a card number.
fn mixed_text() -> Vec<u8> {
    let words = [
        "order",
        "shipped",
        "to",
        "customer",
        "on",
        "2026-11-28",
        "total",
        "42.50",
        "EUR",
        "status",
        "pending",
        "ref",
        "A7F3-99",
        "note:",
        "call",
        "back",
        "tomorrow",
        "id",
        "550e8400-e29b-41d4-a716-446655440000",
        "qty",
        "3",
    ];
    let mut out = Vec::with_capacity(1 << 20);
    let mut i = 0usize;
    while out.len() < (1 << 20) {
        if i.is_multiple_of(97) {
            out.extend_from_slice(b"person42@example.com ");
        } else if i.is_multiple_of(211) {
            out.extend_from_slice(b"4111 1111 1111 1111 ");
        } else {
            out.extend_from_slice(words[i % words.len()].as_bytes());
            out.push(b' ');
        }
        i += 1;
    }
    out
}

fn scanning(c: &mut Criterion) {
    let text = mixed_text();
    let scanner = Scanner::new(&Detector::ALL).unwrap();
    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Bytes(text.len() as u64));
    let mut cache = scanner.cache();
    g.bench_function("all-detectors-1MiB", |b| {
        let mut out: Vec<Finding> = Vec::new();
        b.iter(|| {
            out.clear();
            scanner.scan_with(&mut cache, &text, &mut out);
            assert!(!out.is_empty());
        })
    });
    // Many short values, as in a result set.
    let values: Vec<&[u8]> = text.chunks(40).collect();
    g.bench_function("all-detectors-40-byte-values", |b| {
        let mut out: Vec<Finding> = Vec::new();
        b.iter(|| {
            for v in &values {
                out.clear();
                scanner.scan_with(&mut cache, v, &mut out);
            }
        })
    });
    g.finish();
}

fn rows(c: &mut Criterion) {
    let email = Arc::new(SensitiveColumn::new(
        "db",
        "public",
        "people",
        "email",
        "email",
        Strategy::Partial,
    ));
    let masking = Arc::new(
        Masking::new(
            MaskingRules {
                detectors: Detector::ALL.to_vec(),
                columns: vec![email],
                ..MaskingRules::default()
            },
            HashKey::new(vec![3; 32]),
        )
        .unwrap(),
    );
    let catalog = Arc::new(ViewCatalog::from_rows([
        ["", "16400", "or", "public", "people"],
        ["", "16400", "a", "id", "1:1"],
        ["", "16400", "a", "email", "2:2"],
        ["", "16400", "a", "name", "3:3"],
        ["", "16400", "a", "note", "4:4"],
        ["", "16401", "or", "public", "orders"],
        ["", "16401", "a", "id", "1:1"],
        ["", "16401", "a", "email", "2:2"],
        ["", "16401", "a", "name", "3:3"],
        ["", "16401", "a", "note", "4:4"],
    ]));
    // Plans come from the gate, as in the gateway: a principal that may
    // not unmask, over a catalog holding both tables.
    let mut gate = portcullis_pg_decide::gate::test_gate(
        r#"permit(principal, action, resource);
           forbid(principal, action == Action::"unmask", resource);"#,
        &["public"],
    )
    .with_views(catalog)
    .with_masking(masking);
    let mut plan_of = |sql: &str| match gate.check(sql) {
        GateDecision::Allow(a) => a.mask().cloned().expect("a mask plan"),
        other => panic!("{sql}: {other:?}"),
    };
    let plan = plan_of("select id, email, name, note from people");
    let plain_plan = plan_of("select id, email, name, note from orders");
    let field = |column: i16, type_oid: u32| FieldDescription {
        table_oid: 16400,
        column,
        type_oid,
        format: 0,
    };
    let fields = [field(1, 23), field(2, 25), field(3, 25), field(4, 25)];
    let mut masker = RowMasker::new(&plan, &fields).unwrap();
    let row = |vals: [&[u8]; 4]| {
        let mut b = BytesMut::new();
        encode_data_row(&mut b, vals.iter().map(|v| Some(*v)));
        b[5..].to_vec()
    };
    let masked = row([
        b"42",
        b"person42@example.com",
        b"Zelda Quokkaworth",
        b"left a note about the parcel",
    ]);
    let mut g = c.benchmark_group("row");
    g.bench_function("classified-email+3-scanned", |b| {
        let mut counts = MaskCounts::default();
        let mut scratch = plan.masking().scratch();
        b.iter(|| {
            assert!(masker
                .mask_row(&masked, &mut counts, &mut scratch)
                .unwrap()
                .is_some())
        })
    });
    // Only the scan: a table with no classified column.
    let plain_fields = [
        FieldDescription {
            table_oid: 16401,
            ..field(1, 23)
        },
        FieldDescription {
            table_oid: 16401,
            ..field(2, 25)
        },
        FieldDescription {
            table_oid: 16401,
            ..field(3, 25)
        },
        FieldDescription {
            table_oid: 16401,
            ..field(4, 25)
        },
    ];
    let mut scan_only = RowMasker::new(&plain_plan, &plain_fields).unwrap();
    let clean = row([
        b"42",
        b"parcel 7 shipped",
        b"Zelda Quokkaworth",
        b"left a note about the parcel",
    ]);
    g.bench_function("clean-row-3-scanned", |b| {
        let mut counts = MaskCounts::default();
        let mut scratch = plain_plan.masking().scratch();
        b.iter(|| {
            assert!(scan_only
                .mask_row(&clean, &mut counts, &mut scratch)
                .unwrap()
                .is_none())
        })
    });
    g.finish();
}

criterion_group!(benches, scanning, rows);
criterion_main!(benches);
