//! Reviews: a command that a permit marks `@review` waits, inside the
//! client's own session, until reviewers other than its requester approve
//! it. Protocol neutral: an adapter asks with a [`ReviewAsk`], holds its
//! client while [`ReviewBoard::wait`] says the review is pending, and runs
//! the command only with the [`Approved`] token the board hands out once,
//! for that command's hash.
//!
//! The rules live here once, for every protocol and for the API:
//! - nobody decides their own review: not the requester, not an agent
//!   acting for them, not an agent they act through (admins included);
//! - a decider must be in one of the rule's groups when deciding;
//! - one denial ends the review; approvals count distinct people;
//! - a pending review expires after `review_ttl`, an approval that is not
//!   used within `approval_validity`;
//! - an approval is used once, by the requester, on the same connection,
//!   for the same statement hash.
//!
//! Every change is saved before it counts (a [`ReviewStore`]), so reviews
//! survive a restart; ended reviews stay in the store as history.

pub mod rule;
mod store;
mod types;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use rule::ReviewRule;

use crate::grants::{ActiveGrant, GrantTable};
pub use store::{MemoryReviewStore, ReviewStore};
pub use types::{
    statement_hash, Approved, GrantTerms, Outcome, Review, ReviewAsk, ReviewDecision, ReviewError,
    ReviewEvent, ReviewSettings, ReviewStatus, Submission,
};

use crate::audit::StoreError;
use crate::identity::Clock;
use crate::Identity;

/// Reviews one requester may have open (pending or approved) at once.
pub const MAX_OPEN_PER_REQUESTER: usize = 20;

struct Board {
    /// Pending and approved reviews; ended ones live in the store only.
    open: BTreeMap<u64, Review>,
    next_id: u64,
    stopping: bool,
}

/// The gateway's reviews.
pub struct ReviewBoard {
    board: Mutex<Board>,
    /// Serialises changes, so they reach the store in the order they are
    /// made, and each is saved before it counts.
    saving: tokio::sync::Mutex<()>,
    store: Arc<dyn ReviewStore>,
    clock: Arc<dyn Clock>,
    settings: ReviewSettings,
    changed: tokio::sync::watch::Sender<u64>,
    events: tokio::sync::broadcast::Sender<ReviewEvent>,
    /// Waits in progress, so that stopping can let them answer first.
    waiters: tokio::sync::watch::Sender<usize>,
    grants: Arc<GrantTable>,
    /// Where every change is also recorded as evidence.
    recorder: Option<crate::Recorder>,
}

/// Counts one wait in progress.
struct Waiting<'b>(&'b tokio::sync::watch::Sender<usize>);

