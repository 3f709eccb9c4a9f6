-- The audit trail: every record of the log, as the projector saw it, with
-- whether the fold applied it. Serves GET /workflows/{id}/events; rebuilt by
-- `agentflow replay` like everything else here.
CREATE TABLE workflow_events (
    topic          TEXT NOT NULL,
    log_partition  INT NOT NULL,
    log_offset     BIGINT NOT NULL,
    workflow_id    UUID NOT NULL,
    applied        BOOLEAN NOT NULL,
    record         JSONB NOT NULL,
    PRIMARY KEY (topic, log_partition, log_offset)
);

CREATE INDEX workflow_events_by_workflow ON workflow_events (workflow_id, log_offset);
