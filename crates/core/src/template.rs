//! Step input templates. A placeholder is `{{name}}`, where name is one of:
//!
//! - `previous_output`: the output of the step's only parent;
//! - `steps.ID.output`, `steps.ID.output.PATH`: an ancestor's output (for a
//!   step that repeats, its own id names its last iteration's output);
//! - `input`, `input.PATH`: the workflow's input;
//! - `iteration`: the iteration this call is (1 for the first).
//!
//! `PATH` is dot-separated keys (a number indexes an array). A string that
//! is exactly one placeholder becomes its whole JSON value; inside a longer
//! string a placeholder is replaced by its text (a string as is, anything
//! else as compact JSON). A path that leads nowhere is `null`.

use serde_json::Value;

pub const PREVIOUS_OUTPUT: &str = "previous_output";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unknown placeholder `{{{{{0}}}}}`: placeholders are `{{{{previous_output}}}}`, `{{{{steps.ID.output}}}}`, `{{{{input}}}}` and `{{{{iteration}}}}` (with `.path` after `output` or `input`)"
    )]
    UnknownPlaceholder(String),
    #[error("unclosed `{{{{` in a template string")]
    Unclosed,
}

/// What a placeholder refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref<'a> {
    PreviousOutput,
    /// `steps.ID.output[.path]`: the step id and the path after `output`.
    Step(&'a str, Vec<&'a str>),
    Input(Vec<&'a str>),
    Iteration,
}

/// Parses a placeholder's name.
pub fn parse_ref(name: &str) -> Option<Ref<'_>> {
    let mut parts = name.split('.');
    let first = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    if rest.iter().any(|p| p.is_empty()) {
        return None;
    }
    match (first, rest.as_slice()) {
        (PREVIOUS_OUTPUT, []) => Some(Ref::PreviousOutput),
        ("iteration", []) => Some(Ref::Iteration),
        ("input", path) => Some(Ref::Input(path.to_vec())),
        ("steps", [id, "output", path @ ..]) => Some(Ref::Step(id, path.to_vec())),
        _ => None,
    }
}

/// Checks every string in `input` for placeholders; returns what they refer
/// to.
pub fn validate(input: &Value) -> Result<Vec<Ref<'_>>, TemplateError> {
    let mut refs = Vec::new();
    visit_strings(input, &mut |s| {
        for part in placeholders(s) {
            let name = part?;
            refs.push(
                parse_ref(name)
                    .ok_or_else(|| TemplateError::UnknownPlaceholder(name.to_owned()))?,
            );
        }
        Ok(())
    })?;
    Ok(refs)
}

/// Follows `path` into `v` (`null` where it leads nowhere).
pub fn lookup(v: &Value, path: &[&str]) -> Value {
    let mut at = v;
    for key in path {
        at = match at {
            Value::Object(m) => match m.get(*key) {
                Some(x) => x,
                None => return Value::Null,
            },
            Value::Array(a) => match key.parse::<usize>().ok().and_then(|i| a.get(i)) {
                Some(x) => x,
                None => return Value::Null,
            },
            _ => return Value::Null,
        };
    }
    at.clone()
}

