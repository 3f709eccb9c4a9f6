//! Engine nodes report the partitions they own (see
//! `migrations/*_cancel_timeouts_snapshots.sql`), so that a partition no live
//! node owns can be noticed.

use std::time::Duration;

use crate::{Store, StoreError};

impl Store {
    /// Records that `node_id` owns `partitions` now.
    pub async fn report_owned(
        &self,
        topic: &str,
        node_id: &str,
        partitions: &[i32],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO engine_partitions (topic, partition, node_id, seen_at)
             SELECT $1, p, $2, now() FROM UNNEST($3::int[]) AS p
             ON CONFLICT (topic, partition) DO UPDATE
             SET node_id = EXCLUDED.node_id, seen_at = EXCLUDED.seen_at",
        )
        .bind(topic)
        .bind(node_id)
        .bind(partitions)
        .execute(self.pool())
        .await
        .map_err(StoreError::classify)?;
        Ok(())
    }

    /// The partitions in `0..count` that no node reported owning within
    /// `fresh`.
    pub async fn unowned_partitions(
        &self,
        topic: &str,
        count: i32,
        fresh: Duration,
    ) -> Result<Vec<i32>, StoreError> {
        sqlx::query_scalar(
            "SELECT p FROM generate_series(0, $2 - 1) AS p
             WHERE NOT EXISTS (
                 SELECT 1 FROM engine_partitions e
                 WHERE e.topic = $1 AND e.partition = p
                   AND e.seen_at > now() - make_interval(secs => $3))
             ORDER BY p",
        )
        .bind(topic)
        .bind(count)
        .bind(fresh.as_secs_f64())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::classify)
    }
}

impl Store {
    /// The engine nodes that reported owning partitions of `topic` within
    /// `fresh` (they are running against this database).
    pub async fn live_engine_nodes(
        &self,
        topic: &str,
        fresh: Duration,
    ) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT DISTINCT node_id FROM engine_partitions
             WHERE topic = $1 AND seen_at > now() - make_interval(secs => $2)
             ORDER BY node_id",
        )
        .bind(topic)
        .bind(fresh.as_secs_f64())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::classify)
    }
}
