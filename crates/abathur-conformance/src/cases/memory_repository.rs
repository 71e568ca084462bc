//! Versioned memories: one live version per key at most, history kept across updates and
//! deletes, prefix search and count.

use abathur_core::error::DatabaseError;
use abathur_core::models::{Memory, MemoryType, NewMemory};
use serde_json::{json, Value};

use crate::assert_err;
use crate::harness::{db, Harness};

fn memory(namespace: &str, key: &str, value: Value) -> NewMemory {
    NewMemory {
        namespace: namespace.into(),
        key: key.into(),
        value,
        memory_type: MemoryType::Semantic,
        metadata: Some(json!({"source": "test"})),
        created_by: "agent-1".into(),
    }
}

fn versions(memories: &[Memory]) -> Vec<(u32, bool)> {
    memories.iter().map(|m| (m.version, m.is_deleted)).collect()
}

fn keys(memories: &[Memory]) -> Vec<(String, String)> {
    memories
        .iter()
        .map(|m| (m.namespace.clone(), m.key.clone()))
        .collect()
}

/// Every version of a key, to show a refused call changed nothing.
async fn all_versions(h: &Harness, namespace: &str, key: &str) -> Vec<Memory> {
    db(h.ports.memories.list_versions(namespace, key).await)
}

pub async fn adding_a_memory_stores_version_one_stamped_by_the_clock(h: Harness) {
    let added = db(h
        .ports
        .memories
        .add(memory("ns", "k", json!({"a": 1})))
        .await);
    assert_eq!(added.version, 1);
    assert!(!added.is_deleted);
    assert_eq!(added.created_at, h.now());
    assert_eq!(added.updated_at, h.now());
    assert_eq!(added.created_by, "agent-1");
    assert_eq!(added.updated_by, "agent-1");
    let read = db(h.ports.memories.get("ns", "k").await).unwrap();
    assert_eq!(read, added);
    assert_eq!(read.value, json!({"a": 1}));
    assert_eq!(read.metadata, Some(json!({"source": "test"})));
}

pub async fn a_memory_without_metadata_reads_back_without_metadata(h: Harness) {
    let m = NewMemory {
        metadata: None,
        memory_type: MemoryType::Procedural,
        ..memory("ns", "k", json!("how"))
    };
    db(h.ports.memories.add(m).await);
    let read = db(h.ports.memories.get("ns", "k").await).unwrap();
    assert_eq!(read.metadata, None);
    assert_eq!(read.memory_type, MemoryType::Procedural);
}

pub async fn getting_a_key_never_added_is_none(h: Harness) {
    assert_eq!(db(h.ports.memories.get("ns", "nothing").await), None);
    assert_eq!(
        db(h.ports.memories.get_version("ns", "nothing", 1).await),
        None
    );
}

pub async fn adding_a_live_key_again_is_a_unique_violation_and_changes_nothing(h: Harness) {
    db(h.ports.memories.add(memory("ns", "k", json!(1))).await);
    let before = all_versions(&h, "ns", "k").await;
    assert_err!(
        h.ports.memories.add(memory("ns", "k", json!(2))).await,
        DatabaseError::UniqueViolation { .. }
    );
    assert_eq!(all_versions(&h, "ns", "k").await, before);
}

pub async fn an_invalid_memory_is_refused_naming_the_field_and_nothing_is_written(h: Harness) {
    let nested = (0..150).fold(json!(1), |inner, _| json!([inner]));
    let cases = [
        (memory("", "k", json!(1)), "namespace"),
        (memory("ns", "", json!(1)), "key"),
        (
            NewMemory {
                created_by: String::new(),
                ..memory("ns", "k", json!(1))
            },
            "created_by",
        ),
        (memory("ns", "k", nested), "value"),
    ];
    for (m, field) in cases {
        let (ns, key) = (m.namespace.clone(), m.key.clone());
        assert_err!(h.ports.memories.add(m).await, DatabaseError::Validation(e) if e.field == field);
        assert!(all_versions(&h, &ns, &key).await.is_empty());
    }
}

pub async fn updating_adds_the_next_version_keeping_type_metadata_and_author(h: Harness) {
    let first = db(h.ports.memories.add(memory("ns", "k", json!(1))).await);
    h.advance(5);
    let second = db(h
        .ports
        .memories
        .update("ns", "k", json!(2), "agent-2")
        .await);
    assert_eq!(second.version, 2);
    assert_eq!(second.value, json!(2));
    assert_eq!(second.memory_type, first.memory_type);
    assert_eq!(second.metadata, first.metadata);
    assert_eq!(second.created_by, "agent-1");
    assert_eq!(second.updated_by, "agent-2");
    assert_eq!(second.updated_at, h.now());
    assert_eq!(db(h.ports.memories.get("ns", "k").await), Some(second));
}

