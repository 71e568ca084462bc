//! `task tree`: dependencies and dependents as indented trees.

use crate::sandbox::Sandbox;

#[test]
fn the_tree_shows_both_directions_and_each_task_once() {
    let s = Sandbox::new();
    let a = s.submit(&["A"]);
    let b = s.submit(&["B", "--depends-on", &a]);
    let c = s.submit(&["C", "--depends-on", &a]);
    let d = s.submit(&["D", "--depends-on", &b, "--depends-on", &c]);
    let e = s.submit(&["E", "--depends-on", &d]);

    let human = s.ok(&["task", "tree", &d[..8]]);
    let expected = format!(
        "{}  blocked    D\n\
         waits for:\n  \
         ├── {}  blocked    B\n  \
         │   └── {}  ready      A\n  \
         └── {}  blocked    C\n      \
         └── {}  ready      A  (shown above)\n\
         needed by:\n  \
         └── {}  blocked    E\n",
        &d[..8],
        &b[..8],
        &a[..8],
        &c[..8],
        &a[..8],
        &e[..8]
    );
    assert_eq!(human, expected);

    let tree = s.json(&["task", "tree", &a]);
    assert_eq!(tree["dependencies"], serde_json::json!([]));
    let dependents = tree["dependents"].as_array().unwrap();
    assert_eq!(dependents.len(), 2);
    assert_eq!(dependents[0]["children"][0]["id"], d.as_str());
    assert_eq!(dependents[1]["children"][0]["shown_above"], true);
}

#[test]
fn the_tree_of_an_unknown_task_is_not_found() {
    let s = Sandbox::new();
    s.ok(&["init"]);
    s.fails(&["task", "tree", "67e55044-10b1-426f-9247-bb680e5fe0c8"], 3);
}
