//! Every kind of command against a PostgreSQL database given by `--db postgres://...` or by
//! `ABATHUR_DB`: `init` creates the database, the CLI writes and reads it, `worker` runs its
//! tasks, `mcp` serves it, and `db migrate|status|check` inspect it.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use abathur_postgres::testing::{database_url, drop_database, TestDatabase};

use crate::sandbox::Sandbox;

#[track_caller]
fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn run(s: &Sandbox, url: &str, args: &[&str]) -> Output {
    s.bare()
        .args(["--db", url])
        .args(args)
        .output()
        .expect("abathur runs")
}

#[tokio::test]
async fn every_command_works_on_a_postgres_url() {
    let s = Sandbox::new();
    // A database of its own that does not exist yet: `init` creates it on the server. The
    // guard drops it afterwards.
    let test = TestDatabase::create().await;
    let name = format!("{}_made_by_init", test.name());
    let url = database_url(&name);
    let _made = DropOnExit(name);

    let latest = abathur_postgres::MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .expect("migrations");
    assert!(ok(&run(&s, &url, &["init"])).contains(&format!("schema version: {latest}")));
    let first = ok(&run(
        &s,
        &url,
        &["task", "submit", "first", "--agent-type", "w"],
    ));
    let first = first.trim();
    // ABATHUR_DB names it as well as --db does.
    let second = ok(&s
        .bare()
        .env("ABATHUR_DB", &url)
        .args([
            "task",
            "submit",
            "second",
            "--agent-type",
            "w",
            "--depends-on",
            first,
        ])
        .output()
        .expect("abathur runs"));
    assert!(ok(&run(&s, &url, &["task", "list"])).contains("first"));

    // A worker runs both, in order.
    ok(&run(&s, &url, &["worker", "--once", "--", "true"]));
    for id in [first, second.trim()] {
        let shown = ok(&run(&s, &url, &["--json", "task", "show", id]));
        assert!(shown.contains("\"status\": \"completed\""), "{shown}");
    }

    // The MCP server over stdio serves the same database.
    let mut mcp = Command::new(assert_cmd::cargo::cargo_bin("abathur"))
        .current_dir(s.dir.path())
        .env_remove("ABATHUR_DB")
        .args(["--db", &url, "mcp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("abathur mcp starts");
    let mut stdin = mcp.stdin.take().expect("its stdin");
    let requests = [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"task_enqueue","arguments":{"description":"through mcp"}}}"#,
    ];
    stdin
        .write_all(format!("{}\n", requests.join("\n")).as_bytes())
        .expect("write to mcp");
    drop(stdin);
    let served = mcp
        .wait_with_output()
        .expect("mcp ends when its input does");
    let served = String::from_utf8_lossy(&served.stdout);
    assert!(served.contains(r#""id":2,"result""#), "{served}");
    assert!(ok(&run(&s, &url, &["task", "list"])).contains("through mcp"));

    // The admin commands.
    assert!(ok(&run(&s, &url, &["db", "migrate"])).contains("up to date"));
    let status = ok(&run(&s, &url, &["db", "status"]));
    assert!(status.contains("dead rows"), "{status}");
    assert!(!status.contains("WAL "), "{status}");
    ok(&run(&s, &url, &["db", "check"]));
    // Nothing was written to the sandbox: the database is on the server.
    assert!(!s.dir.path().join(".abathur").exists());
}

/// Drops the database `init` made, however the test ends.
struct DropOnExit(String);

impl Drop for DropOnExit {
    fn drop(&mut self) {
        drop_database(&self.0);
    }
}
