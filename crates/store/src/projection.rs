//! The projector's write: fold a batch of records into the rows, and move
//! the partition offsets, in one transaction. A record at an offset already
//! applied is skipped, so a restart or a duplicate delivery changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use agentflow_core::{
    Event, Inbox, Record, SkipReason, StepError, StepState, StepStatus, WorkflowId, WorkflowState,
    WorkflowStatus, apply,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::rows::load_states_in_rows;
use crate::{ProjectionReader, ProjectionWriter, StoreError};

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
    /// Records Postgres refused, kept aside (see [`ProjectionWriter::project`]).
    pub quarantined: Vec<crate::QuarantinedRecord>,
    /// Writes Postgres refused (each try) before the batch was written or
    /// its records quarantined; Postgres being away is not counted.
    pub write_failures: u32,
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
        self.write_failures += later.write_failures;
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

impl ProjectionWriter {
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

    /// Folds `batch` (in log order) into the projection and advances the
    /// offsets, all in one transaction, tried once: any error fails the
    /// whole batch. States in `cache` are used instead of reading them, and
    /// the cache is updated once the write committed. The projector calls
    /// [`ProjectionWriter::project`], which builds on this.
    pub async fn project_once(
        &self,
        topic: &str,
        batch: &[Positioned],
        cache: &mut ProjectionCache,
    ) -> Result<BatchOutcome, StoreError> {
        let mut out = BatchOutcome::default();
        if batch.is_empty() {
            return Ok(out);
        }
        let result = self.project_in_tx(topic, batch, cache, &mut out).await;
        if result.is_err() {
            // Whatever was taken out for this batch is gone; start afresh.
            *cache = ProjectionCache::default();
        }
        result.map(|()| out)
    }

    async fn project_in_tx(
        &self,
        topic: &str,
        batch: &[Positioned],
        cache: &mut ProjectionCache,
        out: &mut BatchOutcome,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(StoreError::classify)?;
        let mut next = lock_offsets(&mut tx, topic, batch, cache).await?;
        let fresh: Vec<&Positioned> = batch
            .iter()
            .filter(|r| r.offset >= next[&r.partition])
            .collect();
        out.duplicates = batch.len() - fresh.len();
        if fresh.is_empty() {
            tx.rollback().await.map_err(StoreError::classify)?;
            return Ok(());
        }
        let (mut states, legacy) = states_before(&mut tx, &fresh, cache).await?;
        let before = rows_before(&states, &legacy);
        let folded = fold(&fresh, &mut states, &mut next, out);
        let (mut changed, mut new_users) = changes(&states, &before, &folded.partition_of, out);
        write_batch(
            &mut tx,
            topic,
            &mut changed,
            &mut new_users,
            folded.trail,
            folded.large,
            &next,
            Utc::now(),
        )
        .await?;
        tx.commit().await.map_err(StoreError::classify)?;
        cache.committed_batch(&next, states, &folded.partition_of);
        out.next_offsets = next.into_iter().collect();
        Ok(())
    }
}

/// Locks the offset rows of the batch's partitions (concurrent projectors
/// of one partition serialise here, and the second sees the first's
/// offsets) and returns each partition's next offset; drops the cached
/// states of partitions someone else wrote since.
async fn lock_offsets(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    batch: &[Positioned],
    cache: &mut ProjectionCache,
) -> Result<BTreeMap<i32, i64>, StoreError> {
    let mut partitions: Vec<i32> = batch.iter().map(|r| r.partition).collect();
    partitions.sort_unstable();
    partitions.dedup();
    let locked: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM projector_offsets
         WHERE topic = $1 AND partition = ANY($2) ORDER BY partition FOR UPDATE",
    )
    .bind(topic)
    .bind(&partitions)
    .fetch_all(&mut **tx)
    .await
    .map_err(StoreError::classify)?;
    let mut next: BTreeMap<i32, i64> = locked.into_iter().collect();
    for p in &partitions {
        next.entry(*p).or_insert(0);
        if cache.committed.get(p) != next.get(p) {
            cache.forget_partition(*p);
        }
    }
    Ok(next)
}

