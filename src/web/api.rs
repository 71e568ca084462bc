//! The JSON API at `/api/v1`, and its OpenAPI document, generated from the handlers and types
//! below (utoipa), so that the document cannot drift from what is served.
//!
//! Every failure is `{"error": {"kind": ..., "message": ...}}` with the status its kind
//! implies: the kinds of the MCP tools ([`ErrorKind`]), plus the guard's.
//!
//! The answers are types of their own, copied field by field from the domain's models rather
//! than the models themselves: the document describes exactly what is sent, and a change to a
//! model cannot change the API without a change here.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use abathur_core::models::{Task, TaskSource, TaskStatus};
use abathur_core::ports::{
    AgentRepository, MemoryRepository, SessionRepository, TaskCursor, TaskFilters, TaskOrder,
    TaskPageQuery, TaskRepository,
};
use abathur_core::queue::{QueueOverview, TaskEvent, TaskQueue};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, DurationRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::OpenApi as Document;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{agents, bulk, dag, events, knowledge};
use crate::backend::Backend;
use crate::mcp::{ErrorKind, ToolError};
use crate::waiting::ChangeFeed;

/// The actor the history names for an action taken through the API.
pub(super) const ACTOR: &str = "dashboard";

/// The most tasks a page of the task list holds.
pub const MAX_PAGE: u32 = 500;

/// The page size when none is asked for.
const DEFAULT_PAGE: u32 = 50;

/// The most related tasks (dependents, children) a task's detail lists.
const MAX_RELATED: usize = 200;

/// The most tasks a preview counts before it stops counting.
const MAX_REACH: usize = 10_000;

/// The most task rows a preview reads before it stops counting: a dense DAG makes many reads
/// of the same tasks, each bringing its whole row.
const MAX_REACH_ROWS: usize = 50_000;

/// What the handlers share.
#[derive(Clone)]
pub struct State {
    queue: Arc<TaskQueue>,
    tasks: Arc<dyn TaskRepository>,
    agents: Arc<dyn AgentRepository>,
    memories: Arc<dyn MemoryRepository>,
    sessions: Arc<dyn SessionRepository>,
    feed: ChangeFeed,
    overview: Arc<OverviewCache>,
    read_only: bool,
    stop: CancellationToken,
}

/// The overview as last read, kept until the database may have changed: counting tasks per
/// status reads every task, so it is read again only after a change (or the feed's recheck,
/// at least once a second), once for every request that waits meanwhile.
struct OverviewCache {
    /// Keeps the feed's watcher running while the server does.
    wake: crate::waiting::FeedWake,
    last: tokio::sync::Mutex<Option<(u64, Arc<Overview>)>>,
}

impl State {
    pub fn new(backend: &Backend, read_only: bool, stop: CancellationToken) -> Self {
        let feed = ChangeFeed::new(backend.changes.clone());
        Self {
            queue: Arc::new(TaskQueue::new(backend.queue_store.clone())),
            tasks: backend.tasks.clone(),
            agents: backend.agents.clone(),
            memories: backend.memories.clone(),
            sessions: backend.sessions.clone(),
            overview: Arc::new(OverviewCache {
                wake: feed.subscribe(),
                last: tokio::sync::Mutex::new(None),
            }),
            feed,
            read_only,
            stop,
        }
    }

    pub fn queue(&self) -> &TaskQueue {
        &self.queue
    }

    /// Forgets the overview read before an action of this server's, so that the next one
    /// shows what the action did without waiting for the feed to see it.
    pub async fn changed(&self) {
        *self.overview.last.lock().await = None;
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    pub fn tasks(&self) -> &dyn TaskRepository {
        self.tasks.as_ref()
    }

    pub fn agents(&self) -> &dyn AgentRepository {
        self.agents.as_ref()
    }

    pub fn memories(&self) -> &dyn MemoryRepository {
        self.memories.as_ref()
    }

    pub fn sessions(&self) -> &dyn SessionRepository {
        self.sessions.as_ref()
    }

    pub fn feed(&self) -> &ChangeFeed {
        &self.feed
    }

    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "abathur",
        description = "The task queue of an agent swarm: its tasks, their history, and the \
                       actions a person may take on them."
    ),
    tags((name = "tasks", description = "The queue's tasks"), (name = "agents", description = "The agent registry"),
          (name = "memory", description = "What the agents learned, and their sessions"), (name = "live", description = "Changes as they happen"))
)]
struct ApiDoc;

