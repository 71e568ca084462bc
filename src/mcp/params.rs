//! The arguments of each tool: what a client sends, with the JSON schema it is told about.
//!
//! Ids and timestamps arrive as strings and are parsed here, so that a bad one is reported
//! with the argument's name. Unknown arguments are refused, so a misspelt optional
//! argument is an error rather than silently ignored.

use std::borrow::Cow;

use abathur_core::models::{DependencyType, MemoryType, TaskSource, TaskStatus, UnknownVariant};
use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::reply::ToolError;

/// A value of one of the domain's named enums (task status, memory type, ...), given by its
/// name. Its schema lists the names, taken from the enum itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice<T>(pub T);

/// The domain enums a [`Choice`] can hold.
pub trait Named: Copy + std::str::FromStr<Err = UnknownVariant> + 'static {
    /// What the enum is called in messages and schemas.
    const KIND: &'static str;
    /// Every value, in declaration order.
    fn all() -> &'static [Self];
    /// The value's name.
    fn name(self) -> &'static str;
}

macro_rules! named {
    ($($ty:ty => $kind:literal),+ $(,)?) => {$(
        impl Named for $ty {
            const KIND: &'static str = $kind;
            fn all() -> &'static [Self] {
                <$ty>::ALL
            }
            fn name(self) -> &'static str {
                self.as_str()
            }
        }
    )+};
}

named! {
    TaskStatus => "TaskStatus",
    TaskSource => "TaskSource",
    DependencyType => "DependencyType",
    MemoryType => "MemoryType",
}

impl<'de, T: Named> Deserialize<'de> for Choice<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse::<T>()
            .map(Choice)
            .map_err(|e| serde::de::Error::custom(e.to_string()))
    }
}

impl<T: Named> JsonSchema for Choice<T> {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed(T::KIND)
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = T::all().iter().map(|v| v.name()).collect();
        schemars::json_schema!({ "type": "string", "enum": names })
    }
}

/// `text` as a UUID, or an argument error naming `field`.
pub fn parse_id(field: &str, text: &str) -> Result<Uuid, ToolError> {
    Uuid::try_parse(text.trim()).map_err(|_| {
        ToolError::argument(format!(
            "invalid {field}: {text:?} is not an id; an id is a full UUID, like \
             67e55044-10b1-426f-9247-bb680e5fe0c8"
        ))
    })
}

/// `text`, when given, as a UUID.
pub fn parse_opt_id(field: &str, text: Option<&str>) -> Result<Option<Uuid>, ToolError> {
    text.map(|t| parse_id(field, t)).transpose()
}

/// Every entry of `texts` as a UUID.
pub fn parse_ids(field: &str, texts: &[String]) -> Result<Vec<Uuid>, ToolError> {
    texts.iter().map(|t| parse_id(field, t)).collect()
}

/// `value`, when given, as a `T` from `min` to `max`: the same message below the range as
/// above it ([`abathur_core::limits::check_range`]).
pub fn in_range<T: TryFrom<i64>>(
    field: &'static str,
    value: Option<i64>,
    min: i64,
    max: i64,
) -> Result<Option<T>, ToolError> {
    Ok(value
        .map(|v| abathur_core::limits::check_range(field, v, min, max))
        .transpose()?)
}

/// `text`, when given, as an RFC 3339 timestamp in the range every timestamp keeps
/// ([`abathur_core::timestamp::check`]).
pub fn parse_opt_timestamp(
    field: &'static str,
    text: Option<&str>,
) -> Result<Option<DateTime<Utc>>, ToolError> {
    text.map(|t| {
        let at = DateTime::parse_from_rfc3339(t.trim())
            .map(|at| at.with_timezone(&Utc))
            .map_err(|e| {
                ToolError::argument(format!(
                    "invalid {field}: {t:?} is not an RFC 3339 timestamp ({e}); one looks like \
                     2030-01-31T17:00:00Z"
                ))
            })?;
        abathur_core::timestamp::check(field, &at)?;
        Ok(at)
    })
    .transpose()
}

/// Marks a string argument as a UUID in the schema.
fn uuid_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({ "type": "string", "format": "uuid" })
}

/// Marks an optional argument as a UUID or null in the schema.
fn optional_uuid_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({ "type": ["string", "null"], "format": "uuid" })
}

/// Marks an optional argument as an RFC 3339 timestamp or null in the schema.
fn optional_timestamp_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({ "type": ["string", "null"], "format": "date-time" })
}

/// Marks a list argument as a list of UUIDs in the schema.
fn uuid_list_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({ "type": "array", "items": { "type": "string", "format": "uuid" } })
}

/// Any JSON value: object, array, string, number, boolean or null.
fn any_json(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({})
}

// ---------------------------------------------------------------------------------------------
// Task queue
// ---------------------------------------------------------------------------------------------

