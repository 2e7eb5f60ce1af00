//! Results on their way to the client: every row, COPY line,
//! notification and notice passes through the gate its statement's
//! decision allows, or is refused.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use portcullis_core::masking::{MaskCounts, Masking};
use portcullis_pg_decide::{RowGate, RowPolicy};
use portcullis_pg_wire::encode;
use portcullis_pg_wire::ErrorFields;

use super::{BackendTracker, Pending};
use crate::error::SessionError;

/// Said in place of an error or notice text of a statement that reads
/// masked columns: any of its texts may quote a masked value.
const DETAIL_WITHHELD: &str =
    "portcullis: text withheld: the statement reads masked columns, and the server's text may quote their values; the SQLSTATE is the server's";

impl BackendTracker {
    /// The row policy of the statement whose results are arriving.
    fn current_policy(&self) -> Option<&RowPolicy> {
        match self.queue.front() {
            Some(Pending::Query(s) | Pending::Execute(s)) => s.rows_policy.as_ref(),
            _ => None,
        }
    }

    /// A RowDescription: the gateway's own (not forwarded) or a simple
    /// query's, either of which sets up the gate for the rows after it.
    fn on_row_description(&mut self, body: &[u8]) -> Result<Option<BytesMut>, SessionError> {
        let ours = matches!(self.queue.front(), Some(Pending::MaskDescribe));
        if ours {
            self.queue.pop_front();
        }
        if ours || matches!(self.queue.front(), Some(Pending::Query(_))) {
            self.rows = match self.current_policy() {
                Some(policy) => Some(RowGate::for_description(policy, body).map_err(|e| {
                    SessionError::masking_failed(format!(
                        "a row description could not be read ({e}), so its rows cannot be masked; the session is ended"
                    ))
                })?),
                None => None,
            };
        }
        // Asked by the gateway: the client never sees it.
        Ok(ours.then(BytesMut::new))
    }

    /// The gate for the rows of the Execute whose results are arriving,
    /// which come with no description of their own: only rows that need
    /// no masking pass without one. Masked results always follow the
    /// gateway's own Describe, never a description kept from an earlier
    /// Execute: PostgreSQL re-plans a prepared statement against other
    /// relations without telling the client (a `SET LOCAL search_path`
    /// undone by COMMIT, DDL in another session), and only the
    /// description it sends now says where the rows come from.
    fn execute_row_gate(&self) -> Option<RowGate> {
        match self.queue.front() {
            Some(Pending::Execute(s)) => s
                .rows_policy
                .as_ref()
                .and_then(RowGate::without_description),
            _ => None,
        }
    }

    /// A DataRow, through its result set's gate.
    fn pass_row(&mut self, body: &[u8]) -> Result<Option<BytesMut>, SessionError> {
        if self.rows.is_none() {
            self.rows = self.execute_row_gate();
        }
        let Some(gate) = self.rows.as_mut() else {
            return Err(SessionError::masking_failed(
                "a result row arrived that no decided statement's row description covers; the session is ended".into(),
            ));
        };
        if gate.is_clear() {
            return Ok(None);
        }
        let Some((counts, scratch)) = sinks(
            &mut self.queue,
            &mut self.loose_counts,
            &mut self.scratch,
            &self.masking,
        ) else {
            return Err(SessionError::masking_failed(
                "a result row must be masked but masking is not configured".into(),
            ));
        };
        gate.pass_row(body, counts, scratch)
            .map_err(|e| SessionError::masking_failed(format!("{e}; the session is ended")))
    }

