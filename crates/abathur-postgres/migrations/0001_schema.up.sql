-- abathur's schema on PostgreSQL: the tables of the SQLite adapter's migrations 0001 to 0007, in
-- PostgreSQL's own types.
--
-- Conventions:
-- * ids are `uuid`; timestamps are `timestamptz` (microseconds, as the application keeps them);
--   JSON is `jsonb`; enum columns are `text` with a CHECK naming the allowed values.
-- * Text that the application sorts or compares (names, keys, types) is `COLLATE "C"`: byte
--   order, as SQLite's, whatever collation the database was created with, so that both
--   backends list in the same order, and `LIKE 'prefix%'` can walk a b-tree index.
-- * Time comes from the server's clock: the adapter reads `clock_timestamp()` inside the
--   transaction of each queue operation, so machines whose clocks disagree still agree on who
--   holds a lease.
--
-- Storage of the hot tables (see docs/POSTGRES.md): `tasks`, `task_attempts` and
-- `task_schedule` are updated or deleted row by row all day. A lower fillfactor leaves room on
-- each page for the new version of a row, and autovacuum is asked to clean them after 1% of
-- their rows changed rather than the default 20%, so that dead rows never pile up under a busy
-- queue.

CREATE TABLE sessions (
    id uuid PRIMARY KEY,
    app_name text COLLATE "C" NOT NULL CHECK (length(btrim(app_name)) > 0),
    user_id text COLLATE "C" NOT NULL CHECK (length(btrim(user_id)) > 0),
    project_id text COLLATE "C",
    state jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(state) = 'object'),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE tasks (
    id uuid PRIMARY KEY,
    summary text NOT NULL CHECK (char_length(summary) <= 140 AND length(btrim(summary)) > 0),
    description text NOT NULL,
    agent_type text COLLATE "C" NOT NULL CHECK (length(btrim(agent_type)) > 0),
    priority smallint NOT NULL CHECK (priority BETWEEN 0 AND 10),
    calculated_priority double precision NOT NULL DEFAULT 0.0,
    status text NOT NULL
        CHECK (status IN ('pending', 'blocked', 'ready', 'running', 'completed', 'failed', 'cancelled')),
    -- The ids this task depends on, as the specification's list; task_dependencies holds the
    -- same edges as rows, written in the same transaction, and is the truth.
    dependencies uuid[],
    dependency_type text NOT NULL DEFAULT 'sequential' CHECK (dependency_type IN ('sequential', 'parallel')),
    dependency_depth bigint NOT NULL DEFAULT 0 CHECK (dependency_depth BETWEEN 0 AND 4294967295),
    input_data jsonb,
    result_data jsonb,
    error_message text,
    retry_count bigint NOT NULL DEFAULT 0 CHECK (retry_count BETWEEN 0 AND 4294967295),
    max_retries bigint NOT NULL DEFAULT 3 CHECK (max_retries BETWEEN 0 AND 4294967295),
    max_execution_timeout_seconds bigint NOT NULL DEFAULT 3600
        CHECK (max_execution_timeout_seconds BETWEEN 1 AND 4294967295),
    submitted_at timestamptz NOT NULL,
    started_at timestamptz,
    completed_at timestamptz,
    last_updated_at timestamptz NOT NULL,
    created_by text COLLATE "C",
    parent_task_id uuid REFERENCES tasks(id) ON DELETE SET NULL,
    session_id uuid REFERENCES sessions(id) ON DELETE SET NULL,
    source text NOT NULL
        CHECK (source IN ('human', 'agent_requirements', 'agent_planner', 'agent_implementation')),
    deadline timestamptz,
    estimated_duration_seconds bigint CHECK (estimated_duration_seconds BETWEEN 0 AND 4294967295),
    feature_branch text COLLATE "C",
    task_branch text COLLATE "C",
    worktree_path text,
    -- `PriorityPolicy::key` (abathur-core) as of when the task last became ready: priority plus
    -- depth part minus ready_since / aging_interval. Claims read it in index order and add the
    -- deadline urgency. NULL on a task never ready through the queue; a claim takes those last.
    claim_key double precision,
    CHECK (parent_task_id IS NULL OR parent_task_id <> id)
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);

CREATE INDEX idx_tasks_status ON tasks(status);
CREATE INDEX idx_tasks_submitted_at ON tasks(submitted_at);
CREATE INDEX idx_tasks_deadline ON tasks(deadline) WHERE deadline IS NOT NULL;
CREATE INDEX idx_tasks_parent_task_id ON tasks(parent_task_id) WHERE parent_task_id IS NOT NULL;
CREATE INDEX idx_tasks_session_id ON tasks(session_id) WHERE session_id IS NOT NULL;
CREATE INDEX idx_tasks_feature_branch ON tasks(feature_branch) WHERE feature_branch IS NOT NULL;
-- The specification's ready query: WHERE status = 'ready' ORDER BY calculated_priority DESC,
-- submitted_at, id.
CREATE INDEX idx_tasks_ready ON tasks(calculated_priority DESC, submitted_at, id)
    WHERE status = 'ready';
