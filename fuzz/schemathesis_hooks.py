"""schemathesis hooks for scripts/fuzz.sh (loaded through SCHEMATHESIS_HOOKS).

One hook. It takes state out of one check: the same Idempotency-Key
with another definition is rightly a 422 (`idempotency_key_reused`, as the
IETF Idempotency-Key draft says), but schemathesis reuses keys across
unrelated generated bodies and then calls that 422 a schema-valid request
rejected. A valid key is replaced by one derived from the key *and* the
body: the same request keeps the same key (so retries are still exercised),
another body gets another key. Invalid keys are left alone, so negative
tests still send them. And it makes a generated graph obey the rules across
its fields that JSON Schema cannot say (see `_graph`).
"""
import hashlib
import json
import re

import schemathesis

VALID_KEY = re.compile(r"[!-~]{1,255}")


@schemathesis.hook
def before_call(context, case, kwargs):
    # Only requests meant to be valid: editing a negative case makes
    # schemathesis revalidate it and send what it meant to leave out.
    if case.meta is not None and case.meta.generation.mode.is_negative:
        return
    if isinstance(case.body, dict) and isinstance(case.body.get("steps"), list):
        _graph(case.body["steps"])
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() != "idempotency-key":
            continue
        key = headers[name]
        if not isinstance(key, str) or not VALID_KEY.fullmatch(key):
            continue
        body = json.dumps(case.body, sort_keys=True, default=repr)
        digest = hashlib.sha256(f"{key}\0{body}".encode("utf-8", "surrogatepass")).hexdigest()
        headers[name] = "fz-" + digest[:60]


# A graph's rules across fields (unique ids, parents among the steps before,
# one parent for `{{previous_output}}`, CEL that parses, a timeout for a
# wait's default) are more than JSON Schema says: a generated valid-looking
# `steps` list is made into a graph that keeps every field the schema let
# it have, so the server's acceptance of it is what is tested.
STEP_ID = re.compile(r"[a-z0-9_]{1,64}")


def _graph(steps):
    seen = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            continue
        sid = step.get("id")
        if not isinstance(sid, str) or not STEP_ID.fullmatch(sid) or sid in seen:
            sid = f"s{i}"
            step["id"] = sid
        after = step.get("after")
        if isinstance(after, list):
            parents = []
            for p in after:
                if p in seen and p not in parents:
                    parents.append(p)
            step["after"] = parents
        if step.get("when") is not None:
            step["when"] = "true"
        repeat = step.get("repeat")
        if isinstance(repeat, dict):
            repeat["until"] = "iteration >= 1"
        wait = step.get("wait")
        if isinstance(wait, dict) and wait.get("timeout_output") is not None and wait.get("timeout_ms") is None:
            wait["timeout_ms"] = 60000
        if step.get("agent") is None:
            for k in ("input", "repeat", "timeout_ms"):
                step.pop(k, None)
        seen.append(sid)

