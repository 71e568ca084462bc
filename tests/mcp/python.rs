//! The official MCP Python SDK drives the server: `python_client.py`, run with the interpreter
//! named by `ABATHUR_MCP_PYTHON` (`.ci/run` installs the SDK into a venv and sets it).

use std::path::Path;
use std::time::Duration;

use crate::client::Store;

/// Where `.ci/run` puts the interpreter of the venv that has the `mcp` package.
const PYTHON_VAR: &str = "ABATHUR_MCP_PYTHON";

#[tokio::test]
async fn the_official_python_sdk_runs_a_dag_reads_memory_and_sees_tool_errors() {
    let Some(python) = std::env::var_os(PYTHON_VAR).filter(|p| !p.is_empty()) else {
        // `.ci/run` asks for it: there a missing interpreter is a failure, not a skip.
        assert!(
            std::env::var_os("ABATHUR_REQUIRE_MCP_PYTHON").is_none(),
            "ABATHUR_REQUIRE_MCP_PYTHON is set but {PYTHON_VAR} is not: the SDK test cannot run"
        );
        eprintln!(
            "SKIPPED: {PYTHON_VAR} is not set, so the MCP Python SDK test did not run. `.ci/run` \
             sets it after installing the `mcp` package into a venv; to run it by hand: \
             python3 -m venv target/mcp-venv && target/mcp-venv/bin/pip install mcp==2.3.0 && \
             {PYTHON_VAR}=target/mcp-venv/bin/python cargo test --test mcp python"
        );
        return;
    };
    let store = Store::new();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/python_client.py");
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_abathur"))
        .arg(store.db_path())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the Python client finishes in time")
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&python).display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python client failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the client's summary is not JSON ({e}): {stdout}"));
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["tools"], 20);
}