pub async fn every_version_stays_readable_oldest_first(h: Harness) {
    db(h.ports.memories.add(memory("ns", "k", json!(1))).await);
    db(h.ports.memories.update("ns", "k", json!(2), "a").await);
    db(h.ports.memories.update("ns", "k", json!(3), "a").await);
    let all = all_versions(&h, "ns", "k").await;
    assert_eq!(versions(&all), vec![(1, false), (2, false), (3, false)]);
    let values: Vec<Value> = all.iter().map(|m| m.value.clone()).collect();
    assert_eq!(values, vec![json!(1), json!(2), json!(3)]);
    let second = db(h.ports.memories.get_version("ns", "k", 2).await).unwrap();
    assert_eq!(second.value, json!(2));
    assert_eq!(db(h.ports.memories.get_version("ns", "k", 4).await), None);
    assert_eq!(db(h.ports.memories.get_version("ns", "k", 0).await), None);
}

pub async fn listing_versions_of_a_key_never_added_is_empty(h: Harness) {
    assert!(all_versions(&h, "ns", "nothing").await.is_empty());
}

pub async fn deleting_hides_the_key_but_keeps_every_version_marked_deleted(h: Harness) {
    db(h.ports.memories.add(memory("ns", "k", json!(1))).await);
    db(h.ports.memories.update("ns", "k", json!(2), "a").await);
    db(h.ports.memories.delete("ns", "k").await);
    assert_eq!(db(h.ports.memories.get("ns", "k").await), None);
    assert_eq!(
        versions(&all_versions(&h, "ns", "k").await),
        vec![(1, true), (2, true)]
    );
    let old = db(h.ports.memories.get_version("ns", "k", 1).await).unwrap();
    assert!(old.is_deleted);
}

pub async fn deleting_an_absent_or_deleted_key_is_not_found_and_changes_nothing(h: Harness) {
    assert_err!(
        h.ports.memories.delete("ns", "never").await,
        DatabaseError::NotFound { .. }
    );
    db(h.ports.memories.add(memory("ns", "k", json!(1))).await);
    db(h.ports.memories.delete("ns", "k").await);
    let before = all_versions(&h, "ns", "k").await;
    assert_err!(
        h.ports.memories.delete("ns", "k").await,
        DatabaseError::NotFound { .. }
    );
    assert_eq!(all_versions(&h, "ns", "k").await, before);
}

pub async fn updating_an_absent_or_deleted_key_is_not_found_and_writes_nothing(h: Harness) {
    assert_err!(
        h.ports.memories.update("ns", "never", json!(1), "a").await,
        DatabaseError::NotFound { .. }
    );
    assert!(all_versions(&h, "ns", "never").await.is_empty());
    db(h.ports.memories.add(memory("ns", "k", json!(1))).await);
    db(h.ports.memories.delete("ns", "k").await);
    let before = all_versions(&h, "ns", "k").await;
    assert_err!(
        h.ports.memories.update("ns", "k", json!(2), "a").await,
        DatabaseError::NotFound { .. }
    );
    assert_eq!(all_versions(&h, "ns", "k").await, before);
}

pub async fn an_invalid_update_is_refused_and_writes_nothing(h: Harness) {
    db(h.ports.memories.add(memory("ns", "k", json!(1))).await);
    let before = all_versions(&h, "ns", "k").await;
    assert_err!(
        h.ports.memories.update("ns", "k", json!(2), "").await,
        DatabaseError::Validation(_)
    );
    let nested = (0..150).fold(json!(1), |inner, _| json!({ "x": inner }));
    assert_err!(
        h.ports.memories.update("ns", "k", nested, "a").await,
        DatabaseError::Validation(_)
    );
    assert_eq!(all_versions(&h, "ns", "k").await, before);
}

pub async fn a_deleted_key_added_again_continues_its_version_numbering(h: Harness) {
    db(h.ports.memories.add(memory("ns", "k", json!(1))).await);
    db(h.ports.memories.update("ns", "k", json!(2), "a").await);
    db(h.ports.memories.delete("ns", "k").await);
    let again = db(h.ports.memories.add(memory("ns", "k", json!(3))).await);
    assert_eq!(again.version, 3);
    assert!(!again.is_deleted);
    assert_eq!(db(h.ports.memories.get("ns", "k").await), Some(again));
    assert_eq!(
        versions(&all_versions(&h, "ns", "k").await),
        vec![(1, true), (2, true), (3, false)]
    );
}

pub async fn count_counts_each_live_key_under_the_prefix_once(h: Harness) {
    let m = &h.ports.memories;
    db(m.add(memory("team/a", "k1", json!(1))).await);
    db(m.update("team/a", "k1", json!(2), "b").await);
    db(m.add(memory("team/a", "k2", json!(1))).await);
    db(m.add(memory("team/b", "k1", json!(1))).await);
    db(m.add(memory("team/b", "gone", json!(1))).await);
    db(m.delete("team/b", "gone").await);
    db(m.add(memory("teams", "k1", json!(1))).await);
    db(m.add(memory("other", "k1", json!(1))).await);
    assert_eq!(db(m.count("team/").await), 3);
    assert_eq!(db(m.count("team/a").await), 2);
    assert_eq!(db(m.count("team").await), 4);
    assert_eq!(db(m.count("").await), 5);
    assert_eq!(db(m.count("nobody").await), 0);
}

