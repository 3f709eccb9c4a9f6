//! The read API's queries.

use agentflow_core::{UserId, WorkflowId, WorkflowState, WorkflowStatus};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::rows::{StepRow, WORKFLOW_COLUMNS, WorkflowRow, state_from_rows};
use crate::{Store, StoreError};

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
    pub limit: u32,
    pub after: Option<Cursor>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkflowSummary {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    pub user_id: i64,
    pub task_count: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl WorkflowSummary {
    pub fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

impl Store {
    /// The projected state of one workflow, whoever owns it.
    pub async fn get_workflow(&self, id: WorkflowId) -> Result<Option<WorkflowState>, StoreError> {
        let row: Option<WorkflowRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = $1"
        )))
        .bind(id.as_uuid())
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::classify)?;
        let Some(row) = row else { return Ok(None) };
        let steps: Vec<StepRow> = sqlx::query_as(
            "SELECT workflow_id, step, agent, status, attempts, duration_ms, error, finished_at
             FROM workflow_steps WHERE workflow_id = $1 ORDER BY step",
        )
        .bind(id.as_uuid())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::classify)?;
        state_from_rows(row, steps).map(Some)
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
             ORDER BY created_at DESC, id DESC
             LIMIT $5",
        )
        .bind(filter.user.map(|u| u.0))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.after.map(|c| c.created_at))
        .bind(filter.after.map(|c| c.id))
        .bind(i64::from(filter.limit))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::classify)
    }

    /// How many workflows are in each status (for the active-count gauge).
    pub async fn count_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        sqlx::query_as("SELECT status, count(*) FROM workflows GROUP BY status")
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::classify)
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
