-- Repeatable completion and retention.
--
-- What a failed attempt decided for its task, so that the same `fail` sent again answers with
-- it rather than deciding anew: the task's retry count after the attempt, and when the task
-- may run again (NULL when the attempt failed the task for good). Written by every fail path
-- (fail, reap); NULL on attempts that did not fail and on those recorded before this version.
ALTER TABLE task_attempts ADD COLUMN retry_count INTEGER
    CHECK (retry_count BETWEEN 0 AND 4294967295);
ALTER TABLE task_attempts ADD COLUMN retry_after TEXT
    CHECK (retry_after GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z');

-- Retention: finished tasks in the order they finished, so that a prune reads the oldest
-- first and never scans unfinished work (`completed_at` is set only on terminal tasks; a retry
-- clears it).
CREATE INDEX idx_tasks_finished ON tasks(completed_at, id) WHERE completed_at IS NOT NULL;
