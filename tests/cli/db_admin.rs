//! `db migrate`, `db check` and `db backup`.

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::sandbox::{latest_schema_version, Sandbox};

/// Runs `sql` on the sandbox's database as an outside tool would, with foreign keys checked or
/// not.
fn outside_tool(s: &Sandbox, foreign_keys: bool, sql: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut conn = SqliteConnectOptions::new()
            .filename(s.db_path())
            .foreign_keys(foreign_keys)
            .connect()
            .await
            .unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    });
}

#[test]
fn migrate_says_what_it_applied_and_then_that_it_is_up_to_date() {
    let s = Sandbox::new();
    let first = s.json(&["db", "migrate"]);
    assert_eq!(first["from_version"], serde_json::Value::Null);
    assert_eq!(first["to_version"], latest_schema_version());
    let again = s.ok(&["db", "migrate"]);
    assert_eq!(
        again,
        format!("schema version {}: up to date\n", latest_schema_version())
    );
}

#[test]
fn check_passes_a_healthy_database() {
    let s = Sandbox::new();
    s.submit(&["something"]);
    assert_eq!(s.ok(&["db", "check"]), "integrity: ok\nforeign keys: ok\n");
    assert_eq!(s.json(&["db", "check"])["ok"], true);
}

#[test]
fn check_reports_a_row_with_a_missing_parent_and_exits_with_6() {
    let s = Sandbox::new();
    let id = s.submit(&["child"]);
    // Write an edge to a task that does not exist, with the foreign keys switched off, as an
    // outside tool might.
    outside_tool(
        &s,
        false,
        &format!(
            "INSERT INTO task_dependencies (task_id, depends_on_task_id)
             VALUES ('{id}', '00000000-0000-4000-8000-000000000000')"
        ),
    );
    let stderr = s.fails(&["db", "check"], 6);
    assert!(
        stderr.contains("1 rows refer to rows that do not exist")
            && stderr.contains("a row of task_dependencies refers to a missing row of tasks"),
        "{stderr}"
    );
}

#[test]
fn check_reports_counts_per_status_that_disagree_with_the_tasks_and_how_to_repair_them() {
    let s = Sandbox::new();
    s.submit(&["counted"]);
    let run = |sql: &str| outside_tool(&s, true, sql);
    // A tool that writes the counts behind the triggers' back, or deletes a row of them.
    run(
        "UPDATE task_status_counts SET tasks = 7 WHERE status = 'ready';
         DELETE FROM task_status_counts WHERE status = 'blocked';
         INSERT INTO tasks (id, summary, description, agent_type, priority, status,
                            submitted_at, last_updated_at, source)
         VALUES ('00000000-0000-4000-8000-00000000000b', 'b', '', 'w', 1, 'blocked',
                 '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z', 'human')",
    );
    let stderr = s.fails(&["db", "check"], 6);
    assert!(
        stderr.contains("2 of the counts it keeps disagree with its rows; nothing is lost")
            && stderr.contains("the overview's count of ready tasks is 7, but 1 tasks are ready")
            && stderr
                .contains("the overview's count of blocked tasks is 0, but 1 tasks are blocked")
            && !stderr.contains("backup"),
        "{stderr}"
    );
    // The repair it names sets them right, the missing row included.
    let repair = stderr
        .lines()
        .find_map(|line| line.split('`').nth(1))
        .expect("a repair between backquotes")
        .to_string();
    run(&repair);
    assert_eq!(s.ok(&["db", "check"]), "integrity: ok\nforeign keys: ok\n");
}

#[test]
fn check_reads_a_database_whose_schema_is_older_than_the_kept_counts() {
    let s = Sandbox::new();
    s.submit(&["older"]);
    let down =
        include_str!("../../crates/abathur-sqlite/migrations/0009_counts_and_search.down.sql");
    outside_tool(
        &s,
        true,
        &format!("{down}\nDELETE FROM _sqlx_migrations WHERE version = 9;"),
    );
    assert_eq!(s.ok(&["db", "check"]), "integrity: ok\nforeign keys: ok\n");
}

#[test]
fn backup_writes_a_consistent_copy_and_never_overwrites() {
    let s = Sandbox::new();
    let id = s.submit(&["keep me"]);
    let target = s.dir.path().join("copies").join("backup.db");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let target_text = target.to_str().unwrap();
    let report = s.json(&["db", "backup", target_text]);
    assert!(report["bytes"].as_u64().unwrap() > 0);

    // The copy is a complete database on its own.
    let copy = s
        .bare()
        .args(["--json", "--db", target_text, "task", "show", &id])
        .output()
        .unwrap();
    assert!(copy.status.success());
    let task: serde_json::Value = serde_json::from_slice(&copy.stdout).unwrap();
    assert_eq!(task["summary"], "keep me");

    let before = std::fs::read(&target).unwrap();
    let stderr = s.fails(&["db", "backup", target_text], 4);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read(&target).unwrap(), before);
}

#[test]
fn backup_into_a_missing_folder_is_invalid_input() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    let target = s.dir.path().join("no-such-folder").join("backup.db");
    let stderr = s.fails(&["db", "backup", target.to_str().unwrap()], 4);
    assert!(stderr.contains("not an existing folder"), "{stderr}");
}

#[test]
fn backup_removes_a_partial_copy_left_by_a_killed_backup_and_keeps_a_running_ones() {
    let s = Sandbox::new();
    s.submit(&["keep me"]);
    // A backup killed half-way leaves its partial copy, named by its process id; this one's
    // process is gone for sure, having been killed and waited for.
    let mut killed = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let dead = killed.id();
    killed.kill().unwrap();
    killed.wait().unwrap();
    let folder = s.dir.path().join("copies");
    std::fs::create_dir(&folder).unwrap();
    let abandoned = folder.join(format!(".backup.db.partial-{dead}"));
    let abandoned_journal = folder.join(format!(".backup.db.partial-{dead}-journal"));
    // A partial copy of a backup still running (this test's process) is not to be touched.
    let running = folder.join(format!(".backup.db.partial-{}", std::process::id()));
    for file in [&abandoned, &abandoned_journal, &running] {
        std::fs::write(file, b"half a copy").unwrap();
    }
    let target = folder.join("backup.db");
    s.json(&["db", "backup", target.to_str().unwrap()]);

    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            format!(".backup.db.partial-{}", std::process::id()),
            "backup.db".to_string()
        ]
    );
}
