//! Storage of versioned memories.

use async_trait::async_trait;
use serde_json::Value;

use crate::error::DatabaseError;
use crate::models::{Memory, MemoryType, NewMemory};

/// Stores memories. A key has one live version at most: the newest, unless the key is deleted.
#[async_trait]
pub trait MemoryRepository: Send + Sync {
    /// Adds a key. A key deleted earlier can be added again; its history continues, and the new
    /// value gets the next version number.
    ///
    /// # Errors
    /// `Validation` when [`NewMemory::validate`] rejects it; `UniqueViolation` when the key is
    /// live.
    async fn add(&self, memory: NewMemory) -> Result<Memory, DatabaseError>;

    /// The live version of a key, or `None` when the key is absent or deleted.
    ///
    /// # Errors
    /// `CorruptRow` when the stored row does not parse.
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Memory>, DatabaseError>;

    /// One version of a key, deleted or not, or `None`.
    ///
    /// # Errors
    /// `CorruptRow` when the stored row does not parse.
    async fn get_version(
        &self,
        namespace: &str,
        key: &str,
        version: u32,
    ) -> Result<Option<Memory>, DatabaseError>;

    /// Every version of a key, deleted ones included, oldest first. Empty when the key was
    /// never added.
    ///
    /// # Errors
    /// `CorruptRow` when a stored row does not parse.
    async fn list_versions(&self, namespace: &str, key: &str)
        -> Result<Vec<Memory>, DatabaseError>;

    /// Adds a new version of a live key with this value, keeping its type and metadata.
    ///
    /// # Errors
    /// `NotFound` when the key is absent or deleted; `Validation` for an empty `updated_by` or
    /// a value nested deeper than [`crate::models::MAX_JSON_DEPTH`].
    async fn update(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
        updated_by: &str,
    ) -> Result<Memory, DatabaseError>;

    /// Marks every version of a live key deleted. History stays readable.
    ///
    /// # Errors
    /// `NotFound` when the key is absent or already deleted.
    async fn delete(&self, namespace: &str, key: &str) -> Result<(), DatabaseError>;

    /// How many live keys there are under namespaces starting with `namespace_prefix`.
    ///
    /// # Errors
    /// Only the store's own failures.
    async fn count(&self, namespace_prefix: &str) -> Result<i64, DatabaseError>;

    /// Up to `limit` live memories whose namespace starts with `namespace_prefix` (matched
    /// literally: `%` and `_` are plain characters), optionally of one type, ordered by
    /// namespace and key.
    ///
    /// # Errors
    /// `Validation` for a `limit` outside 1 to [`crate::limits::MAX_PAGE`]; `CorruptRow` when a
    /// stored row does not parse.
    async fn search(
        &self,
        namespace_prefix: &str,
        memory_type: Option<MemoryType>,
        limit: usize,
    ) -> Result<Vec<Memory>, DatabaseError>;
}