/// Renders `input`, asking `resolve` for each placeholder's value. The
/// input must have passed [`validate`]; anything unrecognised is left
/// untouched.
pub fn render(input: &Value, resolve: &dyn Fn(&Ref<'_>) -> Value) -> Value {
    match input {
        Value::String(s) => render_string(s, resolve),
        Value::Array(items) => Value::Array(items.iter().map(|v| render(v, resolve)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render(v, resolve)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn render_string(s: &str, resolve: &dyn Fn(&Ref<'_>) -> Value) -> Value {
    if !s.contains("{{") {
        return Value::String(s.to_owned());
    }
    if let Some(r) = whole_placeholder(s).and_then(parse_ref) {
        return resolve(&r);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        let name = rest[start + 2..start + 2 + len].trim();
        out.push_str(&rest[..start]);
        match parse_ref(name) {
            Some(r) => match resolve(&r) {
                Value::String(t) => out.push_str(&t),
                other => out.push_str(&other.to_string()),
            },
            None => out.push_str(&rest[start..start + 4 + len]),
        }
        rest = &rest[start + 4 + len..];
    }
    out.push_str(rest);
    Value::String(out)
}

fn whole_placeholder(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then(|| inner.trim())
}

fn placeholders(s: &str) -> impl Iterator<Item = Result<&str, TemplateError>> {
    let mut rest = s;
    std::iter::from_fn(move || {
        let start = rest.find("{{")?;
        match rest[start + 2..].find("}}") {
            Some(len) => {
                let name = rest[start + 2..start + 2 + len].trim();
                rest = &rest[start + 4 + len..];
                Some(Ok(name))
            }
            None => {
                rest = "";
                Some(Err(TemplateError::Unclosed))
            }
        }
    })
}

fn visit_strings<'a>(
    v: &'a Value,
    f: &mut impl FnMut(&'a str) -> Result<(), TemplateError>,
) -> Result<(), TemplateError> {
    match v {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().try_for_each(|i| visit_strings(i, f)),
        Value::Object(map) => {
            for (k, v) in map {
                f(k)?;
                visit_strings(v, f)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(r: &Ref<'_>) -> Value {
        let prev = json!({"title": "AI", "words": 900});
        match r {
            Ref::PreviousOutput => prev,
            Ref::Step(id, path) if *id == "score" => lookup(&json!({"score": 82}), path),
            Ref::Step(..) => Value::Null,
            Ref::Input(path) => lookup(&json!({"topic": "AI", "tags": ["a", "b"]}), path),
            Ref::Iteration => json!(2),
        }
    }

    #[test]
    fn whole_string_placeholder_passes_the_json_value() {
        let input = json!({"content": "{{previous_output}}", "keep": [1, "x"]});
        assert_eq!(
            render(&input, &ctx),
            json!({"content": {"title": "AI", "words": 900}, "keep": [1, "x"]})
        );
        assert_eq!(
            render(&json!("{{ previous_output }}"), &ctx),
            json!({"title": "AI", "words": 900})
        );
        assert_eq!(
            render(&json!("{{steps.score.output.score}}"), &ctx),
            json!(82)
        );
        assert_eq!(render(&json!("{{input.tags.1}}"), &ctx), json!("b"));
        assert_eq!(render(&json!("{{input.nope.deeper}}"), &ctx), Value::Null);
        assert_eq!(render(&json!("{{iteration}}"), &ctx), json!(2));
    }

    #[test]
    fn embedded_placeholder_passes_text() {
        assert_eq!(
            render(
                &json!("Summary of {{input.topic}}: {{previous_output}}!"),
                &ctx
            ),
            json!("Summary of AI: {\"title\":\"AI\",\"words\":900}!")
        );
        assert_eq!(
            render(
                &json!("score {{steps.score.output.score}}, try {{iteration}}"),
                &ctx
            ),
            json!("score 82, try 2")
        );
    }

    #[test]
    fn validation_names_what_each_placeholder_refers_to() {
        assert_eq!(
            validate(&json!({"a": "{{previous_output}}", "b": "{{steps.x.output.y.0}}"})),
            Ok(vec![Ref::PreviousOutput, Ref::Step("x", vec!["y", "0"])])
        );
        assert_eq!(validate(&json!({"a": "plain", "b": [1, 2]})), Ok(vec![]));
        assert_eq!(
            validate(&json!({"a": "{{secrets}}"})),
            Err(TemplateError::UnknownPlaceholder("secrets".into()))
        );
        for bad in [
            "steps.x",
            "steps.x.input",
            "steps..output",
            "input.",
            "iteration.x",
        ] {
            assert_eq!(
                validate(&json!(format!("{{{{{bad}}}}}"))),
                Err(TemplateError::UnknownPlaceholder(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            validate(&json!(["x {{previous_output"])),
            Err(TemplateError::Unclosed)
        );
    }
}
