//! No single record can stop the projection. A batch that Postgres refuses
//! for its data (SQLSTATE class 22, data exception, or 23, integrity
//! violation: e.g. U+0000 in a text column) is written again record by
//! record; a record that still fails is quarantined — kept in
//! `quarantined_records` with the reason, its offset consumed — and the
//! partition goes on. The workflow's row then stops before that record:
//! the fold ignores its later records, which no longer follow its chain.

use agentflow_core::{Record, WorkflowId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::projection::{BatchOutcome, Positioned, ProjectionCache};
use crate::{Store, StoreError};

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

impl Store {
    /// [`Store::apply_batch`], except that a record Postgres refuses for its
    /// data is quarantined instead of failing the batch (see the module's
    /// documentation). Other errors (Postgres unavailable…) are returned:
    /// retry the batch, records already written are skipped by offset.
    pub async fn project(
        &self,
        topic: &str,
        batch: &[Positioned],
        cache: &mut ProjectionCache,
    ) -> Result<BatchOutcome, StoreError> {
        match self.apply_batch(topic, batch, cache).await {
            Err(e) if e.is_data_error() && batch.len() > 1 => {
                tracing::warn!(error = %e, records = batch.len(),
                    "projector batch refused for its data; writing it record by record");
            }
            Err(e) if e.is_data_error() => {}
            other => return other,
        }
        let mut out = BatchOutcome::default();
        for r in batch {
            let one = match self
                .apply_batch(topic, std::slice::from_ref(r), cache)
                .await
            {
                Ok(one) => one,
                Err(e) if e.is_data_error() => {
                    let q = self
                        .quarantine(topic, r.partition, r.offset, Ok(&r.record), &e.to_string())
                        .await?;
                    let mut one = BatchOutcome {
                        next_offsets: vec![(r.partition, r.offset + 1)],
                        ..Default::default()
                    };
                    one.quarantined.push(q);
                    one
                }
                Err(e) => return Err(e),
            };
            out.merge(one);
        }
        Ok(out)
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
