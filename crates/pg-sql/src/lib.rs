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

mod builtins;
mod facts;
mod outputs;
mod quick_key;
mod settings;
mod statement;
mod walk;

pub use builtins::{classify_builtin, is_builtin_safe, BuiltinClass, Volatility};
pub use facts::{
    Access, Analysis, Effect, EncodingChange, Name, Object, SqlAction, StatementFacts,
    Unclassifiable,
};
pub use outputs::{CopyOut, OutputColumn, OutputFacts};
pub use quick_key::{check_against_scanner, quick_literal_free_key};
pub use settings::split_search_path;
pub use statement::is_safe_client_encoding;
pub use walk::is_content_catalog;

/// The deepest nesting [`analyze`] takes, as [`nesting_estimate`] counts
/// it. The parse tree's protobuf is refused past 100 messages anyway
/// (prost's recursion limit: about 50 joins or operators in a chain), so
/// no statement the gateway could analyze is refused by this bound; the
/// point of it is the step before prost:
/// libpg_query writes the tree out by C recursion with no depth check, so
/// a statement of thousands of joins or operators overflows the thread's
/// stack and aborts the whole gateway (pganalyze/pg_query#339). Refused
/// here, by a scan that does not recurse, it is one denied statement.
pub const MAX_NESTING: usize = 300;

/// The most tokens [`analyze`] takes in one text. The parse tree's depth
/// is bounded by its tokens, and so is the stack libpg_query is given; a
/// bulk INSERT of 65,535 parameters (PostgreSQL's most) is about 200,000.
pub const MAX_TOKENS: usize = 300_000;

/// Stack given to libpg_query per token of the text. The estimate above
/// does not see every shape (a `BETWEEN … AND NOT` chain hides behind its
/// `AND`), so the stack is the guarantee: no tree is deeper than its
/// tokens, and the deepest shapes measured took under 2 KiB of stack per
/// token in a debug build. Only pages the recursion touches are used.
const STACK_PER_TOKEN: usize = 8 << 10;

/// Texts of fewer tokens run on the caller's stack (every gateway thread
/// has at least 2 MiB).
const INLINE_TOKENS: usize = 128;

/// Parses `sql` and lists what each statement in it would do.
pub fn analyze(sql: &str) -> Result<Analysis, Unclassifiable> {
    let (depth, tokens) = nesting_and_tokens(sql);
    if tokens > MAX_TOKENS {
        return Err(Unclassifiable::Unsafe(format!(
            "the statement is too long to analyze ({tokens} tokens; the gateway takes at most {MAX_TOKENS})"
        )));
    }
    if depth > MAX_NESTING {
        return Err(Unclassifiable::Unsafe(format!(
            "the statement nests too deeply to analyze (about {depth} levels; the gateway takes at most {MAX_NESTING})"
        )));
    }
    let parse = || pg_query::parse(sql);
    let parsed = if tokens <= INLINE_TOKENS {
        parse()
    } else {
        stacker::grow((1 << 20) + tokens * STACK_PER_TOKEN, parse)
    };
    let parsed = parsed.map_err(|e| {
        let message = e.to_string();
        // Deeper than prost decodes: refused here, not sent to the server
        // as a syntax probe (its errors could tell what exists).
        if message.contains("recursion limit reached") {
            Unclassifiable::Unsafe(
                "the statement nests too deeply to analyze (its parse tree is over 100 levels deep)"
                    .into(),
            )
        } else {
            Unclassifiable::Parse(message)
        }
    })?;
    let mut statements = Vec::with_capacity(parsed.protobuf.stmts.len());
    for raw in &parsed.protobuf.stmts {
        let tree =
            serde_json::to_value(&raw.stmt).map_err(|e| Unclassifiable::Parse(e.to_string()))?;
        statements.push(statement::classify(&tree)?);
    }
    Ok(Analysis { statements })
}

