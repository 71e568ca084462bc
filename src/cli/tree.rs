//! `abathur task tree ID`: what a task waits for and what waits for it, as indented trees.

use std::collections::HashSet;
use std::fmt::Write as _;

use abathur_core::error::DatabaseError;
use abathur_core::models::{Task, TaskStatus};
use abathur_core::ports::TaskRepository;
use serde::Serialize;
use uuid::Uuid;

use super::error::CliError;
use super::render::{one_line, status_cell, Rendered};

/// The most tasks one tree shows; past it a branch ends in "...".
const MAX_NODES: usize = 500;

/// One task in a tree, with the tasks below it.
#[derive(Debug, Serialize)]
struct Node {
    id: Uuid,
    summary: String,
    status: TaskStatus,
    /// Already shown elsewhere in this tree; its branch is not repeated.
    shown_above: bool,
    /// The tree was cut here to stay within its size.
    truncated: bool,
    children: Vec<Node>,
}

#[derive(Debug, Serialize)]
struct Tree {
    id: Uuid,
    summary: String,
    status: TaskStatus,
    /// What the task waits for, and what those wait for.
    dependencies: Vec<Node>,
    /// What waits for the task, and what waits for those.
    dependents: Vec<Node>,
}

#[derive(Clone, Copy)]
enum Direction {
    Dependencies,
    Dependents,
}

/// Builds the tree of task `id`.
///
/// # Errors
/// Not found when no task has the id; the store's failures.
pub async fn tree(repo: &dyn TaskRepository, id: Uuid) -> Result<Rendered, CliError> {
    let task = repo
        .get(id)
        .await?
        .ok_or_else(|| DatabaseError::not_found("task", id))?;
    let mut budget = MAX_NODES;
    let dependencies = grow(repo, &task, Direction::Dependencies, &mut budget).await?;
    let dependents = grow(repo, &task, Direction::Dependents, &mut budget).await?;
    let tree = Tree {
        id: task.id,
        summary: task.summary,
        status: task.status,
        dependencies,
        dependents,
    };
    let human = human(&tree);
    Rendered::of(&tree, human)
}

/// The children of `root` in `direction`, depth first, each task expanded once.
async fn grow(
    repo: &dyn TaskRepository,
    root: &Task,
    direction: Direction,
    budget: &mut usize,
) -> Result<Vec<Node>, CliError> {
    let mut seen = HashSet::from([root.id]);
    // An explicit stack instead of recursion: (task, the path of child indexes to its node).
    let mut roots = Vec::new();
    let mut stack: Vec<(Task, Vec<usize>)> = Vec::new();
    for (i, child) in neighbours(repo, root, direction)
        .await?
        .into_iter()
        .enumerate()
    {
        roots.push(leaf(&child));
        stack.push((child, vec![i]));
    }
    stack.reverse();
    while let Some((task, path)) = stack.pop() {
        let node = node_at(&mut roots, &path);
        if !seen.insert(task.id) {
            node.shown_above = true;
            continue;
        }
        if *budget == 0 {
            node.truncated = true;
            continue;
        }
        *budget -= 1;
        let children = neighbours(repo, &task, direction).await?;
        let mut pushed = Vec::with_capacity(children.len());
        for (i, child) in children.into_iter().enumerate() {
            node.children.push(leaf(&child));
            let mut child_path = path.clone();
            child_path.push(i);
            pushed.push((child, child_path));
        }
        stack.extend(pushed.into_iter().rev());
    }
    Ok(roots)
}

fn node_at<'a>(roots: &'a mut [Node], path: &[usize]) -> &'a mut Node {
    let (first, rest) = path.split_first().expect("a path is never empty");
    let mut node = &mut roots[*first];
    for i in rest {
        node = &mut node.children[*i];
    }
    node
}

fn leaf(task: &Task) -> Node {
    Node {
        id: task.id,
        summary: task.summary.clone(),
        status: task.status,
        shown_above: false,
        truncated: false,
        children: Vec::new(),
    }
}

async fn neighbours(
    repo: &dyn TaskRepository,
    task: &Task,
    direction: Direction,
) -> Result<Vec<Task>, CliError> {
    Ok(match direction {
        Direction::Dependents => repo.get_dependents(task.id).await?,
        Direction::Dependencies => {
            let mut found = Vec::new();
            for id in task.dependencies.iter().flatten() {
                // A dependency deleted since is left out rather than failing the whole tree.
                if let Some(dependency) = repo.get(*id).await? {
                    found.push(dependency);
                }
            }
            found
        }
    })
}

fn human(tree: &Tree) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  {}  {}",
        short(tree.id),
        status_cell(tree.status, 9),
        one_line(&tree.summary)
    );
    for (title, nodes) in [
        ("waits for", &tree.dependencies),
        ("needed by", &tree.dependents),
    ] {
        let _ = writeln!(out, "{title}:");
        if nodes.is_empty() {
            let _ = writeln!(out, "  (nothing)");
        }
        branches(&mut out, nodes, "  ");
    }
    out
}

fn branches(out: &mut String, nodes: &[Node], indent: &str) {
    for (i, node) in nodes.iter().enumerate() {
        let last = i + 1 == nodes.len();
        let note = if node.shown_above {
            "  (shown above)"
        } else if node.truncated {
            "  ..."
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{indent}{}{}  {}  {}{note}",
            if last { "└── " } else { "├── " },
            short(node.id),
            status_cell(node.status, 9),
            one_line(&node.summary)
        );
        let deeper = format!("{indent}{}", if last { "    " } else { "│   " });
        branches(out, &node.children, &deeper);
    }
}

/// The first eight characters of an id: enough to type it back as a prefix.
fn short(id: Uuid) -> String {
    id.to_string()[..8].to_string()
}
