//! Conditions: `when` on a step and `repeat.until` on a loop, written in CEL
//! (the Common Expression Language, the `cel` crate). CEL always ends — it
//! has no loops or recursion of its own — and it is what Hatchet and
//! Inngest users already write.
//!
//! An expression sees `input` (the workflow's input) and `steps` (each step
//! by id: `output`, `status`, `iteration`); `until` also sees `output` (the
//! iteration's output) and `iteration`. Each evaluation's result is
//! recorded in the log (`condition.evaluated`), so a replay never evaluates
//! again and a later version of this crate cannot change history.

use serde_json::Value;

use crate::definition::StepId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("is not a valid expression: {0}")]
    Syntax(String),
    #[error("uses `{0}`, which is not defined here (it may use {1})")]
    UnknownVariable(String, String),
    #[error("is longer than {max} characters", max = MAX_LEN)]
    TooLong,
}

pub const MAX_LEN: usize = 2048;

/// Checks `source` compiles and uses only `allowed` variables; returns the
/// step ids it names (`steps.ID`).
pub fn validate(source: &str, allowed: &[&str]) -> Result<Vec<StepId>, ExprError> {
    if source.len() > MAX_LEN {
        return Err(ExprError::TooLong);
    }
    let program = compile(source)?;
    let refs = program.references();
    if let Some(v) = refs.variables().into_iter().find(|v| !allowed.contains(v)) {
        let names: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
        return Err(ExprError::UnknownVariable(v.to_owned(), names.join(", ")));
    }
    Ok(step_ids(source))
}

fn compile(source: &str) -> Result<cel::Program, ExprError> {
    // The parser reports a panic of its own as an error; never trust input
    // to keep it from unwinding through here.
    std::panic::catch_unwind(|| cel::Program::compile(source))
        .map_err(|_| ExprError::Syntax("the expression could not be parsed".into()))?
        .map_err(|e| ExprError::Syntax(e.to_string().lines().next().unwrap_or("").to_owned()))
}

/// The step ids named as `steps.ID` (or `steps["ID"]`) in `source`.
fn step_ids(source: &str) -> Vec<StepId> {
    let mut ids = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("steps") {
        let before_ok = source.len() - rest.len() == 0 || {
            let prev = source.as_bytes()[source.len() - rest.len() + at - 1];
            !(prev.is_ascii_alphanumeric() || prev == b'_' || prev == b'.')
        };
        let after = &rest[at + 5..];
        rest = after;
        if !before_ok {
            continue;
        }
        let name = if let Some(a) = after.strip_prefix('.') {
            a.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("")
        } else if let Some(a) = after
            .strip_prefix("[\"")
            .or_else(|| after.strip_prefix("['"))
        {
            a.split(['"', '\'']).next().unwrap_or("")
        } else {
            continue;
        };
        if let Ok(id) = StepId::parse(name)
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    ids
}

/// Evaluates `source` with `vars` (name, JSON value): `Ok(bool)`, or why it
/// has no boolean value.
pub fn evaluate(source: &str, vars: &[(&str, &Value)]) -> Result<bool, String> {
    let program = compile(source).map_err(|e| e.to_string())?;
    let mut ctx = cel::Context::default();
    for (name, value) in vars {
        ctx.add_variable_from_value(*name, to_cel(value));
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| program.execute(&ctx))) {
        Ok(Ok(cel::Value::Bool(b))) => Ok(b),
        Ok(Ok(other)) => Err(format!(
            "the expression's value is {:?}, not a boolean",
            other.type_of()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the expression could not be evaluated".into()),
    }
}

/// A JSON value as CEL sees it. Whole numbers are CEL `int`s (CEL does not
/// mix `int` and `uint` in arithmetic, and people write `score + 20`).
fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(s.clone().into()),
        Value::Array(a) => a.iter().map(to_cel).collect::<Vec<_>>().into(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| (k.clone(), to_cel(v)))
            .collect::<std::collections::HashMap<_, _>>()
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_over_outputs_and_input() {
        let steps = json!({"score": {"output": {"score": 82.5}, "status": "completed"}});
        let input = json!({"min": 70});
        let vars = [("steps", &steps), ("input", &input)];
        assert_eq!(evaluate("steps.score.output.score >= 70", &vars), Ok(true));
        assert_eq!(
            evaluate("steps.score.output.score >= input.min + 20", &vars),
            Ok(false)
        );
        assert!(evaluate("steps.score.output.missing > 1", &vars).is_err());
        assert!(
            evaluate("1 + 1", &vars)
                .unwrap_err()
                .contains("not a boolean")
        );
    }

    #[test]
    fn validation_names_steps_and_refuses_unknown_variables() {
        let ids = validate(
            "steps.a.output.x > 1 && steps['b_2'].output == 'y' || mysteps.c",
            &["steps", "input", "mysteps"],
        )
        .unwrap();
        assert_eq!(
            ids,
            vec![StepId::parse("a").unwrap(), StepId::parse("b_2").unwrap()]
        );
        assert_eq!(
            validate("secret == 1", &["steps", "input"]),
            Err(ExprError::UnknownVariable(
                "secret".into(),
                "`steps`, `input`".into()
            ))
        );
        assert!(matches!(
            validate("steps.a.output >", &["steps"]),
            Err(ExprError::Syntax(_))
        ));
    }
}
