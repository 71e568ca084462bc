-- A page of one session's events in time order, from idx_session_events_session_timestamp.
SELECT session_id, sequence, event_type, actor, content, timestamp
FROM session_events
WHERE session_id = ?
ORDER BY timestamp, sequence
LIMIT ? OFFSET ?
