//! The projector's write: fold a batch of records into the rows, and move
//! the partition offsets, in one transaction. A record at an offset already
//! applied is skipped, so a restart or a duplicate delivery changes nothing.

use std::collections::{BTreeMap, HashMap};

use agentflow_core::{
    Record, StepError, StepState, StepStatus, WorkflowId, WorkflowState, WorkflowStatus, apply,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::rows::{load_states, step_status_str};
use crate::{Store, StoreError};

/// A record and where it is in the log.
#[derive(Debug, Clone)]
pub struct Positioned {
    pub partition: i32,
    pub offset: i64,
    pub record: Record,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchOutcome {
    pub applied: usize,
    /// Records the fold rejected (out of sequence, illegal): kept out of the
    /// projection exactly as the engine keeps them out of its state.
    pub rejected: usize,
    /// Records at offsets the projection already holds.
    pub duplicates: usize,
    /// The new next offset of each partition touched.
    pub next_offsets: Vec<(i32, i64)>,
    /// The new states of the workflows whose status changed (what
    /// `?wait=finished` waits for; a step's progress alone is not reported).
    pub status_changed: Vec<WorkflowState>,
    /// Records Postgres refused, kept aside (see [`Store::project`]).
    pub quarantined: Vec<crate::QuarantinedRecord>,
}

impl BatchOutcome {
    /// Adds the outcome of a later batch to this one.
    pub(crate) fn merge(&mut self, later: BatchOutcome) {
        self.applied += later.applied;
        self.rejected += later.rejected;
        self.duplicates += later.duplicates;
        for (p, o) in later.next_offsets {
            match self.next_offsets.iter_mut().find(|(q, _)| *q == p) {
                Some((_, n)) => *n = (*n).max(o),
                None => self.next_offsets.push((p, o)),
            }
        }
        self.next_offsets.sort_unstable();
        self.status_changed.extend(later.status_changed);
        self.quarantined.extend(later.quarantined);
    }
}

/// The states of live workflows as this projector last wrote them, so a
/// batch need not read them back from Postgres. A partition's entries are
/// trusted only while its offset row still shows the offset this projector
/// committed: anyone else writing that partition (another node after a
/// rebalance, a replay) moves it, and the entries are dropped and read again.
#[derive(Default)]
pub struct ProjectionCache {
    committed: HashMap<i32, i64>,
    states: HashMap<WorkflowId, (i32, WorkflowState)>,
}

/// Above this many live workflows the cache starts again from empty (it is
/// only a shortcut: what it misses is read from Postgres).
const CACHE_MAX: usize = 50_000;

impl ProjectionCache {
    fn forget_partition(&mut self, partition: i32) {
        if self.committed.remove(&partition).is_some() {
            self.states.retain(|_, (p, _)| *p != partition);
        }
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

impl Store {
    /// Makes sure each partition has an offset row (starting at 0), and
    /// returns the next offset to read for each, in the order given.
    pub async fn claim_partitions(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<i64>, StoreError> {
        sqlx::query(
            "INSERT INTO projector_offsets (topic, partition, next_offset)
             SELECT $1, p, 0 FROM UNNEST($2::int[]) AS p
             ON CONFLICT DO NOTHING",
        )
        .bind(topic)
        .bind(partitions)
        .execute(self.pool())
        .await
        .map_err(StoreError::classify)?;
        let rows: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT partition, next_offset FROM projector_offsets
             WHERE topic = $1 AND partition = ANY($2)",
        )
        .bind(topic)
        .bind(partitions)
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::classify)?;
        let by_partition: HashMap<i32, i64> = rows.into_iter().collect();
        Ok(partitions
            .iter()
            .map(|p| by_partition.get(p).copied().unwrap_or(0))
            .collect())
    }

    /// The projector's position in every partition it has seen.
    pub async fn projector_offsets(&self, topic: &str) -> Result<Vec<(i32, i64)>, StoreError> {
        sqlx::query_as("SELECT partition, next_offset FROM projector_offsets WHERE topic = $1")
            .bind(topic)
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::classify)
    }

    /// Folds `batch` (in log order) into the projection and advances the
    /// offsets, all in one transaction. States in `cache` are used instead
    /// of reading them, and the cache is updated once the write committed.
    pub async fn apply_batch(
        &self,
        topic: &str,
        batch: &[Positioned],
        cache: &mut ProjectionCache,
    ) -> Result<BatchOutcome, StoreError> {
        let mut out = BatchOutcome::default();
        if batch.is_empty() {
            return Ok(out);
        }
        let result = self.apply_batch_inner(topic, batch, cache, &mut out).await;
        if result.is_err() {
            // Whatever was taken out for this batch is gone; start afresh.
            *cache = ProjectionCache::default();
        }
        result.map(|()| out)
    }

    async fn apply_batch_inner(
        &self,
        topic: &str,
        batch: &[Positioned],
        cache: &mut ProjectionCache,
        out: &mut BatchOutcome,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(StoreError::classify)?;
        let partitions: Vec<i32> = {
            let mut p: Vec<i32> = batch.iter().map(|r| r.partition).collect();
            p.sort_unstable();
            p.dedup();
            p
        };
        // Lock the offset rows: concurrent projectors of one partition
        // serialise here, and the second sees the first's offsets.
        let locked: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT partition, next_offset FROM projector_offsets
             WHERE topic = $1 AND partition = ANY($2) ORDER BY partition FOR UPDATE",
        )
        .bind(topic)
        .bind(&partitions)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::classify)?;
        let mut next: BTreeMap<i32, i64> = locked.into_iter().collect();
        for p in &partitions {
            next.entry(*p).or_insert(0);
            if cache.committed.get(p) != next.get(p) {
                cache.forget_partition(*p);
            }
        }
        let fresh: Vec<&Positioned> = batch
            .iter()
            .filter(|r| r.offset >= next[&r.partition])
            .collect();
        out.duplicates = batch.len() - fresh.len();
        if fresh.is_empty() {
            tx.rollback().await.map_err(StoreError::classify)?;
            return Ok(());
        }

        let ids: Vec<Uuid> = {
            let mut ids: Vec<Uuid> = fresh
                .iter()
                .map(|r| r.record.workflow_id.as_uuid())
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let mut states: HashMap<WorkflowId, Option<WorkflowState>> = HashMap::new();
        let mut to_read = Vec::new();
        for id in ids {
            match cache.states.remove(&WorkflowId::from(id)) {
                Some((_, st)) => {
                    states.insert(st.workflow_id, Some(st));
                }
                None => to_read.push(id),
            }
        }
        if !to_read.is_empty() {
            states.extend(load_states(&mut tx, &to_read).await?);
        }
        // What identifies a change: seq, or a command that flags the state.
        let version = |s: &WorkflowState| (s.seq, s.cancel_requested, s.commands.len());
        let before: HashMap<WorkflowId, Before> = states
            .iter()
            .filter_map(|(k, v)| {
                v.as_ref().map(|s| {
                    let before = Before {
                        version: version(s),
                        status: s.status,
                        steps: s.steps.iter().map(StepRow::of).collect(),
                    };
                    (*k, before)
                })
            })
            .collect();
        let mut partition_of: HashMap<WorkflowId, i32> = HashMap::new();
        let mut trail = EventRows::default();
        for r in &fresh {
            partition_of.insert(r.record.workflow_id, r.partition);
            let slot = states.entry(r.record.workflow_id).or_insert(None);
            let applied = apply(slot, &r.record);
            trail.push(r, applied.is_ok());
            match applied {
                Ok(()) => out.applied += 1,
                Err(why) => {
                    out.rejected += 1;
                    tracing::debug!(workflow_id = %r.record.workflow_id, seq = r.record.seq,
                        event_type = r.record.event_type(), %why, "record rejected by the fold");
                }
            }
            let n = next.get_mut(&r.partition).expect("partition present");
            *n = (*n).max(r.offset + 1);
        }
        let mut changed = Vec::new();
        let mut new_users = Vec::new();
        for (id, st) in &states {
            let Some(st) = st else { continue };
            let was = before.get(id);
            match was {
                Some(b) if b.version == version(st) => continue,
                Some(b) if b.status == st.status => {}
                Some(_) => out.status_changed.push(st.clone()),
                None => {
                    new_users.push(st.user_id.0);
                    out.status_changed.push(st.clone());
                }
            }
            changed.push(Changed {
                state: st,
                partition: partition_of[id],
                before: was,
            });
        }
        write_batch(
            &mut tx,
            topic,
            &mut changed,
            &mut new_users,
            trail,
            &next,
            Utc::now(),
        )
        .await?;
        tx.commit().await.map_err(StoreError::classify)?;
        // Committed: this is now what Postgres holds.
        for (p, o) in &next {
            cache.committed.insert(*p, *o);
        }
        if cache.states.len() + states.len() > CACHE_MAX {
            cache.states.clear();
        }
        for (id, st) in states {
            if let Some(st) =
                st.filter(|s| s.status == WorkflowStatus::Pending || s.status.is_active())
            {
                cache.states.insert(id, (partition_of[&id], st));
            }
        }
        out.next_offsets = next.into_iter().collect();
        Ok(())
    }
}

/// What a workflow's row and step rows held before the batch.
struct Before {
    version: (u64, bool, usize),
    status: WorkflowStatus,
    steps: Vec<StepRow>,
}

/// A workflow the batch changed.
struct Changed<'a> {
    state: &'a WorkflowState,
    partition: i32,
    /// None: new to the projection.
    before: Option<&'a Before>,
}

