//! Fuzz targets: every parser that reads input from outside. Each asserts
//! more than "no panic" where it can: decoders that accept an input must
//! not read past it, and what cannot be parsed must be refused.

#![allow(clippy::unwrap_used)]

use portcullis_fuzz::fuzz;

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Client messages as a real client sends them.
fn frontend_seeds() -> Vec<Vec<u8>> {
    vec![
        frame(b'Q', b"select 1\0"),
        frame(b'P', b"s1\0select $1::int\0\0\x01\0\0\0\x17"),
        frame(b'B', b"p\0s1\0\0\x01\0\x01\0\x01\0\0\0\x0242\0\x01\0\x01"),
        frame(b'E', b"p\0\0\0\0\x0a"),
        frame(b'D', b"Pp\0"),
        frame(b'C', b"Ss1\0"),
        frame(b'S', b""),
        frame(b'H', b""),
        frame(b'd', b"1\tx\n"),
        frame(b'c', b""),
        frame(b'f', b"oops\0"),
        frame(b'X', b""),
        frame(b'p', b"secret\0"),
        frame(b'F', b"\0\0\0\x01\0\0\0\0\0\0"),
    ]
}

#[test]
fn frontend_messages() {
    let seeds = frontend_seeds();
    let r = fuzz(
        "frontend",
        &seeds,
        &[b"\0", b"\xff\xff", b"select"],
        |input| {
            let mut at = 0;
            while let Ok(Some(f)) = portcullis_pg_wire::next_frame(&input[at..], 1 << 20) {
                assert!(
                    f.len >= 5 && at + f.len <= input.len(),
                    "frame past the input"
                );
                let body = &input[at + 5..at + f.len];
                let _ = portcullis_pg_wire::FrontendMessage::decode(f.tag, body);
                at += f.len;
            }
        },
    );
    assert!(r.runs > 100, "{r:?}");
}

/// Decoding in any client encoding never panics, keeps every ASCII byte
/// as itself (quotes and backslashes read where the server reads them),
/// and a decoded text has at most as many characters as bytes.
#[test]
fn client_encodings() {
    use portcullis_pg_wire::ClientEncoding;
    let encodings: Vec<ClientEncoding> = [
        "UTF8", "LATIN1", "LATIN3", "WIN1251", "KOI8U", "EUC_JP", "EUC_KR", "EUC_CN", "EUC_TW",
    ]
    .iter()
    .map(|n| ClientEncoding::by_name(n).unwrap())
    .chain([ClientEncoding::UNSETTLED])
    .collect();
    let seeds = vec![
        b"select '\xa4\xa2' from \"caf\xe9\"".to_vec(),
        b"\x8f\xb0\xa1\x8e\xb1'\\".to_vec(),
    ];
    let r = fuzz(
        "client_encodings",
        &seeds,
        &[b"\x8e", b"\x8f", b"\xa1", b"'", b"\\"],
        |input| {
            for enc in &encodings {
                if let Ok(text) = enc.decode(input) {
                    assert!(text.chars().count() <= input.len());
                    let ascii_in: Vec<u8> = input.iter().copied().filter(u8::is_ascii).collect();
                    let ascii_out: Vec<u8> = text.bytes().filter(u8::is_ascii).collect();
                    assert_eq!(ascii_in, ascii_out, "{}", enc.name());
                }
            }
        },
    );
    assert!(r.runs > 100, "{r:?}");
}

#[test]
fn startup_ssl_and_cancel_packets() {
    let mut startup = Vec::new();
    let body = b"\0\x03\0\0user\0alice\0database\0app-db\0application_name\0psql\0\0";
    startup.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
    startup.extend_from_slice(body);
    let ssl = vec![0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f];
    let gss = vec![0, 0, 0, 8, 4, 0xd2, 0x16, 0x30];
    let cancel = vec![0, 0, 0, 16, 4, 0xd2, 0x16, 0x2e, 0, 0, 0, 7, 0, 0, 0, 9];
    let r = fuzz(
        "startup",
        &[startup, ssl, gss, cancel],
        &[
            b"\0",
            b"user\0",
            b"options\0-c search_path=x\0",
            b"replication\0true\0",
        ],
        |input| {
            if let Ok(Some((_, used))) = portcullis_pg_wire::parse_startup(input) {
                assert!(used <= input.len(), "startup packet read past the input");
            }
        },
    );
    assert!(r.runs > 100, "{r:?}");
}

