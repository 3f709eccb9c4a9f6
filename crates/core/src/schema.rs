//! The JSON Schema of the log's records, generated from the types that read
//! and write them ([`crate::record`]): `schemas/record.schema.json` is
//! [`record_schema`] as text, and a test fails when the committed file
//! differs (`UPDATE_SCHEMAS=1 cargo nextest run -p agentflow-core --test
//! schema` writes it again).
//!
//! The types give each event's `data` (fields, which are required, bounds
//! and descriptions from their doc comments); this module only lays them out
//! as the envelope reads them: by `event_type` within each `version`.

use std::borrow::Cow;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value, json};

use crate::definition::StepId;
use crate::ids::AgentName;
use crate::record::v1::V1;
use crate::record::{Event, OutputRef, RECORD_VERSION, Wire};

/// The schema's `$id`.
pub const RECORD_SCHEMA_ID: &str = "https://agentflow.dev/schemas/record.schema.json";

/// The document of `schemas/record.schema.json`.
pub fn record_schema() -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    for schema in [
        generator.subschema_for::<Wire>(),
        generator.subschema_for::<Event>(),
        generator.subschema_for::<V1>(),
        generator.subschema_for::<OutputRef>(),
        generator.subschema_for::<CompletedMetadata>(),
        generator.subschema_for::<Empty>(),
    ] {
        debug_assert!(schema.get("$ref").is_some(), "{schema:?}");
    }
    let mut defs = generator.take_definitions(true);
    let mut root = defs.remove("Wire").expect("the envelope's schema");

    let created = Event::Created {
        name: String::new(),
        steps: vec![],
        input: Value::Null,
        timeout_ms: None,
        max_concurrency: None,
    }
    .event_type();
    let completed = Event::Completed.event_type();
    let (v2, v2_types) = by_event_type(defs.remove("Event").expect("Event's schema"));
    let (mut v1, v1_types) = by_event_type(defs.remove("V1").expect("V1's schema"));
    v1["properties"] = json!({"event_type": {"enum": v1_types}});
    v1["description"] =
        "The data of each event type, version 1 (before graphs; read, never written).".into();
    defs.insert("v1".into(), v1);
    defs.insert("v2".into(), v2);

    let props = &mut root["properties"];
    props["event_type"] = json!({
        "enum": v2_types,
        "description": props["event_type"]["description"],
    });
    props["version"] = json!({
        "enum": [1, RECORD_VERSION],
        "description": props["version"]["description"],
    });
    props["data"] = json!({
        "type": "object",
        "description": props["data"]["description"],
    });
    root["allOf"] = json!([
        {"if": is_type(created),
         "then": {"properties": {"seq": {"const": 1}}},
         "else": {"required": ["prev_event_id"]}},
        {"if": is_type(completed),
         "then": {"properties": {"metadata": {"$ref": "#/$defs/CompletedMetadata"}}}},
        {"if": {"properties": {"version": {"const": 1}}},
         "then": {"$ref": "#/$defs/v1"},
         "else": {"$ref": "#/$defs/v2"}}
    ]);
    let mut doc = Map::new();
    doc.insert(
        "$schema".into(),
        "https://json-schema.org/draft/2020-12/schema".into(),
    );
    doc.insert("$id".into(), RECORD_SCHEMA_ID.into());
    doc.extend(root.as_object().expect("an object schema").clone());
    doc.insert("$defs".into(), Value::Object(defs));
    let mut doc = Value::Object(doc);
    no_nulls(&mut doc);
    doc
}

fn is_type(event_type: &str) -> Value {
    json!({"properties": {"event_type": {"const": event_type}}})
}

/// An adjacently tagged enum's schema (one `oneOf` entry per variant: the
/// tag's `const` and the content's schema) as one `if event_type … then
/// data …` per variant, which the envelope applies to itself; and the
/// variants' names.
fn by_event_type(tagged: Value) -> (Value, Vec<String>) {
    let mut rules = vec![];
    let mut names = vec![];
    for variant in tagged["oneOf"].as_array().expect("a tagged enum") {
        let name = variant["properties"]["event_type"]["const"]
            .as_str()
            .expect("a tag");
        let mut data = variant["properties"]
            .get("data")
            .cloned()
            .unwrap_or_else(|| json!({"$ref": "#/$defs/Empty"}));
        if let Some(field) = Event::offloaded_field(name) {
            offloadable(&mut data, field);
        }
        let mut then = json!({"properties": {"data": data}});
        if let Some(doc) = variant.get("description") {
            then["description"] = doc.clone();
        }
        rules.push(json!({"if": is_type(name), "then": then}));
        names.push(name.to_owned());
    }
    (json!({"allOf": rules}), names)
}

/// `field` may be kept out of the record: then `{field}_ref` (an
/// [`OutputRef`]) stands in its place, and exactly one of them is there.
fn offloadable(data: &mut Value, field: &str) {
    let reference = format!("{field}_ref");
    data["properties"][&reference] = json!({"$ref": "#/$defs/OutputRef"});
    if let Some(required) = data["required"].as_array_mut() {
        required.retain(|f| f != field);
    }
    data["oneOf"] = json!([{"required": [field]}, {"required": [reference]}]);
}

/// The writer leaves an absent optional field out rather than writing null:
/// the schema says so (schemars lets `Option` fields be null).
fn no_nulls(schema: &mut Value) {
    match schema {
        Value::Object(m) => {
            if let Some(Value::Array(types)) = m.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let t = types.remove(0);
                    m.insert("type".into(), t);
                }
            }
            for key in ["anyOf", "oneOf"] {
                if let Some(Value::Array(alternatives)) = m.get_mut(key) {
                    let before = alternatives.len();
                    alternatives.retain(|a| *a != json!({"type": "null"}));
                    if before > alternatives.len() && alternatives.len() == 1 {
                        let only = alternatives.remove(0);
                        m.remove(key);
                        if let Value::Object(only) = only {
                            m.extend(only);
                        }
                    }
                }
            }
            m.values_mut().for_each(no_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(no_nulls),
        _ => {}
    }
}

/// The metadata the engine gives `workflow.completed`: the guide's summary
/// of the run. Other keys may be there too.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct CompletedMetadata {
    /// How many steps ran.
    #[schemars(range(min = 1))]
    task_count: u32,
    #[schemars(range(min = 0.0))]
    duration_seconds: f64,
    agents_used: Vec<AgentName>,
}

/// The data of an event without fields: `{}`.
pub(crate) struct Empty;

impl JsonSchema for Empty {
    fn schema_name() -> Cow<'static, str> {
        "Empty".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "object", "maxProperties": 0})
    }
}

impl JsonSchema for AgentName {
    fn schema_name() -> Cow<'static, str> {
        "AgentName".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": format!("^[A-Za-z0-9_.-]{{1,{}}}$", AgentName::MAX_LEN),
        })
    }
}

impl JsonSchema for StepId {
    fn schema_name() -> Cow<'static, str> {
        "StepId".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": format!("^[a-z0-9_]{{1,{}}}$", StepId::MAX_LEN),
            "description": "A step's id; a `tasks` chain's steps are step_1, step_2, ...",
        })
    }
}

/// A signal's name (see [`crate::definition::valid_signal_name`]).
pub(crate) fn signal_name(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "pattern": "^[a-z0-9_.-]{1,64}$"})
}
