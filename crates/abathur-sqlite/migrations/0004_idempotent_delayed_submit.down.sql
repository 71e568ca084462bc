-- Reverts 0004_idempotent_delayed_submit. The keys are forgotten; the tasks stay. Run-after
-- times stay in `task_schedule`, which 0002 owns.
DROP TABLE IF EXISTS task_idempotency;
