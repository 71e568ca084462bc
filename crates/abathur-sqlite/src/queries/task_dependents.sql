-- The tasks that depend on one task, through the edge index idx_task_dependencies_depends_on.
SELECT t.id AS "id!", t.summary AS "summary!", t.description AS "description!",
    t.agent_type AS "agent_type!", t.priority AS "priority!",
    t.calculated_priority AS "calculated_priority!", t.status AS "status!",
    t.dependencies, t.dependency_type AS "dependency_type!",
    t.dependency_depth AS "dependency_depth!", t.input_data, t.result_data,
    t.error_message, t.retry_count AS "retry_count!",
    t.max_retries AS "max_retries!",
    t.max_execution_timeout_seconds AS "max_execution_timeout_seconds!",
    t.submitted_at AS "submitted_at!", t.started_at, t.completed_at,
    t.last_updated_at AS "last_updated_at!", t.created_by, t.parent_task_id,
    t.session_id, t.source AS "source!", t.deadline, t.estimated_duration_seconds,
    t.feature_branch, t.task_branch, t.worktree_path
FROM task_dependencies d JOIN tasks t ON t.id = d.task_id
WHERE d.depends_on_task_id = ?
ORDER BY t.calculated_priority DESC, t.submitted_at ASC, t.id ASC
