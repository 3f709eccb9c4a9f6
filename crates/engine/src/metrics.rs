//! The engine's metric names, in one place. Labels are low-cardinality only:
//! `status`, `outcome`, and `agent` for registered agents.

pub const WORKFLOW_EXECUTIONS: &str = "workflow_executions_total";
pub const WORKFLOW_DURATION: &str = "workflow_duration_seconds";
pub const STEP_DURATION: &str = "workflow_step_duration_seconds";
pub const ACTIVE: &str = "workflow_active_count";
pub const AGENT_CALLS: &str = "agentflow_agent_calls_total";
pub const RECORDS_REJECTED: &str = "agentflow_engine_records_rejected_total";
pub const PENDING: &str = "workflow_pending_count";
pub const STEP_FAILURES: &str = "workflow_step_failures_total";
pub const PARTITIONS_OWNED: &str = "agentflow_engine_partitions_owned";
pub const PARTITIONS_REPLAYING: &str = "agentflow_engine_partitions_replaying";
pub const STALLS: &str = "agentflow_engine_stalls_total";
pub const CONDITIONS: &str = "agentflow_conditions_evaluated_total";
pub const SIGNALS: &str = "agentflow_signals_received_total";
pub const TIMERS: &str = "agentflow_engine_timers";
pub const RECORDS_REFUSED: &str = "agentflow_engine_records_refused_total";
pub const ACTOR_RESTARTS: &str = "agentflow_engine_actor_restarts_total";
pub const PARKED: &str = "agentflow_engine_workflows_parked";

pub fn describe() {
    metrics::describe_counter!(
        WORKFLOW_EXECUTIONS,
        "Workflow runs that ended, by status (completed, failed, cancelled)."
    );
    metrics::describe_histogram!(
        WORKFLOW_DURATION,
        metrics::Unit::Seconds,
        "Workflow run time, start to end, by workflow name (the first 50 names; the rest are `other`)."
    );
    metrics::describe_histogram!(
        STEP_DURATION,
        metrics::Unit::Seconds,
        "Time of one step's agent call, retries included."
    );
    metrics::describe_gauge!(ACTIVE, "Workflows running on this node (live actors).");
    metrics::describe_gauge!(
        PENDING,
        "Workflows created and not yet started, in this node's partitions."
    );
    metrics::describe_counter!(
        STEP_FAILURES,
        "Steps that failed for good (after retries), by agent."
    );
    metrics::describe_counter!(AGENT_CALLS, "Agent call attempts by agent and outcome.");
    metrics::describe_counter!(
        STALLS,
        "Times this process was found stalled (stopped, frozen) long enough to risk its group session; agent calls and appends were held until the group confirmed its partitions."
    );
    metrics::describe_counter!(
        RECORDS_REJECTED,
        "Records the fold rejected (out of sequence or illegal)."
    );
    metrics::describe_gauge!(
        PARTITIONS_OWNED,
        "Log partitions this node owns (its share of the engine group)."
    );
    metrics::describe_counter!(
        CONDITIONS,
        "Conditions evaluated, by condition (`when`: a branch; `until`: a loop's exit test) and result (true, false, error)."
    );
    metrics::describe_counter!(
        SIGNALS,
        "Signals received for waiting steps (`POST /workflows/{id}/signals/{name}`)."
    );
    metrics::describe_gauge!(
        TIMERS,
        "Idle workflows (sleeping, or waiting with a timeout) this node holds a timer for, with no actor."
    );
    metrics::describe_counter!(
        RECORDS_REFUSED,
        "Records the event log refused for good (over the broker's message limit, or not permitted), by event_type; the step they were about failed instead."
    );
    metrics::describe_counter!(
        ACTOR_RESTARTS,
        "Workflow actors that failed or stopped on an error and were started again after a backoff."
    );
    metrics::describe_gauge!(
        PARKED,
        "Workflows whose actor failed too many times in a row: not started again until a user acts on them (cancel, resume, signal, execute) or the node restarts."
    );
    metrics::describe_gauge!(
        PARTITIONS_REPLAYING,
        "Owned partitions still replaying the log (not yet live)."
    );
}

/// The `workflow` label for a workflow name: the name itself for the first
/// [`MAX_NAMES`] distinct names this process sees, `other` after that, so a
/// user inventing names cannot blow up the number of series.
pub fn workflow_label(name: &str) -> String {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let name: String = name.chars().take(64).collect();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .expect("not poisoned");
    if seen.contains(&name) {
        return name;
    }
    if seen.len() < MAX_NAMES {
        seen.insert(name.clone());
        return name;
    }
    "other".into()
}

pub const MAX_NAMES: usize = 50;
