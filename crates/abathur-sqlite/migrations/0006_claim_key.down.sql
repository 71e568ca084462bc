-- Reverts 0006_claim_key.
CREATE INDEX idx_tasks_claim ON tasks(status, agent_type, calculated_priority DESC, submitted_at, id);
DROP INDEX idx_tasks_ready_deadline;
DROP INDEX idx_tasks_claim_key_type;
DROP INDEX idx_tasks_claim_key;
ALTER TABLE tasks DROP COLUMN claim_key;
