//! What agents learn and keep: versioned values under a namespace and key.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::check_name;
use super::text_enum;
use crate::error::ValidationError;
use crate::limits;

text_enum! {
    /// The kind of knowledge a memory holds.
    MemoryType, "memory type" {
        /// Facts and concepts.
        Semantic => "semantic",
        /// Things that happened.
        Episodic => "episodic",
        /// How to do things.
        Procedural => "procedural",
    }
}

/// One version of a memory. Every update adds a version; deleting marks every version deleted,
/// and history is never removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub namespace: String,
    pub key: String,
    pub value: Value,
    pub memory_type: MemoryType,
    /// 1 for the first version of a key, one more for each later version, across deletes.
    pub version: u32,
    pub is_deleted: bool,
    pub metadata: Option<Value>,
    pub created_by: String,
    pub updated_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A memory to add; the store assigns its version and timestamps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMemory {
    pub namespace: String,
    pub key: String,
    pub value: Value,
    pub memory_type: MemoryType,
    pub metadata: Option<Value>,
    pub created_by: String,
}

impl NewMemory {
    /// Checks that the namespace, key and author are names ([`check_name`]), and that the
    /// value and metadata are within their size limits and nest at most
    /// [`super::MAX_JSON_DEPTH`] deep.
    ///
    /// # Errors
    /// Returns a [`ValidationError`] naming the field at fault.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_name("namespace", &self.namespace)?;
        check_name("key", &self.key)?;
        check_name("created_by", &self.created_by)?;
        super::check_json("value", &self.value, limits::MAX_MEMORY_VALUE_BYTES)?;
        if let Some(metadata) = &self.metadata {
            super::check_json("metadata", metadata, limits::MAX_METADATA_BYTES)?;
        }
        Ok(())
    }
}
