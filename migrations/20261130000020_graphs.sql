-- Workflow graphs (record version 2): steps are named, may run in parallel,
-- be skipped by a condition, repeat, wait for a signal or a time; a run may
-- be paused.
--
-- `workflows.state` holds the fold's whole state (JSON text: it carries
-- agents' outputs, which may hold U+0000): the projector and the engine's
-- checkpoints continue from it. Rows written before this migration have
-- none and are read from their columns as the chains they are.
ALTER TABLE workflows ADD COLUMN state TEXT;

ALTER TABLE workflows DROP CONSTRAINT workflows_status_check;
ALTER TABLE workflows ADD CONSTRAINT workflows_status_check
    CHECK (status IN ('pending', 'running', 'waiting', 'paused', 'completed', 'failed', 'cancelled'));

DROP INDEX workflows_unfinished;
CREATE INDEX workflows_unfinished ON workflows (status)
    WHERE status IN ('pending', 'running', 'waiting', 'paused');
DROP INDEX workflows_live_by_partition;
CREATE INDEX workflows_live_by_partition ON workflows (log_partition)
    WHERE status IN ('pending', 'running', 'waiting', 'paused', 'failed');

-- A step's id (`step_N` for the steps of a `tasks` chain) and how many
-- iterations it has had; `step` stays its 1-based place in the definition.
ALTER TABLE workflow_steps
    ADD COLUMN step_id TEXT,
    ADD COLUMN iteration INT NOT NULL DEFAULT 0;
UPDATE workflow_steps SET step_id = 'step_' || step,
    iteration = CASE WHEN status = 'completed' THEN 1 ELSE 0 END;
ALTER TABLE workflow_steps ALTER COLUMN step_id SET NOT NULL;
ALTER TABLE workflow_steps ALTER COLUMN agent DROP NOT NULL;
ALTER TABLE workflow_steps DROP CONSTRAINT workflow_steps_status_check;
ALTER TABLE workflow_steps ADD CONSTRAINT workflow_steps_status_check
    CHECK (status IN ('pending', 'waiting', 'completed', 'failed', 'skipped'));