/// A step's columns in `workflow_steps` (its output lives in the workflow's
/// `results`): a step row is written only when these change.
#[derive(PartialEq)]
struct StepRow {
    status: StepStatus,
    iteration: u32,
    attempts: u32,
    duration_ms: u64,
    error: Option<StepError>,
    finished_at: Option<DateTime<Utc>>,
}

impl StepRow {
    fn of(s: &StepState) -> Self {
        Self {
            status: s.status,
            iteration: s.iteration,
            attempts: s.attempts,
            duration_ms: s.duration_ms,
            error: s.error.clone(),
            finished_at: s.finished_at,
        }
    }
}

/// The batch's records for `workflow_events`, column by column.
#[derive(Default)]
struct EventRows {
    partition: Vec<i32>,
    offset: Vec<i64>,
    workflow_id: Vec<Uuid>,
    applied: Vec<bool>,
    /// The record's JSON text (kept as text: U+0000 stays `\u0000`).
    record: Vec<String>,
}

impl EventRows {
    fn push(&mut self, r: &Positioned, applied: bool) {
        self.partition.push(r.partition);
        self.offset.push(r.offset);
        self.workflow_id.push(r.record.workflow_id.as_uuid());
        self.applied.push(applied);
        self.record.push(r.record.to_json_string());
    }
}

