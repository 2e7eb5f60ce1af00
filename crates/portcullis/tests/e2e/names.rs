//! The server's answers are the truth about names: prepared statements
//! and portals change only when the server confirms it. Each attack makes
//! the client's messages and the server's state disagree about what a
//! prepared name holds, after a search_path change that makes the server
//! re-plan it onto a forbidden table. Each is first run straight against
//! PostgreSQL, to show the forbidden table is then read, and then through
//! the gateway, which must refuse it.

use bytes::{BufMut, BytesMut};
use portcullis_pg_wire::encode;
use portcullis_testkit::{Gateway, ALICE_TOKEN};

use crate::common::*;

/// Reads `t`: `public.t` when defined, `hidden.t` once the path changes.
const DEFINED: &str = "select v from t";
/// Reads nothing at all.
const HARMLESS: &str = "select 'x'::text";
/// The one row of the forbidden `hidden.t`.
const MARKER: &str = "HIDDEN-ROW-7f3a";

const POLICY: &str = r#"
permit(principal, action in [Action::"connect", Action::"select"],
       resource in Connection::"app-db");
@id("no-hidden")
forbid(principal, action, resource == Table::"app-db/hidden.t");
"#;

fn names_gateway() -> Gateway {
    static SEED: std::sync::Once = std::sync::Once::new();
    SEED.call_once(|| {
        cluster().superuser_sql(
            "app",
            &format!(
                "create schema hidden; create table public.t (v text); create table hidden.t (v text); \
                 insert into public.t values ('public-row'); insert into hidden.t values ('{MARKER}'); \
                 grant usage on schema hidden to portcullis_reader, trust_user; \
                 grant select on public.t, hidden.t to portcullis_reader, trust_user"
            ),
        );
    });
    gateway()
        .app_db("app-db", cluster())
        .policies(POLICY)
        .start()
}

fn sync(out: &mut BytesMut) {
    out.extend_from_slice(b"S\x00\x00\x00\x04");
}

fn close_statement(out: &mut BytesMut, name: &str) {
    out.put_u8(b'C');
    out.put_u32(4 + 1 + name.len() as u32 + 1);
    out.put_u8(b'S');
    out.extend_from_slice(name.as_bytes());
    out.put_u8(0);
}

/// One round: messages sent together, and how many ReadyForQuery end it.
struct Round {
    bytes: BytesMut,
    ready: usize,
}

fn round(ready: usize, build: impl FnOnce(&mut BytesMut)) -> Round {
    let mut bytes = BytesMut::new();
    build(&mut bytes);
    Round { bytes, ready }
}

/// Sends each round and keeps every byte the server or gateway answered.
fn play(raw: &mut Raw, rounds: &[Round]) -> Vec<u8> {
    let mut seen = Vec::new();
    for r in rounds {
        raw.send(&r.bytes);
        let mut ready = 0;
        while ready < r.ready {
            let Some((tag, body)) = raw.read_msg() else {
                return seen;
            };
            ready += usize::from(tag == b'Z');
            seen.push(tag);
            seen.extend_from_slice(&body);
        }
    }
    // Whatever else comes (answers a confused count missed), to the end.
    let mut out = BytesMut::new();
    encode::terminate(&mut out);
    raw.send(&out);
    while let Some((tag, body)) = raw.read_msg() {
        seen.push(tag);
        seen.extend_from_slice(&body);
    }
    seen
}

/// A raw session straight to the upstream as a role it trusts.
fn direct() -> Raw {
    let mut raw = Raw::connect(cluster().port());
    let mut out = BytesMut::new();
    encode::startup_message(&mut out, &[("user", "trust_user"), ("database", "app")]);
    raw.send(&out);
    while let Some((tag, body)) = raw.read_msg() {
        assert_ne!(tag, b'E', "{:?}", error_fields(&body));
        if tag == b'Z' {
            return raw;
        }
    }
    panic!("no login");
}

