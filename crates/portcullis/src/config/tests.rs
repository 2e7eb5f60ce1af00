use super::*;

const EXAMPLE: &str = r#"
data_dir = "./portcullis-data"

[listen]
postgres = "127.0.0.1:15432"
api = "127.0.0.1:8099"

[[tokens]]
user = "alice"
groups = ["engineering"]
token = "alice-dev-token"

[[tokens]]
user = "bob"
token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

[[connections]]
name = "app-db"
kind = "postgres"
upstream = "127.0.0.1:5432"
database = "app"
user = "portcullis_reader"
password_env = "PORTCULLIS_TEST_CONFIG_PASSWORD"

[policy]
dir = "./policies"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/portcullis/portcullis.toml"))
}

#[test]
fn the_documented_example_loads() {
    std::env::set_var("PORTCULLIS_TEST_CONFIG_PASSWORD", "s3cret-value");
    let c = parse(EXAMPLE).unwrap();
    assert_eq!(c.tokens.len(), 2);
    assert_eq!(
        c.connections[0].password.as_ref().unwrap().expose(),
        "s3cret-value"
    );
    assert!(c.data_dir.ends_with("portcullis-data"));
    assert!(c.policy_dir.is_absolute());
    // The secret never shows in Debug output.
    assert!(!format!("{c:?}").contains("s3cret-value"));
    // Limits are checked once the password resolves (it does here).
    let e = parse(&format!(
        "{EXAMPLE}\n[limits]\nmax_unanswered_messages = 8\n"
    ))
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "/etc/portcullis/portcullis.toml: limits.max_unanswered_messages: must be at least 64"
    );
}

#[test]
fn errors_name_file_key_and_problem() {
    // Every error below is found before the password is resolved, so this
    // test leaves the variable alone (tests run in parallel).
    let e = parse(&EXAMPLE.replace(
        "PORTCULLIS_TEST_CONFIG_PASSWORD",
        "PORTCULLIS_UNSET_VAR_FOR_TEST",
    ))
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "/etc/portcullis/portcullis.toml: connections[0].password_env: environment variable PORTCULLIS_UNSET_VAR_FOR_TEST is not set"
    );
    let e = parse(&EXAMPLE.replace("kind = \"postgres\"", "kind = \"oracle\""))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("connections[0].kind: unsupported kind \"oracle\""),
        "{e}"
    );
    let e = parse(&EXAMPLE.replace("token = \"alice-dev-token\"", "tokn = \"x\""))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/etc/portcullis/portcullis.toml: line "),
        "{e}"
    );
    assert!(e.contains("unknown field `tokn`"), "{e}");
    let e = parse(&EXAMPLE.replace("127.0.0.1:15432", "nope"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("listen.postgres: \"nope\" is not an address:port"),
        "{e}"
    );
}

#[test]
fn identity_sections_are_validated() {
    let oidc = |body: &str| {
        format!("{EXAMPLE}\n{body}")
            .replace("password_env = \"PORTCULLIS_TEST_CONFIG_PASSWORD\"\n", "")
    };
    let ok = parse(&oidc(
        "[[oidc]]\nissuer = \"https://idp.example.com/\"\naudience = [\"portcullis\", \"cli\"]\n\
         user_claim = \"email\"\ngroups_claim = \"realm_access.roles\"\n\
         [[oidc.rules]]\nclaims = { repository = \"acme/*\" }\ngroups = [\"ci\"]\n\
         [login]\nissuer = \"https://idp.example.com\"\nclient_id = \"cli\"\n",
    ))
    .unwrap();
    let i = &ok.identity.issuers[0];
    assert_eq!(i.issuer, "https://idp.example.com");
    assert_eq!(i.audiences, vec!["portcullis", "cli"]);
    assert_eq!(
        i.rules[0].claims,
        vec![("repository".to_owned(), "acme/*".to_owned())]
    );
    let login = ok.identity.login.as_ref().unwrap();
    assert_eq!(login.postgres.as_deref(), Some("127.0.0.1:15432"));

    let e = parse(&oidc(
        "[[oidc]]\nissuer = \"http://idp.example.com\"\naudience = \"x\"\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("oidc[0].issuer: \"http://idp.example.com\" must use https"),
        "{e}"
    );
    let e = parse(&oidc(
        "[[oidc]]\nissuer = \"https://idp\"\naudience = \"portcullis\"\n[login]\nissuer = \"https://idp\"\nclient_id = \"cli\"\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("login.client_id: ID tokens for \"cli\" would be refused"),
        "{e}"
    );
    let e = parse(&oidc(
        "[[oidc]]\nissuer = \"https://idp\"\naudience = \"a\"\nrequire_rule = true\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("oidc[0].require_rule: is set but no [[oidc.rules]] are given"),
        "{e}"
    );
    let e = parse(&oidc("[token_exchange]\nttl_secs = 5\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("token_exchange.ttl_secs"), "{e}");
}

/// The config loader on mutated files: every input is either a config or
/// an error that names the file and a key, never a panic, and no error
/// quotes a secret it read.
#[test]
fn fuzzed_config_files_are_refused_with_a_reason() {
    std::env::set_var("PORTCULLIS_TEST_CONFIG_PASSWORD", "s3cret-value");
    let masking = r#"
[masking]
detectors = ["email", "credit_card"]
on_derived = "deny"
[[masking.columns]]
connection = "app-db"
column = "public.users.email"
class = "email"
strategy = "hash"
"#;
    let seeds = vec![
        EXAMPLE.as_bytes().to_vec(),
        format!("{EXAMPLE}{masking}").into_bytes(),
    ];
    let dict: &[&[u8]] = &[
        b"\n[",
        b"]\n",
        b"\"",
        b" = ",
        b"[[tokens]]\n",
        b"[limits]\nmax_message_bytes = 1\n",
        b"[[oidc]]\nissuer = \"http://x\"\naudience = \"a\"\n",
        b"strategy = \"nope\"\n",
        b"\xff",
    ];
    let r = portcullis_fuzz::fuzz("config", &seeds, dict, |input| {
        let Ok(text) = std::str::from_utf8(input) else {
            return;
        };
        if let Err(e) = parse(text) {
            let shown = e.to_string();
            assert!(
                shown.starts_with("/etc/portcullis/portcullis.toml: "),
                "{shown}"
            );
            assert!(!shown.contains("s3cret-value"), "{shown}");
        }
    });
    assert!(r.runs > 20, "{r:?}");
}
