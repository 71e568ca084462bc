//! The group-commit store's groups: completions held back behind a lock until several wait,
//! then written as one group, each answered as if it had run alone; and its notification at
//! the end of a backoff.

use std::sync::Arc;
use std::time::Duration;

use abathur_core::clock::Now;
use abathur_core::models::TaskStatus;
use abathur_core::ports::{Change, Changes};
use abathur_core::queue::{
    ClaimRequest, ClaimedTask, FailOutcome, NewTask, PriorityPolicy, QueueError, QueueLimits,
    QueueStore, Recorded, RetryPolicy,
};
use abathur_postgres::testing::TestDatabase;
use abathur_postgres::{
    PgChanges, PgConfig, PgDatabase, PgGroupCommitConfig, PgGroupCommitQueueStore, PgQueueStore,
};
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::task::JoinHandle;
use uuid::Uuid;

type Answer = Result<Recorded<Vec<Uuid>>, QueueError>;

struct Fixture {
    test: TestDatabase,
    db: PgDatabase,
    store: Arc<PgGroupCommitQueueStore>,
}

/// A store with one writer, so that completions made while it waits queue up for one group.
async fn fixture() -> Fixture {
    let (test, db) = TestDatabase::migrated(PgConfig {
        max_connections: 6,
        ..PgConfig::default()
    })
    .await;
    let store = Arc::new(PgGroupCommitQueueStore::with_config(
        db.pool().clone(),
        PgGroupCommitConfig {
            max_group: 64,
            writers: 1,
        },
    ));
    Fixture { test, db, store }
}

/// Submits `tasks` (summary, the summaries it depends on) and claims every ready one, by
/// summary.
async fn submit_and_claim(
    store: &PgGroupCommitQueueStore,
    tasks: &[(&str, &[&str])],
) -> (Vec<(String, Uuid)>, Vec<ClaimedTask>) {
    let mut ids: Vec<(String, Uuid)> = Vec::new();
    let mut batch = Vec::new();
    for (summary, deps) in tasks {
        let id = Uuid::new_v4();
        let dependencies = deps
            .iter()
            .map(|d| ids.iter().find(|(s, _)| s == d).expect("dependency").1)
            .collect();
        batch.push(NewTask {
            id,
            dependencies,
            ..NewTask::new(*summary, "d", "worker")
        });
        ids.push((summary.to_string(), id));
    }
    store
        .submit(
            batch,
            &QueueLimits::default(),
            &PriorityPolicy::default(),
            "test",
            Now::Store,
        )
        .await
        .expect("submit");
    let claimed = claim(store, "w", Duration::from_secs(60), 100).await;
    (ids, claimed)
}

/// Claims up to `max_tasks` as `worker`, leased for `lease`.
async fn claim(
    store: &dyn QueueStore,
    worker: &str,
    lease: Duration,
    max_tasks: u32,
) -> Vec<ClaimedTask> {
    store
        .claim(
            &ClaimRequest {
                worker_id: worker.to_string(),
                agent_types: Vec::new(),
                lease,
                max_tasks,
            },
            &PriorityPolicy::default(),
            Now::Store,
        )
        .await
        .expect("claim")
}

/// A retry policy whose every backoff is `ms` milliseconds.
fn backoff(ms: u64) -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(ms),
        max: Duration::from_millis(ms),
        jitter: 0.0,
    }
}

/// Fails `attempt_id` through `store` with the error "flaked".
async fn fail(
    store: &dyn QueueStore,
    attempt_id: Uuid,
    retry: &RetryPolicy,
) -> Recorded<FailOutcome> {
    store
        .fail(
            attempt_id,
            "flaked",
            retry,
            &PriorityPolicy::default(),
            Now::Store,
        )
        .await
        .expect("fail")
}

fn id(ids: &[(String, Uuid)], summary: &str) -> Uuid {
    ids.iter().find(|(s, _)| s == summary).expect("task").1
}

fn attempt(claimed: &[ClaimedTask], task: Uuid) -> Uuid {
    claimed
        .iter()
        .find(|c| c.task.id == task)
        .expect("claimed")
        .lease
        .attempt_id
}

fn complete(
    store: &Arc<PgGroupCommitQueueStore>,
    attempt_id: Uuid,
    result: Option<Value>,
) -> JoinHandle<Answer> {
    let store = store.clone();
    tokio::spawn(async move {
        store
            .complete(attempt_id, result, &PriorityPolicy::default(), Now::Store)
            .await
    })
}

