//! `GET /api/v1/tasks/{id}/dag` and `GET /api/v1/sessions/{id}/dag`: a task's ancestors and
//! descendants, or a session's tasks, as a layered graph with its critical path, for the DAG
//! view to draw.
//!
//! - **Layers.** A task's layer is the length of the longest chain of dependencies above it
//!   in the graph drawn: every edge points to a later layer. Within a layer, tasks are ordered
//!   by the mean position of what they wait for (one barycentre pass), which keeps most edges
//!   short and uncrossed.
//! - **Critical path.** The chain whose tasks take longest in all: a finished task counts the
//!   time it ran, another its `estimated_duration_seconds`, else one second. It is the chain
//!   that sets when the whole graph can be done.

use std::collections::{HashMap, HashSet, VecDeque};

use abathur_core::models::Task;
use abathur_core::ports::{TaskFilters, TaskRepository};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State as Extract};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::api::{ApiError, ErrorBody, State, Status};

/// The most tasks a graph holds; beyond it the walk stops and `truncated` says so.
pub const MAX_NODES: usize = 1_000;

/// The most dependency edges a graph sends; past it, the rest are left out (the critical
/// path's always drawn) and `truncated` says so. A dense DAG of 1,000 tasks can have 100 times
/// as many edges as tasks.
pub const MAX_EDGES: usize = 5_000;

/// The most task rows the walk reads before it stops, whatever it found: each dependent read
/// brings its whole row, and a dense DAG makes many reads of the same tasks.
pub const MAX_ROWS_READ: usize = 20_000;

