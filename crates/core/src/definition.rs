//! What a user submits: a named graph of steps. Parsed and validated once,
//! at the API edge, field by field, so that everything written to the log
//! is well formed.
//!
//! A step has an `id`, its parents (`after`), and one kind: an `agent` call
//! (with an `input` template), a `wait` for a signal, or a `sleep_ms`.
//! Optionally a `when` condition and, on an agent step, a `repeat` loop.
//! The guide's `tasks` list is still accepted and means a chain: its steps
//! are `step_1`, `step_2`, … each after the one before.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::expr::{self, ExprError};
use crate::ids::AgentName;
use crate::template::{self, Ref, TemplateError};

/// A step's id: 1 to 64 of `a-z`, `0-9`, `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StepId(String);

impl StepId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(format!("must be 1 to {} characters", Self::MAX_LEN));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err("may contain only `a-z`, `0-9` and `_`".into());
        }
        Ok(Self(s.to_owned()))
    }

    /// The id of the `n`th task (1-based) of a `tasks` chain.
    pub fn of_task(n: usize) -> Self {
        Self(format!("step_{n}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StepId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<StepId> for String {
    fn from(id: StepId) -> String {
        id.0
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One task of the guide's `tasks` list (and of version-1 records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskDef {
    pub agent: AgentName,
    /// Any JSON; strings may hold `{{previous_output}}`.
    #[serde(default)]
    pub input: Value,
    /// Overrides the agent's per-attempt timeout for this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = WorkflowDefinition::MAX_TIMEOUT_MS))]
    pub timeout_ms: Option<u64>,
}

/// A step of kind wait: parks until `signal` arrives (`POST
/// /workflows/{id}/signals/{signal}`), whose body becomes its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitDef {
    #[schemars(schema_with = "crate::schema::signal_name")]
    pub signal: String,
    /// How long to wait; then the step fails, or completes with
    /// `timeout_output` when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = WorkflowDefinition::MAX_WAIT_MS))]
    pub timeout_ms: Option<u64>,
    /// The step's output when `timeout_ms` passes without the signal (else
    /// the step fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_output: Option<Value>,
}

/// What a loop does when `max_iterations` pass without `until` holding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnExhausted {
    /// The step fails (`max_iterations`), and with it the workflow.
    #[default]
    Fail,
    /// The step completes with its last output.
    Continue,
}

/// A loop on an agent step: it runs again, seeing its last output and the
/// iteration number, until `until` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    /// A CEL expression.
    #[schemars(length(max = expr::MAX_LEN))]
    pub until: String,
    #[schemars(range(min = 1, max = WorkflowDefinition::MAX_ITERATIONS))]
    pub max_iterations: u32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_exhausted: OnExhausted,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// One step of a workflow's graph, as stored in `workflow.created`: an
/// agent call, a wait or a sleep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    {"required": ["agent"]}, {"required": ["wait"]}, {"required": ["sleep_ms"]}
]))]
pub struct StepDef {
    pub id: StepId,
    /// Its parents: it runs once each is completed or skipped, and at least
    /// one completed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1), extend("uniqueItems" = true))]
    pub after: Vec<StepId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentName>,
    /// Any JSON; strings may hold `{{previous_output}}`,
    /// `{{steps.ID.output[.path]}}`, `{{input[.path]}}` and `{{iteration}}`.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitDef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = WorkflowDefinition::MAX_WAIT_MS))]
    pub sleep_ms: Option<u64>,
    /// A CEL expression: false skips the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = expr::MAX_LEN))]
    pub when: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<Repeat>,
    /// An agent step's per-attempt timeout, overriding the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = WorkflowDefinition::MAX_TIMEOUT_MS))]
    pub timeout_ms: Option<u64>,
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepKind<'a> {
    Agent(&'a AgentName),
    Wait(&'a WaitDef),
    Sleep(u64),
}

impl StepKind<'_> {
    pub fn as_str(&self) -> &'static str {
        match self {
            StepKind::Agent(_) => "agent",
            StepKind::Wait(_) => "wait",
            StepKind::Sleep(_) => "sleep",
        }
    }
}