/// What the guard adds to every operation: the two ways to authenticate (needed only when the
/// server has a token), and the answers it may give before a handler runs.
struct Guarded;

impl utoipa::Modify for Guarded {
    fn modify(&self, openapi: &mut Document) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The server's token (ABATHUR_TOKEN or --token-file)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "abathur_session_PORT",
                "The cookie a sign-in at /login sets; its name ends with the server's port",
            ))),
        );
        // Either, or none at all on a server without a token.
        openapi.security = Some(vec![
            SecurityRequirement::default(),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("session", Vec::<String>::new()),
        ]);
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let writes = item.post.is_some();
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                for (status, description) in [
                    ("400", "A malformed request, or more than one Host header"),
                    (
                        "401",
                        "The server has a token, and the request carries neither it nor a session",
                    ),
                    ("421", "The Host header names another server"),
                ] {
                    responses
                        .entry(status.to_string())
                        .or_insert_with(|| error(description).into());
                }
                if writes {
                    responses.entry("403".to_string()).or_insert_with(|| {
                        error("From another origin, or the server is read-only").into()
                    });
                }
            }
        }
    }
}

/// The API's routes, with their document.
pub fn router() -> OpenApiRouter<State> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(overview))
        .routes(routes!(list_tasks))
        .routes(routes!(task_detail))
        .routes(routes!(reach))
        .routes(routes!(cancel))
        .routes(routes!(retry))
        .routes(routes!(bulk::preview))
        .routes(routes!(bulk::act))
        .routes(routes!(dag::task_dag))
        .routes(routes!(dag::session_dag))
        .routes(routes!(agents::agents))
        .routes(routes!(knowledge::memories))
        .routes(routes!(knowledge::memory_versions))
        .routes(routes!(knowledge::session))
        .routes(routes!(events::stream))
        .routes(routes!(openapi_json))
}

/// The API's OpenAPI document.
pub fn document() -> Document {
    let mut document = router().into_openapi();
    utoipa::Modify::modify(&Guarded, &mut document);
    document
}

// ---------------------------------------------------------------------------------------------
// Errors

/// A failed call: what kind of failure, and what went wrong in the user's terms.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_argument`, `not_found`, `conflict`, `busy`, `unavailable`, `internal`, or the
    /// guard's `unauthorized`, `cross_origin`, `read_only`, `wrong_host`.
    pub kind: String,
    pub message: String,
}

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: String,
    message: String,
}

impl ApiError {
    pub(super) fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "not_found".into(),
            message: message.into(),
        }
    }

    pub(super) fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_argument".into(),
            message: message.into(),
        }
    }

    pub(super) fn read_only() -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            kind: "read_only".into(),
            message: "the server runs with --read-only: nothing can be changed through it".into(),
        }
    }
}

/// A queue failure in the user's terms, as the API would answer it.
pub(super) fn describe(error: abathur_core::queue::QueueError) -> String {
    ToolError::from(error).message
}

