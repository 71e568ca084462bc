//! The PostgreSQL baseline runs the adapter's own statements. The adapter keeps them inside
//! sqlx's checked macros, so `abathur_bench::pg::raw` holds copies; this test fails when the
//! adapter's source no longer contains one of them (whitespace normalised), so that a change of
//! the adapter's SQL cannot leave the baseline measuring something else.

use std::path::{Path, PathBuf};

use abathur_bench::pg::raw::STATEMENTS;

/// `text` with each run of whitespace made one space, and Rust's line continuations (a
/// backslash before a line break, in a string that is not raw) taken out.
fn normalise(text: &str) -> String {
    text.replace("\\\r\n", " ")
        .replace("\\\n", " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn sources(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).expect("the adapter's source folder is readable") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("a source file is readable");
            out.push((path, normalise(&text)));
        }
    }
}

#[test]
fn the_baseline_runs_statements_the_adapter_still_holds() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../abathur-postgres/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(!files.is_empty(), "no source found in {}", src.display());
    let mut missing = Vec::new();
    for (name, sql) in STATEMENTS {
        let wanted = normalise(sql);
        if !files.iter().any(|(_, text)| text.contains(&wanted)) {
            missing.push(format!("{name}: {wanted}"));
        }
    }
    assert!(
        missing.is_empty(),
        "the adapter no longer holds these statements of the baseline \
         (crates/abathur-bench/src/pg/raw.rs): copy them again from the adapter:\n{}",
        missing.join("\n")
    );
}

#[test]
fn whitespace_and_line_continuations_do_not_count() {
    assert_eq!(
        normalise("SELECT a,\n      b  FROM t"),
        "SELECT a, b FROM t"
    );
    assert_eq!(
        normalise("SELECT a, \\\n     b FROM t"),
        "SELECT a, b FROM t"
    );
}
