//! [`McpServer`]: the MCP handler. It lists the tools and routes each call to the function in
//! [`super::tasks`], [`super::memory`] or [`super::sessions`] that does it.

use std::sync::Arc;

use abathur_core::ports::{MemoryRepository, SessionRepository, TaskRepository};
use abathur_core::queue::TaskQueue;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};
use tokio_util::sync::CancellationToken;

use super::params::{
    ExecutionPlan, MemoryAdd, MemoryGet, MemoryKey, MemorySearch, MemoryUpdate, QueueStatus,
    SessionAppendEvent, SessionCreate, SessionGetState, SessionSetState, TaskCancel, TaskClaim,
    TaskComplete, TaskEnqueue, TaskFail, TaskHeartbeat, TaskId, TaskList,
};
use super::reply::{render, ToolError};
use super::{memory, sessions, tasks};
use crate::backend::Backend;
use crate::waiting::ChangeFeed;

/// What the server tells a client about itself when it connects.
const INSTRUCTIONS: &str = "\
abathur is a durable task queue, memory store and session log shared by a swarm of agents. \
Submit work with task_enqueue (tasks may depend on each other), take work with task_claim \
(give it wait_seconds to wait for work rather than polling), keep the lease alive with task_heartbeat, and finish with task_complete or task_fail using \
the attempt_id the claim returned. Every result is a JSON document; a failed call returns \
{\"error\": {\"kind\", \"message\"}} with kind one of invalid_argument, not_found, conflict, \
busy, internal.";

/// The MCP server: the queue, memory and session services as tools.
///
/// Cheap to clone: every clone shares the same services and database pool.
#[derive(Clone)]
pub struct McpServer {
    queue: TaskQueue,
    tasks: Arc<dyn TaskRepository>,
    memories: Arc<dyn MemoryRepository>,
    sessions: Arc<dyn SessionRepository>,
    /// Wakes waiting claims; without one they look again every [`crate::waiting::RECHECK`].
    feed: Option<ChangeFeed>,
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl McpServer {
    /// A server over these services.
    pub fn new(
        queue: TaskQueue,
        tasks: Arc<dyn TaskRepository>,
        memories: Arc<dyn MemoryRepository>,
        sessions: Arc<dyn SessionRepository>,
    ) -> Self {
        Self {
            queue,
            tasks,
            memories,
            sessions,
            feed: None,
            tool_router: Self::tool_router(),
        }
    }

    /// The same server, waking waiting claims from `feed`.
    pub fn with_change_feed(mut self, feed: ChangeFeed) -> Self {
        self.feed = Some(feed);
        self
    }

    /// A server over the ports of `backend`, waking waiting claims from its changes. Open it
    /// with [`crate::backend::Role::Server`], so that the queue's writes of concurrent
    /// clients share commits.
    pub fn for_backend(backend: &Backend) -> Self {
        Self::new(
            TaskQueue::new(backend.queue_store.clone()),
            backend.tasks.clone(),
            backend.memories.clone(),
            backend.sessions.clone(),
        )
        .with_change_feed(ChangeFeed::new(backend.changes.clone()))
    }
}

// Each tool's doc comment is its description, as clients show it to the model.
#[tool_router]
impl McpServer {
    /// Submit a task to the queue. It is ready to claim at once, or blocked until every task in
    /// depends_on has completed (and not claimable before run_after, if given). Returns the
    /// stored task (with its id and status). Give an idempotency_key to make a retried call safe:
    /// the same key returns the task it made, with existing: true.
    #[tool]
    async fn task_enqueue(&self, Parameters(args): Parameters<TaskEnqueue>) -> CallToolResult {
        render(tasks::enqueue(&self.queue, args).await)
    }

    /// Every field of one task: status, input, result, error, retries, timestamps, and its
    /// run_after and idempotency_key when it has them.
    #[tool]
    async fn task_get(&self, Parameters(args): Parameters<TaskId>) -> CallToolResult {
        render(tasks::get(self.tasks.as_ref(), &self.queue, args).await)
    }

