//! Masking on the wire: which result column came from where, and the
//! rewriting of DataRow, CopyData, NotificationResponse and error fields.
//!
//! A [`MaskPlan`] is made with the statement's decision (so it is cached
//! with it); a [`RowMasker`] is made from the plan and the RowDescription
//! the server sends for each result set. Plain columns are traced by the
//! table OID and attribute number RowDescription reports, resolved through
//! the upstream's catalog; computed columns by what the parse tree says
//! they read. Rows are rewritten only when a value changes.

use std::sync::Arc;

use bytes::BytesMut;
use portcullis_core::masking::{
    MaskCounts, Masked, Masking, Scratch, SensitiveColumn, Treatment, ValueKind,
};
use portcullis_pg_sql::OutputColumn;
use portcullis_pg_wire::copy;
use portcullis_pg_wire::rows::{self, FieldDescription};
use portcullis_pg_wire::WireError;

use crate::catalog::ViewCatalog;

/// What masking needs to know about one allowed statement. Its fields
/// are private: only the gate makes a plan, so no code outside this crate
/// can hand a row a weaker one.
#[derive(Debug)]
pub struct MaskPlan {
    /// The masking rules and detectors.
    pub(crate) masking: Arc<Masking>,
    /// Classified columns of the connection the principal may not unmask.
    pub(crate) hidden: Arc<Vec<Arc<SensitiveColumn>>>,
    /// Whether content detectors apply (not when the principal may unmask
    /// the whole connection).
    pub(crate) scan: bool,
    /// The catalog the decision was made with.
    pub(crate) catalog: Arc<ViewCatalog>,
    /// Names of hidden columns in the relations the statement touches
    /// (views resolved): outputs computed from these are masked.
    pub(crate) exposed_names: Vec<String>,
    /// The statement's output columns, when known one by one.
    pub(crate) columns: Option<Vec<OutputColumn>>,
    /// For `COPY table TO STDOUT`: the treatment of each copied column.
    pub(crate) copy: Option<CopyPlan>,
}

/// How the columns of a text or CSV COPY are masked.
#[derive(Debug, Clone)]
pub struct CopyPlan {
    /// Per column, in order: the hidden column it is, if any.
    pub(crate) columns: Vec<Option<Arc<SensitiveColumn>>>,
    /// CSV (else the text format).
    pub(crate) csv: bool,
    /// The field delimiter.
    pub(crate) delimiter: u8,
}

impl MaskPlan {
    fn exposed(&self) -> bool {
        !self.exposed_names.is_empty()
    }

    fn reads_exposed(&self, names: &[String]) -> bool {
        names.iter().any(|n| self.exposed_names.contains(n))
    }

    /// The hidden column `schema.table`.`column`, if it is one.
    fn hidden_column(&self, table: &str, column: &str) -> Option<&Arc<SensitiveColumn>> {
        self.hidden
            .iter()
            .find(|c| c.column == column && c.table_name() == table)
    }

    /// How output column `i`, described by `f`, is treated.
    fn treatment(&self, i: usize, f: &FieldDescription, fields: usize) -> Treatment {
        if f.table_oid != 0 {
            return match self.catalog.relation(f.table_oid) {
                Some(rel) if rel.is_table() => {
                    match self.catalog.column(f.table_oid, f.column) {
                        Some(col) => match self.hidden_column(&rel.name, col) {
                            Some(h) => Treatment::Column(h.clone()),
                            None => Treatment::Scan,
                        },
                        // A system relation's column: never classified.
                        None if f.table_oid < 16384 => Treatment::Scan,
                        // A column the catalog read has not seen yet.
                        None => Treatment::Derived,
                    }
                }
                // A view's column may be computed from anything beneath it.
                Some(_) if self.exposed() => Treatment::Derived,
                Some(_) => Treatment::Scan,
                // A relation newer than the catalog read (the watcher
                // catches up within a second): fail closed.
                None if !self.hidden.is_empty() => Treatment::Derived,
                None => Treatment::Scan,
            };
        }
        if !self.exposed() {
            return Treatment::Scan;
        }
        let column = self
            .columns
            .as_ref()
            .filter(|c| c.len() == fields)
            .and_then(|c| c.get(i));
        match column {
            Some(OutputColumn::Column(n)) if !self.reads_exposed(std::slice::from_ref(n)) => {
                Treatment::Scan
            }
            Some(OutputColumn::Reads(names)) if !self.reads_exposed(names) => Treatment::Scan,
            _ => Treatment::Derived,
        }
    }

