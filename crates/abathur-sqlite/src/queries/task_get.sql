-- A whole task by id: the repository's `get`.
SELECT id, summary, description, agent_type, priority, calculated_priority,
    status, dependencies, dependency_type, dependency_depth, input_data, result_data,
    error_message, retry_count, max_retries, max_execution_timeout_seconds,
    submitted_at, started_at, completed_at, last_updated_at, created_by,
    parent_task_id, session_id, source, deadline, estimated_duration_seconds,
    feature_branch, task_branch, worktree_path
FROM tasks
WHERE id = ?
