DROP TRIGGER IF EXISTS task_dependencies_follow_edges;