/// The states of the workflows the records belong to, from the cache or
/// else from their rows (`None`: new), and which of them were read from
/// rows written before the state was kept in rows (written whole at their
/// next change).
async fn states_before(
    tx: &mut Transaction<'_, Postgres>,
    fresh: &[&Positioned],
    cache: &mut ProjectionCache,
) -> Result<(States, HashSet<WorkflowId>), StoreError> {
    let mut ids: Vec<Uuid> = fresh
        .iter()
        .map(|r| r.record.workflow_id.as_uuid())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut states = States::new();
    let mut legacy = HashSet::new();
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
        for (st, in_rows) in load_states_in_rows(tx, &to_read).await? {
            if !in_rows {
                legacy.insert(st.workflow_id);
            }
            states.insert(st.workflow_id, Some(st));
        }
    }
    Ok((states, legacy))
}

/// A workflow's state as the batch folds it (`None`: not created yet).
type States = HashMap<WorkflowId, Option<WorkflowState>>;

/// What identifies a change: seq, or a command that flags the state.
fn version(s: &WorkflowState) -> (u64, bool, usize) {
    (s.seq, s.cancel_requested, s.commands.len())
}

/// What the rows of the workflows that exist held before the batch.
fn rows_before(states: &States, legacy: &HashSet<WorkflowId>) -> HashMap<WorkflowId, Before> {
    states
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref().map(|s| {
                let before = Before {
                    version: version(s),
                    status: s.status,
                    in_rows: !legacy.contains(k),
                    steps: s.steps.iter().map(StepRow::of).collect(),
                    outputs: s.steps.iter().map(OutputsSeen::of).collect(),
                };
                (*k, before)
            })
        })
        .collect()
}

/// What folding a batch produced besides the states.
struct Folded {
    partition_of: HashMap<WorkflowId, i32>,
    trail: EventRows,
    large: LargeOutputs,
}

/// Folds the records into `states` in log order, counting what applied
/// and what the fold rejected, and moves each partition's next offset.
fn fold(
    fresh: &[&Positioned],
    states: &mut States,
    next: &mut BTreeMap<i32, i64>,
    out: &mut BatchOutcome,
) -> Folded {
    let mut partition_of = HashMap::new();
    let mut trail = EventRows::default();
    let mut large = LargeOutputs::default();
    for r in fresh {
        partition_of.insert(r.record.workflow_id, r.partition);
        let slot = states.entry(r.record.workflow_id).or_insert(None);
        let applied = apply(slot, &r.record);
        trail.push(r, applied.is_ok(), &mut large);
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
    Folded {
        partition_of,
        trail,
        large,
    }
}

/// The workflows the batch changed, and the users of new ones; those whose
/// status changed (or that are new) go to `out.status_changed`.
fn changes<'a>(
    states: &'a States,
    before: &'a HashMap<WorkflowId, Before>,
    partition_of: &HashMap<WorkflowId, i32>,
    out: &mut BatchOutcome,
) -> (Vec<ChangedWorkflow<'a>>, Vec<i64>) {
    let mut changed = Vec::new();
    let mut new_users = Vec::new();
    for (id, st) in states {
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
        changed.push(ChangedWorkflow {
            state: st,
            partition: partition_of[id],
            before: was,
        });
    }
    (changed, new_users)
}

impl ProjectionCache {
    /// The batch committed: this is now what Postgres holds. Keeps the
    /// states that can still change.
    fn committed_batch(
        &mut self,
        next: &BTreeMap<i32, i64>,
        states: States,
        partition_of: &HashMap<WorkflowId, i32>,
    ) {
        for (p, o) in next {
            self.committed.insert(*p, *o);
        }
        if self.states.len() + states.len() > CACHE_MAX {
            self.states.clear();
        }
        for (id, st) in states {
            if let Some(st) =
                st.filter(|s| s.status == WorkflowStatus::Pending || s.status.is_active())
            {
                self.states.insert(id, (partition_of[&id], st));
            }
        }
    }
}

impl ProjectionReader {
    /// The projector's position in every partition it has seen.
    pub async fn projector_offsets(&self, topic: &str) -> Result<Vec<(i32, i64)>, StoreError> {
        sqlx::query_as("SELECT partition, next_offset FROM projector_offsets WHERE topic = $1")
            .bind(topic)
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::classify)
    }
}

/// What a workflow's row and step rows held before the batch.
struct Before {
    version: (u64, bool, usize),
    status: WorkflowStatus,
    /// Kept in rows (else in a row of an earlier layout: written whole).
    in_rows: bool,
    steps: Vec<StepRow>,
    outputs: Vec<OutputsSeen>,
}

