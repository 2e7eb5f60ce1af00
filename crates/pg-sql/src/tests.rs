//! The statement corpus: each case lists the pairs PostgreSQL's grammar
//! implies, in a compact form (`action object`, objects `conn`, `t:name`,
//! `f:name`), or `ERR:` and the start of the refusal.

use super::*;

fn render(sql: &str) -> String {
    match analyze(sql) {
        Err(e) => format!("ERR:{e}"),
        Ok(a) => {
            let mut out: Vec<String> = Vec::new();
            for s in &a.statements {
                for acc in &s.accesses {
                    let obj = match &acc.object {
                        Object::Connection => "conn".to_owned(),
                        Object::Table(n) => format!("t:{n}"),
                        Object::Function(n) => format!("f:{n}"),
                    };
                    out.push(format!("{} {obj}", acc.action.as_str()));
                }
                if let Some(e) = &s.executes {
                    out.push(format!("exec-prepared {e}"));
                }
            }
            out.sort();
            out.dedup();
            out.join(", ")
        }
    }
}

#[path = "corpus.rs"]
mod corpus;

#[test]
fn corpus() {
    let mut failures = Vec::new();
    for (sql, want) in corpus::CASES {
        let got = render(sql);
        let ok = match want.strip_prefix("ERR:") {
            Some(prefix) => got.starts_with("ERR:") && got[4..].starts_with(prefix),
            None => got == *want,
        };
        if !ok {
            failures.push(format!("{sql}\n   want: {want}\n    got: {got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        corpus::CASES.len(),
        failures.join("\n")
    );
    assert!(
        corpus::CASES.len() >= 200,
        "the corpus must keep at least 200 cases"
    );
}

#[test]
fn kinds_and_effects() {
    let a = analyze(
        "set search_path = app, public; prepare p as delete from t; execute p; deallocate all",
    )
    .unwrap();
    assert_eq!(a.statements.len(), 4);
    assert_eq!(
        a.statements[0].effects,
        vec![Effect::SearchPath(Some(vec![
            "app".into(),
            "public".into()
        ]))]
    );
    assert!(matches!(&a.statements[1].effects[0], Effect::Prepare { name, .. } if name == "p"));
    assert_eq!(a.statements[2].executes.as_deref(), Some("p"));
    assert_eq!(a.statements[3].effects, vec![Effect::Deallocate(None)]);
    let a = analyze("reset search_path").unwrap();
    assert_eq!(a.statements[0].effects, vec![Effect::SearchPath(None)]);
    // pg_dump sets its path with set_config; it counts as the SET it is,
    // inside a PREPARE too (the path only grows).
    let a =
        analyze("select pg_catalog.set_config('search_path', '\"My S\", evil', false)").unwrap();
    assert_eq!(
        a.statements[0].effects,
        vec![Effect::SearchPath(Some(vec!["My S".into(), "evil".into()]))]
    );
    let a = analyze("prepare q as select set_config('search_path', 'evil', true)").unwrap();
    assert_eq!(
        a.statements[0].effects[0],
        Effect::SearchPath(Some(vec!["evil".into()]))
    );
    assert!(analyze("select lower('x')").unwrap().statements[0].unqualified_builtins);
    assert!(!analyze("select pg_catalog.lower('x')").unwrap().statements[0].unqualified_builtins);
}

/// `t.f` and `(expr).f` may be calls to `f`: every such name is listed,
/// wherever it sits, and names that only qualify are not.
#[test]
fn field_selections_list_the_names_they_may_call() {
    let names = |sql: &str| analyze(sql).unwrap().statements[0].attribute_names.clone();
    assert_eq!(names("select u.f from t u"), ["f"]);
    assert_eq!(names("select s.t.f, c.s.t.g from s.t"), ["f", "g"]);
    assert_eq!(
        names("select (u.id).g, (x).h.i from t u"),
        ["g", "h", "i", "id"]
    );
    assert_eq!(
        names("update t set a = 1 where t.f returning (t).g"),
        ["f", "g"]
    );
    assert_eq!(names("explain analyze delete from t where t.f"), ["f"]);
    assert!(names("select a, u.*, (u).* from t u").is_empty());
    let a = analyze("prepare p as select u.f from t u").unwrap();
    match &a.statements[0].effects[0] {
        Effect::Prepare { facts, .. } => assert_eq!(facts.attribute_names, ["f"]),
        e => panic!("{e:?}"),
    }
}

/// Random statement text never panics the classifier, and text PostgreSQL
/// cannot parse is always refused. A seeded generator keeps runs repeatable.
#[test]
fn random_text_never_panics_and_unparseable_is_refused() {
    const TOKENS: &[&str] = &[
        "select",
        "from",
        "where",
        "delete",
        "insert",
        "into",
        "values",
        "update",
        "set",
        "with",
        "as",
        "(",
        ")",
        ",",
        ";",
        "*",
        "'x'",
        "$$",
        "$1",
        "users",
        "public.api_keys",
        "\"q\"",
        "--",
        "/*",
        "*/",
        "E'\\\\'",
        "u&",
        "returning",
        "copy",
        "to",
        "stdout",
        "do",
        "begin",
        "end",
        "call",
        "f(",
        "1",
        "=",
        "or",
        "and",
        "join",
        "on",
        "union",
        "explain",
        "analyze",
        "prepare",
        "execute",
        "\0",
        "é",
        "\\",
        "U&\"a\"",
    ];
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let n = (next() % 12) as usize;
        let sql: Vec<&str> = (0..n)
            .map(|_| TOKENS[(next() % TOKENS.len() as u64) as usize])
            .collect();
        let sql = sql.join(" ");
        let ours = analyze(&sql);
        let server_grammar = pg_query::parse(&sql);
        if server_grammar.is_err() {
            assert!(ours.is_err(), "unparseable text was classified: {sql:?}");
        }
    }
}

#[test]
fn literal_free_keys_ignore_values_but_not_structure() {
    let k = |s: &str| crate::literal_free_key(s);
    assert_eq!(
        k("select * from t where id = 1"),
        k("select  *\nfrom t /* c */ where id = 42 -- x")
    );
    assert_eq!(k("select 'a'"), k("select $$b$$"));
    assert_ne!(k("select 'a'"), k("select 1"));
    assert_ne!(k("select * from t"), k("select * from \"T\""));
    assert_ne!(k("select * from t"), k("select * from u"));
    assert_eq!(k("set search_path = evil"), None);
    assert_eq!(k("select 1; reset all"), None);
    assert_eq!(k("select U&\"d!0061ta\" UESCAPE '!'"), None);
    assert_eq!(k("select 'unterminated"), None);
}

/// The scanner-free key delimits literals exactly as PostgreSQL's scanner
/// does wherever it accepts a text, and texts that differ in more than
/// literal values never share a key.
#[test]
fn quick_keys_agree_with_the_scanner() {
    let mut accepted = 0;
    let extra = [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 4242;",
        "select 'it''s', 'a' 'b', x1, a$1, $1, $2::int, -1, 1+2, t.c from t",
        "select 'a'\n'b'",
        "select E'x', U&'x', B'1', X'1f', N'x'",
        "select 1.5, .5, 1e3, 0x1f, 0b1, 0o7, 1_000, 1234567890, 123456789",
        "select 1from t",
        "select $$x$$, $a$x$a$",
        "select 'unterminated",
        "select \"q\" from t -- c",
        "select /* c */ 1",
        "update t set a = 1",
        "select 'x' \t\n  'y'",
        "select 'x'::text, '2024-01-01'::date, array[1,2][1]",
        "insert into t values (1, 'a'), (2, 'b') returning id",
    ];
    for sql in extra.iter().chain(corpus::CASES.iter().map(|(s, _)| s)) {
        if let Err(e) = crate::check_against_scanner(sql) {
            panic!("{e}");
        }
        accepted += usize::from(crate::quick_literal_free_key(sql).is_some());
    }
    assert!(accepted > 100, "only {accepted} texts took the quick key");
    let k = crate::quick_literal_free_key;
    assert_eq!(
        k("select * from t where id = 1 and n = 'a'"),
        k("select * from t where id = 42 and n = 'it''s'")
    );
    assert!(k("select * from t where id = 1").is_some());
    // Near misses of the declined words are plain texts.
    assert!(k("select 's-e-t', 'se', 'uescap', sex from t").is_some());
    assert_ne!(
        k("select * from t where id = 1"),
        k("select * from u where id = 1")
    );
    assert_ne!(k("select 1"), k("select '1'"));
    assert_ne!(k("select $1"), k("select $2"));
    for declined in [
        "select 1.5",
        "select E'x'",
        "select 1 -- c",
        "select \"T\"",
        "set search_path = x",
        "SeT search_path = x",
        "select 1; reset all",
        "select 1 uEsCaPe",
        "select 1 UESCAPE",
        "sET search_path = x",
        "select xSETx",
        "select 'subset'",
        "select '\u{7f}'",
        "select '\u{1}i'",
        "select $$x$$",
        "select 'a'\n'b'",
        "select 1234567890",
        "select 'é'",
    ] {
        assert_eq!(k(declined), None, "{declined}");
    }
}

/// What literal values change must keep texts apart in the shape cache,
/// and two-phase commits are decided by their kind, not their name.
#[test]
fn literal_sensitive_texts_and_prepared_transactions() {
    let facts = |sql: &str| analyze(sql).unwrap().statements.remove(0);
    for sql in [
        "copy t to ''",
        "copy t to stdout (delimiter '|')",
        "select a, b from t order by 2",
        "select a, count(*) from t group by 1",
        "select distinct on (1) a from t",
        "explain copy (select 1) to stdout",
        // a setting's name or value decides
        "select current_setting('work_mem')",
        "select set_config('app.tenant', '7', false)",
        "set default_transaction_read_only = 'on'",
        "select setting from pg_settings where name = 'work_mem'",
    ] {
        if let Ok(a) = analyze(sql) {
            assert!(a.statements[0].literal_sensitive, "{sql}");
        }
    }
    assert!(!facts("select a from t where id = 1 order by a").literal_sensitive);
    for sql in [
        "commit prepared ''",
        "rollback prepared 'x'",
        "commit prepared 'x'",
    ] {
        assert_eq!(facts(sql).kind, "admin", "{sql}");
    }
    assert_eq!(facts("prepare transaction 'x'").kind, "admin");
    assert!(
        facts("create function f(t) returns int language sql as 'select 1'").redefines_callables
    );
    assert!(facts("alter function f(t) rename to g").redefines_callables);
    assert!(!facts("select 1").redefines_callables);
}

/// Encoding names as the server accepts them: cleaned to letters and
/// digits, any case; quote-hiding encodings stay refused by every name.
#[test]
fn client_encodings_by_every_name_the_server_accepts() {
    use crate::is_safe_client_encoding as safe;
    for name in [
        "UTF8",
        "utf-8",
        "UTF_8",
        "Unicode",
        "LATIN9",
        "ISO-8859-15",
        "WIN1252",
        "windows-1251",
        "KOI8-R",
        "EUC_JP",
        "SQL_ASCII",
    ] {
        assert!(safe(name), "{name}");
    }
    for name in [
        "SJIS",
        "Shift_JIS",
        "BIG5",
        "GBK",
        "GB18030",
        "UHC",
        "JOHAB",
        "mskanji",
        "",
    ] {
        assert!(!safe(name), "{name}");
    }
}

/// What may change the encoding the server reads the next message in.
#[test]
fn changes_of_client_encoding() {
    use crate::EncodingChange::{ResetAll, Set, TransactionEnd};
    let change = |sql: &str| {
        let analysis = analyze(sql).unwrap();
        analysis.statements[0].effects.iter().find_map(|e| match e {
            Effect::ClientEncoding(c) => Some(*c),
            _ => None,
        })
    };
    assert_eq!(change("set client_encoding to 'LATIN9'"), Some(Set));
    assert_eq!(change("set local client_encoding = latin1"), Some(Set));
    assert_eq!(change("reset client_encoding"), Some(Set));
    assert_eq!(change("set client_encoding to default"), Some(Set));
    assert_eq!(
        change("select set_config('client_encoding', 'LATIN1', false)"),
        Some(Set)
    );
    assert_eq!(change("reset all"), Some(ResetAll));
    assert_eq!(change("discard all"), Some(ResetAll));
    for end in [
        "commit",
        "end",
        "rollback",
        "abort",
        "rollback to savepoint s",
    ] {
        assert_eq!(change(end), Some(TransactionEnd), "{end}");
    }
    for none in [
        "begin",
        "savepoint s",
        "release s",
        "set search_path = a",
        "select 1",
    ] {
        assert_eq!(change(none), None, "{none}");
    }
}

/// Runs `analyze` on a thread with tokio's default 2 MiB stack, as the
/// gateway's threads have: a statement that overflowed it would abort
/// the test process, not fail an assertion.
fn analyze_on_small_stack(sql: String) -> Result<Analysis, Unclassifiable> {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || analyze(&sql))
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn a_statement_nested_past_the_limit_is_refused_before_the_parser_sees_it() {
    let joins = |n: usize| {
        let mut sql = "select * from t0".to_owned();
        for i in 1..=n {
            sql.push_str(&format!(" join t{i} on true"));
        }
        sql
    };
    // Thousands of joins overflowed libpg_query's recursive output.
    match analyze_on_small_stack(joins(5_000)) {
        Err(Unclassifiable::Unsafe(m)) => assert!(m.contains("nests too deeply"), "{m}"),
        other => panic!("{other:?}"),
    }
    let sum = format!("select {}", vec!["1"; 20_000].join("+"));
    assert!(matches!(
        analyze_on_small_stack(sum),
        Err(Unclassifiable::Unsafe(_))
    ));
    let parens = format!("select {}1{}", "(".repeat(3_000), ")".repeat(3_000));
    assert!(matches!(
        analyze_on_small_stack(parens),
        Err(Unclassifiable::Unsafe(_))
    ));
    let cases = format!(
        "select {}1{}",
        "case when true then ".repeat(2_000),
        " end".repeat(2_000)
    );
    assert!(matches!(
        analyze_on_small_stack(cases),
        Err(Unclassifiable::Unsafe(_))
    ));
    // Just under the limit, the worst shapes end in an answer, not a crash.
    let under = MAX_NESTING - 5;
    for sql in [
        joins(under / 3),
        format!("select {}", vec!["1"; under].join("+")),
        format!("select {}1{}", "(".repeat(under), ")".repeat(under)),
        format!(
            "select {}1{}",
            "abs(".repeat(under - 2),
            ")".repeat(under - 2)
        ),
        format!(
            "select {}1{}",
            "case when true then ".repeat(under / 2),
            " end".repeat(under / 2)
        ),
        format!("select {}", vec!["-"; under].join(" ") + " 1"),
        format!("select {}", vec!["not"; under].join(" ") + " true"),
        format!(
            "select {}",
            vec!["(select 1 where true"; under / 6].join(" union ") + &")".repeat(under / 6)
        ),
    ] {
        assert!(
            nesting_estimate(&sql) <= MAX_NESTING,
            "{}",
            nesting_estimate(&sql)
        );
        let _ = analyze_on_small_stack(sql);
    }
}

#[test]
fn wide_statements_are_not_deep() {
    let values = (0..20_000)
        .map(|i| format!("({i}, 'row {i}', now()::text)"))
        .collect::<Vec<_>>()
        .join(", ");
    let insert = format!("insert into t (id, name, at) values {values}");
    assert!(
        nesting_estimate(&insert) < 20,
        "{}",
        nesting_estimate(&insert)
    );
    assert!(analyze(&insert).is_ok());
    let in_list = format!(
        "select * from t where id in ({})",
        (0..20_000)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(nesting_estimate(&in_list) < 20);
    let cases = format!(
        "select case {} end from t",
        (0..2_000)
            .map(|i| format!("when id = {i} then 'v{i}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert!(
        nesting_estimate(&cases) < 20,
        "{}",
        nesting_estimate(&cases)
    );
    assert!(analyze(&cases).is_ok());
    let ors = format!(
        "select * from t where {}",
        (0..5_000)
            .map(|i| format!("id = {i}"))
            .collect::<Vec<_>>()
            .join(" or ")
    );
    assert!(nesting_estimate(&ors) < 20, "{}", nesting_estimate(&ors));
    assert!(analyze(&ors).is_ok());
}

#[test]
fn a_long_chain_of_joins_or_operators_is_analyzed_at_once() {
    // Each link used to double the condition scan: 40 joins took minutes.
    let mut joins = "select * from t0".to_owned();
    for i in 1..=45 {
        joins.push_str(&format!(" join t{i} on t{i}.id = t0.id"));
    }
    let chain = format!("select * from t where {} > 0", vec!["id"; 45].join(" / "));
    let calls = format!("select {}id{} from t", "abs(".repeat(40), ")".repeat(40));
    let cases = format!(
        "select {}id{} from t",
        "case when id > 0 then ".repeat(20),
        " else 0 end".repeat(20)
    );
    let subqueries = format!(
        "select * from t where id in {}(select 1){}",
        "(select id from t where id in ".repeat(20),
        ")".repeat(20)
    );
    let unions = vec!["select id from t where id > 0"; 30].join(" union ");
    let json = format!("select doc{} from t", "->'k'".repeat(40));
    let nots = format!("select * from t where {} id > 0", "not ".repeat(40));
    for sql in [joins, chain, calls, cases, subqueries, unions, json, nots] {
        let started = std::time::Instant::now();
        let analyzed = analyze(&sql);
        assert!(analyzed.is_ok(), "{analyzed:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?} for {sql}",
            started.elapsed()
        );
    }
}

#[test]
fn chains_the_estimate_cannot_see_end_in_an_answer_not_a_crash() {
    // From the red team's second pass: each link's AND, OR or comma
    // resets the estimate's count, while the tree still nests per link.
    let between = format!("select {}1", "1 between 1 and not ".repeat(2_000));
    let joins = format!("select * from t{}", " join t on a or b".repeat(3_000));
    let unions = vec!["select 1,1"; 10_000].join(" union ");
    for sql in [between, joins, unions] {
        assert!(nesting_estimate(&sql) <= MAX_NESTING);
        // Refused as too deep, or by the grammar's own stack limit
        // ("memory exhausted"): either way an answer, on a small stack.
        match analyze_on_small_stack(sql) {
            Err(Unclassifiable::Unsafe(m)) => assert!(m.contains("nests too deeply"), "{m}"),
            Err(Unclassifiable::Parse(m)) => assert!(m.contains("memory exhausted"), "{m}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
    let long = format!("select {}", vec!["1"; MAX_TOKENS].join(","));
    match analyze(&long) {
        Err(Unclassifiable::Unsafe(m)) => assert!(m.contains("too long to analyze"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn a_with_of_thousands_of_ctes_costs_in_proportion() {
    let ctes = |n: usize| {
        let list: Vec<String> = (0..n).map(|i| format!("c{i} as (select {i})")).collect();
        format!("with {} select * from c{}", list.join(", "), n - 1)
    };
    let time = |n: usize| {
        let started = std::time::Instant::now();
        assert!(analyze(&ctes(n)).is_ok());
        started.elapsed()
    };
    time(200);
    let (small, large) = (time(1_000), time(8_000));
    // Eight times the CTEs: about eight times the time, not sixty-four.
    assert!(
        large < small * 24,
        "{small:?} for 1,000, {large:?} for 8,000"
    );
}
