DROP TRIGGER tasks_take_history_along ON tasks;
DROP FUNCTION tasks_take_history_along();
ALTER TABLE task_attempts ADD CONSTRAINT task_attempts_task_id_fkey
    FOREIGN KEY (task_id) REFERENCES tasks(id) ON DELETE CASCADE;
ALTER TABLE task_events ADD CONSTRAINT task_events_task_id_fkey
    FOREIGN KEY (task_id) REFERENCES tasks(id) ON DELETE CASCADE;
