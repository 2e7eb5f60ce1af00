//! The encoding in which the server will read the client's next message.
//!
//! The server converts each message's strings from the `client_encoding`
//! in force when it reads that message, and a `SET client_encoding` takes
//! hold when it runs, long after the gateway has read what the client
//! pipelined behind it. So the encoding counts only once the server has
//! reported it (ParameterStatus, sent before ReadyForQuery): while a
//! statement that may change it is unanswered, the gateway reads only
//! ASCII, which every allowed encoding reads alike, and ends a session
//! that sends anything else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use portcullis_pg_sql::EncodingChange;
use portcullis_pg_wire::ClientEncoding;

use crate::error::SessionError;

/// What the server side saw, for the client side: how many entries the
/// server has answered, and the encoding it last reported.
pub struct EncodingReports {
    /// Entries the server has answered or skipped, in order.
    finished: AtomicU64,
    /// Counts reports, so the client side notices one cheaply.
    generation: AtomicU64,
    latest: Mutex<(u64, ClientEncoding)>,
}

impl EncodingReports {
    /// Reports starting from the encoding the server reported at login.
    pub fn new(at_login: ClientEncoding) -> Self {
        Self {
            finished: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            latest: Mutex::new((0, at_login)),
        }
    }

    /// The server reported `client_encoding` (a name it checked before).
    pub fn reported(&self, encoding: ClientEncoding) {
        let mut latest = self.lock();
        latest.0 += 1;
        latest.1 = encoding;
        self.generation.store(latest.0, Ordering::Release);
    }

    /// The server has answered `finished` entries so far; called after
    /// the reports of the messages that answered them, and before the
    /// client can see those answers.
    pub fn answered_up_to(&self, finished: u64) {
        self.finished.store(finished, Ordering::Release);
    }