pub async fn search_gives_each_live_key_at_its_latest_version_by_namespace_then_key(h: Harness) {
    let m = &h.ports.memories;
    db(m.add(memory("team/b", "z", json!(1))).await);
    db(m.add(memory("team/a", "y", json!(1))).await);
    db(m.update("team/a", "y", json!(2), "b").await);
    db(m.add(memory("team/a", "x", json!(1))).await);
    db(m.add(memory("team/a", "gone", json!(1))).await);
    db(m.delete("team/a", "gone").await);
    db(m.add(memory("other", "w", json!(1))).await);
    let found = db(m.search("team/", None, 100).await);
    let want = vec![
        ("team/a".to_string(), "x".to_string()),
        ("team/a".to_string(), "y".to_string()),
        ("team/b".to_string(), "z".to_string()),
    ];
    assert_eq!(keys(&found), want);
    assert_eq!(found[1].version, 2);
    assert_eq!(found[1].value, json!(2));
}

pub async fn searching_with_a_type_gives_only_memories_of_that_type(h: Harness) {
    let m = &h.ports.memories;
    db(m.add(memory("ns", "fact", json!(1))).await);
    db(m.add(NewMemory {
        memory_type: MemoryType::Episodic,
        ..memory("ns", "event", json!(1))
    })
    .await);
    let found = db(m.search("ns", Some(MemoryType::Episodic), 10).await);
    assert_eq!(keys(&found), vec![("ns".to_string(), "event".to_string())]);
}

pub async fn searching_gives_at_most_limit_memories_from_the_start_of_the_order(h: Harness) {
    let m = &h.ports.memories;
    for key in ["d", "b", "a", "c"] {
        db(m.add(memory("ns", key, json!(1))).await);
    }
    let found = db(m.search("ns", None, 2).await);
    assert_eq!(
        keys(&found),
        vec![
            ("ns".to_string(), "a".to_string()),
            ("ns".to_string(), "b".to_string())
        ]
    );
}

pub async fn a_search_limit_outside_one_to_a_page_is_refused(h: Harness) {
    let m = &h.ports.memories;
    assert_err!(m.search("ns", None, 0).await, DatabaseError::Validation(_));
    assert_err!(
        m.search("ns", None, abathur_core::limits::MAX_PAGE as usize + 1)
            .await,
        DatabaseError::Validation(_)
    );
}

pub async fn percent_and_underscore_in_a_prefix_match_only_themselves(h: Harness) {
    let m = &h.ports.memories;
    db(m.add(memory("a%b", "k", json!(1))).await);
    db(m.add(memory("axb", "k", json!(1))).await);
    db(m.add(memory("a_c", "k", json!(1))).await);
    db(m.add(memory("ayc", "k", json!(1))).await);
    assert_eq!(
        keys(&db(m.search("a%", None, 10).await)),
        vec![("a%b".to_string(), "k".to_string())]
    );
    assert_eq!(
        keys(&db(m.search("a_", None, 10).await)),
        vec![("a_c".to_string(), "k".to_string())]
    );
    assert_eq!(db(m.count("a%").await), 1);
    assert_eq!(db(m.count("a_").await), 1);
}

pub async fn a_prefix_of_non_ascii_characters_matches(h: Harness) {
    let m = &h.ports.memories;
    db(m.add(memory("équipe/ü", "k", json!(1))).await);
    db(m.add(memory("équipe/z", "k", json!(1))).await);
    db(m.add(memory("équipf", "k", json!(1))).await);
    assert_eq!(db(m.search("équipe/", None, 10).await).len(), 2);
    assert_eq!(db(m.count("équipe").await), 2);
    assert_eq!(db(m.count("é").await), 3);
}

pub async fn namespaces_keep_their_keys_apart(h: Harness) {
    let m = &h.ports.memories;
    db(m.add(memory("a", "k", json!("in a"))).await);
    db(m.add(memory("b", "k", json!("in b"))).await);
    db(m.delete("a", "k").await);
    assert_eq!(db(m.get("a", "k").await), None);
    assert_eq!(db(m.get("b", "k").await).unwrap().value, json!("in b"));
}

pub async fn a_value_or_metadata_over_its_size_limit_is_refused(h: Harness) {
    let big = json!("x".repeat(abathur_core::limits::MAX_MEMORY_VALUE_BYTES + 1));
    assert_err!(
        h.ports.memories.add(memory("ns", "big", big)).await,
        DatabaseError::Validation(e) if e.field == "value"
    );
    let meta = NewMemory {
        metadata: Some(json!(
            "m".repeat(abathur_core::limits::MAX_METADATA_BYTES + 1)
        )),
        ..memory("ns", "meta", json!(1))
    };
    assert_err!(
        h.ports.memories.add(meta).await,
        DatabaseError::Validation(e) if e.field == "metadata"
    );
    assert_eq!(db(h.ports.memories.count("ns").await), 0);
}