/// Holds `task`'s row locked on a connection of its own until the returned sender is used,
/// and returns once a completion of it waits for that lock (the store's writer is then busy
/// with it, and what is completed meanwhile queues up).
async fn hold(test_url: &str, task: Uuid) -> tokio::sync::oneshot::Sender<()> {
    let mut conn = sqlx::PgConnection::connect(test_url)
        .await
        .expect("connect");
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let (locked, is_locked) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut tx = conn.begin().await.expect("begin");
        sqlx::query("SELECT id FROM tasks WHERE id = $1 FOR UPDATE")
            .bind(task)
            .execute(&mut *tx)
            .await
            .expect("lock");
        let _ = locked.send(());
        let _ = released.await;
        tx.commit().await.expect("commit");
    });
    is_locked.await.expect("locked");
    release
}

/// How long a wait for an event may last before the test fails instead of hanging: a guard,
/// far above what the events take.
const GIVE_UP: Duration = Duration::from_secs(120);

/// Waits until some backend of this database waits for a row lock.
async fn until_a_lock_is_awaited(db: &PgDatabase) {
    let give_up = tokio::time::Instant::now() + GIVE_UP;
    loop {
        assert!(
            tokio::time::Instant::now() < give_up,
            "no completion came to wait for the held lock"
        );
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(db.pool())
        .await
        .expect("activity");
        if waiting > 0 {
            return;
        }
        tokio::task::yield_now().await;
    }
}

async fn until_waiting(store: &PgGroupCommitQueueStore, n: usize) {
    let give_up = tokio::time::Instant::now() + GIVE_UP;
    while store.stats().waiting < n {
        assert!(
            tokio::time::Instant::now() < give_up,
            "{n} completions never waited together: {:?}",
            store.stats()
        );
        tokio::task::yield_now().await;
    }
}

async fn status(db: &PgDatabase, task: Uuid) -> TaskStatus {
    let text: String = sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1")
        .bind(task)
        .fetch_one(db.pool())
        .await
        .expect("status");
    text.parse().expect("a status")
}

async fn history_reasons(db: &PgDatabase, task: Uuid) -> Vec<Option<String>> {
    sqlx::query_scalar("SELECT reason FROM task_events WHERE task_id = $1 ORDER BY id")
        .bind(task)
        .fetch_all(db.pool())
        .await
        .expect("history")
}

/// Completions that share a group: each gets the dependents it released, a dependent waiting
/// for two of them is released once, by the later in the group, an unknown attempt is refused
/// alone, and a repeat of a completion in the group is answered as a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completions_in_one_group_are_answered_as_if_each_ran_alone() {
    let f = fixture().await;
    let (ids, claimed) = submit_and_claim(
        &f.store,
        &[
            ("hold", &[]),
            ("a", &[]),
            ("b", &[]),
            ("c", &[]),
            ("after a and b", &["a", "b"]),
            ("after c", &["c"]),
        ],
    )
    .await;
    assert_eq!(claimed.len(), 4);
    let (hold_task, a, b, c) = (
        id(&ids, "hold"),
        id(&ids, "a"),
        id(&ids, "b"),
        id(&ids, "c"),
    );
    let release = hold(f.test.url(), hold_task).await;
    let held = complete(&f.store, attempt(&claimed, hold_task), None);
    until_a_lock_is_awaited(&f.db).await;
    let before = f.store.stats();

    let done_a = complete(&f.store, attempt(&claimed, a), Some(json!({"a": 1})));
    until_waiting(&f.store, 1).await;
    let done_b = complete(&f.store, attempt(&claimed, b), None);
    until_waiting(&f.store, 2).await;
    let unknown = Uuid::new_v4();
    let done_unknown = complete(&f.store, unknown, None);
    until_waiting(&f.store, 3).await;
    let done_c = complete(&f.store, attempt(&claimed, c), Some(json!("c")));
    until_waiting(&f.store, 4).await;
    // The same attempt again: it waits for the group after, and is answered as a repeat.
    let again_b = complete(&f.store, attempt(&claimed, b), None);
    until_waiting(&f.store, 5).await;
    let _ = release.send(());

    assert_eq!(held.await.unwrap().unwrap(), Recorded::new(Vec::new()));
    let both = id(&ids, "after a and b");
    let after_c = id(&ids, "after c");
    assert_eq!(done_a.await.unwrap().unwrap(), Recorded::new(Vec::new()));
    assert_eq!(done_b.await.unwrap().unwrap(), Recorded::new(vec![both]));
    assert!(matches!(
        done_unknown.await.unwrap(),
        Err(QueueError::AttemptNotFound(a)) if a == unknown
    ));
    assert_eq!(done_c.await.unwrap().unwrap(), Recorded::new(vec![after_c]));
    assert_eq!(
        again_b.await.unwrap().unwrap(),
        Recorded::repeat(vec![both])
    );

    // The four waiting completions were one group; the repeat was the next.
    let after = f.store.stats();
    assert_eq!(after.groups - before.groups, 2, "{before:?} {after:?}");
    assert_eq!(after.operations - before.operations, 5);

    for task in [hold_task, a, b, c] {
        assert_eq!(status(&f.db, task).await, TaskStatus::Completed);
    }
    for task in [both, after_c] {
        assert_eq!(status(&f.db, task).await, TaskStatus::Ready);
    }
    assert_eq!(
        history_reasons(&f.db, both).await.last().cloned().flatten(),
        Some(format!("dependency {b} completed"))
    );
    let result: Option<Value> = sqlx::query_scalar("SELECT result_data FROM tasks WHERE id = $1")
        .bind(a)
        .fetch_one(f.db.pool())
        .await
        .unwrap();
    assert_eq!(result, Some(json!({"a": 1})));
    // A repeat of `a` sent later lists nothing: `b` released the dependent.
    let repeat_a = f
        .store
        .complete(
            attempt(&claimed, a),
            Some(json!({"a": 1})),
            &PriorityPolicy::default(),
            Now::Store,
        )
        .await
        .unwrap();
    assert_eq!(repeat_a, Recorded::repeat(Vec::new()));
}

