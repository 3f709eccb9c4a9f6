//! The read API's queries.

use agentflow_core::{Record, UserId, WorkflowId, WorkflowState, WorkflowStatus};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::rows::{WORKFLOW_COLUMNS, WorkflowRow, states_of};
use crate::{Admin, ProjectionReader, StoreError};

/// A position in the newest-first list: the last item of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    /// An opaque token: `{micros}.{uuid}`.
    pub fn encode(&self) -> String {
        format!(
            "{}.{}",
            self.created_at.timestamp_micros(),
            self.id.simple()
        )
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (micros, id) = s.split_once('.')?;
        Some(Self {
            created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            id: Uuid::try_parse(id).ok()?,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// `None`: every user's (admins).
    pub user: Option<UserId>,
    pub status: Option<WorkflowStatus>,
    /// Only the workflows whose name contains this (case-insensitive).
    pub name: Option<String>,
    pub limit: u32,
    pub after: Option<Cursor>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkflowSummary {
    pub id: Uuid,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub status: WorkflowStatus,
    pub user_id: i64,
    pub task_count: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A workflow's summary as of a change (see [`ProjectionReader::changed_since`]).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChangedSummary {
    #[sqlx(flatten)]
    pub summary: WorkflowSummary,
    pub seq: i64,
    pub updated_at: DateTime<Utc>,
}

/// `%text%` for `ILIKE`, with `%`, `_` and `\` in `text` taken literally.
fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

impl WorkflowSummary {
    pub fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// The few columns of a workflow that say who owns it and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowHead {
    pub user_id: UserId,
    pub status: WorkflowStatus,
    pub seq: u64,
    pub runs: u32,
    pub last_event_id: Uuid,
    /// Some of its records were quarantined: the row stops before them.
    pub quarantined: bool,
}

impl WorkflowHead {
    /// The head of a state (as the fold has it: nothing quarantined).
    pub fn of(st: &WorkflowState) -> Self {
        Self {
            user_id: st.user_id,
            status: st.status,
            seq: st.seq,
            runs: st.runs,
            last_event_id: st.last_event_id,
            quarantined: false,
        }
    }
}

/// A workflow as projected.
#[derive(Debug, Clone, PartialEq)]
pub struct Projected {
    pub state: WorkflowState,
    /// Some of its records were quarantined (see
    /// [`ProjectionReader::quarantined_of`]): `state` stops before the first of them.
    pub quarantined: bool,
}

/// Whether any record of the workflow (the row `workflows`) was quarantined.
const QUARANTINED: &str =
    "EXISTS (SELECT 1 FROM quarantined_records q WHERE q.workflow_id = workflows.id)";

impl ProjectionReader {
    /// The projected state of one workflow, whoever owns it.
    pub async fn get_workflow(&self, id: WorkflowId) -> Result<Option<WorkflowState>, StoreError> {
        Ok(self.get_projected(id).await?.map(|p| p.state))
    }

    /// The projected state of one workflow, whoever owns it, and whether
    /// some of its records were quarantined.
    pub async fn get_projected(&self, id: WorkflowId) -> Result<Option<Projected>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Flagged {
            #[sqlx(flatten)]
            row: WorkflowRow,
            quarantined: bool,
        }
        // One connection for both reads: half the pool traffic.
        let mut conn = self.pool().acquire().await.map_err(StoreError::classify)?;
        let row: Option<Flagged> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {WORKFLOW_COLUMNS}, {QUARANTINED} AS quarantined FROM workflows WHERE id = $1"
        )))
        .bind(id.as_uuid())
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::classify)?;
        let Some(Flagged { row, quarantined }) = row else {
            return Ok(None);
        };
        let (state, _) = states_of(&mut conn, vec![row])
            .await?
            .pop()
            .expect("one state per row");
        Ok(Some(Projected { state, quarantined }))
    }

    /// Newest first; at most `filter.limit` items after `filter.after`.
    pub async fn list_workflows(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<WorkflowSummary>, StoreError> {
        sqlx::query_as(
            "SELECT id, name, status, user_id, jsonb_array_length(tasks) AS task_count,
                    created_at, started_at, finished_at
             FROM workflows
             WHERE ($1::bigint IS NULL OR user_id = $1)
               AND ($2::text IS NULL OR status = $2)
               AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
               AND ($6::text IS NULL OR name ILIKE $6 ESCAPE '\\')
             ORDER BY created_at DESC, id DESC
             LIMIT $5",
        )
        .bind(filter.user.map(|u| u.0))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.after.map(|c| c.created_at))
        .bind(filter.after.map(|c| c.id))
        .bind(i64::from(filter.limit))
        .bind(filter.name.as_deref().map(like_pattern))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::classify)
    }

    /// The projected states of `ids` that exist (one read, one snapshot).
    pub async fn get_workflows(
        &self,
        ids: &[WorkflowId],
    ) -> Result<std::collections::HashMap<WorkflowId, WorkflowState>, StoreError> {
        let uuids: Vec<Uuid> = ids.iter().map(|i| i.as_uuid()).collect();
        let mut tx = self.pool().begin().await.map_err(StoreError::classify)?;
        let states = crate::rows::load_states(&mut tx, &uuids).await?;
        tx.commit().await.map_err(StoreError::classify)?;
        Ok(states
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }

    /// The workflow's owner, status and place in its chain, if projected:
    /// enough to start a pending workflow, or to tell whether a change of it
    /// took effect, without reading the whole state.
    pub async fn workflow_head(&self, id: WorkflowId) -> Result<Option<WorkflowHead>, StoreError> {
        let row: Option<(i64, String, i64, i32, Uuid, bool)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT user_id, status, seq, runs, last_event_id, {QUARANTINED}
                 FROM workflows WHERE id = $1"
            )))
            .bind(id.as_uuid())
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::classify)?;
        row.map(|(user_id, status, seq, runs, last_event_id, quarantined)| {
            Ok(WorkflowHead {
                user_id: UserId(user_id),
                status: WorkflowStatus::parse(&status)
                    .ok_or_else(|| StoreError::Corrupt(format!("workflow {id}: status")))?,
                seq: seq.max(0) as u64,
                runs: runs.max(0) as u32,
                last_event_id,
                quarantined,
            })
        })
        .transpose()
    }

    /// The log partition holding the workflow's records, if projected.
    pub async fn workflow_partition(&self, id: WorkflowId) -> Result<Option<i32>, StoreError> {
        let p: Option<Option<i32>> =
            sqlx::query_scalar("SELECT log_partition FROM workflows WHERE id = $1")
                .bind(id.as_uuid())
                .fetch_optional(self.pool())
                .await
                .map_err(StoreError::classify)?;
        Ok(p.flatten())
    }

    /// Every workflow id in the projection.
    pub async fn workflow_ids(&self) -> Result<Vec<WorkflowId>, StoreError> {
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM workflows")
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::classify)?;
        Ok(ids.into_iter().map(WorkflowId::from).collect())
    }

    /// The records of one workflow as the projector saw them, in log order,
    /// each with its offset and whether the fold applied it. (Quarantined
    /// records are not here: see [`ProjectionReader::quarantined_of`].)
    pub async fn workflow_events(
        &self,
        topic: &str,
        id: WorkflowId,
    ) -> Result<Vec<(i64, Record, bool)>, StoreError> {
        self.workflow_events_after(topic, id, -1, u32::MAX).await
    }

    /// The workflow's records after `after_offset` (its partition's offset;
    /// -1 for all), in log order, at most `limit`, with whether the fold
    /// applied each: a page of the audit trail, for a stream that follows it.
    pub async fn workflow_events_after(
        &self,
        topic: &str,
        id: WorkflowId,
        after_offset: i64,
        limit: u32,
    ) -> Result<Vec<(i64, Record, bool)>, StoreError> {
        // An output kept in `outputs` is put back in its record.
        let rows: Vec<(i64, String, bool, Option<String>)> = sqlx::query_as(
            "SELECT e.log_offset, e.record, e.applied, o.body
             FROM workflow_events e LEFT JOIN outputs o ON o.sha256 = e.output_sha256
             WHERE e.topic = $1 AND e.workflow_id = $2 AND e.log_offset > $3
             ORDER BY e.log_offset LIMIT $4",
        )
        .bind(topic)
        .bind(id.as_uuid())
        .bind(after_offset)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::classify)?;
        rows.into_iter()
            .map(|(offset, json, applied, body)| {
                let mut resolve = |_: &agentflow_core::OutputRef| match &body {
                    Some(b) => serde_json::from_str(b).map_err(|e| e.to_string()),
                    None => Err("the output is not in the outputs table".to_owned()),
                };
                Record::from_bytes_with(json.as_bytes(), &mut resolve)
                    .map(|r| (offset, r, applied))
                    .map_err(|e| StoreError::Corrupt(format!("workflow_events of {id}: {e}")))
            })
            .collect()
    }

    /// How many of a user's workflows (every user's: `None`) are in each
    /// status.
    pub async fn counts_by_status(
        &self,
        user: Option<UserId>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        sqlx::query_as(
            "SELECT status, count(*) FROM workflows
             WHERE ($1::bigint IS NULL OR user_id = $1) GROUP BY status",
        )
        .bind(user.map(|u| u.0))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::classify)
    }

    /// A user's workflows (every user's: `None`) whose row the projector
    /// wrote after `since`, oldest change first, at most `limit`: what a
    /// live list must redraw.
    pub async fn changed_since(
        &self,
        user: Option<UserId>,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ChangedSummary>, StoreError> {
        sqlx::query_as(
            "SELECT id, name, status, user_id, jsonb_array_length(tasks) AS task_count,
                    created_at, started_at, finished_at, seq, updated_at
             FROM workflows
             WHERE updated_at > $2 AND ($1::bigint IS NULL OR user_id = $1)
             ORDER BY updated_at, id
             LIMIT $3",
        )
        .bind(user.map(|u| u.0))
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::classify)
    }
}

