//! Masking end to end: a seeded table of synthetic people, read through
//! the gateway by real clients (psql, tokio-postgres in binary format)
//! through a tap that keeps every byte the gateway sent them. For a
//! principal without `unmask`, no clear seeded value may appear in those
//! bytes, whatever the query; for one with it, every value must.

use std::sync::{Arc, Mutex};

use portcullis_testkit::{psql, Gateway, ADMIN_TOKEN, ALICE_TOKEN};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::NoTls;

use crate::common::*;

const ROWS: u64 = 40;

/// Alice (engineering) reads and writes app-db and may unmask nothing;
/// admins may do anything, unmask included.
const POLICIES: &str = r#"
@id("engineering-uses-app")
permit(principal in Group::"engineering",
       action in [Action::"connect", Action::"select", Action::"insert", Action::"update",
                  Action::"copy_out", Action::"ddl"],
       resource in Connection::"app-db");
@id("engineering-notifies")
permit(principal in Group::"engineering", action == Action::"execute",
       resource == Function::"app-db/pg_catalog.pg_notify");
@id("engineering-queries-to-xml")
permit(principal in Group::"engineering", action == Action::"execute",
       resource == Function::"app-db/pg_catalog.query_to_xml");
@id("admins-all")
permit(principal in Group::"admins", action, resource);
"#;

const MASKING: &str = r#"
[masking]
detectors = ["email", "credit_card", "iban", "us_ssn", "phone", "jwt", "aws_access_key", "private_key"]
on_derived = "mask"
on_predicate = "allow"

[[masking.columns]]
connection = "app-db"
column = "public.pii.email"
class = "email"
strategy = "partial"

[[masking.columns]]
connection = "app-db"
column = "public.pii.full_name"
class = "name"
strategy = "redact"

[[masking.columns]]
connection = "app-db"
column = "public.pii.card"
class = "credit_card"
strategy = "partial"

[[masking.columns]]
connection = "app-db"
column = "public.pii.iban"
class = "iban"
strategy = "null"

[[masking.columns]]
connection = "app-db"
column = "public.pii.ssn"
class = "us_ssn"
strategy = "hash"

[[masking.columns]]
connection = "app-db"
column = "public.pii.phone"
class = "phone"
strategy = "partial"

[[masking.columns]]
connection = "app-db"
column = "public.pii.api_key"
class = "aws_access_key"
strategy = "redact"
"#;

/// One synthetic person.
struct Person {
    id: u64,
    name: String,
    email: String,
    card: String,
    iban: String,
    ssn: String,
    phone: String,
    api_key: String,
}

impl Person {
    fn clear_values(&self) -> [&str; 7] {
        [
            &self.name,
            &self.email,
            &self.card,
            &self.iban,
            &self.ssn,
            &self.phone,
            &self.api_key,
        ]
    }

    /// A free-text note quoting the person's data: no column rule covers
    /// it, so only the detectors stand between it and the client.
    fn notes(&self) -> String {
        format!(
            "reach {} or {}; pays with {} from {}; ssn {}; key {}",
            self.email, self.phone, self.card, self.iban, self.ssn, self.api_key
        )
    }
}

