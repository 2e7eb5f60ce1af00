//! Masking: what in a result is sensitive, and what the reader sees instead.
//!
//! Protocol-neutral. An adapter tells, per output column, how the column
//! was derived ([`Treatment`]) and whether a replacement string is a
//! faithful value of its type ([`ValueKind`]); this module masks values
//! and counts what it masked. Classified columns are masked whole with
//! their strategy; values derived from them are masked whole; everything
//! else passes the content detectors, whose findings are masked in place.
//! Where a replacement would not be a value of the column's type, the value
//! becomes NULL: never the clear value.

pub mod detectors;
pub mod strategy;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use detectors::{Detector, Finding, ScanCache, Scanner, ScannerError};
pub use strategy::{HashKey, Strategy, REDACTED};

/// What to do with an output computed from a sensitive column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDerived {
    /// Mask the whole output value.
    #[default]
    Mask,
    /// Refuse the statement.
    Deny,
}

/// What to do with conditions on a column the reader may not unmask:
/// WHERE, JOIN, HAVING, ORDER BY, GROUP BY, DISTINCT, LIMIT and OFFSET,
/// CASE tests, set-returning functions in the target list, functions with
/// effects or of users, and casts to types other than text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnPredicate {
    /// Let them run: the weaker choice. The reader learns about masked
    /// values by filtering, sorting, grouping, limiting, branching on them
    /// or passing them to functions that act (`where ssn like '1%'`
    /// answers one bit per row).
    Allow,
    /// Refuse the statement (the default).
    #[default]
    Deny,
}

/// A classified column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensitiveColumn {
    /// The connection it lives in.
    pub connection: String,
    /// Schema, table and column, as the catalog spells them.
    pub schema: String,
    /// The table.
    pub table: String,
    /// The column.
    pub column: String,
    /// What kind of data it holds (`email`, …): chooses the partial form
    /// and labels the audit counts.
    pub class: String,
    /// How it is shown to someone who may not unmask it.
    pub strategy: Strategy,
    qualified: String,
}

impl SensitiveColumn {
    /// A classified column.
    pub fn new(
        connection: &str,
        schema: &str,
        table: &str,
        column: &str,
        class: &str,
        strategy: Strategy,
    ) -> Self {
        Self {
            connection: connection.to_owned(),
            schema: schema.to_owned(),
            table: table.to_owned(),
            column: column.to_owned(),
            class: class.to_owned(),
            strategy,
            qualified: format!("{schema}.{table}.{column}"),
        }
    }

    /// `schema.table.column`, as in `Column::"<connection>/<this>"`.
    pub fn qualified(&self) -> &str {
        &self.qualified
    }

    /// `schema.table`.
    pub fn table_name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// The masking configuration in force.
#[derive(Debug, Clone, Default)]
pub struct MaskingRules {
    /// Content detectors run over every text value.
    pub detectors: Vec<Detector>,
    /// How a detector's finding is shown.
    pub detector_strategy: Strategy,
    /// Outputs computed from sensitive columns.
    pub on_derived: OnDerived,
    /// Conditions on sensitive columns.
    pub on_predicate: OnPredicate,
    /// Classified columns.
    pub columns: Vec<Arc<SensitiveColumn>>,
}

/// Masking, ready to apply: the rules, the compiled detectors, the hash key.
#[derive(Debug, Clone)]
pub struct Masking {
    /// The rules.
    pub rules: MaskingRules,
    scanner: Scanner,
    key: HashKey,
}

impl Masking {
    /// Compiles `rules`; `key` backs the `hash` strategy.
    pub fn new(rules: MaskingRules, key: HashKey) -> Result<Self, ScannerError> {
        let scanner = Scanner::new(&rules.detectors)?;
        Ok(Self {
            rules,
            scanner,
            key,
        })
    }

    /// Whether anything is configured at all.
    pub fn is_active(&self) -> bool {
        self.scanner.is_active() || !self.rules.columns.is_empty()
    }

    /// Whether content detectors run.
    pub fn scans(&self) -> bool {
        self.scanner.is_active()
    }

    /// The classified columns of `connection`.
    pub fn columns_of<'a>(
        &'a self,
        connection: &'a str,
    ) -> impl Iterator<Item = &'a Arc<SensitiveColumn>> + 'a {
        self.rules
            .columns
            .iter()
            .filter(move |c| c.connection == connection)
    }

    /// Scratch space for [`Masking::mask_value`], one per session.
    pub fn scratch(&self) -> Scratch {
        Scratch {
            findings: Vec::new(),
            cache: self.scanner.cache(),
        }
    }

