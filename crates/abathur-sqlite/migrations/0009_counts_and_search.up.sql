-- Two things the dashboard reads at any size without scanning the tasks table.
--
-- 1. The number of tasks in each status, kept by triggers in the statement that changes it.
--    The overview reads seven rows instead of counting every task.
CREATE TABLE task_status_counts (
    status TEXT PRIMARY KEY NOT NULL,
    tasks INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

INSERT INTO task_status_counts (status, tasks)
SELECT s.column1, (SELECT COUNT(*) FROM tasks t WHERE t.status = s.column1)
FROM (VALUES ('pending'), ('blocked'), ('ready'), ('running'),
             ('completed'), ('failed'), ('cancelled')) s;

CREATE TRIGGER task_status_counts_insert AFTER INSERT ON tasks
BEGIN
    UPDATE task_status_counts SET tasks = tasks + 1 WHERE status = NEW.status;
END;

CREATE TRIGGER task_status_counts_delete AFTER DELETE ON tasks
BEGIN
    UPDATE task_status_counts SET tasks = tasks - 1 WHERE status = OLD.status;
END;

CREATE TRIGGER task_status_counts_update AFTER UPDATE OF status ON tasks
WHEN OLD.status <> NEW.status
BEGIN
    UPDATE task_status_counts SET tasks = tasks - 1 WHERE status = OLD.status;
    UPDATE task_status_counts SET tasks = tasks + 1 WHERE status = NEW.status;
END;

-- 2. A trigram index of the summaries, for the task list's text search (TaskRepository::page).
--    It holds no copy of the text (content='tasks'): its rows are the tasks' rowids. A search
--    reads candidates from it and checks each against tasks.summary, so a candidate that is
--    wrong costs a lookup and never shows.
CREATE VIRTUAL TABLE task_summaries USING fts5(
    summary, content = 'tasks', content_rowid = 'rowid', tokenize = 'trigram'
);
INSERT INTO task_summaries (task_summaries) VALUES ('rebuild');

CREATE TRIGGER task_summaries_insert AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_summaries (rowid, summary) VALUES (NEW.rowid, NEW.summary);
END;

CREATE TRIGGER task_summaries_delete AFTER DELETE ON tasks
BEGIN
    INSERT INTO task_summaries (task_summaries, rowid, summary)
    VALUES ('delete', OLD.rowid, OLD.summary);
END;

CREATE TRIGGER task_summaries_update AFTER UPDATE OF summary ON tasks
WHEN OLD.summary <> NEW.summary
BEGIN
    INSERT INTO task_summaries (task_summaries, rowid, summary)
    VALUES ('delete', OLD.rowid, OLD.summary);
    INSERT INTO task_summaries (rowid, summary) VALUES (NEW.rowid, NEW.summary);
END;
