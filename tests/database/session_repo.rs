//! The session store: every method of `SessionRepository`, the append-only event log, state
//! keys set one at a time (also concurrently), and what deleting a session takes with it.

use std::sync::Arc;

use abathur::domain::clock::Clock;
use abathur::domain::error::DatabaseError;
use abathur::domain::models::{NewSessionEvent, Session, SessionEvent, Task};
use abathur::domain::ports::{SessionRepository, TaskRepository};
use abathur::infrastructure::database::{SessionRepositoryImpl, TaskRepositoryImpl};
use chrono::Duration;
use serde_json::{json, Map, Value};
use sqlx::SqlitePool;
use uuid::Uuid;

use crate::helpers::database::{file_db, test_db, TestPool};
use crate::helpers::{spec_task, ManualClock};

async fn store() -> (TestPool, SessionRepositoryImpl, Arc<ManualClock>) {
    let pool = test_db().await;
    let clock = ManualClock::new();
    let repo = SessionRepositoryImpl::with_clock(pool.clone(), clock.clone());
    (pool, repo, clock)
}

/// A session stored at the clock's now, with nothing in its state.
async fn stored_session(repo: &SessionRepositoryImpl, clock: &ManualClock) -> Session {
    let session = Session::new("chat", "user-1", clock.now());
    repo.create(session.clone()).await.unwrap();
    session
}

fn event(event_type: &str, content: Value) -> NewSessionEvent {
    NewSessionEvent {
        event_type: event_type.into(),
        actor: "agent-1".into(),
        content,
    }
}

/// Every session and every event, column by column as SQLite quotes it, to show a failed write
/// changed nothing.
async fn all_rows(pool: &SqlitePool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT 'session ' || quote(id) || ' ' || quote(app_name) || ' ' || quote(user_id) || ' '
             || quote(project_id) || ' ' || quote(state) || ' ' || quote(created_at) || ' '
             || quote(updated_at)
         FROM sessions
         UNION ALL
         SELECT 'event ' || quote(session_id) || ' ' || quote(sequence) || ' '
             || quote(event_type) || ' ' || quote(actor) || ' ' || quote(content) || ' '
             || quote(timestamp)
         FROM session_events
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("read sessions and events")
}

async fn event_count(pool: &SqlitePool, session_id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM session_events WHERE session_id = ?")
        .bind(session_id.to_string())
        .fetch_one(pool)
        .await
        .expect("count events")
}

#[track_caller]
fn assert_sequences(events: &[SessionEvent], want: &[u64]) {
    let got: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(got, want, "sequences");
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, DatabaseError>, id: Uuid) {
    match result {
        Err(DatabaseError::NotFound {
            entity,
            id: missing,
        }) => {
            assert_eq!((entity, missing), ("session", id.to_string()));
        }
        other => panic!("expected session {id} not found, got {other:?}"),
    }
}

