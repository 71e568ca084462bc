//! The README's main command, run as written (against the sandbox's database): the example
//! pipeline imported and run by a worker.

use crate::sandbox::Sandbox;

#[test]
fn the_example_pipeline_runs_to_completion_under_a_worker() {
    let s = Sandbox::new();
    let repo = env!("CARGO_MANIFEST_DIR");
    let run = |args: &[&str]| {
        let out = s
            .abathur()
            .current_dir(repo)
            .args(args)
            .output()
            .expect("abathur runs");
        assert!(
            out.status.success(),
            "abathur {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["task", "import", "examples/pipeline.jsonl"]);
    run(&[
        "worker",
        "--once",
        "--concurrency",
        "2",
        "--",
        "sh",
        "examples/step.sh",
    ]);
    let tasks: serde_json::Value = serde_json::from_str(&run(&["--json", "task", "list"])).unwrap();
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), 4);
    for task in tasks {
        assert_eq!(task["status"], "completed", "{task}");
    }
    let report = tasks
        .iter()
        .find(|t| t["summary"] == "Report that the census is done")
        .unwrap();
    assert_eq!(report["result_data"], serde_json::json!({"census": "done"}));
    let files = tasks
        .iter()
        .find(|t| t["summary"] == "Count the Rust source files")
        .unwrap();
    assert!(files["result_data"].as_u64().unwrap() > 10, "{files}");
}