    fn latest(&self) -> (u64, ClientEncoding) {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, ClientEncoding)> {
        // Poisoned only by a panic, which ends the session anyway.
        self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The client side's view: the confirmed encoding, and which entry's
/// answer settles the changes sent since.
pub(super) struct EncodingWatch {
    confirmed: ClientEncoding,
    /// The report generation `confirmed` came from.
    seen: u64,
    /// Entries sent so far (the server side counts the same entries).
    entries: u64,
    /// Once this many entries are answered, every change sent so far has
    /// run or failed, and its report arrived; 0: none is unanswered.
    settles_at: u64,
    /// A change was decided in the message being handled (a query): it
    /// settles with that message's own answer.
    settles_with_message: bool,
    /// A change was decided at Bind: it settles with the next Sync.
    settles_with_sync: bool,
    /// Whether the session ever set `client_encoding`: only then can
    /// `RESET ALL` or a transaction's end change it.
    touched: bool,
}

impl EncodingWatch {
    pub(super) fn new() -> Self {
        Self {
            confirmed: ClientEncoding::UTF8,
            seen: u64::MAX,
            entries: 0,
            settles_at: 0,
            settles_with_message: false,
            settles_with_sync: false,
            touched: false,
        }
    }

    /// The encoding to read the client's next message in.
    pub(super) fn for_next_message(
        &mut self,
        reports: &EncodingReports,
    ) -> Result<ClientEncoding, SessionError> {
        if self.seen == u64::MAX {
            (self.seen, self.confirmed) = reports.latest();
        }
        if self.settles_at != 0 {
            if reports.finished.load(Ordering::Acquire) < self.settles_at {
                return Ok(ClientEncoding::UNSETTLED);
            }
            self.settles_at = 0;
            (self.seen, self.confirmed) = reports.latest();
        } else if reports.generation.load(Ordering::Acquire) != self.seen {
            let (generation, reported) = reports.latest();
            self.seen = generation;
            if reported != self.confirmed {
                return Err(SessionError::not_allowed(format!(
                    "the server switched client_encoding to {}, though no statement the gateway passed was to change it; the session is ended",
                    reported.name()
                )));
            }
        }
        Ok(self.confirmed)
    }

    /// A statement was allowed that may change the encoding as `change`
    /// says; `in_query`: it is a simple query's, answered by its own
    /// ReadyForQuery, else a Bind's, answered at the next Sync.
    pub(super) fn allowed(&mut self, change: Option<EncodingChange>, in_query: bool) {
        match change {
            None => return,
            Some(EncodingChange::Set) => self.touched = true,
            Some(_) if !self.touched => return,
            Some(_) => {}
        }
        if in_query {
            self.settles_with_message = true;
        } else {
            self.settles_with_sync = true;
            self.settles_at = u64::MAX;
        }
    }

    /// A message was handled: it added `entries` entries; `sync`: it was
    /// a Sync.
    pub(super) fn sent(&mut self, entries: usize, sync: bool) {
        self.entries += entries as u64;
        if std::mem::take(&mut self.settles_with_message) {
            // Still waiting for a Sync stays waiting (u64::MAX).
            self.settles_at = self.settles_at.max(self.entries);
        }
        if sync && std::mem::take(&mut self.settles_with_sync) {
            self.settles_at = self.entries;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latin9() -> ClientEncoding {
        ClientEncoding::by_name("LATIN9").unwrap()
    }

    /// A SET is unsettled until its query is answered, and then the
    /// reported encoding holds.
    #[test]
    fn a_change_counts_once_its_query_is_answered() {
        let reports = EncodingReports::new(ClientEncoding::UTF8);
        let mut w = EncodingWatch::new();
        assert_eq!(w.for_next_message(&reports).unwrap(), ClientEncoding::UTF8);
        w.allowed(Some(EncodingChange::Set), true);
        w.sent(1, false);
        assert_eq!(
            w.for_next_message(&reports).unwrap(),
            ClientEncoding::UNSETTLED
        );
        reports.reported(latin9());
        assert_eq!(
            w.for_next_message(&reports).unwrap(),
            ClientEncoding::UNSETTLED
        );
        reports.answered_up_to(1);
        assert_eq!(w.for_next_message(&reports).unwrap(), latin9());
    }

    /// A Bind's change settles with the stretch's Sync, not before.
    #[test]
    fn a_bind_change_settles_at_its_sync() {
        let reports = EncodingReports::new(ClientEncoding::UTF8);
        let mut w = EncodingWatch::new();
        w.allowed(Some(EncodingChange::Set), false);
        w.sent(1, false);
        w.sent(1, false);
        reports.answered_up_to(2);
        assert_eq!(
            w.for_next_message(&reports).unwrap(),
            ClientEncoding::UNSETTLED
        );
        w.sent(1, true);
        assert_eq!(
            w.for_next_message(&reports).unwrap(),
            ClientEncoding::UNSETTLED
        );
        reports.answered_up_to(3);
        assert_eq!(w.for_next_message(&reports).unwrap(), ClientEncoding::UTF8);
    }

    /// RESET ALL and COMMIT change nothing in a session that never set
    /// the encoding, so they leave it settled.
    #[test]
    fn resets_matter_only_after_a_set() {
        let reports = EncodingReports::new(latin9());
        let mut w = EncodingWatch::new();
        w.allowed(Some(EncodingChange::TransactionEnd), true);
        w.sent(1, false);
        assert_eq!(w.for_next_message(&reports).unwrap(), latin9());
        w.allowed(Some(EncodingChange::Set), true);
        w.sent(1, false);
        reports.answered_up_to(2);
        w.allowed(Some(EncodingChange::ResetAll), true);
        w.sent(1, false);
        assert_eq!(
            w.for_next_message(&reports).unwrap(),
            ClientEncoding::UNSETTLED
        );
    }

    /// A report nothing the gateway passed asked for ends the session.
    #[test]
    fn an_unexpected_change_ends_the_session() {
        let reports = EncodingReports::new(ClientEncoding::UTF8);
        let mut w = EncodingWatch::new();
        assert!(w.for_next_message(&reports).is_ok());
        reports.reported(ClientEncoding::UTF8);
        assert!(w.for_next_message(&reports).is_ok());
        reports.reported(latin9());
        let err = w.for_next_message(&reports).unwrap_err().to_string();
        assert!(err.contains("LATIN9"), "{err}");
    }
}
