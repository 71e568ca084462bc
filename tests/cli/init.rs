//! `abathur init` and where the database goes.

use predicates::prelude::*;

use crate::sandbox::{latest_schema_version, Sandbox};

#[test]
fn init_creates_the_database_under_dot_abathur_in_the_current_directory() {
    let sandbox = Sandbox::new();
    sandbox
        .bare()
        .arg("init")
        .assert()
        .success()
        .stdout(predicate::str::contains(".abathur/abathur.db"))
        .stdout(predicate::str::contains(format!(
            "schema version: {}",
            latest_schema_version()
        )));
    assert!(sandbox.dir.path().join(".abathur/abathur.db").is_file());
}

#[test]
fn the_abathur_db_variable_moves_the_database() {
    let sandbox = Sandbox::new();
    let path = sandbox.dir.path().join("elsewhere/queue.db");
    sandbox
        .bare()
        .env("ABATHUR_DB", &path)
        .arg("init")
        .assert()
        .success()
        .stdout(predicate::str::contains("elsewhere/queue.db"));
    assert!(path.is_file());
    assert!(!sandbox.dir.path().join(".abathur").exists());
}

#[test]
fn the_db_option_wins_over_the_abathur_db_variable() {
    let sandbox = Sandbox::new();
    let from_env = sandbox.dir.path().join("from-env.db");
    sandbox
        .abathur()
        .env("ABATHUR_DB", &from_env)
        .arg("init")
        .assert()
        .success();
    assert!(sandbox.db_path().is_file());
    assert!(!from_env.exists());
}

#[test]
fn a_command_that_writes_creates_and_migrates_a_missing_database() {
    let sandbox = Sandbox::new();
    sandbox.submit(&["first"]);
    assert!(sandbox.db_path().is_file());
    assert_eq!(sandbox.tasks().len(), 1);
}

#[test]
fn init_twice_is_harmless() {
    let sandbox = Sandbox::new();
    let first = sandbox.ok(&["init"]);
    let second = sandbox.ok(&["init"]);
    assert_eq!(first, second);
}
