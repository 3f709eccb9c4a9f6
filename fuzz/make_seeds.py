#!/usr/bin/env python3
"""Writes the committed seed corpora in fuzz/corpus/<target>/: valid inputs
plus the adversarial cases (deep JSON, huge strings, 100+ tasks, every JSON
type in every field, invalid UTF-8, duplicate keys, NUL, lone surrogates).
Run it from anywhere; it rewrites only the seed-*.json files it owns."""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
VALUES = [None, True, False, 0, -1, 1.5, 1e308, 18446744073709551616, "", "x", [], {}, [1, "a"], {"a": 1}]


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def j(v):
    return json.dumps(v, ensure_ascii=False)


deep = "[" * 10_000 + "]" * 10_000
deep_obj = '{"a":' * 10_000 + "1" + "}" * 10_000
huge = "x" * 20_000

# -- definition: a POST /workflows/create body
ok = {
    "name": "Content pipeline",
    "tasks": [
        {"agent": "writer", "input": {"topic": "AI"}, "timeout_ms": 5000},
        {"agent": "seo.v2", "input": {"content": "{{previous_output}}", "n": [1, 2.5, None, True]}},
        {"agent": "social_media-1", "input": "Summary: {{ previous_output }}!"},
    ],
    "timeout_ms": 86_400_000,
}
write("definition", "ok.json", j(ok))
write("definition", "minimal.json", j({"name": "x", "tasks": [{"agent": "a"}]}))
write("definition", "100-tasks.json", j({"name": "many", "tasks": [{"agent": f"a{i}"} for i in range(100)]}))
write("definition", "101-tasks.json", j({"name": "too many", "tasks": [{"agent": "a"}] * 101}))
write("definition", "deep-input.json", '{"name":"d","tasks":[{"agent":"a","input":' + deep + "}]}")
write("definition", "deep-body.json", deep_obj)
write("definition", "huge-name.json", j({"name": huge, "tasks": [{"agent": "a"}]}))
write("definition", "huge-input.json", j({"name": "h", "tasks": [{"agent": "a", "input": huge}]}))
write("definition", "name-255.json", j({"name": "é" * 255, "tasks": [{"agent": "a"}]}))
write("definition", "name-256.json", j({"name": "é" * 256, "tasks": [{"agent": "a"}]}))
write("definition", "agent-128.json", j({"name": "a", "tasks": [{"agent": "a" * 128}]}))
write("definition", "agent-129.json", j({"name": "a", "tasks": [{"agent": "a" * 129}]}))
write("definition", "blank-name.json", j({"name": " \u3000\t", "tasks": [{"agent": "a"}]}))
write("definition", "duplicate-keys.json", '{"name":"a","name":"b","tasks":[],"tasks":[{"agent":"a","agent":"b"}]}')
write("definition", "nul.json", '{"name":"a\\u0000b","tasks":[{"agent":"a\\u0000","input":{"\\u0000":"\\u0000"}}]}')
write("definition", "raw-nul.json", b'{"name":"a\x00b","tasks":[{"agent":"a"}]}')
write("definition", "lone-surrogate.json", '{"name":"\\ud800","tasks":[{"agent":"a","input":"\\udfff"}]}')
write("definition", "surrogate-bytes.json", b'{"name":"\xed\xa0\x80","tasks":[{"agent":"a"}]}')
write("definition", "invalid-utf8.json", b'{"name":"\xff\xfe","tasks":[{"agent":"\xc3"}]}')
write("definition", "unknown-placeholder.json", j({"name": "p", "tasks": [{"agent": "a", "input": {"{{secret}}": "{{x"}}]}))
write("definition", "previous-in-step-1.json", j({"name": "p", "tasks": [{"agent": "a", "input": "{{previous_output}}"}]}))
write("definition", "float-timeouts.json", j({"name": "t", "tasks": [{"agent": "a", "timeout_ms": 5000.0}], "timeout_ms": 1e3}))
write("definition", "big-numbers.json", '{"name":"n","tasks":[{"agent":"a","timeout_ms":1e400}],"timeout_ms":-0}')
write("definition", "unknown-field.json", j({"name": "u", "tasks": [{"agent": "a", "extra": 1}], "more": 2}))
for i, v in enumerate(VALUES):
    write("definition", f"type-{i}-body.json", j(v))
    write("definition", f"type-{i}-name.json", j({"name": v, "tasks": [{"agent": "a"}]}))
    write("definition", f"type-{i}-tasks.json", j({"name": "t", "tasks": v}))
    write("definition", f"type-{i}-task.json", j({"name": "t", "tasks": [v]}))
    write("definition", f"type-{i}-agent.json", j({"name": "t", "tasks": [{"agent": v}]}))
    write("definition", f"type-{i}-input.json", j({"name": "t", "tasks": [{"agent": "a"}, {"agent": "b", "input": v}]}))
    write("definition", f"type-{i}-task-timeout.json", j({"name": "t", "tasks": [{"agent": "a", "timeout_ms": v}]}))
    write("definition", f"type-{i}-timeout.json", j({"name": "t", "tasks": [{"agent": "a"}], "timeout_ms": v}))

# -- template: the step input, a NUL byte, the previous step's output
def tpl(name, inp, prev):
    data = inp if isinstance(inp, bytes) else inp.encode("utf-8", "surrogatepass")
    p = prev if isinstance(prev, bytes) else prev.encode("utf-8", "surrogatepass")
    write("template", name, data + b"\x00" + p)


