//! Prints the parse tree of a statement as the classifier sees it.
fn main() {
    let Some(sql) = std::env::args().nth(1) else {
        eprintln!("usage: dump SQL");
        std::process::exit(2);
    };
    match pg_query::parse(&sql) {
        Ok(p) => {
            for s in &p.protobuf.stmts {
                println!("{}", serde_json::to_string(&s.stmt).unwrap_or_default());
            }
        }
        Err(e) => eprintln!("{e}"),
    }
}
