//! Step input templates. The only placeholder is `{{previous_output}}`:
//! a string that is exactly the placeholder becomes the previous step's whole
//! output (any JSON value); inside a longer string it is replaced by the
//! output's text (a string output as is, anything else as compact JSON).

use serde_json::Value;

pub const PREVIOUS_OUTPUT: &str = "previous_output";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder `{{{{{0}}}}}`: the only placeholder is `{{{{previous_output}}}}`")]
    UnknownPlaceholder(String),
    #[error("unclosed `{{{{` in a template string")]
    Unclosed,
}

/// Checks every string in `input` for placeholders; returns whether
/// `{{previous_output}}` is used anywhere.
pub fn validate(input: &Value) -> Result<bool, TemplateError> {
    let mut uses_previous = false;
    visit_strings(input, &mut |s| {
        for part in placeholders(s) {
            let name = part?;
            if name != PREVIOUS_OUTPUT {
                return Err(TemplateError::UnknownPlaceholder(name.to_owned()));
            }
            uses_previous = true;
        }
        Ok(())
    })?;
    Ok(uses_previous)
}

/// Renders `input` with `previous` as the previous step's output. The input
/// must have passed [`validate`]; anything unrecognised is left untouched.
pub fn render(input: &Value, previous: &Value) -> Value {
    match input {
        Value::String(s) => render_string(s, previous),
        Value::Array(items) => Value::Array(items.iter().map(|v| render(v, previous)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render(v, previous)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn render_string(s: &str, previous: &Value) -> Value {
    if !s.contains("{{") {
        return Value::String(s.to_owned());
    }
    if let Some(name) = whole_placeholder(s)
        && name == PREVIOUS_OUTPUT
    {
        return previous.clone();
    }
    let text = match previous {
        Value::String(t) => t.clone(),
        other => other.to_string(),
    };
    let mut out = String::with_capacity(s.len() + text.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        let name = rest[start + 2..start + 2 + len].trim();
        out.push_str(&rest[..start]);
        if name == PREVIOUS_OUTPUT {
            out.push_str(&text);
        } else {
            out.push_str(&rest[start..start + 4 + len]);
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

fn visit_strings(
    v: &Value,
    f: &mut impl FnMut(&str) -> Result<(), TemplateError>,
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

    #[test]
    fn whole_string_placeholder_passes_the_json_value() {
        let prev = json!({"title": "AI", "words": 900});
        let input = json!({"content": "{{previous_output}}", "keep": [1, "x"]});
        assert_eq!(
            render(&input, &prev),
            json!({"content": {"title": "AI", "words": 900}, "keep": [1, "x"]})
        );
        assert_eq!(render(&json!("{{ previous_output }}"), &prev), prev);
    }

    #[test]
    fn embedded_placeholder_passes_text() {
        assert_eq!(
            render(&json!("Summary: {{previous_output}}!"), &json!("done")),
            json!("Summary: done!")
        );
        assert_eq!(
            render(&json!("got {{previous_output}}"), &json!({"a": 1})),
            json!("got {\"a\":1}")
        );
    }

    #[test]
    fn validation_rejects_unknown_and_unclosed_placeholders() {
        assert_eq!(validate(&json!({"a": "{{previous_output}}"})), Ok(true));
        assert_eq!(validate(&json!({"a": "plain", "b": [1, 2]})), Ok(false));
        assert_eq!(
            validate(&json!({"a": "{{secrets}}"})),
            Err(TemplateError::UnknownPlaceholder("secrets".into()))
        );
        assert_eq!(
            validate(&json!(["x {{previous_output"])),
            Err(TemplateError::Unclosed)
        );
    }
}
