use super::*;

fn found(d: Detector, text: &str) -> Vec<String> {
    let s = Scanner::new(&[d]).unwrap();
    let mut out = Vec::new();
    s.scan(text.as_bytes(), &mut out);
    out.iter()
        .map(|f| text[f.start..f.end].to_owned())
        .collect()
}

fn all(text: &str) -> Vec<(Detector, String)> {
    let s = Scanner::new(&Detector::ALL).unwrap();
    let mut out = Vec::new();
    s.scan(text.as_bytes(), &mut out);
    out.iter()
        .map(|f| (f.detector, text[f.start..f.end].to_owned()))
        .collect()
}

#[test]
fn email_true_and_false_positives() {
    assert_eq!(
        found(
            Detector::Email,
            "write to alice.o'hara+x@mail.example.co.uk today"
        ),
        vec!["hara+x@mail.example.co.uk"]
    );
    assert_eq!(
        found(Detector::Email, "bob@example.com"),
        vec!["bob@example.com"]
    );
    assert!(found(Detector::Email, "user@localhost").is_empty());
    assert!(found(Detector::Email, "@example.com and a@b").is_empty());
    assert!(found(Detector::Email, "version 1.2.3@4").is_empty());
}

#[test]
fn credit_cards_need_the_luhn_check() {
    assert_eq!(
        found(Detector::CreditCard, "card 4111111111111111."),
        vec!["4111111111111111"]
    );
    assert_eq!(
        found(Detector::CreditCard, "4111 1111 1111 1111"),
        vec!["4111 1111 1111 1111"]
    );
    assert_eq!(
        found(Detector::CreditCard, "5500-0000-0000-0004"),
        vec!["5500-0000-0000-0004"]
    );
    assert_eq!(
        found(Detector::CreditCard, "378282246310005"),
        vec!["378282246310005"]
    );
    // One digit off: not a card.
    assert!(found(Detector::CreditCard, "4111111111111112").is_empty());
    // Too short, and a timestamp-like run that fails the check.
    assert!(found(Detector::CreditCard, "order 123456789012").is_empty());
    assert!(found(Detector::CreditCard, "20261128184500124").is_empty());
}

#[test]
fn ibans_need_the_mod_97_check() {
    assert_eq!(
        found(Detector::Iban, "GB82WEST12345698765432"),
        vec!["GB82WEST12345698765432"]
    );
    assert_eq!(
        found(Detector::Iban, "pay DE89 3704 0044 0532 0130 00 now"),
        vec!["DE89 3704 0044 0532 0130 00"]
    );
    assert!(found(Detector::Iban, "GB83WEST12345698765432").is_empty());
    assert!(found(Detector::Iban, "AB12CDEFGHIJKLMNOP").is_empty());
}

#[test]
fn ssns_of_valid_ranges_only() {
    assert_eq!(
        found(Detector::UsSsn, "ssn 123-45-6789"),
        vec!["123-45-6789"]
    );
    assert!(found(Detector::UsSsn, "000-12-3456").is_empty());
    assert!(found(Detector::UsSsn, "666-12-3456").is_empty());
    assert!(found(Detector::UsSsn, "912-12-3456").is_empty());
    assert!(found(Detector::UsSsn, "123-00-3456").is_empty());
    assert!(found(Detector::UsSsn, "2026-11-28").is_empty());
}

#[test]
fn phones_with_separators_or_a_country_code() {
    assert_eq!(
        found(Detector::Phone, "call +44 20 7946 0958"),
        vec!["+44 20 7946 0958"]
    );
    assert_eq!(
        found(Detector::Phone, "(415) 555-0132"),
        vec!["(415) 555-0132"]
    );
    assert_eq!(found(Detector::Phone, "415-555-0132"), vec!["415-555-0132"]);
    assert_eq!(found(Detector::Phone, "+14155550132"), vec!["+14155550132"]);
    assert!(found(Detector::Phone, "4155550132").is_empty());
    assert!(found(Detector::Phone, "version 1.2.3").is_empty());
    assert!(found(Detector::Phone, "2026-11-28").is_empty());
}

#[test]
fn jwts_aws_keys_and_private_keys() {
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz";
    assert_eq!(found(Detector::Jwt, &format!("Bearer {jwt}")), vec![jwt]);
    assert!(found(Detector::Jwt, "eyJhbGciOiJIUzI1NiJ9 alone").is_empty());
    assert_eq!(
        found(Detector::AwsAccessKey, "key=AKIAIOSFODNN7EXAMPLE;"),
        vec!["AKIAIOSFODNN7EXAMPLE"]
    );
    assert!(found(Detector::AwsAccessKey, "AKIAIOSFODNN7EXAMPL").is_empty());
    assert!(found(Detector::AwsAccessKey, "XAKIAIOSFODNN7EXAMPLE").is_empty());
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----";
    assert_eq!(
        found(Detector::PrivateKey, &format!("x {pem} y")),
        vec![pem]
    );
    // Cut short: masked to the end of the value.
    let cut = "-----BEGIN RSA PRIVATE KEY-----\nMIIEvQ";
    assert_eq!(found(Detector::PrivateKey, cut), vec![cut]);
    assert!(found(Detector::PrivateKey, "-----BEGIN PUBLIC KEY-----").is_empty());
}

#[test]
fn one_pass_finds_every_kind_in_order() {
    let text = "alice@example.com 4111111111111111 GB82WEST12345698765432 123-45-6789 \
                +44 20 7946 0958 AKIAIOSFODNN7EXAMPLE";
    let kinds: Vec<Detector> = all(text).into_iter().map(|(d, _)| d).collect();
    assert_eq!(
        kinds,
        vec![
            Detector::Email,
            Detector::CreditCard,
            Detector::Iban,
            Detector::UsSsn,
            Detector::Phone,
            Detector::AwsAccessKey
        ]
    );
    assert!(all("nothing to see here, order 42 shipped 2026-11-28").is_empty());
}

#[test]
fn an_empty_scanner_finds_nothing() {
    let s = Scanner::new(&[]).unwrap();
    assert!(!s.is_active());
    let mut out = Vec::new();
    s.scan(b"alice@example.com", &mut out);
    assert!(out.is_empty());
}

#[test]
fn names_round_trip() {
    for d in Detector::ALL {
        assert_eq!(Detector::from_name(d.name()), Some(d));
    }
    assert_eq!(Detector::from_name("passport"), None);
}