impl<'b> Waiting<'b> {
    fn new(waiters: &'b tokio::sync::watch::Sender<usize>) -> Self {
        waiters.send_modify(|n| *n += 1);
        Self(waiters)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl ReviewBoard {
    /// A board over `store`, holding the reviews it left open.
    pub async fn load(
        store: Arc<dyn ReviewStore>,
        clock: Arc<dyn Clock>,
        settings: ReviewSettings,
    ) -> Result<Self, StoreError> {
        let open = store.load_open().await?;
        let next_id = store.max_id().await? + 1;
        let board = Board {
            open: open.into_iter().map(|r| (r.id, r)).collect(),
            next_id,
            stopping: false,
        };
        Ok(Self {
            board: Mutex::new(board),
            saving: tokio::sync::Mutex::new(()),
            store,
            clock,
            settings,
            changed: tokio::sync::watch::channel(0).0,
            events: tokio::sync::broadcast::channel(256).0,
            waiters: tokio::sync::watch::channel(0).0,
            grants: Arc::default(),
            recorder: None,
        })
    }

    /// A board in memory only, for tests and `policy check`.
    pub fn in_memory(clock: Arc<dyn Clock>, settings: ReviewSettings) -> Self {
        Self {
            board: Mutex::new(Board {
                open: BTreeMap::new(),
                next_id: 1,
                stopping: false,
            }),
            saving: tokio::sync::Mutex::new(()),
            store: Arc::new(MemoryReviewStore::default()),
            clock,
            settings,
            changed: tokio::sync::watch::channel(0).0,
            events: tokio::sync::broadcast::channel(256).0,
            waiters: tokio::sync::watch::channel(0).0,
            grants: Arc::default(),
            recorder: None,
        }
    }

    /// Hands approved grants to `grants` (for `context.grants`).
    pub fn with_grants(mut self, grants: Arc<GrantTable>) -> Self {
        self.grants = grants;
        self.refresh_grants(&self.lock());
        self
    }

    /// Records every change of a review or grant in the evidence chain too.
    pub fn with_recorder(mut self, recorder: crate::Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// The grants in force.
    pub fn grants(&self) -> &Arc<GrantTable> {
        &self.grants
    }

    fn refresh_grants(&self, board: &Board) {
        let active = board
            .open
            .values()
            .filter(|r| r.status == ReviewStatus::Approved)
            .filter_map(|r| {
                let g = r.grant.as_ref()?;
                Some(ActiveGrant {
                    id: r.id,
                    user: r.requester.clone(),
                    actor: r.actor.clone(),
                    connection: r.connection.clone(),
                    role: g.role.clone(),
                    expires_at: r.approval_expires_at?,
                })
            })
            .collect();
        self.grants.set(active);
    }

    /// Asks for `terms` on `ask.connection`: a pending review that, once
    /// approved, is a grant in force for its duration.
    pub async fn request_grant(
        &self,
        ask: ReviewAsk,
        terms: GrantTerms,
    ) -> Result<Review, ReviewError> {
        let _saving = self.saving.lock().await;
        let now = self.now();
        let id = self.next_id(&ask.identity)?;
        let review = Review::asked(id, ask, now, self.settings.review_ttl, Some(terms));
        self.commit(review.clone(), "created").await?;
        Ok(review)
    }

    /// Ends grant `id` early (or withdraws its pending request).
    pub async fn revoke(&self, id: u64, by: &str) -> Result<Review, ReviewError> {
        let _saving = self.saving.lock().await;
        let open = self.lock().open.get(&id).cloned();
        let Some(mut r) = open.filter(|r| r.grant.is_some()) else {
            return Err(match self.store.get_review(id).await? {
                Some(r) => ReviewError::Closed(id, r.status.as_str()),
                None => ReviewError::NotFound(id),
            });
        };
        r.end(
            ReviewStatus::Revoked,
            self.now(),
            format!("revoked by {by}"),
        );
        self.commit(r.clone(), "revoked").await?;
        Ok(r)
    }

    /// Review events as they happen (for webhooks).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ReviewEvent> {
        self.events.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> i64 {
        self.clock.now_secs()
    }

    /// Saves `review`, then makes it the board's, and tells waiters.
    async fn commit(&self, review: Review, kind: &'static str) -> Result<(), StoreError> {
        self.store.save_review(&review).await?;
        {
            let mut board = self.lock();
            if review.status.is_final() {
                board.open.remove(&review.id);
            } else {
                board.open.insert(review.id, review.clone());
            }
            self.refresh_grants(&board);
        }
        self.changed.send_modify(|n| *n += 1);
        if let Some(recorder) = &self.recorder {
            let subject = if review.grant.is_some() {
                "grant"
            } else {
                "review"
            };
            let note =
                serde_json::json!({ "event": format!("{subject}.{kind}"), "review": review });
            // A recorder shut down at stop: the review's own row holds it.
            let _ = recorder
                .record(crate::audit::AuditEvent::note("review", note))
                .await;
        }
        let _ = self.events.send(ReviewEvent { kind, review });
        Ok(())
    }

    /// Ends what is past its time: pending reviews after `review_ttl`,
    /// approvals not used within `approval_validity`.
    pub async fn sweep(&self) -> Result<(), StoreError> {
        let _saving = self.saving.lock().await;
        self.sweep_locked().await
    }

    async fn sweep_locked(&self) -> Result<(), StoreError> {
        let now = self.now();
        let stale: Vec<Review> = self
            .lock()
            .open
            .values()
            .filter(|r| match r.status {
                ReviewStatus::Pending => r.expires_at <= now,
                ReviewStatus::Approved => r.approval_expires_at.is_some_and(|t| t <= now),
                _ => false,
            })
            .cloned()
            .collect();
        for mut r in stale {
            let note = match (r.status, &r.grant) {
                (ReviewStatus::Pending, _) => "not decided in time",
                (_, Some(_)) => "grant ended",
                (_, None) => "approval not used in time",
            };
            r.end(ReviewStatus::Expired, now, note);
            self.commit(r, "expired").await?;
        }
        Ok(())
    }

    /// Asks review for a command: uses a waiting approval of the same
    /// statement by the same requester on the same connection, joins its
    /// pending review, or opens a new one.
    pub async fn submit(&self, ask: ReviewAsk) -> Result<Submission, ReviewError> {
        let _saving = self.saving.lock().await;
        self.sweep_locked().await?;
        let hash = ask.hash.clone();
        let same = |r: &Review| {
            r.grant.is_none()
                && r.hash == hash
                && r.requester == ask.identity.user
                && r.actor == ask.identity.actor
                && r.connection == ask.connection
        };
        let now = self.now();
        let (approved, pending) = {
            let board = self.lock();
            let approved = board
                .open
                .values()
                .find(|r| same(r) && r.status == ReviewStatus::Approved)
                .cloned();
            let pending = board
                .open
                .values()
                .find(|r| same(r) && r.status == ReviewStatus::Pending)
                .cloned();
            (approved, pending)
        };
        if let Some(mut r) = approved {
            let note = format!(
                "used by session {}",
                ask.session_id.as_deref().unwrap_or("?")
            );
            r.end(ReviewStatus::Used, now, note);
            let token = Approved::of(&r);
            self.commit(r, "used").await?;
            return Ok(Submission::Approved(token));
        }
        if let Some(review) = pending {
            let wait = self.wait_for(&review, now);
            return Ok(Submission::Waiting {
                review: Box::new(review),
                wait,
            });
        }
        let id = self.next_id(&ask.identity)?;
        let review = Review::asked(id, ask, now, self.settings.review_ttl, None);
        self.commit(review.clone(), "created").await?;
        let wait = self.wait_for(&review, now);
        Ok(Submission::Waiting {
            review: Box::new(review),
            wait,
        })
    }

    /// A number for a new review by `who`, unless they have too many open:
    /// each open review is kept, listed and saved, and one requester must
    /// not be able to bury the reviewers or the gateway.
    fn next_id(&self, who: &Identity) -> Result<u64, ReviewError> {
        let mut board = self.lock();
        let open = board
            .open
            .values()
            .filter(|r| r.requester == who.user && r.actor == who.actor)
            .count();
        if open >= MAX_OPEN_PER_REQUESTER {
            return Err(ReviewError::TooMany {
                who: who.describe(),
                open,
            });
        }
        let id = board.next_id;
        board.next_id += 1;
        Ok(id)
    }

    /// How long to hold a client on `review`: its rules' shortest `@wait`
    /// (or the default), never past `max_wait` or the review's expiry.
    fn wait_for(&self, review: &Review, now: i64) -> Duration {
        let asked = review
            .rules
            .iter()
            .filter_map(|r| r.wait_secs)
            .min()
            .map_or(self.settings.default_wait, Duration::from_secs);
        let left = Duration::from_secs(u64::try_from(review.expires_at - now).unwrap_or(0));
        asked.min(self.settings.max_wait).min(left)
    }

    /// Waits up to `up_to` for review `id` to be decided. An approval is
    /// used here, by this waiter.
    pub async fn wait(&self, id: u64, up_to: Duration) -> Outcome {
        let _waiting = Waiting::new(&self.waiters);
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + up_to;
        loop {
            changed.borrow_and_update();
            if let Some(outcome) = self.settled(id).await {
                return outcome;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return Outcome::Pending,
            }
        }
    }

    /// What a waiter on `id` gets now, if the review is no longer pending.
    async fn settled(&self, id: u64) -> Option<Outcome> {
        if self.lock().stopping {
            return Some(Outcome::Stopping);
        }
        let _saving = self.saving.lock().await;
        if self.sweep_locked().await.is_err() {
            return Some(Outcome::Stopping);
        }
        let open = self.lock().open.get(&id).cloned();
        let review = match open {
            Some(r) => r,
            None => match self.store.get_review(id).await {
                Ok(Some(r)) => r,
                _ => return Some(Outcome::Ended(ReviewStatus::Expired)),
            },
        };
        match review.status {
            ReviewStatus::Pending => None,
            ReviewStatus::Approved => {
                let mut r = review;
                let token = Approved::of(&r);
                let note = format!(
                    "used by session {} while it waited",
                    r.session_id.as_deref().unwrap_or("?")
                );
                r.end(ReviewStatus::Used, self.now(), note);
                match self.commit(r, "used").await {
                    Ok(()) => Some(Outcome::Approved(token)),
                    Err(_) => Some(Outcome::Stopping),
                }
            }
            ReviewStatus::Denied => {
                let last = review.decisions.iter().rev().find(|d| !d.approve);
                Some(Outcome::Denied {
                    by: last.map(|d| d.by.clone()).unwrap_or_default(),
                    reason: last.and_then(|d| d.reason.clone()),
                })
            }
            status => Some(Outcome::Ended(status)),
        }
    }

    /// Ends a pending review its requester gave up on.
    pub async fn withdraw(&self, id: u64, why: &str) -> Result<(), StoreError> {
        let _saving = self.saving.lock().await;
        let open = self.lock().open.get(&id).cloned();
        if let Some(mut r) = open.filter(|r| r.status == ReviewStatus::Pending) {
            r.end(
                ReviewStatus::Withdrawn,
                self.now(),
                format!("withdrawn: {why}"),
            );
            self.commit(r, "withdrawn").await?;
        }
        Ok(())
    }

    /// A reviewer approves or denies review `id`.
    pub async fn decide(
        &self,
        id: u64,
        reviewer: &Identity,
        approve: bool,
        reason: Option<String>,
    ) -> Result<Review, ReviewError> {
        let _saving = self.saving.lock().await;
        self.sweep_locked().await?;
        let open = self.lock().open.get(&id).cloned();
        let mut r = match open {
            Some(r) => r,
            None => {
                return Err(match self.store.get_review(id).await? {
                    Some(r) => ReviewError::Closed(id, r.status.as_str()),
                    None => ReviewError::NotFound(id),
                })
            }
        };
        if r.status != ReviewStatus::Pending {
            return Err(ReviewError::Closed(id, r.status.as_str()));
        }
        let who = reviewer.describe();
        let parties = [Some(reviewer.user.as_str()), reviewer.actor.as_deref()];
        if parties.into_iter().flatten().any(|p| r.involves(p)) {
            return Err(ReviewError::OwnRequest { id, who });
        }
        if !r.rules.iter().any(|rule| rule.admits(&reviewer.groups)) {
            return Err(ReviewError::NotAReviewer {
                id,
                who,
                groups: r.reviewers(),
            });
        }
        if r.decisions
            .iter()
            .any(|d| d.by == reviewer.user && d.approve)
        {
            return Err(ReviewError::AlreadyApproved { id, who });
        }
        let now = self.now();
        r.decisions.push(ReviewDecision {
            by: reviewer.user.clone(),
            actor: reviewer.actor.clone(),
            groups: reviewer.groups.clone(),
            approve,
            reason: reason.clone(),
            at: now,
        });
        let kind = if !approve {
            r.end(ReviewStatus::Denied, now, format!("denied by {who}"));
            "denied"
        } else if r.rules.iter().all(|rule| rule.satisfied_by(&r.approvers())) {
            r.status = ReviewStatus::Approved;
            r.approved_at = Some(now);
            // A grant's window starts now; a statement's approval waits
            // to be used for a while.
            let lasts = match &r.grant {
                Some(g) => i64::try_from(g.duration_secs).unwrap_or(i64::MAX / 2),
                None => secs(self.settings.approval_validity),
            };
            r.approval_expires_at = Some(now + lasts);
            "approved"
        } else {
            "decision"
        };
        self.commit(r.clone(), kind).await?;
        Ok(r)
    }

    /// Open reviews (pending and approved), oldest first.
    pub fn open(&self) -> Vec<Review> {
        self.lock().open.values().cloned().collect()
    }

    /// One review, open or ended.
    pub async fn get(&self, id: u64) -> Result<Option<Review>, StoreError> {
        if let Some(r) = self.lock().open.get(&id).cloned() {
            return Ok(Some(r));
        }
        self.store.get_review(id).await
    }

    /// The newest `limit` reviews, open or ended.
    pub async fn history(&self, limit: u32) -> Result<Vec<Review>, StoreError> {
        self.store.recent_reviews(limit).await
    }

    /// Ends every wait: the gateway is stopping. Reviews stay as they are.
    /// Returns once the waits have answered (or after a few seconds), so
    /// their clients hear why before their sessions end.
    pub async fn stop(&self) {
        self.lock().stopping = true;
        self.changed.send_modify(|n| *n += 1);
        let mut waiters = self.waiters.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(3), waiters.wait_for(|n| *n == 0)).await;
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)
}
