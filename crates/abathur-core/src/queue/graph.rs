//! Checks of a submitted batch's own dependency graph. A new task can only depend on stored
//! tasks or on members of its batch, and no stored task can depend on a new one, so a cycle can
//! only run through members of the batch: checking the batch alone is enough, and nothing is
//! loaded from the store.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::policy::QueueLimits;
use super::types::{NewTask, PendingTask, PlanStep, QueueError};
use crate::error::ValidationError;

/// Orders unfinished tasks so that each comes after every task it waits for, grouped in
/// stages that can run in parallel; within a stage the most urgent come first. A dependency
/// outside `pending` is taken as finished. Tasks caught in a cycle (which the queue never
/// stores) would be left out.
pub fn execution_plan(pending: Vec<PendingTask>) -> Vec<PlanStep> {
    let index: HashMap<Uuid, usize> = pending
        .iter()
        .enumerate()
        .map(|(i, t)| (t.task_id, i))
        .collect();
    let mut waiting = vec![0usize; pending.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); pending.len()];
    for (i, task) in pending.iter().enumerate() {
        for dependency in &task.waits_for {
            if let Some(&d) = index.get(dependency) {
                waiting[i] += 1;
                dependents[d].push(i);
            }
        }
    }
    let mut stage_of = vec![0u32; pending.len()];
    let mut current: Vec<usize> = (0..pending.len()).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(pending.len());
    let mut stage = 0;
    while !current.is_empty() {
        current.sort_by(|&a, &b| {
            pending[b]
                .calculated_priority
                .total_cmp(&pending[a].calculated_priority)
                .then_with(|| pending[a].task_id.cmp(&pending[b].task_id))
        });
        let mut next = Vec::new();
        for &i in &current {
            stage_of[i] = stage;
            order.push(i);
            for &d in &dependents[i] {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    next.push(d);
                }
            }
        }
        current = next;
        stage += 1;
    }
    let mut slots: Vec<Option<PendingTask>> = pending.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(|i| {
            slots[i].take().map(|task| PlanStep {
                stage: stage_of[i],
                task,
            })
        })
        .collect()
}

/// Checks a batch's graph and orders it so that every member comes after the members it
/// depends on.
///
/// # Errors
/// `DuplicateTask` for an id used twice, `SelfDependency`, a `Validation` error for a
/// dependency listed twice, `TooManyDependencies` past `limits.max_dependencies`, `Cycle`
/// with the cycle's path when the members depend on each other in a loop, and `ParentCycle`
/// when they name each other as parents in a loop.
pub fn plan_batch(batch: Vec<NewTask>, limits: &QueueLimits) -> Result<Vec<NewTask>, QueueError> {
    let mut index = HashMap::with_capacity(batch.len());
    for (i, task) in batch.iter().enumerate() {
        if index.insert(task.id, i).is_some() {
            return Err(QueueError::DuplicateTask { task: task.id });
        }
    }
    for task in &batch {
        if task.dependencies.len() > limits.max_dependencies {
            return Err(QueueError::TooManyDependencies {
                task: task.id,
                count: task.dependencies.len(),
                limit: limits.max_dependencies,
            });
        }
        let mut seen = HashSet::with_capacity(task.dependencies.len());
        for dependency in &task.dependencies {
            if *dependency == task.id {
                return Err(QueueError::SelfDependency { task: task.id });
            }
            if !seen.insert(dependency) {
                return Err(ValidationError::new(
                    "dependencies",
                    format!("task {} lists {dependency} more than once", task.id),
                )
                .into());
            }
        }
    }

    // Depth-first search over the members; a member met again while still on the path closes
    // a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; batch.len()];
    let mut order = Vec::with_capacity(batch.len());
    for start in 0..batch.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // (member, index of its next dependency to visit)
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::OnPath;
        while let Some(&mut (member, ref mut next)) = path.last_mut() {
            let deps = &batch[member].dependencies;
            if let Some(dep) = deps.get(*next) {
                *next += 1;
                let Some(&d) = index.get(dep) else { continue };
                match marks[d] {
                    Mark::New => {
                        marks[d] = Mark::OnPath;
                        path.push((d, 0));
                    }
                    Mark::OnPath => {
                        let from = path.iter().position(|(m, _)| *m == d).unwrap_or(0);
                        let mut cycle: Vec<Uuid> =
                            path[from..].iter().map(|(m, _)| batch[*m].id).collect();
                        cycle.push(batch[d].id);
                        return Err(QueueError::Cycle { path: cycle });
                    }
                    Mark::Done => {}
                }
            } else {
                marks[member] = Mark::Done;
                order.push(member);
                path.pop();
            }
        }
    }
    check_parents(&batch, &index)?;
    let mut slots: Vec<Option<NewTask>> = batch.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