impl StepDef {
    pub fn kind(&self) -> StepKind<'_> {
        match (&self.agent, &self.wait, self.sleep_ms) {
            (Some(a), _, _) => StepKind::Agent(a),
            (None, Some(w), _) => StepKind::Wait(w),
            (None, None, Some(ms)) => StepKind::Sleep(ms),
            // Every stored definition passed `parse`, which requires a kind.
            (None, None, None) => StepKind::Sleep(0),
        }
    }

    /// The chain step for the `n`th task (1-based).
    pub fn of_task(n: usize, t: TaskDef) -> Self {
        StepDef {
            id: StepId::of_task(n),
            after: if n > 1 {
                vec![StepId::of_task(n - 1)]
            } else {
                vec![]
            },
            agent: Some(t.agent),
            input: t.input,
            wait: None,
            sleep_ms: None,
            when: None,
            repeat: None,
            timeout_ms: t.timeout_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowDefinition {
    pub name: String,
    pub steps: Vec<StepDef>,
    /// The workflow's input, reachable from templates and conditions.
    pub input: Value,
    /// A whole run's deadline, counted from each (re)start: a step still
    /// running when it passes fails with `workflow_timeout`.
    pub timeout_ms: Option<u64>,
    /// At most this many agent calls of the workflow run at once.
    pub max_concurrency: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    #[error("body must be a JSON object")]
    NotAnObject,
    #[error("`{0}` is required")]
    Missing(&'static str),
    #[error("`steps` (a graph) or `tasks` (a chain) is required")]
    NoSteps,
    #[error("`{field}` must be {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("`name` must not be empty")]
    EmptyName,
    #[error("`name` must be at most {max} characters", max = WorkflowDefinition::MAX_NAME_CHARS)]
    NameTooLong,
    #[error("`tasks` must not be empty")]
    NoTasks,
    #[error("a workflow has at most {max} tasks", max = WorkflowDefinition::MAX_TASKS)]
    TooManyTasks,
    #[error("unknown field `{0}`")]
    UnknownField(String),
    #[error("tasks[{index}].agent: {message}")]
    BadAgent { index: usize, message: String },
    #[error("tasks[{index}].input: {source}")]
    BadTemplate { index: usize, source: TemplateError },
    #[error("`{0}` must be an integer number of milliseconds from 1 to {max}", max = WorkflowDefinition::MAX_TIMEOUT_MS)]
    BadTimeout(String),
    #[error(
        "tasks[0].input uses `{{{{previous_output}}}}` but the first step has no previous output"
    )]
    PreviousOutputInFirstStep,
    /// U+0000 in a string or a key: valid JSON, but Postgres `text` and
    /// `jsonb` cannot hold it, so it is refused at the edge (naming where).
    #[error("`{0}` must not contain the NUL character (U+0000)")]
    NulCharacter(String),
    /// A mistake in a graph's step or its shape, at `field`.
    #[error("`{field}`: {message}")]
    Invalid { field: String, message: String },
}

impl DefinitionError {
    /// The field the mistake is in, when there is one.
    pub fn field(&self) -> Option<String> {
        Some(match self {
            DefinitionError::Missing(f) => (*f).to_owned(),
            DefinitionError::WrongType { field, .. }
            | DefinitionError::Invalid { field, .. }
            | DefinitionError::BadTimeout(field)
            | DefinitionError::NulCharacter(field)
            | DefinitionError::UnknownField(field) => field.clone(),
            DefinitionError::EmptyName | DefinitionError::NameTooLong => "name".into(),
            DefinitionError::NoTasks | DefinitionError::TooManyTasks => "tasks".into(),
            DefinitionError::BadAgent { index, .. } => format!("tasks[{index}].agent"),
            DefinitionError::BadTemplate { index, .. } => format!("tasks[{index}].input"),
            DefinitionError::PreviousOutputInFirstStep => "tasks[0].input".into(),
            DefinitionError::NotAnObject | DefinitionError::NoSteps => return None,
        })
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> DefinitionError {
    DefinitionError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

impl WorkflowDefinition {
    pub const MAX_NAME_CHARS: usize = 255;
    pub const MAX_TASKS: usize = 100;
    /// One day: longer "timeouts" are almost always a unit mistake.
    pub const MAX_TIMEOUT_MS: u64 = 86_400_000;
    /// A sleep or a wait for a person: up to 90 days.
    pub const MAX_WAIT_MS: u64 = 90 * 86_400_000;
    pub const MAX_ITERATIONS: u32 = 100;
    pub const MAX_CONCURRENCY: u32 = 100;

    /// Validates a request body field by field, so each mistake gets its own
    /// message instead of a generic deserialisation error.
    pub fn parse(body: &Value) -> Result<Self, DefinitionError> {
        let obj = body.as_object().ok_or(DefinitionError::NotAnObject)?;
        if let Some(k) = obj.keys().find(|k| {
            !matches!(
                k.as_str(),
                "name" | "tasks" | "steps" | "input" | "timeout_ms" | "max_concurrency"
            )
        }) {
            return Err(DefinitionError::UnknownField(k.clone()));
        }
        let name = match obj.get("name") {
            None | Some(Value::Null) => return Err(DefinitionError::Missing("name")),
            Some(Value::String(s)) if s.contains('\0') => {
                return Err(DefinitionError::NulCharacter("name".into()));
            }
            Some(Value::String(s)) => s.trim().to_owned(),
            Some(_) => {
                return Err(DefinitionError::WrongType {
                    field: "name".into(),
                    expected: "a string",
                });
            }
        };
        if name.is_empty() {
            return Err(DefinitionError::EmptyName);
        }
        if name.chars().count() > Self::MAX_NAME_CHARS {
            return Err(DefinitionError::NameTooLong);
        }
        let present = |k| !matches!(obj.get(k), None | Some(Value::Null));
        let steps = match (present("tasks"), present("steps")) {
            (true, true) => {
                return Err(invalid(
                    "steps",
                    "give either `tasks` (a chain) or `steps` (a graph), not both",
                ));
            }
            (true, false) => parse_tasks(&obj["tasks"])?,
            (false, true) => parse_steps(&obj["steps"])?,
            (false, false) => return Err(DefinitionError::NoSteps),
        };
        let input = match obj.get("input") {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(v @ Value::Object(_)) => {
                if let Some(path) = nul_path(v, "input".into()) {
                    return Err(DefinitionError::NulCharacter(path));
                }
                v.clone()
            }
            Some(_) => {
                return Err(DefinitionError::WrongType {
                    field: "input".into(),
                    expected: "an object",
                });
            }
        };
        let timeout_ms = parse_ms(obj.get("timeout_ms"), "timeout_ms", Self::MAX_TIMEOUT_MS)?;
        let max_concurrency = match obj.get("max_concurrency") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                whole_number(v)
                    .filter(|n| (1..=Self::MAX_CONCURRENCY as u64).contains(n))
                    .ok_or_else(|| {
                        invalid(
                            "max_concurrency",
                            format!("must be an integer from 1 to {}", Self::MAX_CONCURRENCY),
                        )
                    })? as u32,
            ),
        };
        check_graph(&steps, obj.contains_key("tasks"))?;
        Ok(Self {
            name,
            steps,
            input,
            timeout_ms,
            max_concurrency,
        })
    }
}

/// JSON has one number type: `5000.0` is the integer 5000 (as JSON
/// Schema's `integer` says), not a fraction.
fn whole_number(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
            .map(|f| f as u64)
    })
}