-- The claim, column for column: WHERE status = 'ready' ORDER BY claim_key DESC NULLS LAST,
-- submitted_at, id; the second for a worker that asks for one agent type. Partial, so that
-- they hold ready rows only.
CREATE INDEX idx_tasks_claim_key ON tasks(claim_key DESC NULLS LAST, submitted_at, id)
    WHERE status = 'ready';
CREATE INDEX idx_tasks_claim_key_type ON tasks(agent_type, claim_key DESC NULLS LAST, submitted_at, id)
    WHERE status = 'ready';
-- The claim's other part: ready tasks whose deadline is within the horizon (or past).
CREATE INDEX idx_tasks_ready_deadline ON tasks(deadline)
    WHERE status = 'ready' AND deadline IS NOT NULL;
-- Retention: finished tasks in the order they finished (`completed_at` is set only on
-- terminal tasks; a retry clears it).
CREATE INDEX idx_tasks_finished ON tasks(completed_at, id) WHERE completed_at IS NOT NULL;

-- One row per dependency edge: task_id cannot run before depends_on_task_id completes.
CREATE TABLE task_dependencies (
    task_id uuid NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    depends_on_task_id uuid NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    PRIMARY KEY (task_id, depends_on_task_id),
    CHECK (task_id <> depends_on_task_id)
);

-- The edges into a task: its dependents.
CREATE INDEX idx_task_dependencies_depends_on ON task_dependencies(depends_on_task_id, task_id);

-- When an edge goes without its task being rewritten (its dependency is deleted or pruned, and
-- ON DELETE CASCADE removes the edge), the id leaves the task's list in the same statement, so
-- the two never disagree.
CREATE FUNCTION task_dependencies_follow_edges() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tasks
    SET dependencies = array_remove(dependencies, OLD.depends_on_task_id)
    WHERE id = OLD.task_id AND OLD.depends_on_task_id = ANY (dependencies);
    RETURN NULL;
END
$$;

CREATE TRIGGER task_dependencies_follow_edges
AFTER DELETE ON task_dependencies
FOR EACH ROW EXECUTE FUNCTION task_dependencies_follow_edges();

CREATE TABLE agents (
    id uuid PRIMARY KEY,
    agent_type text COLLATE "C" NOT NULL CHECK (length(btrim(agent_type)) > 0),
    status text NOT NULL CHECK (status IN ('idle', 'busy', 'terminated')),
    current_task_id uuid REFERENCES tasks(id) ON DELETE SET NULL,
    heartbeat_at timestamptz NOT NULL,
    memory_usage_bytes bigint NOT NULL DEFAULT 0 CHECK (memory_usage_bytes >= 0),
    cpu_usage_percent double precision NOT NULL DEFAULT 0.0 CHECK (cpu_usage_percent >= 0.0),
    created_at timestamptz NOT NULL,
    terminated_at timestamptz,
    CHECK ((status = 'terminated') = (terminated_at IS NOT NULL))
);

-- list(status) and find_stale_agents: status, then the oldest heartbeats first.
CREATE INDEX idx_agents_status_heartbeat ON agents(status, heartbeat_at);
CREATE INDEX idx_agents_current_task ON agents(current_task_id) WHERE current_task_id IS NOT NULL;

-- Every version of every memory. A key's live version is its newest one not deleted; deleting
-- a key marks all its versions deleted, and adding it again continues its numbering.
CREATE TABLE memories (
    namespace text COLLATE "C" NOT NULL CHECK (length(btrim(namespace)) > 0),
    key text COLLATE "C" NOT NULL CHECK (length(btrim(key)) > 0),
    version bigint NOT NULL CHECK (version BETWEEN 1 AND 4294967295),
    value jsonb NOT NULL,
    memory_type text NOT NULL CHECK (memory_type IN ('semantic', 'episodic', 'procedural')),
    is_deleted boolean NOT NULL DEFAULT false,
    metadata jsonb,
    created_by text COLLATE "C" NOT NULL CHECK (length(btrim(created_by)) > 0),
    updated_by text COLLATE "C" NOT NULL CHECK (length(btrim(updated_by)) > 0),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    -- get, get_version and prefix search walk this key: (namespace, key) then newest version.
    PRIMARY KEY (namespace, key, version)
);

-- Append-only: an event is never changed once written (deleting its session removes it).
CREATE TABLE session_events (
    session_id uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    sequence bigint NOT NULL CHECK (sequence >= 1),
    event_type text COLLATE "C" NOT NULL CHECK (length(btrim(event_type)) > 0),
    actor text COLLATE "C" NOT NULL CHECK (length(btrim(actor)) > 0),
    content jsonb NOT NULL,
    "timestamp" timestamptz NOT NULL,
    PRIMARY KEY (session_id, sequence)
);

-- get_events: a session's events in time order, ties broken by sequence.
CREATE INDEX idx_session_events_session_timestamp ON session_events(session_id, "timestamp", sequence);

