"""schemathesis hooks for scripts/fuzz.sh (loaded through SCHEMATHESIS_HOOKS).

One hook, and only to take state out of one check: the same Idempotency-Key
with another definition is rightly a 422 (`idempotency_key_reused`, as the
IETF Idempotency-Key draft says), but schemathesis reuses keys across
unrelated generated bodies and then calls that 422 a schema-valid request
rejected. A valid key is replaced by one derived from the key *and* the
body: the same request keeps the same key (so retries are still exercised),
another body gets another key. Invalid keys are left alone, so negative
tests still send them.
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
