//! The row-description cache: what the rows of an Execute look like,
//! learned from the gateway's own Describe before an earlier Execute of
//! the same server-side prepared statement, so masked results need no
//! Describe (one more message each way, and the server's work to answer
//! it) before every Execute.
//!
//! A description names, per result column, its type, format, and the
//! table OID and attribute number it comes from; masking reads all four.
//! Reusing one is safe only while the server would send the same one:
//!
//! - **Types and names** of a prepared statement's result cannot change:
//!   PostgreSQL prepares protocol-level statements with a fixed result and
//!   fails an Execute whose re-planned result would differ ("cached plan
//!   must not change result type"). So the key is the server-side
//!   *instance*, one protocol Parse (the identity of the text the gateway
//!   allocated for it), never the name or the text: a statement parsed
//!   again, after DEALLOCATE, DISCARD or a Close, is another instance.
//!   SQL `PREPARE`d statements are not cached (their facts may be shared
//!   between two PREPAREs of one text).
//! - **Formats** come from the Bind: they are part of the key.
//! - **Origins** (table OID, attribute number) change when the statement
//!   is re-planned against other relations: DDL by anyone, or another
//!   `search_path`. Both move the gate's generation (the catalog watcher
//!   sees DDL in any session, the session's own `SET` moves it at once),
//!   and the generation is part of the key, so a description is never
//!   read through a catalog newer than the one it was learned under.
//!
//! Anything doubtful empties the cache: any error from the server, and
//! every simple Query (where a session's own DDL, DISCARD and SET usually
//! travel). Then the next Execute asks the server again.

use std::sync::Arc;

use bytes::Bytes;
use portcullis_pg_decide::gate::Definition;

/// Descriptions kept per session. Enough for the statements an
/// application runs in a loop; an idle session holds none.
const MAX_DESCRIPTIONS: usize = 32;
/// Bytes of descriptions kept per session, at most: a session's memory
/// stays bounded whatever it prepares (a RowDescription of ten columns is
/// about 300 bytes).
const MAX_DESCRIPTION_BYTES: usize = 16 * 1024;
/// Larger descriptions (hundreds of columns) are asked for every time.
pub(super) const LARGEST_CACHED: usize = 4 * 1024;

/// What a cached description is valid for.
#[derive(Debug, Clone)]
pub struct DescriptionKey {
    /// The text of the protocol Parse that made the server-side statement:
    /// held, so its address identifies that Parse for as long as the key
    /// lives.
    parsed: Arc<str>,
    /// The Bind's result format codes.
    result_formats: Arc<[i16]>,
    /// The gate's generation (names, catalog and policies) at the Execute.
    generation: (u64, u64),
}

impl DescriptionKey {
    /// The key for an Execute of a portal bound from `statement` with
    /// `result_formats`, decided at `generation`; `None` when the
    /// statement's description may not be cached.
    pub fn new(
        statement: &Definition,
        result_formats: &Arc<[i16]>,
        generation: (u64, u64),
    ) -> Option<Self> {
        match statement {
            Definition::Text(text, _) => Some(Self {
                parsed: text.clone(),
                result_formats: result_formats.clone(),
                generation,
            }),
            Definition::Sql(_) => None,
        }
    }

    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.parsed, &other.parsed)
            && self.result_formats == other.result_formats
            && self.generation == other.generation
    }
}

/// What the upstream side learned, for the client side's cache, in the
/// order it learned it.
#[derive(Debug)]
pub enum Learned {
    /// The RowDescription body the server sent for this key.
    Description(DescriptionKey, Bytes),
    /// The server reported an error: forget everything.
    Forget,
}

/// The cache, kept by the client side of one session.
#[derive(Debug, Default)]
pub struct DescriptionCache {
    entries: Vec<(DescriptionKey, Bytes)>,
}

impl DescriptionCache {
    /// The description the server sent for `key`, if it is known.
    pub fn get(&self, key: &DescriptionKey) -> Option<Bytes> {
        self.entries
            .iter()
            .find(|(k, _)| k.same(key))
            .map(|(_, d)| d.clone())
    }

