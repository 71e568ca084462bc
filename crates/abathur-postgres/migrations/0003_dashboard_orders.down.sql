DROP INDEX IF EXISTS idx_tasks_status_priority;
DROP INDEX IF EXISTS idx_tasks_priority_order;
DROP INDEX IF EXISTS idx_tasks_status_submitted;
