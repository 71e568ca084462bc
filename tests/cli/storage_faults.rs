//! Faults of the storage under the database: a full disk, a read-only file or filesystem, a
//! damaged file. Each names its cause with a documented exit code and leaves the file as it
//! was. Regression tests for issue 10, items 7 and 8 ("the database failed unexpectedly", a
//! partial backup that passed for an empty database, `db check` that tried to migrate).

use std::path::Path;
use std::process::Output;

use crate::mounts::{bytes, fill, names, Mount};
use crate::sandbox::Sandbox;

/// `abathur --db <db> <args>` in the sandbox.
#[track_caller]
fn at(s: &Sandbox, db: &Path, args: &[&str]) -> Output {
    s.bare()
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .expect("abathur runs")
}

/// Asserts `output` failed with `code` and one `error:` line containing `expected`.
#[track_caller]
fn failed(output: &Output, code: i32, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
    assert!(!stderr.contains("unexpectedly"), "{stderr}");
    assert!(!stderr.contains("migrate"), "{stderr}");
}

/// A database with one task of a long description, so a backup of it needs more than 64 KB.
#[track_caller]
fn database_with_a_task(s: &Sandbox) -> String {
    s.submit(&[&"a long description ".repeat(5_000)])
}

#[test]
fn a_backup_onto_a_full_disk_says_so_leaves_no_file_and_can_be_tried_again() {
    let s = Sandbox::new();
    let id = database_with_a_task(&s);
    let disk = s.dir.path().join("disk");
    let mount = Mount::tmpfs(&disk, "64k");
    let target = disk.join("backup.db");
    let target_text = target.to_str().unwrap();

    for _ in 0..2 {
        let output = s
            .abathur()
            .args(["db", "backup", target_text])
            .output()
            .unwrap();
        failed(&output, 7, "the disk is full");
        // Neither the copy nor a partial file under another name is left behind.
        assert_eq!(names(&disk), Vec::<String>::new());
    }

    mount.resize("4m");
    s.ok(&["db", "backup", target_text]);
    assert_eq!(names(&disk), vec!["backup.db".to_string()]);
    let copy = at(&s, &target, &["--json", "task", "show", &id]);
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
}

#[test]
fn a_write_on_a_full_disk_says_the_disk_is_full_and_keeps_what_was_stored() {
    let s = Sandbox::new();
    let disk = s.dir.path().join("disk");
    let _mount = Mount::tmpfs(&disk, "1m");
    let db = disk.join("abathur.db");
    assert!(at(&s, &db, &["task", "submit", "kept"]).status.success());
    let before = bytes(&db);
    fill(&disk.join("filler"));

    let output = at(&s, &db, &["task", "submit", &"x".repeat(20_000)]);
    failed(&output, 7, "the disk is full");

    std::fs::remove_file(disk.join("filler")).unwrap();
    let list = at(&s, &db, &["--json", "task", "list"]);
    let tasks: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(tasks.as_array().unwrap().len(), 1, "{tasks}");
    assert_eq!(tasks[0]["summary"], "kept");
    assert_eq!(bytes(&db), before, "the file is as it was");
}

#[test]
fn a_write_to_a_read_only_file_as_another_user_is_refused_as_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let s = Sandbox::new();
    s.submit(&["kept"]);
    let db = s.db_path();
    // The other user must reach the file and may write the folder (for SQLite's -shm file):
    // only the file itself is read-only.
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = bytes(&db);

    // Root ignores 0444: the command runs as nobody.
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_abathur"))
            .arg("--db")
            .arg(&db)
            .args(args)
            .current_dir(s.dir.path())
            .output()
            .expect("setpriv runs (util-linux); the test needs it to drop root")
    };
    let output = as_nobody(&["task", "submit", "refused"]);
    failed(&output, 7, "read-only");
    let list = as_nobody(&["task", "list"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(String::from_utf8_lossy(&list.stdout).contains("kept"));
    assert_eq!(bytes(&db), before);
}

#[test]
fn a_write_on_a_read_only_filesystem_is_refused_as_read_only_and_reads_still_work() {
    let s = Sandbox::new();
    let folder = s.dir.path().join("ro");
    std::fs::create_dir(&folder).unwrap();
    let db = folder.join("abathur.db");
    assert!(at(&s, &db, &["task", "submit", "kept"]).status.success());
    let before = names(&folder);
    let content = bytes(&db);
    let _mount = Mount::read_only(&folder);

    failed(&at(&s, &db, &["task", "submit", "refused"]), 7, "read-only");
    failed(&at(&s, &db, &["reap"]), 7, "read-only");
    let list = at(&s, &db, &["task", "list"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(String::from_utf8_lossy(&list.stdout).contains("kept"));
    assert!(at(&s, &db, &["db", "check"]).status.success());
    assert_eq!(names(&folder), before);
    assert_eq!(bytes(&db), content);
}

#[test]
fn the_worker_on_a_read_only_filesystem_says_so() {
    let s = Sandbox::new();
    let folder = s.dir.path().join("ro");
    std::fs::create_dir(&folder).unwrap();
    let db = folder.join("abathur.db");
    assert!(at(&s, &db, &["task", "submit", "kept"]).status.success());
    let content = bytes(&db);
    let _mount = Mount::read_only(&folder);
    let output = at(&s, &db, &["worker", "--once", "--", "true"]);
    failed(&output, 7, "read-only");
    assert_eq!(bytes(&db), content);
}

/// Overwrites four pages in the middle of `db` with bytes that are no page SQLite wrote (the
/// same every run).
#[track_caller]
fn damage(db: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    file.seek(SeekFrom::Start(8 * 4096)).unwrap();
    let mut state: u32 = 0x2545_f491;
    let noise: Vec<u8> = (0..4 * 4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    file.write_all(&noise).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn check_of_a_damaged_file_says_corrupt_migrates_nothing_and_changes_nothing() {
    let s = Sandbox::new();
    database_with_a_task(&s);
    damage(&s.db_path());
    let before = bytes(&s.db_path());
    let files = names(s.dir.path());

    let output = s.abathur().args(["db", "check"]).output().unwrap();
    failed(&output, 6, "corrupt");
    let output = s.abathur().args(["task", "list"]).output().unwrap();
    failed(&output, 6, "corrupt");

    assert_eq!(bytes(&s.db_path()), before);
    assert_eq!(names(s.dir.path()), files);
}

#[test]
fn a_file_of_other_bytes_is_named_not_a_database_by_reads_writes_and_checks() {
    let s = Sandbox::new();
    std::fs::write(s.db_path(), "just text, no database\n".repeat(300)).unwrap();
    let before = bytes(&s.db_path());
    for args in [
        &["db", "check"][..],
        &["task", "list"],
        &["task", "submit", "x"],
        &["init"],
    ] {
        let output = s.abathur().args(args).output().unwrap();
        failed(&output, 6, "not a SQLite database");
    }
    assert_eq!(bytes(&s.db_path()), before);
    assert_eq!(names(s.dir.path()), vec!["abathur.db".to_string()]);
}
