-- The blocked dependents of task ?1 whose dependencies are now all completed.
-- CROSS JOIN keeps the edge index as the outer loop: the cost follows the completed task's
-- dependents, never the number of blocked tasks in the table.
SELECT t.id AS "id!"
FROM task_dependencies d CROSS JOIN tasks t ON t.id = d.task_id
WHERE d.depends_on_task_id = ?1 AND t.status = 'blocked'
  AND NOT EXISTS (
      SELECT 1 FROM task_dependencies d2 JOIN tasks u ON u.id = d2.depends_on_task_id
      WHERE d2.task_id = t.id AND u.status <> 'completed')
