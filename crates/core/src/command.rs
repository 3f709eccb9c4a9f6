//! What a user's request does to a workflow: a pure function of its state
//! and the command, giving the record to append (`None`: nothing to write,
//! the request is already in effect) or why the request is not legal now.
//! The API parses, loads, calls this, appends, and waits; it decides
//! nothing itself.

use chrono::{DateTime, Utc};
use serde_json::Value;

use uuid::Uuid;

use crate::definition::StepId;
use crate::ids::{UserId, WorkflowId};
use crate::record::{Event, Record};
use crate::state::{StepStatus, WorkflowState, WorkflowStatus};

/// A user's request about an existing workflow.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Cancel,
    Pause,
    Resume,
    Signal {
        name: String,
        payload: Value,
        key: Option<String>,
    },
}

/// Why a command is not legal in the workflow's state (the API's 409).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandRejected {
    #[error("workflow is {0}; it can no longer be cancelled")]
    Finished(&'static str),
    #[error("workflow is {0}; only a running or waiting workflow can be paused")]
    NotPausable(&'static str),
    #[error("workflow is {status}; only a paused workflow can be resumed{hint}")]
    NotResumable {
        status: &'static str,
        hint: &'static str,
    },
    #[error("no step of this workflow waits for signal `{signal}`; {now}")]
    NothingWaits { signal: String, now: String },
    #[error("workflow is {0}; only a pending or failed workflow can be executed")]
    NotStartable(&'static str),
}

/// What starting a workflow needs of it: its head (all a pending one has to
/// show; a failed one is read whole for [`resumed_steps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub workflow_id: WorkflowId,
    pub user_id: UserId,
    pub status: WorkflowStatus,
    pub seq: u64,
    pub last_event_id: Uuid,
}

impl Head {
    pub fn of(st: &WorkflowState) -> Head {
        Head {
            workflow_id: st.workflow_id,
            user_id: st.user_id,
            status: st.status,
            seq: st.seq,
            last_event_id: st.last_event_id,
        }
    }
}

/// The `workflow.started` record that starts a pending workflow or resumes
/// a failed one, chained after its head; it takes the next seq, so of two
/// starts racing the log keeps one.
pub fn start(head: Head, now: DateTime<Utc>) -> Result<Record, CommandRejected> {
    if !head.status.can_start() {
        return Err(CommandRejected::NotStartable(head.status.as_str()));
    }
    Ok(Record::new(
        head.workflow_id,
        head.user_id,
        head.seq + 1,
        now,
        Event::Started,
    )
    .after(head.last_event_id))
}

/// The steps a start runs again: the failed ones (none for a pending
/// workflow).
pub fn resumed_steps(st: &WorkflowState) -> Vec<&StepId> {
    st.steps
        .iter()
        .filter(|s| s.status == StepStatus::Failed)
        .map(|s| &s.id)
        .collect()
}

/// The steps signal `name` goes to: the wait steps for it that have begun
/// (waiting, or done with an earlier one).
pub fn receivers<'a>(st: &'a WorkflowState, name: &str) -> Vec<&'a StepId> {
    st.steps
        .iter()
        .zip(&st.definition)
        .filter(|(s, def)| {
            s.status != StepStatus::Pending && def.wait.as_ref().is_some_and(|w| w.signal == name)
        })
        .map(|(s, _)| &s.id)
        .collect()
}

/// The record `command` makes on `st` at `now`, if any.
pub fn command(
    st: &WorkflowState,
    command: Command,
    now: DateTime<Utc>,
) -> Result<Option<Record>, CommandRejected> {
    // A command on a run repeats the seq it was asked at and takes no place
    // in the chain (it never races the actor for the next one).
    let flag = |event| {
        Some(Record::new(st.workflow_id, st.user_id, st.seq, now, event).after(st.last_event_id))
    };
    let status = st.status.as_str();
    match command {
        Command::Cancel => match st.status {
            // Pending and failed workflows have no actor: they end at once.
            WorkflowStatus::Pending | WorkflowStatus::Failed => Ok(Some(
                Record::new(
                    st.workflow_id,
                    st.user_id,
                    st.seq + 1,
                    now,
                    Event::Cancelled,
                )
                .after(st.last_event_id),
            )),
            // Asked already, or done: nothing new to say (cancel is
            // idempotent, so a client that got no answer can ask again).
            s if s.is_active() && st.cancel_requested => Ok(None),
            WorkflowStatus::Cancelled => Ok(None),
            s if s.is_active() => Ok(flag(Event::CancelRequested)),
            _ => Err(CommandRejected::Finished(status)),
        },
        Command::Pause if !st.status.is_active() => Err(CommandRejected::NotPausable(status)),
        Command::Pause if st.paused => Ok(None),
        Command::Pause => Ok(flag(Event::Paused)),
        Command::Resume if !st.status.is_active() => Err(CommandRejected::NotResumable {
            status,
            hint: if st.status.can_start() {
                " (`POST /workflows/{id}/execute` starts a pending or failed one)"
            } else {
                ""
            },
        }),
        Command::Resume if !st.paused => Ok(None),
        Command::Resume => Ok(flag(Event::Resumed)),
        Command::Signal { key, .. } if key.as_ref().is_some_and(|k| st.signal_keys.contains(k)) => {
            // Delivered before with this key: answered as then.
            Ok(None)
        }
        Command::Signal { name, payload, key } => {
            let waiting = st.awaited_signals();
            if !st.status.is_active() || !waiting.contains(&name.as_str()) {
                let now = if waiting.is_empty() {
                    format!("it waits for no signal now (it is {status})")
                } else {
                    format!("it waits for: {}", waiting.join(", "))
                };
                return Err(CommandRejected::NothingWaits { signal: name, now });
            }
            Ok(flag(Event::SignalReceived {
                signal: name,
                payload,
                key,
            }))
        }
    }
}