fn luhn_digit(body: &str) -> u32 {
    let sum: u32 = body
        .chars()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = c.to_digit(10).unwrap();
            if i % 2 == 0 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

fn iban_for(bban: &str) -> String {
    let rearranged = format!("{bban}GB00");
    let mut rem: u64 = 0;
    for c in rearranged.chars() {
        let v = c.to_digit(36).unwrap() as u64;
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    format!("GB{:02}{bban}", 98 - rem)
}

/// The seeded people: deterministic, with valid checksums.
fn people() -> Vec<Person> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let names = [
        "Zelda", "Quentin", "Ottilie", "Barnaby", "Imogen", "Leopold",
    ];
    (1..=ROWS)
        .map(|id| {
            let card_body = format!("4{:014}", next(100_000_000_000_000));
            let card = format!("{card_body}{}", luhn_digit(&card_body));
            let bban = format!("WEST{:014}", next(100_000_000_000_000));
            let key: String = (0..16)
                .map(|_| b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[next(32) as usize] as char)
                .collect();
            Person {
                id,
                name: format!("{} Quokkaworth-{id}", names[id as usize % names.len()]),
                email: format!("person{id}.seeded@example.org"),
                card,
                iban: iban_for(&bban),
                ssn: format!(
                    "{}-{:02}-{:04}",
                    100 + next(500),
                    1 + next(98),
                    1 + next(9998)
                ),
                phone: format!("+1 415 555 {:04}", 1000 + id),
                api_key: format!("AKIA{key}"),
            }
        })
        .collect()
}

fn seed() {
    static SEED: std::sync::Once = std::sync::Once::new();
    SEED.call_once(|| {
        let mut sql = String::from(
            "drop view if exists pii_view; drop table if exists pii; \
             create table pii (id int primary key, full_name text, email text unique, card text, \
             iban varchar(34), ssn text, phone text, api_key text, notes text, age int); \
             create view pii_view as select id, full_name, upper(email) as shout from pii; \
             grant all on pii, pii_view to portcullis_reader;\n",
        );
        for p in people() {
            sql.push_str(&format!(
                "insert into pii values ({}, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', {});\n",
                p.id,
                p.name,
                p.email,
                p.card,
                p.iban,
                p.ssn,
                p.phone,
                p.api_key,
                p.notes(),
                20 + p.id
            ));
        }
        cluster().superuser_sql("app", &sql);
    });
}

fn masking_gateway(extra: &str) -> Gateway {
    seed();
    gateway()
        .app_db("app-db", cluster())
        .policies(POLICIES)
        .extra(MASKING)
        .extra(extra)
        .start()
}

/// A loopback forwarder that keeps every byte the gateway sends back.
pub(crate) struct Tap {
    port: u16,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Tap {
    pub(crate) async fn start(gw: &Gateway) -> Tap {
        let target = gw
            .conninfo("app-db", "")
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("port="))
            .unwrap()
            .parse::<u16>()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let keep = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let keep = keep.clone();
                tokio::spawn(async move {
                    let upstream = tokio::net::TcpStream::connect(("127.0.0.1", target))
                        .await
                        .unwrap();
                    let (mut cr, mut cw) = client.into_split();
                    let (mut ur, mut uw) = upstream.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut uw).await;
                        let _ = uw.shutdown().await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match ur.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        keep.lock().unwrap().extend_from_slice(&buf[..n]);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    up.abort();
                });
            }
        });
        Tap { port, seen }
    }

    pub(crate) fn conninfo(&self, token: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=app-db user=whoever sslmode=disable connect_timeout=20 password={token}",
            self.port
        )
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }
}

/// Seeded clear values found in `bytes`.
fn leaked(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for p in people() {
        for v in p.clear_values() {
            if bytes.windows(v.len()).any(|w| w == v.as_bytes()) {
                out.push(v.to_owned());
            }
        }
    }
    out
}

