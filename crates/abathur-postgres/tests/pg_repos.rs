//! The memory, session and agent repositories on PostgreSQL, beyond the conformance suite:
//! writers on many machines at once (each machine a pool of its own on one database), the
//! server's clock, and text PostgreSQL cannot store.

use std::sync::Arc;

use abathur_core::error::DatabaseError;
use abathur_core::models::{Agent, MemoryType, NewMemory, NewSessionEvent, Session};
use abathur_core::ports::{AgentRepository, MemoryRepository, SessionRepository};
use abathur_postgres::testing::TestDatabase;
use abathur_postgres::{
    PgAgentRepository, PgConfig, PgDatabase, PgMemoryRepository, PgSessionRepository,
};
use chrono::Utc;
use serde_json::{json, Value};
use tokio::task::JoinSet;

const MACHINES: usize = 4;

fn config() -> PgConfig {
    PgConfig {
        max_connections: 4,
        ..PgConfig::default()
    }
}

/// A fresh database and `MACHINES` pools on it, one per simulated machine.
async fn machines() -> (TestDatabase, Vec<PgDatabase>) {
    let (test, first) = TestDatabase::migrated(config()).await;
    let mut pools = vec![first];
    for _ in 1..MACHINES {
        pools.push(test.connect(config()).await.expect("connect a machine"));
    }
    (test, pools)
}

fn memory(namespace: &str, key: &str, value: Value) -> NewMemory {
    NewMemory {
        namespace: namespace.into(),
        key: key.into(),
        value,
        memory_type: MemoryType::Semantic,
        metadata: None,
        created_by: "agent".into(),
    }
}

fn event(n: usize) -> NewSessionEvent {
    NewSessionEvent {
        event_type: "step".into(),
        actor: "agent".into(),
        content: json!({ "n": n }),
    }
}

