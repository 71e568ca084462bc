//! The low-level task store: rows and dependency edges kept consistent, filters, order, and
//! every error its port documents.

use abathur_core::error::DatabaseError;
use abathur_core::models::{Session, Task, TaskSource, TaskStatus};
use abathur_core::ports::{FinishedMinute, TaskCursor, TaskFilters, TaskOrder, TaskPageQuery};
use abathur_core::queue::{QueueError, TaskEvent};
use serde_json::json;
use uuid::Uuid;

use crate::assert_err;
use crate::harness::{db, sorted, Harness};

fn row(h: &Harness, summary: &str) -> Task {
    Task::new(summary, format!("{summary} in full"), "worker", h.now())
}

fn ids(tasks: &[Task]) -> Vec<Uuid> {
    tasks.iter().map(|t| t.id).collect()
}

pub async fn an_inserted_task_with_every_field_set_reads_back_equal(h: Harness) {
    let session = Session::new("app", "user", h.now());
    db(h.ports.sessions.create(session.clone()).await);
    let parent = row(&h, "parent");
    let dep = row(&h, "dep");
    db(h.ports.tasks.insert(parent.clone()).await);
    db(h.ports.tasks.insert(dep.clone()).await);
    let t = Task {
        priority: 8,
        calculated_priority: 12.5,
        status: TaskStatus::Blocked,
        dependencies: Some(vec![dep.id]),
        dependency_depth: 1,
        input_data: Some(json!({"k": [1, "two", null]})),
        result_data: Some(json!(true)),
        error_message: Some("an error".into()),
        retry_count: 2,
        max_retries: 4,
        max_execution_timeout_seconds: 77,
        started_at: Some(h.now() + chrono::Duration::seconds(1)),
        completed_at: Some(h.now() + chrono::Duration::seconds(2)),
        created_by: Some("me".into()),
        parent_task_id: Some(parent.id),
        session_id: Some(session.id),
        source: TaskSource::AgentPlanner,
        deadline: Some(h.now() + chrono::Duration::days(2)),
        estimated_duration_seconds: Some(12),
        feature_branch: Some("feature".into()),
        task_branch: Some("task".into()),
        worktree_path: Some("/w".into()),
        ..row(&h, "full")
    };
    db(h.ports.tasks.insert(t.clone()).await);
    assert_eq!(db(h.ports.tasks.get(t.id).await), Some(t));
}

pub async fn getting_an_unknown_task_is_none(h: Harness) {
    assert_eq!(db(h.ports.tasks.get(Uuid::new_v4()).await), None);
}

pub async fn inserting_an_id_twice_is_a_unique_violation_and_keeps_the_first(h: Harness) {
    let t = row(&h, "first");
    db(h.ports.tasks.insert(t.clone()).await);
    let twin = Task {
        summary: "second".into(),
        ..t.clone()
    };
    assert_err!(
        h.ports.tasks.insert(twin).await,
        DatabaseError::UniqueViolation { .. }
    );
    assert_eq!(h.task(t.id).await.summary, "first");
}

pub async fn an_unknown_parent_session_or_dependency_is_a_foreign_key_violation(h: Harness) {
    let missing = Uuid::new_v4();
    for t in [
        Task {
            parent_task_id: Some(missing),
            ..row(&h, "orphan")
        },
        Task {
            session_id: Some(missing),
            ..row(&h, "sessionless")
        },
        Task {
            dependencies: Some(vec![missing]),
            ..row(&h, "waits on nothing")
        },
    ] {
        let id = t.id;
        assert_err!(
            h.ports.tasks.insert(t).await,
            DatabaseError::ForeignKeyViolation { id: Some(named), .. } if named == missing.to_string()
        );
        assert!(!h.exists(id).await);
    }
}

pub async fn an_invalid_task_is_refused_naming_the_field_and_nothing_is_written(h: Harness) {
    let cases: Vec<(Task, &str)> = vec![
        (
            Task {
                summary: "x".repeat(141),
                ..row(&h, "x")
            },
            "summary",
        ),
        (
            Task {
                priority: 11,
                ..row(&h, "x")
            },
            "priority",
        ),
        (
            Task {
                calculated_priority: f64::NAN,
                ..row(&h, "x")
            },
            "calculated_priority",
        ),
        (
            Task {
                description: "a\0b".into(),
                ..row(&h, "x")
            },
            "description",
        ),
    ];
    for (t, field) in cases {
        let id = t.id;
        assert_err!(h.ports.tasks.insert(t).await, DatabaseError::Validation(e) if e.field == field);
        assert!(!h.exists(id).await);
    }
}

pub async fn a_multibyte_summary_is_measured_in_characters(h: Harness) {
    let t = Task {
        summary: "é".repeat(140),
        ..row(&h, "x")
    };
    db(h.ports.tasks.insert(t.clone()).await);
    assert_eq!(h.task(t.id).await.summary.chars().count(), 140);
}

pub async fn a_task_depending_on_itself_or_twice_on_one_task_is_refused(h: Harness) {
    let dep = row(&h, "dep");
    db(h.ports.tasks.insert(dep.clone()).await);
    let mut own = row(&h, "self");
    own.dependencies = Some(vec![own.id]);
    let twice = Task {
        dependencies: Some(vec![dep.id, dep.id]),
        ..row(&h, "twice")
    };
    let mut own_parent = row(&h, "own parent");
    own_parent.parent_task_id = Some(own_parent.id);
    for t in [own, twice, own_parent] {
        let id = t.id;
        assert_err!(h.ports.tasks.insert(t).await, DatabaseError::Validation(_));
        assert!(!h.exists(id).await);
    }
}