/// Writes everything a batch changed in one statement (one round trip):
/// the users of new workflows, the changed workflows and their changed steps
/// (rows in id order, so concurrent writers lock them in one order), the
/// audit trail and the partitions' next offsets.
async fn write_batch(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    changed: &mut [Changed<'_>],
    new_users: &mut Vec<i64>,
    trail: EventRows,
    next: &BTreeMap<i32, i64>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    changed.sort_unstable_by_key(|c| c.state.workflow_id.as_uuid());
    new_users.sort_unstable();
    new_users.dedup();
    let mut w = WorkflowRows::default();
    let mut s = StepRows::default();
    for c in changed.iter() {
        w.push(c.state, c.partition, c.before.is_none());
        s.push(c.state, c.before.map(|b| b.steps.as_slice()));
    }
    let (partitions, offsets): (Vec<i32>, Vec<i64>) = next.iter().map(|(p, o)| (*p, *o)).unzip();
    // Data-modifying CTEs run in one statement; the foreign keys (steps →
    // workflows → users) are checked at its end, when all rows are in.
    sqlx::query(
        "WITH users_in AS (
             INSERT INTO users (id) SELECT * FROM UNNEST($2::bigint[]) ON CONFLICT DO NOTHING
         ), workflows_in AS (
             INSERT INTO workflows
                (id, name, tasks, status, results, user_id, created_at, started_at, finished_at,
                 seq, runs, error, last_event_id, timeout_ms, cancel_requested, log_partition,
                 state, updated_at)
             SELECT *, $19 FROM UNNEST($3::uuid[], $4::text[], $5::jsonb[], $6::text[],
                 $7::text[], $8::bigint[], $9::timestamptz[], $10::timestamptz[],
                 $11::timestamptz[], $12::bigint[], $13::int[], $14::text[], $15::uuid[],
                 $16::bigint[], $17::bool[], $18::int[], $35::text[])
             ON CONFLICT (id) DO UPDATE SET
                state = EXCLUDED.state,
                status = EXCLUDED.status, results = EXCLUDED.results,
                started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
                updated_at = EXCLUDED.updated_at, seq = EXCLUDED.seq, runs = EXCLUDED.runs,
                error = EXCLUDED.error, last_event_id = EXCLUDED.last_event_id,
                cancel_requested = EXCLUDED.cancel_requested,
                log_partition = EXCLUDED.log_partition
         ), steps_in AS (
             INSERT INTO workflow_steps
                (workflow_id, step, agent, status, attempts, duration_ms, error, finished_at,
                 step_id, iteration)
             SELECT * FROM UNNEST($20::uuid[], $21::int[], $22::text[], $23::text[], $24::int[],
                                  $25::bigint[], $26::text[], $27::timestamptz[], $36::text[],
                                  $37::int[])
             ON CONFLICT (workflow_id, step) DO UPDATE SET
                status = EXCLUDED.status, attempts = EXCLUDED.attempts,
                iteration = EXCLUDED.iteration,
                duration_ms = EXCLUDED.duration_ms, error = EXCLUDED.error,
                finished_at = EXCLUDED.finished_at
         ), events_in AS (
             INSERT INTO workflow_events
                (topic, log_partition, log_offset, workflow_id, applied, record)
             SELECT $1, p, o, w, a, r
             FROM UNNEST($28::int[], $29::bigint[], $30::uuid[], $31::bool[], $32::text[])
                 AS e(p, o, w, a, r)
             ON CONFLICT DO NOTHING
         )
         INSERT INTO projector_offsets (topic, partition, next_offset, updated_at)
         SELECT $1, *, now() FROM UNNEST($33::int[], $34::bigint[])
         ON CONFLICT (topic, partition) DO UPDATE
         SET next_offset = EXCLUDED.next_offset, updated_at = now()",
    )
    .bind(topic)
    .bind(&*new_users)
    .bind(w.id)
    .bind(w.name)
    .bind(w.tasks)
    .bind(w.status)
    .bind(w.results)
    .bind(w.user_id)
    .bind(w.created_at)
    .bind(w.started_at)
    .bind(w.finished_at)
    .bind(w.seq)
    .bind(w.runs)
    .bind(w.error)
    .bind(w.last_event_id)
    .bind(w.timeout_ms)
    .bind(w.cancel_requested)
    .bind(w.log_partition)
    .bind(now)
    .bind(s.workflow_id)
    .bind(s.step)
    .bind(s.agent)
    .bind(s.status)
    .bind(s.attempts)
    .bind(s.duration_ms)
    .bind(s.error)
    .bind(s.finished_at)
    .bind(trail.partition)
    .bind(trail.offset)
    .bind(trail.workflow_id)
    .bind(trail.applied)
    .bind(trail.record)
    .bind(partitions)
    .bind(offsets)
    .bind(w.state)
    .bind(s.step_id)
    .bind(s.iteration)
    .execute(&mut **tx)
    .await
    .map_err(StoreError::classify)?;
    Ok(())
}