impl From<ToolError> for ApiError {
    fn from(err: ToolError) -> Self {
        let status = match err.kind {
            ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Busy | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let kind = serde_json::to_value(err.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "internal".into());
        Self {
            status,
            kind,
            message: err.message,
        }
    }
}

impl From<abathur_core::queue::QueueError> for ApiError {
    fn from(err: abathur_core::queue::QueueError) -> Self {
        ToolError::from(err).into()
    }
}

impl From<abathur_core::error::DatabaseError> for ApiError {
    fn from(err: abathur_core::error::DatabaseError) -> Self {
        ToolError::from(err).into()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::invalid(rejection.body_text())
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        Self::invalid(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::invalid(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.status == StatusCode::SERVICE_UNAVAILABLE && self.kind == "busy";
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind,
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

// ---------------------------------------------------------------------------------------------
// Representations

/// A task's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Blocked,
    Ready,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl From<TaskStatus> for Status {
    fn from(status: TaskStatus) -> Self {
        match status {
            TaskStatus::Pending => Self::Pending,
            TaskStatus::Blocked => Self::Blocked,
            TaskStatus::Ready => Self::Ready,
            TaskStatus::Running => Self::Running,
            TaskStatus::Completed => Self::Completed,
            TaskStatus::Failed => Self::Failed,
            TaskStatus::Cancelled => Self::Cancelled,
        }
    }
}

impl From<Status> for TaskStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Pending => Self::Pending,
            Status::Blocked => Self::Blocked,
            Status::Ready => Self::Ready,
            Status::Running => Self::Running,
            Status::Completed => Self::Completed,
            Status::Failed => Self::Failed,
            Status::Cancelled => Self::Cancelled,
        }
    }
}

/// Who made a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Human,
    AgentRequirements,
    AgentPlanner,
    AgentImplementation,
}

impl From<TaskSource> for Source {
    fn from(source: TaskSource) -> Self {
        match source {
            TaskSource::Human => Self::Human,
            TaskSource::AgentRequirements => Self::AgentRequirements,
            TaskSource::AgentPlanner => Self::AgentPlanner,
            TaskSource::AgentImplementation => Self::AgentImplementation,
        }
    }
}

impl From<Source> for TaskSource {
    fn from(source: Source) -> Self {
        match source {
            Source::Human => Self::Human,
            Source::AgentRequirements => Self::AgentRequirements,
            Source::AgentPlanner => Self::AgentPlanner,
            Source::AgentImplementation => Self::AgentImplementation,
        }
    }
}

/// The queue at a glance.
#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    /// When it was read, on the database's clock.
    pub at: DateTime<Utc>,
    /// Tasks per status, every status present.
    pub counts: StatusCounts,
    /// The ready task that has waited longest among those a worker could claim now.
    pub oldest_ready: Option<TaskRef>,
    /// Running attempts, the soonest lease to expire first (at most 20).
    pub running: Vec<Running>,
    /// Open attempts whose lease has already expired; the next reap takes them back.
    pub expired_leases: u64,
    /// Whether the server refuses every change (`--read-only`).
    pub read_only: bool,
    /// How many tasks finished in each of the last 60 minutes, oldest first, the current
    /// minute last.
    pub finished_per_minute: Vec<Minute>,
}

/// How many tasks finished in one minute, by how.
#[derive(Debug, Serialize, ToSchema)]
pub struct Minute {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// How many tasks have each status.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct StatusCounts {
    pub pending: u64,
    pub blocked: u64,
    pub ready: u64,
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// A running attempt and its lease.
#[derive(Debug, Serialize, ToSchema)]
pub struct Running {
    pub attempt_id: uuid::Uuid,
    pub task_id: uuid::Uuid,
    pub summary: String,
    pub worker_id: String,
    pub started_at: DateTime<Utc>,
    pub lease_expires_at: DateTime<Utc>,
}

/// A task named by another: enough to show it and link to it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskRef {
    pub id: uuid::Uuid,
    pub summary: String,
    pub status: Status,
}

impl From<&Task> for TaskRef {
    fn from(task: &Task) -> Self {
        Self {
            id: task.id,
            summary: task.summary.clone(),
            status: task.status.into(),
        }
    }
}

/// A row of the task list.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskRow {
    pub id: uuid::Uuid,
    pub summary: String,
    pub status: Status,
    pub agent_type: String,
    pub priority: u8,
    pub calculated_priority: f64,
    pub source: Source,
    pub retry_count: u32,
    pub submitted_at: DateTime<Utc>,
    pub last_updated_at: DateTime<Utc>,
    pub session_id: Option<uuid::Uuid>,
    pub feature_branch: Option<String>,
}

impl From<&Task> for TaskRow {
    fn from(task: &Task) -> Self {
        Self {
            id: task.id,
            summary: task.summary.clone(),
            status: task.status.into(),
            agent_type: task.agent_type.clone(),
            priority: task.priority,
            calculated_priority: task.calculated_priority,
            source: task.source.into(),
            retry_count: task.retry_count,
            submitted_at: task.submitted_at,
            last_updated_at: task.last_updated_at,
            session_id: task.session_id,
            feature_branch: task.feature_branch.clone(),
        }
    }
}