    /// Masks one value of a column treated as `treatment`. `scratch` is
    /// reused between calls so a clean value costs no allocation and no lock.
    pub fn mask_value(
        &self,
        treatment: &Treatment,
        kind: ValueKind,
        value: &[u8],
        counts: &mut MaskCounts,
        scratch: &mut Scratch,
    ) -> Masked {
        match treatment {
            Treatment::Column(col) => {
                counts.add(&col.class, col.qualified());
                match strategy::apply(col.strategy, &col.class, value, &self.key) {
                    Some(v) if kind == ValueKind::Text => Masked::Replace(v),
                    _ => Masked::Null,
                }
            }
            Treatment::Derived => {
                counts.add("derived", "derived");
                match kind {
                    ValueKind::Text => Masked::Replace(REDACTED.as_bytes().to_vec()),
                    _ => Masked::Null,
                }
            }
            Treatment::Scan => {
                if kind == ValueKind::Unscanned {
                    return Masked::Unchanged;
                }
                let Scratch { findings, cache } = scratch;
                findings.clear();
                self.scanner.scan_with(cache, value, findings);
                if findings.is_empty() {
                    return Masked::Unchanged;
                }
                for f in findings.iter() {
                    counts.add(f.detector.name(), "detected");
                }
                if kind == ValueKind::Opaque {
                    return Masked::Null;
                }
                // Text and structured text alike: replacements are made of
                // characters that need no quoting in JSON strings, XML text
                // or array elements.
                let mut out = Vec::with_capacity(value.len());
                let mut at = 0;
                for f in findings.iter() {
                    out.extend_from_slice(&value[at..f.start]);
                    match strategy::apply(
                        self.rules.detector_strategy,
                        f.detector.name(),
                        &value[f.start..f.end],
                        &self.key,
                    ) {
                        Some(r) => out.extend_from_slice(&r),
                        None => return Masked::Null,
                    }
                    at = f.end;
                }
                out.extend_from_slice(&value[at..]);
                Masked::Replace(out)
            }
        }
    }

    /// Masks detector findings inside free text (a notification payload,
    /// an error message): returns the text to send instead, if any.
    pub fn mask_text(&self, text: &str, counts: &mut MaskCounts) -> Option<String> {
        let mut scratch = self.scratch();
        match self.mask_value(
            &Treatment::Scan,
            ValueKind::Text,
            text.as_bytes(),
            counts,
            &mut scratch,
        ) {
            Masked::Unchanged => None,
            Masked::Replace(v) => Some(String::from_utf8_lossy(&v).into_owned()),
            Masked::Null => Some(REDACTED.to_owned()),
        }
    }
}

/// A session's scratch space for masking: findings and the detectors'
/// automaton cache.
#[derive(Debug, Clone)]
pub struct Scratch {
    findings: Vec<Finding>,
    cache: ScanCache,
}

/// How an output column relates to sensitive data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Treatment {
    /// Nothing known to be sensitive: content detectors only.
    Scan,
    /// A classified column the reader may not unmask.
    Column(Arc<SensitiveColumn>),
    /// A value computed from (or that may hide) sensitive columns.
    Derived,
}

/// What a replacement may look like in a column of some type and format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Plain text: any replacement string is a valid value.
    Text,
    /// Text with a grammar (JSON, XML, arrays and records in text form):
    /// a finding can be replaced inside it, but a whole-value replacement
    /// would not parse, so whole values become NULL.
    Structured,
    /// Bytes the gateway does not interpret (binary encodings): scanned,
    /// and NULL if anything is found or must be masked.
    Opaque,
    /// Numbers, dates, identifiers and other types that cannot carry free
    /// text: not scanned (a card detector would fire on random ids), and
    /// NULL when masked whole.
    Unscanned,
}

/// What became of one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Masked {
    /// Sent as it was.
    Unchanged,
    /// Sent as these bytes.
    Replace(Vec<u8>),
    /// Sent as NULL.
    Null,
}

/// How many values were masked, per class and per column, for the audit
/// record. Detector findings count under the column label `detected`;
/// derived outputs under class and column `derived`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MaskCounts {
    /// Values masked per class.
    pub by_class: BTreeMap<String, u64>,
    /// Values masked per column (`schema.table.column`).
    pub by_column: BTreeMap<String, u64>,
}

impl MaskCounts {
    /// Counts one masked value.
    pub fn add(&mut self, class: &str, column: &str) {
        bump(&mut self.by_class, class);
        bump(&mut self.by_column, column);
    }

    /// Whether nothing was masked.
    pub fn is_empty(&self) -> bool {
        self.by_class.is_empty()
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &MaskCounts) {
        for (k, v) in &other.by_class {
            *self.by_class.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.by_column {
            *self.by_column.entry(k.clone()).or_default() += v;
        }
    }

    /// Total values masked.
    pub fn total(&self) -> u64 {
        self.by_class.values().sum()
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    // Lookup before insert: the key is almost always there already, and
    // this runs per masked value.
    if let Some(n) = map.get_mut(key) {
        *n += 1;
    } else {
        map.insert(key.to_owned(), 1);
    }
}

#[cfg(test)]
mod tests;