/// Changed workflows' rows, column by column.
#[derive(Default)]
struct WorkflowRows {
    id: Vec<Uuid>,
    name: Vec<String>,
    tasks: Vec<Value>,
    status: Vec<&'static str>,
    /// JSON text, as every column that may hold what an agent said.
    results: Vec<String>,
    user_id: Vec<i64>,
    created_at: Vec<DateTime<Utc>>,
    started_at: Vec<Option<DateTime<Utc>>>,
    finished_at: Vec<Option<DateTime<Utc>>>,
    seq: Vec<i64>,
    runs: Vec<i32>,
    error: Vec<Option<String>>,
    last_event_id: Vec<Uuid>,
    timeout_ms: Vec<Option<i64>>,
    cancel_requested: Vec<bool>,
    log_partition: Vec<i32>,
    /// The fold's whole state, JSON text.
    state: Vec<String>,
}

impl WorkflowRows {
    /// `new`: not in the projection yet. Name and tasks never change, so
    /// they are sent only then (the upsert does not update them).
    fn push(&mut self, st: &WorkflowState, partition: i32, new: bool) {
        self.id.push(st.workflow_id.as_uuid());
        self.name
            .push(if new { st.name.clone() } else { String::new() });
        self.tasks.push(if new {
            serde_json::to_value(&st.definition).expect("serialisable")
        } else {
            Value::Array(Vec::new())
        });
        self.status.push(st.status.as_str());
        self.results.push(st.results().to_string());
        self.user_id.push(st.user_id.0);
        self.created_at.push(st.created_at);
        self.started_at.push(st.started_at);
        self.finished_at.push(st.finished_at);
        self.seq.push(st.seq as i64);
        self.runs.push(st.runs as i32);
        self.error.push(
            st.failed_step()
                .and_then(|i| st.steps[i].error.as_ref())
                .map(|e| serde_json::to_string(e).expect("serialisable")),
        );
        self.last_event_id.push(st.last_event_id);
        self.timeout_ms.push(st.timeout_ms.map(|ms| ms as i64));
        self.cancel_requested.push(st.cancel_requested);
        self.log_partition.push(partition);
        self.state
            .push(serde_json::to_string(st).expect("serialisable"));
    }
}

