//! `[masking]`: detectors, derived-value and condition rules, and the
//! classified columns, validated into the core's [`MaskingRules`].

use std::sync::Arc;

use portcullis_core::masking::{
    Detector, MaskingRules, OnDerived, OnPredicate, SensitiveColumn, Strategy,
};
use serde::Deserialize;

/// `[masking]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskingConfig {
    /// Content detectors run over every text value.
    pub detectors: Vec<String>,
    /// How detector findings are shown: redact (default), partial or hash.
    pub detector_strategy: Option<Strategy>,
    /// `mask` (default) or `deny`.
    pub on_derived: Option<OnDerived>,
    /// `allow` (default) or `deny`.
    pub on_predicate: Option<OnPredicate>,
    /// `[[masking.columns]]`.
    pub columns: Vec<ColumnConfig>,
}

/// `[[masking.columns]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// The connection the column lives in.
    pub connection: String,
    /// `schema.table.column`.
    pub column: String,
    /// What the column holds (`email`, `credit_card`, …, or any label).
    pub class: String,
    /// redact (default), partial, hash or null.
    #[serde(default)]
    pub strategy: Strategy,
}

/// Validates `[masking]`; errors are `(key, message)`.
pub fn validate(
    raw: MaskingConfig,
    connections: &[String],
) -> Result<MaskingRules, (String, String)> {
    let mut detectors = Vec::new();
    for (i, d) in raw.detectors.iter().enumerate() {
        let det = Detector::from_name(d).ok_or_else(|| {
            let known: Vec<&str> = Detector::ALL.iter().map(|d| d.name()).collect();
            (
                format!("masking.detectors[{i}]"),
                format!("unknown detector {d:?} (known: {})", known.join(", ")),
            )
        })?;
        detectors.push(det);
    }
    let detector_strategy = raw.detector_strategy.unwrap_or_default();
    if detector_strategy == Strategy::Null {
        return Err((
            "masking.detector_strategy".into(),
            "\"null\" cannot replace part of a value; use redact, partial or hash".into(),
        ));
    }
    let mut columns: Vec<Arc<SensitiveColumn>> = Vec::new();
    for (i, c) in raw.columns.iter().enumerate() {
        let key = format!("masking.columns[{i}]");
        if !connections.contains(&c.connection) {
            return Err((
                format!("{key}.connection"),
                format!("{:?} is not a configured connection", c.connection),
            ));
        }
        let parts: Vec<&str> = c.column.split('.').collect();
        let [schema, table, column] = parts.as_slice() else {
            return Err((
                format!("{key}.column"),
                format!("{:?} must be schema.table.column", c.column),
            ));
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err((
                format!("{key}.column"),
                format!("{:?} must be schema.table.column", c.column),
            ));
        }
        if c.class.is_empty() {
            return Err((format!("{key}.class"), "must not be empty".into()));
        }
        let col = SensitiveColumn::new(&c.connection, schema, table, column, &c.class, c.strategy);
        if columns.iter().any(|o| **o == col) {
            return Err((
                format!("{key}.column"),
                format!("{:?} is listed twice", c.column),
            ));
        }
        columns.push(Arc::new(col));
    }
    Ok(MaskingRules {
        detectors,
        detector_strategy,
        on_derived: raw.on_derived.unwrap_or_default(),
        on_predicate: raw.on_predicate.unwrap_or_default(),
        columns,
    })
}
