-- Live memories under a namespace prefix: an index range of the primary key, bounded above by
-- the prefix's successor (X'FF', which sorts after all text, when there is none).
SELECT m.namespace, m.key, m.version, m.value, m.memory_type, m.is_deleted,
    m.metadata, m.created_by, m.updated_by, m.created_at, m.updated_at
FROM memories m
WHERE m.namespace >= ? AND m.namespace < COALESCE(?, X'FF')
    AND m.is_deleted = 0
    AND (? IS NULL OR m.memory_type = ?)
    AND m.version = (SELECT MAX(v.version) FROM memories v
                     WHERE v.namespace = m.namespace AND v.key = m.key)
ORDER BY m.namespace, m.key
LIMIT ?