fn is_validation(result: &Result<impl std::fmt::Debug, DatabaseError>, field: &str) -> bool {
    matches!(result, Err(DatabaseError::Validation(e)) if e.field == field)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_from_many_machines_number_events_one_to_n() {
    const WRITERS: usize = 8;
    const EACH: usize = 25;
    let (_test, pools) = machines().await;
    let session = Session::new("app", "user", Utc::now());
    PgSessionRepository::new(pools[0].pool().clone())
        .create(session.clone())
        .await
        .expect("create the session");
    let mut writers = JoinSet::new();
    for w in 0..WRITERS {
        // Server time (`SystemClock` asks for the store's clock), as in production.
        let repo = PgSessionRepository::new(pools[w % MACHINES].pool().clone());
        writers.spawn(async move {
            let mut sequences = Vec::new();
            for i in 0..EACH {
                let e = repo
                    .append_event(session.id, event(w * EACH + i))
                    .await
                    .expect("append");
                sequences.push(e.sequence);
            }
            sequences
        });
    }
    let mut sequences: Vec<u64> = writers.join_all().await.into_iter().flatten().collect();
    sequences.sort_unstable();
    let total = (WRITERS * EACH) as u64;
    assert_eq!(sequences, (1..=total).collect::<Vec<_>>());
    // In time order the events come in sequence order: each append read the server's clock
    // once it held the session, after the one numbered before it had committed.
    let events = PgSessionRepository::new(pools[1].pool().clone())
        .get_events(session.id, 0, 1000)
        .await
        .expect("read the events");
    let read: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(read, (1..=total).collect::<Vec<_>>());
    assert!(events.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    let stored = PgSessionRepository::new(pools[2].pool().clone())
        .get(session.id)
        .await
        .expect("read the session")
        .expect("the session");
    assert_eq!(stored.updated_at, events.last().expect("events").timestamp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_state_writes_of_different_keys_lose_nothing() {
    let (_test, pools) = machines().await;
    let session = Session::new("app", "user", Utc::now());
    PgSessionRepository::new(pools[0].pool().clone())
        .create(session.clone())
        .await
        .expect("create the session");
    let mut writers = JoinSet::new();
    for w in 0..8 {
        let repo = PgSessionRepository::new(pools[w % MACHINES].pool().clone());
        writers.spawn(async move {
            for round in 0..10 {
                repo.set_state(session.id, &format!("k{w}"), json!(round))
                    .await
                    .expect("set state");
            }
        });
    }
    writers.join_all().await;
    let state = PgSessionRepository::new(pools[0].pool().clone())
        .get(session.id)
        .await
        .expect("read")
        .expect("the session")
        .state;
    assert_eq!(state.len(), 8);
    assert!(state.values().all(|v| *v == json!(9)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_of_one_memory_number_versions_without_gap() {
    const WRITERS: usize = 8;
    const EACH: usize = 10;
    let (_test, pools) = machines().await;
    PgMemoryRepository::new(pools[0].pool().clone())
        .add(memory("ns", "k", json!(0)))
        .await
        .expect("add");
    let mut writers = JoinSet::new();
    for w in 0..WRITERS {
        let repo = PgMemoryRepository::new(pools[w % MACHINES].pool().clone());
        writers.spawn(async move {
            let mut versions = Vec::new();
            for i in 0..EACH {
                let m = repo
                    .update("ns", "k", json!(w * EACH + i), &format!("writer-{w}"))
                    .await
                    .expect("update");
                versions.push(m.version);
            }
            versions
        });
    }
    let mut versions: Vec<u32> = writers.join_all().await.into_iter().flatten().collect();
    versions.sort_unstable();
    let last = (WRITERS * EACH + 1) as u32;
    assert_eq!(versions, (2..=last).collect::<Vec<_>>());
    let repo = PgMemoryRepository::new(pools[0].pool().clone());
    let all = repo.list_versions("ns", "k").await.expect("list");
    assert_eq!(
        all.iter().map(|m| m.version).collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>()
    );
    assert!(all.iter().all(|m| !m.is_deleted));
    assert_eq!(
        repo.get("ns", "k").await.expect("get").map(|m| m.version),
        Some(last)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_of_one_key_store_it_once() {
    let (_test, pools) = machines().await;
    for round in 0..3u32 {
        let mut adders = JoinSet::new();
        for a in 0..8 {
            let repo = PgMemoryRepository::new(pools[a % MACHINES].pool().clone());
            adders.spawn(async move { repo.add(memory("ns", "k", json!(a))).await });
        }
        let results = adders.join_all().await;
        let added: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(added.len(), 1, "{results:?}");
        // Each round re-adds the key deleted by the one before: numbering continues.
        assert_eq!(added[0].version, round + 1);
        assert!(results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| matches!(r, Err(DatabaseError::UniqueViolation { .. }))));
        PgMemoryRepository::new(pools[0].pool().clone())
            .delete("ns", "k")
            .await
            .expect("delete");
    }
    let all = PgMemoryRepository::new(pools[1].pool().clone())
        .list_versions("ns", "k")
        .await
        .expect("list");
    assert_eq!(
        all.iter()
            .map(|m| (m.version, m.is_deleted))
            .collect::<Vec<_>>(),
        vec![(1, true), (2, true), (3, true)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_racing_updates_marks_every_version() {
    let (_test, pools) = machines().await;
    for round in 0..5 {
        let key = format!("k{round}");
        PgMemoryRepository::new(pools[0].pool().clone())
            .add(memory("ns", &key, json!(0)))
            .await
            .expect("add");
        let mut writers = JoinSet::new();
        for w in 0..6 {
            let repo = PgMemoryRepository::new(pools[w % MACHINES].pool().clone());
            let key = key.clone();
            writers.spawn(async move {
                if w == 3 {
                    repo.delete("ns", &key).await.map(|()| 0)
                } else {
                    let mut done = 0;
                    for i in 0..5 {
                        match repo.update("ns", &key, json!(i), "w").await {
                            Ok(_) => done += 1,
                            Err(DatabaseError::NotFound { .. }) => break,
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(done)
                }
            });
        }
        let updated: u32 = writers
            .join_all()
            .await
            .into_iter()
            .map(|r| r.expect("an update or the delete"))
            .sum();
        let all = PgMemoryRepository::new(pools[1].pool().clone())
            .list_versions("ns", &key)
            .await
            .expect("list");
        // Every version written is there, numbered without a gap, and the delete, whenever
        // it ran, left none live.
        assert_eq!(
            all.iter().map(|m| m.version).collect::<Vec<_>>(),
            (1..=updated + 1).collect::<Vec<_>>()
        );
        assert!(all.iter().all(|m| m.is_deleted), "{all:?}");
    }
}

#[tokio::test]
async fn a_nul_character_is_a_validation_error_and_nothing_is_stored() {
    let (_test, db) = TestDatabase::migrated(config()).await;
    let memories = PgMemoryRepository::new(db.pool().clone());
    let sessions = PgSessionRepository::new(db.pool().clone());

    // Memories: in the value, deep in it, in an object key, in the metadata.
    for (m, field) in [
        (memory("ns", "a", json!("x\u{0}y")), "value"),
        (memory("ns", "b", json!({"deep": [["\u{0}"]]})), "value"),
        (memory("ns", "c", json!({"k\u{0}": 1})), "value"),
        (
            NewMemory {
                metadata: Some(json!({"m": "\u{0}"})),
                ..memory("ns", "d", json!(1))
            },
            "metadata",
        ),
        (memory("n\u{0}s", "e", json!(1)), "namespace"),
    ] {
        let result = memories.add(m).await;
        assert!(is_validation(&result, field), "{field}: {result:?}");
    }
    assert_eq!(memories.count("").await.expect("count"), 0);
    memories
        .add(memory("ns", "kept", json!(1)))
        .await
        .expect("add");
    let result = memories.update("ns", "kept", json!(["\u{0}"]), "a").await;
    assert!(is_validation(&result, "value"), "{result:?}");
    assert_eq!(
        memories
            .list_versions("ns", "kept")
            .await
            .expect("list")
            .len(),
        1
    );
    // Read arguments reach the server, which refuses them: still a validation error, never a
    // database error.
    assert!(matches!(
        memories.get("n\u{0}s", "k").await,
        Err(DatabaseError::Validation(_))
    ));
    assert!(matches!(
        memories.search("n\u{0}", None, 10).await,
        Err(DatabaseError::Validation(_))
    ));
    assert!(matches!(
        memories.count("n\u{0}").await,
        Err(DatabaseError::Validation(_))
    ));

    // Sessions: in the state at creation, in an event's content, in a state value.
    let mut state = serde_json::Map::new();
    state.insert("k".into(), json!("\u{0}"));
    let bad = Session {
        state,
        ..Session::new("app", "user", Utc::now())
    };
    let result = sessions.create(bad.clone()).await;
    assert!(is_validation(&result, "state"), "{result:?}");
    assert_eq!(sessions.get(bad.id).await.expect("get"), None);

    let s = Session::new("app", "user", Utc::now());
    sessions.create(s.clone()).await.expect("create");
    let result = sessions
        .append_event(
            s.id,
            NewSessionEvent {
                content: json!({"text": "a\u{0}b"}),
                ..event(1)
            },
        )
        .await;
    assert!(is_validation(&result, "content"), "{result:?}");
    assert!(sessions
        .get_events(s.id, 0, 10)
        .await
        .expect("events")
        .is_empty());
    let result = sessions.set_state(s.id, "k", json!("\u{0}")).await;
    assert!(is_validation(&result, "value"), "{result:?}");
    assert_eq!(sessions.get(s.id).await.expect("get"), Some(s));
}

#[tokio::test]
async fn without_a_pinned_clock_writes_take_the_servers_time() {
    let (_test, db) = TestDatabase::migrated(config()).await;
    let before = Utc::now() - chrono::Duration::seconds(60);
    let m = PgMemoryRepository::new(db.pool().clone())
        .add(memory("ns", "k", json!(1)))
        .await
        .expect("add");
    assert_eq!(m.created_at, m.updated_at);
    let agents = PgAgentRepository::new(db.pool().clone());
    let a = Agent::new("coder", before);
    agents.insert(a.clone()).await.expect("insert");
    agents.update_heartbeat(a.id).await.expect("heartbeat");
    let read = agents.get(a.id).await.expect("get").expect("the agent");
    // The server and this machine share a clock here: allow for a minute either way.
    let after = Utc::now() + chrono::Duration::seconds(60);
    for t in [m.created_at, read.heartbeat_at] {
        assert!(before < t && t < after, "{t}");
    }
    assert!(agents
        .find_stale_agents(std::time::Duration::from_secs(3600))
        .await
        .expect("stale")
        .is_empty());
    let repo: Arc<dyn AgentRepository> = Arc::new(agents);
    assert_eq!(repo.list(None).await.expect("list").len(), 1);
}
