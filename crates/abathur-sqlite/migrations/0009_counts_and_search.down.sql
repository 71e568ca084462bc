DROP TRIGGER task_summaries_update;
DROP TRIGGER task_summaries_delete;
DROP TRIGGER task_summaries_insert;
DROP TABLE task_summaries;
DROP TRIGGER task_status_counts_update;
DROP TRIGGER task_status_counts_delete;
DROP TRIGGER task_status_counts_insert;
DROP TABLE task_status_counts;
