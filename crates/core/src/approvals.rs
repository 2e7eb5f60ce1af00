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

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use rule::ReviewRule;
pub use store::{MemoryReviewStore, ReviewStore};

use crate::audit::StoreError;
use crate::identity::Clock;
use crate::Identity;

/// Where a review stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    /// Waiting for decisions.
    Pending,
    /// Approved and not yet used.
    Approved,
    /// A reviewer denied it.
    Denied,
    /// It was not decided, or its approval not used, in time.
    Expired,
    /// The requester withdrew it (Ctrl-C).
    Withdrawn,
    /// Its approval ran the statement.
    Used,
}

impl ReviewStatus {
    /// Whether nothing can change it any more.
    pub fn is_final(self) -> bool {
        !matches!(self, ReviewStatus::Pending | ReviewStatus::Approved)
    }

    /// Its name, as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Pending => "pending",
            ReviewStatus::Approved => "approved",
            ReviewStatus::Denied => "denied",
            ReviewStatus::Expired => "expired",
            ReviewStatus::Withdrawn => "withdrawn",
            ReviewStatus::Used => "used",
        }
    }
}

/// One reviewer's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewDecision {
    /// Who decided.
    pub by: String,
    /// The agent they decided through, if any.
    pub actor: Option<String>,
    /// Their groups when they decided.
    pub groups: Vec<String>,
    /// Approve or deny.
    pub approve: bool,
    /// Why, in their words.
    pub reason: Option<String>,
    /// When, seconds since the epoch.
    pub at: i64,
}

/// A command waiting for (or past) review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// Its number, shown to clients and reviewers.
    pub id: u64,
    /// Where it stands.
    pub status: ReviewStatus,
    /// Who asked: the user the command is attributed to.
    pub requester: String,
    /// The agent acting for the requester, if any.
    pub actor: Option<String>,
    /// The session that asked.
    pub session_id: Option<String>,
    /// The connection and protocol.
    pub connection: String,
    /// The protocol (`postgres`).
    pub protocol: String,
    /// What needs approval, e.g. `delete on app-db/public.people`.
    pub action: String,
    /// The permits that ask for review.
    pub policies: Vec<String>,
    /// Who must approve.
    pub rules: Vec<ReviewRule>,
    /// The exact statement.
    pub statement: String,
    /// Its parameters (`None` for NULL).
    pub params: Vec<Option<String>>,
    /// SHA-256 of the statement and its parameters, hex.
    pub hash: String,
    /// The requester's reason, if given.
    pub reason: Option<String>,
    /// When it was asked and when it expires unless decided, seconds
    /// since the epoch.
    pub created_at: i64,
    /// See `created_at`.
    pub expires_at: i64,
    /// Decisions so far.
    pub decisions: Vec<ReviewDecision>,
    /// When the approval came, and until when it may be used.
    pub approved_at: Option<i64>,
    /// See `approved_at`.
    pub approval_expires_at: Option<i64>,
    /// When it ended, and how (`used by session …`, `withdrawn: Ctrl-C`).
    pub ended_at: Option<i64>,
    /// See `ended_at`.
    pub end_note: Option<String>,
}

impl Review {
    /// "dba", or every rule's description joined.
    pub fn reviewers(&self) -> String {
        let parts: Vec<String> = self.rules.iter().map(ReviewRule::describe).collect();
        parts.join(" and ")
    }

    fn approvers(&self) -> Vec<Vec<String>> {
        self.decisions
            .iter()
            .filter(|d| d.approve)
            .map(|d| d.groups.clone())
            .collect()
    }

    fn end(&mut self, status: ReviewStatus, at: i64, note: impl Into<String>) {
        self.status = status;
        self.ended_at = Some(at);
        self.end_note = Some(note.into());
    }

    /// Whether `who` (a user or agent name) is a party to the request.
    fn involves(&self, who: &str) -> bool {
        self.requester == who || self.actor.as_deref() == Some(who)
    }
}

/// SHA-256 of a statement and its parameters, hex: the identity of "the
/// same statement" for approvals. Lengths are framed so no two different
/// (text, parameters) give the same input.
pub fn statement_hash(text: &str, params: &[Option<String>]) -> String {
    let mut h = Sha256::new();
    h.update((text.len() as u64).to_be_bytes());
    h.update(text.as_bytes());
    h.update((params.len() as u64).to_be_bytes());
    for p in params {
        match p {
            None => h.update([0u8]),
            Some(v) => {
                h.update([1u8]);
                h.update((v.len() as u64).to_be_bytes());
                h.update(v.as_bytes());
            }
        }
    }
    hex::encode(h.finalize())
}

/// What an adapter asks review for.
#[derive(Debug, Clone)]
pub struct ReviewAsk {
    /// Who asks.
    pub identity: Identity,
    /// The session.
    pub session_id: Option<String>,
    /// The connection and protocol.
    pub connection: String,
    /// See `connection`.
    pub protocol: String,
    /// What needs approval, in the protocol's words.
    pub action: String,
    /// The permits that ask for review.
    pub policies: Vec<String>,
    /// Who must approve.
    pub rules: Vec<ReviewRule>,
    /// The exact statement and its parameters.
    pub statement: String,
    /// See `statement`.
    pub params: Vec<Option<String>>,
    /// The requester's reason, if given.
    pub reason: Option<String>,
}