#[track_caller]
fn assert_validation<T: std::fmt::Debug>(result: Result<T, DatabaseError>, field: &str) {
    match result {
        Err(DatabaseError::Validation(e)) => assert_eq!(e.field, field, "{e}"),
        other => panic!("expected a validation error on {field}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_created_session_reads_back_equal_field_by_field() {
    let (_pool, repo, clock) = store().await;
    let mut state = Map::new();
    state.insert("topic".into(), json!("rust"));
    state.insert("turns".into(), json!(3));
    let session = Session {
        project_id: Some("project-7".into()),
        state,
        updated_at: clock.now() + Duration::microseconds(654_321),
        ..Session::new("chat", "user-1", clock.now())
    };

    repo.create(session.clone()).await.unwrap();

    let got = repo.get(session.id).await.unwrap().expect("session stored");
    assert_eq!(got.id, session.id, "id");
    assert_eq!(got.app_name, session.app_name, "app_name");
    assert_eq!(got.user_id, session.user_id, "user_id");
    assert_eq!(got.project_id, session.project_id, "project_id");
    assert_eq!(got.state, session.state, "state");
    assert_eq!(got.created_at, session.created_at, "created_at");
    assert_eq!(got.updated_at, session.updated_at, "updated_at");
}

#[tokio::test]
async fn getting_an_unknown_session_is_none() {
    let (_pool, repo, _clock) = store().await;

    assert_eq!(repo.get(Uuid::new_v4()).await.unwrap(), None);
}

#[tokio::test]
async fn creating_a_session_whose_id_is_taken_is_a_unique_violation_and_keeps_the_first() {
    let (pool, repo, clock) = store().await;
    let first = stored_session(&repo, &clock).await;
    let before = all_rows(&pool).await;

    let err = repo
        .create(Session {
            app_name: "other".into(),
            ..first.clone()
        })
        .await
        .unwrap_err();

    match err {
        DatabaseError::UniqueViolation { entity, id } => {
            assert_eq!((entity, id), ("session", first.id.to_string()));
        }
        other => panic!("expected a unique violation, got {other:?}"),
    }
    assert_eq!(all_rows(&pool).await, before);
    assert_eq!(repo.get(first.id).await.unwrap(), Some(first));
}

/// Stores one valid session, then `bad`, which must fail validation on `field` and write
/// nothing.
async fn create_is_rejected(bad: impl FnOnce(Session) -> Session, field: &str) {
    let (pool, repo, clock) = store().await;
    stored_session(&repo, &clock).await;
    let before = all_rows(&pool).await;

    let bad = bad(Session::new("chat", "user-2", clock.now()));
    assert_validation(repo.create(bad.clone()).await, field);

    assert_eq!(all_rows(&pool).await, before);
    assert_eq!(repo.get(bad.id).await.unwrap(), None);
}

#[tokio::test]
async fn creating_a_session_with_an_empty_app_name_is_rejected_and_writes_nothing() {
    create_is_rejected(
        |s| Session {
            app_name: " ".into(),
            ..s
        },
        "app_name",
    )
    .await;
}

#[tokio::test]
async fn creating_a_session_with_an_empty_user_id_is_rejected_and_writes_nothing() {
    create_is_rejected(
        |s| Session {
            user_id: String::new(),
            ..s
        },
        "user_id",
    )
    .await;
}

#[tokio::test]
async fn creating_a_session_with_a_double_quote_in_a_state_key_is_rejected_and_writes_nothing() {
    create_is_rejected(
        |mut s| {
            s.state.insert("say \"hi\"".into(), json!(1));
            s
        },
        "key",
    )
    .await;
}

#[tokio::test]
async fn appended_events_get_sequences_one_two_three_and_the_clocks_time() {
    let (_pool, repo, clock) = store().await;
    let session = stored_session(&repo, &clock).await;

    let mut appended = Vec::new();
    for n in 1..=3 {
        clock.advance(Duration::seconds(1) + Duration::microseconds(n));
        let e = repo
            .append_event(session.id, event("message", json!({"n": n})))
            .await
            .unwrap();
        assert_eq!(e.timestamp, clock.now(), "event {n} timestamp");
        appended.push(e);
    }

    assert_sequences(&appended, &[1, 2, 3]);
    assert_eq!(
        appended[2],
        SessionEvent {
            session_id: session.id,
            sequence: 3,
            event_type: "message".into(),
            actor: "agent-1".into(),
            content: json!({"n": 3}),
            timestamp: clock.now(),
        }
    );
    assert_eq!(repo.get_events(session.id, 0, 10).await.unwrap(), appended);
}

#[tokio::test]
async fn each_session_numbers_its_events_from_one() {
    let (_pool, repo, clock) = store().await;
    let a = stored_session(&repo, &clock).await;
    let b = stored_session(&repo, &clock).await;

    repo.append_event(a.id, event("x", json!(1))).await.unwrap();
    repo.append_event(a.id, event("x", json!(2))).await.unwrap();
    let first_of_b = repo.append_event(b.id, event("x", json!(3))).await.unwrap();

    assert_eq!(first_of_b.sequence, 1);
}

#[tokio::test]
async fn appending_an_event_moves_the_sessions_updated_at_to_now() {
    let (_pool, repo, clock) = store().await;
    let session = stored_session(&repo, &clock).await;

    clock.advance(Duration::minutes(3));
    repo.append_event(session.id, event("message", json!("hi")))
        .await
        .unwrap();

    let got = repo.get(session.id).await.unwrap().unwrap();
    assert_eq!(
        (got.created_at, got.updated_at),
        (session.created_at, clock.now())
    );
}

#[tokio::test]
async fn appending_to_an_unknown_session_is_not_found_and_writes_no_event() {
    let (pool, repo, clock) = store().await;
    let session = stored_session(&repo, &clock).await;
    repo.append_event(session.id, event("message", json!(1)))
        .await
        .unwrap();
    let before = all_rows(&pool).await;
    let stranger = Uuid::new_v4();

    assert_not_found(
        repo.append_event(stranger, event("message", json!(2)))
            .await,
        stranger,
    );

    assert_eq!(event_count(&pool, stranger).await, 0);
    assert_eq!(all_rows(&pool).await, before);
}

#[tokio::test]
async fn appending_an_event_with_an_empty_type_or_actor_is_rejected_and_writes_nothing() {
    let (pool, repo, clock) = store().await;
    let session = stored_session(&repo, &clock).await;
    let before = all_rows(&pool).await;

    clock.advance(Duration::seconds(1));
    assert_validation(
        repo.append_event(session.id, event(" ", json!(1))).await,
        "event_type",
    );
    let no_actor = NewSessionEvent {
        actor: String::new(),
        ..event("message", json!(1))
    };
    assert_validation(repo.append_event(session.id, no_actor).await, "actor");

    assert_eq!(all_rows(&pool).await, before);
}

#[tokio::test]
async fn events_come_in_timestamp_order_then_sequence_order() {
    let (_pool, repo, clock) = store().await;
    let session = stored_session(&repo, &clock).await;

    clock.advance(Duration::seconds(10));
    repo.append_event(session.id, event("late", json!(1)))
        .await
        .unwrap();
    // A clock stepped back (NTP, say) stamps a later sequence with an earlier time.
    clock.advance(Duration::seconds(-5));
    repo.append_event(session.id, event("early", json!(2)))
        .await
        .unwrap();
    repo.append_event(session.id, event("early", json!(3)))
        .await
        .unwrap();

    let events = repo.get_events(session.id, 0, 10).await.unwrap();

    assert_sequences(&events, &[2, 3, 1]);
}

#[tokio::test]
async fn events_are_paginated_by_offset_and_limit() {
    let (_pool, repo, clock) = store().await;
    let session = stored_session(&repo, &clock).await;
    for n in 0..7 {
        clock.advance(Duration::seconds(1));
        repo.append_event(session.id, event("message", json!(n)))
            .await
            .unwrap();
    }

    assert_sequences(
        &repo.get_events(session.id, 0, 3).await.unwrap(),
        &[1, 2, 3],
    );
    assert_sequences(
        &repo.get_events(session.id, 3, 3).await.unwrap(),
        &[4, 5, 6],
    );
    assert_sequences(&repo.get_events(session.id, 6, 3).await.unwrap(), &[7]);
    assert_sequences(&repo.get_events(session.id, 7, 3).await.unwrap(), &[]);
    assert_sequences(
        &repo.get_events(session.id, u64::MAX, 1000).await.unwrap(),
        &[],
    );
    assert_eq!(repo.get_events(session.id, 0, 1000).await.unwrap().len(), 7);
    // One cap for every list (issue 10, item 15).
    for limit in [0, 1001, u32::MAX] {
        match repo.get_events(session.id, 0, limit).await {
            Err(DatabaseError::Validation(e)) => assert_eq!(e.field, "limit"),
            other => panic!("limit {limit}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn getting_events_of_an_unknown_session_is_not_found() {
    let (_pool, repo, _clock) = store().await;
    let stranger = Uuid::new_v4();

    assert_not_found(repo.get_events(stranger, 0, 10).await, stranger);
}

#[tokio::test]
async fn a_session_without_events_has_an_empty_log() {
    let (_pool, repo, clock) = store().await;
    let session = stored_session(&repo, &clock).await;

    assert_eq!(
        repo.get_events(session.id, 0, 10).await.unwrap(),
        Vec::new()
    );
}

#[tokio::test]
async fn state_values_of_every_json_kind_read_back_unchanged() {
    let (_pool, repo, clock) = store().await;
    let session = stored_session(&repo, &clock).await;
    let values = [
        ("string", json!("hello \"world\" \\ \n ünïcödé")),
        ("empty string", json!("")),
        ("integer", json!(-42)),
        ("big integer", json!(u64::MAX)),
        ("float", json!(0.1)),
        ("tiny float", json!(1.5e-300)),
        ("true", json!(true)),
        ("false", json!(false)),
        (
            "object",
            json!({"nested": {"list": [1, {"a": null}]}, "n": 1.25}),
        ),
        ("empty object", json!({})),
        ("array", json!([1, "two", [3], {"four": 4}, null])),
        ("empty array", json!([])),
        ("null", Value::Null),
    ];

    for (key, value) in &values {
        repo.set_state(session.id, key, value.clone())
            .await
            .unwrap();
    }

    for (key, value) in &values {
        assert_eq!(
            repo.get_state(session.id, key).await.unwrap().as_ref(),
            Some(value),
            "{key}"
        );
    }
    let state = repo.get(session.id).await.unwrap().unwrap().state;
    assert_eq!(state.len(), values.len());
    for (key, value) in &values {
        assert_eq!(state.get(*key), Some(value), "{key} in get()");
    }
}

#[tokio::test]
async fn a_key_set_to_null_is_some_null_and_an_unset_key_is_none() {
    let (_pool, repo, clock) = store().await;
    let session = stored_session(&repo, &clock).await;

    repo.set_state(session.id, "cleared", Value::Null)
        .await
        .unwrap();

    assert_eq!(
        repo.get_state(session.id, "cleared").await.unwrap(),
        Some(Value::Null)
    );
    assert_eq!(repo.get_state(session.id, "never set").await.unwrap(), None);
}

#[tokio::test]
async fn setting_a_key_replaces_its_value_and_keeps_the_other_keys() {
    let (_pool, repo, clock) = store().await;
    let mut state = Map::new();
    state.insert("from create".into(), json!([1]));
    let session = Session {
        state,
        ..Session::new("chat", "user-1", clock.now())
    };
    repo.create(session.clone()).await.unwrap();

    repo.set_state(session.id, "a", json!(1)).await.unwrap();
    repo.set_state(session.id, "b", json!({"x": 1}))
        .await
        .unwrap();
    repo.set_state(session.id, "a", json!("replaced"))
        .await
        .unwrap();

    let state = repo.get(session.id).await.unwrap().unwrap().state;
    assert_eq!(
        Value::Object(state),
        json!({"from create": [1], "a": "replaced", "b": {"x": 1}})
    );
}

#[tokio::test]
async fn setting_state_moves_the_sessions_updated_at_to_now() {
    let (_pool, repo, clock) = store().await;
    let session = stored_session(&repo, &clock).await;

    clock.advance(Duration::hours(2));
    repo.set_state(session.id, "k", json!(1)).await.unwrap();

    let got = repo.get(session.id).await.unwrap().unwrap();
    assert_eq!(
        (got.created_at, got.updated_at),
        (session.created_at, clock.now())
    );
}

#[tokio::test]
async fn state_keys_with_path_syntax_are_plain_top_level_keys() {
    let (_pool, repo, clock) = store().await;
    let session = stored_session(&repo, &clock).await;
    let keys = [
        "a.b",
        "with space",
        "list[0]",
        "$",
        "$.x",
        "price in $",
        "[*]",
        "*",
        "'single'",
        "日本語",
        "emoji 🦀",
        " ",
        "back\\slash",
        "trailing\\",
        "\\",
        "\\n",
        "tab\tand\nnewline",
    ];

    for (n, key) in keys.iter().enumerate() {
        repo.set_state(session.id, key, json!(n)).await.unwrap();
    }

    for (n, key) in keys.iter().enumerate() {
        assert_eq!(
            repo.get_state(session.id, key).await.unwrap(),
            Some(json!(n)),
            "{key:?}"
        );
    }
    let state = repo.get(session.id).await.unwrap().unwrap().state;
    let mut stored: Vec<&str> = state.keys().map(String::as_str).collect();
    let mut want = keys.to_vec();
    stored.sort_unstable();
    want.sort_unstable();
    assert_eq!(stored, want, "the state holds exactly these top-level keys");
}

/// Regression: the JSON path was built as `$."key"` with the key as it was, and SQLite reads a
/// backslash in a quoted label as an escape. `a\b` was written into the state as the label
/// `"a\b"`, which is not JSON, and from then on every read and write of the session's state
/// failed with "malformed JSON"; a key ending in a backslash could not be set at all.
#[tokio::test]
async fn a_backslash_in_a_state_key_keeps_the_session_state_valid_json() {
    let (pool, repo, clock) = store().await;
    let session = stored_session(&repo, &clock).await;

    for (n, key) in ["back\\slash", "trailing\\", "\\", "\\\\", "\\n", "\\u0041"]
        .into_iter()
        .enumerate()
    {
        repo.set_state(session.id, key, json!(n)).await.unwrap();
        assert_eq!(
            repo.get_state(session.id, key).await.unwrap(),
            Some(json!(n)),
            "{key:?}"
        );
    }
    repo.set_state(session.id, "after", json!("still writable"))
        .await
        .unwrap();

    let stored: String = sqlx::query_scalar("SELECT state FROM sessions WHERE id = ?")
        .bind(session.id.to_string())
        .fetch_one(&*pool)
        .await
        .unwrap();
    let parsed: Value = serde_json::from_str(&stored).expect("the stored state is JSON");
    assert_eq!(
        parsed,
        json!({
            "back\\slash": 0, "trailing\\": 1, "\\": 2, "\\\\": 3, "\\n": 4, "\\u0041": 5,
            "after": "still writable"
        })
    );
    assert_eq!(
        Value::Object(repo.get(session.id).await.unwrap().unwrap().state),
        parsed
    );
}

#[tokio::test]
async fn setting_a_key_written_at_creation_replaces_it_whatever_its_characters() {
    let (_pool, repo, clock) = store().await;
    let keys = ["plain", "a.b", "back\\slash", "tab\there", "é", "\u{7f}"];
    let mut state = Map::new();
    for key in keys {
        state.insert(key.into(), json!("from create"));
    }
    let session = Session {
        state,
        ..Session::new("chat", "user-1", clock.now())
    };
    repo.create(session.clone()).await.unwrap();

    for key in keys {
        assert_eq!(
            repo.get_state(session.id, key).await.unwrap(),
            Some(json!("from create")),
            "{key:?}"
        );
        repo.set_state(session.id, key, json!("from set"))
            .await
            .unwrap();
    }

    let state = repo.get(session.id).await.unwrap().unwrap().state;
    assert_eq!(state.len(), keys.len(), "{state:?}");
    assert!(state.values().all(|v| v == "from set"), "{state:?}");
}

#[tokio::test]
async fn a_state_key_with_a_double_quote_is_rejected_and_changes_nothing() {
    let (pool, repo, clock) = store().await;
    let session = stored_session(&repo, &clock).await;
    repo.set_state(session.id, "a", json!(1)).await.unwrap();
    let before = all_rows(&pool).await;

    clock.advance(Duration::seconds(1));
    for key in ["say \"hi\"", "\"", "a\".\"b"] {
        assert_validation(repo.set_state(session.id, key, json!(2)).await, "key");
        assert_validation(repo.get_state(session.id, key).await, "key");
    }

    assert_eq!(all_rows(&pool).await, before);
}

#[tokio::test]
async fn an_empty_state_key_is_rejected_and_changes_nothing() {
    let (pool, repo, clock) = store().await;
    let session = stored_session(&repo, &clock).await;
    let before = all_rows(&pool).await;

    clock.advance(Duration::seconds(1));
    assert_validation(repo.set_state(session.id, "", json!(2)).await, "key");
    assert_validation(repo.get_state(session.id, "").await, "key");

    assert_eq!(all_rows(&pool).await, before);
}

#[tokio::test]
async fn setting_state_of_an_unknown_session_is_not_found_and_writes_nothing() {
    let (pool, repo, clock) = store().await;
    stored_session(&repo, &clock).await;
    let before = all_rows(&pool).await;
    let stranger = Uuid::new_v4();

    assert_not_found(repo.set_state(stranger, "k", json!(1)).await, stranger);

    assert_eq!(all_rows(&pool).await, before);
}

#[tokio::test]
async fn getting_state_of_an_unknown_session_is_not_found() {
    let (_pool, repo, _clock) = store().await;
    let stranger = Uuid::new_v4();

    assert_not_found(repo.get_state(stranger, "k").await, stranger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_different_keys_lose_none_of_them() {
    let (_dir, db) = file_db().await;
    let repo = SessionRepositoryImpl::new(db.pool().clone());
    let session = Session::new("chat", "user-1", chrono::Utc::now());
    repo.create(session.clone()).await.unwrap();

    let writers: Vec<_> = (0..50)
        .map(|n| {
            let repo = repo.clone();
            tokio::spawn(async move {
                repo.set_state(session.id, &format!("key-{n}"), json!(n))
                    .await
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }

    let state = repo.get(session.id).await.unwrap().unwrap().state;
    assert_eq!(state.len(), 50);
    for n in 0..50 {
        assert_eq!(state.get(&format!("key-{n}")), Some(&json!(n)), "key-{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_distinct_consecutive_sequences() {
    let (_dir, db) = file_db().await;
    let repo = SessionRepositoryImpl::new(db.pool().clone());
    let session = Session::new("chat", "user-1", chrono::Utc::now());
    repo.create(session.clone()).await.unwrap();

    let writers: Vec<_> = (0..30)
        .map(|n| {
            let repo = repo.clone();
            tokio::spawn(async move {
                repo.append_event(session.id, event("message", json!(n)))
                    .await
            })
        })
        .collect();
    let mut sequences = Vec::new();
    for writer in writers {
        sequences.push(writer.await.unwrap().unwrap().sequence);
    }

    sequences.sort_unstable();
    assert_eq!(sequences, (1..=30).collect::<Vec<u64>>());
}

#[tokio::test]
async fn stored_events_cannot_be_updated() {
    let (pool, repo, clock) = store().await;
    let session = stored_session(&repo, &clock).await;
    let appended = repo
        .append_event(session.id, event("message", json!("original")))
        .await
        .unwrap();

    let result =
        sqlx::query("UPDATE session_events SET content = '\"forged\"' WHERE session_id = ?")
            .bind(session.id.to_string())
            .execute(&*pool)
            .await;

    let err = result.expect_err("an update of session_events must fail");
    assert!(err.to_string().contains("append-only"), "{err}");
    assert_eq!(
        repo.get_events(session.id, 0, 10).await.unwrap(),
        [appended]
    );
}

#[tokio::test]
async fn deleting_a_session_removes_it_and_its_events_only() {
    let (pool, repo, clock) = store().await;
    let doomed = stored_session(&repo, &clock).await;
    let kept = stored_session(&repo, &clock).await;
    for n in 0..3 {
        repo.append_event(doomed.id, event("message", json!(n)))
            .await
            .unwrap();
    }
    let kept_event = repo
        .append_event(kept.id, event("message", json!("kept")))
        .await
        .unwrap();

    repo.delete(doomed.id).await.unwrap();

    assert_eq!(repo.get(doomed.id).await.unwrap(), None);
    assert_eq!(event_count(&pool, doomed.id).await, 0);
    assert_not_found(repo.get_events(doomed.id, 0, 10).await, doomed.id);
    assert_eq!(repo.get_events(kept.id, 0, 10).await.unwrap(), [kept_event]);
    assert_eq!(repo.get(kept.id).await.unwrap(), Some(kept));
}

#[tokio::test]
async fn deleting_a_session_keeps_its_tasks_without_a_session() {
    let (pool, repo, clock) = store().await;
    let session = stored_session(&repo, &clock).await;
    let tasks = TaskRepositoryImpl::new(pool.clone());
    let task = Task {
        session_id: Some(session.id),
        ..spec_task()
    };
    tasks.insert(task.clone()).await.unwrap();

    repo.delete(session.id).await.unwrap();

    let got = tasks
        .get(task.id)
        .await
        .unwrap()
        .expect("the task survives");
    assert_eq!(got.session_id, None);
    assert_eq!(got.summary, task.summary);
}

#[tokio::test]
async fn deleting_an_unknown_session_is_not_found_and_changes_nothing() {
    let (pool, repo, clock) = store().await;
    let session = stored_session(&repo, &clock).await;
    repo.append_event(session.id, event("message", json!(1)))
        .await
        .unwrap();
    let before = all_rows(&pool).await;
    let stranger = Uuid::new_v4();

    assert_not_found(repo.delete(stranger).await, stranger);

    assert_eq!(all_rows(&pool).await, before);
}

#[tokio::test]
async fn rows_with_impossible_timestamps_are_reported_corrupt() {
    let (pool, repo, clock) = store().await;
    let session = stored_session(&repo, &clock).await;
    repo.append_event(session.id, event("message", json!(1)))
        .await
        .unwrap();
    // Month 13 passes the columns' GLOB checks but is no date. The event is append-only, so
    // the trigger goes for the length of the forgery.
    let mut tx = pool.begin().await.unwrap();
    for statement in [
        "DROP TRIGGER session_events_are_append_only",
        "UPDATE session_events SET timestamp = '2026-13-01T00:00:00.000000Z'",
        "UPDATE sessions SET created_at = '2026-13-01T00:00:00.000000Z'",
    ] {
        sqlx::query(statement).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();

    match repo.get(session.id).await.unwrap_err() {
        DatabaseError::CorruptRow {
            table, id, column, ..
        } => assert_eq!(
            (table, id, column),
            ("sessions", session.id.to_string(), "created_at")
        ),
        other => panic!("expected a corrupt sessions row, got {other:?}"),
    }
    match repo.get_events(session.id, 0, 10).await.unwrap_err() {
        DatabaseError::CorruptRow {
            table, id, column, ..
        } => assert_eq!(
            (table, id, column),
            ("session_events", format!("{}#1", session.id), "timestamp")
        ),
        other => panic!("expected a corrupt session_events row, got {other:?}"),
    }
}
