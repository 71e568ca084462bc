//! `abathur task list | head -1`: a reader that stops early is not an error.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use abathur::domain::models::Task;
use abathur::domain::ports::TaskRepository;
use abathur::infrastructure::database::{DatabaseConfig, DatabaseConnection, TaskRepositoryImpl};
use chrono::Utc;

use crate::sandbox::Sandbox;

/// Enough rows that the listing is far bigger than a pipe's buffer (64 KiB on Linux), so the
/// command is still writing when the reader goes away.
const TASKS: usize = 3_000;

#[test]
fn closing_stdout_early_is_not_an_error() {
    let sandbox = Sandbox::new();
    sandbox.ok(&["init"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let db = DatabaseConnection::open_path(&sandbox.db_path(), DatabaseConfig::default())
            .await
            .unwrap();
        let now = Utc::now();
        let tasks = (0..TASKS)
            .map(|i| {
                Task::new(
                    format!("task number {i} with a summary long enough to fill the pipe"),
                    "",
                    "generic",
                    now,
                )
            })
            .collect();
        TaskRepositoryImpl::new(db.pool().clone())
            .insert_batch(tasks)
            .await
            .unwrap();
        db.close().await;
    });

    let mut child = Command::new(env!("CARGO_BIN_EXE_abathur"))
        .arg("--db")
        .arg(sandbox.db_path())
        .args(["task", "list"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut header = String::new();
    reader.read_line(&mut header).unwrap();
    assert!(header.starts_with("ID"), "{header}");
    drop(reader);

    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