/// Arguments of `task_enqueue`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskEnqueue {
    /// What the task is about, in full.
    pub description: String,
    /// One line, at most 140 characters. Defaults to the description's first line.
    pub summary: Option<String>,
    /// The kind of agent that should run the task. Default `generic`.
    pub agent_type: Option<String>,
    /// Base priority, 0 (lowest) to 10 (highest). Default 5.
    #[schemars(range(min = 0, max = 10))]
    pub priority: Option<i64>,
    /// Ids of tasks that must complete before this one becomes ready.
    #[serde(default)]
    #[schemars(schema_with = "uuid_list_schema")]
    pub depends_on: Vec<String>,
    /// How the dependencies relate: `sequential` (default) or `parallel`.
    pub dependency_type: Option<Choice<DependencyType>>,
    /// Id of the task this one is part of.
    #[serde(default)]
    #[schemars(schema_with = "optional_uuid_schema")]
    pub parent: Option<String>,
    /// Id of the session this task belongs to.
    #[serde(default)]
    #[schemars(schema_with = "optional_uuid_schema")]
    pub session: Option<String>,
    /// When the task should be done, as an RFC 3339 timestamp (`2030-01-31T17:00:00Z`). Its
    /// priority rises as the deadline nears.
    #[serde(default)]
    #[schemars(schema_with = "optional_timestamp_schema")]
    pub deadline: Option<String>,
    /// Input for the agent that runs the task: any JSON value.
    #[serde(default)]
    #[schemars(schema_with = "any_json")]
    pub input: Option<Value>,
    /// How many times a failed attempt is retried before the task fails. Default 3.
    #[schemars(range(min = 0, max = 4294967295u32))]
    pub max_retries: Option<i64>,
    /// Seconds an attempt may run before it is timed out. Default 3600.
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub timeout_seconds: Option<i64>,
    /// A guess of how long the task takes, in seconds.
    #[schemars(range(min = 0, max = 4294967295u32))]
    pub estimated_duration_seconds: Option<i64>,
    /// The feature branch the work belongs to.
    pub feature_branch: Option<String>,
    /// The branch the task's own work goes on.
    pub task_branch: Option<String>,
    /// Who is submitting, for the history. Default `mcp`.
    pub created_by: Option<String>,
    /// Who submitted the task. Default `agent_planner`.
    pub source: Option<Choice<TaskSource>>,
    /// Not claimable before this time: a time from now (`+10m`, `+2h`) or an RFC 3339
    /// timestamp. With depends_on, the task waits for both.
    #[serde(default)]
    pub run_after: Option<String>,
    /// A name for this submission (1 to 256 bytes), so that retrying the call after a timeout
    /// returns the task it made instead of making a second one (`existing` is then true). The
    /// same key with a different task (other than deadline and run_after) is a conflict.
    /// Remembered as long as its task is kept.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Arguments of `task_get`, `task_cancel` and friends that name one task.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskId {
    /// The task's id (a full UUID).
    #[schemars(schema_with = "uuid_schema")]
    pub task_id: String,
}

/// Arguments of `task_cancel`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskCancel {
    /// The task's id (a full UUID).
    #[schemars(schema_with = "uuid_schema")]
    pub task_id: String,
    /// Who is cancelling, for the history. Default `mcp`.
    pub actor: Option<String>,
}

/// Arguments of `task_list`. Every filter left out matches everything.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskList {
    /// Only tasks with this status.
    pub status: Option<Choice<TaskStatus>>,
    /// Only tasks for this agent type.
    pub agent_type: Option<String>,
    /// Only tasks on this feature branch.
    pub feature_branch: Option<String>,
    /// Only tasks of this session.
    #[serde(default)]
    #[schemars(schema_with = "optional_uuid_schema")]
    pub session_id: Option<String>,
    /// Only children of this task.
    #[serde(default)]
    #[schemars(schema_with = "optional_uuid_schema")]
    pub parent_task_id: Option<String>,
    /// Only tasks from this source.
    pub source: Option<Choice<TaskSource>>,
    /// Base priority at least this.
    #[schemars(range(min = 0, max = 10))]
    pub min_priority: Option<i64>,
    /// Base priority at most this.
    #[schemars(range(min = 0, max = 10))]
    pub max_priority: Option<i64>,
    /// Submitted at or after this instant (RFC 3339).
    #[serde(default)]
    #[schemars(schema_with = "optional_timestamp_schema")]
    pub submitted_after: Option<String>,
    /// Submitted strictly before this instant (RFC 3339).
    #[serde(default)]
    #[schemars(schema_with = "optional_timestamp_schema")]
    pub submitted_before: Option<String>,
    /// At most this many tasks. Default 50, at most 1000.
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
    /// Skip this many tasks first. Default 0.
    #[schemars(range(min = 0, max = 4294967295u32))]
    pub offset: Option<i64>,
}

/// Arguments of `task_queue_status`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueStatus {
    /// Show at most this many running attempts, the soonest to expire first. Default 20, at
    /// most 1000.
    #[schemars(range(min = 0, max = 1000))]
    pub running_limit: Option<i64>,
}

