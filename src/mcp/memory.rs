//! The memory tools: versioned JSON values under a namespace and key.

use abathur_core::error::DatabaseError;
use abathur_core::models::{Memory, MemoryType, NewMemory};
use abathur_core::ports::MemoryRepository;
use serde::Serialize;

use super::params::{in_range, MemoryAdd, MemoryGet, MemoryKey, MemorySearch, MemoryUpdate};
use super::reply::ToolError;
use super::tasks::DEFAULT_ACTOR;
use abathur_core::limits::MAX_PAGE;

/// `memory_search` returns this many memories unless told otherwise.
const DEFAULT_SEARCH_LIMIT: u32 = 100;

/// `memory_add`.
pub async fn add(repo: &dyn MemoryRepository, args: MemoryAdd) -> Result<Memory, ToolError> {
    let memory = NewMemory {
        namespace: args.namespace,
        key: args.key,
        value: args.value,
        memory_type: args.memory_type.map_or(MemoryType::Semantic, |c| c.0),
        metadata: args.metadata,
        created_by: args.created_by.unwrap_or_else(|| DEFAULT_ACTOR.to_string()),
    };
    Ok(repo.add(memory).await?)
}

/// `memory_get`: the live version, or the version asked for.
pub async fn get(repo: &dyn MemoryRepository, args: MemoryGet) -> Result<Memory, ToolError> {
    let version = in_range::<u32>("version", args.version, 1, i64::from(u32::MAX))?;
    let found = match version {
        None => repo.get(&args.namespace, &args.key).await?,
        Some(version) => {
            repo.get_version(&args.namespace, &args.key, version)
                .await?
        }
    };
    found.ok_or_else(|| {
        let what = match version {
            None => format!("{}/{}", args.namespace, args.key),
            Some(v) => format!("{}/{} version {v}", args.namespace, args.key),
        };
        DatabaseError::not_found("memory", what).into()
    })
}

/// What `memory_search` returns.
#[derive(Debug, Serialize)]
pub struct Found {
    /// The live memories found, by namespace and key.
    pub memories: Vec<Memory>,
}

/// `memory_search`.
pub async fn search(repo: &dyn MemoryRepository, args: MemorySearch) -> Result<Found, ToolError> {
    // The repository refuses a limit outside 1 to `limits::MAX_PAGE`, as for the CLI.
    let limit =
        in_range("limit", args.limit, 1, i64::from(MAX_PAGE))?.unwrap_or(DEFAULT_SEARCH_LIMIT);
    let memories = repo
        .search(&args.prefix, args.memory_type.map(|c| c.0), limit as usize)
        .await?;
    Ok(Found { memories })
}

/// `memory_update`.
pub async fn update(repo: &dyn MemoryRepository, args: MemoryUpdate) -> Result<Memory, ToolError> {
    let by = args.updated_by.as_deref().unwrap_or(DEFAULT_ACTOR);
    Ok(repo
        .update(&args.namespace, &args.key, args.value, by)
        .await?)
}

/// What `memory_delete` returns.
#[derive(Debug, Serialize)]
pub struct Deleted {
    pub namespace: String,
    pub key: String,
    /// Always true: a key that is absent or already deleted is a `not_found` error.
    pub deleted: bool,
}

/// `memory_delete`.
pub async fn delete(repo: &dyn MemoryRepository, args: MemoryKey) -> Result<Deleted, ToolError> {
    repo.delete(&args.namespace, &args.key).await?;
    Ok(Deleted {
        namespace: args.namespace,
        key: args.key,
        deleted: true,
    })
}

/// What `memory_history` returns.
#[derive(Debug, Serialize)]
pub struct History {
    /// Every version of the key, deleted ones included, oldest first.
    pub versions: Vec<Memory>,
}

/// `memory_history`: a key that was never added is not found.
pub async fn history(repo: &dyn MemoryRepository, args: MemoryKey) -> Result<History, ToolError> {
    let versions = repo.list_versions(&args.namespace, &args.key).await?;
    if versions.is_empty() {
        return Err(
            DatabaseError::not_found("memory", format!("{}/{}", args.namespace, args.key)).into(),
        );
    }
    Ok(History { versions })
}