fn parse_ms(v: Option<&Value>, field: &str, max: u64) -> Result<Option<u64>, DefinitionError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => whole_number(v)
            .filter(|ms| (1..=max).contains(ms))
            .map(Some)
            .ok_or_else(|| {
                if max == WorkflowDefinition::MAX_TIMEOUT_MS {
                    DefinitionError::BadTimeout(field.to_owned())
                } else {
                    invalid(
                        field,
                        format!("must be an integer number of milliseconds from 1 to {max}"),
                    )
                }
            }),
    }
}

fn parse_tasks(v: &Value) -> Result<Vec<StepDef>, DefinitionError> {
    if v.is_null() {
        return Err(DefinitionError::Missing("tasks"));
    }
    let Value::Array(tasks) = v else {
        return Err(DefinitionError::WrongType {
            field: "tasks".into(),
            expected: "an array",
        });
    };
    if tasks.is_empty() {
        return Err(DefinitionError::NoTasks);
    }
    if tasks.len() > WorkflowDefinition::MAX_TASKS {
        return Err(DefinitionError::TooManyTasks);
    }
    tasks
        .iter()
        .enumerate()
        .map(|(i, t)| parse_task(i, t).map(|t| StepDef::of_task(i + 1, t)))
        .collect()
}

fn parse_task(index: usize, t: &Value) -> Result<TaskDef, DefinitionError> {
    let obj = object_of(
        &format!("tasks[{index}]"),
        t,
        "an object with `agent` and `input`",
        "agent input timeout_ms",
    )?;
    let agent = match obj.get("agent") {
        None | Some(Value::Null) => {
            return Err(DefinitionError::BadAgent {
                index,
                message: "is required".into(),
            });
        }
        Some(Value::String(s)) => AgentName::parse(s).map_err(|e| DefinitionError::BadAgent {
            index,
            message: e.to_string(),
        })?,
        Some(_) => {
            return Err(DefinitionError::BadAgent {
                index,
                message: "must be a string".into(),
            });
        }
    };
    let input = obj
        .get("input")
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    if let Some(path) = nul_path(&input, format!("tasks[{index}].input")) {
        return Err(DefinitionError::NulCharacter(path));
    }
    let refs = template::validate(&input)
        .map_err(|source| DefinitionError::BadTemplate { index, source })?;
    if index == 0 && refs.contains(&Ref::PreviousOutput) {
        return Err(DefinitionError::PreviousOutputInFirstStep);
    }
    let timeout_ms = parse_ms(
        obj.get("timeout_ms"),
        &format!("tasks[{index}].timeout_ms"),
        WorkflowDefinition::MAX_TIMEOUT_MS,
    )?;
    Ok(TaskDef {
        agent,
        input,
        timeout_ms,
    })
}

