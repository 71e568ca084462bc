//! What `--db` takes, and which commands may create or migrate the database. Regression tests
//! for issue 10, item 11: `sqlite::memory:` made a file of that name, `newdir/` made a file,
//! `file:x.db?mode=ro` made a folder, and a reading command added abathur's tables to someone
//! else's database.

use std::path::Path;
use std::process::Output;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::mounts::{bytes, names};
use crate::sandbox::Sandbox;

/// `abathur --db <db> <args>` in the sandbox.
#[track_caller]
fn with_db(s: &Sandbox, db: &str, args: &[&str]) -> Output {
    s.bare()
        .args(["--db", db])
        .args(args)
        .output()
        .expect("abathur runs")
}

#[track_caller]
fn failed(output: &Output, code: i32, expected: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.contains(expected), "{stderr}");
    stderr
}

#[track_caller]
fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `statements` on the SQLite file at `path`, outside abathur.
#[track_caller]
fn sql(path: &Path, statements: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut conn = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::raw_sql(statements).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    });
}

/// Reverts the newest migration (its down script, and its record), so that the file holds the
/// schema one migration behind this build, as a database written by the previous release does.
#[track_caller]
fn revert_latest_migration(path: &Path) {
    let latest = crate::sandbox::latest_schema_version();
    let down = abathur::infrastructure::database::MIGRATOR
        .iter()
        .find(|m| m.version == latest && m.migration_type.is_down_migration())
        .expect("the newest migration has a down script");
    sql(
        path,
        &format!(
            "{}\nDELETE FROM _sqlx_migrations WHERE version = {latest};",
            down.sql
        ),
    );
}

/// Every command that only reads, with arguments that would be valid on a real database.
const READING: &[&[&str]] = &[
    &["task", "list"],
    &["task", "show", "67e55044-10b1-426f-9247-bb680e5fe0c8"],
    &["task", "tree", "67e55044-10b1-426f-9247-bb680e5fe0c8"],
    &["task", "history", "67e55044-10b1-426f-9247-bb680e5fe0c8"],
    &["status"],
    &["memory", "get", "ns", "key"],
    &["memory", "search", "ns"],
    &["memory", "history", "ns", "key"],
    &["session", "show", "67e55044-10b1-426f-9247-bb680e5fe0c8"],
    &["agent", "list"],
    &["agent", "stale", "--older-than", "5m"],
    &["db", "status"],
    &["db", "check"],
];

#[test]
fn reading_commands_on_a_missing_database_say_there_is_none_and_create_nothing() {
    let s = Sandbox::new();
    for args in READING {
        let output = s.abathur().args(*args).output().unwrap();
        failed(&output, 6, "create one with `abathur init`");
        assert_eq!(names(s.dir.path()), Vec::<String>::new(), "{args:?}");
    }
    let backup = s.dir.path().join("backup.db");
    let output = s
        .abathur()
        .args(["db", "backup", backup.to_str().unwrap()])
        .output()
        .unwrap();
    failed(&output, 6, "no abathur database");
    assert_eq!(names(s.dir.path()), Vec::<String>::new());
}

#[test]
fn the_readme_first_command_still_creates_the_default_database() {
    let s = Sandbox::new();
    let file = s.dir.path().join("one.jsonl");
    std::fs::write(&file, "{\"key\": \"a\", \"description\": \"first\"}\n").unwrap();
    succeeded(
        &s.bare()
            .args(["task", "import", "one.jsonl"])
            .output()
            .unwrap(),
    );
    assert!(s.dir.path().join(".abathur/abathur.db").is_file());
}

#[test]
fn sqlite_memory_is_an_empty_database_in_memory_and_no_file() {
    let s = Sandbox::new();
    let id = succeeded(&with_db(&s, "sqlite::memory:", &["task", "submit", "x"]));
    assert!(uuid::Uuid::parse_str(id.trim()).is_ok(), "{id}");
    assert_eq!(
        succeeded(&with_db(&s, "sqlite::memory:", &["task", "list"])),
        "no tasks\n"
    );
    assert_eq!(names(s.dir.path()), Vec::<String>::new());
}

#[test]
fn a_folder_a_file_uri_and_other_urls_are_usage_errors_that_create_nothing() {
    let s = Sandbox::new();
    std::fs::create_dir(s.dir.path().join("existing")).unwrap();
    for (db, expected) in [
        ("newdir/", "is a folder"),
        ("existing", "is a folder"),
        ("file:x.db?mode=ro", "./file:x.db?mode=ro"),
        ("mysql://localhost/abathur", "mysql: URLs are not taken"),
        ("postgres:localhost/abathur", "not a PostgreSQL URL"),
        ("postgresql:/localhost/abathur", "not a PostgreSQL URL"),
        // A malformed URL is shown without its password.
        (
            "postgres://u:secret@h:notaport/db",
            "postgres://u:***@h:notaport/db",
        ),
        ("postgres:u:secret@h/db", "postgres:u:***@h/db"),
        ("sqlite:x.db?mode=sideways", "not a valid sqlite: URL"),
        ("", "empty"),
    ] {
        for args in [&["task", "submit", "x"][..], &["init"], &["task", "list"]] {
            let stderr = failed(&with_db(&s, db, args), 2, expected);
            assert!(!stderr.contains("secret"), "{stderr}");
        }
    }
    assert_eq!(names(s.dir.path()), vec!["existing".to_string()]);
    assert_eq!(names(&s.dir.path().join("existing")), Vec::<String>::new());
}