impl Admin {
    /// Whether this database holds a projection of `topic` (a projector
    /// has stored offsets for it).
    pub async fn has_projection(&self, topic: &str) -> Result<bool, StoreError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM projector_offsets WHERE topic = $1)")
            .bind(topic)
            .fetch_one(self.pool())
            .await
            .map_err(StoreError::classify)
    }

    /// Empties every projection of `topic` (rows, audit trail, offsets), so
    /// that a replay from offset 0 rebuilds them. Never while a projector
    /// is running against this database.
    pub async fn reset_projections(&self, topic: &str) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(StoreError::classify)?;
        for q in [
            "TRUNCATE step_outputs, outputs, workflow_steps, workflows, users",
            "DELETE FROM workflow_events WHERE topic = $1",
            "DELETE FROM projector_offsets WHERE topic = $1",
            "DELETE FROM quarantined_records WHERE topic = $1",
        ] {
            let mut query = sqlx::query(q);
            if q.contains("$1") {
                query = query.bind(topic);
            }
            query
                .execute(&mut *tx)
                .await
                .map_err(StoreError::classify)?;
        }
        tx.commit().await.map_err(StoreError::classify)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in [
            "",
            "x",
            "1.",
            ".abc",
            "12.not-a-uuid",
            "99999999999999999999.00000000000000000000000000000000",
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}
