//! `abathur memory ...`: versioned knowledge under a namespace and key.

use abathur_core::error::DatabaseError;
use abathur_core::models::{Memory, MemoryType, NewMemory};
use clap::Subcommand;
use serde_json::Value;
use std::fmt::Write as _;

use super::args::ranged;
use super::error::CliError;
use super::json_value;
use super::render::{instant, one_line, Rendered, View};
use super::Context;
use abathur_core::limits::MAX_PAGE;

/// `abathur memory ...`
#[derive(Debug, Subcommand)]
pub enum MemoryCommand {
    /// Store a new key (version 1, or the next version of a deleted key).
    Add {
        namespace: String,
        key: String,
        /// A JSON value, or @FILE to read it from a file; with --text, plain text (or @FILE).
        value: String,
        /// Take VALUE (or the file @FILE names) as plain text rather than JSON.
        #[arg(long)]
        text: bool,
        /// semantic (facts), episodic (events) or procedural (how-to).
        #[arg(long = "type", value_name = "TYPE", default_value = "semantic", value_parser = parse_type)]
        memory_type: MemoryType,
        /// Extra JSON about the memory.
        #[arg(long, value_name = "JSON|@FILE")]
        metadata: Option<String>,
        /// Who is writing it.
        #[arg(long = "by", value_name = "NAME", default_value = "human")]
        by: String,
    },
    /// Show the current version of a key (or an older one with --version).
    Get {
        namespace: String,
        key: String,
        #[arg(long, value_name = "N", allow_negative_numbers = true,
              value_parser = ranged::<u32>(1, i64::from(u32::MAX)))]
        version: Option<u32>,
    },
    /// Store a new version of a key.
    Update {
        namespace: String,
        key: String,
        /// A JSON value, or @FILE to read it from a file; with --text, plain text (or @FILE).
        value: String,
        /// Take VALUE (or the file @FILE names) as plain text rather than JSON.
        #[arg(long)]
        text: bool,
        /// Who is writing it.
        #[arg(long = "by", value_name = "NAME", default_value = "human")]
        by: String,
    },
    /// Delete a key (its history is kept).
    Delete { namespace: String, key: String },
    /// Current memories whose namespace starts with PREFIX.
    Search {
        prefix: String,
        #[arg(long = "type", value_name = "TYPE", value_parser = parse_type)]
        memory_type: Option<MemoryType>,
        /// At most this many memories (1 to 1000).
        #[arg(long, value_name = "N", default_value_t = 50, allow_negative_numbers = true,
              value_parser = ranged::<usize>(1, i64::from(MAX_PAGE)))]
        limit: usize,
    },
    /// Every version of a key, oldest first.
    History { namespace: String, key: String },
}

impl MemoryCommand {
    /// True for the commands that only read: they never create or migrate the database.
    pub fn reads_only(&self) -> bool {
        match self {
            Self::Get { .. } | Self::Search { .. } | Self::History { .. } => true,
            Self::Add { .. } | Self::Update { .. } | Self::Delete { .. } => false,
        }
    }
}

fn parse_type(text: &str) -> Result<MemoryType, String> {
    text.parse::<MemoryType>().map_err(|e| e.to_string())
}

fn value(text: &str, plain: bool) -> Result<Value, CliError> {
    if plain {
        Ok(Value::String(
            json_value::read_text("value", text)?.into_owned(),
        ))
    } else {
        json_value::read("value", text)
    }
}

/// Runs one `abathur memory ...` command.
pub async fn run(cx: &Context, command: MemoryCommand) -> Result<View, CliError> {
    let repo = &cx.memories;
    let rendered = match command {
        MemoryCommand::Add {
            namespace,
            key,
            value: text,
            text: plain,
            memory_type,
            metadata,
            by,
        } => one(&repo
            .add(NewMemory {
                namespace,
                key,
                value: value(&text, plain)?,
                memory_type,
                metadata: json_value::read_opt("metadata", metadata.as_deref())?,
                created_by: by,
            })
            .await?)?,
        MemoryCommand::Get {
            namespace,
            key,
            version,
        } => {
            let found = match version {
                Some(v) => repo.get_version(&namespace, &key, v).await?,
                None => repo.get(&namespace, &key).await?,
            };
            let id = match version {
                Some(v) => format!("{namespace}/{key} version {v}"),
                None => format!("{namespace}/{key}"),
            };
            one(&found.ok_or_else(|| DatabaseError::not_found("memory", id))?)?
        }
        MemoryCommand::Update {
            namespace,
            key,
            value: text,
            text: plain,
            by,
        } => one(&repo
            .update(&namespace, &key, value(&text, plain)?, &by)
            .await?)?,
        MemoryCommand::Delete { namespace, key } => {
            repo.delete(&namespace, &key).await?;
            Rendered {
                json: serde_json::json!({ "namespace": namespace, "key": key, "deleted": true }),
                human: format!("deleted {namespace}/{key}\n"),
            }
        }
        MemoryCommand::Search {
            prefix,
            memory_type,
            limit,
        } => many(&repo.search(&prefix, memory_type, limit).await?)?,
        MemoryCommand::History { namespace, key } => {
            let versions = repo.list_versions(&namespace, &key).await?;
            if versions.is_empty() {
                return Err(
                    DatabaseError::not_found("memory", format!("{namespace}/{key}")).into(),
                );
            }
            many(&versions)?
        }
    };
    Ok(View::Rendered(rendered))
}

fn one(memory: &Memory) -> Result<Rendered, CliError> {
    Rendered::of(memory, describe(memory))
}

fn many(memories: &[Memory]) -> Result<Rendered, CliError> {
    let human = if memories.is_empty() {
        "no memories\n".to_string()
    } else {
        memories.iter().map(describe).collect::<Vec<_>>().join("\n")
    };
    Rendered::of(&memories, human)
}

fn describe(memory: &Memory) -> String {
    let mut out = format!(
        "[{}] {}  version {}  {}{}\n  by {} at {}\n",
        one_line(&memory.namespace),
        one_line(&memory.key),
        memory.version,
        memory.memory_type,
        if memory.is_deleted { "  (deleted)" } else { "" },
        one_line(&memory.updated_by),
        instant(&memory.updated_at),
    );
    let value = serde_json::to_string_pretty(&memory.value).unwrap_or_default();
    for line in value.lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}