#[test]
fn sqlite_urls_in_sqlx_forms_name_the_same_file() {
    let s = Sandbox::new();
    let path = s.dir.path().join("queue.db");
    let id = succeeded(&with_db(
        &s,
        &format!("sqlite:{}", path.display()),
        &["task", "submit", "x"],
    ));
    for url in [
        format!("sqlite://{}", path.display()),
        "sqlite:queue.db".to_string(),
        "queue.db".to_string(),
        "./queue.db".to_string(),
    ] {
        let shown = succeeded(&with_db(&s, &url, &["task", "show", id.trim()]));
        assert!(shown.contains(id.trim()), "{url}: {shown}");
    }
    assert_eq!(names(s.dir.path()), vec!["queue.db".to_string()]);
}

#[test]
fn mode_ro_reads_but_never_writes_or_creates() {
    let s = Sandbox::new();
    let path = s.dir.path().join("queue.db");
    let url = format!("sqlite:{}?mode=ro", path.display());
    failed(
        &with_db(&s, &url, &["task", "submit", "x"]),
        6,
        "no abathur database",
    );
    assert_eq!(names(s.dir.path()), Vec::<String>::new());

    succeeded(&with_db(
        &s,
        path.to_str().unwrap(),
        &["task", "submit", "kept"],
    ));
    let before = bytes(&path);
    failed(&with_db(&s, &url, &["task", "submit", "x"]), 7, "read-only");
    assert!(succeeded(&with_db(&s, &url, &["task", "list"])).contains("kept"));
    assert_eq!(bytes(&path), before);
}

#[test]
fn mode_rw_writes_but_never_creates() {
    let s = Sandbox::new();
    let path = s.dir.path().join("queue.db");
    let url = format!("sqlite:{}?mode=rw", path.display());
    failed(
        &with_db(&s, &url, &["task", "submit", "x"]),
        6,
        "no abathur database",
    );
    assert_eq!(names(s.dir.path()), Vec::<String>::new());
    succeeded(&with_db(&s, path.to_str().unwrap(), &["init"]));
    succeeded(&with_db(&s, &url, &["task", "submit", "x"]));
}

#[test]
fn a_database_of_other_tables_is_refused_and_left_untouched_except_by_init() {
    let s = Sandbox::new();
    let path = s.db_path();
    sql(
        &path,
        "CREATE TABLE people (name TEXT); INSERT INTO people VALUES ('ada');",
    );
    let before = bytes(&path);
    let mut commands: Vec<&[&str]> = READING
        .iter()
        .copied()
        .filter(|a| a != &["db", "check"])
        .collect();
    commands.extend([
        &["task", "submit", "x"][..],
        &["reap"],
        &["memory", "add", "ns", "k", "1"],
        &["worker", "--once", "--", "true"],
    ]);
    for args in commands {
        let output = s.abathur().args(args).output().unwrap();
        failed(&output, 6, "not abathur's (it has tables (people)");
        assert_eq!(bytes(&path), before, "{args:?} changed the file");
        assert_eq!(
            names(s.dir.path()),
            vec!["abathur.db".to_string()],
            "{args:?}"
        );
    }
    // A check looks at any database as it is.
    succeeded(&s.abathur().args(["db", "check"]).output().unwrap());
    assert_eq!(bytes(&path), before);

    // Asked for, init adds abathur's tables beside the others.
    s.ok(&["init"]);
    s.submit(&["now it is shared"]);
    assert_eq!(s.tasks().len(), 1);
}

#[test]
fn migrations_that_are_not_abathurs_are_refused() {
    let s = Sandbox::new();
    let path = s.db_path();
    sql(
        &path,
        "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
           installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL,
           checksum BLOB NOT NULL, execution_time BIGINT NOT NULL);
         INSERT INTO _sqlx_migrations VALUES (1, 'create invoices', CURRENT_TIMESTAMP, 1, x'00', 1);
         CREATE TABLE invoices (id INTEGER);",
    );
    let before = bytes(&path);
    for args in [&["task", "list"][..], &["task", "submit", "x"]] {
        let output = s.abathur().args(args).output().unwrap();
        failed(&output, 6, "migration 1 (create invoices) is not abathur's");
    }
    assert_eq!(bytes(&path), before);
}

#[test]
fn reading_commands_never_migrate_an_older_schema() {
    let s = Sandbox::new();
    s.submit(&["kept"]);
    // To this build, the schema is one behind.
    revert_latest_migration(&s.db_path());
    let before = bytes(&s.db_path());
    for args in [&["task", "list"][..], &["db", "status"], &["status"]] {
        let output = s.abathur().args(args).output().unwrap();
        failed(&output, 6, "bring it up to date with `abathur db migrate`");
    }
    assert_eq!(bytes(&s.db_path()), before);
}

