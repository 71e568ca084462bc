-- Idempotent submission: a task submitted with an idempotency key is stored with the key and a
-- hash of what was submitted, so that a retried submission finds the task instead of making a
-- second one, and a different submission under the same key is refused.
--
-- Kept beside `tasks`, as the queue's other bookkeeping is: the key lives exactly as long as
-- its task (ON DELETE CASCADE), so pruning a task frees its key.
--
-- Delayed tasks need no new table: a submission's run-after time is a `task_schedule` row
-- (0002), the same row a retry's backoff writes.

CREATE TABLE task_idempotency (
    -- Unique across the database: two processes submitting the same key at once make one task,
    -- since the second insert is refused inside its transaction.
    idempotency_key TEXT PRIMARY KEY NOT NULL
        CHECK (length(idempotency_key) BETWEEN 1 AND 256 AND instr(idempotency_key, char(0)) = 0),
    task_id TEXT NOT NULL UNIQUE REFERENCES tasks(id) ON DELETE CASCADE,
    -- SHA-256, in lowercase hex, of the submitted content (see docs/QUEUE.md).
    content_hash TEXT NOT NULL
        CHECK (length(content_hash) = 64 AND content_hash NOT GLOB '*[^0-9a-f]*')
) STRICT, WITHOUT ROWID;
