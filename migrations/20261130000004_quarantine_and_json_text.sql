-- What an agent says is kept exactly: its outputs and error texts may hold
-- U+0000, which neither `jsonb` nor `text` can hold as a character. They
-- are stored as JSON text (where U+0000 is the six characters `\u0000`) in
-- `text` columns, and parsed back when read.
ALTER TABLE workflows ALTER COLUMN results DROP DEFAULT;
ALTER TABLE workflows
    ALTER COLUMN results TYPE TEXT USING results::text,
    ALTER COLUMN error TYPE TEXT USING error::text;
ALTER TABLE workflows ALTER COLUMN results SET DEFAULT '[]';
ALTER TABLE workflow_steps ALTER COLUMN error TYPE TEXT USING error::text;
ALTER TABLE workflow_events ALTER COLUMN record TYPE TEXT USING record::text;

-- Records the projector could not write (Postgres refused them: a data
-- error, SQLSTATE class 22 or 23) or could not read at all. Each is kept
-- here and its offset consumed, so no single record stops a partition. The
-- workflow's row then stops before that record (later ones do not follow
-- its chain): the read API says so, and `agentflow replay --verify` lists
-- them. Rebuilt (emptied) by `agentflow replay` like everything else.
CREATE TABLE quarantined_records (
    topic           TEXT NOT NULL,
    log_partition   INT NOT NULL,
    log_offset      BIGINT NOT NULL,
    workflow_id     UUID,            -- NULL: the record could not be read
    user_id         BIGINT,
    event_type      TEXT,
    seq             BIGINT,
    reason          TEXT NOT NULL,
    record          TEXT,            -- the record's JSON text, if readable
    quarantined_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, log_partition, log_offset)
);

CREATE INDEX quarantined_records_by_workflow ON quarantined_records (workflow_id);
