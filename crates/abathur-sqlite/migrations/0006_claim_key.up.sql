-- Ageing without rewriting waiting rows.
--
-- A task's priority grows by one point per `aging_interval` of waiting, from `ready_since`,
-- when it last became claimable (ready, and past its run-after time). Every waiting task grows
-- at the same rate, so `priority + waited / aging_interval` orders them exactly as
-- `priority - ready_since / aging_interval` does, a value fixed while the task waits. That is
-- `claim_key`: `PriorityPolicy::key` in abathur-core, its one definition, written by the queue
-- whenever a task becomes ready. Claims read it in index order and add the deadline urgency,
-- the only part that moves with time, for the few tasks whose deadline is within the horizon.
--
-- Read only while the task is ready. NULL on a task that was never ready, and on one made
-- ready outside the queue (through the low-level task repository), which a claim then takes
-- after every keyed task.
ALTER TABLE tasks ADD COLUMN claim_key REAL;

-- The ready tasks of an older version, keyed with the default policy (0.5 points per level of
-- depth up to 10, a point per 600 s) as ready since their submission, or since their run-after
-- time when later. Seconds are counted from the Unix epoch (Julian day 2440587.5).
UPDATE tasks SET claim_key = priority + 0.5 * MIN(dependency_depth, 10)
    - (julianday(MAX(submitted_at, COALESCE(
          (SELECT s.run_after FROM task_schedule s WHERE s.task_id = tasks.id), submitted_at)))
       - 2440587.5) * 86400.0 / 600.0
WHERE status = 'ready';

-- The claim, column for column: WHERE status = 'ready' ORDER BY claim_key DESC, submitted_at,
-- id. Partial, so they hold ready rows only and a claim removes its task's entry; `status`
-- still leads, so that the planner sees the claim's equality on it and prefers these to
-- `idx_tasks_status`. The second has agent_type next, for a worker that asks for one type.
CREATE INDEX idx_tasks_claim_key ON tasks(status, claim_key DESC, submitted_at, id)
    WHERE status = 'ready';
CREATE INDEX idx_tasks_claim_key_type
    ON tasks(status, agent_type, claim_key DESC, submitted_at, id)
    WHERE status = 'ready';
-- The claim's other part: ready tasks whose deadline is within the horizon (or past).
CREATE INDEX idx_tasks_ready_deadline ON tasks(status, deadline)
    WHERE status = 'ready' AND deadline IS NOT NULL;

-- The claim index of 0002 ordered by calculated_priority, which the claim no longer reads.
DROP INDEX idx_tasks_claim;