/// Arguments of `task_execution_plan`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutionPlan {
    /// Plan at most this many unfinished tasks, the most urgent first. Default 500, at most
    /// 1000.
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
}

/// Arguments of `task_claim`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskClaim {
    /// Who is claiming; recorded on the attempt and in the history.
    pub worker_id: String,
    /// Only tasks for these agent types. Any type when left out or empty.
    #[serde(default)]
    pub agent_types: Vec<String>,
    /// How long the lease lasts without a heartbeat, in seconds. Default 300.
    #[schemars(range(min = 1, max = 86400))]
    pub lease_seconds: Option<i64>,
    /// At most this many tasks. Default 1, at most 1000.
    #[schemars(range(min = 1, max = 1000))]
    pub max: Option<i64>,
    /// When nothing is ready, wait up to this many seconds (at most 300) for a task to become
    /// claimable, and claim it then. Default 0: answer at once.
    #[schemars(range(min = 0, max = 300))]
    pub wait_seconds: Option<i64>,
}

/// Arguments of `task_heartbeat`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskHeartbeat {
    /// The attempt id that `task_claim` returned.
    #[schemars(schema_with = "uuid_schema")]
    pub attempt_id: String,
    /// The new lease, in seconds from now. Default 300.
    #[schemars(range(min = 1, max = 86400))]
    pub lease_seconds: Option<i64>,
}

/// Arguments of `task_complete`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskComplete {
    /// The attempt id that `task_claim` returned.
    #[schemars(schema_with = "uuid_schema")]
    pub attempt_id: String,
    /// The task's result: any JSON value.
    #[serde(default)]
    #[schemars(schema_with = "any_json")]
    pub result: Option<Value>,
}

/// Arguments of `task_fail`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskFail {
    /// The attempt id that `task_claim` returned.
    #[schemars(schema_with = "uuid_schema")]
    pub attempt_id: String,
    /// What went wrong.
    pub error: String,
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// Arguments of `memory_add`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryAdd {
    /// The namespace, a path such as `project/conventions`.
    pub namespace: String,
    /// The key within the namespace.
    pub key: String,
    /// The value: any JSON value.
    #[schemars(schema_with = "any_json")]
    pub value: Value,
    /// The kind of knowledge. Default `semantic`.
    pub memory_type: Option<Choice<MemoryType>>,
    /// Free-form metadata: any JSON value.
    #[serde(default)]
    #[schemars(schema_with = "any_json")]
    pub metadata: Option<Value>,
    /// Who is adding it. Default `mcp`.
    pub created_by: Option<String>,
}

/// Arguments of `memory_get`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryGet {
    /// The namespace.
    pub namespace: String,
    /// The key within the namespace.
    pub key: String,
    /// One version, deleted or not. The live version when left out.
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub version: Option<i64>,
}

/// Arguments of `memory_delete` and `memory_history`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryKey {
    /// The namespace.
    pub namespace: String,
    /// The key within the namespace.
    pub key: String,
}

/// Arguments of `memory_search`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemorySearch {
    /// Namespaces starting with this text, matched literally. Empty matches every namespace.
    pub prefix: String,
    /// Only memories of this kind.
    pub memory_type: Option<Choice<MemoryType>>,
    /// At most this many memories. Default 100, at most 1000.
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
}

/// Arguments of `memory_update`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryUpdate {
    /// The namespace.
    pub namespace: String,
    /// The key within the namespace.
    pub key: String,
    /// The new value: any JSON value.
    #[schemars(schema_with = "any_json")]
    pub value: Value,
    /// Who is updating it. Default `mcp`.
    pub updated_by: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

/// Arguments of `session_create`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionCreate {
    /// The application the session belongs to.
    pub app_name: String,
    /// The user the session is for.
    pub user_id: String,
    /// The project, if any.
    pub project_id: Option<String>,
    /// Initial state: a JSON object.
    pub state: Option<Map<String, Value>>,
}

/// Arguments of `session_append_event`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionAppendEvent {
    /// The session's id (a full UUID).
    #[schemars(schema_with = "uuid_schema")]
    pub session_id: String,
    /// What kind of event it is (`message`, `tool_call`, ...).
    pub event_type: String,
    /// Who caused it.
    pub actor: String,
    /// What happened: any JSON value.
    #[schemars(schema_with = "any_json")]
    pub content: Value,
}

/// Arguments of `session_get_state`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionGetState {
    /// The session's id (a full UUID).
    #[schemars(schema_with = "uuid_schema")]
    pub session_id: String,
    /// One key. The whole state when left out.
    pub key: Option<String>,
}

/// Arguments of `session_set_state`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionSetState {
    /// The session's id (a full UUID).
    #[schemars(schema_with = "uuid_schema")]
    pub session_id: String,
    /// The key to set.
    pub key: String,
    /// Its value: any JSON value.
    #[schemars(schema_with = "any_json")]
    pub value: Value,
}
