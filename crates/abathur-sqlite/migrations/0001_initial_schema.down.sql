-- Reverts 0001_initial_schema: drops every table it made, dependents first.
DROP TABLE IF EXISTS audit;
DROP TRIGGER IF EXISTS session_events_are_append_only;
DROP TABLE IF EXISTS session_events;
DROP TABLE IF EXISTS memories;
DROP TABLE IF EXISTS agents;
DROP TABLE IF EXISTS task_dependencies;
DROP TABLE IF EXISTS tasks;
DROP TABLE IF EXISTS sessions;
