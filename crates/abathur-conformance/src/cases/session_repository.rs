//! Sessions: their state, set one key at a time, and their append-only event logs.

use abathur_core::error::DatabaseError;
use abathur_core::models::{NewSessionEvent, Session};
use abathur_core::queue::NewTask;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::assert_err;
use crate::harness::{db, task, Harness};

fn event(kind: &str, n: i64) -> NewSessionEvent {
    NewSessionEvent {
        event_type: kind.into(),
        actor: "agent".into(),
        content: json!({ "n": n }),
    }
}

async fn session(h: &Harness) -> Session {
    let s = Session::new("app", "user", h.now());
    db(h.ports.sessions.create(s.clone()).await);
    s
}

pub async fn a_created_session_reads_back_equal(h: Harness) {
    let mut state = Map::new();
    state.insert("mode".into(), json!("plan"));
    state.insert("depth".into(), json!({"a": [1, 2]}));
    let s = Session {
        project_id: Some("project".into()),
        state,
        ..Session::new("app", "user", h.now())
    };
    db(h.ports.sessions.create(s.clone()).await);
    assert_eq!(db(h.ports.sessions.get(s.id).await), Some(s));
}

pub async fn getting_an_unknown_session_is_none(h: Harness) {
    assert_eq!(db(h.ports.sessions.get(Uuid::new_v4()).await), None);
}

pub async fn creating_a_session_whose_id_is_taken_is_a_unique_violation_and_keeps_the_first(
    h: Harness,
) {
    let s = session(&h).await;
    let twin = Session {
        app_name: "other".into(),
        ..s.clone()
    };
    assert_err!(
        h.ports.sessions.create(twin).await,
        DatabaseError::UniqueViolation { .. }
    );
    assert_eq!(db(h.ports.sessions.get(s.id).await), Some(s));
}

pub async fn an_invalid_session_is_refused_and_nothing_is_written(h: Harness) {
    let mut quoted = Map::new();
    quoted.insert("a\"b".into(), json!(1));
    for s in [
        Session::new("", "user", h.now()),
        Session::new("app", "", h.now()),
        Session {
            state: quoted,
            ..Session::new("app", "user", h.now())
        },
    ] {
        let id = s.id;
        assert_err!(
            h.ports.sessions.create(s).await,
            DatabaseError::Validation(_)
        );
        assert_eq!(db(h.ports.sessions.get(id).await), None);
    }
}

pub async fn appended_events_are_numbered_from_one_and_stamped_by_the_clock(h: Harness) {
    let s = session(&h).await;
    let mut stamped = Vec::new();
    for n in 1..=3 {
        let e = db(h.ports.sessions.append_event(s.id, event("step", n)).await);
        assert_eq!(e.sequence, n as u64);
        assert_eq!(e.timestamp, h.now());
        assert_eq!(e.session_id, s.id);
        stamped.push(e);
        h.advance(1);
    }
    assert_eq!(db(h.ports.sessions.get_events(s.id, 0, 100).await), stamped);
}

pub async fn each_session_numbers_its_events_from_one(h: Harness) {
    let a = session(&h).await;
    let b = session(&h).await;
    db(h.ports.sessions.append_event(a.id, event("x", 1)).await);
    db(h.ports.sessions.append_event(a.id, event("x", 2)).await);
    let first_of_b = db(h.ports.sessions.append_event(b.id, event("x", 1)).await);
    assert_eq!(first_of_b.sequence, 1);
}

pub async fn appending_an_event_moves_the_sessions_updated_at_to_now(h: Harness) {
    let s = session(&h).await;
    h.advance(30);
    db(h.ports.sessions.append_event(s.id, event("x", 1)).await);
    let read = db(h.ports.sessions.get(s.id).await).unwrap();
    assert_eq!(read.updated_at, h.now());
    assert_eq!(read.created_at, s.created_at);
}

pub async fn appending_to_an_unknown_session_is_not_found(h: Harness) {
    let never = Uuid::new_v4();
    assert_err!(
        h.ports.sessions.append_event(never, event("x", 1)).await,
        DatabaseError::NotFound { .. }
    );
}