/// A workflow the batch changed.
struct ChangedWorkflow<'a> {
    state: &'a WorkflowState,
    partition: i32,
    /// None: new to the projection (or in a row of an earlier layout):
    /// written whole.
    before: Option<&'a Before>,
}

/// A step's columns in `workflow_steps` (its outputs are in
/// `step_outputs`): a step row is written only when these change.
#[derive(PartialEq)]
struct StepRow {
    status: StepStatus,
    iteration: u32,
    attempts: u32,
    duration_ms: u64,
    error: Option<StepError>,
    finished_at: Option<DateTime<Utc>>,
    loop_base: u32,
    until_pending: bool,
    condition: Option<bool>,
    skip_reason: Option<SkipReason>,
    wait_until: Option<DateTime<Utc>>,
    inbox: Option<Inbox>,
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
            loop_base: s.loop_base,
            until_pending: s.until_pending,
            condition: s.condition,
            skip_reason: s.skip_reason,
            wait_until: s.wait_until,
            inbox: s.inbox.clone(),
        }
    }
}

/// Which of a step's outputs are in `step_outputs` already: a loop's first
/// `iterations`, another step's output of iteration `output_at`.
struct OutputsSeen {
    iterations: usize,
    output_at: Option<u32>,
}

impl OutputsSeen {
    fn of(s: &StepState) -> Self {
        Self {
            iterations: s.iterations.len(),
            output_at: s.output.as_ref().map(|_| s.iteration),
        }
    }
}

/// An output whose JSON text is longer than this is kept once in `outputs`,
/// by its hash, and referenced from `step_outputs` and the audit trail.
pub const INLINE_OUTPUT_BYTES: usize = 8 * 1024;

/// Where an output goes.
enum Stored {
    /// Its JSON text, in the referencing row.
    Inline(String),
    /// The SHA-256 of its JSON text (in `outputs`), and its length.
    Large(String, u64),
}

/// The batch's large outputs, by hash, each once (`outputs`).
#[derive(Default)]
struct LargeOutputs {
    sha256: Vec<String>,
    body: Vec<String>,
    seen: HashSet<String>,
}

impl LargeOutputs {
    fn store(&mut self, output: &Value) -> Stored {
        // JSON text escapes U+0000: always storable.
        let text = serde_json::to_string(output).expect("JSON values serialise");
        if text.len() <= INLINE_OUTPUT_BYTES {
            return Stored::Inline(text);
        }
        let sha = crate::sha256_hex(text.as_bytes());
        let bytes = text.len() as u64;
        if self.seen.insert(sha.clone()) {
            self.sha256.push(sha.clone());
            self.body.push(text);
        }
        Stored::Large(sha, bytes)
    }
}

/// The batch's records for `workflow_events`, column by column.
#[derive(Default)]
struct EventRows {
    partition: Vec<i32>,
    offset: Vec<i64>,
    workflow_id: Vec<Uuid>,
    applied: Vec<bool>,
    /// The record's JSON text (kept as text: U+0000 stays `\u0000`); a
    /// large output as a reference to `outputs` (see [`ProjectionReader::workflow_events`]).
    record: Vec<String>,
    output_sha256: Vec<Option<String>>,
}

impl EventRows {
    fn push(&mut self, r: &Positioned, applied: bool, large: &mut LargeOutputs) {
        self.partition.push(r.partition);
        self.offset.push(r.offset);
        self.workflow_id.push(r.record.workflow_id.as_uuid());
        self.applied.push(applied);
        let stored = match &r.record.event {
            Event::AgentExecuted { output, .. } => Some(large.store(output)),
            _ => None,
        };
        match stored {
            Some(Stored::Large(sha, bytes)) => {
                let text = r.record.to_bytes_with_ref(&crate::in_outputs(&sha, bytes));
                self.record
                    .push(String::from_utf8(text).expect("JSON is UTF-8"));
                self.output_sha256.push(Some(sha));
            }
            _ => {
                self.record.push(r.record.to_json_string());
                self.output_sha256.push(None);
            }
        }
    }
}

/// The steps' new outputs for `step_outputs`, column by column.
#[derive(Default)]
struct OutputRows {
    workflow_id: Vec<Uuid>,
    step: Vec<i32>,
    iteration: Vec<i32>,
    output: Vec<Option<String>>,
    output_sha256: Vec<Option<String>>,
}

