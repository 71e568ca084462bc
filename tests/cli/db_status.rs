//! `abathur db status`.

use crate::sandbox::{latest_schema_version, Sandbox};

#[test]
fn db_status_shows_wal_and_the_counts() {
    let sandbox = Sandbox::new();
    let first = sandbox.submit(&["first"]);
    sandbox.submit(&["second", "--depends-on", &first]);

    let text = sandbox.ok(&["db", "status"]);
    let field = |name: &str| -> &str {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} line in:\n{text}"))
            .trim()
    };
    assert_eq!(field("journal mode:"), "wal");
    assert_eq!(
        field("schema version:"),
        latest_schema_version().to_string()
    );
    let path = std::fs::canonicalize(sandbox.db_path()).unwrap();
    assert_eq!(field("database:"), path.display().to_string());
    let count = |name: &str| -> String {
        text.lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} line in:\n{text}"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_eq!(count("tasks"), "2");
    assert_eq!(count("task_dependencies"), "1");
    assert_eq!(count("agents"), "0");
    assert_eq!(count("ready"), "1");
    assert_eq!(count("blocked"), "1");
    assert_eq!(count("running"), "0");

    let status = sandbox.json(&["db", "status"]);
    assert_eq!(status["journal_mode"], "wal");
    assert_eq!(status["schema_version"], latest_schema_version());
    assert_eq!(status["tables"]["tasks"], 2);
    assert_eq!(status["tables"]["task_dependencies"], 1);
    assert_eq!(status["tasks_by_status"]["ready"], 1);
    assert_eq!(status["tasks_by_status"]["blocked"], 1);
    assert!(
        status["tables"].get("_sqlx_migrations").is_none(),
        "bookkeeping tables are not counted"
    );
}
