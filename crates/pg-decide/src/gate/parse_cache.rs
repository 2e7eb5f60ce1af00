//! Parses shared by every session of a listener: a statement's analysis
//! depends on its text alone, so it is kept per distinct text (or per
//! literal-free shape, when the analysis holds for every literal value).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use portcullis_pg_sql::{
    analyze, literal_free_key, quick_literal_free_key, Analysis, Unclassifiable,
};

/// Distinct statement texts whose parses are kept.
const PARSE_CACHE_ENTRIES: usize = 10_000;

pub(super) type Parsed = Arc<Result<Analysis, Unclassifiable>>;

/// Parses shared by every session of a listener.
#[derive(Default)]
pub struct ParseCache {
    map: Mutex<HashMap<Arc<str>, Parsed>>,
}

impl ParseCache {
    /// The analysis of `sql`, parsing it on a miss.
    pub fn get(&self, sql: &str) -> Parsed {
        self.get_keyed(sql).0
    }

    /// The analysis of `sql` and the key it is cached under: the text
    /// itself, or its [`literal_free_key`] when the analysis holds for
    /// every literal value (so `… where id = 1` and `… = 2` share one
    /// parse, and one decision).
    pub fn get_keyed(&self, sql: &str) -> (Parsed, Arc<str>) {
        self.get_with_quick_key(sql, quick_literal_free_key(sql))
    }

    /// [`ParseCache::get_keyed`] for a caller that already has the text's
    /// [`quick_literal_free_key`].
    pub(super) fn get_with_quick_key(
        &self,
        sql: &str,
        quick: Option<String>,
    ) -> (Parsed, Arc<str>) {
        // Shape keys are built with \u{1} and \u{2}: a text holding them
        // could equal another text's key, so it is neither looked up nor
        // kept, and its key cannot match any (NUL never occurs in a text).
        if sql.contains(['\u{1}', '\u{2}']) {
            return (Arc::new(analyze(sql)), Arc::from(format!("\0\0{sql}")));
        }
        // A text with literals is looked up by its shape first: that is
        // where its parse is when the parse holds for every value. A text
        // without literals is its own key.
        let quick_declined = quick.is_none();
        let shape = quick.filter(|k| k.contains('\u{1}'));
        if let Some(n) = &shape {
            if let Some((k, hit)) = self.lock().get_key_value(n.as_str()) {
                return (hit.clone(), k.clone());
            }
        }
        if let Some((k, hit)) = self.lock().get_key_value(sql) {
            return (hit.clone(), k.clone());
        }
        // Texts the quick walk declined get their shape from the scanner,
        // which costs more than the rest of a cached decision.
        let norm = match shape {
            Some(n) => Some(n),
            None if quick_declined => {
                let n = literal_free_key(sql).filter(|n| n.contains('\u{1}'));
                if let Some(n) = &n {
                    if let Some((k, hit)) = self.lock().get_key_value(n.as_str()) {
                        return (hit.clone(), k.clone());
                    }
                }
                n
            }
            None => None,
        };
        // Parse outside the lock: other sessions keep hitting the cache.
        let parsed: Parsed = Arc::new(analyze(sql));
        let literal_free = parsed.as_ref().as_ref().is_ok_and(|a| {
            a.statements
                .iter()
                .all(|s| s.effects.is_empty() && !s.literal_sensitive)
        });
        let key: Arc<str> = match norm {
            Some(n) if literal_free => Arc::from(n),
            _ => Arc::from(sql),
        };
        let mut map = self.lock();
        if map.len() >= PARSE_CACHE_ENTRIES {
            // Crude but bounded; a workload with more distinct texts than
            // this is dominated by parsing anyway.
            map.clear();
        }
        map.insert(key.clone(), parsed.clone());
        (parsed, key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Parsed>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}
