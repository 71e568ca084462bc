//! Actions on many tasks at once: the ones a person selected, or every task the current filter
//! matches. `POST /api/v1/actions/preview` says what an action would reach, for the
//! confirmation dialog; `POST /api/v1/actions` takes it.
//!
//! Each task is cancelled or retried in a transaction of its own, in the order given (for a
//! filter, the list's newest-first order). A task that an earlier one's cascade already
//! finished, or that the action no longer applies to, is skipped with the reason; any other
//! failure stops the run there and is reported with what was done before it.

use std::collections::HashSet;

use abathur_core::models::Task;
use abathur_core::ports::{TaskCursor, TaskOrder, TaskPageQuery};
use abathur_core::queue::QueueError;
use axum::extract::rejection::JsonRejection;
use axum::extract::State as Extract;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::api::{walk_from, Action, ApiError, ErrorBody, Filter, State, ACTOR};

/// The most tasks one bulk action takes, selected or matched.
pub const MAX_BULK: usize = 10_000;

/// What to act on: `ids`, or every task `filter` matches; exactly one of them. A field it does
/// not know is refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bulk {
    pub action: Action,
    /// The tasks selected, at most 10,000.
    pub ids: Option<Vec<Uuid>>,
    /// Every task this matches, as the task list filters them (at most 10,000).
    pub filter: Option<Filter>,
}

/// What a bulk action would reach if it were taken now.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkPreview {
    pub action: Action,
    /// The tasks it applies to now (for cancel: unfinished; for retry: failed).
    pub tasks: u64,
    /// Selected or matched tasks it does not apply to (already finished, or not failed).
    pub skipped: u64,
    /// The other tasks it reaches through them: unfinished dependents and children for cancel,
    /// failed dependents for retry.
    pub others: u64,
    /// Whether `others` stopped counting early and is a lower bound.
    pub at_least: bool,
}

/// What a bulk action did.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkOutcome {
    pub action: Action,
    /// Every task it changed: for cancel, every task cancelled, cascades included; for retry,
    /// the tasks retried and the dependents put back to waiting.
    pub changed: Vec<Uuid>,
    /// The tasks it left alone, each with why.
    pub skipped: Vec<Skipped>,
    /// The failure that stopped it, if one did: the tasks after it were not tried.
    pub stopped_by: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Skipped {
    pub id: Uuid,
    pub reason: String,
}

/// The tasks a bulk request names, read now, in order, each once.
async fn targets(state: &State, bulk: Bulk) -> Result<Vec<Task>, ApiError> {
    match (bulk.ids, bulk.filter) {
        (Some(ids), None) => {
            if ids.is_empty() {
                return Err(ApiError::invalid("ids is empty: select at least one task"));
            }
            if ids.len() > MAX_BULK {
                return Err(ApiError::invalid(format!(
                    "{} tasks selected; one action takes at most {MAX_BULK}",
                    ids.len()
                )));
            }
            let mut seen = HashSet::new();
            let mut tasks = Vec::with_capacity(ids.len());
            for id in ids {
                if !seen.insert(id) {
                    continue;
                }
                let task = state
                    .tasks()
                    .get(id)
                    .await?
                    .ok_or_else(|| ApiError::not_found(format!("task {id} does not exist")))?;
                tasks.push(task);
            }
            Ok(tasks)
        }
        (None, Some(filter)) => {
            let (filters, summary_contains) = filter.into_filters()?;
            let mut query = TaskPageQuery {
                filters,
                summary_contains,
                order: TaskOrder::Newest,
                after: None,
                limit: abathur_core::limits::MAX_PAGE,
            };
            let mut tasks: Vec<Task> = Vec::new();
            loop {
                let page = state.tasks().page(query.clone()).await?;
                let full = page.len() == query.limit as usize;
                query.after = page.last().map(|t| TaskCursor::after(TaskOrder::Newest, t));
                tasks.extend(page);
                if tasks.len() > MAX_BULK {
                    return Err(ApiError::invalid(format!(
                        "the filter matches more than {MAX_BULK} tasks; narrow it, one action \
                         takes at most {MAX_BULK}"
                    )));
                }
                if !full {
                    return Ok(tasks);
                }
            }
        }
        _ => Err(ApiError::invalid(
            "give either ids or filter, not both and not neither",
        )),
    }
}

/// What a bulk action would reach if it were taken now: the dialog's text.
#[utoipa::path(post, path = "/api/v1/actions/preview", tag = "tasks", request_body = Bulk,
    responses((status = 200, body = BulkPreview), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn preview(
    Extract(state): Extract<State>,
    body: Result<Json<Bulk>, JsonRejection>,
) -> Result<Json<BulkPreview>, ApiError> {
    let Json(bulk) = body?;
    let action = bulk.action;
    let tasks = targets(&state, bulk).await?;
    let (apply, skip): (Vec<Task>, Vec<Task>) =
        tasks.into_iter().partition(|t| action.applies_to(t.status));
    let roots: Vec<Uuid> = apply.iter().map(|t| t.id).collect();
    let (others, at_least) = walk_from(state.tasks(), &roots, action).await?;
    // A selected task reached through another is counted once, as selected.
    Ok(Json(BulkPreview {
        action,
        tasks: apply.len() as u64,
        skipped: skip.len() as u64,
        others,
        at_least,
    }))
}

/// Cancels or retries the tasks selected, or every task a filter matches.
#[utoipa::path(post, path = "/api/v1/actions", tag = "tasks", request_body = Bulk,
    responses((status = 200, body = BulkOutcome), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
pub async fn act(
    Extract(state): Extract<State>,
    body: Result<Json<Bulk>, JsonRejection>,
) -> Result<Json<BulkOutcome>, ApiError> {
    if state.read_only() {
        return Err(ApiError::read_only());
    }
    let Json(bulk) = body?;
    let action = bulk.action;
    let tasks = targets(&state, bulk).await?;
    let mut changed: Vec<Uuid> = Vec::new();
    let mut done: HashSet<Uuid> = HashSet::new();
    let mut skipped = Vec::new();
    let mut stopped_by = None;
    for task in tasks {
        if done.contains(&task.id) {
            skipped.push(Skipped {
                id: task.id,
                reason: "already reached by an earlier task of this action".into(),
            });
            continue;
        }
        let result = match action {
            Action::Cancel => state.queue().cancel(task.id, ACTOR).await,
            Action::Retry => state
                .queue()
                .retry(task.id, ACTOR)
                .await
                .map(|dependents| std::iter::once(task.id).chain(dependents).collect()),
        };
        match result {
            Ok(ids) => {
                for id in ids {
                    if done.insert(id) {
                        changed.push(id);
                    }
                }
            }
            Err(e @ (QueueError::InvalidTransition { .. } | QueueError::TaskNotFound(_))) => {
                skipped.push(Skipped {
                    id: task.id,
                    reason: e.to_string(),
                });
            }
            Err(e) => {
                stopped_by = Some(format!("task {}: {}", task.id, super::api::describe(e)));
                break;
            }
        }
    }
    state.changed().await;
    Ok(Json(BulkOutcome {
        action,
        changed,
        skipped,
        stopped_by,
    }))
}
