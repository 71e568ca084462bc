//! The catalogue of the statements run through `rusqlite`: every one is a named constant,
//! listed in its module's `STATEMENTS`, and prepared here against the migrated schema, so
//! that no statement reaches production unchecked. A second test reads the crate's sources
//! and refuses a `rusqlite` call that takes its SQL as an inline literal, which would escape
//! the catalogue.

use std::path::Path;

/// Every module's statements. A module that runs statements through `rusqlite` adds its list
/// here.
const MODULES: &[(&str, &[(&str, &str)])] = &[
    ("writer", super::writer::STATEMENTS),
    ("group_commit", super::group_commit::STATEMENTS),
    ("queue_store", super::queue_store::STATEMENTS),
    ("claim", super::claim::STATEMENTS),
    ("task_repo", super::task_repo::STATEMENTS),
    ("memory_repo", super::memory_repo::STATEMENTS),
    ("session_repo", super::session_repo::STATEMENTS),
    ("agent_repo", super::agent_repo::STATEMENTS),
];

/// The `rusqlite` methods that take SQL text as their first argument.
const TAKES_SQL: &[&str] = &[
    "prepare",
    "prepare_cached",
    "execute",
    "execute_batch",
    "query_row",
    "query",
];

#[tokio::test]
async fn every_catalogued_statement_prepares_against_the_migrated_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalogue.db");
    let db = super::DatabaseConnection::open_path(&path, super::DatabaseConfig::default())
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut failures = Vec::new();
    let mut prepared = 0;
    for (module, statements) in MODULES {
        for (name, sql) in *statements {
            match conn.prepare(sql) {
                Ok(_) => prepared += 1,
                Err(e) => failures.push(format!("{module}::{name}: {e}")),
            }
        }
    }
    drop(conn);
    db.close().await;
    assert!(
        failures.is_empty(),
        "statements that do not prepare:\n{}",
        failures.join("\n")
    );
    assert!(prepared > 0);
}

#[test]
fn every_catalogued_statement_has_a_unique_name_in_its_module() {
    for (module, statements) in MODULES {
        let mut names: Vec<&str> = statements.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "{module} lists a name twice");
    }
}

#[test]
fn no_rusqlite_call_takes_its_sql_as_an_inline_literal() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // A module's unit tests set up their own rows; production code ends where they begin.
        let production = text
            .find("\n#[cfg(test)]\nmod tests")
            .map_or(text.as_str(), |end| &text[..end]);
        for (line, call) in inline_sql_calls(production) {
            found.push(format!("{name}:{line}: .{call}(\"...\")"));
        }
    }
    assert!(
        found.is_empty(),
        "rusqlite calls with inline SQL (name it as a constant and list it in STATEMENTS):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scan_finds_an_inline_literal_and_passes_a_constant() {
    let dot = '.';
    let quote = '"';
    let inline = format!("conn{dot}prepare_cached(\n    {quote}SELECT 1{quote})");
    let raw = format!("conn{dot}execute(r#{quote}DELETE FROM t{quote}#, [])");
    let named = format!("conn{dot}prepare_cached(SELECT_ONE)");
    assert_eq!(inline_sql_calls(&inline), vec![(1, "prepare_cached")]);
    assert_eq!(inline_sql_calls(&raw), vec![(1, "execute")]);
    assert!(inline_sql_calls(&named).is_empty());
}

/// The method calls in `text` from [`TAKES_SQL`] whose first argument is a string literal:
/// their line and method.
fn inline_sql_calls(text: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    for method in TAKES_SQL {
        let call = format!(".{method}(");
        let mut from = 0;
        while let Some(at) = text[from..].find(&call) {
            let start = from + at;
            let argument = text[start + call.len()..].trim_start();
            if argument.starts_with('"')
                || argument.starts_with("r#")
                || argument.starts_with("r\"")
            {
                found.push((text[..start].matches('\n').count() + 1, *method));
            }
            from = start + call.len();
        }
    }
    found.sort_unstable();
    found
}