#[test]
fn a_write_through_mode_ro_to_an_older_schema_says_read_only_not_migration_failed() {
    let s = Sandbox::new();
    s.submit(&["kept"]);
    revert_latest_migration(&s.db_path());
    let before = bytes(&s.db_path());
    let url = format!("sqlite:{}?mode=ro", s.db_path().display());
    let stderr = failed(&with_db(&s, &url, &["task", "submit", "x"]), 7, "read-only");
    assert!(!stderr.contains("migrat"), "{stderr}");
    assert_eq!(bytes(&s.db_path()), before);
}

#[test]
fn db_on_the_command_line_wins_over_any_abathur_db_value() {
    let s = Sandbox::new();
    std::fs::create_dir(s.dir.path().join("existing")).unwrap();
    for env in [
        "",
        "postgres:localhost/abathur",
        "existing",
        "sqlite:x.db?colour=blue",
    ] {
        let run = |args: &[&str]| s.bare().env("ABATHUR_DB", env).args(args).output().unwrap();
        succeeded(&run(&["--db", "given.db", "init"]));
        succeeded(&run(&["task", "list", "--db", "given.db"]));
        // Without --db, the variable is the value, and a bad one is still a usage error.
        assert_eq!(run(&["task", "list"]).status.code(), Some(2), "{env:?}");
    }
    assert_eq!(
        names(s.dir.path()),
        vec!["existing".to_string(), "given.db".to_string()]
    );
}

#[test]
fn every_in_memory_form_serves_writing_and_reading_commands_and_makes_no_file() {
    let s = Sandbox::new();
    for db in [
        "sqlite::memory:",
        "sqlite://:memory:",
        "sqlite::memory:?cache=shared",
        "sqlite:q.db?mode=memory",
    ] {
        // A shared in-memory database on several connections failed now and then; a few
        // rounds catch it.
        for _ in 0..5 {
            let id = succeeded(&with_db(&s, db, &["task", "submit", "x"]));
            assert!(uuid::Uuid::parse_str(id.trim()).is_ok(), "{db}: {id}");
            assert_eq!(
                succeeded(&with_db(&s, db, &["task", "list"])),
                "no tasks\n",
                "{db}"
            );
            succeeded(&with_db(&s, db, &["status"]));
        }
    }
    assert_eq!(names(s.dir.path()), Vec::<String>::new());
}

#[test]
fn a_database_of_another_sqlx_project_with_timestamp_versions_is_not_abathurs() {
    let s = Sandbox::new();
    let path = s.db_path();
    // sqlx names migrations by timestamp by default: a version far above abathur's newest
    // is another project's, not a newer abathur's.
    sql(
        &path,
        "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
           installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL,
           checksum BLOB NOT NULL, execution_time BIGINT NOT NULL);
         INSERT INTO _sqlx_migrations VALUES
           (20240101120000, 'create invoices', CURRENT_TIMESTAMP, 1, x'00', 1);
         CREATE TABLE invoices (id INTEGER);",
    );
    let before = bytes(&path);
    for args in [
        &["task", "list"][..],
        &["task", "submit", "x"],
        &["db", "status"],
    ] {
        let output = s.abathur().args(args).output().unwrap();
        let stderr = failed(&output, 6, "not abathur's");
        assert!(!stderr.contains("newer abathur"), "{args:?}: {stderr}");
        assert_eq!(bytes(&path), before, "{args:?} changed the file");
    }
    for args in [&["db", "migrate"][..], &["init"]] {
        let output = s.abathur().args(args).output().unwrap();
        let stderr = failed(&output, 6, "not abathur's");
        assert!(!stderr.contains("newer abathur"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_fifo_or_a_device_is_refused_as_not_a_file_by_every_command() {
    let s = Sandbox::new();
    let fifo = s.dir.path().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    for db in [fifo.to_str().unwrap(), "/dev/null"] {
        for args in [&["init"][..], &["task", "submit", "x"], &["task", "list"]] {
            failed(&with_db(&s, db, args), 2, "not a regular file");
        }
    }
    assert_eq!(names(s.dir.path()), vec!["pipe".to_string()]);
}

/// A PostgreSQL server that cannot be reached, a database that does not exist and a refused
/// login each get a plain message naming the URL without its password, and create nothing.
#[test]
fn postgres_failures_to_connect_are_plain_and_hide_the_password() {
    let s = Sandbox::new();
    let unreachable = "postgres://u:secret@127.0.0.1:1/abathur";
    let stderr = failed(
        &with_db(&s, unreachable, &["task", "list"]),
        7,
        "cannot reach",
    );
    assert!(
        stderr.contains("postgres://u:***@127.0.0.1:1/abathur"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "{stderr}");
    let missing = abathur_postgres::testing::database_url("abathur_no_such_database");
    for args in [&["task", "list"][..], &["task", "submit", "x"]] {
        failed(&with_db(&s, &missing, args), 6, "abathur init");
    }
    assert_eq!(names(s.dir.path()), Vec::<String>::new());
}