/// One page of the task list.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskPage {
    pub tasks: Vec<TaskRow>,
    /// The `after` of the next page; null on the last.
    pub next: Option<String>,
}

/// The order of the task list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// The latest submitted first.
    #[default]
    Newest,
    /// The earliest submitted first.
    Oldest,
    /// Highest calculated priority first, then the earliest submitted: the order workers
    /// claim in.
    Priority,
}

impl From<Order> for TaskOrder {
    fn from(order: Order) -> Self {
        match order {
            Order::Newest => Self::Newest,
            Order::Oldest => Self::Oldest,
            Order::Priority => Self::Priority,
        }
    }
}

/// A page cursor as text: `order~priority bits~submitted_at~id`. It carries the sort key of
/// the last task of a page, so the next page starts right after it however the table grew.
fn cursor_text(cursor: &TaskCursor) -> String {
    format!(
        "{}~{:016x}~{}~{}",
        cursor.order.as_str(),
        cursor.calculated_priority.to_bits(),
        abathur_core::timestamp::format(&cursor.submitted_at),
        cursor.id
    )
}

fn parse_cursor(text: &str) -> Result<TaskCursor, ApiError> {
    let bad = || {
        ApiError::invalid(format!(
            "after {text:?} is not a cursor: give the `next` of the previous page"
        ))
    };
    let mut parts = text.split('~');
    let (Some(order), Some(bits), Some(at), Some(id), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    let order = match order {
        "newest" => TaskOrder::Newest,
        "oldest" => TaskOrder::Oldest,
        "priority" => TaskOrder::Priority,
        _ => return Err(bad()),
    };
    let bits = u64::from_str_radix(bits, 16).map_err(|_| bad())?;
    Ok(TaskCursor {
        order,
        calculated_priority: f64::from_bits(bits),
        submitted_at: abathur_core::timestamp::parse(at).map_err(|_| bad())?,
        id: id.parse().map_err(|_| bad())?,
    })
}

/// Every field of a task.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskFields {
    pub id: uuid::Uuid,
    pub summary: String,
    pub description: String,
    pub agent_type: String,
    pub priority: u8,
    pub calculated_priority: f64,
    pub status: Status,
    pub dependencies: Vec<uuid::Uuid>,
    /// `sequential` or `parallel`.
    pub dependency_type: String,
    pub dependency_depth: u32,
    pub input_data: Option<Value>,
    pub result_data: Option<Value>,
    pub error_message: Option<String>,
    pub retry_count: u32,
    pub max_retries: u32,
    pub max_execution_timeout_seconds: u32,
    pub submitted_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub last_updated_at: DateTime<Utc>,
    pub created_by: Option<String>,
    pub parent_task_id: Option<uuid::Uuid>,
    pub session_id: Option<uuid::Uuid>,
    pub source: Source,
    pub deadline: Option<DateTime<Utc>>,
    pub estimated_duration_seconds: Option<u32>,
    pub feature_branch: Option<String>,
    pub task_branch: Option<String>,
    pub worktree_path: Option<String>,
}

impl From<Task> for TaskFields {
    fn from(task: Task) -> Self {
        Self {
            id: task.id,
            summary: task.summary,
            description: task.description,
            agent_type: task.agent_type,
            priority: task.priority,
            calculated_priority: task.calculated_priority,
            status: task.status.into(),
            dependencies: task.dependencies.unwrap_or_default(),
            dependency_type: task.dependency_type.as_str().to_string(),
            dependency_depth: task.dependency_depth,
            input_data: task.input_data,
            result_data: task.result_data,
            error_message: task.error_message,
            retry_count: task.retry_count,
            max_retries: task.max_retries,
            max_execution_timeout_seconds: task.max_execution_timeout_seconds,
            submitted_at: task.submitted_at,
            started_at: task.started_at,
            completed_at: task.completed_at,
            last_updated_at: task.last_updated_at,
            created_by: task.created_by,
            parent_task_id: task.parent_task_id,
            session_id: task.session_id,
            source: task.source.into(),
            deadline: task.deadline,
            estimated_duration_seconds: task.estimated_duration_seconds,
            feature_branch: task.feature_branch,
            task_branch: task.task_branch,
            worktree_path: task.worktree_path,
        }
    }
}