fn parse_steps(v: &Value) -> Result<Vec<StepDef>, DefinitionError> {
    let Value::Array(steps) = v else {
        return Err(DefinitionError::WrongType {
            field: "steps".into(),
            expected: "an array",
        });
    };
    if steps.is_empty() {
        return Err(invalid("steps", "must not be empty"));
    }
    if steps.len() > WorkflowDefinition::MAX_TASKS {
        return Err(invalid(
            "steps",
            format!(
                "a workflow has at most {} steps",
                WorkflowDefinition::MAX_TASKS
            ),
        ));
    }
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| parse_step(i, s))
        .collect()
}

fn parse_step(i: usize, v: &Value) -> Result<StepDef, DefinitionError> {
    let at = format!("steps[{i}]");
    let obj = step_object(&at, v)?;
    let id =
        step_string(obj, &at, "id")?.ok_or_else(|| invalid(format!("{at}.id"), "is required"))?;
    let id = StepId::parse(id).map_err(|m| invalid(format!("{at}.id"), m))?;
    let after = parse_after(obj, &at)?;
    let agent = step_string(obj, &at, "agent")?
        .map(|a| AgentName::parse(a).map_err(|e| invalid(format!("{at}.agent"), e.to_string())))
        .transpose()?;
    let wait = match obj.get("wait") {
        None | Some(Value::Null) => None,
        Some(w) => Some(parse_wait(&format!("{at}.wait"), w)?),
    };
    let sleep_ms = parse_ms(
        obj.get("sleep_ms"),
        &format!("{at}.sleep_ms"),
        WorkflowDefinition::MAX_WAIT_MS,
    )?;
    let kinds = [agent.is_some(), wait.is_some(), sleep_ms.is_some()];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err(invalid(
            at,
            "a step has exactly one of `agent`, `wait` and `sleep_ms`",
        ));
    }
    let is_agent = agent.is_some();
    let input = parse_step_input(obj, &at, is_agent)?;
    let when = step_string(obj, &at, "when")?.map(str::to_owned);
    let (repeat, timeout_ms) = parse_call_options(obj, &at, is_agent)?;
    Ok(StepDef {
        id,
        after,
        agent,
        input,
        wait,
        sleep_ms,
        when,
        repeat,
        timeout_ms,
    })
}

/// The step as an object with only the fields a step may have.
fn step_object<'v>(
    at: &str,
    v: &'v Value,
) -> Result<&'v serde_json::Map<String, Value>, DefinitionError> {
    object_of(
        at,
        v,
        "an object with `id` and one of `agent`, `wait`, `sleep_ms`",
        "id after agent input wait sleep_ms when repeat timeout_ms",
    )
}

/// `v` (at `at`) as an object with none but `fields` (separated by spaces):
/// `WrongType` (saying `expected`) when it is not an object, `UnknownField`
/// for another field.
fn object_of<'v>(
    at: &str,
    v: &'v Value,
    expected: &'static str,
    fields: &str,
) -> Result<&'v serde_json::Map<String, Value>, DefinitionError> {
    let obj = v.as_object().ok_or_else(|| DefinitionError::WrongType {
        field: at.to_owned(),
        expected,
    })?;
    if let Some(k) = obj.keys().find(|k| !fields.split(' ').any(|f| f == *k)) {
        return Err(DefinitionError::UnknownField(format!("{at}.{k}")));
    }
    Ok(obj)
}

/// The step's string field `k`, if present (null is absent).
fn step_string<'v>(
    obj: &'v serde_json::Map<String, Value>,
    at: &str,
    k: &str,
) -> Result<Option<&'v str>, DefinitionError> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.contains('\0') => {
            Err(DefinitionError::NulCharacter(format!("{at}.{k}")))
        }
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(DefinitionError::WrongType {
            field: format!("{at}.{k}"),
            expected: "a string",
        }),
    }
}

/// The step's `after`: step ids, each once.
fn parse_after(
    obj: &serde_json::Map<String, Value>,
    at: &str,
) -> Result<Vec<StepId>, DefinitionError> {
    let after = match obj.get("after") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let f = format!("{at}.after[{j}]");
                p.as_str()
                    .ok_or_else(|| DefinitionError::WrongType {
                        field: f.clone(),
                        expected: "a step id",
                    })
                    .and_then(|p| StepId::parse(p).map_err(|m| invalid(f, m)))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(DefinitionError::WrongType {
                field: format!("{at}.after"),
                expected: "an array of step ids",
            });
        }
    };
    if let Some(dup) = after
        .iter()
        .enumerate()
        .find(|(j, p)| after[..*j].contains(p))
    {
        return Err(invalid(
            format!("{at}.after[{}]", dup.0),
            format!("`{}` is listed twice", dup.1),
        ));
    }
    Ok(after)
}

