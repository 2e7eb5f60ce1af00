//! What a PostgreSQL statement would do, read from PostgreSQL's own parse tree.
//!
//! [`analyze`] parses SQL with `pg_query` (the server's grammar, compiled
//! in) and lists every (action, object) pair the statement implies: tables
//! read or written, functions run, DDL and administration, plus the session
//! changes (search_path, prepared statements) the caller must track.
//!
//! The walk is generic over the serialized parse tree, so every node is
//! visited whatever its type: a relation or function call in a node kind we
//! never special-cased is still found. What cannot be parsed or classified
//! is an error, and callers deny it (fail closed). No I/O happens here.

mod facts;
mod functions;
mod statement;
mod walk;

pub use facts::{
    Access, Analysis, Effect, Name, Object, SqlAction, StatementFacts, Unclassifiable,
};
pub use statement::is_safe_client_encoding;

/// Parses `sql` and lists what each statement in it would do.
pub fn analyze(sql: &str) -> Result<Analysis, Unclassifiable> {
    let parsed = pg_query::parse(sql).map_err(|e| Unclassifiable::Parse(e.to_string()))?;
    let mut statements = Vec::with_capacity(parsed.protobuf.stmts.len());
    for raw in &parsed.protobuf.stmts {
        let tree =
            serde_json::to_value(&raw.stmt).map_err(|e| Unclassifiable::Parse(e.to_string()))?;
        statements.push(statement::classify(&tree)?);
    }
    Ok(Analysis { statements })
}

#[cfg(test)]
mod tests;
