//! Submission: readiness and depth, batches that go in whole, and every refusal, with nothing
//! written.

use abathur_core::models::{Session, TaskStatus};
use abathur_core::queue::{NewTask, QueueError, QueueLimits, TaskQueue};
use serde_json::json;
use uuid::Uuid;

use crate::assert_err;
use crate::harness::{after, db, ok, task, Harness};

pub async fn a_task_without_dependencies_is_ready_at_depth_zero(h: Harness) {
    let t = h.submit(task("alone")).await;
    assert_eq!(t.status, TaskStatus::Ready);
    assert_eq!(t.dependency_depth, 0);
    assert_eq!(h.status(t.id).await, TaskStatus::Ready);
}

pub async fn a_task_with_an_unfinished_dependency_is_blocked_one_level_deeper(h: Harness) {
    let a = h.submit(task("a")).await;
    let b = h.submit(after("b", &[a.id])).await;
    let c = h.submit(after("c", &[a.id, b.id])).await;
    assert_eq!(h.status(b.id).await, TaskStatus::Blocked);
    assert_eq!(h.task(b.id).await.dependency_depth, 1);
    assert_eq!(h.status(c.id).await, TaskStatus::Blocked);
    assert_eq!(h.task(c.id).await.dependency_depth, 2, "1 + the deepest");
}

pub async fn a_task_submitted_after_its_dependencies_completed_is_ready_at_once(h: Harness) {
    let a = h.submit(task("a")).await;
    h.run_to_completion(a.id).await;
    let b = h.submit(after("b", &[a.id])).await;
    assert_eq!(h.status(b.id).await, TaskStatus::Ready);
    assert_eq!(h.task(b.id).await.dependency_depth, 1);
}

pub async fn a_batch_may_depend_on_its_own_members_in_any_order(h: Harness) {
    let a = task("a");
    let b = after("b", &[a.id]);
    let c = after("c", &[b.id]);
    let (ia, ib, ic) = (a.id, b.id, c.id);
    let stored = h.submit_batch(vec![c, b, a]).await;
    assert_eq!(stored.len(), 3);
    assert_eq!(h.status(ia).await, TaskStatus::Ready);
    assert_eq!(h.status(ib).await, TaskStatus::Blocked);
    assert_eq!(h.task(ic).await.dependency_depth, 2);
}

pub async fn a_batch_with_one_bad_member_stores_none_of_it(h: Harness) {
    let good = task("good");
    let bad = after("bad", &[Uuid::new_v4()]);
    let ids = [good.id, bad.id];
    assert_err!(
        h.queue.submit_batch(vec![good, bad]).await,
        QueueError::UnknownDependency { .. }
    );
    for id in ids {
        assert!(!h.exists(id).await, "nothing of the batch is stored");
    }
}

pub async fn an_unknown_dependency_is_named(h: Harness) {
    let missing = Uuid::new_v4();
    let t = after("t", &[missing]);
    let id = t.id;
    assert_err!(
        h.queue.submit(t).await,
        QueueError::UnknownDependency { task, dependency } if task == id && dependency == missing
    );
    assert!(!h.exists(id).await);
}

pub async fn a_task_depending_on_itself_is_refused(h: Harness) {
    let mut t = task("self");
    t.dependencies = vec![t.id];
    let id = t.id;
    assert_err!(h.queue.submit(t).await, QueueError::SelfDependency { task } if task == id);
    assert!(!h.exists(id).await);
}

pub async fn a_cycle_in_a_batch_is_refused_with_its_path(h: Harness) {
    let mut a = task("a");
    let b = after("b", &[a.id]);
    let c = after("c", &[b.id]);
    a.dependencies = vec![c.id];
    let ids = [a.id, b.id, c.id];
    match h.queue.submit_batch(vec![a, b, c]).await {
        Err(QueueError::Cycle { path }) => {
            assert!(path.len() >= 4, "the path closes on itself: {path:?}");
            assert_eq!(path.first(), path.last());
            assert!(path.iter().all(|p| ids.contains(p)));
        }
        other => panic!("expected a cycle, got {other:?}"),
    }
    for id in ids {
        assert!(!h.exists(id).await);
    }
}

