-- The task queue's bookkeeping, kept beside `tasks` rather than in it: when a task may next run,
-- each attempt to run it (its lease), and the history of its status changes.

-- A ready task is claimable once `run_after` has passed; no row means at once. Written when a
-- failed attempt is retried with backoff.
CREATE TABLE task_schedule (
    task_id TEXT PRIMARY KEY NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    run_after TEXT NOT NULL
        CHECK (run_after GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
) STRICT, WITHOUT ROWID;

-- One row per claim. The attempt id is the lease token: complete, fail and heartbeat name it,
-- and only the open attempt of a running task is honoured (fencing).
CREATE TABLE task_attempts (
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
    outcome TEXT CHECK (outcome IN ('completed', 'failed', 'lost', 'timed_out', 'cancelled')),
    error TEXT,
    CHECK ((finished_at IS NULL) = (outcome IS NULL)),
    UNIQUE (task_id, attempt_number)
) STRICT;

-- No task is ever held by two live leases: at most one open attempt per task.
CREATE UNIQUE INDEX idx_task_attempts_one_open ON task_attempts(task_id) WHERE finished_at IS NULL;
-- The reaper: open attempts by lease expiry.
CREATE INDEX idx_task_attempts_open_leases ON task_attempts(lease_expires_at) WHERE finished_at IS NULL;

-- Every status change of every task, in order.
CREATE TABLE task_events (
    id INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    from_status TEXT
        CHECK (from_status IN ('pending', 'blocked', 'ready', 'running', 'completed', 'failed', 'cancelled')),
    to_status TEXT NOT NULL
        CHECK (to_status IN ('pending', 'blocked', 'ready', 'running', 'completed', 'failed', 'cancelled')),
    at TEXT NOT NULL
        CHECK (at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    actor TEXT NOT NULL CHECK (length(trim(actor)) > 0),
    attempt_id TEXT,
    reason TEXT
) STRICT;

CREATE INDEX idx_task_events_task ON task_events(task_id, id);

-- Claims of one agent type: ready tasks of that type, most urgent first, without sorting.
CREATE INDEX idx_tasks_claim ON tasks(status, agent_type, calculated_priority DESC, submitted_at, id);
