//! No single record can stop the projection. A batch that Postgres refuses
//! for its data (SQLSTATE class 22, data exception, or 23, integrity
//! violation: e.g. U+0000 in a text column) is written again record by
//! record; a record that still fails is quarantined — kept in
//! `quarantined_records` with the reason, its offset consumed — and the
//! partition goes on. The workflow's row then stops before that record:
//! the fold ignores its later records, which no longer follow its chain.
//!
//! Any other error is tried again a bounded number of times with backoff
//! ([`WriteRetry`]) and then handled the same way: whatever Postgres says
//! (a statement over a limit, a trigger, an internal error), a record that
//! keeps failing is quarantined rather than retried forever, which would
//! stop every user's reads. Only Postgres being away (a connection that
//! fails and a ping that fails too) is waited out without a bound: that is
//! no fault of the data, and nothing would be gained by setting it aside.

use std::time::Duration;

use agentflow_core::{Record, WorkflowId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::projection::{BatchOutcome, Positioned, ProjectionCache};
use crate::{ProjectionReader, ProjectionWriter, StoreError};

/// A record the projector could not write (or read), as kept in
/// `quarantined_records`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantinedRecord {
    pub partition: i32,
    pub offset: i64,
    /// `None` when the record could not be read at all.
    pub workflow_id: Option<WorkflowId>,
    pub user_id: Option<i64>,
    pub event_type: Option<String>,
    pub seq: Option<u64>,
    /// What Postgres (or the reader) said.
    pub reason: String,
    /// The record's JSON text, when it could be read.
    pub record: Option<String>,
    pub quarantined_at: DateTime<Utc>,
}

type Row = (
    i32,
    i64,
    Option<Uuid>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    String,
    Option<String>,
    DateTime<Utc>,
);

const COLUMNS: &str = "log_partition, log_offset, workflow_id, user_id, event_type, seq, reason, record, quarantined_at";

fn from_row(r: Row) -> QuarantinedRecord {
    QuarantinedRecord {
        partition: r.0,
        offset: r.1,
        workflow_id: r.2.map(WorkflowId::from),
        user_id: r.3,
        event_type: r.4,
        seq: r.5.map(|s| s.max(0) as u64),
        reason: r.6,
        record: r.7,
        quarantined_at: r.8,
    }
}

/// Text Postgres can hold, whatever an error message quoted.
fn storable(s: &str) -> String {
    s.replace('\0', "\\u0000")
}

