//! Differential compatibility for a user with only `connect` and `select`:
//! what everyday tools send gives the same answer through the gateway as
//! straight to PostgreSQL. The statements were captured from the real
//! tools (`scripts/compat/capture`, fixtures in `tests/fixtures/compat`);
//! psql and pg_dump also run here as themselves.

use std::path::PathBuf;

use portcullis_testkit::{psql, Gateway, ALICE_TOKEN, READER_PASSWORD};

use crate::common::*;

/// Only `connect` and `select`: everything these tools need.
const SELECT_ONLY: &str = r#"
permit(principal, action in [Action::"connect", Action::"select"],
       resource in Connection::"compat-db");
"#;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// A gateway with `compat-db`: the capture's schema, owned by the
/// superuser and readable by the service role, as a reader would see it.
fn compat_gateway() -> Gateway {
    compat_gateway_with("")
}

/// The same, with the extra configuration `extra`.
fn compat_gateway_with(extra: &str) -> Gateway {
    let c = cluster();
    static SEED: std::sync::Once = std::sync::Once::new();
    SEED.call_once(|| {
        c.superuser_sql("postgres", "create database compat");
        let schema = std::fs::read_to_string(repo_file("scripts/compat/schema.sql")).unwrap();
        c.superuser_sql("compat", &schema);
        c.superuser_sql(
            "compat",
            "grant usage on schema sales to portcullis_reader; \
             grant select on all tables in schema public, sales to portcullis_reader",
        );
    });
    gateway()
        .connection(&format!(
            "name = \"compat-db\"\nkind = \"postgres\"\nupstream = \"{}\"\ndatabase = \"compat\"\n\
             user = \"portcullis_reader\"\npassword_env = \"PORTCULLIS_TEST_READER_PASSWORD\"\n",
            c.addr()
        ))
        .policies(SELECT_ONLY)
        .extra(extra)
        .start()
}

fn direct_conninfo() -> String {
    let (host, port) = cluster()
        .addr()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.to_owned()))
        .unwrap();
    format!("host={host} port={port} dbname=compat user=portcullis_reader sslmode=disable")
}

/// Runs `input` (or `args`) with psql directly and through the gateway,
/// and asserts both succeed with the same output.
fn same_both_ways(gw: &Gateway, what: &str, args: &[&str], input: Option<&str>) {
    let direct = psql(&direct_conninfo(), READER_PASSWORD, args, input);
    assert!(direct.ok, "{what} fails directly: {}", direct.stderr);
    let through = psql(&gw.conninfo("compat-db", ""), ALICE_TOKEN, args, input);
    assert!(
        through.ok,
        "{what} fails through the gateway: {}\n{}",
        through.stderr,
        gw.log()
    );
    assert_eq!(direct.stdout, through.stdout, "{what}: outputs differ");
}

/// Fails on the first line where `through` differs from `direct`.
fn assert_same(what: &str, part: &str, direct: &str, through: &str) {
    let mut d = direct.lines();
    let mut t = through.lines();
    for line in 1.. {
        match (d.next(), t.next()) {
            (None, None) => return,
            (a, b) if a == b => continue,
            (a, b) => {
                panic!("{what}: {part} differ at line {line}:\n direct:  {a:?}\n gateway: {b:?}")
            }
        }
    }
}

#[test]
fn psql_meta_commands_answer_as_directly() {
    let gw = compat_gateway();
    for command in [
        "\\d",
        "\\dt",
        "\\d+ people",
        "\\d orders",
        "\\l",
        "\\dn",
        "\\df",
        "\\dv",
        "\\du",
        "\\dT",
        "\\di",
        "\\ds",
        "\\dx",
        "\\d v_people",
        "\\d sales.invoices",
    ] {
        same_both_ways(&gw, command, &["-c", command], None);
    }
    same_both_ways(
        &gw,
        "\\x",
        &[],
        Some("\\x\nselect * from people order by id;\n"),
    );
}

/// The captured fixtures, each as one psql script: (file name, script).
fn fixture_scripts() -> Vec<(String, String)> {
    let dir = repo_file("crates/portcullis/tests/fixtures/compat");
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    fixtures.sort();
    assert!(
        fixtures.len() >= 13,
        "fixtures missing from {}",
        dir.display()
    );
    fixtures
        .into_iter()
        .map(|fixture| {
            let text = std::fs::read_to_string(&fixture).unwrap();
            // Statements are separated by `-- next` lines; psql reads them
            // as one script, each ending at its semicolon.
            let script: String = text
                .split("\n-- next\n")
                .map(|s| format!("{};\n", s.trim().trim_end_matches(';')))
                .collect();
            let name = fixture.file_name().unwrap().to_string_lossy().into_owned();
            (name, script)
        })
        .collect()
}

