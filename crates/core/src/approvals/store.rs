//! Where reviews persist.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::Review;
use crate::audit::StoreError;

/// Where reviews live. Each save replaces the review's stored form whole;
/// nothing is ever deleted (ended reviews are the history).
#[async_trait]
pub trait ReviewStore: Send + Sync {
    /// Stores `review` (new or changed).
    async fn save_review(&self, review: &Review) -> Result<(), StoreError>;
    /// Reviews that are pending or approved.
    async fn load_open(&self) -> Result<Vec<Review>, StoreError>;
    /// The highest review id ever stored (0 when none).
    async fn max_id(&self) -> Result<u64, StoreError>;
    /// One review.
    async fn get_review(&self, id: u64) -> Result<Option<Review>, StoreError>;
    /// The newest `limit` reviews, newest first.
    async fn recent_reviews(&self, limit: u32) -> Result<Vec<Review>, StoreError>;
}

/// Reviews in memory: for tests, and for tools that decide without a
/// gateway.
#[derive(Default)]
pub struct MemoryReviewStore(Mutex<BTreeMap<u64, Review>>);

impl MemoryReviewStore {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Review>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl ReviewStore for MemoryReviewStore {
    async fn save_review(&self, review: &Review) -> Result<(), StoreError> {
        self.map().insert(review.id, review.clone());
        Ok(())
    }

    async fn load_open(&self) -> Result<Vec<Review>, StoreError> {
        Ok(self
            .map()
            .values()
            .filter(|r| !r.status.is_final())
            .cloned()
            .collect())
    }

    async fn max_id(&self) -> Result<u64, StoreError> {
        Ok(self.map().keys().next_back().copied().unwrap_or(0))
    }

    async fn get_review(&self, id: u64) -> Result<Option<Review>, StoreError> {
        Ok(self.map().get(&id).cloned())
    }

    async fn recent_reviews(&self, limit: u32) -> Result<Vec<Review>, StoreError> {
        Ok(self
            .map()
            .values()
            .rev()
            .take(limit as usize)
            .cloned()
            .collect())
    }
}
