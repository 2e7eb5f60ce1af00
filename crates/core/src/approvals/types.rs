//! What reviews are made of: the review record, what adapters ask, and
//! what waiting on one returns.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ReviewRule;
use crate::audit::StoreError;
use crate::Identity;

/// Where a review stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// A grant ended early by someone's decision.
    Revoked,
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
            ReviewStatus::Revoked => "revoked",
        }
    }
}

/// One reviewer's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// SHA-256 (hex) of the exact command and of what its review is for;
    /// an approval runs only a command with the same.
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
    /// For a grant request: what is granted. Approved, the grant is in
    /// force from `approved_at` to `approval_expires_at`.
    #[serde(default)]
    pub grant: Option<GrantTerms>,
}

/// What a grant gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GrantTerms {
    /// The elevated role.
    pub role: String,
    /// For how long, from the approval, in seconds.
    pub duration_secs: u64,
}

impl Review {
    /// A pending review `id` of `ask`, asked at `now` and open for `ttl`;
    /// `grant` for a grant request.
    pub(super) fn asked(
        id: u64,
        ask: ReviewAsk,
        now: i64,
        ttl: Duration,
        grant: Option<GrantTerms>,
    ) -> Self {
        Self {
            id,
            status: ReviewStatus::Pending,
            requester: ask.identity.user,
            actor: ask.identity.actor,
            session_id: ask.session_id,
            connection: ask.connection,
            protocol: ask.protocol,
            action: ask.action,
            policies: ask.policies,
            rules: ask.rules,
            statement: ask.statement,
            params: ask.params,
            hash: ask.hash,
            reason: ask.reason,
            created_at: now,
            expires_at: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2)),
            decisions: Vec::new(),
            approved_at: None,
            approval_expires_at: None,
            ended_at: None,
            end_note: None,
            grant,
        }
    }

    /// "dba", or every rule's description joined.
    pub fn reviewers(&self) -> String {
        let parts: Vec<String> = self.rules.iter().map(ReviewRule::describe).collect();
        parts.join(" and ")
    }

    pub(super) fn approvers(&self) -> Vec<Vec<String>> {
        self.decisions
            .iter()
            .filter(|d| d.approve)
            .map(|d| d.groups.clone())
            .collect()
    }

    pub(super) fn end(&mut self, status: ReviewStatus, at: i64, note: impl Into<String>) {
        self.status = status;
        self.ended_at = Some(at);
        self.end_note = Some(note.into());
    }

    /// Whether `who` (a user or agent name) is a party to the request.
    pub(super) fn involves(&self, who: &str) -> bool {
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
    /// The exact statement and its parameters, as reviewers see them.
    pub statement: String,
    /// See `statement`.
    pub params: Vec<Option<String>>,
    /// What an approval will name: the adapter's exact digest of the
    /// command and of what its review is for (SHA-256, hex). Two asks with
    /// the same digest are the same request.
    pub hash: String,
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
    /// Made by the board only, when it uses an approval.
    pub(super) fn of(review: &Review) -> Self {
        Self {
            review: review.id,
            hash: review.hash.clone(),
        }
    }

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
    /// The requester has too many reviews open.
    #[error("{who} has {open} reviews open, the most one requester may: wait for decisions, or for them to expire")]
    TooMany {
        /// Who asked.
        who: String,
        /// How many are open.
        open: usize,
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