/// A group the server cannot write whole (one result holds a character PostgreSQL's `jsonb`
/// refuses) is completed again one by one: only that completion fails, with a plain error and
/// nothing changed, and the others complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_completion_the_server_refuses_fails_alone_and_its_group_completes() {
    let f = fixture().await;
    let (ids, claimed) = submit_and_claim(
        &f.store,
        &[("hold", &[]), ("a", &[]), ("bad", &[]), ("b", &[])],
    )
    .await;
    let (hold_task, a, bad, b) = (
        id(&ids, "hold"),
        id(&ids, "a"),
        id(&ids, "bad"),
        id(&ids, "b"),
    );
    let release = hold(f.test.url(), hold_task).await;
    let held = complete(&f.store, attempt(&claimed, hold_task), None);
    until_a_lock_is_awaited(&f.db).await;
    let done_a = complete(&f.store, attempt(&claimed, a), Some(json!(1)));
    until_waiting(&f.store, 1).await;
    let done_bad = complete(
        &f.store,
        attempt(&claimed, bad),
        Some(json!({"text": "nul \u{0} here"})),
    );
    until_waiting(&f.store, 2).await;
    let done_b = complete(&f.store, attempt(&claimed, b), Some(json!(2)));
    until_waiting(&f.store, 3).await;
    let _ = release.send(());

    held.await.unwrap().unwrap();
    assert_eq!(done_a.await.unwrap().unwrap(), Recorded::new(Vec::new()));
    assert_eq!(done_b.await.unwrap().unwrap(), Recorded::new(Vec::new()));
    let refused = done_bad
        .await
        .unwrap()
        .expect_err("a NUL character is refused");
    assert!(matches!(refused, QueueError::Validation(_)), "{refused:?}");
    assert_eq!(status(&f.db, a).await, TaskStatus::Completed);
    assert_eq!(status(&f.db, b).await, TaskStatus::Completed);
    assert_eq!(status(&f.db, bad).await, TaskStatus::Running);
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task_attempts WHERE task_id = $1 AND finished_at IS NULL",
    )
    .bind(bad)
    .fetch_one(f.db.pool())
    .await
    .unwrap();
    assert_eq!(open, 1, "the refused completion left its attempt open");
    // The same call with a result the server takes completes it.
    f.store
        .complete(
            attempt(&claimed, bad),
            Some(json!({"text": "no nul"})),
            &PriorityPolicy::default(),
            Now::Store,
        )
        .await
        .unwrap();
    assert_eq!(status(&f.db, bad).await, TaskStatus::Completed);
}

