//! Where the engine starts a partition: the projection is a checkpoint of
//! the fold. Completed and cancelled workflows never change, so a new owner
//! needs only the other states and the offset they were projected up to;
//! it replays the log's tail from there instead of the whole history.

use agentflow_core::WorkflowState;
use uuid::Uuid;

use crate::rows::load_states;
use crate::{CheckpointReader, StoreError};

/// One partition's checkpoint: every workflow that can still change, as
/// folded from the records below `next_offset`.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionSnapshot {
    pub partition: i32,
    pub next_offset: i64,
    pub states: Vec<WorkflowState>,
}

impl CheckpointReader {
    /// Checkpoints of those `partitions` the projector has reached, read in
    /// one snapshot so states and offsets agree. Partitions it has not
    /// started are left out (replay them from the beginning).
    pub async fn engine_snapshot(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<PartitionSnapshot>, StoreError> {
        let mut tx = self.pool().begin().await.map_err(StoreError::classify)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(StoreError::classify)?;
        // A quarantined record is in the log but not in the rows: its
        // workflow's row stops before it. Replaying from it at the latest
        // brings it back (the newer states of other workflows ignore the
        // older records they meet on the way).
        let offsets: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT partition, next_offset FROM (
                 SELECT o.partition, LEAST(o.next_offset, COALESCE(
                     (SELECT min(q.log_offset) FROM quarantined_records q
                      WHERE q.topic = o.topic AND q.log_partition = o.partition),
                     o.next_offset)) AS next_offset
                 FROM projector_offsets o
                 WHERE o.topic = $1 AND o.partition = ANY($2)) AS c
             WHERE next_offset > 0",
        )
        .bind(topic)
        .bind(partitions)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::classify)?;
        if offsets.is_empty() {
            return Ok(Vec::new());
        }
        // Rows projected before partitions were recorded cannot be placed:
        // then only a full replay is safe.
        let (unplaced,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM workflows WHERE log_partition IS NULL
                            AND status IN ('pending', 'running', 'waiting', 'paused', 'failed'))",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::classify)?;
        if unplaced {
            return Ok(Vec::new());
        }
        let parts: Vec<i32> = offsets.iter().map(|(p, _)| *p).collect();
        let live: Vec<(Uuid, i32)> = sqlx::query_as(
            "SELECT id, log_partition FROM workflows
             WHERE log_partition = ANY($1) AND status IN ('pending', 'running', 'waiting', 'paused', 'failed')",
        )
        .bind(&parts)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::classify)?;
        let ids: Vec<Uuid> = live.iter().map(|(id, _)| *id).collect();
        let mut states = load_states(&mut tx, &ids).await?;
        tx.commit().await.map_err(StoreError::classify)?;
        let mut out: Vec<PartitionSnapshot> = offsets
            .into_iter()
            .map(|(partition, next_offset)| PartitionSnapshot {
                partition,
                next_offset,
                states: Vec::new(),
            })
            .collect();
        for (id, partition) in live {
            let Some(Some(st)) = states.remove(&agentflow_core::WorkflowId::from(id)) else {
                continue;
            };
            if let Some(snap) = out.iter_mut().find(|s| s.partition == partition) {
                snap.states.push(st);
            }
        }
        Ok(out)
    }
}
