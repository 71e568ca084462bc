-- Reverts 0005_repeat_and_retention.
DROP INDEX idx_tasks_finished;
ALTER TABLE task_attempts DROP COLUMN retry_after;
ALTER TABLE task_attempts DROP COLUMN retry_count;