/// On the server's clock, the dependents a completion released are released after it (the
/// release reads the clock again after their locks), and a repeat of the completion still
/// lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_on_the_servers_clock_lists_the_dependents_released() {
    let f = fixture().await;
    let (ids, claimed) = submit_and_claim(
        &f.store,
        &[("root", &[]), ("x", &["root"]), ("y", &["root"])],
    )
    .await;
    let root = id(&ids, "root");
    let first = complete(&f.store, attempt(&claimed, root), Some(json!("ok")))
        .await
        .unwrap()
        .unwrap();
    let mut released = vec![id(&ids, "x"), id(&ids, "y")];
    released.sort();
    assert_eq!(first, Recorded::new(released.clone()));
    let again = complete(&f.store, attempt(&claimed, root), Some(json!("ok")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, Recorded::repeat(released));
}

/// With two writers, a second send of an attempt whose first send is being written (held back
/// by a lock) waits for it: the first send completes the task and the second is answered as a
/// repeat, never the other way round.
#[tokio::test]
async fn a_second_send_never_overtakes_the_first_on_another_writer() {
    let (test, db) = TestDatabase::migrated(PgConfig {
        max_connections: 6,
        ..PgConfig::default()
    })
    .await;
    let store = Arc::new(PgGroupCommitQueueStore::with_config(
        db.pool().clone(),
        PgGroupCommitConfig {
            max_group: 64,
            writers: 2,
        },
    ));
    let (ids, claimed) = submit_and_claim(&store, &[("held", &[]), ("b", &[])]).await;
    let (held, b) = (id(&ids, "held"), id(&ids, "b"));
    let release = hold(test.url(), held).await;
    // On this one-threaded runtime neither writer runs before both are queued: the first
    // writer takes both and waits for the held task's lock.
    let first_held = complete(&store, attempt(&claimed, held), None);
    let first_b = complete(&store, attempt(&claimed, b), Some(json!("first")));
    until_a_lock_is_awaited(&db).await;
    // The second writer finds the attempt being written, and leaves it waiting.
    let again_b = complete(&store, attempt(&claimed, b), Some(json!("first")));
    until_waiting(&store, 1).await;
    let _ = release.send(());

    first_held.await.unwrap().unwrap();
    assert_eq!(first_b.await.unwrap().unwrap(), Recorded::new(Vec::new()));
    assert_eq!(
        again_b.await.unwrap().unwrap(),
        Recorded::repeat(Vec::new())
    );
    assert_eq!(status(&db, b).await, TaskStatus::Completed);
}

/// An attempt whose task is gone (deleted with the schema's trigger off, so the attempt was
/// left behind) is not found, as its task, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_whose_task_is_gone_is_not_found() {
    let f = fixture().await;
    let (ids, claimed) = submit_and_claim(&f.store, &[("gone", &[]), ("kept", &[])]).await;
    let (gone, kept) = (id(&ids, "gone"), id(&ids, "kept"));
    let mut conn = sqlx::PgConnection::connect(f.test.url())
        .await
        .expect("connect");
    sqlx::raw_sql(&format!(
        "ALTER TABLE tasks DISABLE TRIGGER tasks_take_history_along;
         DELETE FROM tasks WHERE id = '{gone}';
         ALTER TABLE tasks ENABLE TRIGGER tasks_take_history_along;"
    ))
    .execute(&mut conn)
    .await
    .expect("delete");
    let orphan = attempt(&claimed, gone);
    let answer = complete(&f.store, orphan, None).await.unwrap();
    assert!(
        matches!(answer, Err(QueueError::AttemptNotFound(a)) if a == orphan),
        "{answer:?}"
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM task_events WHERE task_id = $1")
        .bind(gone)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let before = events;
    // The other task completes as usual.
    complete(&f.store, attempt(&claimed, kept), None)
        .await
        .unwrap()
        .unwrap();
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM task_events WHERE task_id = $1")
        .bind(gone)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(before, after, "nothing was recorded for the orphan");
    assert_eq!(status(&f.db, kept).await, TaskStatus::Completed);
}