/// One status change of a task.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEvent {
    /// Orders events across the database.
    pub sequence: i64,
    /// Absent for the submission.
    pub from: Option<Status>,
    pub to: Status,
    pub at: DateTime<Utc>,
    /// The worker or person who caused it.
    pub actor: String,
    pub attempt_id: Option<uuid::Uuid>,
    pub reason: Option<String>,
}

impl From<TaskEvent> for HistoryEvent {
    fn from(event: TaskEvent) -> Self {
        Self {
            sequence: event.sequence,
            from: event.from.map(Into::into),
            to: event.to.into(),
            at: event.at,
            actor: event.actor,
            attempt_id: event.attempt_id,
            reason: event.reason,
        }
    }
}

/// A task with its history and its neighbours in the DAG.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskDetail {
    pub task: TaskFields,
    /// Its status changes, oldest first, each naming the attempt it belongs to, if any.
    pub history: Vec<HistoryEvent>,
    /// The tasks it waits for.
    pub waits_for: Vec<TaskRef>,
    /// The tasks that wait for it (at most 200; `needed_by_total` counts them all).
    pub needed_by: Vec<TaskRef>,
    pub needed_by_total: u64,
    /// Its children (`parent_task_id`; at most 200, `children_total` counts them all).
    pub children: Vec<TaskRef>,
    pub children_total: u64,
}

/// An action a person can take on a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Cancel the task, every unfinished task that depends on it and its children.
    Cancel,
    /// Put a failed task back, with its failed dependents.
    Retry,
}

impl Action {
    /// Whether the action applies to a task in `status`: cancel to an unfinished one, retry
    /// to a failed one.
    pub fn applies_to(self, status: TaskStatus) -> bool {
        match self {
            Self::Cancel => !status.is_terminal(),
            Self::Retry => status == TaskStatus::Failed,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReachQuery {
    /// The action to preview.
    #[param(inline)]
    pub action: Action,
}

/// What an action would reach if it were taken now: what the confirmation dialog says.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reach {
    pub action: Action,
    pub task: TaskRef,
    /// Whether the action applies to the task as it is now (a completed task cannot be
    /// cancelled; only a failed one can be retried).
    pub allowed: bool,
    /// Why not, when it is not allowed.
    pub reason: Option<String>,
    /// The other tasks it would reach: for cancel, the unfinished dependents and children,
    /// directly or not; for retry, the failed dependents that go back to waiting.
    pub others: u64,
    /// Whether the count stopped early (past 10,000 tasks, or 50,000 rows read in a dense
    /// DAG): `others` is then a lower bound.
    pub at_least: bool,
}

/// What an action did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Outcome {
    pub action: Action,
    pub task_id: uuid::Uuid,
    /// Cancel: every task cancelled, the task first. Retry: the dependents put back to
    /// waiting.
    pub changed: Vec<uuid::Uuid>,
}

/// Which tasks, as the task list filters them. A field it does not know is refused, so that a
/// misspelt one cannot widen an action to every task.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub status: Option<Status>,
    pub agent_type: Option<String>,
    pub session_id: Option<uuid::Uuid>,
    pub branch: Option<String>,
    pub source: Option<Source>,
    #[schema(minimum = 0, maximum = 10)]
    pub min_priority: Option<u8>,
    #[schema(minimum = 0, maximum = 10)]
    pub max_priority: Option<u8>,
    /// Text in the summary, ignoring case (SQLite folds ASCII letters only; PostgreSQL every
    /// letter); `%`, `_` and `\` are literal.
    pub q: Option<String>,
}