    /// Whether content detectors apply to the statement's results (not
    /// when the principal may unmask the whole connection).
    pub fn scans(&self) -> bool {
        self.scan
    }

    /// The masking rules and detectors the plan applies.
    pub fn masking(&self) -> &Arc<Masking> {
        &self.masking
    }

    /// Whether error DETAIL lines may quote hidden values (a unique
    /// violation names the duplicate key): they are withheld then.
    pub fn withholds_details(&self) -> bool {
        self.exposed()
    }
}

/// What the client may see of one value type in one format.
fn value_kind(type_oid: u32, format: i16) -> ValueKind {
    const TEXT: &[u32] = &[25, 1043, 1042, 19, 705, 18];
    const STRUCTURED_BINARY: &[u32] = &[114, 3802, 142];
    // Types that cannot carry free text: numbers, booleans, times, ids,
    // network addresses, bytea (hex in text form).
    const UNSCANNED: &[u32] = &[
        16, 17, 20, 21, 23, 26, 28, 29, 650, 700, 701, 774, 790, 829, 869, 1082, 1083, 1114, 1184,
        1186, 1266, 1560, 1562, 1700, 2950, 3220,
    ];
    if TEXT.contains(&type_oid) {
        return ValueKind::Text;
    }
    if format == 0 {
        if UNSCANNED.contains(&type_oid) {
            ValueKind::Unscanned
        } else {
            ValueKind::Structured
        }
    } else if STRUCTURED_BINARY.contains(&type_oid) {
        ValueKind::Structured
    } else {
        ValueKind::Opaque
    }
}

/// Masks the rows of one result set.
pub struct RowMasker {
    masking: Arc<Masking>,
    columns: Vec<(Treatment, ValueKind)>,
    /// Value offsets of the current row, reused across rows.
    spans: Vec<Option<(usize, usize)>>,
    /// The current row's changed values, reused across rows.
    changed: Vec<(usize, Masked)>,
}

impl RowMasker {
    /// A masker for rows described by `fields`; `None` when no value can
    /// need masking (no hidden column, nothing to scan).
    pub fn new(plan: &MaskPlan, fields: &[FieldDescription]) -> Option<Self> {
        let columns: Vec<(Treatment, ValueKind)> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let treatment = plan.treatment(i, f, fields.len());
                let kind = match treatment {
                    // Unscanned values pass a scan untouched.
                    Treatment::Scan if !plan.scan => ValueKind::Unscanned,
                    _ => value_kind(f.type_oid, f.format),
                };
                (treatment, kind)
            })
            .collect();
        let scans = plan.masking.scans() && plan.scan;
        let needed = columns.iter().any(|(t, k)| match t {
            Treatment::Scan => scans && *k != ValueKind::Unscanned,
            _ => true,
        });
        needed.then(|| Self {
            columns,
            spans: Vec::new(),
            changed: Vec::new(),
            masking: plan.masking.clone(),
        })
    }

    /// The DataRow to send instead of `body`, if any value changed.
    /// `scratch` is the session's (see [`Masking::scratch`]).
    pub fn mask_row(
        &mut self,
        body: &[u8],
        counts: &mut MaskCounts,
        scratch: &mut Scratch,
    ) -> Result<Option<BytesMut>, WireError> {
        self.spans.clear();
        rows::data_row_spans(body, &mut self.spans)?;
        if self.spans.len() != self.columns.len() {
            return Err(WireError::Invalid(
                "DataRow (column count differs from RowDescription)",
            ));
        }
        let changed = &mut self.changed;
        changed.clear();
        for (i, span) in self.spans.iter().enumerate() {
            let Some((start, end)) = *span else { continue };
            let (treatment, kind) = &self.columns[i];
            let m = self
                .masking
                .mask_value(treatment, *kind, &body[start..end], counts, scratch);
            if m != Masked::Unchanged {
                changed.push((i, m));
            }
        }
        if changed.is_empty() {
            return Ok(None);
        }
        let grown: usize = changed
            .iter()
            .map(|(_, m)| match m {
                Masked::Replace(v) => v.len(),
                _ => 0,
            })
            .sum();
        let mut out = BytesMut::with_capacity(body.len() + grown + 5);
        let mut next = changed.iter().peekable();
        let values = self.spans.iter().enumerate().map(|(i, span)| {
            if let Some((_, m)) = next.next_if(|(j, _)| *j == i) {
                return match m {
                    Masked::Replace(v) => Some(v.as_slice()),
                    _ => None,
                };
            }
            span.map(|(s, e)| &body[s..e])
        });
        rows::encode_data_row(&mut out, values);
        Ok(Some(out))
    }
}