pub async fn update_replaces_the_fields_and_keeps_the_submission_time(h: Harness) {
    let t = row(&h, "before");
    db(h.ports.tasks.insert(t.clone()).await);
    h.advance(60);
    let changed = Task {
        summary: "after".into(),
        priority: 9,
        status: TaskStatus::Ready,
        submitted_at: h.now() + chrono::Duration::days(1),
        input_data: Some(json!({"x": 1})),
        ..t.clone()
    };
    db(h.ports.tasks.update(changed).await);
    let stored = h.task(t.id).await;
    assert_eq!(stored.summary, "after");
    assert_eq!(stored.priority, 9);
    assert_eq!(stored.status, TaskStatus::Ready);
    assert_eq!(stored.input_data, Some(json!({"x": 1})));
    assert_eq!(stored.submitted_at, t.submitted_at);
    assert_eq!(stored.last_updated_at, h.now());
}

pub async fn updating_an_unknown_task_is_not_found(h: Harness) {
    let t = row(&h, "never stored");
    assert_err!(
        h.ports.tasks.update(t.clone()).await,
        DatabaseError::NotFound { .. }
    );
    assert!(!h.exists(t.id).await);
}

pub async fn an_update_that_fails_leaves_the_task_unchanged(h: Harness) {
    let t = row(&h, "kept");
    db(h.ports.tasks.insert(t.clone()).await);
    let before = h.task(t.id).await;
    let bad = Task {
        dependencies: Some(vec![Uuid::new_v4()]),
        summary: "changed".into(),
        ..t.clone()
    };
    assert_err!(
        h.ports.tasks.update(bad).await,
        DatabaseError::ForeignKeyViolation { .. }
    );
    let invalid = Task {
        priority: 11,
        ..t.clone()
    };
    assert_err!(
        h.ports.tasks.update(invalid).await,
        DatabaseError::Validation(_)
    );
    assert_eq!(h.task(t.id).await, before);
}

pub async fn update_moves_the_dependency_edges_with_the_list(h: Harness) {
    let a = row(&h, "a");
    let b = row(&h, "b");
    let t = Task {
        dependencies: Some(vec![a.id]),
        ..row(&h, "t")
    };
    db(h.ports
        .tasks
        .insert_batch(vec![a.clone(), b.clone(), t.clone()])
        .await);
    assert_eq!(
        ids(&db(h.ports.tasks.get_dependents(a.id).await)),
        vec![t.id]
    );
    db(h.ports
        .tasks
        .update(Task {
            dependencies: Some(vec![b.id]),
            ..t.clone()
        })
        .await);
    assert!(db(h.ports.tasks.get_dependents(a.id).await).is_empty());
    assert_eq!(
        ids(&db(h.ports.tasks.get_dependents(b.id).await)),
        vec![t.id]
    );
}

pub async fn deleting_a_task_removes_it_from_its_dependents_and_orphans_its_children(h: Harness) {
    let gone = row(&h, "gone");
    let other = row(&h, "other");
    let dependent = Task {
        dependencies: Some(vec![gone.id, other.id]),
        ..row(&h, "dependent")
    };
    let child = Task {
        parent_task_id: Some(gone.id),
        ..row(&h, "child")
    };
    db(h.ports
        .tasks
        .insert_batch(vec![
            gone.clone(),
            other.clone(),
            dependent.clone(),
            child.clone(),
        ])
        .await);
    db(h.ports.tasks.delete(gone.id).await);
    assert!(!h.exists(gone.id).await);
    assert_eq!(
        h.task(dependent.id).await.dependencies,
        Some(vec![other.id])
    );
    assert_eq!(h.task(child.id).await.parent_task_id, None);
}

pub async fn deleting_an_unknown_task_is_not_found(h: Harness) {
    let kept = row(&h, "kept");
    db(h.ports.tasks.insert(kept.clone()).await);
    assert_err!(
        h.ports.tasks.delete(Uuid::new_v4()).await,
        DatabaseError::NotFound { .. }
    );
    assert!(h.exists(kept.id).await);
}

pub async fn update_status_sets_the_start_and_end_times_from_the_clock(h: Harness) {
    let t = row(&h, "timed");
    db(h.ports.tasks.insert(t.clone()).await);
    let start = h.now();
    db(h.ports.tasks.update_status(t.id, TaskStatus::Running).await);
    h.advance(3);
    db(h.ports
        .tasks
        .update_status(t.id, TaskStatus::Completed)
        .await);
    let stored = h.task(t.id).await;
    assert_eq!(stored.status, TaskStatus::Completed);
    assert_eq!(stored.started_at, Some(start));
    assert_eq!(stored.completed_at, Some(h.now()));
    assert_eq!(stored.last_updated_at, h.now());
}

pub async fn update_status_of_an_unknown_task_is_not_found(h: Harness) {
    assert_err!(
        h.ports
            .tasks
            .update_status(Uuid::new_v4(), TaskStatus::Ready)
            .await,
        DatabaseError::NotFound { .. }
    );
}

