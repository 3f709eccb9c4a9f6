-- A change costs what changed (issue 17.3). A workflow's state was a JSON
-- blob of the whole fold (`workflows.state`, and every output again in
-- `results`) rewritten on every change: a loop keeping each iteration's
-- output cost O(n²) bytes, and one blob over Postgres' 1 GB field limit
-- stopped the projection. Now it is kept in rows:
--   * what never changes (definition, input) once, when the workflow is new;
--   * small per-workflow and per-step columns updated in place;
--   * each step output once, in `step_outputs`, when the record that made it
--     is projected; a large one by reference to `outputs`, content-addressed
--     by the SHA-256 of its JSON text (the hash of the log's payload topic),
--     which the audit trail (`workflow_events.record`) references as well.
--
-- Existing rows are not rewritten here: a row with its `state` blob (or,
-- older, only its columns) is still read as before, and the projector writes
-- it in rows at its next change (`in_rows`). `agentflow replay` rebuilds the
-- whole projection in rows.

ALTER TABLE workflows
    ADD COLUMN in_rows BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN definition TEXT,            -- [StepDef], JSON text
    ADD COLUMN input TEXT,                 -- JSON text
    ADD COLUMN max_concurrency INT,
    ADD COLUMN paused BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN commands TEXT NOT NULL DEFAULT '[]',      -- [uuid], JSON text
    ADD COLUMN signal_keys TEXT NOT NULL DEFAULT '[]';  -- JSON text

ALTER TABLE workflow_steps
    ADD COLUMN loop_base INT NOT NULL DEFAULT 0,
    ADD COLUMN until_pending BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN condition BOOLEAN,
    ADD COLUMN skip_reason TEXT,
    ADD COLUMN wait_until TIMESTAMPTZ,
    ADD COLUMN inbox TEXT;                 -- the signal payload, JSON text

CREATE TABLE outputs (
    sha256  TEXT PRIMARY KEY,              -- of `body`, lower-case hex
    body    TEXT NOT NULL                  -- JSON text
);

CREATE TABLE step_outputs (
    workflow_id    UUID NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    step           INT NOT NULL,
    iteration      INT NOT NULL,
    output         TEXT,                   -- JSON text, when small
    output_sha256  TEXT REFERENCES outputs(sha256),  -- else
    PRIMARY KEY (workflow_id, step, iteration),
    CHECK ((output IS NULL) <> (output_sha256 IS NULL))
);

-- An `agent.executed` record whose output is in `outputs`: its `record`
-- carries `data.output_ref` with this hash instead of the output.
ALTER TABLE workflow_events ADD COLUMN output_sha256 TEXT;