impl Filter {
    /// The store's filters and summary search; empty texts are no filter.
    pub(super) fn into_filters(self) -> Result<(TaskFilters, Option<String>), ApiError> {
        for (name, value) in [
            ("min_priority", self.min_priority),
            ("max_priority", self.max_priority),
        ] {
            if let Some(value) = value.filter(|v| *v > 10) {
                return Err(ApiError::invalid(format!(
                    "{name} {value} is outside 0 to 10"
                )));
            }
        }
        let filters = TaskFilters {
            status: self.status.map(Into::into),
            agent_type: self.agent_type.filter(|t| !t.is_empty()),
            feature_branch: self.branch.filter(|b| !b.is_empty()),
            session_id: self.session_id,
            source: self.source.map(Into::into),
            min_priority: self.min_priority,
            max_priority: self.max_priority,
            ..TaskFilters::default()
        };
        Ok((filters, self.q.filter(|q| !q.is_empty())))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskQuery {
    /// Only tasks with this status.
    #[param(inline)]
    pub status: Option<Status>,
    /// Only tasks for this agent type.
    pub agent_type: Option<String>,
    /// Only tasks of this session.
    pub session_id: Option<uuid::Uuid>,
    /// Only tasks on this feature branch.
    pub branch: Option<String>,
    /// Only tasks from this source.
    #[param(inline)]
    pub source: Option<Source>,
    /// Base priority at least this (0 to 10).
    #[param(minimum = 0, maximum = 10)]
    pub min_priority: Option<u8>,
    /// Base priority at most this (0 to 10).
    #[param(minimum = 0, maximum = 10)]
    pub max_priority: Option<u8>,
    /// Only tasks whose summary holds this text, ignoring case (SQLite folds ASCII letters
    /// only; PostgreSQL every letter); `%`, `_` and `\` are literal.
    pub q: Option<String>,
    /// `newest` (the default), `oldest` or `priority`.
    #[param(inline)]
    pub order: Option<Order>,
    /// Tasks per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Start after this: the `next` of the previous page, in the same order.
    pub after: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// The queue at a glance: counts per status, the oldest ready task, running attempts.
#[utoipa::path(get, path = "/api/v1/overview", tag = "tasks",
    responses((status = 200, body = Overview), (status = "5XX", body = ErrorBody)))]
async fn overview(
    axum::extract::State(state): axum::extract::State<State>,
) -> Result<Json<Arc<Overview>>, ApiError> {
    let cache = &state.overview;
    let mut last = cache.last.lock().await;
    let seen = cache.wake.seen();
    if let Some((at, overview)) = last.as_ref() {
        if *at == seen {
            return Ok(Json(overview.clone()));
        }
    }
    let overview = Arc::new(read_overview(&state).await?);
    *last = Some((seen, overview.clone()));
    Ok(Json(overview))
}

async fn read_overview(state: &State) -> Result<Overview, ApiError> {
    let overview: QueueOverview = state.queue.overview(20).await?;
    let mut counts = StatusCounts::default();
    for (status, n) in overview.counts {
        let slot = match status {
            TaskStatus::Pending => &mut counts.pending,
            TaskStatus::Blocked => &mut counts.blocked,
            TaskStatus::Ready => &mut counts.ready,
            TaskStatus::Running => &mut counts.running,
            TaskStatus::Completed => &mut counts.completed,
            TaskStatus::Failed => &mut counts.failed,
            TaskStatus::Cancelled => &mut counts.cancelled,
        };
        *slot = n;
    }
    let oldest_ready = match overview.oldest_ready {
        None => None,
        Some(waiting) => Some(TaskRef {
            id: waiting.task_id,
            summary: waiting.summary,
            status: Status::Ready,
        }),
    };
    let this_minute = overview
        .at
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap_or(overview.at);
    let since = this_minute - chrono::Duration::minutes(59);
    let finished = state.tasks.finished_per_minute(since).await?;
    let finished_per_minute = (0..60)
        .map(|i| {
            let minute = since + chrono::Duration::minutes(i);
            let found = finished.iter().find(|m| m.minute == minute);
            Minute {
                minute,
                completed: found.map_or(0, |m| m.completed),
                failed: found.map_or(0, |m| m.failed),
                cancelled: found.map_or(0, |m| m.cancelled),
            }
        })
        .collect();
    Ok(Overview {
        finished_per_minute,
        at: overview.at,
        counts,
        oldest_ready,
        running: overview
            .running
            .into_iter()
            .map(|r| Running {
                attempt_id: r.attempt_id,
                task_id: r.task_id,
                summary: r.summary,
                worker_id: r.worker_id,
                started_at: r.started_at,
                lease_expires_at: r.lease_expires_at,
            })
            .collect(),
        expired_leases: overview.expired_leases,
        read_only: state.read_only,
    })
}

/// A page of tasks in the order asked for. Each page starts after the last task of the one
/// before (`after` = its `next`), so a page far into a million tasks costs what the first does.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", params(TaskQuery),
    responses((status = 200, body = TaskPage), (status = 400, body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
async fn list_tasks(
    axum::extract::State(state): axum::extract::State<State>,
    query: Result<Query<TaskQuery>, QueryRejection>,
) -> ApiResult<TaskPage> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit {limit} is outside 1 to {MAX_PAGE}"
        )));
    }
    let (filters, summary_contains) = Filter {
        status: query.status,
        agent_type: query.agent_type,
        session_id: query.session_id,
        branch: query.branch,
        source: query.source,
        min_priority: query.min_priority,
        max_priority: query.max_priority,
        q: query.q,
    }
    .into_filters()?;
    let order: TaskOrder = query.order.unwrap_or_default().into();
    let after = match query.after.as_deref() {
        None | Some("") => None,
        Some(text) => Some(parse_cursor(text)?),
    };
    let page = TaskPageQuery {
        filters,
        summary_contains,
        order,
        after,
        // One more than the page, to tell whether another follows.
        limit: limit + 1,
    };
    let mut tasks = state.tasks.page(page).await?;
    let more = tasks.len() > limit as usize;
    tasks.truncate(limit as usize);
    let next = more
        .then(|| {
            tasks
                .last()
                .map(|t| cursor_text(&TaskCursor::after(order, t)))
        })
        .flatten();
    Ok(Json(TaskPage {
        tasks: tasks.iter().map(TaskRow::from).collect(),
        next,
    }))
}

