//! `/api/openapi.json`: an OpenAPI 3.1 document generated from the
//! handlers. Every operation it lists is served (not the router's
//! fallback), and every API path the CLI calls is in it.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::common::*;

/// `METHOD path` with each `{param}` as `x`: the status, and whether the
/// body is empty (the router's fallback answers 404 with no body; the
/// API's own 404s say why in JSON).
fn call(gw: &portcullis_testkit::Gateway, method: &str, path: &str) -> (u16, bool) {
    let concrete: String = path
        .split('/')
        .map(|seg| if seg.starts_with('{') { "1" } else { seg })
        .collect::<Vec<_>>()
        .join("/");
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .arg(format!("{}{concrete}", gw.api()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.trim().is_empty())
}

/// The API paths the CLI's sources name, `{…}` for each formatted part.
fn cli_paths() -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for prefix in ["/api/", "/oauth/"] {
                let mut rest = line;
                while let Some(at) = rest.find(prefix) {
                    let tail = &rest[at..];
                    let end = tail
                        .find(|c: char| !(c.is_ascii_alphanumeric() || "/{}_-.".contains(c)))
                        .unwrap_or(tail.len());
                    found.insert(tail[..end].trim_end_matches('/').to_owned());
                    rest = &tail[end..];
                }
            }
        }
    }
    found
}

/// Whether spec path `spec` can be CLI path `cli` (either's `{…}` matches
/// any one segment).
fn same_route(spec: &str, cli: &str) -> bool {
    let (a, b): (Vec<_>, Vec<_>) = (spec.split('/').collect(), cli.split('/').collect());
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(x, y)| x == y || x.starts_with('{') || y.starts_with('{'))
}

#[test]
fn the_openapi_document_lists_every_route_and_every_route_it_lists_is_served() {
    let gw = app_gateway();
    let (code, body) = curl(&gw, "/api/openapi.json", None);
    assert_eq!(code, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_none() {
                continue;
            }
            operations += 1;
            let (status, empty) = call(&gw, &method.to_uppercase(), path);
            assert!(
                status != 405 && !(status == 404 && empty),
                "{method} {path} is in the document but not served ({status})"
            );
        }
    }
    assert!(operations >= 19, "only {operations} operations");
    // A route the router lacks is the fallback's empty 404.
    let (status, empty) = call(&gw, "GET", "/api/no-such-route");
    assert!(status == 404 && empty);

    let cli = cli_paths();
    assert!(cli.contains("/api/reviews"), "{cli:?}");
    for used in &cli {
        assert!(
            paths.keys().any(|p| same_route(p, used)),
            "the CLI calls {used}, which the document does not list"
        );
    }
    // Request bodies and responses are typed, not left blank.
    let review = &doc["components"]["schemas"]["Review"];
    assert!(review["properties"]["statement"].is_object(), "{review}");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}
