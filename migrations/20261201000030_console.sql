-- The live list (`GET /workflows/stream`) asks for the rows the projector
-- wrote since its last look.
CREATE INDEX workflows_by_update ON workflows (updated_at);
