-- The dashboard's task list (TaskRepository::page) reads each page from an index, starting at
-- its cursor, so that a page costs the same at row 900,000 as at row 1:
-- * tasks of one status in submission order (newest or oldest first);
-- * every task in priority order (idx_tasks_priority_status has no submission time, so the
--   ties within a priority would be sorted in full).
-- A status filter in priority order already has idx_tasks_ready; every task in submission
-- order has idx_tasks_submitted_at.
CREATE INDEX idx_tasks_status_submitted ON tasks(status, submitted_at, id);
CREATE INDEX idx_tasks_priority_order ON tasks(calculated_priority DESC, submitted_at, id);
