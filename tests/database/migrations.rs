//! The schema's migrations: they apply, revert all the way and apply again, and a committed
//! migration can never be edited.

use abathur::infrastructure::database::MIGRATOR;
use sqlx::SqlitePool;

async fn tables(pool: &SqlitePool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT name FROM sqlite_schema
         WHERE type IN ('table', 'index', 'trigger') AND name NOT LIKE 'sqlite_%'
           AND name <> '_sqlx_migrations'
         ORDER BY name",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn migrations_go_up_all_the_way_down_and_up_again() {
    let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
    MIGRATOR.run(&pool).await.unwrap();
    let schema = tables(&pool).await;
    for expected in [
        "tasks",
        "task_dependencies",
        "sessions",
        "session_events",
        "agents",
        "memories",
        "audit",
        "idx_tasks_ready",
    ] {
        assert!(
            schema.iter().any(|t| t == expected),
            "{expected} missing from {schema:?}"
        );
    }
    MIGRATOR.undo(&pool, 0).await.unwrap();
    assert_eq!(tables(&pool).await, Vec::<String>::new());
    MIGRATOR.run(&pool).await.unwrap();
    assert_eq!(tables(&pool).await, schema);
}

/// Every committed migration, with the SHA-384 of its text. A migration is never edited once
/// committed: change the schema with a new migration instead. If this test fails, undo the
/// edit; only a new migration adds a line here.
const PINNED: &[(i64, &str, &str)] = &[
    (
        1,
        "up",
        "f94ca965df050ed96230e14f4f641310ffdcfe98b0d1ec54817ffefc9c8edba90ddc44f683c3cb8f4469f0e1c75a7ecf",
    ),
    (
        1,
        "down",
        "b1afc89976a072e679b90b29f08e401e37bae5fcad00d090ccef373e2bae652ec6a04568f6664ae082c15607585463ae",
    ),
    (
        2,
        "up",
        "4132553567fc79196c090c8eb9d56096cfaf8154414eebda9f540e90fc69d3a1363697d6eb17966f16e141a651d2ec64",
    ),
    (
        2,
        "down",
        "4f966cb5094ed8274a8739a5a67a85e197e4f973ae42847e1d98608e5aab9362a286a2cfd2de0ef26d05d39e5418a4ad",
    ),
    (
        3,
        "up",
        "0817c08bde1600276be50fb0d62c377db1b25f2ccace17c2d10a31a9f38daddb343a49d048bd0f835ca476f3ab51d94f",
    ),
    (
        3,
        "down",
        "79b2d377f36d02c4c75bdf72ffa781ced7b90785bba55eb4705def696fe826e7c849b40ead2652bf9b29b3e6b794d3a6",
    ),
    (
        4,
        "up",
        "56c386936539576bcb771d14bee7d95a8c2556c4f1e63bfbe7e30eb204061f1446c96404aeb75a25f8bfc956b26dedb4",
    ),
    (
        4,
        "down",
        "ee191ec7693dee79fdda0fd7e965a8750c0adb51451662eb914248bf609106e016eb283b0c4e7d0a14aa8a1867bf86b0",
    ),
    (
        5,
        "up",
        "367c8ac1bdb8408e54ce4796db654156ec557c98fb46a2bea66e383cab162fda50f522337db4fea43e786b53b05b6ed0",
    ),
    (
        5,
        "down",
        "1816bbe01858028ea457dc4bd2d264a39a5ab7aea361ace4e85e50e6b71bf7002676a4a30836e0d9de0b878d93a54f78",
    ),
    (
        6,
        "up",
        "40d1f2f8133afa20c9f4b5955abbecf8bf1da0e40a7d76c89993afee99bfa561d22c9382fbd94525b71e7abdfa1e5420",
    ),
    (
        6,
        "down",
        "182199cb0141b0c8d715626092a04ab38ddecdc71aa4e3b03c088076cc7d9d34bb9c43ad9e4f8709eba66de81968a224",
    ),
    (
        7,
        "up",
        "b91ebc2a6e30690b2654aa9c9cec20e4fe43b01a1293642c56eba35f7ded6dfee7c3cd7cc54d953a24219c90d5cec775",
    ),
    (
        7,
        "down",
        "a90b96ac886b4768d43145623c34fbe1afdca50fc1d56f5a6ae13a27726c97641a73694eec755c82f2bbd042bbc59a5c",
    ),
    (
        8,
        "up",
        "9dcf9c82c6311d4a0557ff13a463ef59195ac1b55e7a7e313e6c0af36f4cbc6efacc13da51b485bb7c9a406a1adbf722",
    ),
    (
        8,
        "down",
        "76e3a919ffdacf1c44ab5e07fc761fe44e241e1a761151155db901778b5c183aea23adab81e9733fffbe136745ace0cd",
    ),
    (
        9,
        "up",
        "f22265b65f7da223e66bae5278205b98df7ee70d8c9f970cc2e6382eadfafecdcc3e97c6ad1d8c2837f1403d40a1699f",
    ),
    (
        9,
        "down",
        "e343e75b362b14d2030d5f1b977886537aafafc65ffd3b5c616a7c17fa8a3d054796fbdde51956fded246b96961e5898",
    ),
];

#[test]
fn committed_migrations_are_never_edited() {
    let mut actual: Vec<(i64, &str, String)> = MIGRATOR
        .iter()
        .map(|m| {
            let direction = if m.migration_type.is_down_migration() {
                "down"
            } else {
                "up"
            };
            let hex: String = m.checksum.iter().map(|b| format!("{b:02x}")).collect();
            (m.version, direction, hex)
        })
        .collect();
    actual.sort();
    let mut pinned: Vec<(i64, &str, String)> = PINNED
        .iter()
        .map(|(v, d, h)| (*v, *d, h.to_string()))
        .collect();
    pinned.sort();
    assert_eq!(
        actual, pinned,
        "a committed migration changed, or a new one is not pinned"
    );
}