/// An upper estimate of how deep `sql`'s parse tree nests, from PostgreSQL's
/// own scanner (which does not recurse). Brackets, parentheses and
/// `CASE … END` open a level; within a level, every token that can link an
/// expression or a join to the next (operators, keywords, `::`, `.`) adds
/// one, since left-associative chains (`a + b + c`, `t0 JOIN t1 … JOIN tN`)
/// nest one node per link. Commas, `AND`, `OR`, `WHEN`, `THEN`, `ELSE` and
/// `;` separate siblings (lists, the flat lists PostgreSQL makes of `AND`
/// and `OR` chains, a `CASE`'s branches), so a level's count starts again
/// after them. Names and constants add
/// nothing. A text the scanner rejects is left to the parser's own error.
pub fn nesting_estimate(sql: &str) -> usize {
    nesting_and_tokens(sql).0
}

/// [`nesting_estimate`], and how many tokens the text has.
fn nesting_and_tokens(sql: &str) -> (usize, usize) {
    use pg_query::protobuf::Token;
    let Ok(scanned) = pg_query::scan(sql) else {
        // The scanner's refusal: the parser refuses it as well, at once.
        return (0, 0);
    };
    // The count of each open level; `sum` is their total.
    let mut levels: Vec<usize> = vec![0];
    let mut sum = 0usize;
    let mut deepest = 0usize;
    for t in &scanned.tokens {
        match Token::try_from(t.token) {
            Ok(Token::Ascii40 | Token::Ascii91 | Token::Case) => levels.push(0),
            Ok(Token::Ascii41 | Token::Ascii93 | Token::EndP) => {
                if levels.len() > 1 {
                    sum -= levels.pop().unwrap_or(0);
                }
            }
            Ok(
                Token::Ascii44
                | Token::Ascii59
                | Token::And
                | Token::Or
                | Token::When
                | Token::Then
                | Token::Else,
            ) => {
                if let Some(top) = levels.last_mut() {
                    sum -= *top;
                    *top = 0;
                }
            }
            Ok(
                Token::Ident
                | Token::Uident
                | Token::Fconst
                | Token::Sconst
                | Token::Usconst
                | Token::Bconst
                | Token::Xconst
                | Token::Iconst
                | Token::Param
                | Token::SqlComment
                | Token::CComment,
            ) => {}
            _ => {
                if let Some(top) = levels.last_mut() {
                    *top += 1;
                    sum += 1;
                }
            }
        }
        deepest = deepest.max(sum + levels.len());
    }
    (deepest, scanned.tokens.len())
}

/// A cache key for `sql` that is the same for every text differing only in
/// literal values (`select * from t where id = 1` and `… = 2`), or `None`
/// when literals may change what the text does.
///
/// Built from PostgreSQL's own scanner: every token's text except literals,
/// which keep only their kind; comments and spacing are dropped, as the
/// grammar drops them. What a statement reads and writes never depends on
/// its literal values except in `SET`/`RESET` (whose values are settings
/// such as the search_path) and `UESCAPE` (whose literal changes how a
/// Unicode-escaped identifier reads), so texts with those keywords get no
/// key. Callers must also keep texts whose analysis has session effects
/// under their exact text.
pub fn literal_free_key(sql: &str) -> Option<String> {
    use pg_query::protobuf::Token;
    let scanned = pg_query::scan(sql).ok()?;
    let mut key = String::with_capacity(sql.len() + 1);
    // NUL never occurs in statement text, so keys cannot equal a text.
    key.push('\0');
    for t in &scanned.tokens {
        let kind = Token::try_from(t.token).ok()?;
        let literal = match kind {
            Token::Set | Token::Reset | Token::Uescape => return None,
            Token::SqlComment | Token::CComment => continue,
            Token::Sconst => "\u{1}s",
            Token::Usconst => "\u{1}u",
            Token::Iconst => "\u{1}i",
            Token::Fconst => "\u{1}f",
            Token::Bconst => "\u{1}b",
            Token::Xconst => "\u{1}x",
            _ => "",
        };
        if literal.is_empty() {
            key.push_str(sql.get(t.start as usize..t.end as usize)?);
        } else {
            key.push_str(literal);
        }
        // NUL separates tokens: no token contains one, so distinct token
        // sequences always give distinct keys.
        key.push('\0');
    }
    Some(key)
}

#[cfg(test)]
mod tests;