pub async fn list_and_count_apply_each_filter(h: Harness) {
    let session = Session::new("app", "user", h.now());
    db(h.ports.sessions.create(session.clone()).await);
    let parent = row(&h, "parent");
    let a = Task {
        status: TaskStatus::Ready,
        agent_type: "coder".into(),
        priority: 2,
        session_id: Some(session.id),
        feature_branch: Some("f1".into()),
        ..row(&h, "a")
    };
    let b = Task {
        status: TaskStatus::Blocked,
        priority: 8,
        parent_task_id: Some(parent.id),
        source: TaskSource::AgentImplementation,
        ..row(&h, "b")
    };
    db(h.ports
        .tasks
        .insert_batch(vec![parent.clone(), a.clone(), b.clone()])
        .await);
    let cases: Vec<(TaskFilters, Vec<Uuid>)> = vec![
        (
            TaskFilters {
                status: Some(TaskStatus::Ready),
                ..Default::default()
            },
            vec![a.id],
        ),
        (
            TaskFilters {
                agent_type: Some("coder".into()),
                ..Default::default()
            },
            vec![a.id],
        ),
        (
            TaskFilters {
                session_id: Some(session.id),
                ..Default::default()
            },
            vec![a.id],
        ),
        (
            TaskFilters {
                feature_branch: Some("f1".into()),
                ..Default::default()
            },
            vec![a.id],
        ),
        (
            TaskFilters {
                parent_task_id: Some(parent.id),
                ..Default::default()
            },
            vec![b.id],
        ),
        (
            TaskFilters {
                source: Some(TaskSource::AgentImplementation),
                ..Default::default()
            },
            vec![b.id],
        ),
        (
            TaskFilters {
                min_priority: Some(6),
                ..Default::default()
            },
            vec![b.id],
        ),
        (
            TaskFilters {
                max_priority: Some(3),
                ..Default::default()
            },
            vec![a.id],
        ),
        (
            TaskFilters {
                min_priority: Some(2),
                max_priority: Some(2),
                ..Default::default()
            },
            vec![a.id],
        ),
        (
            TaskFilters {
                status: Some(TaskStatus::Failed),
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (filters, want) in cases {
        let got = db(h.ports.tasks.list(filters.clone()).await);
        assert_eq!(sorted(ids(&got)), sorted(want.clone()), "{filters:?}");
        assert_eq!(
            db(h.ports.tasks.count(filters.clone()).await),
            want.len() as i64,
            "{filters:?}"
        );
    }
    assert_eq!(db(h.ports.tasks.count(TaskFilters::default()).await), 3);
}

pub async fn list_filters_by_submission_time(h: Harness) {
    let early = row(&h, "early");
    h.advance(10);
    let cut = h.now();
    let late = row(&h, "late");
    db(h.ports
        .tasks
        .insert_batch(vec![early.clone(), late.clone()])
        .await);
    let after = db(h
        .ports
        .tasks
        .list(TaskFilters {
            submitted_after: Some(cut),
            ..Default::default()
        })
        .await);
    assert_eq!(ids(&after), vec![late.id], "at or after");
    let before = db(h
        .ports
        .tasks
        .list(TaskFilters {
            submitted_before: Some(cut),
            ..Default::default()
        })
        .await);
    assert_eq!(ids(&before), vec![early.id], "strictly before");
}

pub async fn list_orders_by_calculated_priority_then_submission_then_id(h: Harness) {
    let base = h.now();
    let mk = |summary: &str, cp: f64, second: i64| Task {
        calculated_priority: cp,
        submitted_at: base + chrono::Duration::seconds(second),
        last_updated_at: base + chrono::Duration::seconds(second),
        ..Task::new(summary, summary, "worker", base)
    };
    let low = mk("low", 1.0, 0);
    let high_new = mk("high new", 9.0, 5);
    let high_old = mk("high old", 9.0, 1);
    let mut twins = [mk("twin", 4.0, 2), mk("twin", 4.0, 2)];
    twins.sort_by_key(|t| t.id);
    db(h.ports
        .tasks
        .insert_batch(vec![
            low.clone(),
            twins[1].clone(),
            high_new.clone(),
            twins[0].clone(),
            high_old.clone(),
        ])
        .await);
    let listed = db(h.ports.tasks.list(TaskFilters::default()).await);
    assert_eq!(
        ids(&listed),
        vec![high_old.id, high_new.id, twins[0].id, twins[1].id, low.id]
    );
}

pub async fn list_pages_by_limit_and_offset_and_count_ignores_both(h: Harness) {
    let base = h.now();
    let tasks: Vec<Task> = (0..5)
        .map(|i| Task {
            submitted_at: base + chrono::Duration::seconds(i),
            last_updated_at: base + chrono::Duration::seconds(i),
            ..Task::new(format!("t{i}"), "t", "worker", base)
        })
        .collect();
    db(h.ports.tasks.insert_batch(tasks.clone()).await);
    let page = TaskFilters {
        limit: Some(2),
        offset: Some(1),
        ..Default::default()
    };
    assert_eq!(
        ids(&db(h.ports.tasks.list(page.clone()).await)),
        vec![tasks[1].id, tasks[2].id]
    );
    assert_eq!(db(h.ports.tasks.count(page).await), 5);
}

pub async fn bad_list_arguments_are_refused(h: Harness) {
    let bad = [
        (
            TaskFilters {
                limit: Some(-1),
                ..Default::default()
            },
            "limit",
        ),
        (
            TaskFilters {
                limit: Some(i64::from(abathur_core::limits::MAX_PAGE) + 1),
                ..Default::default()
            },
            "limit",
        ),
        (
            TaskFilters {
                offset: Some(-5),
                ..Default::default()
            },
            "offset",
        ),
        (
            TaskFilters {
                min_priority: Some(8),
                max_priority: Some(2),
                ..Default::default()
            },
            "min_priority",
        ),
    ];
    for (filters, field) in bad {
        assert_err!(h.ports.tasks.list(filters.clone()).await, DatabaseError::Validation(e) if e.field == field);
    }
    assert_err!(
        h.ports
            .tasks
            .count(TaskFilters {
                min_priority: Some(8),
                max_priority: Some(2),
                ..Default::default()
            })
            .await,
        DatabaseError::Validation(_)
    );
}

/// Tasks with ties in every sort key but the id: 3 priorities x 4 submission times x 2 each.
fn tied_tasks(h: &Harness) -> Vec<Task> {
    let base = h.now();
    let mut tasks = Vec::new();
    for p in 0..3 {
        for second in 0..4 {
            for twin in 0..2 {
                let at = base + chrono::Duration::seconds(second);
                tasks.push(Task {
                    calculated_priority: f64::from(p) * 1.5,
                    status: if twin == 0 {
                        TaskStatus::Ready
                    } else {
                        TaskStatus::Completed
                    },
                    submitted_at: at,
                    last_updated_at: at,
                    ..Task::new(format!("p{p} s{second} t{twin}"), "x", "worker", base)
                });
            }
        }
    }
    tasks
}

/// Every page of `query`, walked with the cursor of each page's last task.
async fn walk(h: &Harness, query: TaskPageQuery) -> Vec<Task> {
    let mut query = query;
    let mut all = Vec::new();
    loop {
        let page = db(h.ports.tasks.page(query.clone()).await);
        assert!(page.len() <= query.limit as usize);
        let Some(last) = page.last() else {
            return all;
        };
        query.after = Some(TaskCursor::after(query.order, last));
        let full = page.len() == query.limit as usize;
        all.extend(page);
        if !full {
            return all;
        }
    }
}

pub async fn pages_walk_every_task_once_in_each_order(h: Harness) {
    let tasks = tied_tasks(&h);
    db(h.ports.tasks.insert_batch(tasks.clone()).await);
    for order in [TaskOrder::Newest, TaskOrder::Oldest, TaskOrder::Priority] {
        let mut expected = tasks.clone();
        match order {
            TaskOrder::Newest => {
                expected.sort_by_key(|t| std::cmp::Reverse((t.submitted_at, t.id)));
            }
            TaskOrder::Oldest => expected.sort_by_key(|t| (t.submitted_at, t.id)),
            TaskOrder::Priority => expected.sort_by(|a, b| {
                b.calculated_priority
                    .total_cmp(&a.calculated_priority)
                    .then((a.submitted_at, a.id).cmp(&(b.submitted_at, b.id)))
            }),
        }
        for limit in [1, 5, 24, 1000] {
            let walked = walk(
                &h,
                TaskPageQuery {
                    order,
                    limit,
                    ..Default::default()
                },
            )
            .await;
            assert_eq!(ids(&walked), ids(&expected), "{order:?}, pages of {limit}");
        }
        // With a filter, the same order over the tasks it keeps.
        let ready: Vec<Uuid> = expected
            .iter()
            .filter(|t| t.status == TaskStatus::Ready)
            .map(|t| t.id)
            .collect();
        let walked = walk(
            &h,
            TaskPageQuery {
                filters: TaskFilters {
                    status: Some(TaskStatus::Ready),
                    ..Default::default()
                },
                order,
                limit: 5,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(ids(&walked), ready, "{order:?}, ready only");
    }
    // The first page in priority order is `list`'s first page.
    let listed = db(h
        .ports
        .tasks
        .list(TaskFilters {
            limit: Some(7),
            ..Default::default()
        })
        .await);
    let paged = db(h
        .ports
        .tasks
        .page(TaskPageQuery {
            order: TaskOrder::Priority,
            limit: 7,
            ..Default::default()
        })
        .await);
    assert_eq!(ids(&paged), ids(&listed));
}

pub async fn a_page_starts_after_its_cursor_even_when_that_task_is_gone(h: Harness) {
    let tasks = tied_tasks(&h);
    db(h.ports.tasks.insert_batch(tasks.clone()).await);
    let query = TaskPageQuery {
        order: TaskOrder::Oldest,
        limit: 3,
        ..Default::default()
    };
    let first = db(h.ports.tasks.page(query.clone()).await);
    let last = first.last().expect("a full page").clone();
    db(h.ports.tasks.delete(last.id).await);
    let next = db(h
        .ports
        .tasks
        .page(TaskPageQuery {
            after: Some(TaskCursor::after(TaskOrder::Oldest, &last)),
            ..query
        })
        .await);
    let mut expected = tasks;
    expected.sort_by_key(|t| (t.submitted_at, t.id));
    assert_eq!(ids(&next), ids(&expected[3..6]));
}

pub async fn a_page_searches_summaries_for_literal_text_ignoring_ascii_case(h: Harness) {
    let names = [
        "Deploy the API",
        "deploy docs",
        "100% done",
        "1000 done",
        "snake_case",
        "snakeXcase",
        r"back\slash",
        r#"say "hi" twice"#,
        "unrelated",
    ];
    let tasks: Vec<Task> = names.iter().map(|n| row(&h, n)).collect();
    db(h.ports.tasks.insert_batch(tasks.clone()).await);
    for (text, expected) in [
        ("DEPLOY", vec!["Deploy the API", "deploy docs"]),
        ("0%", vec!["100% done"]),
        ("e_c", vec!["snake_case"]),
        (r"k\s", vec![r"back\slash"]),
        ("nothing like it", vec![]),
        // Three characters and more are looked up in a trigram index first: quotes and the
        // case of letters mean the same there.
        (r#"Y "HI""#, vec![r#"say "hi" twice"#]),
        ("\"", vec![r#"say "hi" twice"#]),
        ("% d", vec!["100% done"]),
        ("ake_c", vec!["snake_case"]),
    ] {
        let found = db(h
            .ports
            .tasks
            .page(TaskPageQuery {
                summary_contains: Some(text.to_string()),
                order: TaskOrder::Oldest,
                limit: 100,
                ..Default::default()
            })
            .await);
        let mut found: Vec<&str> = found.iter().map(|t| t.summary.as_str()).collect();
        found.sort_unstable();
        let mut expected = expected;
        expected.sort_unstable();
        assert_eq!(found, expected, "searching {text:?}");
    }
}

/// The search's index follows every change of a summary: a new task, a summary rewritten by
/// `update`, a task deleted.
pub async fn a_search_follows_summaries_as_they_change_and_go(h: Harness) {
    let search = |text: &str| {
        let query = TaskPageQuery {
            summary_contains: Some(text.to_string()),
            limit: 10,
            ..Default::default()
        };
        let tasks = h.ports.tasks.clone();
        async move { ids(&db(tasks.page(query).await)) }
    };
    let mut task = row(&h, "index the telescope");
    db(h.ports.tasks.insert(task.clone()).await);
    assert_eq!(search("telescope").await, vec![task.id]);
    task.summary = "polish the microscope".into();
    db(h.ports.tasks.update(task.clone()).await);
    assert_eq!(search("telescope").await, Vec::<Uuid>::new());
    assert_eq!(search("MICROSCOPE").await, vec![task.id]);
    task.status = TaskStatus::Completed;
    db(h.ports.tasks.update(task.clone()).await);
    assert_eq!(search("microscope").await, vec![task.id]);
    db(h.ports.tasks.delete(task.id).await);
    assert_eq!(search("microscope").await, Vec::<Uuid>::new());
}

/// A search that matches more tasks than the trigram index hands on
/// ([`abathur_core::ports::MAX_SEARCH_CANDIDATES`]) still finds every match, in order, with
/// the other filters applied.
pub async fn a_search_matching_more_than_the_index_hands_on_finds_every_match(h: Harness) {
    let many = abathur_core::ports::MAX_SEARCH_CANDIDATES + 3;
    let base = h.now();
    let tasks: Vec<Task> = (0..many + 10)
        .map(|i| {
            let at = base + chrono::Duration::milliseconds(i64::try_from(i).unwrap());
            let summary = if i < many {
                format!("common chore {i}")
            } else {
                format!("rare {i}")
            };
            Task {
                status: if i % 2 == 0 {
                    TaskStatus::Ready
                } else {
                    TaskStatus::Blocked
                },
                submitted_at: at,
                last_updated_at: at,
                ..Task::new(summary, "x", "worker", base)
            }
        })
        .collect();
    db(h.ports.tasks.insert_batch(tasks.clone()).await);
    let query = TaskPageQuery {
        summary_contains: Some("CHORE".into()),
        order: TaskOrder::Newest,
        limit: 500,
        ..Default::default()
    };
    let walked = walk(&h, query.clone()).await;
    let expected: Vec<Uuid> = tasks[..many].iter().rev().map(|t| t.id).collect();
    assert_eq!(ids(&walked), expected);
    let ready = walk(
        &h,
        TaskPageQuery {
            filters: TaskFilters {
                status: Some(TaskStatus::Ready),
                ..Default::default()
            },
            ..query
        },
    )
    .await;
    let expected: Vec<Uuid> = tasks[..many]
        .iter()
        .rev()
        .filter(|t| t.status == TaskStatus::Ready)
        .map(|t| t.id)
        .collect();
    assert_eq!(ids(&ready), expected);
}

pub async fn bad_page_arguments_are_refused(h: Harness) {
    let task = row(&h, "any");
    db(h.ports.tasks.insert(task.clone()).await);
    let good = TaskPageQuery {
        limit: 10,
        ..Default::default()
    };
    let bad = [
        (
            TaskPageQuery {
                limit: 0,
                ..good.clone()
            },
            "limit",
        ),
        (
            TaskPageQuery {
                limit: abathur_core::limits::MAX_PAGE + 1,
                ..good.clone()
            },
            "limit",
        ),
        (
            TaskPageQuery {
                filters: TaskFilters {
                    offset: Some(3),
                    ..Default::default()
                },
                ..good.clone()
            },
            "filters",
        ),
        (
            TaskPageQuery {
                filters: TaskFilters {
                    limit: Some(3),
                    ..Default::default()
                },
                ..good.clone()
            },
            "filters",
        ),
        (
            TaskPageQuery {
                summary_contains: Some(String::new()),
                ..good.clone()
            },
            "summary_contains",
        ),
        (
            TaskPageQuery {
                summary_contains: Some("x".repeat(141)),
                ..good.clone()
            },
            "summary_contains",
        ),
        (
            TaskPageQuery {
                summary_contains: Some("ab\0c".into()),
                ..good.clone()
            },
            "summary_contains",
        ),
        (
            TaskPageQuery {
                summary_contains: Some("\0".into()),
                ..good.clone()
            },
            "summary_contains",
        ),
        (
            TaskPageQuery {
                after: Some(TaskCursor::after(TaskOrder::Priority, &task)),
                order: TaskOrder::Newest,
                ..good.clone()
            },
            "after",
        ),
        (
            TaskPageQuery {
                after: Some(TaskCursor {
                    calculated_priority: f64::NAN,
                    ..TaskCursor::after(TaskOrder::Newest, &task)
                }),
                ..good.clone()
            },
            "after",
        ),
        (
            TaskPageQuery {
                filters: TaskFilters {
                    min_priority: Some(9),
                    max_priority: Some(1),
                    ..Default::default()
                },
                ..good.clone()
            },
            "min_priority",
        ),
    ];
    for (query, field) in bad {
        assert_err!(h.ports.tasks.page(query.clone()).await, DatabaseError::Validation(e) if e.field == field);
    }
    assert_eq!(ids(&db(h.ports.tasks.page(good).await)), vec![task.id]);
}

pub async fn finished_tasks_are_counted_per_minute_by_how_they_ended(h: Harness) {
    use chrono::{Duration, DurationRound};
    let minute = h.now().duration_trunc(Duration::minutes(1)).unwrap() - Duration::hours(1);
    let finished = |summary: &str, status: TaskStatus, at: chrono::DateTime<chrono::Utc>| Task {
        status,
        completed_at: Some(at),
        ..Task::new(summary, summary, "worker", minute - Duration::hours(1))
    };
    let tasks = vec![
        // Before the window: left out.
        finished("old", TaskStatus::Completed, minute - Duration::seconds(1)),
        finished("a", TaskStatus::Completed, minute),
        finished("b", TaskStatus::Completed, minute + Duration::seconds(59)),
        finished("c", TaskStatus::Failed, minute + Duration::seconds(30)),
        finished("d", TaskStatus::Cancelled, minute + Duration::minutes(2)),
        finished(
            "e",
            TaskStatus::Completed,
            minute + Duration::minutes(2) + Duration::milliseconds(1),
        ),
        // Never finished, or retried since: no completion time, not counted.
        Task {
            status: TaskStatus::Ready,
            ..Task::new("open", "open", "worker", minute)
        },
    ];
    db(h.ports.tasks.insert_batch(tasks).await);
    let minutes = db(h.ports.tasks.finished_per_minute(minute).await);
    assert_eq!(
        minutes,
        vec![
            FinishedMinute {
                minute,
                completed: 2,
                failed: 1,
                cancelled: 0,
            },
            FinishedMinute {
                minute: minute + Duration::minutes(2),
                completed: 1,
                failed: 0,
                cancelled: 1,
            },
        ]
    );
    let later = db(h
        .ports
        .tasks
        .finished_per_minute(minute + Duration::minutes(3))
        .await);
    assert!(later.is_empty(), "{later:?}");
    assert_err!(
        h.ports
            .tasks
            .finished_per_minute(chrono::DateTime::<chrono::Utc>::MAX_UTC)
            .await,
        DatabaseError::Validation(e) if e.field == "since"
    );
}

pub async fn ready_tasks_come_most_urgent_first(h: Harness) {
    let base = h.now();
    let mk = |summary: &str, cp: f64, second: i64, status: TaskStatus| Task {
        calculated_priority: cp,
        status,
        submitted_at: base + chrono::Duration::seconds(second),
        last_updated_at: base + chrono::Duration::seconds(second),
        ..Task::new(summary, summary, "worker", base)
    };
    let low = mk("low", 1.0, 0, TaskStatus::Ready);
    let high_new = mk("high new", 9.0, 5, TaskStatus::Ready);
    let high_old = mk("high old", 9.0, 1, TaskStatus::Ready);
    let blocked = mk("blocked", 10.0, 0, TaskStatus::Blocked);
    let running = mk("running", 10.0, 0, TaskStatus::Running);
    db(h.ports
        .tasks
        .insert_batch(vec![
            low.clone(),
            high_new.clone(),
            high_old.clone(),
            blocked,
            running,
        ])
        .await);
    let ready = db(h.ports.tasks.get_ready_tasks(10).await);
    assert_eq!(ids(&ready), vec![high_old.id, high_new.id, low.id]);
    assert_eq!(db(h.ports.tasks.get_ready_tasks(1).await).len(), 1);
    assert!(db(h.ports.tasks.get_ready_tasks(0).await).is_empty());
}

pub async fn dependents_children_and_session_tasks_are_found(h: Harness) {
    let session = Session::new("app", "user", h.now());
    db(h.ports.sessions.create(session.clone()).await);
    let root = row(&h, "root");
    let dependent = Task {
        dependencies: Some(vec![root.id]),
        ..row(&h, "dependent")
    };
    let child = Task {
        parent_task_id: Some(root.id),
        session_id: Some(session.id),
        ..row(&h, "child")
    };
    db(h.ports
        .tasks
        .insert_batch(vec![root.clone(), dependent.clone(), child.clone()])
        .await);
    assert_eq!(
        ids(&db(h.ports.tasks.get_dependents(root.id).await)),
        vec![dependent.id]
    );
    assert_eq!(
        ids(&db(h.ports.tasks.get_by_parent(root.id).await)),
        vec![child.id]
    );
    assert_eq!(
        ids(&db(h.ports.tasks.get_by_session(session.id).await)),
        vec![child.id]
    );
    assert!(db(h.ports.tasks.get_dependents(Uuid::new_v4()).await).is_empty());
    assert!(db(h.ports.tasks.get_by_parent(Uuid::new_v4()).await).is_empty());
    assert!(db(h.ports.tasks.get_by_session(Uuid::new_v4()).await).is_empty());
}

/// Many tasks in one read: by id, and by what they wait for. Each task comes once, whatever
/// repeats among the ids; an unknown id finds nothing.
pub async fn many_tasks_are_read_at_once_by_id_and_by_what_they_wait_for(h: Harness) {
    let a = row(&h, "a");
    let b = Task {
        dependencies: Some(vec![a.id]),
        ..row(&h, "b")
    };
    let c = Task {
        dependencies: Some(vec![a.id]),
        ..row(&h, "c")
    };
    let d = Task {
        dependencies: Some(vec![b.id, c.id]),
        ..row(&h, "d")
    };
    db(h.ports
        .tasks
        .insert_batch(vec![a.clone(), b.clone(), c.clone(), d.clone()])
        .await);
    let sorted = |tasks: Vec<Task>| {
        let mut ids = ids(&tasks);
        ids.sort_unstable();
        ids
    };
    let expect = |mut ids: Vec<Uuid>| {
        ids.sort_unstable();
        ids
    };
    let unknown = Uuid::new_v4();
    assert_eq!(
        sorted(db(h
            .ports
            .tasks
            .get_many(&[a.id, d.id, unknown, a.id])
            .await)),
        expect(vec![a.id, d.id])
    );
    assert!(db(h.ports.tasks.get_many(&[]).await).is_empty());
    assert!(db(h.ports.tasks.get_many(&[unknown]).await).is_empty());
    let whole = db(h.ports.tasks.get_many(&[d.id]).await);
    assert_eq!(whole, vec![db(h.ports.tasks.get(d.id).await).unwrap()]);
    assert_eq!(
        sorted(db(h.ports.tasks.get_dependents_of_many(&[a.id], 10).await)),
        expect(vec![b.id, c.id])
    );
    assert_eq!(
        sorted(db(h
            .ports
            .tasks
            .get_dependents_of_many(&[b.id, c.id, unknown], 10)
            .await)),
        vec![d.id]
    );
    assert!(db(h.ports.tasks.get_dependents_of_many(&[d.id], 10).await).is_empty());
    assert!(db(h.ports.tasks.get_dependents_of_many(&[], 10).await).is_empty());
    // At most `limit` of them: one task may have any number of dependents.
    let one = db(h.ports.tasks.get_dependents_of_many(&[a.id], 1).await);
    assert_eq!(one.len(), 1);
    assert!([b.id, c.id].contains(&one[0].id));
    assert!(db(h.ports.tasks.get_dependents_of_many(&[a.id], 0).await).is_empty());
}

pub async fn a_batch_may_refer_to_its_own_members_in_any_order(h: Harness) {
    let parent = row(&h, "parent");
    let dep = row(&h, "dep");
    let t = Task {
        parent_task_id: Some(parent.id),
        dependencies: Some(vec![dep.id]),
        ..row(&h, "t")
    };
    db(h.ports
        .tasks
        .insert_batch(vec![t.clone(), dep.clone(), parent.clone()])
        .await);
    assert_eq!(h.task(t.id).await.parent_task_id, Some(parent.id));
    assert_eq!(
        ids(&db(h.ports.tasks.get_dependents(dep.id).await)),
        vec![t.id]
    );
}

pub async fn a_batch_with_one_bad_member_writes_nothing(h: Harness) {
    let stored = row(&h, "stored");
    db(h.ports.tasks.insert(stored.clone()).await);
    let good = row(&h, "good");
    let cases: Vec<Vec<Task>> = vec![
        vec![
            good.clone(),
            Task {
                priority: 11,
                ..row(&h, "bad")
            },
        ],
        vec![
            good.clone(),
            Task {
                dependencies: Some(vec![Uuid::new_v4()]),
                ..row(&h, "bad")
            },
        ],
        vec![
            good.clone(),
            Task {
                summary: "dup".into(),
                ..stored.clone()
            },
        ],
    ];
    for batch in cases {
        assert!(h.ports.tasks.insert_batch(batch).await.is_err());
        assert!(!h.exists(good.id).await);
    }
    assert_err!(
        h.ports
            .tasks
            .insert_batch(vec![good.clone(), stored.clone()])
            .await,
        DatabaseError::UniqueViolation { .. }
    );
    assert_eq!(h.task(stored.id).await.summary, "stored");
}

pub async fn a_timestamp_outside_years_zero_to_9999_is_refused(h: Harness) {
    use chrono::TimeZone;
    let far = chrono::Utc
        .with_ymd_and_hms(10000, 1, 1, 0, 0, 0)
        .single()
        .unwrap();
    for t in [
        Task {
            deadline: Some(far),
            ..row(&h, "far deadline")
        },
        Task {
            submitted_at: far,
            ..row(&h, "far submission")
        },
    ] {
        let id = t.id;
        assert_err!(h.ports.tasks.insert(t).await, DatabaseError::Validation(_));
        assert!(!h.exists(id).await);
    }
}

pub async fn text_with_a_nul_character_is_refused_in_every_text_field(h: Harness) {
    let nul = || Some("a\0b".to_string());
    let cases = [
        Task {
            summary: "a\0b".into(),
            ..row(&h, "x")
        },
        Task {
            description: "a\0b".into(),
            ..row(&h, "x")
        },
        Task {
            agent_type: "a\0b".into(),
            ..row(&h, "x")
        },
        Task {
            error_message: nul(),
            ..row(&h, "x")
        },
        Task {
            created_by: nul(),
            ..row(&h, "x")
        },
        Task {
            feature_branch: nul(),
            ..row(&h, "x")
        },
        Task {
            task_branch: nul(),
            ..row(&h, "x")
        },
        Task {
            worktree_path: nul(),
            ..row(&h, "x")
        },
    ];
    for t in cases {
        let id = t.id;
        assert_err!(h.ports.tasks.insert(t).await, DatabaseError::Validation(_));
        assert!(!h.exists(id).await);
    }
}

/// The task's history as (from, to, actor, reason).
async fn repository_events(
    h: &Harness,
    id: Uuid,
) -> Vec<(Option<TaskStatus>, TaskStatus, String, Option<String>)> {
    h.history(id)
        .await
        .into_iter()
        .map(|e: TaskEvent| (e.from, e.to, e.actor, e.reason))
        .collect()
}

fn by_repository(
    from: Option<TaskStatus>,
    to: TaskStatus,
    reason: &str,
) -> (Option<TaskStatus>, TaskStatus, String, Option<String>) {
    (from, to, "repository".to_string(), Some(reason.to_string()))
}

pub async fn insert_and_insert_batch_start_the_history_with_the_status_inserted(h: Harness) {
    let one = Task {
        status: TaskStatus::Ready,
        ..row(&h, "one")
    };
    db(h.ports.tasks.insert(one.clone()).await);
    let first = row(&h, "first");
    let second = Task {
        status: TaskStatus::Blocked,
        dependencies: Some(vec![first.id]),
        ..row(&h, "second")
    };
    db(h.ports
        .tasks
        .insert_batch(vec![second.clone(), first.clone()])
        .await);
    for (id, status) in [
        (one.id, TaskStatus::Ready),
        (first.id, TaskStatus::Pending),
        (second.id, TaskStatus::Blocked),
    ] {
        assert_eq!(
            repository_events(&h, id).await,
            vec![by_repository(None, status, "inserted")],
            "the history of {id}"
        );
        let events = h.history(id).await;
        assert_eq!(events[0].at, h.now(), "stamped by the clock");
    }
}

pub async fn update_records_a_new_status_as_updated_and_nothing_when_the_status_stays(h: Harness) {
    let t = row(&h, "t");
    db(h.ports.tasks.insert(t.clone()).await);
    h.advance(5);
    db(h.ports
        .tasks
        .update(Task {
            summary: "same status".into(),
            ..t.clone()
        })
        .await);
    assert_eq!(
        repository_events(&h, t.id).await,
        vec![by_repository(None, TaskStatus::Pending, "inserted")],
        "an update that keeps the status records nothing"
    );
    db(h.ports
        .tasks
        .update(Task {
            status: TaskStatus::Ready,
            ..t.clone()
        })
        .await);
    assert_eq!(
        repository_events(&h, t.id).await,
        vec![
            by_repository(None, TaskStatus::Pending, "inserted"),
            by_repository(Some(TaskStatus::Pending), TaskStatus::Ready, "updated"),
        ]
    );
    assert_eq!(h.history(t.id).await[1].at, h.now());
}

pub async fn update_status_records_a_new_status_as_status_set_and_nothing_when_it_stays(
    h: Harness,
) {
    let t = row(&h, "t");
    db(h.ports.tasks.insert(t.clone()).await);
    h.advance(5);
    db(h.ports.tasks.update_status(t.id, TaskStatus::Ready).await);
    db(h.ports.tasks.update_status(t.id, TaskStatus::Ready).await);
    h.advance(5);
    db(h.ports.tasks.update_status(t.id, TaskStatus::Running).await);
    assert_eq!(
        repository_events(&h, t.id).await,
        vec![
            by_repository(None, TaskStatus::Pending, "inserted"),
            by_repository(Some(TaskStatus::Pending), TaskStatus::Ready, "status set"),
            by_repository(Some(TaskStatus::Ready), TaskStatus::Running, "status set"),
        ],
        "setting the status it already has records nothing"
    );
    let events = h.history(t.id).await;
    assert_eq!(events[2].at, h.now());
    assert_eq!(events[1].at, h.now() - chrono::Duration::seconds(5));
    assert!(events[1].sequence < events[2].sequence);
}

pub async fn deleting_a_task_takes_its_history_with_it(h: Harness) {
    let t = row(&h, "gone");
    let kept = row(&h, "kept");
    db(h.ports
        .tasks
        .insert_batch(vec![t.clone(), kept.clone()])
        .await);
    db(h.ports.tasks.update_status(t.id, TaskStatus::Ready).await);
    db(h.ports.tasks.delete(t.id).await);
    assert_err!(
        h.queue.history(t.id).await,
        QueueError::TaskNotFound(id) if id == t.id
    );
    assert_eq!(
        h.history(kept.id).await.len(),
        1,
        "another task keeps its own"
    );
}

pub async fn update_refuses_a_dependency_that_would_close_a_cycle_and_changes_nothing(h: Harness) {
    let a = row(&h, "a");
    let b = Task {
        dependencies: Some(vec![a.id]),
        ..row(&h, "b")
    };
    let c = Task {
        dependencies: Some(vec![b.id]),
        ..row(&h, "c")
    };
    let other = row(&h, "other");
    db(h.ports
        .tasks
        .insert_batch(vec![a.clone(), b.clone(), c.clone(), other.clone()])
        .await);
    let before = h.snapshot(&[a.id, b.id, c.id, other.id]).await;
    h.advance(5);
    for closing in [b.id, c.id] {
        assert_err!(
            h.ports
                .tasks
                .update(Task {
                    summary: "changed".into(),
                    status: TaskStatus::Blocked,
                    dependencies: Some(vec![other.id, closing]),
                    ..a.clone()
                })
                .await,
            DatabaseError::Validation(e) if e.field == "dependencies"
        );
    }
    assert_eq!(h.snapshot(&[a.id, b.id, c.id, other.id]).await, before);
    assert!(db(h.ports.tasks.get_dependents(other.id).await).is_empty());
    assert!(db(h.ports.tasks.get_dependents(c.id).await).is_empty());
}

pub async fn insert_batch_refuses_members_that_wait_on_each_other_in_a_loop(h: Harness) {
    let free = row(&h, "free");
    let mut x = row(&h, "x");
    let mut y = row(&h, "y");
    let mut z = row(&h, "z");
    x.dependencies = Some(vec![free.id, z.id]);
    y.dependencies = Some(vec![x.id]);
    z.dependencies = Some(vec![y.id]);
    let mut p = row(&h, "p");
    let mut q = row(&h, "q");
    p.dependencies = Some(vec![q.id]);
    q.dependencies = Some(vec![p.id]);
    for batch in [
        vec![free.clone(), x.clone(), y.clone(), z.clone()],
        vec![free.clone(), p.clone(), q.clone()],
    ] {
        let members: Vec<Uuid> = ids(&batch);
        assert_err!(
            h.ports.tasks.insert_batch(batch).await,
            DatabaseError::Validation(e) if e.field == "dependencies"
        );
        for id in members {
            assert!(!h.exists(id).await, "nothing of the batch is stored");
            assert_err!(h.queue.history(id).await, QueueError::TaskNotFound(_));
        }
    }
}