    /// Applies what the upstream side learned.
    pub fn learn(&mut self, learned: impl IntoIterator<Item = Learned>) {
        for l in learned {
            match l {
                Learned::Description(key, description) => self.insert(key, description),
                Learned::Forget => self.clear(),
            }
        }
    }

    /// Forgets every description.
    pub fn clear(&mut self) {
        // Dropped rather than cleared: an idle session keeps no capacity.
        self.entries = Vec::new();
    }

    fn insert(&mut self, key: DescriptionKey, description: Bytes) {
        // Entries of another generation can never match again.
        self.entries
            .retain(|(k, _)| k.generation == key.generation && !k.same(&key));
        if description.len() > LARGEST_CACHED {
            return;
        }
        let mut held: usize = self.entries.iter().map(|(_, d)| d.len()).sum();
        while !self.entries.is_empty()
            && (self.entries.len() >= MAX_DESCRIPTIONS
                || held + description.len() > MAX_DESCRIPTION_BYTES)
        {
            held -= self.entries.remove(0).1.len();
        }
        self.entries.push((key, description));
    }

    /// Descriptions held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Definition {
        Definition::Text(Arc::from(text), Arc::from(&[][..]))
    }

    fn key(def: &Definition, formats: &[i16], generation: (u64, u64)) -> DescriptionKey {
        DescriptionKey::new(def, &Arc::from(formats), generation).expect("a protocol Parse")
    }

    #[test]
    fn a_description_is_reused_only_for_the_same_parse_formats_and_generation() {
        let first = parse("select secret from t");
        let mut cache = DescriptionCache::default();
        cache.learn([Learned::Description(
            key(&first, &[1], (1, 1)),
            Bytes::from_static(b"T"),
        )]);
        assert!(cache.get(&key(&first, &[1], (1, 1))).is_some());
        // The same text parsed again is another server-side statement.
        let again = parse("select secret from t");
        assert!(cache.get(&key(&again, &[1], (1, 1))).is_none());
        assert!(cache.get(&key(&first, &[0], (1, 1))).is_none());
        assert!(cache.get(&key(&first, &[1], (2, 1))).is_none());
        assert!(cache.get(&key(&first, &[1], (1, 2))).is_none());
    }

    #[test]
    fn an_error_forgets_everything_and_a_new_generation_drops_the_old_one() {
        let def = parse("select 1");
        let mut cache = DescriptionCache::default();
        cache.learn([
            Learned::Description(key(&def, &[], (1, 1)), Bytes::from_static(b"a")),
            Learned::Forget,
        ]);
        assert!(cache.is_empty());
        cache.learn([
            Learned::Description(key(&def, &[], (1, 1)), Bytes::from_static(b"a")),
            Learned::Description(key(&def, &[], (2, 1)), Bytes::from_static(b"b")),
        ]);
        assert_eq!(cache.len(), 1);
        for i in 0..100 {
            cache.learn([Learned::Description(
                key(&parse("select 2"), &[], (2, 1)),
                Bytes::from(vec![i]),
            )]);
        }
        assert_eq!(cache.len(), MAX_DESCRIPTIONS);
        // Bytes are bounded too, and a large description is not kept.
        for _ in 0..10 {
            cache.learn([Learned::Description(
                key(&parse("select 3"), &[], (2, 1)),
                Bytes::from(vec![0; LARGEST_CACHED]),
            )]);
        }
        assert_eq!(cache.len(), MAX_DESCRIPTION_BYTES / LARGEST_CACHED);
        cache.learn([Learned::Description(
            key(&parse("select 4"), &[], (2, 1)),
            Bytes::from(vec![0; LARGEST_CACHED + 1]),
        )]);
        assert!(cache.get(&key(&parse("select 4"), &[], (2, 1))).is_none());
    }

    #[test]
    fn sql_prepared_statements_are_not_cached() {
        let mut analysed = portcullis_pg_sql::analyze("select 1").expect("parses");
        let facts = Definition::Sql(Arc::new(analysed.statements.remove(0)));
        assert!(DescriptionKey::new(&facts, &Arc::from(&[][..]), (0, 0)).is_none());
    }
}
