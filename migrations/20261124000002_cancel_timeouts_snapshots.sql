-- Cancellation and timeouts (workflow.cancel_requested / workflow.cancelled),
-- and what the engine needs to start a partition from the projection instead
-- of replaying its whole history (bounded recovery).

ALTER TABLE workflows DROP CONSTRAINT workflows_status_check;
ALTER TABLE workflows ADD CONSTRAINT workflows_status_check
    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled'));

ALTER TABLE workflows
    ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN timeout_ms BIGINT,
    -- The log partition holding the workflow's records.
    ADD COLUMN log_partition INT;

-- The states the engine loads when it takes a partition: everything that can
-- still change (completed and cancelled workflows never do).
CREATE INDEX workflows_live_by_partition ON workflows (log_partition)
    WHERE status IN ('pending', 'running', 'failed');

-- Which engine node owns which log partition, as each node last reported it
-- (a heartbeat every few seconds). The broker's group coordinator decides
-- ownership; this table only lets nodes notice a partition that no live node
-- owns (a broker that failed to rebalance) and operators see who runs what.
CREATE TABLE engine_partitions (
    topic        TEXT NOT NULL,
    partition    INT NOT NULL,
    node_id      TEXT NOT NULL,
    seen_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (topic, partition)
);