    /// Results pass only through the gate their statement's decision
    /// allows: a row description (or COPY start) sets it up, and each row
    /// (or COPY line) goes through it. A row with no gate is refused, so
    /// nothing reaches the client undecided. Notices and notifications are
    /// scanned when masking is on.
    pub(super) fn gate_message(
        &mut self,
        tag: u8,
        body: &[u8],
    ) -> Result<Option<BytesMut>, SessionError> {
        match tag {
            b'T' => self.on_row_description(body),
            b'n' if matches!(self.queue.front(), Some(Pending::MaskDescribe)) => {
                self.queue.pop_front();
                self.rows = None;
                Ok(Some(BytesMut::new()))
            }
            b'D' => self.pass_row(body),
            b'H' => {
                self.copy = self.current_policy().map(RowGate::for_copy);
                Ok(None)
            }
            b'd' => {
                let Some(gate) = self.copy.as_mut() else {
                    return Err(SessionError::masking_failed(
                        "COPY data arrived outside a COPY the gateway saw decided; the session is ended".into(),
                    ));
                };
                if gate.is_clear() {
                    return Ok(None);
                }
                let Some((counts, scratch)) = sinks(
                    &mut self.queue,
                    &mut self.loose_counts,
                    &mut self.scratch,
                    &self.masking,
                ) else {
                    return Err(SessionError::masking_failed(
                        "COPY data must be masked but masking is not configured".into(),
                    ));
                };
                let out = gate.pass_copy_line(body, counts, scratch).map_err(|e| {
                    SessionError::masking_failed(format!(
                        "{e}; masking cannot follow it, so the session is ended"
                    ))
                })?;
                Ok(out.map(|line| framed(b'd', &line)))
            }
            b'A' => {
                let Some(masking) = self.masking.clone() else {
                    return Ok(None);
                };
                let portcullis_pg_wire::BackendMessage::Notification {
                    pid,
                    channel,
                    payload,
                } = portcullis_pg_wire::BackendMessage::decode(tag, body)?
                else {
                    return Ok(None);
                };
                // Notifications answer no statement: scanned unless the
                // last statement's principal is exempt.
                let mut counts = MaskCounts::default();
                let masked = masking.mask_text(payload, &mut counts);
                self.loose_counts.merge(&counts);
                Ok(masked.map(|p| {
                    let mut out = BytesMut::new();
                    encode::notification(&mut out, pid, channel, &p);
                    out
                }))
            }
            b'N' => Ok(self.mask_fields(tag, body)),
            _ => Ok(None),
        }
    }

    fn count(&mut self, counts: &MaskCounts) {
        if counts.is_empty() {
            return;
        }
        match self.current() {
            Some(s) => s.masked.merge(counts),
            None => self.loose_counts.merge(counts),
        }
    }

    /// An error or notice with values masked: DETAIL withheld when the
    /// statement touches masked columns, every field scanned.
    pub(super) fn mask_fields(&mut self, tag: u8, body: &[u8]) -> Option<BytesMut> {
        let masking = self.masking.clone()?;
        let plan = self.current().and_then(|s| s.mask_plan().cloned());
        let withhold = plan.as_ref().is_some_and(|p| p.withholds_details());
        let scan = plan.as_ref().is_none_or(|p| p.scans()) && masking.scans();
        let mut counts = MaskCounts::default();
        let mut changed = false;
        let fields: Vec<(u8, String)> = ErrorFields::new(body)
            .iter()
            .map(|(code, value)| {
                // Any text may quote a value: DETAIL and CONTEXT (a
                // duplicate key, a COPY line), HINT, the message (`invalid
                // input syntax for type integer: "…"`, `date field value out
                // of range: 2020-13-01`), and the internal query.
                let quotes = matches!(code, b'M' | b'D' | b'W' | b'H' | b'q');
                if withhold && quotes {
                    changed = true;
                    return (code, DETAIL_WITHHELD.to_owned());
                }
                // Severity, code and position fields hold no data.
                if matches!(code, b'S' | b'V' | b'C' | b'P' | b'p' | b'F' | b'L' | b'R') {
                    return (code, value.to_owned());
                }
                if !scan {
                    return (code, value.to_owned());
                }
                match masking.mask_text(value, &mut counts) {
                    Some(m) => {
                        changed = true;
                        (code, m)
                    }
                    None => (code, value.to_owned()),
                }
            })
            .collect();
        self.count(&counts);
        changed.then(|| {
            let mut out = BytesMut::new();
            encode::error_fields(&mut out, tag, fields.iter().map(|(c, v)| (*c, v.as_str())));
            out
        })
    }
}

/// Where masking counts go (straight into the statement whose results
/// these are: no map per row) and the session's scratch space, made at
/// first use. Free-standing so the caller can hold its masker, another
/// field, at the same time.
fn sinks<'a>(
    queue: &'a mut VecDeque<Pending>,
    loose: &'a mut MaskCounts,
    scratch: &'a mut Option<portcullis_core::masking::Scratch>,
    masking: &Option<Arc<Masking>>,
) -> Option<(
    &'a mut MaskCounts,
    &'a mut portcullis_core::masking::Scratch,
)> {
    let counts = match queue.front_mut() {
        Some(Pending::Query(s) | Pending::Execute(s)) => &mut s.masked,
        _ => loose,
    };
    let scratch = match (scratch, masking) {
        (Some(s), _) => s,
        (slot, Some(m)) => slot.insert(m.scratch()),
        (_, None) => return None,
    };
    Some((counts, scratch))
}

/// A whole message with `tag` and `body`.
fn framed(tag: u8, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.extend_from_slice(&[tag]);
    out.extend_from_slice(
        &u32::try_from(body.len() + 4)
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(body);
    out
}
