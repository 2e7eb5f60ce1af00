//! Token verification per new connection, with the issuer's keys cached:
//! the cost the gateway adds to every login. Target: under 100 µs.
//!
//! RS256 uses a 2048-bit key made by `openssl genrsa`; ES256 and Ed25519
//! keys are made by ring. Each case runs the whole authenticator path:
//! routing by issuer and audience, key lookup, signature, time claims,
//! claim mapping and the revocation check.

#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis_core::identity::jwks::{KeySet, Refresh};
use portcullis_core::identity::{now_secs, Credential, OidcIssuer, TokenIssuer};
use portcullis_core::{Authenticator, GatewayAuthenticator, Identity, StaticToken, StaticTokens};
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

const ISSUER: &str = "https://idp.example.com";

fn rsa_key() -> (EncodingKey, String) {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("rsa.pem");
    let ok = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&pem)
        .arg("2048")
        .output()
        .expect("openssl must be installed")
        .status
        .success();
    assert!(ok, "openssl genrsa failed");
    let text = std::fs::read_to_string(&pem).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body).unwrap();
    let modulus = Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&pem)
        .output()
        .unwrap();
    let hexed = String::from_utf8(modulus.stdout).unwrap();
    let n = hex::decode(hexed.trim().trim_start_matches("Modulus=")).unwrap();
    (EncodingKey::from_rsa_der(&der), URL_SAFE_NO_PAD.encode(n))
}

fn token(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    let now = now_secs();
    let claims = json!({
        "iss": ISSUER, "aud": "portcullis", "sub": "alice", "email": "alice@example.com",
        "groups": ["engineering", "oncall"], "iat": now, "exp": now + 3600,
    });
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

fn bench(c: &mut Criterion) {
    let rng = ring::rand::SystemRandom::new();
    let (rsa, n) = rsa_key();
    let ec_doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec_pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec_doc.as_ref(), &rng).unwrap();
    let point = ec_pair.public_key().as_ref();
    let (x, y) = (
        URL_SAFE_NO_PAD.encode(&point[1..33]),
        URL_SAFE_NO_PAD.encode(&point[33..65]),
    );
    let ed_doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed_pair = Ed25519KeyPair::from_pkcs8(ed_doc.as_ref()).unwrap();
    let ed_x = URL_SAFE_NO_PAD.encode(ed_pair.public_key().as_ref());

    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "rsa", "alg": "RS256", "use": "sig", "n": n, "e": "AQAB"},
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": x, "y": y},
        {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": ed_x},
    ]});
    let gateway = Arc::new(
        TokenIssuer::from_pkcs8(
            Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref(),
            "portcullis",
            Duration::from_secs(900),
        )
        .unwrap(),
    );
    let auth = GatewayAuthenticator::new(
        StaticTokens::new(
            (0..100)
                .map(|i| {
                    StaticToken::from_clear(
                        &format!("user{i}"),
                        vec![],
                        &format!("static-token-{i:04}"),
                    )
                })
                .collect(),
        ),
        vec![OidcIssuer {
            issuer: ISSUER.into(),
            audiences: vec!["portcullis".into()],
            user_claim: "email".into(),
            groups_claim: Some("groups".into()),
            rules: vec![],
            require_rule: false,
            leeway_secs: 30,
            jwks_uri: None,
        }],
        Some(gateway.clone()),
        Refresh::default(),
    );
    assert!(auth.preload_keys(ISSUER, KeySet::from_jwks(&jwks).unwrap()));
    // Some revocations in force, so the check is not the empty fast path.
    for i in 0..100 {
        auth.revocations().revoke(&format!("someone{i}"), 0);
    }

    let rs = token(Algorithm::RS256, "rsa", &rsa);
    let es = token(
        Algorithm::ES256,
        "ec",
        &EncodingKey::from_ec_der(ec_doc.as_ref()),
    );
    let ed = token(
        Algorithm::EdDSA,
        "ed",
        &EncodingKey::from_ed_der(ed_doc.as_ref()),
    );
    let alice = Identity {
        user: "alice@example.com".into(),
        groups: vec!["engineering".into()],
        method: "oidc",
        credential: Credential {
            expires_at: Some(now_secs() + 3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let agent = Identity {
        user: "agent-x".into(),
        method: "oidc",
        ..Default::default()
    };
    let exchanged = gateway.issue(&alice, Some(&agent)).unwrap().token;

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("authenticate");
    for (name, t) in [
        ("oidc_rs256", rs.as_str()),
        ("oidc_es256", es.as_str()),
        ("oidc_eddsa", ed.as_str()),
        ("gateway_token_eddsa", exchanged.as_str()),
        ("static_token_of_100", "static-token-0099"),
    ] {
        let id = rt.block_on(auth.authenticate(t)).unwrap();
        assert!(!id.user.is_empty());
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(auth.authenticate(std::hint::black_box(t)))
                    .unwrap()
            })
        });
    }
    g.finish();
    c.bench_function("token_exchange_issue", |b| {
        b.iter(|| gateway.issue(&alice, Some(&agent)).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