/// Masks the rows of a text or CSV `COPY … TO STDOUT`.
pub struct CopyMasker {
    masking: Arc<Masking>,
    plan: Option<CopyPlan>,
    scan: bool,
}

impl CopyMasker {
    /// A masker for the COPY the plan describes (detectors only when the
    /// plan has no column treatment).
    pub fn new(plan: &MaskPlan) -> Self {
        Self {
            masking: plan.masking.clone(),
            plan: plan.copy.clone(),
            scan: plan.scan,
        }
    }

    /// The CopyData payload to send instead of `line`, if it changed. The
    /// server sends one row per CopyData message.
    pub fn mask_line(
        &mut self,
        line: &[u8],
        counts: &mut MaskCounts,
        scratch: &mut Scratch,
    ) -> Result<Option<Vec<u8>>, String> {
        let mut out: Option<Vec<u8>> = None;
        if let Some(plan) = &self.plan {
            if plan.columns.iter().any(Option::is_some) {
                let fields = copy::split_line(line, plan.delimiter, plan.csv);
                if fields.len() != plan.columns.len() {
                    return Err(format!(
                        "a COPY line has {} fields where {} columns were traced",
                        fields.len(),
                        plan.columns.len()
                    ));
                }
                let mut rebuilt = Vec::with_capacity(line.len());
                let mut any = false;
                for (i, (s, e)) in fields.iter().enumerate() {
                    if i > 0 {
                        rebuilt.push(plan.delimiter);
                    }
                    let raw = &line[*s..*e];
                    let is_null = if plan.csv {
                        raw.is_empty()
                    } else {
                        raw == b"\\N"
                    };
                    match plan.columns.get(i).and_then(Option::as_ref) {
                        Some(col) if !is_null => {
                            any = true;
                            let t = Treatment::Column(col.clone());
                            let value = copy::field_value(raw, plan.csv);
                            match self.masking.mask_value(
                                &t,
                                ValueKind::Text,
                                &value,
                                counts,
                                scratch,
                            ) {
                                Masked::Replace(v) => {
                                    copy::write_field(&mut rebuilt, &v, plan.csv, plan.delimiter)
                                }
                                _ => {
                                    if !plan.csv {
                                        rebuilt.extend_from_slice(b"\\N");
                                    }
                                }
                            }
                        }
                        _ => rebuilt.extend_from_slice(raw),
                    }
                }
                // The line's end (newline) lies past the last field.
                if let Some((_, e)) = fields.last() {
                    rebuilt.extend_from_slice(&line[*e..]);
                }
                if any {
                    out = Some(rebuilt);
                }
            }
        }
        if !self.scan {
            return Ok(out);
        }
        let current = out.as_deref().unwrap_or(line);
        Ok(
            match self.masking.mask_value(
                &Treatment::Scan,
                ValueKind::Structured,
                current,
                counts,
                scratch,
            ) {
                Masked::Replace(v) => Some(v),
                // Detector findings are never masked as NULL (the configuration
                // refuses it), but a line must stay a line.
                Masked::Null => Some(b"****\n".to_vec()),
                Masked::Unchanged => out,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_kinds() {
        assert_eq!(value_kind(25, 1), ValueKind::Text);
        assert_eq!(value_kind(20, 0), ValueKind::Unscanned);
        assert_eq!(value_kind(20, 1), ValueKind::Opaque);
        assert_eq!(value_kind(3802, 0), ValueKind::Structured);
        assert_eq!(value_kind(1009, 0), ValueKind::Structured);
    }
}

#[cfg(test)]
mod row_tests {
    use super::*;
    use portcullis_core::masking::{Detector, HashKey, MaskingRules, Strategy};

    fn row(vals: &[&[u8]]) -> Vec<u8> {
        let mut b = BytesMut::new();
        rows::encode_data_row(&mut b, vals.iter().map(|v| Some(*v)));
        b[5..].to_vec()
    }

    #[test]
    fn only_what_needs_it_changes() {
        let email = Arc::new(SensitiveColumn::new(
            "db",
            "public",
            "people",
            "email",
            "email",
            Strategy::Partial,
        ));
        let masking = Arc::new(
            Masking::new(
                MaskingRules {
                    detectors: Detector::ALL.to_vec(),
                    columns: vec![email.clone()],
                    ..MaskingRules::default()
                },
                HashKey::new(vec![3; 32]),
            )
            .unwrap(),
        );
        let catalog = Arc::new(ViewCatalog::from_rows([
            ["", "16400", "or", "public", "people"],
            ["", "16400", "a", "id", "1:1"],
            ["", "16400", "a", "email", "2:2"],
            ["", "16401", "or", "public", "orders"],
            ["", "16401", "a", "id", "1:1"],
            ["", "16401", "a", "email", "2:2"],
        ]));
        let plan = MaskPlan {
            masking,
            hidden: Arc::new(vec![email]),
            scan: true,
            catalog,
            exposed_names: vec!["email".into()],
            columns: None,
            copy: None,
        };
        let f = |table_oid, column, type_oid| FieldDescription {
            table_oid,
            column,
            type_oid,
            format: 0,
        };
        let mut people = RowMasker::new(&plan, &[f(16400, 1, 23), f(16400, 2, 25)]).unwrap();
        let mut counts = MaskCounts::default();
        let mut scratch = plan.masking.scratch();
        let sc = &mut scratch;
        let out = people
            .mask_row(&row(&[b"42", b"a@example.com"]), &mut counts, sc)
            .unwrap()
            .unwrap();
        assert_eq!(out[5..].to_vec(), row(&[b"42", b"****@example.com"]));
        let mut orders = RowMasker::new(&plan, &[f(16401, 1, 23), f(16401, 2, 25)]).unwrap();
        assert_eq!(
            orders
                .mask_row(&row(&[b"42", b"parcel 7 shipped"]), &mut counts, sc)
                .unwrap(),
            None
        );
        for v in [&b"Zelda Quokkaworth"[..], b"left a note about the parcel"] {
            assert_eq!(
                orders.mask_row(&row(&[b"42", v]), &mut counts, sc).unwrap(),
                None,
                "{v:?}"
            );
        }
        // A relation the catalog has not read yet is masked whole.
        let mut newer = RowMasker::new(&plan, &[f(16999, 1, 25)]).unwrap();
        let out = newer
            .mask_row(&row(&[b"anything"]), &mut counts, sc)
            .unwrap()
            .unwrap();
        assert_eq!(out[5..].to_vec(), row(&[b"****"]));
    }
}