/// The end of a backoff the store set is announced: an idle subscriber hears of it when the
/// task becomes claimable, not only at its next poll, though no write happens then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_backoff_is_notified() {
    let f = fixture().await;
    let (ids, claimed) = submit_and_claim(&f.store, &[("flaky", &[])]).await;
    let flaky = id(&ids, "flaky");
    let changes = PgChanges::new(f.db.pool().clone());
    let mut subscription = changes.subscribe().await.expect("subscribe");
    let retry = backoff(300);
    let failed = fail(&*f.store, attempt(&claimed, flaky), &retry).await;
    assert!(
        matches!(failed.outcome, FailOutcome::Retrying { .. }),
        "{failed:?}"
    );
    // The failure's own transaction notifies: the task is ready again, held back.
    let wait = Duration::from_secs(30);
    assert_eq!(subscription.changed(wait).await.unwrap(), Change::Seen);
    // Nothing else writes; the end of the backoff is heard all the same, and the task is
    // claimable by then.
    assert_eq!(subscription.changed(wait).await.unwrap(), Change::Seen);
    let again = claim(&*f.store, "w2", Duration::from_secs(60), 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].task.id, flaky);
    subscription.close().await;
}

/// A reap's backoff is announced as a failure's is: the task of a lost lease becomes claimable
/// when its backoff ends, and an idle subscriber hears of it then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_reaps_backoff_is_notified() {
    let f = fixture().await;
    let submitted = f
        .store
        .submit(
            vec![NewTask::new("abandoned", "d", "worker")],
            &QueueLimits::default(),
            &PriorityPolicy::default(),
            "test",
            Now::Store,
        )
        .await
        .expect("submit");
    let task = submitted[0].task.id;
    let claimed = claim(&*f.store, "gone", Duration::from_millis(100), 1).await;
    let changes = PgChanges::new(f.db.pool().clone());
    let mut subscription = changes.subscribe().await.expect("subscribe");
    let retry = backoff(300);
    // Reaped as of just after the lease's end (the server's clock has not got there yet): the
    // task is held back until 300 ms after that.
    let past_the_lease = claimed[0].lease.expires_at + chrono::Duration::milliseconds(1);
    let reaped = f
        .store
        .reap(&retry, &PriorityPolicy::default(), Now::At(past_the_lease))
        .await
        .expect("reap");
    assert_eq!(reaped.lost, vec![task]);
    let wait = Duration::from_secs(30);
    // The reap's own transaction notifies; then the end of its backoff does.
    assert_eq!(subscription.changed(wait).await.unwrap(), Change::Seen);
    assert_eq!(subscription.changed(wait).await.unwrap(), Change::Seen);
    let again = claim(&*f.store, "w2", Duration::from_secs(60), 1).await;
    assert_eq!(again.len(), 1, "claimable once the backoff ended");
    subscription.close().await;
}

/// A failure sent again (its first answer lost) sets the alarm too: the first send may never
/// have set it. Here the first send goes through a store without an alarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_failure_still_announces_the_end_of_its_backoff() {
    let f = fixture().await;
    let (ids, claimed) = submit_and_claim(&f.store, &[("flaky", &[])]).await;
    let attempt_id = attempt(&claimed, id(&ids, "flaky"));
    let retry = backoff(500);
    fail(&PgQueueStore::new(f.db.pool().clone()), attempt_id, &retry).await;
    let changes = PgChanges::new(f.db.pool().clone());
    let mut subscription = changes.subscribe().await.expect("subscribe");
    let again = fail(&*f.store, attempt_id, &retry).await;
    assert!(again.repeat);
    // Nothing is written by the repeat; what is heard is the end of the backoff.
    assert_eq!(
        subscription.changed(Duration::from_secs(30)).await.unwrap(),
        Change::Seen
    );
    subscription.close().await;
}

/// A backoff whose end has already passed when the alarm is set is announced at once: the
/// failure's own notification came while it was still ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backoff_already_over_is_announced_at_once() {
    let f = fixture().await;
    let (ids, claimed) = submit_and_claim(&f.store, &[("flaky", &[])]).await;
    let attempt_id = attempt(&claimed, id(&ids, "flaky"));
    let retry = backoff(1);
    let failed = fail(&PgQueueStore::new(f.db.pool().clone()), attempt_id, &retry).await;
    let FailOutcome::Retrying { run_after, .. } = failed.outcome else {
        panic!("{failed:?}");
    };
    // Wait, on the server's clock, until the backoff is over.
    loop {
        let now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(f.db.pool())
            .await
            .unwrap();
        if now > run_after {
            break;
        }
        tokio::task::yield_now().await;
    }
    let changes = PgChanges::new(f.db.pool().clone());
    let mut subscription = changes.subscribe().await.expect("subscribe");
    fail(&*f.store, attempt_id, &retry).await;
    assert_eq!(
        subscription.changed(Duration::from_secs(30)).await.unwrap(),
        Change::Seen
    );
    subscription.close().await;
}