fn attacks() -> Vec<(&'static str, Vec<Round>)> {
    // p is defined while the path finds public.t, then the path changes:
    // the server re-plans p onto hidden.t at its next use.
    let define = || {
        vec![
            round(1, |o| {
                encode::parse(o, "p", DEFINED);
                sync(o);
            }),
            round(1, |o| encode::query(o, "set search_path = hidden, public")),
        ]
    };
    let run_p = || {
        round(1, |o| {
            encode::bind(o, "", "p");
            encode::execute(o, "", 0);
            sync(o);
        })
    };
    let with = |mut rounds: Vec<Round>, more: Vec<Round>| {
        rounds.extend(more);
        rounds
    };
    vec![
        (
            "a Close and a Parse the server skipped after an error",
            with(
                define(),
                vec![
                    round(1, |o| {
                        encode::parse(o, "", "selec 1");
                        close_statement(o, "p");
                        encode::parse(o, "p", HARMLESS);
                        sync(o);
                    }),
                    run_p(),
                ],
            ),
        ),
        (
            "a second Parse of a taken name, which the server rejects",
            with(
                define(),
                vec![
                    round(1, |o| {
                        encode::parse(o, "p", HARMLESS);
                        sync(o);
                    }),
                    run_p(),
                ],
            ),
        ),
        (
            "a Parse of the unnamed statement the server skipped",
            vec![
                round(1, |o| {
                    encode::parse(o, "", DEFINED);
                    sync(o);
                }),
                // A simple query would drop the unnamed statement: change
                // the path through a named one.
                round(1, |o| {
                    encode::parse(o, "s", "set search_path = hidden, public");
                    encode::bind(o, "", "s");
                    encode::execute(o, "", 0);
                    sync(o);
                }),
                round(1, |o| {
                    encode::bind(o, "", "no_such_statement");
                    encode::parse(o, "", HARMLESS);
                    sync(o);
                }),
                round(1, |o| {
                    encode::bind(o, "", "");
                    encode::execute(o, "", 0);
                    sync(o);
                }),
            ],
        ),
        (
            "a SQL PREPARE of a name a Parse holds, which the server rejects",
            with(
                define(),
                vec![
                    round(1, |o| encode::query(o, &format!("prepare p as {HARMLESS}"))),
                    round(1, |o| encode::query(o, "execute p")),
                ],
            ),
        ),
    ]
}

fn shows_marker(seen: &[u8]) -> bool {
    seen.windows(MARKER.len()).any(|w| w == MARKER.as_bytes())
}

#[test]
fn names_the_server_never_confirmed_change_nothing() {
    let gw = names_gateway();
    for (what, rounds) in attacks() {
        // Straight to the server, the forbidden table is what p reads.
        let seen = play(&mut direct(), &rounds);
        assert!(
            shows_marker(&seen),
            "{what}: the attack does not work directly, so this test proves nothing"
        );
        // Through the gateway, it is refused.
        let mut raw = Raw::login(gw.pg_port, "app-db", ALICE_TOKEN).unwrap();
        let seen = play(&mut raw, &rounds);
        assert!(
            !shows_marker(&seen),
            "{what}: the forbidden table reached the client: {}",
            String::from_utf8_lossy(&seen)
        );
    }
}

/// The gateway's stand-ins use names and Syncs of their own; a client
/// must not be able to define those names, nor to make a stand-in's Sync
/// end the server's skipping after an error while the gateway thinks it
/// still skips.
#[test]
fn the_gateways_own_names_and_syncs_cannot_be_borrowed() {
    let gw = names_gateway();
    // A statement under the name denied Binds are sent to.
    let poison = "\u{1}portcullis denied";
    let borrow = vec![
        round(1, |o| {
            encode::parse(o, poison, DEFINED);
            sync(o);
        }),
        round(1, |o| encode::query(o, "set search_path = hidden, public")),
        round(1, |o| {
            encode::bind(o, "", "no_such_statement");
            encode::execute(o, "", 0);
            sync(o);
        }),
    ];
    // Directly, a statement of that name runs like any other.
    let seen = play(
        &mut direct(),
        &[
            round(1, |o| {
                encode::parse(o, poison, DEFINED);
                sync(o);
            }),
            round(1, |o| encode::query(o, "set search_path = hidden, public")),
            round(1, |o| {
                encode::bind(o, "", poison);
                encode::execute(o, "", 0);
                sync(o);
            }),
        ],
    );
    assert!(shows_marker(&seen));
    // A probe for an unparsable query sent while the server skips.
    let desync = vec![
        round(1, |o| {
            encode::parse(o, "x", HARMLESS);
            sync(o);
        }),
        round(1, |o| {
            encode::parse(o, "", "selec 1");
            encode::query(o, "this is not sql");
            close_statement(o, "x");
            encode::parse(o, "x", DEFINED);
            sync(o);
        }),
        round(1, |o| encode::query(o, "set search_path = hidden, public")),
        round(1, |o| {
            encode::bind(o, "", "x");
            encode::execute(o, "", 0);
            sync(o);
        }),
    ];
    for (what, rounds) in [("a probe's Sync", desync), ("a reserved name", borrow)] {
        let mut raw = Raw::login(gw.pg_port, "app-db", ALICE_TOKEN).unwrap();
        let seen = play(&mut raw, &rounds);
        assert!(
            !shows_marker(&seen),
            "{what}: the forbidden table reached the client: {}",
            String::from_utf8_lossy(&seen)
        );
    }
}
