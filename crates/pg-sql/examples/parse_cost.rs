//! Where an uncached analysis spends its time: PostgreSQL's parser alone
//! (measured through `fingerprint`, which parses and walks in C), the
//! protobuf round trip `pg_query::parse` adds, the conversion to a generic
//! tree, and the whole `analyze`. Run with
//! `cargo run --release -p portcullis-pg-sql --example parse_cost`.

use std::hint::black_box;
use std::time::{Duration, Instant};

fn per_call(n: u32, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / n
}

fn main() {
    let statements = [
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
        "SELECT o.id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status = $1 ORDER BY o.id LIMIT 50",
    ];
    let n = 20_000;
    for sql in statements {
        let parsed = pg_query::parse(sql).expect("parses");
        let fingerprint = per_call(n, || {
            black_box(pg_query::fingerprint(sql).ok());
        });
        let scan = per_call(n, || {
            black_box(pg_query::scan(sql).ok());
        });
        let parse = per_call(n, || {
            black_box(pg_query::parse(sql).ok());
        });
        let tree = per_call(n, || {
            black_box(serde_json::to_value(&parsed.protobuf.stmts[0].stmt).ok());
        });
        let analyze = per_call(n, || {
            black_box(portcullis_pg_sql::analyze(sql).ok());
        });
        println!(
            "{sql:.50}…\n  fingerprint {fingerprint:?}  scan {scan:?}  parse (protobuf) {parse:?}  to tree {tree:?}  analyze {analyze:?}"
        );
    }
}