#[test]
fn backend_messages_and_result_rows() {
    let row_description = {
        let mut b = vec![0, 2];
        for (name, table, col, ty) in [
            (&b"id"[..], 16400u32, 1i16, 23u32),
            (b"email", 16400, 2, 25),
        ] {
            b.extend_from_slice(name);
            b.push(0);
            b.extend_from_slice(&table.to_be_bytes());
            b.extend_from_slice(&col.to_be_bytes());
            b.extend_from_slice(&ty.to_be_bytes());
            b.extend_from_slice(&(-1i16).to_be_bytes());
            b.extend_from_slice(&(-1i32).to_be_bytes());
            b.extend_from_slice(&0i16.to_be_bytes());
        }
        b
    };
    let data_row = b"\0\x02\0\0\0\x0242\xff\xff\xff\xff".to_vec();
    let seeds = vec![
        frame(b'T', &row_description),
        frame(b'D', &data_row),
        frame(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0"),
        frame(b'R', b"\0\0\0\x05abcd"),
        frame(b'E', b"SERROR\0C42501\0Mdenied\0Dkey (email)=(a@b.c)\0\0"),
        frame(b'N', b"SNOTICE\0Mhello\0\0"),
        frame(b'A', b"\0\0\0\x07ch\0payload\0"),
        frame(b'S', b"client_encoding\0UTF8\0"),
        frame(b'Z', b"I"),
        frame(b'C', b"SELECT 1\0"),
        frame(b'K', b"\0\0\0\x01\0\0\0\x02"),
        frame(b'H', b"\0\0\x01\0\0"),
        frame(b'd', b"1\tx\n"),
    ];
    let r = fuzz("backend", &seeds, &[b"\0", b"\xff\xff\xff\xff"], |input| {
        let mut at = 0;
        while let Ok(Some(f)) = portcullis_pg_wire::next_frame(&input[at..], 1 << 20) {
            let body = &input[at + 5..at + f.len];
            let _ = portcullis_pg_wire::BackendMessage::decode(f.tag, body);
            let _ = portcullis_pg_wire::ErrorFields::new(body).iter().count();
            let _ = portcullis_pg_wire::rows::row_description(body);
            let mut vals = Vec::new();
            if portcullis_pg_wire::rows::data_row(body, &mut vals).is_ok() {
                let total: usize = vals.iter().flatten().map(|v| v.len()).sum();
                assert!(total <= body.len(), "values longer than the row");
            }
            at += f.len;
        }
    });
    assert!(r.runs > 100, "{r:?}");
}

#[test]
fn statement_classifier() {
    let seeds: Vec<Vec<u8>> = [
        "select * from users where id = 1",
        "with d as (delete from t returning *) select * from d",
        "copy (select 1) to program 'x'",
        "prepare p as select $1; execute p(1)",
        "set search_path = a, b; select f(x) from u",
        "select U&\"a\\0061\" from \"T\" /* c */ -- x\n",
        "do $$ begin perform 1; end $$",
        "select row_to_json(p), (select e from x limit 1) from p order by 2",
        "explain analyze update t set a = b from (select 1 b) s where t.id = s.b",
        "select abalance from pgbench_accounts where aid = 4242 and n = 'it''s'",
        // regression: a NUL the quick key took and the scanner refuses
        "select r\0\0\0\0son(p), (select e from x limit 1\n) ",
        // regression: a character the scanner's token enum does not name
        "ccU{Xo",
        // regression: a dollar quote right after a parameter
        "$1$$0$",
        // regression: a carriage return continues a string literal
        "'it'\r's's)+",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let dict: &[&[u8]] = &[
        b"select",
        b" from ",
        b"(",
        b")",
        b"'",
        b"\"",
        b"$$",
        b";",
        b"/*",
        b"*/",
        b"--",
        b"\\",
        b"U&",
        b"E'",
        b"union ",
        b"with ",
        b"returning ",
        b"*",
        b",",
        b"::text",
        b"\0",
        b"$1",
        b"12345",
        b"1.5",
        b"e1",
        b"'it''s'",
        b"\n'x'",
        b"0x1f",
        b"1_000",
        b"&'",
    ];
    let r = fuzz("classifier", &seeds, dict, |input| {
        // Statement text reaches the gateway as UTF-8 (the session's
        // encoding is checked at login); mutations that break it still
        // count, as their lossy reading.
        let sql = String::from_utf8_lossy(input);
        let ours = portcullis_pg_sql::analyze(&sql);
        let _ = portcullis_pg_sql::literal_free_key(&sql);
        // The scanner-free cache key delimits literals exactly as the
        // server's lexer does, or declines.
        if let Err(e) = portcullis_pg_sql::check_against_scanner(&sql) {
            panic!("{e}");
        }
        // What PostgreSQL's grammar rejects is never classified (fail closed).
        if pg_query_rejects(&sql) {
            assert!(ours.is_err(), "unparseable text was classified: {sql:?}");
        }
    });
    assert!(r.runs > 50, "{r:?}");
}

/// Whether PostgreSQL's own grammar refuses `sql`.
fn pg_query_rejects(sql: &str) -> bool {
    pg_query::parse(sql).is_err()
}

#[test]
fn masking_scanner() {
    use portcullis_core::masking::{Detector, Scanner};
    let scanner = Scanner::new(&Detector::ALL).unwrap();
    let seeds: Vec<Vec<u8>> = [
        "alice@example.com 4111 1111 1111 1111 GB82WEST12345698765432",
        "123-45-6789 +44 20 7946 0958 AKIAIOSFODNN7EXAMPLE",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlLWJ5dGVz",
        "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let dict: &[&[u8]] = &[
        b"@",
        b".com",
        b"-",
        b" ",
        b"4111",
        b"GB82",
        b"AKIA",
        b"eyJ",
        b"\xc3\xa9",
        b"\xff",
    ];
    let r = fuzz("scanner", &seeds, dict, |input| {
        let mut out = Vec::new();
        scanner.scan(input, &mut out);
        let mut last = 0;
        for f in &out {
            assert!(
                f.start >= last && f.start < f.end && f.end <= input.len(),
                "{f:?}"
            );
            last = f.end;
        }
    });
    assert!(r.runs > 100, "{r:?}");
}

#[test]
fn token_parser() {
    use portcullis_core::identity::jwt;
    let seeds: Vec<Vec<u8>> = [
        "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIiwiYXVkIjoicG9ydGN1bGxpcyIsInN1YiI6ImFsaWNlIiwiZXhwIjo0MTAyNDQ0ODAwfQ.c2ln",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.",
        "a.b.c",
        "static-token-123",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let dict: &[&[u8]] = &[b".", b"eyJ", b"==", b"-", b"_", b"\0"];
    let r = fuzz("token", &seeds, dict, |input| {
        let token = String::from_utf8_lossy(input);
        let _ = jwt::looks_like_jwt(&token);
        let _ = jwt::peek(&token);
    });
    assert!(r.runs > 100, "{r:?}");
    // Key sets come from issuers over the network.
    let jwks = br#"{"keys":[{"kty":"RSA","kid":"k1","alg":"RS256","use":"sig","n":"sXch","e":"AQAB"},{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
    let r = fuzz(
        "jwks",
        &[jwks.to_vec()],
        &[b"{", b"}", b"\"", b"null", b"[]"],
        |input| {
            if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(input) {
                let _ = portcullis_core::identity::jwks::KeySet::from_jwks(&doc);
            }
        },
    );
    assert!(r.runs > 100, "{r:?}");
}

/// DataRow value spans: accepted spans lie inside the body, in order.
#[test]
fn data_row_spans() {
    let mut seeds = Vec::new();
    for values in [
        &[Some(&b"42"[..]), None][..],
        &[Some(b"a@example.com")],
        &[],
    ] {
        let mut row = bytes::BytesMut::new();
        portcullis_pg_wire::rows::encode_data_row(&mut row, values.iter().copied());
        seeds.push(row[5..].to_vec());
    }
    let r = fuzz(
        "data-row-spans",
        &seeds,
        &[b"\xff\xff\xff\xff", b"\0\0"],
        |input| {
            let mut spans = Vec::new();
            if portcullis_pg_wire::rows::data_row_spans(input, &mut spans).is_ok() {
                let mut at = 0;
                for (start, end) in spans.into_iter().flatten() {
                    assert!(
                        at <= start && start <= end && end <= input.len(),
                        "span out of order"
                    );
                    at = end;
                }
            }
        },
    );
    assert!(r.runs > 100, "{r:?}");
}

/// COPY lines: a field written back reads as the same value, and a line
/// splits into spans inside it.
#[test]
fn copy_lines_and_fields() {
    use portcullis_pg_wire::copy;
    let seeds = vec![
        b"1\ta@b.com\n".to_vec(),
        b"1,\"x,y\",z\n".to_vec(),
        b"\\N\tx\\ty\n".to_vec(),
        b"\"a\"\"b\",\n".to_vec(),
    ];
    let r = fuzz(
        "copy-lines",
        &seeds,
        &[b"\\", b"\"", b"\t", b","],
        |input| {
            for (csv, delimiter) in [(false, b'\t'), (true, b',')] {
                let fields = copy::split_line(input, delimiter, csv);
                let mut at = 0;
                for (start, end) in &fields {
                    assert!(
                        at <= *start && start <= end && *end <= input.len(),
                        "field out of the line"
                    );
                    at = *end;
                }
                let value = copy::field_value(input, csv);
                let mut written = Vec::new();
                copy::write_field(&mut written, &value, csv, delimiter);
                let back = copy::field_value(&written, csv);
                assert_eq!(back, value, "a written field reads back as another value");
            }
        },
    );
    assert!(r.runs > 100, "{r:?}");
}

/// CommandComplete tags and ReadyForQuery status bytes.
#[test]
fn command_tags_and_statuses() {
    let seeds = vec![
        b"SELECT 3\0".to_vec(),
        b"INSERT 0 5\0".to_vec(),
        b"BEGIN\0".to_vec(),
    ];
    let r = fuzz("command-tags", &seeds, &[b" ", b"\0", b"9"], |input| {
        let _ = portcullis_pg_wire::command_complete_rows(input);
        let _ = portcullis_pg_wire::TransactionStatus::of_ready_for_query(input);
    });
    assert!(r.runs > 100, "{r:?}");
}

/// The statement gate, the pure decision code, over arbitrary texts: it
/// never panics, a text the grammar rejects is never allowed, and the same
/// text asked twice gets the same answer (the decision cache agrees with a
/// fresh decision).
#[test]
fn statement_gate() {
    use portcullis_pg_decide::GateDecision;
    let seeds: Vec<Vec<u8>> = [
        "select * from users where id = 1",
        "select * from api_keys",
        "set search_path = other, public; select * from users",
        "prepare p as select * from api_keys; execute p",
        "copy users to stdout",
        "select email from people where email like 'a%'",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let mut gate = portcullis_pg_decide::gate::test_gate(
        r#"permit(principal, action, resource);
           forbid(principal, action, resource == Table::"db/public.api_keys");"#,
        &["public"],
    );
    let r = fuzz(
        "statement-gate",
        &seeds,
        &[
            b"select",
            b" from ",
            b";",
            b"'",
            b"api_keys",
            b"search_path",
        ],
        |input| {
            let Ok(sql) = std::str::from_utf8(input) else {
                return;
            };
            let first = gate.check(sql);
            if pg_query::parse(sql).is_err() {
                assert!(
                    !first.is_allowed(),
                    "an unparsable text was allowed: {sql:?}"
                );
            }
            let again = gate.check(sql);
            // A text with session effects (SET, PREPARE) may decide the
            // next one differently; one without must not.
            let has_effects = portcullis_pg_sql::analyze(sql)
                .map(|a| {
                    a.statements
                        .iter()
                        .any(|s| !s.effects.is_empty() || s.redefines_callables)
                })
                .unwrap_or(false);
            if !has_effects {
                assert_eq!(
                    matches!(first, GateDecision::Allow(_)),
                    matches!(again, GateDecision::Allow(_)),
                    "the cached decision differs: {sql:?}"
                );
            }
        },
    );
    assert!(r.runs > 20, "{r:?}");
}