/// The changed workflows' step rows, column by column.
#[derive(Default)]
struct StepRows {
    workflow_id: Vec<Uuid>,
    step: Vec<i32>,
    step_id: Vec<String>,
    iteration: Vec<i32>,
    agent: Vec<Option<String>>,
    status: Vec<&'static str>,
    attempts: Vec<i32>,
    duration_ms: Vec<i64>,
    error: Vec<Option<String>>,
    finished_at: Vec<Option<DateTime<Utc>>>,
}

impl StepRows {
    /// The steps whose row differs from `before` (all of them when new).
    fn push(&mut self, st: &WorkflowState, before: Option<&[StepRow]>) {
        for (i, s) in st.steps.iter().enumerate() {
            if before.and_then(|b| b.get(i)) == Some(&StepRow::of(s)) {
                continue;
            }
            self.workflow_id.push(st.workflow_id.as_uuid());
            self.step.push(i as i32 + 1);
            self.step_id.push(s.id.to_string());
            self.iteration.push(s.iteration as i32);
            self.agent
                .push(s.agent.as_ref().map(|a| a.as_str().to_owned()));
            self.status.push(step_status_str(s.status));
            self.attempts.push(s.attempts as i32);
            self.duration_ms.push(s.duration_ms as i64);
            self.error.push(
                s.error
                    .as_ref()
                    .map(|e| serde_json::to_string(e).expect("serialisable")),
            );
            self.finished_at.push(s.finished_at);
        }
    }
}