/// Every field of a task, its history, what it waits for and what waits for it.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "The task's id")),
    responses((status = 200, body = TaskDetail), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn task_detail(
    axum::extract::State(state): axum::extract::State<State>,
    id: Result<Path<uuid::Uuid>, PathRejection>,
) -> ApiResult<TaskDetail> {
    let Path(id) = id?;
    let task = find(&state, id).await?;
    let history = state.queue.history(id).await?;
    let mut waits_for = Vec::new();
    for dependency in task.dependencies.iter().flatten() {
        match state.tasks.get(*dependency).await? {
            Some(dependency) => waits_for.push(TaskRef::from(&dependency)),
            // Pruned: the edge is gone with it, but the list on the task still names it.
            None => continue,
        }
    }
    let needed_by = state.tasks.get_dependents(id).await?;
    let children = state.tasks.get_by_parent(id).await?;
    Ok(Json(TaskDetail {
        task: task.into(),
        history: history.into_iter().map(HistoryEvent::from).collect(),
        waits_for,
        needed_by_total: needed_by.len() as u64,
        needed_by: needed_by
            .iter()
            .take(MAX_RELATED)
            .map(TaskRef::from)
            .collect(),
        children_total: children.len() as u64,
        children: children
            .iter()
            .take(MAX_RELATED)
            .map(TaskRef::from)
            .collect(),
    }))
}

/// What an action on a task would reach if it were taken now.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/reach", tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "The task's id"), ReachQuery),
    responses((status = 200, body = Reach), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn reach(
    axum::extract::State(state): axum::extract::State<State>,
    id: Result<Path<uuid::Uuid>, PathRejection>,
    query: Result<Query<ReachQuery>, QueryRejection>,
) -> ApiResult<Reach> {
    let Path(id) = id?;
    let Query(ReachQuery { action }) = query?;
    let task = find(&state, id).await?;
    let allowed = action.applies_to(task.status);
    let reason = (!allowed).then(|| {
        let only = match action {
            Action::Cancel => "only an unfinished task can be cancelled",
            Action::Retry => "only a failed task can be retried",
        };
        format!("the task is {}; {only}", task.status)
    });
    let (others, at_least) = if allowed {
        walk(state.tasks.as_ref(), &task, action).await?
    } else {
        (0, false)
    };
    Ok(Json(Reach {
        action,
        task: TaskRef::from(&task),
        allowed,
        reason,
        others,
        at_least,
    }))
}

/// Cancels a task, every unfinished task that depends on it, directly or not, and its children.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/cancel", tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "The task's id")),
    responses((status = 200, body = Outcome), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn cancel(
    axum::extract::State(state): axum::extract::State<State>,
    id: Result<Path<uuid::Uuid>, PathRejection>,
) -> ApiResult<Outcome> {
    take(&state, id, Action::Cancel).await
}

/// Puts a failed task back to ready (or blocked), with its failed dependents.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/retry", tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "The task's id")),
    responses((status = 200, body = Outcome), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn retry(
    axum::extract::State(state): axum::extract::State<State>,
    id: Result<Path<uuid::Uuid>, PathRejection>,
) -> ApiResult<Outcome> {
    take(&state, id, Action::Retry).await
}

/// Takes `action` on one task, and forgets the overview read before it.
async fn take(
    state: &State,
    id: Result<Path<uuid::Uuid>, PathRejection>,
    action: Action,
) -> ApiResult<Outcome> {
    let Path(id) = id?;
    if state.read_only {
        return Err(ApiError::read_only());
    }
    let changed = match action {
        Action::Cancel => state.queue.cancel(id, ACTOR).await,
        Action::Retry => state.queue.retry(id, ACTOR).await,
    };
    state.changed().await;
    Ok(Json(Outcome {
        action,
        task_id: id,
        changed: changed?,
    }))
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "tasks",
    responses((status = 200, description = "The OpenAPI document of this API", content_type = "application/json", body = Object)))]
async fn openapi_json() -> Response {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = DOCUMENT.get_or_init(|| {
        document()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        text.clone(),
    )
        .into_response()
}

async fn find(state: &State, id: uuid::Uuid) -> Result<Task, ApiError> {
    state
        .tasks
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task {id} does not exist")))
}

/// Counts the other tasks `action` on `task` reaches, walking the DAG through the ports, up
/// to [`MAX_REACH`].
///
/// Cancel follows dependents and children that are unfinished, and stops at finished ones (a
/// completed child keeps its own dependents), as the queue does. Retry follows failed
/// dependents.
pub(super) async fn walk(
    tasks: &dyn TaskRepository,
    task: &Task,
    action: Action,
) -> Result<(u64, bool), ApiError> {
    walk_from(tasks, &[task.id], action).await
}

/// Whether none of `task`'s dependencies outside `back` is failed or cancelled.
async fn blocked_by_none(
    tasks: &dyn TaskRepository,
    task: &Task,
    back: &HashSet<uuid::Uuid>,
    read: &mut usize,
) -> Result<bool, ApiError> {
    for dependency in task.dependencies.iter().flatten() {
        if back.contains(dependency) {
            continue;
        }
        *read += 1;
        if let Some(dependency) = tasks.get(*dependency).await? {
            if matches!(
                dependency.status,
                TaskStatus::Failed | TaskStatus::Cancelled
            ) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// [`walk`] from many tasks at once: the others they reach together, each counted once, and
/// none of the `roots` among them.
pub(super) async fn walk_from(
    tasks: &dyn TaskRepository,
    roots: &[uuid::Uuid],
    action: Action,
) -> Result<(u64, bool), ApiError> {
    let mut seen: HashSet<uuid::Uuid> = roots.iter().copied().collect();
    let mut queue: VecDeque<uuid::Uuid> = roots.iter().copied().collect();
    let mut others = 0u64;
    let mut read = 0usize;
    while let Some(id) = queue.pop_front() {
        if read >= MAX_REACH_ROWS {
            return Ok((others, true));
        }
        let mut next = tasks.get_dependents(id).await?;
        if action == Action::Cancel {
            next.extend(tasks.get_by_parent(id).await?);
        }
        read += next.len() + 1;
        for other in next {
            // A failed dependent goes back only when none of its other dependencies is still
            // failed or cancelled (those the retry puts back do not count).
            let follows = action.applies_to(other.status)
                && (action == Action::Cancel
                    || blocked_by_none(tasks, &other, &seen, &mut read).await?);
            if follows && seen.insert(other.id) {
                others += 1;
                if others as usize >= MAX_REACH {
                    return Ok((others, true));
                }
                queue.push_back(other.id);
            }
        }
    }
    Ok((others, false))
}