/// `script` through psql straight to the compat database and through the
/// gateway, going on after errors (captured as a superuser, a statement
/// the service role may not run fails directly too, and must fail the
/// same way): (direct, through).
fn script_both_ways(
    gw: &Gateway,
    script: &str,
) -> (
    portcullis_testkit::PsqlOutput,
    portcullis_testkit::PsqlOutput,
) {
    let args = ["-v", "ON_ERROR_STOP=0"];
    let direct = psql(&direct_conninfo(), READER_PASSWORD, &args, Some(script));
    let through = psql(
        &gw.conninfo("compat-db", ""),
        ALICE_TOKEN,
        &args,
        Some(script),
    );
    (direct, through)
}

#[test]
fn captured_tool_statements_answer_as_directly() {
    let gw = compat_gateway();
    for (name, script) in fixture_scripts() {
        let (direct, through) = script_both_ways(&gw, &script);
        assert_same(&name, "errors", &direct.stderr, &through.stderr);
        assert_same(&name, "outputs", &direct.stdout, &through.stdout);
    }
}

#[test]
fn pg_dump_schema_only_dumps_as_directly() {
    let gw = compat_gateway();
    let dump = |conninfo: &str, password: &str| {
        let out = std::process::Command::new("pg_dump")
            .arg("--schema-only")
            .arg("--dbname")
            .arg(conninfo)
            .env("PGPASSWORD", password)
            .output()
            .expect("pg_dump must be installed");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, direct, err) = dump(&direct_conninfo(), READER_PASSWORD);
    assert!(ok, "pg_dump fails directly: {err}");
    let (ok, through, err) = dump(&gw.conninfo("compat-db", ""), ALICE_TOKEN);
    assert!(ok, "pg_dump fails through the gateway: {err}\n{}", gw.log());
    // `\restrict` carries a random key per run.
    let stable = |dump: &str| -> Vec<String> {
        dump.lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .map(str::to_owned)
            .collect()
    };
    assert!(
        stable(&through) == stable(&direct),
        "pg_dump output differs:\n{through}"
    );
    assert!(through.contains("CREATE TABLE public.people"));
}

/// Masking for the compat schema's personal columns.
const MASKING: &str = r#"
[masking]
[[masking.columns]]
connection = "compat-db"
column = "public.people.ssn"
class = "us_ssn"
strategy = "redact"
[[masking.columns]]
connection = "compat-db"
column = "public.people.email"
class = "email"
strategy = "redact"
"#;

/// The seeded values those columns hold.
const CLEAR: &[&str] = &[
    "111-22-3333",
    "444-55-6666",
    "ada@example.com",
    "alan@example.com",
];

/// Like [`assert_same`], except that a line holding a masked column's
/// value directly must hold none through the gateway (and is otherwise
/// free to differ).
fn assert_same_but_masked(what: &str, direct: &str, through: &str) {
    for clear in CLEAR {
        assert!(
            !through.contains(clear),
            "{what}: {clear} in clear:\n{through}"
        );
    }
    let (d, t): (Vec<&str>, Vec<&str>) = (direct.lines().collect(), through.lines().collect());
    assert_eq!(d.len(), t.len(), "{what}: line counts differ:\n{through}");
    for (line, (a, b)) in d.iter().zip(&t).enumerate() {
        if !CLEAR.iter().any(|c| a.contains(c)) {
            assert_eq!(a, b, "{what}: line {} differs", line + 1);
        }
    }
}

/// With the personal columns masked, every tool answers as directly, save
/// that masked values come back masked: metadata is not refused for
/// touching a masked table, and rows mask, in `\x` too. (COPY needs
/// `copy_out`, which a select-only user has not; masked COPY is tested
/// in `masking.rs`.)
#[test]
fn tools_answer_as_directly_with_masked_values_masked() {
    let gw = compat_gateway_with(MASKING);
    let mut scripts = fixture_scripts();
    for command in [
        "\\d+ people",
        "\\dt",
        "\\x\nselect * from people order by id",
    ] {
        scripts.push((command.to_owned(), format!("{command}\n")));
    }
    scripts.push((
        "rows".into(),
        "select * from people order by id;\nselect name, email from people where id = 1;\n".into(),
    ));
    for (name, script) in scripts {
        let (direct, through) = script_both_ways(&gw, &script);
        assert_same(&name, "errors", &direct.stderr, &through.stderr);
        assert_same_but_masked(&name, &direct.stdout, &through.stdout);
    }
}
