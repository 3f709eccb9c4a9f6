//! What a user submits: a named list of tasks. Parsed and validated once, at
//! the API edge, so that everything written to the log is well formed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::AgentName;
use crate::template::{self, TemplateError};

/// One step: call `agent` with `input` (a template, see [`crate::template`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDef {
    pub agent: AgentName,
    #[serde(default)]
    pub input: Value,
    /// Overrides the agent's per-attempt timeout for this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowDefinition {
    pub name: String,
    pub tasks: Vec<TaskDef>,
    /// A whole run's deadline, counted from each (re)start: a step still
    /// running when it passes fails with `workflow_timeout`.
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    #[error("body must be a JSON object")]
    NotAnObject,
    #[error("`{0}` is required")]
    Missing(&'static str),
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
}

impl WorkflowDefinition {
    pub const MAX_NAME_CHARS: usize = 255;
    pub const MAX_TASKS: usize = 100;
    /// One day: longer "timeouts" are almost always a unit mistake.
    pub const MAX_TIMEOUT_MS: u64 = 86_400_000;

    /// Validates a request body field by field, so each mistake gets its own
    /// message instead of a generic deserialisation error.
    pub fn parse(body: &Value) -> Result<Self, DefinitionError> {
        let obj = body.as_object().ok_or(DefinitionError::NotAnObject)?;
        if let Some(k) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "name" | "tasks" | "timeout_ms"))
        {
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
        let tasks = match obj.get("tasks") {
            None | Some(Value::Null) => return Err(DefinitionError::Missing("tasks")),
            Some(Value::Array(a)) => a,
            Some(_) => {
                return Err(DefinitionError::WrongType {
                    field: "tasks".into(),
                    expected: "an array",
                });
            }
        };
        if tasks.is_empty() {
            return Err(DefinitionError::NoTasks);
        }
        if tasks.len() > Self::MAX_TASKS {
            return Err(DefinitionError::TooManyTasks);
        }
        let tasks = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| parse_task(i, t))
            .collect::<Result<Vec<_>, _>>()?;
        let timeout_ms = parse_timeout(obj.get("timeout_ms"), "timeout_ms")?;
        Ok(Self {
            name,
            tasks,
            timeout_ms,
        })
    }
}

fn parse_timeout(v: Option<&Value>, field: &str) -> Result<Option<u64>, DefinitionError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            // JSON has one number type: `5000.0` is the integer 5000 (as
            // JSON Schema's `integer` says), not a fraction.
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 1.0 && *f <= u64::MAX as f64)
                    .map(|f| f as u64)
            })
            .filter(|ms| (1..=WorkflowDefinition::MAX_TIMEOUT_MS).contains(ms))
            .map(Some)
            .ok_or_else(|| DefinitionError::BadTimeout(field.to_owned())),
    }
}

fn parse_task(index: usize, t: &Value) -> Result<TaskDef, DefinitionError> {
    let obj = t.as_object().ok_or_else(|| DefinitionError::WrongType {
        field: format!("tasks[{index}]"),
        expected: "an object with `agent` and `input`",
    })?;
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "agent" | "input" | "timeout_ms"))
    {
        return Err(DefinitionError::UnknownField(format!("tasks[{index}].{k}")));
    }
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
    let uses_previous = template::validate(&input)
        .map_err(|source| DefinitionError::BadTemplate { index, source })?;
    if index == 0 && uses_previous {
        return Err(DefinitionError::PreviousOutputInFirstStep);
    }
    let timeout_ms = parse_timeout(obj.get("timeout_ms"), &format!("tasks[{index}].timeout_ms"))?;
    Ok(TaskDef {
        agent,
        input,
        timeout_ms,
    })
}

/// Where in `v` (a path below `at`, e.g. `tasks[1].input.body`) the first
/// string or key holding U+0000 is, if any.
fn nul_path(v: &Value, at: String) -> Option<String> {
    fn has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(a) => a.iter().any(has_nul),
            Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    if !has_nul(v) {
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
    fn parses_the_guides_content_pipeline() {
        let def = WorkflowDefinition::parse(&json!({
            "name": "Content Marketing Pipeline",
            "tasks": [
                {"agent": "marketing_content_agent_1_101", "input": {"topic": "AI in healthcare"}},
                {"agent": "marketing_seo_agent_1_102", "input": {"content": "{{previous_output}}"}},
                {"agent": "marketing_social_media_agent_1_103"}
            ]
        }))
        .unwrap();
        assert_eq!(def.tasks.len(), 3);
        assert_eq!(def.tasks[2].input, json!({}));
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
            (json!({"name": "x"}), DefinitionError::Missing("tasks")),
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
