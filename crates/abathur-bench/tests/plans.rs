//! The set-based statements the baseline shares with our adapter find their rows through the
//! primary key, read from `EXPLAIN QUERY PLAN` on a migrated database: a plan led by a status
//! index instead reads every task of that status once per member of the set, and a fan-out of
//! 10,000 then takes a minute rather than a fraction of a second.

use abathur::infrastructure::database::baseline;
use abathur_bench::fixture;

/// The detail lines of `sql`'s query plan, every parameter bound to NULL.
fn plan(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    let mut statement = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("the statement prepares");
    let nulls = vec![rusqlite::types::Null; statement.parameter_count()];
    statement
        .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
        .expect("the plan is read")
        .collect::<Result<_, _>>()
        .expect("the plan is read")
}

#[tokio::test]
async fn the_release_of_dependents_and_the_claims_status_change_find_tasks_by_id() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("plans.db");
    fixture::create(&path).await.expect("a migrated database");
    let conn = fixture::raw(&path).expect("a raw connection");
    for (name, sql) in [
        ("RELEASE_READY", baseline::RELEASE_READY),
        ("STORE_KEYS", baseline::STORE_KEYS),
        ("SET_STATUS_MANY", baseline::SET_STATUS_MANY),
    ] {
        let plan = plan(&conn, sql);
        let on_tasks: Vec<&String> = plan
            .iter()
            .filter(|line| line.contains(" tasks "))
            .collect();
        assert!(
            !on_tasks.is_empty()
                && on_tasks
                    .iter()
                    .all(|line| line.contains("sqlite_autoindex_tasks_1 (id=?)")),
            "{name} should find tasks by id: {plan:?}"
        );
    }
}