/// Leave to run one reviewed command: made only by the board, once per
/// approval, for the hash it approved.
#[derive(Debug)]
#[must_use = "an approval is used once; dropping it wastes it"]
pub struct Approved {
    review: u64,
    hash: String,
}

impl Approved {
    /// The review that approved it.
    pub fn review(&self) -> u64 {
        self.review
    }

    /// The statement hash it covers.
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

/// The answer to a [`ReviewAsk`].
#[derive(Debug)]
pub enum Submission {
    /// An approval of the same statement was waiting: it is used now.
    Approved(Approved),
    /// Wait on this review (new, or the same statement's pending one)
    /// for at most `wait`.
    Waiting {
        /// The review.
        review: Box<Review>,
        /// Whether this ask created it.
        created: bool,
        /// How long to hold the client.
        wait: Duration,
    },
}

/// How a wait ended.
#[derive(Debug)]
pub enum Outcome {
    /// Approved: run it (the approval is used).
    Approved(Approved),
    /// Still pending after the time asked for.
    Pending,
    /// A reviewer denied it.
    Denied {
        /// Who.
        by: String,
        /// Why.
        reason: Option<String>,
    },
    /// It expired, was withdrawn, or another session used its approval.
    Ended(ReviewStatus),
    /// The gateway is stopping; the review stays as it is.
    Stopping,
}

/// Why a reviewer's decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// No such review.
    #[error("no review {0}")]
    NotFound(u64),
    /// It is no longer pending.
    #[error("review {0} is {1} and can no longer be decided")]
    Closed(u64, &'static str),
    /// The decider is a party to the request.
    #[error("{who} cannot decide review {id}: nobody decides a review of their own request, or one an agent acting for them made")]
    OwnRequest {
        /// The review.
        id: u64,
        /// Who tried.
        who: String,
    },
    /// The decider is in none of the reviewing groups.
    #[error("{who} cannot decide review {id}: it needs approval by {groups}")]
    NotAReviewer {
        /// The review.
        id: u64,
        /// Who tried.
        who: String,
        /// Who may.
        groups: String,
    },
    /// The decider approved already.
    #[error("{who} already approved review {id}; it needs approvals from other people")]
    AlreadyApproved {
        /// The review.
        id: u64,
        /// Who tried.
        who: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Times the board works with.
#[derive(Debug, Clone)]
pub struct ReviewSettings {
    /// How long a client is held when its rule names no `@wait`.
    pub default_wait: Duration,
    /// The longest hold any `@wait` gets.
    pub max_wait: Duration,
    /// How long a review stays open for decisions.
    pub review_ttl: Duration,
    /// How long an approval may wait to be used.
    pub approval_validity: Duration,
}

impl Default for ReviewSettings {
    fn default() -> Self {
        Self {
            default_wait: Duration::from_secs(120),
            max_wait: Duration::from_secs(3600),
            review_ttl: Duration::from_secs(3600),
            approval_validity: Duration::from_secs(600),
        }
    }
}

/// Something that happened to a review, for notifications.
#[derive(Debug, Clone)]
pub struct ReviewEvent {
    /// `created`, `approved`, `denied`, `decision` (an approval short of
    /// the threshold), `expired`, `withdrawn`, `used`.
    pub kind: &'static str,
    /// The review after it.
    pub review: Review,
}

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
        }
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
        }
        self.changed.send_modify(|n| *n += 1);
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
            let note = if r.status == ReviewStatus::Pending {
                "not decided in time"
            } else {
                "approval not used in time"
            };
            r.end(ReviewStatus::Expired, now, note);
            self.commit(r, "expired").await?;
        }
        Ok(())
    }

    /// Asks review for a command: uses a waiting approval of the same
    /// statement by the same requester on the same connection, joins its
    /// pending review, or opens a new one.
    pub async fn submit(&self, ask: ReviewAsk) -> Result<Submission, StoreError> {
        let _saving = self.saving.lock().await;
        self.sweep_locked().await?;
        let hash = statement_hash(&ask.statement, &ask.params);
        let same = |r: &Review| {
            r.hash == hash
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
            let token = Approved {
                review: r.id,
                hash: r.hash.clone(),
            };
            self.commit(r, "used").await?;
            return Ok(Submission::Approved(token));
        }
        if let Some(review) = pending {
            let wait = self.wait_for(&review, now);
            return Ok(Submission::Waiting {
                review: Box::new(review),
                created: false,
                wait,
            });
        }
        let id = {
            let mut board = self.lock();
            let id = board.next_id;
            board.next_id += 1;
            id
        };
        let review = Review {
            id,
            status: ReviewStatus::Pending,
            requester: ask.identity.user.clone(),
            actor: ask.identity.actor.clone(),
            session_id: ask.session_id,
            connection: ask.connection,
            protocol: ask.protocol,
            action: ask.action,
            policies: ask.policies,
            rules: ask.rules,
            statement: ask.statement,
            params: ask.params,
            hash,
            reason: ask.reason,
            created_at: now,
            expires_at: now + secs(self.settings.review_ttl),
            decisions: Vec::new(),
            approved_at: None,
            approval_expires_at: None,
            ended_at: None,
            end_note: None,
        };
        self.commit(review.clone(), "created").await?;
        let wait = self.wait_for(&review, now);
        Ok(Submission::Waiting {
            review: Box::new(review),
            created: true,
            wait,
        })
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
                let token = Approved {
                    review: r.id,
                    hash: r.hash.clone(),
                };
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
            r.approval_expires_at = Some(now + secs(self.settings.approval_validity));
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
