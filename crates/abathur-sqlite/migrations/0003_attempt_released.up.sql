-- An attempt may end `released`: its worker gave the task back unfinished (it was shutting
-- down), so the task is ready again at once without counting a retry.
--
-- SQLite cannot alter a CHECK constraint, so `task_attempts` is rebuilt with the new list of
-- outcomes, its rows copied as they are. No table refers to it by foreign key.

CREATE TABLE task_attempts_new (
    id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    attempt_number INTEGER NOT NULL CHECK (attempt_number >= 1),
    worker_id TEXT NOT NULL CHECK (length(trim(worker_id)) > 0),
    started_at TEXT NOT NULL
        CHECK (started_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    lease_expires_at TEXT NOT NULL
        CHECK (lease_expires_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    finished_at TEXT
        CHECK (finished_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    outcome TEXT CHECK (outcome IN ('completed', 'failed', 'lost', 'timed_out', 'cancelled', 'released')),
    error TEXT,
    CHECK ((finished_at IS NULL) = (outcome IS NULL)),
    UNIQUE (task_id, attempt_number)
) STRICT;

INSERT INTO task_attempts_new
    (id, task_id, attempt_number, worker_id, started_at, lease_expires_at, finished_at, outcome, error)
SELECT id, task_id, attempt_number, worker_id, started_at, lease_expires_at, finished_at, outcome, error
FROM task_attempts;

DROP TABLE task_attempts;
ALTER TABLE task_attempts_new RENAME TO task_attempts;

-- The indexes of 0002, which went with the old table.
CREATE UNIQUE INDEX idx_task_attempts_one_open ON task_attempts(task_id) WHERE finished_at IS NULL;
CREATE INDEX idx_task_attempts_open_leases ON task_attempts(lease_expires_at) WHERE finished_at IS NULL;