/// Refuses parent links that loop among the members. A stored task's parent is already
/// stored, so a loop can only run through the batch.
fn check_parents(batch: &[NewTask], index: &HashMap<Uuid, usize>) -> Result<(), QueueError> {
    // 0: not seen; k: seen on the walk that started at member k - 1.
    let mut seen = vec![0usize; batch.len()];
    for start in 0..batch.len() {
        if seen[start] != 0 {
            continue;
        }
        let walk = start + 1;
        let mut chain: Vec<usize> = Vec::new();
        let mut member = Some(start);
        while let Some(m) = member {
            if seen[m] == walk {
                let from = chain.iter().position(|c| *c == m).unwrap_or(0);
                let mut path: Vec<Uuid> = chain[from..].iter().map(|c| batch[*c].id).collect();
                path.push(batch[m].id);
                return Err(QueueError::ParentCycle { path });
            }
            if seen[m] != 0 {
                break;
            }
            seen[m] = walk;
            chain.push(m);
            member = batch[m]
                .parent_task_id
                .and_then(|parent| index.get(&parent).copied());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> NewTask {
        NewTask::new(name, name, "agent")
    }

    #[test]
    fn members_come_after_their_dependencies() {
        let a = t("a");
        let mut b = t("b");
        b.dependencies = vec![a.id];
        let mut c = t("c");
        c.dependencies = vec![b.id, a.id];
        let ids = [c.id, b.id, a.id];
        let order: Vec<Uuid> = plan_batch(vec![c, b, a], &QueueLimits::default())
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(order, [ids[2], ids[1], ids[0]]);
    }

    #[test]
    fn a_cycle_is_reported_with_its_path() {
        let mut a = t("a");
        let mut b = t("b");
        let mut c = t("c");
        a.dependencies = vec![c.id];
        b.dependencies = vec![a.id];
        c.dependencies = vec![b.id];
        let (ia, ib, ic) = (a.id, b.id, c.id);
        match plan_batch(vec![a, b, c], &QueueLimits::default()) {
            Err(QueueError::Cycle { path }) => {
                assert_eq!(path.first(), path.last());
                assert_eq!(path.len(), 4);
                for id in [ia, ib, ic] {
                    assert!(path.contains(&id));
                }
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn self_dependencies_duplicates_and_too_many_dependencies_are_named() {
        let mut a = t("a");
        a.dependencies = vec![a.id];
        assert!(matches!(
            plan_batch(vec![a.clone()], &QueueLimits::default()),
            Err(QueueError::SelfDependency { .. })
        ));
        assert!(matches!(
            plan_batch(vec![t("x"), a.clone(), a.clone()], &QueueLimits::default()),
            Err(QueueError::DuplicateTask { .. })
        ));
        let mut many = t("many");
        many.dependencies = (0..3).map(|_| Uuid::new_v4()).collect();
        let limits = QueueLimits {
            max_dependencies: 2,
            ..QueueLimits::default()
        };
        assert!(matches!(
            plan_batch(vec![many], &limits),
            Err(QueueError::TooManyDependencies {
                count: 3,
                limit: 2,
                ..
            })
        ));
    }
}
