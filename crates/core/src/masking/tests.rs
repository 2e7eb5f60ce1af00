use super::*;

fn masking(detector_strategy: Strategy) -> Masking {
    Masking::new(
        MaskingRules {
            detectors: Detector::ALL.to_vec(),
            detector_strategy,
            ..MaskingRules::default()
        },
        HashKey::new(vec![1; 32]),
    )
    .unwrap()
}

fn email_column(strategy: Strategy) -> Arc<SensitiveColumn> {
    Arc::new(SensitiveColumn::new(
        "app-db", "public", "users", "email", "email", strategy,
    ))
}

#[test]
fn classified_columns_are_masked_whole_and_counted() {
    let m = masking(Strategy::Redact);
    let mut counts = MaskCounts::default();
    let mut scratch = m.scratch();
    let t = Treatment::Column(email_column(Strategy::Partial));
    assert_eq!(
        m.mask_value(
            &t,
            ValueKind::Text,
            b"alice@example.com",
            &mut counts,
            &mut scratch
        ),
        Masked::Replace(b"****@example.com".to_vec())
    );
    // A replacement that would not be a value of the type becomes NULL.
    assert_eq!(
        m.mask_value(
            &t,
            ValueKind::Opaque,
            b"\x00\x01",
            &mut counts,
            &mut scratch
        ),
        Masked::Null
    );
    assert_eq!(counts.by_class.get("email"), Some(&2));
    assert_eq!(counts.by_column.get("public.users.email"), Some(&2));
}

#[test]
fn derived_values_are_masked_whole() {
    let m = masking(Strategy::Redact);
    let mut counts = MaskCounts::default();
    let mut scratch = m.scratch();
    assert_eq!(
        m.mask_value(
            &Treatment::Derived,
            ValueKind::Text,
            b"ALICE@EXAMPLE.COM",
            &mut counts,
            &mut scratch
        ),
        Masked::Replace(b"****".to_vec())
    );
    assert_eq!(
        m.mask_value(
            &Treatment::Derived,
            ValueKind::Opaque,
            b"17",
            &mut counts,
            &mut scratch
        ),
        Masked::Null
    );
    assert_eq!(counts.total(), 2);
}

#[test]
fn detector_findings_are_masked_in_place() {
    let m = masking(Strategy::Partial);
    let mut counts = MaskCounts::default();
    let mut scratch = m.scratch();
    let v = b"contact alice@example.com, card 4111 1111 1111 1111.";
    assert_eq!(
        m.mask_value(
            &Treatment::Scan,
            ValueKind::Text,
            v,
            &mut counts,
            &mut scratch
        ),
        Masked::Replace(b"contact ****@example.com, card ****1111.".to_vec())
    );
    assert_eq!(counts.by_class.get("credit_card"), Some(&1));
    assert_eq!(counts.by_column.get("detected"), Some(&2));
    // Clean values are untouched; opaque ones with a finding are nulled.
    assert_eq!(
        m.mask_value(
            &Treatment::Scan,
            ValueKind::Text,
            b"order 42",
            &mut counts,
            &mut scratch
        ),
        Masked::Unchanged
    );
    assert_eq!(
        m.mask_value(
            &Treatment::Scan,
            ValueKind::Opaque,
            b"4111111111111111",
            &mut counts,
            &mut scratch
        ),
        Masked::Null
    );
}

#[test]
fn free_text_is_scanned() {
    let m = masking(Strategy::Redact);
    let mut counts = MaskCounts::default();
    assert_eq!(
        m.mask_text("Key (email)=(bob@example.com) already exists.", &mut counts)
            .as_deref(),
        Some("Key (email)=(****) already exists.")
    );
    assert_eq!(m.mask_text("nothing here", &mut counts), None);
}

#[test]
fn counts_merge() {
    let mut a = MaskCounts::default();
    a.add("email", "public.users.email");
    let mut b = MaskCounts::default();
    b.add("email", "public.users.email");
    b.add("us_ssn", "detected");
    a.merge(&b);
    assert_eq!(a.total(), 3);
    assert_eq!(a.by_column.get("public.users.email"), Some(&2));
}
