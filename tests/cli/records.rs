//! The memory, session and agent commands.

use serde_json::json;

use crate::sandbox::Sandbox;

const UNKNOWN_ID: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";

#[test]
fn memories_are_added_versioned_searched_and_deleted() {
    let s = Sandbox::new();
    let added = s.json(&["memory", "add", "proj/auth", "flow", r#"{"steps": 3}"#]);
    assert_eq!(added["version"], 1);
    assert_eq!(added["memory_type"], "semantic");
    let updated = s.json(&[
        "memory",
        "update",
        "proj/auth",
        "flow",
        "use OAuth",
        "--text",
        "--by",
        "coder",
    ]);
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["value"], "use OAuth");
    assert_eq!(updated["updated_by"], "coder");

    assert_eq!(
        s.json(&["memory", "get", "proj/auth", "flow"])["version"],
        2
    );
    let first = s.json(&["memory", "get", "proj/auth", "flow", "--version", "1"]);
    assert_eq!(first["value"], json!({"steps": 3}));
    let history = s.json(&["memory", "history", "proj/auth", "flow"]);
    assert_eq!(history.as_array().unwrap().len(), 2);

    s.json(&[
        "memory",
        "add",
        "proj/db",
        "pool",
        "5",
        "--type",
        "procedural",
    ]);
    s.json(&["memory", "add", "other", "x", "true"]);
    let found = s.json(&["memory", "search", "proj/"]);
    assert_eq!(found.as_array().unwrap().len(), 2);
    let procedural = s.json(&["memory", "search", "proj/", "--type", "procedural"]);
    assert_eq!(procedural.as_array().unwrap().len(), 1);
    assert_eq!(procedural[0]["key"], "pool");
    let human = s.ok(&["memory", "search", "proj/auth"]);
    assert!(human.contains("[proj/auth] flow  version 2"), "{human}");

    s.ok(&["memory", "delete", "proj/auth", "flow"]);
    s.fails(&["memory", "get", "proj/auth", "flow"], 3);
    // History is kept after a delete.
    assert_eq!(
        s.json(&["memory", "history", "proj/auth", "flow"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn bad_memory_input_is_refused_and_changes_nothing() {
    let s = Sandbox::new();
    s.json(&["memory", "add", "ns", "k", "1"]);
    let stderr = s.fails(&["memory", "add", "ns", "other", "not json"], 4);
    assert!(stderr.contains("JSON"), "{stderr}");
    s.fails(&["memory", "add", "ns", "k", "2"], 5);
    s.fails(&["memory", "add", "ns", "t", "1", "--type", "gossip"], 2);
    s.fails(&["memory", "update", "ns", "missing", "1"], 3);
    s.fails(&["memory", "get", "ns", "k", "--version", "9"], 3);
    s.fails(&["memory", "history", "ns", "missing"], 3);
    s.fails(&["memory", "add", "ns", "v", "@/no/such/file"], 4);
    let all = s.json(&["memory", "search", "ns"]);
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(all[0]["value"], 1);
}

#[test]
fn a_value_can_come_from_a_file() {
    let s = Sandbox::new();
    let file = s.dir.path().join("value.json");
    std::fs::write(&file, r#"{"from": "file"}"#).unwrap();
    let arg = format!("@{}", file.display());
    let added = s.json(&["memory", "add", "ns", "k", &arg]);
    assert_eq!(added["value"], json!({"from": "file"}));
}

#[test]
fn sessions_log_events_and_keep_state() {
    let s = Sandbox::new();
    let id = s.ok(&["session", "create", "--app", "cli", "--user", "ana"]);
    let id = id.trim();
    let event = s.json(&[
        "session",
        "append",
        &id[..6],
        "--type",
        "message",
        "--content",
        r#"{"text": "hi"}"#,
    ]);
    assert_eq!(event["sequence"], 1);
    s.json(&[
        "session",
        "append",
        id,
        "--type",
        "tool_call",
        "--actor",
        "coder",
    ]);
    let events = s.json(&["session", "events", id]);
    assert_eq!(events.as_array().unwrap().len(), 2);
    assert_eq!(events[1]["actor"], "coder");
    assert_eq!(
        s.json(&["session", "events", id, "--offset", "1"])[0]["sequence"],
        2
    );

    s.ok(&["session", "state", "set", id, "mood", r#""good""#]);
    assert_eq!(s.json(&["session", "state", "get", id, "mood"]), "good");
    let session = s.json(&["session", "show", id]);
    assert_eq!(session["state"], json!({"mood": "good"}));
    assert_eq!(session["user_id"], "ana");

    s.fails(&["session", "state", "get", id, "missing"], 3);
    s.fails(&["session", "show", UNKNOWN_ID], 3);
    s.fails(&["session", "events", UNKNOWN_ID], 3);
    s.fails(&["session", "append", UNKNOWN_ID, "--type", "x"], 3);
    s.fails(&["session", "state", "set", id, "mood", "not json"], 4);
    assert_eq!(s.json(&["session", "state", "get", id, "mood"]), "good");
}

#[test]
fn agents_register_beat_and_go_stale() {
    let s = Sandbox::new();
    let id = s.ok(&["agent", "register", "--type", "coder"]);
    let id = id.trim();
    let agents = s.json(&["agent", "list"]);
    assert_eq!(agents[0]["id"], id);
    assert_eq!(agents[0]["status"], "idle");
    assert_eq!(s.json(&["agent", "list", "--status", "busy"]), json!([]));
    s.ok(&["agent", "heartbeat", &id[..8]]);
    assert_eq!(s.json(&["agent", "stale", "--older-than", "1h"]), json!([]));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let stale = s.json(&["agent", "stale", "--older-than", "10ms"]);
    assert_eq!(stale[0]["id"], id);
    s.fails(&["agent", "heartbeat", UNKNOWN_ID], 3);
    s.fails(&["agent", "list", "--status", "sleepy"], 2);
    s.fails(&["agent", "stale", "--older-than", "0"], 4);
}
