//! Masking is strict by default: a masked value reaches the client only
//! as a masked output. Whatever lets it steer which or how many rows come
//! back, or whether the statement fails, is refused. Each probe first
//! shows, straight against PostgreSQL, that it tells two values apart.

use portcullis_testkit::Gateway;

use crate::common::*;

const SSN: &str = "123-45-6789";

fn strict_gateway() -> Gateway {
    static SEED: std::sync::Once = std::sync::Once::new();
    SEED.call_once(|| {
        cluster().superuser_sql(
            "app",
            &format!(
                "create table strict_people (id int, name text, ssn text); \
                 insert into strict_people values (1, 'ada', '{SSN}'); \
                 grant select on strict_people to portcullis_reader, trust_user"
            ),
        );
    });
    app_gateway_with(
        SELECT_ONLY,
        r#"
[masking]
[[masking.columns]]
connection = "app-db"
column = "public.strict_people.ssn"
class = "us_ssn"
strategy = "redact"
"#,
    )
}

#[test]
fn a_masked_value_cannot_steer_rows_or_errors_by_default() {
    let gw = strict_gateway();
    // Each probe, asked of the first digit being '1' and then '9', gives
    // two different answers directly.
    for probe in [
        "select 1/(case when left(ssn, 1) = 'D' then 0 else 1 end) from strict_people",
        "select 1/(ascii(left(ssn, 1)) - ascii('D')) from strict_people",
        "select left(ssn, 1) from strict_people intersect select 'D'",
        "select name from strict_people where left(ssn, 1) = 'D'",
        "select count(*) filter (where left(ssn, 1) = 'D') from strict_people",
        "select name from strict_people group by name having min(ssn) like 'D%'",
        "select id from strict_people limit (select count(*) from strict_people where ssn like 'D%')",
    ] {
        let one = direct_psql(&probe.replace('D', "1"));
        let nine = direct_psql(&probe.replace('D', "9"));
        assert_ne!(one, nine, "{probe} tells nothing apart directly");
        for digit in ["1", "9"] {
            let sql = probe.replace('D', digit);
            let (ok, out) = alice_psql(&gw, &sql);
            assert!(!ok && out.contains("masked column"), "{sql}: {out}");
        }
    }
    // Reading it, and computing with what cannot fail, stays possible and
    // masked.
    let (ok, out) = alice_psql(
        &gw,
        "select id, ssn, upper(ssn), length(ssn) from strict_people",
    );
    assert!(ok, "{out}");
    assert!(!out.contains(SSN) && !out.contains("6789"), "{out}");
}