pub async fn more_dependencies_than_the_limit_are_refused(h: Harness) {
    let deps: Vec<NewTask> = (0..101).map(|i| task(&format!("dep {i}"))).collect();
    let ids: Vec<Uuid> = deps.iter().map(|d| d.id).collect();
    h.submit_batch(deps).await;
    let t = after("too many", &ids);
    let id = t.id;
    assert_err!(
        h.queue.submit(t).await,
        QueueError::TooManyDependencies { task, count: 101, limit: 100 } if task == id
    );
    assert!(!h.exists(id).await);
}

pub async fn a_task_deeper_than_the_limit_is_refused(h: Harness) {
    let queue: TaskQueue = h.queue.clone().with_limits(QueueLimits {
        max_depth: 2,
        ..QueueLimits::default()
    });
    let a = ok(queue.submit(task("a")).await);
    let b = ok(queue.submit(after("b", &[a.id])).await);
    let c = ok(queue.submit(after("c", &[b.id])).await);
    assert_eq!(c.dependency_depth, 2);
    let d = after("d", &[c.id]);
    let id = d.id;
    assert_err!(
        queue.submit(d).await,
        QueueError::TooDeep { task, depth: 3, limit: 2 } if task == id
    );
    assert!(!h.exists(id).await);
}

pub async fn a_dependency_that_failed_or_was_cancelled_is_unavailable(h: Harness) {
    let failed = h.submit(task("failed")).await;
    let attempt = h.claim_only(failed.id).await;
    h.fail(attempt, "boom").await;
    let cancelled = h.submit(task("cancelled")).await;
    ok(h.queue.cancel(cancelled.id, "person").await);
    for (dep, status) in [
        (failed.id, TaskStatus::Failed),
        (cancelled.id, TaskStatus::Cancelled),
    ] {
        let t = after("waits", &[dep]);
        let id = t.id;
        assert_err!(
            h.queue.submit(t).await,
            QueueError::DependencyUnavailable { task, dependency, status: s }
                if task == id && dependency == dep && s == status
        );
        assert!(!h.exists(id).await);
    }
}

pub async fn an_id_already_stored_is_refused(h: Harness) {
    let first = h.submit(task("first")).await;
    let again = NewTask {
        id: first.id,
        ..task("second")
    };
    assert_err!(
        h.queue.submit(again).await,
        QueueError::DuplicateTask { task } if task == first.id
    );
    assert_eq!(h.task(first.id).await.summary, "first");
}

pub async fn the_same_id_twice_in_one_batch_is_refused(h: Harness) {
    let a = task("a");
    let twin = NewTask {
        id: a.id,
        ..task("twin")
    };
    let id = a.id;
    assert_err!(
        h.queue.submit_batch(vec![a, twin]).await,
        QueueError::DuplicateTask { task } if task == id
    );
    assert!(!h.exists(id).await);
}

pub async fn an_unknown_parent_is_named(h: Harness) {
    let parent = Uuid::new_v4();
    let t = NewTask {
        parent_task_id: Some(parent),
        ..task("child")
    };
    let id = t.id;
    assert_err!(
        h.queue.submit(t).await,
        QueueError::UnknownReference { task, id: missing, .. } if task == id && missing == parent
    );
    assert!(!h.exists(id).await);
}

pub async fn an_unknown_session_is_named(h: Harness) {
    let session = Uuid::new_v4();
    let t = NewTask {
        session_id: Some(session),
        ..task("in a session")
    };
    let id = t.id;
    assert_err!(
        h.queue.submit(t).await,
        QueueError::UnknownReference { task, id: missing, .. } if task == id && missing == session
    );
    assert!(!h.exists(id).await);
}

pub async fn parent_links_that_loop_within_a_batch_are_refused(h: Harness) {
    let mut a = task("a");
    let b = NewTask {
        parent_task_id: Some(a.id),
        ..task("b")
    };
    a.parent_task_id = Some(b.id);
    let ids = [a.id, b.id];
    assert_err!(
        h.queue.submit_batch(vec![a, b]).await,
        QueueError::ParentCycle { .. }
    );
    for id in ids {
        assert!(!h.exists(id).await);
    }
}