pub async fn an_invalid_event_is_refused_and_nothing_is_written(h: Harness) {
    let s = session(&h).await;
    for e in [
        NewSessionEvent {
            event_type: String::new(),
            ..event("x", 1)
        },
        NewSessionEvent {
            actor: String::new(),
            ..event("x", 1)
        },
        NewSessionEvent {
            content: (0..150).fold(json!(1), |inner, _| json!([inner])),
            ..event("x", 1)
        },
    ] {
        assert_err!(
            h.ports.sessions.append_event(s.id, e).await,
            DatabaseError::Validation(_)
        );
    }
    assert!(db(h.ports.sessions.get_events(s.id, 0, 10).await).is_empty());
}

pub async fn events_are_paginated_by_offset_and_limit(h: Harness) {
    let s = session(&h).await;
    for n in 1..=5 {
        db(h.ports.sessions.append_event(s.id, event("x", n)).await);
    }
    let page = db(h.ports.sessions.get_events(s.id, 1, 2).await);
    assert_eq!(
        page.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(db(h.ports.sessions.get_events(s.id, 5, 10).await).is_empty());
}

pub async fn events_come_in_the_order_they_happened(h: Harness) {
    let s = session(&h).await;
    for n in 1..=4 {
        db(h.ports.sessions.append_event(s.id, event("x", n)).await);
        if n % 2 == 0 {
            h.advance(1);
        }
    }
    let events = db(h.ports.sessions.get_events(s.id, 0, 10).await);
    let contents: Vec<Value> = events.iter().map(|e| e.content.clone()).collect();
    assert_eq!(
        contents,
        (1..=4).map(|n| json!({ "n": n })).collect::<Vec<_>>()
    );
}

pub async fn bad_event_page_arguments_or_an_unknown_session_are_refused(h: Harness) {
    let s = session(&h).await;
    assert_err!(
        h.ports.sessions.get_events(s.id, 0, 0).await,
        DatabaseError::Validation(_)
    );
    assert_err!(
        h.ports
            .sessions
            .get_events(s.id, 0, abathur_core::limits::MAX_PAGE + 1)
            .await,
        DatabaseError::Validation(_)
    );
    assert_err!(
        h.ports.sessions.get_events(Uuid::new_v4(), 0, 10).await,
        DatabaseError::NotFound { .. }
    );
}

pub async fn state_values_of_every_json_kind_read_back_unchanged(h: Harness) {
    let s = session(&h).await;
    let values = [
        json!(null),
        json!(true),
        json!(-12),
        json!(1.5),
        json!("text with \"quotes\" and \\ backslash"),
        json!([1, "a", null]),
        json!({"nested": {"deep": [1]}}),
    ];
    for (i, value) in values.iter().enumerate() {
        let key = format!("k{i}");
        db(h.ports.sessions.set_state(s.id, &key, value.clone()).await);
        assert_eq!(
            db(h.ports.sessions.get_state(s.id, &key).await),
            Some(value.clone())
        );
    }
    assert_eq!(db(h.ports.sessions.get_state(s.id, "unset").await), None);
}

pub async fn setting_a_key_replaces_its_value_and_keeps_the_other_keys(h: Harness) {
    let s = session(&h).await;
    db(h.ports.sessions.set_state(s.id, "a", json!(1)).await);
    db(h.ports.sessions.set_state(s.id, "b", json!(2)).await);
    db(h.ports.sessions.set_state(s.id, "a", json!(3)).await);
    let read = db(h.ports.sessions.get(s.id).await).unwrap();
    assert_eq!(read.state.get("a"), Some(&json!(3)));
    assert_eq!(read.state.get("b"), Some(&json!(2)));
    assert_eq!(read.state.len(), 2);
}

pub async fn setting_state_moves_the_sessions_updated_at_to_now(h: Harness) {
    let s = session(&h).await;
    h.advance(42);
    db(h.ports.sessions.set_state(s.id, "a", json!(1)).await);
    assert_eq!(
        db(h.ports.sessions.get(s.id).await).unwrap().updated_at,
        h.now()
    );
}

pub async fn state_keys_with_path_syntax_are_plain_top_level_keys(h: Harness) {
    let s = session(&h).await;
    for key in ["a.b", "$.x", "[0]", "a\\b", "sp ace", "ключ"] {
        db(h.ports.sessions.set_state(s.id, key, json!(key)).await);
        assert_eq!(
            db(h.ports.sessions.get_state(s.id, key).await),
            Some(json!(key)),
            "{key}"
        );
    }
    let read = db(h.ports.sessions.get(s.id).await).unwrap();
    assert_eq!(read.state.len(), 6);
    assert_eq!(read.state.get("a.b"), Some(&json!("a.b")));
}

pub async fn a_key_set_at_creation_is_replaced_by_setting_it(h: Harness) {
    let mut state = Map::new();
    state.insert("a.b".into(), json!("old"));
    let s = Session {
        state,
        ..Session::new("app", "user", h.now())
    };
    db(h.ports.sessions.create(s.clone()).await);
    db(h.ports.sessions.set_state(s.id, "a.b", json!("new")).await);
    let read = db(h.ports.sessions.get(s.id).await).unwrap();
    assert_eq!(read.state.len(), 1);
    assert_eq!(read.state.get("a.b"), Some(&json!("new")));
}

pub async fn a_bad_state_key_or_value_is_refused_and_changes_nothing(h: Harness) {
    let s = session(&h).await;
    db(h.ports.sessions.set_state(s.id, "kept", json!(1)).await);
    let before = db(h.ports.sessions.get(s.id).await);
    assert_err!(
        h.ports.sessions.set_state(s.id, "", json!(1)).await,
        DatabaseError::Validation(_)
    );
    assert_err!(
        h.ports.sessions.set_state(s.id, "a\"b", json!(1)).await,
        DatabaseError::Validation(_)
    );
    let nested = (0..150).fold(json!(1), |inner, _| json!([inner]));
    assert_err!(
        h.ports.sessions.set_state(s.id, "deep", nested).await,
        DatabaseError::Validation(_)
    );
    assert_err!(
        h.ports.sessions.get_state(s.id, "").await,
        DatabaseError::Validation(_)
    );
    assert_eq!(db(h.ports.sessions.get(s.id).await), before);
}

pub async fn state_of_an_unknown_session_is_not_found(h: Harness) {
    let never = Uuid::new_v4();
    assert_err!(
        h.ports.sessions.set_state(never, "a", json!(1)).await,
        DatabaseError::NotFound { .. }
    );
    assert_err!(
        h.ports.sessions.get_state(never, "a").await,
        DatabaseError::NotFound { .. }
    );
    assert_eq!(db(h.ports.sessions.get(never).await), None);
}

pub async fn deleting_a_session_removes_it_and_its_events_only(h: Harness) {
    let gone = session(&h).await;
    let kept = session(&h).await;
    db(h.ports.sessions.append_event(gone.id, event("x", 1)).await);
    db(h.ports.sessions.append_event(kept.id, event("x", 1)).await);
    db(h.ports.sessions.delete(gone.id).await);
    assert_eq!(db(h.ports.sessions.get(gone.id).await), None);
    assert_err!(
        h.ports.sessions.get_events(gone.id, 0, 10).await,
        DatabaseError::NotFound { .. }
    );
    assert_eq!(
        db(h.ports.sessions.get_events(kept.id, 0, 10).await).len(),
        1
    );
}

pub async fn deleting_a_session_keeps_its_tasks_without_a_session(h: Harness) {
    let s = session(&h).await;
    let t = h
        .submit(NewTask {
            session_id: Some(s.id),
            ..task("in the session")
        })
        .await;
    db(h.ports.sessions.delete(s.id).await);
    assert_eq!(h.task(t.id).await.session_id, None);
}

pub async fn deleting_an_unknown_session_is_not_found(h: Harness) {
    let kept = session(&h).await;
    assert_err!(
        h.ports.sessions.delete(Uuid::new_v4()).await,
        DatabaseError::NotFound { .. }
    );
    assert!(db(h.ports.sessions.get(kept.id).await).is_some());
}
