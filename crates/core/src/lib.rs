//! The pure heart of agentflow.
//!
//! Everything a workflow *is* lives here, with no I/O: the definition a user
//! submits ([`definition`]), the records of the event log ([`record`]), the
//! fold that turns records into state ([`state::apply`]), the function that
//! says what to do next ([`decide::decide`]) and what a user's request does
//! ([`command::command`]). The engine, the projector and the
//! audit tooling all use this same fold, so they can never disagree.

pub mod audit;
pub mod bounds;
pub mod command;
pub mod decide;
pub mod definition;
pub mod expr;
pub mod ids;
pub mod record;
pub mod schema;
mod spelled;
pub mod state;
pub mod template;

pub use audit::{AuditEntry, audit};
pub use command::{Command, CommandRejected, command};
pub use decide::{
    Action, Context, chain, decide, ready_at, running_steps, takes_result, timed_out,
};
pub use definition::{
    DefinitionError, OnExhausted, Repeat, StepDef, StepId, StepKind, TaskDef, WaitDef,
    WorkflowDefinition,
};
pub use ids::{AgentName, IdError, UserId, WorkflowId};
pub use record::{
    ConditionKind, Event, OutputRef, Record, RecordError, ResolveOutput, StepError, StepErrorKind,
    WaitEnd,
};
pub use state::{
    Inbox, Rejected, SkipReason, StepState, StepStatus, WorkflowState, WorkflowStatus, apply,
};
