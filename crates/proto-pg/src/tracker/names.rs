//! What the server holds under each prepared statement or portal name, as
//! its answers confirm it.
//!
//! A Parse, Bind or Close, and a `PREPARE`, `DEALLOCATE`, `DECLARE`,
//! `CLOSE` or `DISCARD` in a query, changes a name only when the server
//! confirms it (ParseComplete, BindComplete, CloseComplete, or the
//! statement's CommandComplete). Until then the change is unresolved, and
//! a message that uses the name may meet either state:
//! - a change sent in the same stretch up to Sync as the message that
//!   uses it holds for that message: had it failed, the server would skip
//!   everything up to the Sync, the message included;
//! - a change from an earlier stretch may or may not have held, so the
//!   name has both definitions, and the gate decides for both.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A change to one namespace, in the order the client sent it.
#[derive(Debug, Clone)]
pub enum Change<T> {
    /// The name now holds this.
    Define(Arc<str>, T),
    /// The name holds nothing.
    Remove(Arc<str>),
    /// No name holds anything (`DEALLOCATE ALL`, `CLOSE ALL`).
    RemoveAll,
}

impl<T> Change<T> {
    fn touches(&self, name: &str) -> bool {
        match self {
            Change::Define(n, _) | Change::Remove(n) => &**n == name,
            Change::RemoveAll => true,
        }
    }

    fn outcome(&self) -> Option<&T> {
        match self {
            Change::Define(_, t) => Some(t),
            Change::Remove(_) | Change::RemoveAll => None,
        }
    }
}

#[derive(Debug)]
struct Sent<T> {
    seq: u64,
    stretch: u64,
    change: Change<T>,
}

/// One namespace (prepared statements, or portals): what the server
/// confirmed, and what was sent since.
#[derive(Debug)]
pub struct Ledger<T> {
    confirmed: HashMap<Arc<str>, T>,
    unresolved: VecDeque<Sent<T>>,
}

impl<T> Default for Ledger<T> {
    fn default() -> Self {
        Self {
            confirmed: HashMap::new(),
            unresolved: VecDeque::new(),
        }
    }
}

impl<T: Clone + PartialEq> Ledger<T> {
    /// Notes a change sent as change `seq`, in stretch `stretch`.
    pub fn sent(&mut self, seq: u64, stretch: u64, change: Change<T>) {
        self.unresolved.push_back(Sent {
            seq,
            stretch,
            change,
        });
    }

    /// The server answered change `seq`: it held (`applied`) or the
    /// message failed or was skipped. Returns the name it touched (`None`
    /// for every name, or when `seq` is not this ledger's).
    pub fn resolve(&mut self, seq: u64, applied: bool) -> Option<Option<Arc<str>>> {
        let at = self.unresolved.iter().position(|s| s.seq == seq)?;
        let sent = self.unresolved.remove(at)?;
        let touched = match &sent.change {
            Change::Define(n, _) | Change::Remove(n) => Some(n.clone()),
            Change::RemoveAll => None,
        };
        if applied {
            match sent.change {
                Change::Define(n, t) => {
                    self.confirmed.insert(n, t);
                }
                Change::Remove(n) => {
                    self.confirmed.remove(&n);
                }
                Change::RemoveAll => self.confirmed.clear(),
            }
        }
        Some(touched)
    }

    /// Forgets every confirmed definition `gone` says the server dropped.
    pub fn forget_confirmed(&mut self, gone: impl Fn(&T) -> bool) {
        self.confirmed.retain(|_, t| !gone(t));
    }

    /// Everything `name` may hold when a message of stretch `stretch`
    /// reaches the server (`None` among them: possibly nothing).
    pub fn candidates(&self, name: &str, stretch: u64) -> Vec<Option<T>> {
        let mut out: Vec<Option<T>> = vec![self.confirmed.get(name).cloned()];
        for s in self.unresolved.iter().filter(|s| s.change.touches(name)) {
            let after = s.change.outcome().cloned();
            if s.stretch == stretch {
                // Had it failed, this message would be skipped too.
                out.clear();
            }
            if !out.contains(&after) {
                out.push(after);
            }
        }
        out
    }

    /// Every definition `name` may hold in any stretch, for statements
    /// whose stretch the caller does not track (SQL `EXECUTE`).
    pub fn all_candidates(&self, name: &str) -> Vec<T> {
        let mut out: Vec<T> = self.confirmed.get(name).cloned().into_iter().collect();
        for s in self.unresolved.iter().filter(|s| s.change.touches(name)) {
            if let Some(t) = s.change.outcome() {
                if !out.contains(t) {
                    out.push(t.clone());
                }
            }
        }
        out
    }

    /// Whether `name` is held or may soon be.
    pub fn may_hold(&self, name: &str) -> bool {
        self.confirmed.contains_key(name)
            || self
                .unresolved
                .iter()
                .any(|s| matches!(&s.change, Change::Define(n, _) if &**n == name))
    }

    /// How many names are held, plus how many definitions are in flight:
    /// what bounds the server's state.
    pub fn len_bound(&self) -> usize {
        self.confirmed.len() + self.unresolved.len()
    }

    /// Names that hold or may hold something.
    pub fn names(&self) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self.confirmed.keys().cloned().collect();
        for s in &self.unresolved {
            if let Change::Define(n, _) | Change::Remove(n) = &s.change {
                names.push(n.clone());
            }
        }
        names.sort();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn a_change_holds_in_its_own_stretch_and_is_doubtful_after_it() {
        let mut l: Ledger<&str> = Ledger::default();
        l.sent(1, 0, Change::Define(name("p"), "A"));
        l.resolve(1, true);
        assert_eq!(l.candidates("p", 5), vec![Some("A")]);
        // A redefinition the server may reject (duplicate name).
        l.sent(2, 1, Change::Define(name("p"), "B"));
        assert_eq!(l.candidates("p", 1), vec![Some("B")]);
        assert_eq!(l.candidates("p", 2), vec![Some("A"), Some("B")]);
        l.resolve(2, false);
        assert_eq!(l.candidates("p", 2), vec![Some("A")]);
    }

    #[test]
    fn a_close_the_server_skipped_changes_nothing() {
        let mut l: Ledger<&str> = Ledger::default();
        l.sent(1, 0, Change::Define(name("p"), "A"));
        l.resolve(1, true);
        l.sent(2, 1, Change::Remove(name("p")));
        l.sent(3, 1, Change::Define(name("p"), "B"));
        assert_eq!(l.candidates("p", 2), vec![Some("A"), None, Some("B")]);
        // Both skipped after an error in their stretch.
        l.resolve(2, false);
        l.resolve(3, false);
        assert_eq!(l.candidates("p", 2), vec![Some("A")]);
        l.sent(4, 2, Change::RemoveAll);
        l.resolve(4, true);
        assert_eq!(l.candidates("p", 3), vec![None]);
    }
}

#[cfg(test)]
mod forgetting {
    use super::*;

    #[test]
    fn definitions_the_server_dropped_are_forgotten_and_others_kept() {
        let mut l: Ledger<&str> = Ledger::default();
        l.sent(1, 0, Change::Define(Arc::from("c1"), "bound"));
        l.sent(2, 0, Change::Define(Arc::from("held"), "cursor"));
        l.resolve(1, true);
        l.resolve(2, true);
        l.forget_confirmed(|d| *d == "bound");
        assert_eq!(l.candidates("c1", 1), vec![None]);
        assert_eq!(l.candidates("held", 1), vec![Some("cursor")]);
        assert_eq!(l.len_bound(), 1);
    }
}