/// The step's `input`: an agent step's (an empty object when absent, a
/// valid template); null for the others, which may not have one.
fn parse_step_input(
    obj: &serde_json::Map<String, Value>,
    at: &str,
    is_agent: bool,
) -> Result<Value, DefinitionError> {
    Ok(match obj.get("input") {
        None | Some(Value::Null) if is_agent => Value::Object(Default::default()),
        None | Some(Value::Null) => Value::Null,
        Some(_) if !is_agent => {
            return Err(invalid(
                format!("{at}.input"),
                "only an agent step has an input",
            ));
        }
        Some(v) => {
            if let Some(path) = nul_path(v, format!("{at}.input")) {
                return Err(DefinitionError::NulCharacter(path));
            }
            template::validate(v).map_err(|e| invalid(format!("{at}.input"), e.to_string()))?;
            v.clone()
        }
    })
}

/// What only an agent step may have: `repeat` and the call's `timeout_ms`.
fn parse_call_options(
    obj: &serde_json::Map<String, Value>,
    at: &str,
    is_agent: bool,
) -> Result<(Option<Repeat>, Option<u64>), DefinitionError> {
    let repeat = match obj.get("repeat") {
        None | Some(Value::Null) => None,
        Some(_) if !is_agent => {
            return Err(invalid(
                format!("{at}.repeat"),
                "only an agent step can repeat",
            ));
        }
        Some(r) => Some(parse_repeat(&format!("{at}.repeat"), r)?),
    };
    let timeout_ms = match obj.get("timeout_ms") {
        Some(v) if !v.is_null() && !is_agent => {
            return Err(invalid(
                format!("{at}.timeout_ms"),
                "only an agent step has a call timeout (a wait has `wait.timeout_ms`)",
            ));
        }
        v => parse_ms(
            v,
            &format!("{at}.timeout_ms"),
            WorkflowDefinition::MAX_TIMEOUT_MS,
        )?,
    };
    Ok((repeat, timeout_ms))
}

/// A signal's name: 1 to 64 of `a-z`, `0-9`, `_`, `-`, `.`.
pub fn valid_signal_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        })
}

fn parse_wait(at: &str, v: &Value) -> Result<WaitDef, DefinitionError> {
    let obj = object_of(
        at,
        v,
        "an object with `signal`",
        "signal timeout_ms timeout_output",
    )?;
    let signal = match obj.get("signal") {
        Some(Value::String(s)) if valid_signal_name(s) => s.clone(),
        None | Some(Value::Null) => return Err(invalid(format!("{at}.signal"), "is required")),
        Some(_) => {
            return Err(invalid(
                format!("{at}.signal"),
                "must be 1 to 64 of `a-z`, `0-9`, `_`, `-`, `.`",
            ));
        }
    };
    let timeout_ms = parse_ms(
        obj.get("timeout_ms"),
        &format!("{at}.timeout_ms"),
        WorkflowDefinition::MAX_WAIT_MS,
    )?;
    let timeout_output = obj.get("timeout_output").filter(|v| !v.is_null()).cloned();
    if let Some(o) = &timeout_output {
        if timeout_ms.is_none() {
            return Err(invalid(
                format!("{at}.timeout_output"),
                "needs `timeout_ms`",
            ));
        }
        if let Some(path) = nul_path(o, format!("{at}.timeout_output")) {
            return Err(DefinitionError::NulCharacter(path));
        }
    }
    Ok(WaitDef {
        signal,
        timeout_ms,
        timeout_output,
    })
}

fn parse_repeat(at: &str, v: &Value) -> Result<Repeat, DefinitionError> {
    let obj = object_of(
        at,
        v,
        "an object with `until` and `max_iterations`",
        "until max_iterations on_exhausted",
    )?;
    let until = match obj.get("until") {
        Some(Value::String(s)) if s.contains('\0') => {
            return Err(DefinitionError::NulCharacter(format!("{at}.until")));
        }
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => return Err(invalid(format!("{at}.until"), "is required")),
        Some(_) => {
            return Err(DefinitionError::WrongType {
                field: format!("{at}.until"),
                expected: "a string (a CEL expression)",
            });
        }
    };
    let max = WorkflowDefinition::MAX_ITERATIONS;
    let max_iterations = obj
        .get("max_iterations")
        .and_then(whole_number)
        .filter(|n| (1..=max as u64).contains(n))
        .ok_or_else(|| {
            invalid(
                format!("{at}.max_iterations"),
                format!("is required: an integer from 1 to {max}"),
            )
        })? as u32;
    let on_exhausted = match obj.get("on_exhausted") {
        None | Some(Value::Null) => OnExhausted::Fail,
        Some(Value::String(s)) if s == "fail" => OnExhausted::Fail,
        Some(Value::String(s)) if s == "continue" => OnExhausted::Continue,
        Some(_) => {
            return Err(invalid(
                format!("{at}.on_exhausted"),
                "must be `fail` or `continue`",
            ));
        }
    };
    Ok(Repeat {
        until,
        max_iterations,
        on_exhausted,
    })
}

