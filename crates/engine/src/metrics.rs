//! The engine's metric names, in one place. Labels are low-cardinality only:
//! `status`, `outcome`, and `agent` for registered agents.

pub const WORKFLOW_EXECUTIONS: &str = "workflow_executions_total";
pub const WORKFLOW_DURATION: &str = "workflow_duration_seconds";
pub const STEP_DURATION: &str = "workflow_step_duration_seconds";
pub const ACTIVE: &str = "workflow_active_count";
pub const AGENT_CALLS: &str = "agentflow_agent_calls_total";
pub const RECORDS_REJECTED: &str = "agentflow_engine_records_rejected_total";
pub const PARTITIONS_OWNED: &str = "agentflow_engine_partitions_owned";
pub const PARTITIONS_REPLAYING: &str = "agentflow_engine_partitions_replaying";

pub fn describe() {
    metrics::describe_counter!(
        WORKFLOW_EXECUTIONS,
        "Workflow runs that ended, by status (completed, failed, cancelled)."
    );
    metrics::describe_histogram!(
        WORKFLOW_DURATION,
        metrics::Unit::Seconds,
        "Workflow run time, start to end."
    );
    metrics::describe_histogram!(
        STEP_DURATION,
        metrics::Unit::Seconds,
        "Time of one step's agent call, retries included."
    );
    metrics::describe_gauge!(ACTIVE, "Workflows running on this node (live actors).");
    metrics::describe_counter!(AGENT_CALLS, "Agent call attempts by agent and outcome.");
    metrics::describe_counter!(
        RECORDS_REJECTED,
        "Records the fold rejected (out of sequence or illegal)."
    );
    metrics::describe_gauge!(
        PARTITIONS_OWNED,
        "Log partitions this node owns (its share of the engine group)."
    );
    metrics::describe_gauge!(
        PARTITIONS_REPLAYING,
        "Owned partitions still replaying the log (not yet live)."
    );
}
