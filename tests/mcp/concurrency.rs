//! Several server processes, one per agent, on one database file: each enqueues and claims at
//! the same time as the others.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::client::{id_of, open_db, Session, Store};

const SERVERS: usize = 4;
const TASKS_PER_SERVER: usize = 30;

/// What one server's agent did.
#[derive(Default)]
struct Tally {
    enqueued: Vec<String>,
    claimed: Vec<String>,
}

async fn claim_and_complete(session: &Session, worker: &str, max: u32, tally: &mut Tally) -> usize {
    let claimed = session
        .call("task_claim", json!({ "worker_id": worker, "max": max }))
        .await;
    let claimed = claimed["claimed"].as_array().cloned().unwrap_or_default();
    for claim in &claimed {
        tally.claimed.push(id_of(&claim["task"]));
        session
            .call(
                "task_complete",
                json!({ "attempt_id": claim["lease"]["attempt_id"], "result": { "by": worker } }),
            )
            .await;
    }
    claimed.len()
}

fn unfinished(status: &Value) -> u64 {
    ["pending", "blocked", "ready", "running"]
        .iter()
        .map(|s| status["counts"][s].as_u64().unwrap_or(0))
        .sum()
}

async fn agent(session: Session, index: usize, enqueuers_done: Arc<AtomicUsize>) -> Tally {
    let worker = format!("agent-{index}");
    let mut tally = Tally::default();
    for n in 0..TASKS_PER_SERVER {
        // Some tasks wait for the agent's previous one, so completions release dependents
        // while the others are claiming.
        let depends_on: Vec<&String> = match tally.enqueued.last() {
            Some(previous) if n % 3 != 0 => vec![previous],
            _ => vec![],
        };
        let task = session
            .call(
                "task_enqueue",
                json!({ "description": format!("{worker} task {n}"), "depends_on": depends_on }),
            )
            .await;
        tally.enqueued.push(id_of(&task));
        claim_and_complete(&session, &worker, 2, &mut tally).await;
    }
    enqueuers_done.fetch_add(1, Ordering::SeqCst);
    loop {
        if claim_and_complete(&session, &worker, 4, &mut tally).await > 0 {
            continue;
        }
        let all_enqueued = enqueuers_done.load(Ordering::SeqCst) == SERVERS;
        let status = session.call("task_queue_status", json!({})).await;
        if all_enqueued && unfinished(&status) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(session.close().await.success());
    tally
}

/// Regression: servers started together on a new file raced to migrate it, and one lost with
/// "a migration failed: table task_schedule already exists" and exited before the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_servers_started_at_once_on_a_new_file_all_come_up() {
    for _ in 0..10 {
        let store = Store::new();
        let mut starting = JoinSet::new();
        for _ in 0..8 {
            starting.spawn(Session::start(store.command(&[])));
        }
        for session in starting.join_all().await {
            session.call("task_queue_status", json!({})).await;
            assert!(session.close().await.success());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_servers_on_one_file_enqueue_and_claim_at_once_without_lock_errors_or_double_claims() {
    let store = Store::new();
    let started = Instant::now();
    // All four start on a file that does not exist yet: they race to create and migrate it.
    let mut starting = JoinSet::new();
    for _ in 0..SERVERS {
        let cmd = store.command(&[]);
        starting.spawn(Session::start(cmd));
    }
    let sessions: Vec<Session> = starting.join_all().await;

    let enqueuers_done = Arc::new(AtomicUsize::new(0));
    let mut agents = JoinSet::new();
    for (index, session) in sessions.into_iter().enumerate() {
        agents.spawn(agent(session, index, enqueuers_done.clone()));
    }
    let tallies = tokio::time::timeout(Duration::from_secs(60), agents.join_all())
        .await
        .expect("the agents finish in time");
    let elapsed = started.elapsed();

    let enqueued: Vec<&String> = tallies.iter().flat_map(|t| &t.enqueued).collect();
    let claimed: Vec<&String> = tallies.iter().flat_map(|t| &t.claimed).collect();
    let unique_claims: BTreeSet<&String> = claimed.iter().copied().collect();
    assert_eq!(enqueued.len(), SERVERS * TASKS_PER_SERVER);
    assert_eq!(
        claimed.len(),
        unique_claims.len(),
        "a task was handed out twice"
    );
    assert_eq!(
        unique_claims,
        enqueued.iter().copied().collect::<BTreeSet<_>>(),
        "every enqueued task was claimed, and nothing else"
    );
    let per_agent: Vec<usize> = tallies.iter().map(|t| t.claimed.len()).collect();

    // The database agrees: one attempt per task, every task completed by whoever claimed it.
    let pool = open_db(&store.db_path()).await;
    let attempts: Vec<(String, i64)> =
        sqlx::query_as("SELECT task_id, COUNT(*) FROM task_attempts GROUP BY task_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(attempts.len(), SERVERS * TASKS_PER_SERVER);
    assert!(
        attempts.iter().all(|(_, n)| *n == 1),
        "tasks with more than one attempt: {:?}",
        attempts.iter().filter(|(_, n)| *n > 1).collect::<Vec<_>>()
    );
    let statuses: HashMap<String, i64> =
        sqlx::query_as("SELECT status, COUNT(*) FROM tasks GROUP BY status")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(
        statuses,
        HashMap::from([("completed".to_string(), (SERVERS * TASKS_PER_SERVER) as i64)])
    );
    let mismatched: (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM tasks t JOIN task_attempts a ON a.task_id = t.id
         WHERE json_extract(t.result_data, '$.by') IS NOT a.worker_id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        mismatched.0, 0,
        "a result was written by a worker without the lease"
    );
    eprintln!(
        "{SERVERS} servers, {} tasks, claims per server {per_agent:?}, {elapsed:?}",
        SERVERS * TASKS_PER_SERVER
    );
}
