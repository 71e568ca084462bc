-- The live version of one key: the newest non-deleted version, read from the primary key.
SELECT namespace, key, version, value, memory_type, is_deleted, metadata,
    created_by, updated_by, created_at, updated_at
FROM memories
WHERE namespace = ? AND key = ? AND is_deleted = 0
ORDER BY version DESC
LIMIT 1