impl OutputRows {
    /// The outputs of `st` not in `before` (all of them when `None`).
    fn push(
        &mut self,
        st: &WorkflowState,
        before: Option<&[OutputsSeen]>,
        large: &mut LargeOutputs,
    ) {
        for (i, s) in st.steps.iter().enumerate() {
            let seen = before.and_then(|b| b.get(i));
            if st.definition[i].repeat.is_some() {
                let from = seen.map_or(0, |b| b.iterations);
                for (k, o) in s.iterations.iter().enumerate().skip(from) {
                    self.push_one(st, i, k as u32 + 1, o, large);
                }
            } else if let Some(o) = &s.output
                && seen.and_then(|b| b.output_at) != Some(s.iteration)
            {
                self.push_one(st, i, s.iteration, o, large);
            }
        }
    }

    fn push_one(
        &mut self,
        st: &WorkflowState,
        i: usize,
        iteration: u32,
        output: &Value,
        large: &mut LargeOutputs,
    ) {
        self.workflow_id.push(st.workflow_id.as_uuid());
        self.step.push(i as i32 + 1);
        self.iteration.push(iteration as i32);
        match large.store(output) {
            Stored::Inline(text) => {
                self.output.push(Some(text));
                self.output_sha256.push(None);
            }
            Stored::Large(sha, _) => {
                self.output.push(None);
                self.output_sha256.push(Some(sha));
            }
        }
    }
}