/// A layered graph of tasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct Dag {
    /// Each task once, layer by layer, in drawing order within its layer.
    pub nodes: Vec<Node>,
    /// Dependency edges: `from` must complete before `to` can run.
    pub edges: Vec<Edge>,
    /// The critical path, first task first.
    pub critical_path: Vec<Uuid>,
    /// Whether part of the graph is left out: past 1,000 tasks, 5,000 edges, or 20,000 rows
    /// read on the way.
    pub truncated: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Node {
    pub id: Uuid,
    pub summary: String,
    pub status: Status,
    /// The column: 0 for tasks that wait for nothing drawn.
    pub layer: u32,
    /// The position within the layer, from 0.
    pub position: u32,
    pub critical: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Edge {
    pub from: Uuid,
    pub to: Uuid,
    pub critical: bool,
}

/// A task with everything it waits for and everything that waits for it, directly or not,
/// laid out in layers.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/dag", tag = "tasks",
    params(("id" = Uuid, Path, description = "The task's id")),
    responses((status = 200, body = Dag), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn task_dag(
    Extract(state): Extract<State>,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<Dag>, ApiError> {
    let Path(id) = id?;
    let (tasks, truncated) = around(state.tasks(), id).await?;
    Ok(Json(layout(tasks, truncated)))
}

/// Every task of a session, laid out in layers.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/dag", tag = "tasks",
    params(("id" = Uuid, Path, description = "The session's id")),
    responses((status = 200, body = Dag), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn session_dag(
    Extract(state): Extract<State>,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<Dag>, ApiError> {
    let Path(session) = id?;
    // The first MAX_NODES in the order `get_by_session` gives, read as one page: a session may
    // hold any number of tasks, and only their count is needed beyond that.
    let filters = TaskFilters {
        session_id: Some(session),
        ..TaskFilters::default()
    };
    let tasks = state
        .tasks()
        .list(TaskFilters {
            limit: Some(MAX_NODES as i64),
            ..filters.clone()
        })
        .await?;
    if tasks.is_empty() {
        return Err(ApiError::not_found(format!(
            "session {session} has no tasks, or does not exist"
        )));
    }
    let truncated =
        tasks.len() == MAX_NODES && state.tasks().count(filters).await? > MAX_NODES as i64;
    Ok(Json(layout(tasks, truncated)))
}

/// The task, its ancestors and its descendants, up to [`MAX_NODES`].
async fn around(tasks: &dyn TaskRepository, id: Uuid) -> Result<(Vec<Task>, bool), ApiError> {
    let root = tasks
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task {id} does not exist")))?;
    let mut found: HashMap<Uuid, Task> = HashMap::new();
    let mut truncated = false;
    let mut read = 1usize;
    // Up through what each task waits for, then down through what waits for it, a layer per
    // read: siblings (other dependents of an ancestor) are not drawn.
    let mut wanted: Vec<Uuid> = root.dependencies.clone().unwrap_or_default();
    found.insert(root.id, root.clone());
    while !wanted.is_empty() {
        let mut seen = HashSet::with_capacity(wanted.len());
        let mut layer: Vec<Uuid> = wanted
            .into_iter()
            .filter(|id| !found.contains_key(id) && seen.insert(*id))
            .collect();
        let room = MAX_NODES
            .saturating_sub(found.len())
            .min(MAX_ROWS_READ.saturating_sub(read));
        if layer.len() > room {
            truncated = true;
            layer.truncate(room);
        }
        if layer.is_empty() {
            break;
        }
        read += layer.len();
        let tasks = tasks.get_many(&layer).await?;
        wanted = tasks
            .iter()
            .flat_map(|t| t.dependencies.iter().flatten().copied())
            .collect();
        found.extend(tasks.into_iter().map(|t| (t.id, t)));
    }
    let mut layer = vec![root.id];
    let mut visited = HashSet::from([root.id]);
    while !layer.is_empty() {
        if read >= MAX_ROWS_READ {
            truncated = true;
            break;
        }
        // One more than the rows left: a layer that has more is cut, and says so.
        let left = MAX_ROWS_READ - read;
        let mut dependents = tasks.get_dependents_of_many(&layer, left + 1).await?;
        if dependents.len() > left {
            truncated = true;
            dependents.truncate(left);
        }
        read += dependents.len().max(1);
        layer = Vec::new();
        for dependent in dependents {
            if !visited.insert(dependent.id) {
                continue;
            }
            if !found.contains_key(&dependent.id) && found.len() >= MAX_NODES {
                truncated = true;
                continue;
            }
            layer.push(dependent.id);
            found.insert(dependent.id, dependent);
        }
    }
    Ok((found.into_values().collect(), truncated))
}

/// Lays `tasks` out in layers and marks the critical path.
pub fn layout(mut tasks: Vec<Task>, truncated: bool) -> Dag {
    tasks.sort_by_key(|t| (t.submitted_at, t.id));
    let index: HashMap<Uuid, usize> = tasks.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
    // Edges within the graph, from dependency to dependent.
    let mut waits_for: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
    let mut needed_by: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
    for (i, task) in tasks.iter().enumerate() {
        let mut seen = HashSet::new();
        for dependency in task.dependencies.iter().flatten() {
            if let Some(&j) = index.get(dependency) {
                if j != i && seen.insert(j) {
                    waits_for[i].push(j);
                    needed_by[j].push(i);
                }
            }
        }
    }
    // Kahn's order; anything left over (a cycle the queue would never store) goes last.
    let mut missing: Vec<usize> = waits_for.iter().map(Vec::len).collect();
    let mut order: Vec<usize> = Vec::with_capacity(tasks.len());
    let mut ready: VecDeque<usize> = (0..tasks.len()).filter(|&i| missing[i] == 0).collect();
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &j in &needed_by[i] {
            missing[j] -= 1;
            if missing[j] == 0 {
                ready.push_back(j);
            }
        }
    }
    let placed: HashSet<usize> = order.iter().copied().collect();
    order.extend((0..tasks.len()).filter(|i| !placed.contains(i)));

    let mut layer = vec![0u32; tasks.len()];
    let mut best = vec![0f64; tasks.len()];
    let mut via: Vec<Option<usize>> = vec![None; tasks.len()];
    for &i in &order {
        let mut longest = 0f64;
        for &j in &waits_for[i] {
            layer[i] = layer[i].max(layer[j] + 1);
            if best[j] > longest {
                longest = best[j];
                via[i] = Some(j);
            }
        }
        best[i] = longest + weight(&tasks[i]);
    }
    let mut critical = HashSet::new();
    let mut path = Vec::new();
    let mut at = (0..tasks.len()).max_by(|&a, &b| best[a].total_cmp(&best[b]));
    while let Some(i) = at {
        critical.insert(i);
        path.push(tasks[i].id);
        at = via[i];
    }
    path.reverse();

    // Positions: layer by layer, each task at the mean position of what it waits for.
    let layers = layer.iter().copied().max().map_or(0, |l| l as usize + 1);
    let mut columns: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for &i in &order {
        columns[layer[i] as usize].push(i);
    }
    let mut position = vec![0u32; tasks.len()];
    for column in &mut columns {
        let key = |i: usize| -> f64 {
            let above = &waits_for[i];
            if above.is_empty() {
                return f64::from(u32::MAX);
            }
            above.iter().map(|&j| f64::from(position[j])).sum::<f64>() / above.len() as f64
        };
        let mut keyed: Vec<(f64, usize)> = column.iter().map(|&i| (key(i), i)).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
        *column = keyed.into_iter().map(|(_, i)| i).collect();
        for (p, &i) in column.iter().enumerate() {
            position[i] = p as u32;
        }
    }

    let all: Vec<Edge> = (0..tasks.len())
        .flat_map(|i| waits_for[i].iter().map(move |&j| (j, i)))
        .map(|(from, to)| Edge {
            from: tasks[from].id,
            to: tasks[to].id,
            critical: critical.contains(&from) && critical.contains(&to) && via[to] == Some(from),
        })
        .collect();
    let truncated = truncated || all.len() > MAX_EDGES;
    let (mut edges, others): (Vec<Edge>, Vec<Edge>) = all.into_iter().partition(|e| e.critical);
    edges.extend(
        others
            .into_iter()
            .take(MAX_EDGES.saturating_sub(edges.len())),
    );
    let nodes = columns
        .iter()
        .flatten()
        .map(|&i| Node {
            id: tasks[i].id,
            summary: tasks[i].summary.clone(),
            status: tasks[i].status.into(),
            layer: layer[i],
            position: position[i],
            critical: critical.contains(&i),
        })
        .collect();
    Dag {
        nodes,
        edges,
        critical_path: path,
        truncated,
    }
}

/// How long a task counts on the critical path, in seconds.
fn weight(task: &Task) -> f64 {
    if let (Some(started), Some(finished)) = (task.started_at, task.completed_at) {
        let ran = (finished - started).num_microseconds().unwrap_or(0) as f64 / 1e6;
        return ran.max(0.001);
    }
    task.estimated_duration_seconds
        .map_or(1.0, |seconds| f64::from(seconds).max(0.001))
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::{Duration, TimeZone, Utc};

    fn task(name: &str, n: i64, depends_on: &[&Task], estimate: Option<u32>) -> Task {
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(n);
        let mut task = Task::new(name, name, "generic", at);
        task.dependencies = Some(depends_on.iter().map(|t| t.id).collect());
        task.estimated_duration_seconds = estimate;
        task
    }

    #[test]
    fn layers_follow_the_longest_chain_and_the_critical_path_the_heaviest() {
        // a -> b -> d, a -> c -> d, c estimated longer than b; e alone.
        let a = task("a", 0, &[], None);
        let b = task("b", 1, &[&a], Some(1));
        let c = task("c", 2, &[&a], Some(10));
        let d = task("d", 3, &[&b, &c], None);
        let e = task("e", 4, &[], Some(5));
        let ids = [a.id, b.id, c.id, d.id, e.id];
        let dag = layout(vec![d.clone(), c.clone(), e, b.clone(), a.clone()], false);
        assert!(!dag.truncated);
        let layer = |id: Uuid| dag.nodes.iter().find(|n| n.id == id).unwrap().layer;
        assert_eq!(
            ids.map(layer),
            [0, 1, 1, 2, 0],
            "every edge points to a later layer"
        );
        assert_eq!(dag.critical_path, vec![a.id, c.id, d.id]);
        assert_eq!(dag.edges.len(), 4);
        let critical: Vec<(Uuid, Uuid)> = dag
            .edges
            .iter()
            .filter(|e| e.critical)
            .map(|e| (e.from, e.to))
            .collect();
        assert_eq!(critical.len(), 2, "{critical:?}");
        assert!(critical.contains(&(a.id, c.id)) && critical.contains(&(c.id, d.id)));
        assert_eq!(dag.nodes.len(), 5, "one node per task");
    }

    #[test]
    fn a_dependency_outside_the_graph_is_left_out_and_an_empty_graph_is_empty() {
        let outside = task("outside", 0, &[], None);
        let inside = task("inside", 1, &[&outside], None);
        let dag = layout(vec![inside.clone()], true);
        assert_eq!(dag.nodes.len(), 1);
        assert_eq!(dag.nodes[0].layer, 0);
        assert!(dag.edges.is_empty());
        assert_eq!(dag.critical_path, vec![inside.id]);
        assert!(dag.truncated);
        let empty = layout(Vec::new(), false);
        assert!(empty.nodes.is_empty() && empty.critical_path.is_empty());
    }
}

#[cfg(test)]
mod dense {
    use super::*;

    #[test]
    fn a_dense_graph_sends_at_most_the_edge_limit_with_the_critical_path_among_them() {
        // 3 layers of 60, each task waiting for all 60 above: 7,200 edges.
        let at = chrono::Utc::now();
        let mut layers: Vec<Vec<Task>> = Vec::new();
        for layer in 0..3 {
            let above: Vec<Uuid> = layers
                .last()
                .map_or_else(Vec::new, |l: &Vec<Task>| l.iter().map(|t| t.id).collect());
            layers.push(
                (0..60)
                    .map(|i| Task {
                        dependencies: Some(above.clone()),
                        ..Task::new(format!("l{layer} t{i}"), "x", "generic", at)
                    })
                    .collect(),
            );
        }
        let dag = layout(layers.concat(), false);
        assert!(dag.truncated);
        assert_eq!(dag.edges.len(), MAX_EDGES);
        assert_eq!(dag.nodes.len(), 180);
        let critical = dag.edges.iter().filter(|e| e.critical).count();
        assert_eq!(critical, dag.critical_path.len() - 1);
    }
}