tpl("whole.json", j({"content": "{{previous_output}}", "keep": [1, "x"]}), j({"title": "AI", "words": 900}))
tpl("embedded.json", j("Summary: {{ previous_output }}! and {{previous_output}}"), j("done"))
tpl("embedded-object.json", j(["got {{previous_output}}"]), j({"a": [1, None]}))
tpl("nested-braces.json", j("{{{{previous_output}}}} {{ {{previous_output}} }}"), j("{{previous_output}}"))
tpl("unclosed.json", j({"a": "x {{previous_output"}), "1")
tpl("unknown.json", j({"{{secrets}}": 1}), "null")
tpl("key.json", j({"{{previous_output}}": "v"}), j("k"))
tpl("deep-input.json", deep, "1")
tpl("deep-previous.json", j("{{previous_output}}"), deep)
tpl("huge.json", j("{{previous_output}}" + huge), j(huge))
tpl("nul.json", '"a\\u0000{{previous_output}}"', '"\\u0000"')
tpl("surrogates.json", '"\\ud800{{previous_output}}"', '"\\udfff"')
tpl("invalid-utf8.json", b'"\xff{{previous_output}}"', b'"\xc3"')
tpl("duplicate-keys.json", '{"a":"{{previous_output}}","a":"x"}', '{"b":1,"b":2}')
for i, v in enumerate(VALUES):
    tpl(f"type-{i}.json", j({"v": v, "t": "{{previous_output}}", "s": "in {{previous_output}}"}), j(v))

# -- record: a Kafka message value
WID = "01a229d7-8211-76e2-917f-8381e2dd335f"
E1, E2 = "9b2f4c1e-2d7a-4e55-8a52-0e5c8f1f2a01", "9b2f4c1e-2d7a-4e55-8a52-0e5c8f1f2a02"


def rec(event_type, data, seq=1, prev=None, **extra):
    r = {
        "event_id": E1 if seq == 1 else E2,
        "event_type": event_type,
        "workflow_id": WID,
        "user_id": 42,
        "seq": seq,
        "timestamp": "2026-11-30T00:25:30.692238Z",
        "version": 1,
        "metadata": {"requested_by": 42, "node_id": "n1"},
        "data": data,
    }
    if prev:
        r["prev_event_id"] = prev
    r.update(extra)
    return r


err = {"kind": "server_error", "message": "HTTP 503", "http_status": 503}
records = {
    "created": rec("workflow.created", {"name": "x", "tasks": [{"agent": "a", "input": {"t": "{{previous_output}}"}}], "timeout_ms": 1000}),
    "started": rec("workflow.started", {"from_step": 1}, 2, E1),
    "executed": rec("agent.executed", {"step": 1, "agent": "a", "output": {"r": [1, 2.5, None]}, "attempts": 1, "duration_ms": 12}, 2, E1),
    "step-failed": rec("step.failed", {"step": 1, "agent": "a", "error": err, "attempts": 3, "duration_ms": 9}, 2, E1),
    "completed": rec("workflow.completed", {}, 2, E1, metadata={"task_count": 1, "duration_seconds": 0.5, "agents_used": ["a"]}),
    "failed": rec("workflow.failed", {"step": 1, "agent": "a", "error": {"kind": "workflow_timeout", "message": "m"}}, 2, E1),
    "cancel-requested": rec("workflow.cancel_requested", {}, 1, E1),
    "cancelled": rec("workflow.cancelled", {}, 2, E1),
    "unknown-type": rec("workflow.paused", {}),
    "version-2": rec("workflow.completed", {}, version=2),
    "seq-max": rec("workflow.started", {"from_step": 4294967295}, 18446744073709551615, E1),
    "step-zero": rec("agent.executed", {"step": 0, "agent": "a", "output": None, "attempts": 0, "duration_ms": 0}, 2, E1),
    "nul": rec("workflow.created", {"name": "a\u0000", "tasks": [{"agent": "a", "input": "\u0000"}]}),
    "huge-output": rec("agent.executed", {"step": 1, "agent": "a", "output": huge, "attempts": 1, "duration_ms": 1}, 2, E1),
    "101-tasks": rec("workflow.created", {"name": "m", "tasks": [{"agent": "a"}] * 101}),
    "extra-field": rec("workflow.started", {"from_step": 1, "x": 1}, 2, E1),
    "bad-agent": rec("agent.executed", {"step": 1, "agent": "a/b", "output": 1, "attempts": 1, "duration_ms": 1}, 2, E1),
    "bad-timestamp": rec("workflow.completed", {}, timestamp="2026-13-40T99:00:00Z"),
}
for name, r in records.items():
    write("record", name + ".json", j(r))
write("record", "deep-output.json", j(records["executed"]).replace('{"r": [1, 2.5, null]}', deep))
write("record", "duplicate-keys.json", j(records["created"])[:-1] + ', "seq": 7, "data": {"from_step": 1}}')
write("record", "surrogates.json", j(records["created"]).replace('"x"', '"\\ud800"'))
write("record", "invalid-utf8.json", j(records["created"]).encode().replace(b'"x"', b'"\xff"'))
for i, v in enumerate(VALUES):
    for field in ["event_id", "event_type", "workflow_id", "user_id", "seq", "prev_event_id", "timestamp", "version", "metadata", "data"]:
        r = dict(records["executed"])
        r[field] = v
        write("record", f"type-{i}-{field}.json", j(r))
    r = json.loads(j(records["executed"]))
    r["data"]["output"] = v
    write("record", f"type-{i}-output.json", j(r))