/// Writes everything a batch changed in one statement (one round trip):
/// the users of new workflows, the changed workflows and their changed steps
/// (rows in id order, so concurrent writers lock them in one order), the
/// steps' new outputs, the audit trail and the partitions' next offsets.
#[allow(clippy::too_many_arguments)]
async fn write_batch(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    changed: &mut [ChangedWorkflow<'_>],
    new_users: &mut Vec<i64>,
    trail: EventRows,
    mut large: LargeOutputs,
    next: &BTreeMap<i32, i64>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    changed.sort_unstable_by_key(|c| c.state.workflow_id.as_uuid());
    new_users.sort_unstable();
    new_users.dedup();
    let mut w = WorkflowRows::default();
    let mut s = StepRows::default();
    let mut o = OutputRows::default();
    for c in changed.iter() {
        let before = c.before.filter(|b| b.in_rows);
        w.push(c.state, c.partition, before.is_none());
        s.push(c.state, before.map(|b| b.steps.as_slice()));
        o.push(c.state, before.map(|b| b.outputs.as_slice()), &mut large);
    }
    let (partitions, offsets): (Vec<i32>, Vec<i64>) = next.iter().map(|(p, o)| (*p, *o)).unzip();
    let query = sqlx::query(WRITE_BATCH).bind(topic).bind(&*new_users);
    let query = w.bind(query).bind(now);
    let query = s.bind(query);
    let query = trail.bind(query);
    let query = query.bind(large.sha256).bind(large.body);
    o.bind(query)
        .bind(partitions)
        .bind(offsets)
        .execute(&mut **tx)
        .await
        .map_err(StoreError::classify)?;
    Ok(())
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// [`write_batch`]'s statement. Data-modifying CTEs run in one statement;
/// the foreign keys (steps → workflows → users, outputs) are checked at its
/// end, when all rows are in. Columns that never change are set only in a
/// row new to this layout (`in_rows`); large values that did not change are
/// not sent. Its parameters, in order: the topic, the new users,
/// [`WorkflowRows::bind`] and the time of the write, [`StepRows::bind`],
/// [`EventRows::bind`], the large outputs, [`OutputRows::bind`], the
/// partitions and their next offsets.
const WRITE_BATCH: &str = "WITH users_in AS (
         INSERT INTO users (id) SELECT * FROM UNNEST($2::bigint[]) ON CONFLICT DO NOTHING
     ), workflows_in AS (
         INSERT INTO workflows
            (id, name, tasks, status, user_id, created_at, started_at, finished_at,
             seq, runs, error, last_event_id, timeout_ms, cancel_requested, log_partition,
             definition, input, max_concurrency, paused, commands, signal_keys,
             updated_at, in_rows, results)
         SELECT *, $24, true, '[]' FROM UNNEST($3::uuid[], $4::text[], $5::jsonb[],
             $6::text[], $7::bigint[], $8::timestamptz[], $9::timestamptz[],
             $10::timestamptz[], $11::bigint[], $12::int[], $13::text[], $14::uuid[],
             $15::bigint[], $16::bool[], $17::int[], $18::text[], $19::text[], $20::int[],
             $21::bool[], $22::text[], $23::text[])
         ON CONFLICT (id) DO UPDATE SET
            status = EXCLUDED.status,
            started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
            updated_at = EXCLUDED.updated_at, seq = EXCLUDED.seq, runs = EXCLUDED.runs,
            error = EXCLUDED.error, last_event_id = EXCLUDED.last_event_id,
            cancel_requested = EXCLUDED.cancel_requested,
            log_partition = EXCLUDED.log_partition, paused = EXCLUDED.paused,
            commands = EXCLUDED.commands, signal_keys = EXCLUDED.signal_keys,
            tasks = CASE WHEN workflows.in_rows THEN workflows.tasks ELSE EXCLUDED.tasks END,
            definition = CASE WHEN workflows.in_rows THEN workflows.definition
                              ELSE EXCLUDED.definition END,
            input = CASE WHEN workflows.in_rows THEN workflows.input ELSE EXCLUDED.input END,
            max_concurrency = CASE WHEN workflows.in_rows THEN workflows.max_concurrency
                                   ELSE EXCLUDED.max_concurrency END,
            timeout_ms = CASE WHEN workflows.in_rows THEN workflows.timeout_ms
                              ELSE EXCLUDED.timeout_ms END,
            in_rows = true, state = NULL, results = '[]'
     ), steps_in AS (
         INSERT INTO workflow_steps
            (workflow_id, step, agent, status, attempts, duration_ms, error, finished_at,
             step_id, iteration, loop_base, until_pending, condition, skip_reason,
             wait_until, inbox)
         SELECT * FROM UNNEST($25::uuid[], $26::int[], $27::text[], $28::text[], $29::int[],
                              $30::bigint[], $31::text[], $32::timestamptz[], $33::text[],
                              $34::int[], $35::int[], $36::bool[], $37::bool[], $38::text[],
                              $39::timestamptz[], $40::text[])
         ON CONFLICT (workflow_id, step) DO UPDATE SET
            status = EXCLUDED.status, attempts = EXCLUDED.attempts,
            iteration = EXCLUDED.iteration,
            duration_ms = EXCLUDED.duration_ms, error = EXCLUDED.error,
            finished_at = EXCLUDED.finished_at, loop_base = EXCLUDED.loop_base,
            until_pending = EXCLUDED.until_pending, condition = EXCLUDED.condition,
            skip_reason = EXCLUDED.skip_reason, wait_until = EXCLUDED.wait_until,
            inbox = EXCLUDED.inbox
     ), events_in AS (
         INSERT INTO workflow_events
            (topic, log_partition, log_offset, workflow_id, applied, record, output_sha256)
         SELECT $1, p, o, w, a, r, h
         FROM UNNEST($41::int[], $42::bigint[], $43::uuid[], $44::bool[], $45::text[],
                     $46::text[])
             AS e(p, o, w, a, r, h)
         ON CONFLICT DO NOTHING
     ), outputs_in AS (
         INSERT INTO outputs (sha256, body)
         SELECT * FROM UNNEST($47::text[], $48::text[])
         ON CONFLICT DO NOTHING
     ), step_outputs_in AS (
         INSERT INTO step_outputs (workflow_id, step, iteration, output, output_sha256)
         SELECT * FROM UNNEST($49::uuid[], $50::int[], $51::int[], $52::text[], $53::text[])
         ON CONFLICT DO NOTHING
     )
     INSERT INTO projector_offsets (topic, partition, next_offset, updated_at)
     SELECT $1, *, now() FROM UNNEST($54::int[], $55::bigint[])
     ON CONFLICT (topic, partition) DO UPDATE
     SET next_offset = EXCLUDED.next_offset, updated_at = now()";

/// Changed workflows' rows, column by column.
#[derive(Default)]
struct WorkflowRows {
    id: Vec<Uuid>,
    name: Vec<String>,
    tasks: Vec<Value>,
    status: Vec<&'static str>,
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
    /// JSON text of what never changes (sent only when written whole).
    definition: Vec<Option<String>>,
    input: Vec<Option<String>>,
    max_concurrency: Vec<Option<i32>>,
    paused: Vec<bool>,
    /// JSON text.
    commands: Vec<String>,
    signal_keys: Vec<String>,
}

impl WorkflowRows {
    /// `whole`: new to the projection, or in a row of an earlier layout.
    /// Name, definition and input never change, so they are sent only then
    /// (the upsert keeps those of a row in rows).
    fn push(&mut self, st: &WorkflowState, partition: i32, whole: bool) {
        self.id.push(st.workflow_id.as_uuid());
        self.name.push(if whole {
            st.name.clone()
        } else {
            String::new()
        });
        self.tasks.push(if whole {
            serde_json::to_value(&st.definition).expect("serialisable")
        } else {
            Value::Array(Vec::new())
        });
        self.definition
            .push(whole.then(|| serde_json::to_string(&st.definition).expect("serialisable")));
        self.input
            .push(whole.then(|| serde_json::to_string(&st.input).expect("serialisable")));
        self.max_concurrency
            .push(st.max_concurrency.map(|n| n.min(i32::MAX as u32) as i32));
        self.status.push(st.status.as_str());
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
        self.paused.push(st.paused);
        self.commands
            .push(serde_json::to_string(&st.commands).expect("serialisable"));
        self.signal_keys
            .push(serde_json::to_string(&st.signal_keys).expect("serialisable"));
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
    loop_base: Vec<i32>,
    until_pending: Vec<bool>,
    condition: Vec<Option<bool>>,
    skip_reason: Vec<Option<&'static str>>,
    wait_until: Vec<Option<DateTime<Utc>>>,
    /// The signal payload, JSON text.
    inbox: Vec<Option<String>>,
}

impl StepRows {
    /// The steps whose row differs from `before` (all of them when `None`).
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
            self.status.push(s.status.as_str());
            self.attempts.push(s.attempts as i32);
            self.duration_ms.push(s.duration_ms as i64);
            self.error.push(
                s.error
                    .as_ref()
                    .map(|e| serde_json::to_string(e).expect("serialisable")),
            );
            self.finished_at.push(s.finished_at);
            self.loop_base.push(s.loop_base as i32);
            self.until_pending.push(s.until_pending);
            self.condition.push(s.condition);
            self.skip_reason.push(s.skip_reason.map(|r| r.as_str()));
            self.wait_until.push(s.wait_until);
            self.inbox.push(
                s.inbox
                    .as_ref()
                    .map(|i| serde_json::to_string(&i.payload).expect("serialisable")),
            );
        }
    }
}

