//! The hot queries use an index: `EXPLAIN QUERY PLAN` shows no full scan of a table and no
//! sort. The task queries are read from the same files the repository compiles, so the test
//! checks exactly the text that runs. The claim's statements, which are constants of the
//! adapter's `claim` module, are pinned by that module's own tests.

use sqlx::SqlitePool;

use crate::helpers::database::test_db;

const READY_TASKS: &str = include_str!("../../crates/abathur-sqlite/src/queries/ready_tasks.sql");
const TASK_DEPENDENTS: &str =
    include_str!("../../crates/abathur-sqlite/src/queries/task_dependents.sql");

/// The plan's detail lines, for a query whose parameters are all bound to `param`.
async fn plan(pool: &SqlitePool, sql: &str, params: usize) -> Vec<String> {
    let explain = format!("EXPLAIN QUERY PLAN {sql}");
    let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(&explain);
    for _ in 0..params {
        query = query.bind("x");
    }
    query
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, _, _, detail)| detail)
        .collect()
}

#[track_caller]
fn assert_indexed(plan: &[String], index: &str) {
    assert!(
        plan.iter().any(|line| line.contains(index)),
        "expected {index} in {plan:?}"
    );
    for line in plan {
        assert!(!line.starts_with("SCAN "), "full scan in {plan:?}");
        assert!(!line.contains("TEMP B-TREE"), "sort in {plan:?}");
    }
}

#[tokio::test]
async fn the_ready_query_reads_the_ready_index_in_order() {
    let pool = test_db().await;
    assert_indexed(&plan(&pool, READY_TASKS, 1).await, "idx_tasks_ready");
}

#[tokio::test]
async fn get_dependents_reads_the_edge_index() {
    let pool = test_db().await;
    let plan = plan(&pool, TASK_DEPENDENTS, 1).await;
    assert!(
        plan.iter()
            .any(|l| l.contains("idx_task_dependencies_depends_on")),
        "{plan:?}"
    );
    assert!(plan.iter().all(|l| !l.starts_with("SCAN ")), "{plan:?}");
}

const DEPENDENTS_TO_RELEASE: &str =
    include_str!("../../crates/abathur-sqlite/src/queries/dependents_to_release.sql");

/// Completing a task reads its dependents through the edge index, and each dependent's row and
/// its other edges by key: the cost follows the dependents, not the table.
#[tokio::test]
async fn completing_reads_the_dependents_through_the_edge_index_first() {
    let pool = test_db().await;
    let plan = plan(&pool, DEPENDENTS_TO_RELEASE, 1).await;
    assert!(
        plan[0].contains("idx_task_dependencies_depends_on"),
        "the edge index must be the outer loop: {plan:?}"
    );
    for line in &plan {
        assert!(!line.starts_with("SCAN "), "full scan in {plan:?}");
    }
}

const MEMORY_GET: &str = include_str!("../../crates/abathur-sqlite/src/queries/memory_get.sql");
const MEMORY_SEARCH: &str =
    include_str!("../../crates/abathur-sqlite/src/queries/memory_search.sql");
const SESSION_EVENTS: &str =
    include_str!("../../crates/abathur-sqlite/src/queries/session_events.sql");

#[tokio::test]
async fn memory_get_reads_the_primary_key() {
    let pool = test_db().await;
    assert_indexed(&plan(&pool, MEMORY_GET, 2).await, "PRIMARY KEY");
}

#[tokio::test]
async fn memory_prefix_search_reads_a_range_of_the_primary_key() {
    let pool = test_db().await;
    let plan = plan(&pool, MEMORY_SEARCH, 5).await;
    assert_indexed(&plan, "PRIMARY KEY");
    assert!(
        plan.iter()
            .any(|l| l.contains("namespace>? AND namespace<?")),
        "the prefix must bound the range on both sides: {plan:?}"
    );
}

#[tokio::test]
async fn session_events_read_the_session_timestamp_index_in_order() {
    let pool = test_db().await;
    assert_indexed(
        &plan(&pool, SESSION_EVENTS, 3).await,
        "idx_session_events_session_timestamp",
    );
}
