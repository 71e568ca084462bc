-- The initial schema: sessions, tasks and their dependency edges, agents, memories, session
-- events and the audit log.
--
-- Conventions, enforced by CHECKs so that no writer can break them:
-- * ids are UUIDs in their 36-character text form;
-- * timestamps are fixed-width UTC RFC 3339 with microseconds and `Z`
--   (2026-11-28T03:04:22.123456Z), so text order is time order; nothing defaults to
--   datetime('now'), whose form is different;
-- * JSON columns hold valid JSON;
-- * enum columns hold one of their names.
-- Tables are STRICT, so a value of the wrong type is an error rather than a silent conversion.

CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    app_name TEXT NOT NULL CHECK (length(trim(app_name)) > 0),
    user_id TEXT NOT NULL CHECK (length(trim(user_id)) > 0),
    project_id TEXT,
    state TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(state) AND json_type(state) = 'object'),
    created_at TEXT NOT NULL
        CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    updated_at TEXT NOT NULL
        CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
) STRICT;

CREATE TABLE tasks (
    id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    summary TEXT NOT NULL CHECK (length(summary) <= 140 AND length(trim(summary)) > 0),
    description TEXT NOT NULL,
    agent_type TEXT NOT NULL CHECK (length(trim(agent_type)) > 0),
    priority INTEGER NOT NULL CHECK (priority >= 0 AND priority <= 10),
    calculated_priority REAL NOT NULL DEFAULT 0.0,
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'blocked', 'ready', 'running', 'completed', 'failed', 'cancelled')),
    -- The ids this task depends on, as a JSON array; task_dependencies holds the same edges
    -- as rows, written in the same transaction.
    dependencies TEXT CHECK (dependencies IS NULL OR (json_valid(dependencies) AND json_type(dependencies) = 'array')),
    dependency_type TEXT NOT NULL DEFAULT 'sequential' CHECK (dependency_type IN ('sequential', 'parallel')),
    dependency_depth INTEGER NOT NULL DEFAULT 0 CHECK (dependency_depth BETWEEN 0 AND 4294967295),
    input_data TEXT CHECK (input_data IS NULL OR json_valid(input_data)),
    result_data TEXT CHECK (result_data IS NULL OR json_valid(result_data)),
    error_message TEXT,
    retry_count INTEGER NOT NULL DEFAULT 0 CHECK (retry_count BETWEEN 0 AND 4294967295),
    max_retries INTEGER NOT NULL DEFAULT 3 CHECK (max_retries BETWEEN 0 AND 4294967295),
    max_execution_timeout_seconds INTEGER NOT NULL DEFAULT 3600
        CHECK (max_execution_timeout_seconds BETWEEN 1 AND 4294967295),
    submitted_at TEXT NOT NULL
        CHECK (submitted_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    started_at TEXT
        CHECK (started_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    completed_at TEXT
        CHECK (completed_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    last_updated_at TEXT NOT NULL
        CHECK (last_updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    created_by TEXT,
    parent_task_id TEXT,
    session_id TEXT,
    source TEXT NOT NULL
        CHECK (source IN ('human', 'agent_requirements', 'agent_planner', 'agent_implementation')),
    deadline TEXT
        CHECK (deadline GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    estimated_duration_seconds INTEGER CHECK (estimated_duration_seconds BETWEEN 0 AND 4294967295),
    feature_branch TEXT,
    task_branch TEXT,
    worktree_path TEXT,
    CHECK (parent_task_id IS NULL OR parent_task_id <> id),
    FOREIGN KEY (parent_task_id) REFERENCES tasks(id) ON DELETE SET NULL,
    FOREIGN KEY (session_id) REFERENCES sessions(id) ON DELETE SET NULL
) STRICT;

CREATE INDEX idx_tasks_priority_status ON tasks(calculated_priority DESC, status);
CREATE INDEX idx_tasks_status ON tasks(status);
CREATE INDEX idx_tasks_submitted_at ON tasks(submitted_at);
CREATE INDEX idx_tasks_deadline ON tasks(deadline) WHERE deadline IS NOT NULL;
CREATE INDEX idx_tasks_parent_task_id ON tasks(parent_task_id) WHERE parent_task_id IS NOT NULL;
CREATE INDEX idx_tasks_session_id ON tasks(session_id) WHERE session_id IS NOT NULL;
CREATE INDEX idx_tasks_feature_branch ON tasks(feature_branch) WHERE feature_branch IS NOT NULL;
-- The ready query: WHERE status = 'ready' ORDER BY calculated_priority DESC, submitted_at, id.
-- Column for column, so the first rows of the index are the answer and nothing is sorted.
CREATE INDEX idx_tasks_ready ON tasks(status, calculated_priority DESC, submitted_at, id);

-- One row per dependency edge: task_id cannot run before depends_on_task_id completes.
CREATE TABLE task_dependencies (
    task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    depends_on_task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    PRIMARY KEY (task_id, depends_on_task_id),
    CHECK (task_id <> depends_on_task_id)
) STRICT, WITHOUT ROWID;

-- get_dependents: the edges into a task.
CREATE INDEX idx_task_dependencies_depends_on ON task_dependencies(depends_on_task_id, task_id);

CREATE TABLE agents (
    id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    agent_type TEXT NOT NULL CHECK (length(trim(agent_type)) > 0),
    status TEXT NOT NULL CHECK (status IN ('idle', 'busy', 'terminated')),
    current_task_id TEXT REFERENCES tasks(id) ON DELETE SET NULL,
    heartbeat_at TEXT NOT NULL
        CHECK (heartbeat_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    memory_usage_bytes INTEGER NOT NULL DEFAULT 0 CHECK (memory_usage_bytes >= 0),
    cpu_usage_percent REAL NOT NULL DEFAULT 0.0 CHECK (cpu_usage_percent >= 0.0),
    created_at TEXT NOT NULL
        CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    terminated_at TEXT
        CHECK (terminated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    CHECK ((status = 'terminated') = (terminated_at IS NOT NULL))
) STRICT;

-- list(status) and find_stale_agents: status, then the oldest heartbeats first.
CREATE INDEX idx_agents_status_heartbeat ON agents(status, heartbeat_at);
CREATE INDEX idx_agents_current_task ON agents(current_task_id) WHERE current_task_id IS NOT NULL;

-- Every version of every memory. A key's live version is its newest one with is_deleted = 0;
-- deleting a key marks all its versions deleted, and adding it again continues its numbering.
CREATE TABLE memories (
    namespace TEXT NOT NULL CHECK (length(trim(namespace)) > 0),
    key TEXT NOT NULL CHECK (length(trim(key)) > 0),
    version INTEGER NOT NULL CHECK (version BETWEEN 1 AND 4294967295),
    value TEXT NOT NULL CHECK (json_valid(value)),
    memory_type TEXT NOT NULL CHECK (memory_type IN ('semantic', 'episodic', 'procedural')),
    is_deleted INTEGER NOT NULL DEFAULT 0 CHECK (is_deleted IN (0, 1)),
    metadata TEXT CHECK (metadata IS NULL OR json_valid(metadata)),
    created_by TEXT NOT NULL CHECK (length(trim(created_by)) > 0),
    updated_by TEXT NOT NULL CHECK (length(trim(updated_by)) > 0),
    created_at TEXT NOT NULL
        CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    updated_at TEXT NOT NULL
        CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    -- get, get_version and prefix search walk this key: (namespace, key) then newest version.
    PRIMARY KEY (namespace, key, version)
) STRICT, WITHOUT ROWID;

-- Append-only: an event is never changed once written (deleting its session removes it).
CREATE TABLE session_events (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    sequence INTEGER NOT NULL CHECK (sequence >= 1),
    event_type TEXT NOT NULL CHECK (length(trim(event_type)) > 0),
    actor TEXT NOT NULL CHECK (length(trim(actor)) > 0),
    content TEXT NOT NULL CHECK (json_valid(content)),
    timestamp TEXT NOT NULL
        CHECK (timestamp GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    PRIMARY KEY (session_id, sequence)
) STRICT, WITHOUT ROWID;

-- get_events: a session's events in time order, ties broken by sequence.
CREATE INDEX idx_session_events_session_timestamp ON session_events(session_id, timestamp, sequence);

CREATE TRIGGER session_events_are_append_only
BEFORE UPDATE ON session_events
BEGIN
    SELECT RAISE(ABORT, 'session events are append-only');
END;

CREATE TABLE audit (
    id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    operation TEXT NOT NULL CHECK (length(trim(operation)) > 0),
    actor TEXT NOT NULL,
    resource_id TEXT,
    timestamp TEXT NOT NULL
        CHECK (timestamp GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    metadata TEXT CHECK (metadata IS NULL OR json_valid(metadata)),
    success INTEGER NOT NULL CHECK (success IN (0, 1))
) STRICT;

CREATE INDEX idx_audit_timestamp ON audit(timestamp);
CREATE INDEX idx_audit_resource ON audit(resource_id, timestamp) WHERE resource_id IS NOT NULL;
