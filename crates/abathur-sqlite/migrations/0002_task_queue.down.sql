-- Reverts 0002_task_queue.
DROP INDEX IF EXISTS idx_tasks_claim;
DROP TABLE IF EXISTS task_events;
DROP TABLE IF EXISTS task_attempts;
DROP TABLE IF EXISTS task_schedule;
