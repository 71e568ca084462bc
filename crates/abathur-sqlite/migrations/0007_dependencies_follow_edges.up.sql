-- The edges of task_dependencies are the truth of what a task waits for; tasks.dependencies,
-- the JSON list the specification keeps, is written from the same value as the edges when a
-- task is stored or updated. When an edge goes without its task being rewritten (its
-- dependency is deleted or pruned, and ON DELETE CASCADE removes the edge), this trigger
-- removes the id from the list in the same statement, so the two never disagree.
CREATE TRIGGER task_dependencies_follow_edges
AFTER DELETE ON task_dependencies
BEGIN
    UPDATE tasks
    SET dependencies = (SELECT json_group_array(value) FROM json_each(tasks.dependencies)
                        WHERE value <> OLD.depends_on_task_id)
    WHERE id = OLD.task_id
      AND EXISTS (SELECT 1 FROM json_each(tasks.dependencies)
                  WHERE value = OLD.depends_on_task_id);
END;

-- Lists written before this trigger existed: an id whose edge is gone is dropped.
UPDATE tasks
SET dependencies = (SELECT json_group_array(value) FROM json_each(tasks.dependencies) j
                    WHERE EXISTS (SELECT 1 FROM task_dependencies d
                                  WHERE d.task_id = tasks.id AND d.depends_on_task_id = j.value))
WHERE dependencies IS NOT NULL
  AND EXISTS (SELECT 1 FROM json_each(tasks.dependencies) j
              WHERE NOT EXISTS (SELECT 1 FROM task_dependencies d
                                WHERE d.task_id = tasks.id AND d.depends_on_task_id = j.value));