/// The shape of a validated graph: parents by index, and each step's
/// ancestors as a bit set (a workflow has at most 100 steps).
#[derive(Debug, Clone)]
pub struct Graph {
    pub parents: Vec<Vec<usize>>,
    pub ancestors: Vec<u128>,
}

impl Graph {
    /// Resolves parents and finds cycles. `Err((step index, message))`.
    pub fn of(steps: &[StepDef]) -> Result<Self, (usize, String)> {
        let index = |id: &StepId| steps.iter().position(|s| &s.id == id);
        let mut parents = Vec::with_capacity(steps.len());
        for (i, s) in steps.iter().enumerate() {
            let mut ps = Vec::with_capacity(s.after.len());
            for p in &s.after {
                match index(p) {
                    Some(j) if j == i => {
                        return Err((i, format!("step `{p}` cannot come after itself")));
                    }
                    Some(j) => ps.push(j),
                    None => return Err((i, format!("unknown step `{p}`"))),
                }
            }
            parents.push(ps);
        }
        // Kahn's algorithm: whatever never becomes ready is on a cycle.
        let n = steps.len();
        let mut waiting: Vec<usize> = parents.iter().map(Vec::len).collect();
        let mut ready: Vec<usize> = (0..n).filter(|i| waiting[*i] == 0).collect();
        let mut ancestors = vec![0u128; n];
        let mut done = 0;
        while let Some(i) = ready.pop() {
            done += 1;
            for (c, ps) in parents.iter().enumerate() {
                if ps.contains(&i) {
                    ancestors[c] |= ancestors[i] | (1u128 << i);
                    waiting[c] -= 1;
                    if waiting[c] == 0 {
                        ready.push(c);
                    }
                }
            }
        }
        if done < n {
            let on_cycle = (0..n).find(|i| waiting[*i] > 0).unwrap_or(0);
            return Err((
                on_cycle,
                format!(
                    "step `{}` is on a cycle: `after` must not lead back to a step",
                    steps[on_cycle].id
                ),
            ));
        }
        Ok(Self { parents, ancestors })
    }

    pub fn is_ancestor(&self, ancestor: usize, of: usize) -> bool {
        ancestor < 128 && self.ancestors[of] & (1u128 << ancestor) != 0
    }
}

/// The graph-level rules: unique ids, known parents, no cycles, and every
/// step a template or condition names is an ancestor.
fn check_graph(steps: &[StepDef], from_tasks: bool) -> Result<(), DefinitionError> {
    let list = if from_tasks { "tasks" } else { "steps" };
    for (i, s) in steps.iter().enumerate() {
        if steps[..i].iter().any(|o| o.id == s.id) {
            return Err(invalid(
                format!("steps[{i}].id"),
                format!("`{}` is the id of an earlier step", s.id),
            ));
        }
    }
    let graph = Graph::of(steps).map_err(|(i, m)| invalid(format!("{list}[{i}].after"), m))?;
    let index = |id: &StepId| steps.iter().position(|s| &s.id == id);
    let reachable = |i: usize, id: &StepId, own: bool| match index(id) {
        Some(j) if j == i && own => Ok(()),
        Some(j) if graph.is_ancestor(j, i) => Ok(()),
        Some(_) => Err(format!(
            "step `{id}` is not an ancestor of this step (list it, or a step after it, in `after`)"
        )),
        None => Err(format!("unknown step `{id}`")),
    };
    for (i, s) in steps.iter().enumerate() {
        let at = format!("{list}[{i}]");
        let own = s.repeat.is_some();
        if !s.input.is_null() {
            let refs = template::validate(&s.input)
                .map_err(|e| invalid(format!("{at}.input"), e.to_string()))?;
            for r in &refs {
                match r {
                    Ref::PreviousOutput if graph.parents[i].len() != 1 => {
                        if from_tasks && i == 0 {
                            return Err(DefinitionError::PreviousOutputInFirstStep);
                        }
                        return Err(invalid(
                            format!("{at}.input"),
                            "`{{previous_output}}` needs exactly one parent in `after`; name the step with `{{steps.ID.output}}`",
                        ));
                    }
                    Ref::Step(id, _) => {
                        let id = StepId::parse(id)
                            .map_err(|m| invalid(format!("{at}.input"), format!("`{id}`: {m}")))?;
                        reachable(i, &id, own).map_err(|m| invalid(format!("{at}.input"), m))?;
                    }
                    _ => {}
                }
            }
        }
        if let Some(w) = &s.when {
            let ids = expr::validate(w, &["steps", "input"])
                .map_err(|e| expr_error(format!("{at}.when"), e))?;
            for id in ids {
                reachable(i, &id, false).map_err(|m| invalid(format!("{at}.when"), m))?;
            }
        }
        if let Some(r) = &s.repeat {
            let ids = expr::validate(&r.until, &["steps", "input", "output", "iteration"])
                .map_err(|e| expr_error(format!("{at}.repeat.until"), e))?;
            for id in ids {
                reachable(i, &id, true).map_err(|m| invalid(format!("{at}.repeat.until"), m))?;
            }
        }
    }
    Ok(())
}

