//! Policy what-if: how the gateway would decide a statement for someone,
//! without running it. `portcullis policy check` prints it and the
//! console's policy page shows it; both come from [`what_if`], so they
//! cannot disagree.

use std::sync::Arc;

use portcullis_core::{Identity, PolicyEngine};
use portcullis_pg_decide::{GateDecision, ParseCache, StatementGate};

/// The decision on a statement, and each (action, object) pair under it.
#[derive(Debug, Clone)]
pub struct WhatIf {
    /// `allow`, `deny` or `review`.
    pub outcome: &'static str,
    /// The decision as one line (`allow (p1, p2)`, `deny: …`).
    pub summary: String,
    /// Each pair, in statement order.
    pub pairs: Vec<PairDecision>,
    /// Why the pairs could not be listed (a parse error), if they could not.
    pub pairs_error: Option<String>,
    /// What the check cannot know without the upstream's catalog.
    pub notes: Vec<String>,
}

/// One (action, object) pair's decision.
#[derive(Debug, Clone)]
pub struct PairDecision {
    /// The Cedar action.
    pub action: String,
    /// The object, as the gateway names it (`app-db/public.orders`).
    pub object: String,
    /// `allow`, `deny`, or `needs review by …`.
    pub outcome: String,
    /// The determining policies.
    pub policies: Vec<String>,
}

impl WhatIf {
    /// The text `portcullis policy check` prints.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n", self.summary);
        for p in &self.pairs {
            out.push_str(&format!(
                "  {:<9} {:<40} {} ({})\n",
                p.action,
                p.object,
                p.outcome,
                if p.policies.is_empty() {
                    "no policy".to_owned()
                } else {
                    p.policies.join(", ")
                }
            ));
        }
        if let Some(e) = &self.pairs_error {
            out.push_str(&format!("  {e}\n"));
        }
        for n in &self.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
        out
    }
}

/// Decides `sql` on `connection` for `identity` under `engine`, as a
/// session with `search_path` would, but without the upstream's catalog.
pub fn what_if(
    engine: Arc<PolicyEngine>,
    identity: Identity,
    connection: &str,
    search_path: Vec<String>,
    sql: &str,
) -> WhatIf {
    let mut gate = StatementGate::new(
        engine,
        Arc::new(ParseCache::default()),
        identity,
        connection.to_owned(),
        "service".into(),
        "127.0.0.1".into(),
        search_path,
    );
    let pairs = gate.explain(sql);
    let (outcome, summary) = match gate.check(sql) {
        GateDecision::Allow(a) => ("allow", format!("allow ({})", a.policies().join(", "))),
        GateDecision::Deny(d) => ("deny", format!("deny: {}", d.message())),
        GateDecision::Review(h) => (
            "review",
            format!(
                "review: {} needs approval by {} (policy {})",
                h.need().actions.join("; "),
                h.need()
                    .rules
                    .iter()
                    .map(|r| r.describe())
                    .collect::<Vec<_>>()
                    .join(" and "),
                h.need().policies.join(", ")
            ),
        ),
    };
    let (pairs, pairs_error) = match pairs {
        Ok(pairs) => (
            pairs
                .into_iter()
                .map(|(action, resource, v)| PairDecision {
                    action: action.as_str().to_owned(),
                    object: resource.describe(),
                    outcome: match (v.allowed, v.reviews.is_empty()) {
                        (true, true) => "allow".to_owned(),
                        (true, false) => format!(
                            "needs review by {}",
                            v.reviews
                                .iter()
                                .map(|r| r.describe())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        (false, _) => "deny".to_owned(),
                    },
                    policies: v.policies.to_vec(),
                })
                .collect(),
            None,
        ),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let fields = gate.undecided_field_calls(sql);
    let mut notes = Vec::new();
    if !fields.is_empty() {
        notes.push(format!(
            "{} would call a function of that name where no such column exists; the gateway decides that with the upstream's catalog, which this check does not read",
            fields.iter().map(|n| format!(".{n}")).collect::<Vec<_>>().join(", ")
        ));
    }
    WhatIf {
        outcome,
        summary,
        pairs,
        pairs_error,
        notes,
    }
}
