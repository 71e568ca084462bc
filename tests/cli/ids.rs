//! Ids typed as prefixes, as with git: a unique prefix names its record, an unknown one is not
//! found, an ambiguous one lists the candidates.

use abathur::domain::models::Task;
use abathur::domain::ports::TaskRepository;
use abathur::infrastructure::database::{DatabaseConnection, TaskRepositoryImpl};
use uuid::Uuid;

use crate::sandbox::Sandbox;

/// Stores tasks with these ids directly, so that their prefixes can be chosen.
fn store_tasks(sandbox: &Sandbox, ids: &[&str]) {
    sandbox.ok(&["init"]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let db = DatabaseConnection::open_path(&sandbox.db_path(), Default::default())
            .await
            .unwrap();
        let repo = TaskRepositoryImpl::new(db.pool().clone());
        for id in ids {
            let mut task = Task::new(format!("task {id}"), "d", "generic", chrono::Utc::now());
            task.id = Uuid::parse_str(id).unwrap();
            repo.insert(task).await.unwrap();
        }
        db.close().await;
    });
}

const FIRST: &str = "aaaa1111-0000-4000-8000-000000000001";
const SECOND: &str = "aaaa2222-0000-4000-8000-000000000002";

#[test]
fn a_unique_prefix_names_its_task_in_any_case_and_with_or_without_hyphens() {
    let s = Sandbox::new();
    store_tasks(&s, &[FIRST, SECOND]);
    for prefix in ["aaaa1", "AAAA1111", "aaaa11110000", "aaaa1111-0000-4"] {
        let task = s.json(&["task", "show", prefix]);
        assert_eq!(task["id"], FIRST, "{prefix}");
    }
    // Prefixes work wherever a task id is taken.
    let child = s.submit(&["child", "--depends-on", "aaaa2", "--parent", "aaaa1"]);
    let child = s.json(&["task", "show", &child[..8]]);
    assert_eq!(child["dependencies"], serde_json::json!([SECOND]));
    assert_eq!(child["parent_task_id"], FIRST);
}

#[test]
fn an_ambiguous_prefix_lists_the_candidates_and_exits_with_2() {
    let s = Sandbox::new();
    store_tasks(&s, &[FIRST, SECOND]);
    let stderr = s.fails(&["task", "show", "aaaa"], 2);
    assert!(stderr.contains("ambiguous"), "{stderr}");
    assert!(
        stderr.contains(FIRST) && stderr.contains(SECOND),
        "{stderr}"
    );
    let before = s.tasks().len();
    s.fails(&["task", "submit", "x", "--depends-on", "aaaa"], 2);
    assert_eq!(s.tasks().len(), before);
}

#[test]
fn a_prefix_that_matches_nothing_exits_with_3() {
    let s = Sandbox::new();
    store_tasks(&s, &[FIRST]);
    let stderr = s.fails(&["task", "cancel", "bbbb"], 3);
    assert_eq!(stderr, "error: no task id starts with bbbb\n");
    s.fails(&["task", "complete", "aaaa1"], 3);
    assert_eq!(s.json(&["task", "show", FIRST])["status"], "pending");
}