/// Queries a principal without `unmask` tries to read the data with:
/// names, aliases, expressions, whole rows, aggregates, subqueries, CTEs,
/// set operations, views, RETURNING and COPY.
const EVASIONS: &[&str] = &[
    "select * from pii",
    "select email, full_name, card, iban, ssn, phone, api_key from pii",
    "select email as e, full_name as x from pii",
    "select p.email, p.full_name from pii p",
    "select t.* from pii t",
    "select upper(email), lower(full_name) from pii",
    "select reverse(email), reverse(full_name) from pii",
    "select substr(card, 1, 19), substr(full_name, 1, 40) from pii",
    "select email || '', full_name || '' from pii",
    "select concat(email, full_name) from pii",
    "select email::text, full_name::varchar from pii",
    "select cast(card as varchar(40)) from pii",
    "select row_to_json(p) from pii p",
    "select p from pii p",
    "select p::text from pii p",
    "select (p).full_name from pii p",
    "select to_jsonb(p) from pii p",
    "select json_agg(p) from pii p",
    "select jsonb_build_object('n', full_name, 'e', email) from pii",
    "select string_agg(full_name, ',') from pii",
    "select array_agg(full_name) from pii",
    "select array_to_string(array_agg(ssn), ';') from pii",
    "select case when id > 0 then full_name end from pii",
    "select coalesce(full_name, '') from pii",
    "select format('%s|%s', full_name, ssn) from pii",
    "select (select full_name from pii limit 1)",
    "select x from (select full_name as x from pii) s",
    "select upper(x) from (select full_name x from pii) s",
    "with s as (select full_name, email from pii) select * from s",
    "with s as (select lower(full_name) n from pii) select n from s",
    "select full_name from pii union select 'x'",
    "select full_name from pii union all select email from pii",
    "select * from pii_view",
    "select full_name, shout from pii_view",
    "select translate(card, '0123456789', '0123456789') from pii",
    "select lpad(full_name, 60) from pii",
    "select max(full_name), min(email) from pii",
    "select distinct full_name from pii",
    "select full_name from pii group by full_name",
    "select * from pii order by email",
    "select id, notes from pii",
    "select notes || '' from pii",
    "update pii set age = age where id <= 3 returning full_name, email, ssn",
    "copy pii to stdout",
    "copy pii (full_name, email, ssn) to stdout with (format csv)",
    "copy public.pii (id, notes) to stdout",
    "begin; declare c cursor for select full_name || '!', email from pii; fetch all from c; commit",
    "prepare q as select full_name || '!', p from pii p; execute q; deallocate q",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_clear_value_reaches_a_reader_without_unmask() {
    let gw = masking_gateway("");
    let tap = Tap::start(&gw).await;
    let script = EVASIONS
        .iter()
        .map(|q| format!("{q};\n"))
        .collect::<String>();
    let out = psql(
        &tap.conninfo(ALICE_TOKEN),
        ALICE_TOKEN,
        &["-f", "-"],
        Some(&script),
    );
    assert!(out.ok, "{}\n{}", out.stderr, gw.log());
    assert!(out.stdout.contains("****@example.org"), "{}", out.stdout);
    assert!(out.stdout.contains("hmac:"), "{}", out.stdout);
    let bytes = tap.bytes();
    let leaks = leaked(&bytes);
    assert!(
        leaks.is_empty(),
        "clear values reached the client: {leaks:?}"
    );
    // The column values were there to leak: psql printed a row per person.
    assert!(out.stdout.lines().count() > 40 * EVASIONS.len() / 2);

    // Each query alone, so a failure names the query that leaked.
    for q in EVASIONS {
        let tap = Tap::start(&gw).await;
        let out = psql(&tap.conninfo(ALICE_TOKEN), ALICE_TOKEN, &["-c", q], None);
        assert!(out.ok, "{q}: {}", out.stderr);
        let leaks = leaked(&tap.bytes());
        assert!(leaks.is_empty(), "{q} leaked {leaks:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_results_over_the_extended_protocol_are_masked() {
    let gw = masking_gateway("");
    let tap = Tap::start(&gw).await;
    let (mut client, conn) = tokio_postgres::connect(&tap.conninfo(ALICE_TOKEN), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // tokio-postgres asks for every result column in binary.
    let rows = client
        .query(
            "select id, email, full_name, card, iban, ssn, phone, notes, age from pii where id <= $1 order by id",
            &[&5i32],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    for r in &rows {
        let id: i32 = r.get(0);
        let email: String = r.get(1);
        assert_eq!(email, "****@example.org");
        assert_eq!(r.get::<_, String>(2), "****");
        assert!(r.get::<_, String>(3).starts_with("****"));
        assert_eq!(r.get::<_, Option<String>>(4), None, "iban is nulled");
        assert!(r.get::<_, String>(5).starts_with("hmac:"));
        assert!(r.get::<_, String>(6).starts_with("****"));
        assert!(r.get::<_, String>(7).contains("****"));
        // Unclassified, non-text columns pass untouched.
        assert_eq!(r.get::<_, i32>(8), 20 + id);
    }
    // Equal values hash equally: the hash strategy keeps joins possible.
    let a: String = client
        .query_one("select ssn from pii where id = 1", &[])
        .await
        .unwrap()
        .get(0);
    let b: String = client
        .query_one("select ssn from pii where id = $1", &[&1i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(a, b);
    // Computed outputs in binary: a non-text type is nulled, text is masked.
    let r = client
        .query_one(
            "select length(full_name), upper(email), count(*) over () from pii where id = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, Option<i32>>(0), None);
    assert_eq!(r.get::<_, String>(1), "****");
    assert_eq!(
        r.get::<_, i64>(2),
        1,
        "outputs that read nothing sensitive stay"
    );
    // A portal read in pieces is masked in every piece.
    let tx = client.build_transaction().start().await.unwrap();
    let portal = tx
        .bind("select full_name, email from pii", &[])
        .await
        .unwrap();
    let mut seen = 0;
    loop {
        let part = tx.query_portal(&portal, 7).await.unwrap();
        if part.is_empty() {
            break;
        }
        for r in &part {
            assert_eq!(r.get::<_, String>(0), "****");
        }
        seen += part.len();
    }
    assert_eq!(seen as u64, ROWS);
    tx.commit().await.unwrap();
    let leaks = leaked(&tap.bytes());
    assert!(
        leaks.is_empty(),
        "clear values reached the client: {leaks:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_with_unmask_sees_every_value() {
    let gw = masking_gateway("");
    let tap = Tap::start(&gw).await;
    let out = psql(
        &tap.conninfo(ADMIN_TOKEN),
        ADMIN_TOKEN,
        &["-c", "select * from pii", "-c", "copy pii to stdout"],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
    let bytes = tap.bytes();
    let expected: usize = people().iter().map(|p| p.clear_values().len()).sum();
    assert_eq!(leaked(&bytes).len(), expected);
    assert!(!out.stdout.contains("****"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_notifications_and_copies_cannot_carry_values_out() {
    let gw = masking_gateway("");
    let tap = Tap::start(&gw).await;
    let conninfo = tap.conninfo(ALICE_TOKEN);
    let p1 = &people()[0];
    // A unique violation's DETAIL quotes the duplicate key.
    let out = psql(
        &conninfo,
        ALICE_TOKEN,
        &[
            "-c",
            &format!("insert into pii (id, email) values (9999, '{}')", p1.email),
        ],
        None,
    );
    assert!(!out.ok);
    // The message names the constraint in quotes and the detail quotes the
    // key: both are withheld; the SQLSTATE stays the server's.
    assert!(out.stderr.contains("text withheld"), "{}", out.stderr);
    // A failing cast quotes the value in the server's own message.
    let cast = "select ssn::int from pii order by id limit 1";
    cluster().superuser_sql("app", "grant select on pii to trust_user");
    let direct = psql(
        &format!(
            "host=127.0.0.1 port={} dbname=app user=trust_user",
            cluster().port()
        ),
        "",
        &["-c", cast],
        None,
    );
    assert!(direct.stderr.contains(&p1.ssn), "{}", direct.stderr);
    let out = psql(&conninfo, ALICE_TOKEN, &["-c", cast], None);
    assert!(!out.ok);
    assert!(out.stderr.contains("text withheld"), "{}", out.stderr);
    assert!(!out.stderr.contains(&p1.ssn), "{}", out.stderr);
    // A notification's payload goes through the detectors.
    let out = psql(
        &conninfo,
        ALICE_TOKEN,
        &[
            "-c",
            "listen ch",
            "-c",
            &format!("notify ch, 'card {} mail {}'", p1.card, p1.email),
            "-c",
            "select 1",
        ],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("card ****"), "{}", out.stdout);
    let leaks = leaked(&tap.bytes());
    assert!(
        leaks.is_empty(),
        "clear values reached the client: {leaks:?}"
    );

    // What cannot be masked faithfully is refused, saying why.
    let client = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    for (sql, why) in [
        (
            "copy pii to stdout (format binary)",
            "binary COPY output cannot be masked",
        ),
        (
            "copy (select email from pii) to stdout",
            "COPY of a query over masked column app-db/public.pii.",
        ),
        (
            "create table pii_copy as select email from pii",
            "would copy masked column app-db/public.pii.email",
        ),
        (
            "insert into pii (id, notes) select id + 1000, full_name from pii",
            "would copy masked column app-db/public.pii.full_name",
        ),
    ] {
        let e = client.simple_query(sql).await.unwrap_err();
        let (code, msg) = db_error(&e);
        assert_eq!(code, "42501", "{sql}");
        assert!(msg.contains(why), "{sql}: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_and_derived_outputs_can_be_refused() {
    let gw = masking_gateway("");
    let strict = {
        seed();
        gateway()
            .app_db("app-db", cluster())
            .policies(POLICIES)
            .extra(
                &MASKING
                    .replace("on_derived = \"mask\"", "on_derived = \"deny\"")
                    .replace("on_predicate = \"allow\"", "on_predicate = \"deny\""),
            )
            .start()
    };
    let client = connect(&strict, "app-db", ALICE_TOKEN).await.unwrap();
    for sql in [
        "select id from pii where ssn like '1%'",
        "select id from pii order by email",
        "select a.id from pii a join pii b on a.email = b.email",
        "select full_name from pii group by full_name",
        "select id from pii where id in (select id from pii where card like '4%')",
        "select x from (select ssn x from pii) s where x like '1%'",
        "select id, ssn from pii order by 2",
        "update pii set age = age where ssn = '000-00-0000'",
    ] {
        let e = client.simple_query(sql).await.unwrap_err();
        let (code, msg) = db_error(&e);
        assert_eq!(code, "42501", "{sql}");
        assert!(msg.contains("on_predicate"), "{sql}: {msg}");
    }
    for sql in [
        "select upper(email) from pii",
        "select length(full_name) from pii",
        "select row_to_json(p) from pii p",
    ] {
        let e = client.simple_query(sql).await.unwrap_err();
        let (code, msg) = db_error(&e);
        assert_eq!(code, "42501", "{sql}");
        assert!(msg.contains("on_derived"), "{sql}: {msg}");
    }
    // Plain reads and conditions on other columns still work, masked.
    let rows = client
        .query(
            "select email, full_name from pii where id = 1 order by id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "****@example.org");
    let n: i64 = client
        .query_one("select count(*) from pii where age > 30", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, ROWS as i64 - 10);
    // The same conditions pass on the lenient gateway.
    let lenient = connect(&gw, "app-db", ALICE_TOKEN).await.unwrap();
    let n: i64 = lenient
        .query_one("select count(*) from pii where ssn like '%-%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, ROWS as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_values_are_counted_in_the_audit_record() {
    let gw = masking_gateway("");
    let out = psql(
        &gw.conninfo("app-db", ""),
        ALICE_TOKEN,
        &[
            "-c",
            "select email, full_name, notes from pii where id <= 3",
        ],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
    let found = eventually(std::time::Duration::from_secs(10), || {
        let (code, body) = curl(&gw, "/api/sessions?user=alice", Some(ADMIN_TOKEN));
        assert_eq!(code, 200, "{body}");
        let list: Value = serde_json::from_str(&body).unwrap();
        let id = list.as_array()?.first()?.get("id")?.as_str()?.to_owned();
        let (_, body) = curl(&gw, &format!("/api/sessions/{id}"), Some(ADMIN_TOKEN));
        let detail: Value = serde_json::from_str(&body).ok()?;
        detail["statements"]
            .as_array()?
            .iter()
            .find(|s| s["text"].as_str().is_some_and(|t| t.contains("from pii")))
            .and_then(|s| s.get("masked").cloned())
    })
    .expect("the statement was recorded with its masking counts");
    assert_eq!(found["by_column"]["public.pii.email"], 3);
    assert_eq!(found["by_column"]["public.pii.full_name"], 3);
    assert_eq!(found["by_class"]["name"], 3);
    // Three notes, each with six findings.
    assert_eq!(found["by_column"]["detected"], 18, "{found}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_read_by_a_protocol_execute_is_masked() {
    let gw = masking_gateway("");
    let port: u16 = gw
        .conninfo("app-db", "")
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("port="))
        .unwrap()
        .parse()
        .unwrap();
    let (seen, data_rows) = tokio::task::spawn_blocking(move || {
        let mut raw = Raw::login(port, "app-db", ALICE_TOKEN).unwrap();
        let mut out = bytes::BytesMut::new();
        portcullis_pg_wire::encode::query(
            &mut out,
            "begin; declare c cursor for select full_name || '!', email from pii",
        );
        raw.send(&out);
        while let Some((tag, body)) = raw.read_msg() {
            assert_ne!(tag, b'E', "{:?}", error_fields(&body));
            if tag == b'Z' {
                break;
            }
        }
        // The cursor is a portal the client never bound: Execute it by name.
        let mut out = bytes::BytesMut::new();
        portcullis_pg_wire::encode::execute(&mut out, "c", 0);
        out.extend_from_slice(b"S\x00\x00\x00\x04");
        raw.send(&out);
        let mut seen = Vec::new();
        let mut data_rows = 0;
        while let Some((tag, body)) = raw.read_msg() {
            assert_ne!(tag, b'E', "{:?}", error_fields(&body));
            data_rows += usize::from(tag == b'D');
            seen.push(tag);
            seen.extend_from_slice(&body);
            if tag == b'Z' {
                break;
            }
        }
        (seen, data_rows)
    })
    .await
    .unwrap();
    assert_eq!(data_rows as u64, ROWS);
    let leaks = leaked(&seen);
    assert!(
        leaks.is_empty(),
        "clear values reached the client: {leaks:?}"
    );
}

/// The evasions a review found, each closed: column aliases in FROM,
/// attribute notation (`t.f` is `f(t)`), a prepared name reused, values
/// quoted in error messages, COPY in a multi-statement text, escaped COPY
/// delimiters and quoting options, SQL run by a function, functions that
/// carry values elsewhere, and DDL that moves a column out of its rule.
/// Run without stopping at errors (several are refused), through the tap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewed_evasions_leak_nothing() {
    let gw = masking_gateway("");
    let tap = Tap::start(&gw).await;
    let script = "\
select n || '', m || '' from pii as u(i, n, m);
select j.n || '' from (pii cross join (select 1) s) as j(i, n);
select u.to_jsonb::text from pii u;
select p.row_to_json from pii p;
prepare p2 as select nosuchcol from pii;
prepare p2 as select full_name || '' from pii;
execute p2;
select full_name::int from pii limit 1;
select (email || 'x')::date from pii limit 1;
copy pii (id, ssn) to stdout (delimiter '-');
copy pii (id, full_name) to stdout (format csv, quote '|', delimiter ' ');
select pg_catalog.query_to_xml('select full_name, email from pii', true, false, '')::text;
select pg_catalog.pg_notify('ch', full_name) from pii;
create table pii_leak as select * from pii;
alter table pii rename column full_name to shown;
";
    let out = psql(
        &tap.conninfo(ALICE_TOKEN),
        ALICE_TOKEN,
        &["-v", "ON_ERROR_STOP=0", "-f", "-"],
        Some(script),
    );
    // Several statements in one text (psql -c sends them as one query).
    let multi = psql(
        &tap.conninfo(ALICE_TOKEN),
        ALICE_TOKEN,
        &[
            "-c",
            "copy pii (full_name, id) to stdout; copy pii (id) to stdout",
        ],
        None,
    );
    let leaks = leaked(&tap.bytes());
    assert!(
        leaks.is_empty(),
        "clear values reached the client: {leaks:?}\n{}",
        out.stderr
    );
    assert!(
        multi
            .stderr
            .contains("COPY in a text of several statements"),
        "{}",
        multi.stderr
    );
    // The refusals say why.
    for why in [
        "COPY options other than FORMAT, DELIMITER, NULL and HEADER",
        "calls pg_catalog.pg_notify, which could carry the value",
        // Renames carry objects out from under their rules: admin only.
        "admin on app-db denied",
    ] {
        assert!(
            out.stderr.contains(why),
            "missing {why:?} in:\n{}",
            out.stderr
        );
    }
    // The escaped delimiter did not split the masked value.
    assert!(out.stdout.contains("-hmac:"), "{}", out.stdout);
}