impl WorkflowRows {
    fn bind(self, q: PgQuery<'_>) -> PgQuery<'_> {
        q.bind(self.id)
            .bind(self.name)
            .bind(self.tasks)
            .bind(self.status)
            .bind(self.user_id)
            .bind(self.created_at)
            .bind(self.started_at)
            .bind(self.finished_at)
            .bind(self.seq)
            .bind(self.runs)
            .bind(self.error)
            .bind(self.last_event_id)
            .bind(self.timeout_ms)
            .bind(self.cancel_requested)
            .bind(self.log_partition)
            .bind(self.definition)
            .bind(self.input)
            .bind(self.max_concurrency)
            .bind(self.paused)
            .bind(self.commands)
            .bind(self.signal_keys)
    }
}

impl StepRows {
    fn bind(self, q: PgQuery<'_>) -> PgQuery<'_> {
        q.bind(self.workflow_id)
            .bind(self.step)
            .bind(self.agent)
            .bind(self.status)
            .bind(self.attempts)
            .bind(self.duration_ms)
            .bind(self.error)
            .bind(self.finished_at)
            .bind(self.step_id)
            .bind(self.iteration)
            .bind(self.loop_base)
            .bind(self.until_pending)
            .bind(self.condition)
            .bind(self.skip_reason)
            .bind(self.wait_until)
            .bind(self.inbox)
    }
}

impl EventRows {
    fn bind(self, q: PgQuery<'_>) -> PgQuery<'_> {
        q.bind(self.partition)
            .bind(self.offset)
            .bind(self.workflow_id)
            .bind(self.applied)
            .bind(self.record)
            .bind(self.output_sha256)
    }
}

impl OutputRows {
    fn bind(self, q: PgQuery<'_>) -> PgQuery<'_> {
        q.bind(self.workflow_id)
            .bind(self.step)
            .bind(self.iteration)
            .bind(self.output)
            .bind(self.output_sha256)
    }
}