fn expr_error(field: String, e: ExprError) -> DefinitionError {
    invalid(field, e.to_string())
}

/// Whether a string or key of `v` holds U+0000 (which Postgres cannot
/// store).
pub fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(contains_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// Where in `v` (a path below `at`, e.g. `tasks[1].input.body`) the first
/// string or key holding U+0000 is, if any.
fn nul_path(v: &Value, at: String) -> Option<String> {
    if !contains_nul(v) {
        return None;
    }
    match v {
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| nul_path(x, format!("{at}[{i}]"))),
        Value::Object(o) => o.iter().find_map(|(k, x)| {
            let plain = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let here = if plain {
                format!("{at}.{k}")
            } else {
                // A JSON string, so the path itself never carries a NUL.
                format!("{at}[{}]", Value::String(k.clone()))
            };
            if k.contains('\0') {
                Some(here)
            } else {
                nul_path(x, here)
            }
        }),
        _ => Some(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_guides_content_pipeline_as_a_chain() {
        let def = WorkflowDefinition::parse(&json!({
            "name": "Content Marketing Pipeline",
            "tasks": [
                {"agent": "marketing_content_agent_1_101", "input": {"topic": "AI in healthcare"}},
                {"agent": "marketing_seo_agent_1_102", "input": {"content": "{{previous_output}}"}},
                {"agent": "marketing_social_media_agent_1_103"}
            ]
        }))
        .unwrap();
        assert_eq!(def.steps.len(), 3);
        assert_eq!(def.steps[2].input, json!({}));
        assert_eq!(def.steps[2].id.as_str(), "step_3");
        assert_eq!(def.steps[2].after, vec![StepId::of_task(2)]);
        assert_eq!(def.input, json!({}));
    }

    #[test]
    fn parses_a_graph() {
        let def = WorkflowDefinition::parse(&json!({
            "name": "lead",
            "input": {"lead": "acme"},
            "max_concurrency": 4,
            "steps": [
                {"id": "score", "agent": "scorer", "input": {"lead": "{{input.lead}}"}},
                {"id": "crm", "agent": "crm", "after": ["score"], "when": "steps.score.output.score >= 70"},
                {"id": "nurture", "agent": "mail", "after": ["score"], "when": "steps.score.output.score < 70"},
                {"id": "approval", "after": ["crm"], "wait": {"signal": "approved", "timeout_ms": 60000}},
                {"id": "follow_up", "after": ["nurture"], "sleep_ms": 1000},
                {"id": "proposal", "agent": "writer", "after": ["approval", "follow_up"],
                 "input": {"score": "{{steps.score.output.score}}", "draft": "{{steps.proposal.output}}"},
                 "repeat": {"until": "output.quality >= 8 || iteration >= 3", "max_iterations": 5}}
            ]
        }))
        .unwrap();
        assert_eq!(def.steps.len(), 6);
        assert_eq!(def.max_concurrency, Some(4));
        assert!(matches!(def.steps[3].kind(), StepKind::Wait(w) if w.signal == "approved"));
        assert!(matches!(def.steps[4].kind(), StepKind::Sleep(1000)));
    }

    #[test]
    fn each_graph_mistake_names_its_field() {
        let step = |extra: Value| {
            let mut s = json!({"id": "b", "agent": "x", "after": ["a"]});
            s.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({"name": "g", "steps": [{"id": "a", "agent": "x"}, s]})
        };
        let cases = [
            (step(json!({"id": "B"})), "steps[1].id"),
            (step(json!({"id": "a"})), "steps[1].id"),
            (step(json!({"after": ["zz"]})), "steps[1].after"),
            (step(json!({"after": ["a", "a"]})), "steps[1].after[1]"),
            (step(json!({"after": ["b"]})), "steps[1].after"),
            (step(json!({"sleep_ms": 5})), "steps[1]"),
            (step(json!({"when": "steps.a.output >"})), "steps[1].when"),
            (step(json!({"when": "secret"})), "steps[1].when"),
            (step(json!({"when": "steps.b.output.x"})), "steps[1].when"),
            (
                step(json!({"input": "{{steps.c.output}}"})),
                "steps[1].input",
            ),
            (
                step(json!({"input": "{{steps.b.output}}"})),
                "steps[1].input",
            ),
            (
                step(json!({"repeat": {"until": "output.ok"}})),
                "steps[1].repeat.max_iterations",
            ),
            (
                step(json!({"repeat": {"until": "output.ok", "max_iterations": 0}})),
                "steps[1].repeat.max_iterations",
            ),
            (
                step(json!({"repeat": {"until": "x", "max_iterations": 2}})),
                "steps[1].repeat.until",
            ),
            (step(json!({"bogus": 1})), "steps[1].bogus"),
        ];
        for (body, field) in cases {
            let e = WorkflowDefinition::parse(&body).expect_err(&body.to_string());
            assert_eq!(e.field().as_deref(), Some(field), "{body}: {e}");
        }
        // A cycle through several steps.
        let cyc = json!({"name": "g", "steps": [
            {"id": "a", "agent": "x", "after": ["c"]},
            {"id": "b", "agent": "x", "after": ["a"]},
            {"id": "c", "agent": "x", "after": ["b"]}
        ]});
        let e = WorkflowDefinition::parse(&cyc).unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
        // `previous_output` with two parents.
        let two = json!({"name": "g", "steps": [
            {"id": "a", "agent": "x"}, {"id": "b", "agent": "x"},
            {"id": "c", "agent": "x", "after": ["a", "b"], "input": "{{previous_output}}"}
        ]});
        assert_eq!(
            WorkflowDefinition::parse(&two)
                .unwrap_err()
                .field()
                .as_deref(),
            Some("steps[2].input")
        );
        // A wait with an input; both lists.
        assert!(
            WorkflowDefinition::parse(&json!({"name": "g", "steps": [
                {"id": "a", "wait": {"signal": "ok"}, "input": {}}
            ]}))
            .is_err()
        );
        assert!(
            WorkflowDefinition::parse(&json!({"name": "g", "steps": [{"id": "a", "agent": "x"}],
                "tasks": [{"agent": "x"}]}))
            .is_err()
        );
    }

    #[test]
    fn each_mistake_has_its_own_error() {
        let cases = [
            (json!([]), DefinitionError::NotAnObject),
            (json!({"tasks": []}), DefinitionError::Missing("name")),
            (
                json!({"name": "  ", "tasks": []}),
                DefinitionError::EmptyName,
            ),
            (json!({"name": "x"}), DefinitionError::NoSteps),
            (json!({"name": "x", "tasks": []}), DefinitionError::NoTasks),
            (
                json!({"name": "x", "tasks": [{"input": {}}]}),
                DefinitionError::BadAgent {
                    index: 0,
                    message: "is required".into(),
                },
            ),
            (
                json!({"name": "x", "tasks": [{"agent": "a"}], "extra": 1}),
                DefinitionError::UnknownField("extra".into()),
            ),
            (
                json!({"name": "x", "tasks": [{"agent": "a"}], "timeout_ms": 0}),
                DefinitionError::BadTimeout("timeout_ms".into()),
            ),
            (
                json!({"name": "x", "tasks": [{"agent": "a", "timeout_ms": "5s"}]}),
                DefinitionError::BadTimeout("tasks[0].timeout_ms".into()),
            ),
            (
                json!({"name": "x", "tasks": [{"agent": "a", "timeout_ms": 1.5}]}),
                DefinitionError::BadTimeout("tasks[0].timeout_ms".into()),
            ),
            (
                json!({"name": "x", "tasks": [{"agent": "a", "input": "{{previous_output}}"}]}),
                DefinitionError::PreviousOutputInFirstStep,
            ),
            (
                json!({"name": "a\u{0}b", "tasks": [{"agent": "a"}]}),
                DefinitionError::NulCharacter("name".into()),
            ),
            (
                json!({"name": "x", "tasks": [{"agent": "a"}, {"agent": "b", "input": {"body": "\u{0}"}}]}),
                DefinitionError::NulCharacter("tasks[1].input.body".into()),
            ),
            (
                json!({"name": "x", "tasks": [{"agent": "a", "input": {"list": [1, {"a b": ["ok", "x\u{0}"]}]}}]}),
                DefinitionError::NulCharacter(r#"tasks[0].input.list[1]["a b"][1]"#.into()),
            ),
            (
                json!({"name": "x", "tasks": [{"agent": "a", "input": {"k\u{0}": 1}}]}),
                DefinitionError::NulCharacter(r#"tasks[0].input["k\u0000"]"#.into()),
            ),
            (
                json!({"name": "x", "tasks": [{"agent": "a", "input": "\u{0}"}]}),
                DefinitionError::NulCharacter("tasks[0].input".into()),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(WorkflowDefinition::parse(&body), Err(want), "{body}");
        }
        assert!(matches!(
            WorkflowDefinition::parse(&json!({"name": "x", "tasks": [{"agent": "a/b"}]})),
            Err(DefinitionError::BadAgent { index: 0, .. })
        ));
        assert!(matches!(
            WorkflowDefinition::parse(&json!({"name": 5, "tasks": [{"agent": "a"}]})),
            Err(DefinitionError::WrongType { .. })
        ));
    }
}