pub async fn a_summary_or_priority_out_of_range_is_refused(h: Harness) {
    let long = NewTask {
        summary: "x".repeat(141),
        ..task("long")
    };
    let high = NewTask {
        priority: 11,
        ..task("high")
    };
    let ids = [long.id, high.id];
    assert_err!(h.queue.submit(long).await, QueueError::Validation(e) if e.field == "summary");
    assert_err!(h.queue.submit(high).await, QueueError::Validation(e) if e.field == "priority");
    for id in ids {
        assert!(!h.exists(id).await);
    }
}

pub async fn a_deadline_that_is_not_in_the_future_is_refused(h: Harness) {
    let t = NewTask {
        deadline: Some(h.now()),
        ..task("late")
    };
    let id = t.id;
    assert_err!(h.queue.submit(t).await, QueueError::Validation(e) if e.field == "deadline");
    assert!(!h.exists(id).await);
}

pub async fn a_parent_and_its_children_go_in_one_batch_in_any_order(h: Harness) {
    let parent = task("parent");
    let child = NewTask {
        parent_task_id: Some(parent.id),
        ..task("child")
    };
    let waits = after("waits for the child", &[child.id]);
    let (ip, ic) = (parent.id, child.id);
    h.submit_batch(vec![waits, child, parent]).await;
    assert_eq!(h.task(ic).await.parent_task_id, Some(ip));
    let children = db(h.ports.tasks.get_by_parent(ip).await);
    assert_eq!(children.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ic]);
}

pub async fn a_submitted_task_reads_back_with_what_was_submitted(h: Harness) {
    let session = Session::new("app", "user", h.now());
    db(h.ports.sessions.create(session.clone()).await);
    let deadline = h.now() + chrono::Duration::hours(48);
    let t = NewTask {
        summary: "summary".into(),
        description: "the description".into(),
        priority: 7,
        input_data: Some(json!({"files": [1, 2], "deep": {"x": null}})),
        max_retries: 2,
        max_execution_timeout_seconds: 90,
        created_by: Some("planner".into()),
        session_id: Some(session.id),
        deadline: Some(deadline),
        estimated_duration_seconds: Some(30),
        feature_branch: Some("feature/x".into()),
        task_branch: Some("task/x".into()),
        worktree_path: Some("/tmp/worktree".into()),
        ..task("unused")
    };
    let stored = h.submit(t.clone()).await;
    let read = h.task(t.id).await;
    assert_eq!(stored.id, t.id);
    assert_eq!(read.summary, t.summary);
    assert_eq!(read.description, t.description);
    assert_eq!(read.agent_type, t.agent_type);
    assert_eq!(read.priority, 7);
    assert_eq!(read.input_data, t.input_data);
    assert_eq!(read.max_retries, 2);
    assert_eq!(read.max_execution_timeout_seconds, 90);
    assert_eq!(read.created_by.as_deref(), Some("planner"));
    assert_eq!(read.session_id, Some(session.id));
    assert_eq!(read.deadline, Some(deadline));
    assert_eq!(read.estimated_duration_seconds, Some(30));
    assert_eq!(read.feature_branch.as_deref(), Some("feature/x"));
    assert_eq!(read.task_branch.as_deref(), Some("task/x"));
    assert_eq!(read.worktree_path.as_deref(), Some("/tmp/worktree"));
    assert_eq!(read.submitted_at, h.now());
    assert_eq!(read.retry_count, 0);
    assert_eq!(read.result_data, None);
    let in_session = db(h.ports.tasks.get_by_session(session.id).await);
    assert_eq!(
        in_session.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![t.id]
    );
}

pub async fn a_dependency_listed_twice_is_refused(h: Harness) {
    let a = h.submit(task("a")).await;
    let t = after("twice", &[a.id, a.id]);
    let id = t.id;
    assert!(h.queue.submit(t).await.is_err());
    assert!(!h.exists(id).await);
}

pub async fn an_empty_batch_stores_nothing(h: Harness) {
    let stored = ok(h.queue.submit_batch(Vec::new()).await);
    assert!(stored.is_empty());
    assert_eq!(db(h.ports.tasks.count(Default::default()).await), 0);
}