    /// List tasks, most urgent first, filtered by status, agent type, branch, session, parent,
    /// source, priority range and submission time. Returns {"tasks": [...]}.
    #[tool]
    async fn task_list(&self, Parameters(args): Parameters<TaskList>) -> CallToolResult {
        render(tasks::list(self.tasks.as_ref(), args).await)
    }

    /// The queue at a glance: tasks per status, the oldest ready task, running attempts with
    /// their lease expiry, and how many leases have expired.
    #[tool]
    async fn task_queue_status(&self, Parameters(args): Parameters<QueueStatus>) -> CallToolResult {
        render(tasks::status(&self.queue, args).await)
    }

    /// Cancel a task, every task that depends on it, and its child tasks. Returns the ids
    /// cancelled.
    #[tool]
    async fn task_cancel(&self, Parameters(args): Parameters<TaskCancel>) -> CallToolResult {
        render(tasks::cancel(&self.queue, args).await)
    }

    /// The unfinished part of the task DAG in the order it can run: stage 0 waits for nothing
    /// unfinished, stage n waits only for earlier stages; tasks of one stage can run in
    /// parallel. Returns {"steps": [...]}.
    #[tool]
    async fn task_execution_plan(
        &self,
        Parameters(args): Parameters<ExecutionPlan>,
    ) -> CallToolResult {
        render(tasks::execution_plan(&self.queue, args).await)
    }

    /// Claim the most urgent ready tasks (of the given agent types) under a lease. Each claimed
    /// task comes with an attempt_id: pass it to task_heartbeat, task_complete or task_fail.
    /// Returns {"claimed": []} when nothing is ready. With wait_seconds (at most 300), waits
    /// for a task to become claimable instead of answering empty at once: call it in a loop
    /// rather than polling.
    #[tool]
    async fn task_claim(
        &self,
        Parameters(args): Parameters<TaskClaim>,
        cancelled: CancellationToken,
    ) -> CallToolResult {
        // The token is cancelled when the client cancels the request, disconnects, or the
        // server shuts down: the wait ends then.
        render(tasks::claim(&self.queue, self.feed.as_ref(), args, cancelled.cancelled()).await)
    }

    /// Extend the lease of a claimed task, so it is not taken back as abandoned.
    #[tool]
    async fn task_heartbeat(&self, Parameters(args): Parameters<TaskHeartbeat>) -> CallToolResult {
        render(tasks::heartbeat(&self.queue, args).await)
    }

    /// Complete a claimed task with its result. Returns the dependents that became ready.
    /// Sending the same call again (same attempt, same result) after a lost answer succeeds
    /// with `already_recorded: true` and changes nothing.
    #[tool]
    async fn task_complete(&self, Parameters(args): Parameters<TaskComplete>) -> CallToolResult {
        render(tasks::complete(&self.queue, args).await)
    }

    /// Fail a claimed task. It is retried after a backoff, or, with its retries used up, fails
    /// along with everything that depends on it. Sending the same call again (same attempt,
    /// same error) after a lost answer succeeds with `already_recorded: true` and changes
    /// nothing.
    #[tool]
    async fn task_fail(&self, Parameters(args): Parameters<TaskFail>) -> CallToolResult {
        render(tasks::fail(&self.queue, args).await)
    }

    /// Add a memory: a JSON value under a namespace and key. Fails with a conflict when the key
    /// is live; use memory_update to change it.
    #[tool]
    async fn memory_add(&self, Parameters(args): Parameters<MemoryAdd>) -> CallToolResult {
        render(memory::add(self.memories.as_ref(), args).await)
    }

    /// Read a memory: its live version, or one version by number.
    #[tool]
    async fn memory_get(&self, Parameters(args): Parameters<MemoryGet>) -> CallToolResult {
        render(memory::get(self.memories.as_ref(), args).await)
    }