/// How often a write that fails (for another reason than Postgres being
/// away) is tried before its batch is narrowed to the record at fault and
/// that record is quarantined.
#[derive(Debug, Clone, Copy)]
pub struct WriteRetry {
    /// Tries of one write: the batch, then each of its records.
    pub attempts: u32,
    /// Tries when the error is one that passes by itself (a serialization
    /// failure or deadlock, too few resources, a lock not available), as
    /// long as it keeps recurring.
    pub transient_attempts: u32,
    /// The wait after the first failure, doubled after each, up to
    /// `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for WriteRetry {
    fn default() -> Self {
        Self {
            attempts: 5,
            transient_attempts: 20,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// How a write ended after its tries.
enum Tried {
    Written(BatchOutcome),
    /// Postgres refused it every time (or, for its data, once).
    Refused(StoreError),
}

impl ProjectionWriter {
    /// [`ProjectionWriter::project_once`], except that a record Postgres keeps refusing
    /// is quarantined instead of failing the batch (see the module's
    /// documentation), with the default [`WriteRetry`]. Only "Postgres is
    /// away" is returned as an error (and a failure to quarantine): retry
    /// the batch then, records already written are skipped by offset.
    pub async fn project(
        &self,
        topic: &str,
        batch: &[Positioned],
        cache: &mut ProjectionCache,
    ) -> Result<BatchOutcome, StoreError> {
        self.project_with(topic, batch, cache, &WriteRetry::default())
            .await
    }

    /// [`ProjectionWriter::project`] with these tries.
    pub async fn project_with(
        &self,
        topic: &str,
        batch: &[Positioned],
        cache: &mut ProjectionCache,
        retry: &WriteRetry,
    ) -> Result<BatchOutcome, StoreError> {
        let mut failures = 0;
        let e = match self
            .try_write(topic, batch, cache, retry, &mut failures)
            .await?
        {
            Tried::Written(mut out) => {
                out.write_failures = failures;
                return Ok(out);
            }
            Tried::Refused(e) => e,
        };
        if batch.len() > 1 {
            tracing::warn!(error = %e, records = batch.len(),
                "projector batch refused; writing it record by record");
        }
        let mut out = BatchOutcome::default();
        for r in batch {
            let one = std::slice::from_ref(r);
            let refused = if batch.len() == 1 {
                e.to_string()
            } else {
                match self
                    .try_write(topic, one, cache, retry, &mut failures)
                    .await?
                {
                    Tried::Written(one) => {
                        out.merge(one);
                        continue;
                    }
                    Tried::Refused(e) => e.to_string(),
                }
            };
            let q = self
                .quarantine(topic, r.partition, r.offset, Ok(&r.record), &refused)
                .await?;
            out.merge(BatchOutcome {
                next_offsets: vec![(r.partition, r.offset + 1)],
                quarantined: vec![q],
                ..Default::default()
            });
        }
        out.write_failures = failures;
        Ok(out)
    }

    /// Writes `batch`, trying again after an error as `retry` says; counts
    /// the failed tries in `failures`. `Err`: Postgres is away.
    async fn try_write(
        &self,
        topic: &str,
        batch: &[Positioned],
        cache: &mut ProjectionCache,
        retry: &WriteRetry,
        failures: &mut u32,
    ) -> Result<Tried, StoreError> {
        let mut tries = 0;
        let mut delay = retry.first_delay;
        loop {
            let e = match self.project_once(topic, batch, cache).await {
                Ok(out) => return Ok(Tried::Written(out)),
                Err(e) => e,
            };
            // The same data fails the same way: no use trying it again.
            if e.is_data_error() {
                *failures += 1;
                return Ok(Tried::Refused(e));
            }
            // A connection that failed: if Postgres answers a ping, it is
            // up, and this write is what keeps failing (a statement that
            // makes the server drop the connection, say).
            if e.is_unavailable() && crate::ping(self.pool()).await.is_err() {
                return Err(e);
            }
            *failures += 1;
            tries += 1;
            let limit = if e.is_transient() {
                retry.transient_attempts
            } else {
                retry.attempts
            };
            if tries >= limit {
                tracing::error!(error = %e, records = batch.len(), tries,
                    "projector write keeps failing; giving it up");
                return Ok(Tried::Refused(e));
            }
            tracing::warn!(error = %e, records = batch.len(), tries,
                "projector write failed, retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(retry.max_delay);
        }
    }

    /// Keeps a record the projector cannot write (`Ok`) or could not read
    /// (`Err`: why) in `quarantined_records`, and consumes its offset, in one
    /// transaction. Logged at error level.
    pub async fn quarantine(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        record: Result<&Record, &str>,
        reason: &str,
    ) -> Result<QuarantinedRecord, StoreError> {
        let reason = storable(reason);
        let (workflow_id, user_id, event_type, seq, text) = match record {
            Ok(r) => (
                Some(r.workflow_id),
                Some(r.user_id.0),
                Some(r.event_type().to_owned()),
                Some(r.seq as i64),
                // JSON text escapes U+0000: always storable.
                Some(r.to_json_string()),
            ),
            Err(_) => (None, None, None, None, None),
        };
        tracing::error!(partition, offset, workflow_id = ?workflow_id, event_type = ?event_type,
            %reason, "record quarantined: the projection cannot hold it; the partition goes on");
        let mut tx = self.pool().begin().await.map_err(StoreError::classify)?;
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO quarantined_records
                (topic, log_partition, log_offset, workflow_id, user_id, event_type, seq,
                 reason, record)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT DO NOTHING
             RETURNING {COLUMNS}"
        )))
        .bind(topic)
        .bind(partition)
        .bind(offset)
        .bind(workflow_id.map(|w| w.as_uuid()))
        .bind(user_id)
        .bind(event_type)
        .bind(seq)
        .bind(&reason)
        .bind(text)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::classify)?;
        sqlx::query(
            "INSERT INTO projector_offsets (topic, partition, next_offset, updated_at)
             VALUES ($1, $2, $3, now())
             ON CONFLICT (topic, partition) DO UPDATE
             SET next_offset = GREATEST(projector_offsets.next_offset, EXCLUDED.next_offset),
                 updated_at = now()",
        )
        .bind(topic)
        .bind(partition)
        .bind(offset + 1)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::classify)?;
        tx.commit().await.map_err(StoreError::classify)?;
        match row {
            Some(r) => Ok(from_row(r)),
            // Quarantined before (a retry): what was kept then.
            None => self
                .quarantined_at(topic, partition, offset)
                .await?
                .ok_or_else(|| StoreError::Corrupt("quarantined record vanished".into())),
        }
    }

    async fn quarantined_at(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Option<QuarantinedRecord>, StoreError> {
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM quarantined_records
             WHERE topic = $1 AND log_partition = $2 AND log_offset = $3"
        )))
        .bind(topic)
        .bind(partition)
        .bind(offset)
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::classify)?;
        Ok(row.map(from_row))
    }
}

impl ProjectionReader {
    /// Every quarantined record of `topic`, in log order.
    pub async fn quarantined(&self, topic: &str) -> Result<Vec<QuarantinedRecord>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM quarantined_records WHERE topic = $1
             ORDER BY log_partition, log_offset"
        )))
        .bind(topic)
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::classify)?;
        Ok(rows.into_iter().map(from_row).collect())
    }

    /// The quarantined records of one workflow, in log order.
    pub async fn quarantined_of(
        &self,
        topic: &str,
        id: WorkflowId,
    ) -> Result<Vec<QuarantinedRecord>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM quarantined_records WHERE topic = $1 AND workflow_id = $2
             ORDER BY log_offset"
        )))
        .bind(topic)
        .bind(id.as_uuid())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::classify)?;
        Ok(rows.into_iter().map(from_row).collect())
    }
}
