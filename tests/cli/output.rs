//! Colour only on a terminal and never with NO_COLOR; shell completions.

use crate::sandbox::Sandbox;

const ESC: char = '\u{1b}';

fn run(s: &Sandbox, env: &[(&str, &str)], args: &[&str]) -> (String, String) {
    let mut cmd = s.abathur();
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = cmd.args(args).output().unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn colour_is_stripped_off_a_pipe_and_kept_when_forced() {
    let s = Sandbox::new();
    let id = s.submit(&["colourful"]);
    let (piped, _) = run(&s, &[], &["task", "list"]);
    assert!(!piped.contains(ESC), "{piped:?}");
    let (forced, _) = run(&s, &[("CLICOLOR_FORCE", "1")], &["task", "list"]);
    assert!(forced.contains(ESC), "{forced:?}");
    // Without the styles the text is the same.
    let stripped: String = anstream::adapter::strip_str(&forced).to_string();
    assert_eq!(stripped, piped);
    let (tree, _) = run(&s, &[("CLICOLOR_FORCE", "1")], &["task", "tree", &id]);
    assert!(tree.contains(ESC), "{tree:?}");
}

#[test]
fn no_color_wins_over_everything_and_json_is_never_styled() {
    let s = Sandbox::new();
    s.submit(&["plain"]);
    let both = [("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")];
    let (out, _) = run(&s, &both, &["task", "list"]);
    assert!(!out.contains(ESC), "{out:?}");
    let (_, err) = run(&s, &both, &["task", "show", "ffff"]);
    assert_eq!(err, "error: no task id starts with ffff\n");
    let (json, _) = run(&s, &[("CLICOLOR_FORCE", "1")], &["--json", "task", "list"]);
    assert!(!json.contains(ESC), "{json:?}");
    let (_, err) = run(&s, &[("CLICOLOR_FORCE", "1")], &["task", "show", "ffff"]);
    assert!(
        err.contains(ESC) && err.contains("no task id starts with ffff"),
        "{err:?}"
    );
}

#[test]
fn completions_come_from_the_grammar_and_touch_no_database() {
    let s = Sandbox::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = s.ok(&["completions", shell]);
        assert!(
            script.contains("abathur") && script.contains("claim"),
            "{shell}"
        );
    }
    assert!(!s.db_path().exists());
    s.fails(&["completions", "tcsh"], 2);
}