    /// Find live memories whose namespace starts with a prefix, optionally of one type.
    /// Returns {"memories": [...]}.
    #[tool]
    async fn memory_search(&self, Parameters(args): Parameters<MemorySearch>) -> CallToolResult {
        render(memory::search(self.memories.as_ref(), args).await)
    }

    /// Give a live memory a new value; the old value stays in its history.
    #[tool]
    async fn memory_update(&self, Parameters(args): Parameters<MemoryUpdate>) -> CallToolResult {
        render(memory::update(self.memories.as_ref(), args).await)
    }

    /// Delete a memory. Its history stays readable with memory_history.
    #[tool]
    async fn memory_delete(&self, Parameters(args): Parameters<MemoryKey>) -> CallToolResult {
        render(memory::delete(self.memories.as_ref(), args).await)
    }

    /// Every version of a memory key, deleted ones included, oldest first. Returns
    /// {"versions": [...]}.
    #[tool]
    async fn memory_history(&self, Parameters(args): Parameters<MemoryKey>) -> CallToolResult {
        render(memory::history(self.memories.as_ref(), args).await)
    }

    /// Start a session: shared state plus an append-only event log. Returns it with its id.
    #[tool]
    async fn session_create(&self, Parameters(args): Parameters<SessionCreate>) -> CallToolResult {
        render(sessions::create(self.sessions.as_ref(), args).await)
    }

    /// Append an event to a session's log. Returns it with its sequence number.
    #[tool]
    async fn session_append_event(
        &self,
        Parameters(args): Parameters<SessionAppendEvent>,
    ) -> CallToolResult {
        render(sessions::append_event(self.sessions.as_ref(), args).await)
    }

    /// Read a session's state: one key ({"found", "value"}) or the whole state object.
    #[tool]
    async fn session_get_state(
        &self,
        Parameters(args): Parameters<SessionGetState>,
    ) -> CallToolResult {
        render(sessions::get_state(self.sessions.as_ref(), args).await)
    }

    /// Set one key of a session's state. Writers of other keys lose nothing.
    #[tool]
    async fn session_set_state(
        &self,
        Parameters(args): Parameters<SessionSetState>,
    ) -> CallToolResult {
        render(sessions::set_state(self.sessions.as_ref(), args).await)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("abathur", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    /// Routes the call. Arguments that do not fit the tool's schema come back from the router
    /// as a plain-text tool error; it is rewritten in the JSON shape of every other error, so
    /// clients parse one shape. An unknown tool stays a protocol error, as MCP asks.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if !self.tool_router.has_route(&request.name) {
            return Err(ErrorData::invalid_params(
                format!("there is no tool named {:?}", request.name),
                None,
            ));
        }
        let name = request.name.clone();
        let call = ToolCallContext::new(self, request, context);
        Ok(match self.tool_router.call(call).await? {
            CallToolResponse::Complete(result) => {
                let result = match argument_error(&result) {
                    Some(detail) => {
                        ToolError::argument(format!("invalid arguments for {name}: {detail}"))
                            .into_result()
                    }
                    None => result,
                };
                if result.is_error == Some(true) {
                    let text = result.content.first().and_then(|c| c.as_text());
                    tracing::debug!(tool = %name, error = text.map_or("", |t| &t.text), "tool error");
                }
                result.into()
            }
            other => other,
        })
    }
}

/// The router's prefix for arguments that do not deserialize into the tool's parameters.
const ARGUMENT_ERROR_PREFIX: &str = "failed to deserialize parameters:";

/// What was wrong with the arguments, when `result` is the router's report of arguments that
/// do not deserialize.
fn argument_error(result: &CallToolResult) -> Option<String> {
    if result.is_error != Some(true) {
        return None;
    }
    let text = &result.content.first()?.as_text()?.text;
    text.strip_prefix(ARGUMENT_ERROR_PREFIX)
        .map(|detail| detail.trim().to_string())
}
