//! `abathur prune`: removes old finished tasks of the asked statuses with their history,
//! leaves everything else, and refuses bad values with nothing removed.

use crate::sandbox::Sandbox;

/// Claims the one ready task as `w`; its attempt id.
#[track_caller]
fn claim_attempt(s: &Sandbox) -> String {
    let claimed = s.json(&["task", "claim", "--worker", "w"]);
    claimed[0]["lease"]["attempt_id"]
        .as_str()
        .unwrap_or_else(|| panic!("nothing claimed: {claimed}"))
        .to_string()
}

#[test]
fn prune_removes_old_finished_tasks_of_the_asked_statuses_and_nothing_else() {
    let s = Sandbox::new();
    let completed = s.submit(&["completed"]);
    let attempt = claim_attempt(&s);
    s.ok(&["task", "complete", &attempt]);
    let failed = s.submit(&["failed", "--max-retries", "0"]);
    let attempt = claim_attempt(&s);
    s.ok(&["task", "fail", &attempt, "--error", "broken"]);
    let cancelled = s.submit(&["cancelled"]);
    s.ok(&["task", "cancel", &cancelled]);
    let running = s.submit(&["running"]);
    claim_attempt(&s);
    let blocked = s.submit(&["blocked", "--depends-on", &running]);
    let ready = s.submit(&["ready"]);

    // Nothing finished a day ago.
    assert_eq!(s.ok(&["prune", "--older-than", "1d"]), "nothing to prune\n");
    assert_eq!(s.tasks().len(), 6);

    let report = s.json(&["prune", "--older-than", "1ms", "--status", "completed"]);
    assert_eq!(report["tasks"], 1, "{report}");
    s.fails(&["task", "show", &completed], 3);
    s.fails(&["task", "history", &completed], 3);

    assert_eq!(
        s.ok(&[
            "prune",
            "--older-than",
            "1ms",
            "--status",
            "failed",
            "--status",
            "cancelled"
        ]),
        "pruned 2 finished tasks with their attempts and events\n"
    );
    let mut left: Vec<String> = s
        .tasks()
        .iter()
        .map(|t| {
            format!(
                "{} {}",
                t["id"].as_str().unwrap(),
                t["status"].as_str().unwrap()
            )
        })
        .collect();
    left.sort();
    let mut expected = vec![
        format!("{running} running"),
        format!("{blocked} blocked"),
        format!("{ready} ready"),
    ];
    expected.sort();
    assert_eq!(left, expected);
    s.fails(&["task", "show", &failed], 3);
}

#[test]
fn bad_prune_values_are_refused_with_nothing_removed() {
    let s = Sandbox::new();
    let done = s.submit(&["done"]);
    let attempt = claim_attempt(&s);
    s.ok(&["task", "complete", &attempt]);
    let before = s.json(&["task", "history", &done]);

    s.fails(&["prune"], 2);
    // Malformed is a usage error; zero or negative is out of range, as for every duration.
    for bad in ["soon", "5 parsecs", ""] {
        s.fails(&["prune", "--older-than", bad], 2);
    }
    for bad in ["0", "0s", "-1h"] {
        s.fails(&["prune", "--older-than", bad], 4);
    }
    for status in ["running", "ready", "blocked", "done"] {
        s.fails(&["prune", "--older-than", "1ms", "--status", status], 2);
    }
    let far = s.fails(&["prune", "--older-than", "300000y"], 4);
    assert!(far.contains("older_than"), "{far}");

    assert_eq!(s.json(&["task", "history", &done]), before);
}

#[test]
fn db_status_shows_the_sizes_of_the_file_its_wal_free_pages_and_tables() {
    let s = Sandbox::new();
    s.submit(&["a task"]);
    let status = s.json(&["db", "status"]);
    let storage = &status["storage"];
    assert!(storage["file_bytes"].as_u64().unwrap() > 0, "{status}");
    assert!(storage["page_size"].as_u64().unwrap() > 0);
    assert!(storage["free_pages"].is_u64());
    assert!(
        storage["tables"]["tasks"].as_u64().unwrap() > 0,
        "{storage}"
    );
    let human = s.ok(&["db", "status"]);
    assert!(human.contains("\nstorage:\n  file "), "{human}");
    assert!(
        human.contains("bytes per table, indexes included:"),
        "{human}"
    );
}
