DROP TRIGGER tasks_take_history_along ON tasks;
DROP FUNCTION tasks_take_history_along();
-- Rows whose task is gone (left by a delete that bypassed the trigger) would fail the
-- constraints' validation.
DELETE FROM task_attempts a WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = a.task_id);
DELETE FROM task_events e WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = e.task_id);
ALTER TABLE task_attempts ADD CONSTRAINT task_attempts_task_id_fkey
    FOREIGN KEY (task_id) REFERENCES tasks(id) ON DELETE CASCADE;
ALTER TABLE task_events ADD CONSTRAINT task_events_task_id_fkey
    FOREIGN KEY (task_id) REFERENCES tasks(id) ON DELETE CASCADE;
