-- Two things the dashboard reads at any size without scanning the tasks table.
--
-- 1. The number of tasks in each status. A counter row per status would make every writer
--    wait for the one before it to commit (and two writers moving tasks between the same
--    statuses in opposite directions would deadlock), so each statement that changes tasks
--    appends its net change per status instead, and the count of a status is the sum of its
--    rows. Now and then a statement folds the rows it can lock into one per status, skipping
--    rows another transaction holds, so the table stays at a few thousand rows whatever the
--    rate of change.
-- No task changes between the counts and the copies below and the triggers that keep them.
LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE task_status_counts (
    status text COLLATE "C" NOT NULL,
    tasks bigint NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 10000);

INSERT INTO task_status_counts (status, tasks)
SELECT status, count(*) FROM tasks GROUP BY status;

CREATE FUNCTION abathur_count_task_statuses() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO task_status_counts (status, tasks)
        SELECT status, count(*) FROM new_tasks GROUP BY status;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO task_status_counts (status, tasks)
        SELECT status, -count(*) FROM old_tasks GROUP BY status;
    ELSE
        INSERT INTO task_status_counts (status, tasks)
        SELECT status, sum(change)
        FROM (SELECT status, 1 AS change FROM new_tasks
              UNION ALL
              SELECT status, -1 FROM old_tasks) AS changes
        GROUP BY status
        HAVING sum(change) <> 0;
    END IF;
    -- One statement in about a thousand folds the rows.
    IF random() < 0.001 THEN
        WITH folded AS (
            DELETE FROM task_status_counts
            WHERE ctid = ANY (ARRAY(SELECT ctid FROM task_status_counts
                                    LIMIT 100000 FOR UPDATE SKIP LOCKED))
            RETURNING status, tasks
        )
        INSERT INTO task_status_counts (status, tasks)
        SELECT status, sum(tasks) FROM folded GROUP BY status HAVING sum(tasks) <> 0;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER task_status_counts_insert AFTER INSERT ON tasks
REFERENCING NEW TABLE AS new_tasks
FOR EACH STATEMENT EXECUTE FUNCTION abathur_count_task_statuses();

CREATE TRIGGER task_status_counts_update AFTER UPDATE ON tasks
REFERENCING OLD TABLE AS old_tasks NEW TABLE AS new_tasks
FOR EACH STATEMENT EXECUTE FUNCTION abathur_count_task_statuses();

CREATE TRIGGER task_status_counts_delete AFTER DELETE ON tasks
REFERENCING OLD TABLE AS old_tasks
FOR EACH STATEMENT EXECUTE FUNCTION abathur_count_task_statuses();

-- 2. The summaries, for the task list's text search (TaskRepository::page), in a table of
--    their own with a trigram index (pg_trgm). A GIN index on tasks itself would take new
--    entries for every trigram of the summary at each status change, since those are not HOT
--    updates; here the summary is written when it is written. A search reads candidates from
--    the index and checks each against tasks.summary, so the two tables never need to agree
--    for a search to be right, only to be quick.
CREATE TABLE task_summaries (
    task_id uuid PRIMARY KEY REFERENCES tasks(id) ON DELETE CASCADE,
    summary text NOT NULL
);

INSERT INTO task_summaries (task_id, summary) SELECT id, summary FROM tasks;

CREATE FUNCTION abathur_insert_task_summaries() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_summaries (task_id, summary) SELECT id, summary FROM new_tasks;
    RETURN NULL;
END
$$;

CREATE TRIGGER task_summaries_insert AFTER INSERT ON tasks
REFERENCING NEW TABLE AS new_tasks
FOR EACH STATEMENT EXECUTE FUNCTION abathur_insert_task_summaries();

CREATE FUNCTION abathur_update_task_summary() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE task_summaries SET summary = NEW.summary WHERE task_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER task_summaries_update AFTER UPDATE OF summary ON tasks
FOR EACH ROW WHEN (OLD.summary IS DISTINCT FROM NEW.summary)
EXECUTE FUNCTION abathur_update_task_summary();

-- pg_trgm ships with PostgreSQL (contrib) and is a trusted extension: the database's owner
-- may create it. Where it is missing, or installed in another schema, the index is made with
-- the operator class wherever it is; where it cannot be had, searches still work, by reading
-- the summaries in full.
DO $$
DECLARE
    trgm_schema name;
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'pg_trgm is not available (%): task searches read every summary', SQLERRM;
    END;
    SELECT n.nspname INTO trgm_schema
    FROM pg_opclass c JOIN pg_namespace n ON n.oid = c.opcnamespace
    JOIN pg_am a ON a.oid = c.opcmethod
    WHERE c.opcname = 'gin_trgm_ops' AND a.amname = 'gin'
    LIMIT 1;
    IF trgm_schema IS NOT NULL THEN
        EXECUTE format(
            'CREATE INDEX idx_task_summaries_trigrams ON task_summaries USING gin (summary %I.gin_trgm_ops)',
            trgm_schema);
    END IF;
END
$$;
