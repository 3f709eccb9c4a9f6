-- Projections of the event log. Everything here can be rebuilt from the log:
-- truncate and replay from offset 0.

CREATE TABLE users (
    id          BIGINT PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The guide's table (§2.2), with typed columns and what the read API needs.
CREATE TABLE workflows (
    id           UUID PRIMARY KEY,
    name         VARCHAR(255) NOT NULL,
    tasks        JSONB NOT NULL,                 -- [{agent, input}]
    status       VARCHAR(50) NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    results      JSONB NOT NULL DEFAULT '[]',    -- [{step, output}] of completed steps
    user_id      BIGINT NOT NULL REFERENCES users(id),
    created_at   TIMESTAMPTZ NOT NULL,
    started_at   TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL,
    seq          BIGINT NOT NULL,                -- last applied record's seq
    last_event_id UUID NOT NULL,                 -- and its event_id (the next record's parent)
    runs         INT NOT NULL DEFAULT 0,
    error        JSONB                           -- the failing step's error
);

CREATE INDEX workflows_by_user ON workflows (user_id, created_at DESC, id DESC);
CREATE INDEX workflows_by_time ON workflows (created_at DESC, id DESC);
CREATE INDEX workflows_unfinished ON workflows (status) WHERE status IN ('pending', 'running');

-- Per-step state; outputs live in workflows.results.
CREATE TABLE workflow_steps (
    workflow_id  UUID NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    step         INT NOT NULL CHECK (step >= 1),
    agent        VARCHAR(128) NOT NULL,
    status       VARCHAR(20) NOT NULL
                 CHECK (status IN ('pending', 'completed', 'failed', 'skipped')),
    attempts     INT NOT NULL DEFAULT 0,
    duration_ms  BIGINT NOT NULL DEFAULT 0,
    error        JSONB,
    finished_at  TIMESTAMPTZ,
    PRIMARY KEY (workflow_id, step)
);

-- Where the projector is in each partition: the next offset to apply.
-- Written in the same transaction as the rows above.
CREATE TABLE projector_offsets (
    topic        TEXT NOT NULL,
    partition    INT NOT NULL,
    next_offset  BIGINT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