CREATE FUNCTION session_events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'session events are append-only' USING ERRCODE = 'check_violation';
END
$$;

CREATE TRIGGER session_events_are_append_only
BEFORE UPDATE ON session_events
FOR EACH ROW EXECUTE FUNCTION session_events_are_append_only();

CREATE TABLE audit (
    id uuid PRIMARY KEY,
    operation text COLLATE "C" NOT NULL CHECK (length(btrim(operation)) > 0),
    actor text COLLATE "C" NOT NULL,
    resource_id text COLLATE "C",
    "timestamp" timestamptz NOT NULL,
    metadata jsonb,
    success boolean NOT NULL
);

CREATE INDEX idx_audit_timestamp ON audit("timestamp");
CREATE INDEX idx_audit_resource ON audit(resource_id, "timestamp") WHERE resource_id IS NOT NULL;

-- A ready task is claimable once `run_after` has passed; no row means at once. Written by a
-- delayed submission and by a retry's backoff.
CREATE TABLE task_schedule (
    task_id uuid PRIMARY KEY REFERENCES tasks(id) ON DELETE CASCADE,
    run_after timestamptz NOT NULL
) WITH (fillfactor = 90, autovacuum_vacuum_scale_factor = 0.01);

-- One row per claim. The attempt id is the lease token: complete, fail and heartbeat name it,
-- and only the open attempt of a running task is honoured (fencing).
CREATE TABLE task_attempts (
    id uuid PRIMARY KEY,
    task_id uuid NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    attempt_number bigint NOT NULL CHECK (attempt_number >= 1),
    worker_id text COLLATE "C" NOT NULL CHECK (length(btrim(worker_id)) > 0),
    started_at timestamptz NOT NULL,
    lease_expires_at timestamptz NOT NULL,
    finished_at timestamptz,
    outcome text CHECK (outcome IN ('completed', 'failed', 'lost', 'timed_out', 'cancelled', 'released')),
    error text,
    -- What a failed attempt decided for its task (so that the same `fail` sent again answers
    -- with it): the task's retry count after the attempt, and when it may run again (NULL when
    -- the attempt failed the task for good).
    retry_count bigint CHECK (retry_count BETWEEN 0 AND 4294967295),
    retry_after timestamptz,
    CHECK ((finished_at IS NULL) = (outcome IS NULL)),
    UNIQUE (task_id, attempt_number)
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);

-- No task is ever held by two live leases: at most one open attempt per task. The reaper reads
-- open attempts through this index too (there are only as many as tasks running), so that
-- `lease_expires_at` is in no index and a heartbeat is a HOT update, written in place.
CREATE UNIQUE INDEX idx_task_attempts_one_open ON task_attempts(task_id) WHERE finished_at IS NULL;

-- Every status change of every task, in order.
CREATE TABLE task_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id uuid NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    from_status text
        CHECK (from_status IN ('pending', 'blocked', 'ready', 'running', 'completed', 'failed', 'cancelled')),
    to_status text NOT NULL
        CHECK (to_status IN ('pending', 'blocked', 'ready', 'running', 'completed', 'failed', 'cancelled')),
    at timestamptz NOT NULL,
    actor text COLLATE "C" NOT NULL CHECK (length(btrim(actor)) > 0),
    attempt_id uuid,
    reason text
);

CREATE INDEX idx_task_events_task ON task_events(task_id, id);

-- Idempotent submission: the key lives exactly as long as its task (ON DELETE CASCADE).
CREATE TABLE task_idempotency (
    -- Unique across the database: two machines submitting the same key at once make one task,
    -- since the second insert waits for the first and is refused inside its transaction.
    idempotency_key text COLLATE "C" PRIMARY KEY CHECK (length(idempotency_key) BETWEEN 1 AND 256),
    task_id uuid NOT NULL UNIQUE REFERENCES tasks(id) ON DELETE CASCADE,
    -- SHA-256, in lowercase hex, of the submitted content (see docs/QUEUE.md).
    content_hash text NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$')
);

-- Wake-up: every statement that leaves a task ready (a submission, a completion releasing
-- dependents, a retry, a release, a repository write) sends one notification on
-- `abathur_changes`, in its own transaction, so that it is delivered exactly when the work
-- becomes visible. PostgreSQL folds identical notifications of one transaction into one, so a
-- completion that readies 10,000 dependents sends one. The payload is empty: a notification
-- only says "look again"; listeners poll as well, since notifications sent while a listener
-- reconnects are lost.
CREATE FUNCTION tasks_notify_ready() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM changed WHERE status = 'ready') THEN
        PERFORM pg_notify('abathur_changes', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_notify_ready_on_insert
AFTER INSERT ON tasks REFERENCING NEW TABLE AS changed
FOR EACH STATEMENT EXECUTE FUNCTION tasks_notify_ready();

CREATE TRIGGER tasks_notify_ready_on_update
AFTER UPDATE ON tasks REFERENCING NEW TABLE AS changed
FOR EACH STATEMENT EXECUTE FUNCTION tasks_notify_ready();
