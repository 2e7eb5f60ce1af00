//! Reviews in the SQLite store: one row per review, its whole form as
//! JSON beside the columns it is looked up by.

use async_trait::async_trait;
use portcullis_core::approvals::{Review, ReviewStore};
use portcullis_core::audit::StoreError;
use sqlx::Row;

use super::{backend, from_json, json, SqliteStore};

#[async_trait]
impl ReviewStore for SqliteStore {
    async fn save_review(&self, review: &Review) -> Result<(), StoreError> {
        let (id, status, requester, connection, body) = (
            i64::try_from(review.id).map_err(|e| StoreError::Backend(e.to_string()))?,
            review.status.as_str(),
            review.requester.clone(),
            review.connection.clone(),
            json(review),
        );
        self.writer
            .run(move |conn| {
                conn.execute(
                    "INSERT INTO reviews (id, status, requester, connection, body) VALUES (?, ?, ?, ?, ?) \
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status, body = excluded.body",
                    rusqlite::params![id, status, requester, connection, body],
                )
            })
            .await
            .map(drop)
    }

    async fn load_open(&self) -> Result<Vec<Review>, StoreError> {
        let rows = sqlx::query(
            "SELECT body FROM reviews WHERE status IN ('pending', 'approved') ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| from_json(r.get::<&str, _>("body")))
            .collect()
    }

    async fn max_id(&self) -> Result<u64, StoreError> {
        let max: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM reviews")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(max.map_or(0, |m| u64::try_from(m).unwrap_or(0)))
    }

    async fn get_review(&self, id: u64) -> Result<Option<Review>, StoreError> {
        let id = i64::try_from(id).unwrap_or(i64::MAX);
        let row = sqlx::query("SELECT body FROM reviews WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.map(|r| from_json(r.get::<&str, _>("body"))).transpose()
    }

    async fn recent_reviews(&self, limit: u32) -> Result<Vec<Review>, StoreError> {
        let rows = sqlx::query("SELECT body FROM reviews ORDER BY id DESC LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|r| from_json(r.get::<&str, _>("body")))
            .collect()
    }
}
