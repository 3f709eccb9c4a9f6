//! What a user's request does to a workflow: a pure function of its state
//! and the command, giving the record to append (`None`: nothing to write,
//! the request is already in effect) or why the request is not legal now.
//! The API parses, loads, calls this, appends, and waits; it decides
//! nothing itself.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::record::{Event, Record};
use crate::state::{WorkflowState, WorkflowStatus};

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
