//! The admin port on PostgreSQL: the schema, the status (rows, sizes, dead tuples), a check of
//! what can be checked, and closing the pool.
//!
//! PostgreSQL has no `integrity_check`: the server keeps its own files consistent, and the
//! `amcheck` extension that verifies index structure is not installed by default. So
//! [`PgAdmin::check`] checks what abathur depends on: that the schema is this build's, that
//! every table and trigger abathur uses is there (and enabled: without `tasks_notify_ready` no
//! worker is woken), that no index is left invalid (a failed `CREATE INDEX CONCURRENTLY`) and
//! no constraint unvalidated, and that each task's list of dependencies agrees with its
//! dependency rows. When `amcheck` is installed in the database, every b-tree index of
//! abathur's tables is verified with `bt_index_check` as well.
//!
//! Backups are the server's business: `pg_dump`, or the server's own base backups and WAL
//! archiving. [`PgAdmin::backup_to`] says so rather than copy a database it cannot copy
//! consistently into one file any better than `pg_dump` does.

use std::collections::BTreeMap;
use std::path::Path;

use abathur_core::error::DatabaseError;
use abathur_core::models::TaskStatus;
use abathur_core::ports::{
    CheckReport, DatabaseAdmin, DatabaseStatus, ForeignKeyProblem, StorageSizes, TableStats,
};
use async_trait::async_trait;

use crate::connection::{self, PgDatabase};
use crate::errors::classify_ref;
use crate::row::RowContext;

/// The tables of abathur's schema (`migrations/`).
pub const EXPECTED_TABLES: &[&str] = &[
    "agents",
    "audit",
    "memories",
    "session_events",
    "sessions",
    "task_attempts",
    "task_dependencies",
    "task_events",
    "task_idempotency",
    "task_schedule",
    "task_status_counts",
    "task_summaries",
    "tasks",
];

/// The triggers abathur's rules depend on, with their tables.
const EXPECTED_TRIGGERS: &[(&str, &str)] = &[
    ("tasks", "tasks_notify_ready_on_insert"),
    ("tasks", "tasks_notify_ready_on_update"),
    ("tasks", "tasks_take_history_along"),
    ("tasks", "task_status_counts_insert"),
    ("tasks", "task_status_counts_update"),
    ("tasks", "task_status_counts_delete"),
    ("tasks", "task_summaries_insert"),
    ("tasks", "task_summaries_update"),
    ("task_dependencies", "task_dependencies_follow_edges"),
    ("session_events", "session_events_are_append_only"),
];

/// How many rows of one kind of problem a check lists at most.
const PROBLEMS_LISTED: i64 = 1000;

/// [`DatabaseAdmin`] for an open PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgAdmin {
    db: PgDatabase,
}

impl PgAdmin {
    /// The admin of `db`.
    pub fn new(db: PgDatabase) -> Self {
        Self { db }
    }
}

fn failed(e: sqlx::Error) -> DatabaseError {
    classify_ref(&e)
}

fn unsigned(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

#[async_trait]
impl DatabaseAdmin for PgAdmin {
    async fn migrate(&self) -> Result<(), DatabaseError> {
        self.db.migrate().await
    }

    async fn schema_version(&self) -> Result<Option<i64>, DatabaseError> {
        self.db.schema_version().await
    }

    /// The schema version; as the journal mode, the server's WAL settings
    /// (`wal (wal_level=replica, synchronous_commit=on)`); exact rows per table of the schema
    /// abathur uses; tasks per status.
    async fn status(&self) -> Result<DatabaseStatus, DatabaseError> {
        let pool = self.db.pool();
        let schema_version = self.db.schema_version().await?;
        let settings = sqlx::query!(
            r#"SELECT current_setting('wal_level') AS "wal_level!",
                      current_setting('synchronous_commit') AS "synchronous_commit!""#
        )
        .fetch_one(pool)
        .await
        .map_err(failed)?;
        let journal_mode = format!(
            "wal (wal_level={}, synchronous_commit={})",
            settings.wal_level, settings.synchronous_commit
        );
        let names = sqlx::query_scalar!(
            r#"SELECT tablename AS "name!" FROM pg_catalog.pg_tables
               WHERE schemaname = current_schema() AND tablename <> '_sqlx_migrations'
               ORDER BY tablename"#
        )
        .fetch_all(pool)
        .await
        .map_err(failed)?;
        let mut tables = BTreeMap::new();
        for name in names {
            // A table name cannot be bound; it comes from the catalogue and is quoted as an
            // identifier.
            let sql = format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\""));
            let rows: i64 = sqlx::query_scalar(&sql)
                .fetch_one(pool)
                .await
                .map_err(failed)?;
            tables.insert(name, rows);
        }
        let mut tasks_by_status: BTreeMap<TaskStatus, i64> =
            TaskStatus::ALL.iter().map(|s| (*s, 0)).collect();
        if tables.contains_key("tasks") {
            let counted: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, count(*) FROM tasks GROUP BY status")
                    .fetch_all(pool)
                    .await
                    .map_err(failed)?;
            for (status, rows) in counted {
                let cx = RowContext {
                    table: "tasks",
                    id: "",
                };
                tasks_by_status.insert(cx.parse("status", &status)?, rows);
            }
        }
        Ok(DatabaseStatus {
            schema_version,
            journal_mode,
            tables,
            tasks_by_status,
        })
    }

    /// The database's size (`pg_database_size`) as the file; no WAL of its own (the server's
    /// WAL is shared by all its databases); no free-page count (PostgreSQL keeps free space per
    /// table, reused by the same table); per table its total bytes, and in `table_stats` its
    /// own and its indexes' bytes, live and dead rows and last vacuum from
    /// `pg_stat_user_tables`.
    async fn storage(&self) -> Result<StorageSizes, DatabaseError> {
        let pool = self.db.pool();
        let database = sqlx::query!(
            r#"SELECT pg_database_size(current_database()) AS "bytes!",
                      current_setting('block_size')::bigint AS "block_size!""#
        )
        .fetch_one(pool)
        .await
        .map_err(failed)?;
        let file_bytes = unsigned(Some(database.bytes));
        let page_size = unsigned(Some(database.block_size));
        let rows = sqlx::query!(
            r#"SELECT s.relname AS "name!",
                      pg_table_size(s.relid) AS "table_bytes!",
                      pg_indexes_size(s.relid) AS "index_bytes!",
                      s.n_live_tup AS "live!",
                      s.n_dead_tup AS "dead!",
                      greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuum
               FROM pg_catalog.pg_stat_user_tables s
               WHERE s.schemaname = current_schema() AND s.relname <> '_sqlx_migrations'
               ORDER BY s.relname"#
        )
        .fetch_all(pool)
        .await
        .map_err(failed)?;
        let mut tables = BTreeMap::new();
        let mut table_stats = BTreeMap::new();
        for row in rows {
            let stats = TableStats {
                table_bytes: unsigned(Some(row.table_bytes)),
                index_bytes: unsigned(Some(row.index_bytes)),
                live_rows: unsigned(Some(row.live)),
                dead_rows: unsigned(Some(row.dead)),
                last_vacuum: row.last_vacuum,
            };
            tables.insert(row.name.clone(), stats.table_bytes + stats.index_bytes);
            table_stats.insert(row.name, stats);
        }
        Ok(StorageSizes {
            file_bytes,
            wal_bytes: 0,
            page_size,
            page_count: file_bytes.checked_div(page_size).unwrap_or(0),
            free_pages: 0,
            tables,
            table_stats,
        })
    }

    async fn check(&self) -> Result<CheckReport, DatabaseError> {
        let pool = self.db.pool();
        let mut problems = Vec::new();

        // The schema: abathur's, and this build's.
        let mut conn = pool.acquire().await.map_err(failed)?;
        match connection::read_schema_state(&mut conn).await? {
            connection::SchemaState::Current => {}
            connection::SchemaState::Empty => problems.push(
                "the database has no tables: create abathur's with `abathur init`".to_string(),
            ),
            connection::SchemaState::Behind { found, expected } => problems.push(format!(
                "the schema is at version {}, this build's is {expected}: run `abathur db migrate`",
                found.unwrap_or(0)
            )),
            connection::SchemaState::Refused(err) => problems.push(err.to_string()),
        }
        drop(conn);

        // Every table and trigger, enabled.
        let present = sqlx::query_scalar!(
            r#"SELECT tablename AS "name!" FROM pg_catalog.pg_tables
               WHERE schemaname = current_schema()"#
        )
        .fetch_all(pool)
        .await
        .map_err(failed)?;
        for table in EXPECTED_TABLES {
            if !present.iter().any(|p| p == table) {
                problems.push(format!("table {table} is missing"));
            }
        }
        let triggers = sqlx::query!(
            r#"SELECT c.relname AS "table!", t.tgname AS "name!", t.tgenabled::text AS "enabled!"
               FROM pg_catalog.pg_trigger t
               JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
               WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = current_schema()) AND NOT t.tgisinternal"#
        )
        .fetch_all(pool)
        .await
        .map_err(failed)?;
        for (table, name) in EXPECTED_TRIGGERS {
            if !present.iter().any(|p| p == table) {
                continue;
            }
            match triggers
                .iter()
                .find(|t| t.table == *table && t.name == *name)
            {
                None => problems.push(format!("trigger {name} on {table} is missing")),
                Some(t) if t.enabled == "D" => {
                    problems.push(format!("trigger {name} on {table} is disabled"));
                }
                Some(_) => {}
            }
        }

        // The counts the triggers of migration 0004 keep, against a count of the tasks, read
        // in one snapshot.
        let mut repairable_problems = Vec::new();
        if present.iter().any(|p| p == "task_status_counts") {
            let mut tx = pool.begin().await.map_err(failed)?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            let kept: Vec<(String, i64)> = sqlx::query_as(
                "SELECT status, sum(tasks)::bigint FROM task_status_counts GROUP BY status",
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(failed)?;
            let counted: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, count(*) FROM tasks GROUP BY status")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(failed)?;
            drop(tx);
            repairable_problems.extend(abathur_core::ports::status_count_problems(
                &kept,
                &counted,
                "`BEGIN; LOCK TABLE tasks IN SHARE MODE; DELETE FROM task_status_counts; \
                 INSERT INTO task_status_counts SELECT status, count(*) FROM tasks GROUP BY \
                 status; COMMIT;`",
            ));
        }

        // Indexes a failed build left unusable, constraints added NOT VALID.
        let invalid = sqlx::query!(
            r#"SELECT i.relname AS "index!", c.relname AS "table!"
               FROM pg_catalog.pg_index x
               JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
               JOIN pg_catalog.pg_class c ON c.oid = x.indrelid
               WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = current_schema())
                 AND NOT (x.indisvalid AND x.indisready)
               ORDER BY 2, 1"#
        )
        .fetch_all(pool)
        .await
        .map_err(failed)?;
        for row in invalid {
            problems.push(format!(
                "index {} on {} is invalid: drop it and create it again (REINDEX)",
                row.index, row.table
            ));
        }
        let unvalidated = sqlx::query!(
            r#"SELECT n.conname AS "name!", c.relname AS "table!"
               FROM pg_catalog.pg_constraint n
               JOIN pg_catalog.pg_class c ON c.oid = n.conrelid
               WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = current_schema()) AND NOT n.convalidated
               ORDER BY 2, 1"#
        )
        .fetch_all(pool)
        .await
        .map_err(failed)?;
        for row in unvalidated {
            problems.push(format!(
                "constraint {} on {} is not validated: ALTER TABLE {} VALIDATE CONSTRAINT {}",
                row.name, row.table, row.table, row.name
            ));
        }

        // Index structure, when amcheck is there to verify it.
        let amcheck = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'amcheck')
               AS "installed!""#
        )
        .fetch_one(pool)
        .await
        .map_err(failed)?;
        if amcheck {
            problems.extend(check_indexes(pool).await?);
        } else {
            tracing::debug!("amcheck is not installed: index structure is not verified");
        }

        // Each task's list of dependencies against its dependency rows (the truth).
        let mut foreign_key_problems = Vec::new();
        let tables_ok = ["tasks", "task_dependencies"]
            .iter()
            .all(|t| present.iter().any(|p| p == t));
        if tables_ok {
            let dangling = sqlx::query_scalar!(
                r#"SELECT count(*) AS "n!" FROM (
                       SELECT 1 FROM tasks t CROSS JOIN LATERAL unnest(t.dependencies) AS d(id)
                       WHERE NOT EXISTS (SELECT 1 FROM tasks p WHERE p.id = d.id)
                       LIMIT $1
                   ) AS dangling"#,
                PROBLEMS_LISTED
            )
            .fetch_one(pool)
            .await
            .map_err(failed)?;
            for _ in 0..dangling {
                foreign_key_problems.push(ForeignKeyProblem {
                    table: "tasks".to_string(),
                    rowid: None,
                    parent: "tasks".to_string(),
                });
            }
            let disagreeing = sqlx::query_scalar!(
                r#"SELECT t.id AS "id!" FROM tasks t
                   WHERE ARRAY(SELECT DISTINCT x FROM unnest(coalesce(t.dependencies, '{}')) x ORDER BY x)
                      <> ARRAY(SELECT d.depends_on_task_id FROM task_dependencies d
                               WHERE d.task_id = t.id ORDER BY 1)
                   ORDER BY t.id
                   LIMIT $1"#,
                PROBLEMS_LISTED
            )
            .fetch_all(pool)
            .await
            .map_err(failed)?;
            for id in disagreeing {
                problems.push(format!(
                    "task {id}: its list of dependencies differs from its dependency rows"
                ));
            }
        }
        // Attempts and history name their task without a foreign key (migration 0002): rows
        // whose task is gone are reported as a foreign key's would be.
        if ["tasks", "task_attempts", "task_events"]
            .iter()
            .all(|t| present.iter().any(|p| p == t))
        {
            let orphans = sqlx::query!(
                r#"SELECT 'task_attempts' AS "table!", count(*) AS "n!" FROM (
                       SELECT 1 FROM task_attempts a
                       WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = a.task_id)
                       LIMIT $1) AS o
                   UNION ALL
                   SELECT 'task_events', count(*) FROM (
                       SELECT 1 FROM task_events e
                       WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = e.task_id)
                       LIMIT $1) AS o"#,
                PROBLEMS_LISTED
            )
            .fetch_all(pool)
            .await
            .map_err(failed)?;
            for row in orphans {
                for _ in 0..row.n {
                    foreign_key_problems.push(ForeignKeyProblem {
                        table: row.table.clone(),
                        rowid: None,
                        parent: "tasks".to_string(),
                    });
                }
            }
        }
        Ok(CheckReport {
            integrity_problems: problems,
            foreign_key_problems,
            repairable_problems,
        })
    }

    /// Not done by abathur on PostgreSQL: a `Validation` error that names `pg_dump`.
    async fn backup_to(&self, target: &Path) -> Result<(), DatabaseError> {
        Err(DatabaseError::validation(
            "backup",
            format!(
                "abathur does not copy a PostgreSQL database; use the server's tools: \
                 `pg_dump --format=custom --file={} '{}'` (restore with pg_restore), or the \
                 server's base backups with WAL archiving",
                target.display(),
                self.db.location()
            ),
        ))
    }

    async fn close(&self) {
        self.db.close().await;
    }
}

/// `bt_index_check` on every b-tree index of the schema: what it finds, one line per index.
async fn check_indexes(pool: &sqlx::PgPool) -> Result<Vec<String>, DatabaseError> {
    let indexes = sqlx::query!(
        r#"SELECT i.oid::bigint AS "oid!", i.relname AS "name!"
           FROM pg_catalog.pg_index x
           JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
           JOIN pg_catalog.pg_am a ON a.oid = i.relam
           WHERE i.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = current_schema())
             AND a.amname = 'btree' AND x.indisvalid AND x.indisready
           ORDER BY i.relname"#
    )
    .fetch_all(pool)
    .await
    .map_err(failed)?;
    let mut problems = Vec::new();
    for index in indexes {
        // The extension's schema may be anywhere on the search path.
        let checked = sqlx::query("SELECT bt_index_check($1::bigint::oid::regclass)")
            .bind(index.oid)
            .execute(pool)
            .await;
        match checked {
            Ok(_) => {}
            Err(sqlx::Error::Database(db))
                if db.code().as_deref() == Some("XX002")
                    || db.code().as_deref() == Some("XX001") =>
            {
                problems.push(format!("index {}: {}", index.name, db.message()));
            }
            // Reading an index with amcheck is a right of its own (granted per function).
            Err(e) if crate::errors::sqlstate(&e).as_deref() == Some("42501") => {
                tracing::debug!(error = %e, "not allowed to run amcheck: index structure is not verified");
                break;
            }
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use abathur_core::error::DatabaseError;
    use abathur_core::models::TaskStatus;
    use abathur_core::ports::DatabaseAdmin;
    use sqlx::{Connection, Executor, PgConnection};

    use super::{PgAdmin, EXPECTED_TABLES};
    use crate::testing::TestDatabase;
    use crate::PgConfig;

    async fn run(url: &str, sql: &str) {
        let mut conn = PgConnection::connect(url).await.expect("connect");
        conn.execute(sql).await.expect(sql);
        conn.close().await.expect("close");
    }

    const INSERT_TASK: &str = "INSERT INTO tasks (id, summary, description, agent_type, priority,
                                   status, submitted_at, last_updated_at, source)
         SELECT gen_random_uuid(), 'probe', '', 'probe', 5, 'ready', now(), now(), 'human'
         FROM generate_series(1, 50)";

    #[tokio::test]
    async fn status_counts_rows_and_storage_shows_sizes_and_dead_rows() {
        let (test, db) = TestDatabase::migrated(PgConfig::default()).await;
        let admin = PgAdmin::new(db);
        run(test.url(), INSERT_TASK).await;
        // Every row updated once: 50 dead versions, flushed to the server's statistics when
        // the session next goes idle (before it answers the statement after).
        let mut conn = PgConnection::connect(test.url()).await.expect("connect");
        conn.execute("UPDATE tasks SET status = 'running'")
            .await
            .expect("update");
        conn.execute("SELECT pg_stat_force_next_flush()")
            .await
            .expect("flush");
        conn.execute("SELECT 1").await.expect("idle once");
        conn.close().await.expect("close");

        // Sizes first: a scan of the table (status counts its rows) may prune the dead
        // versions from its pages.
        let storage = admin.storage().await.expect("storage");
        assert!(storage.file_bytes > 0);
        assert_eq!(storage.page_size, 8192);
        let tasks = &storage.table_stats["tasks"];
        assert!(tasks.table_bytes > 0 && tasks.index_bytes > 0, "{tasks:?}");
        assert_eq!(
            storage.tables["tasks"],
            tasks.table_bytes + tasks.index_bytes
        );
        assert_eq!(tasks.dead_rows, 50, "{tasks:?}");
        assert_eq!(
            storage.table_stats.keys().collect::<Vec<_>>(),
            EXPECTED_TABLES.iter().collect::<Vec<_>>()
        );
        let status = admin.status().await.expect("status");
        assert_eq!(status.schema_version, Some(4));
        assert!(
            status.journal_mode.starts_with("wal"),
            "{}",
            status.journal_mode
        );
        for table in EXPECTED_TABLES {
            assert!(status.tables.contains_key(*table), "{table}");
        }
        assert!(!status.tables.contains_key("_sqlx_migrations"));
        assert_eq!(status.tables["tasks"], 50);
        assert_eq!(status.tasks_by_status[&TaskStatus::Running], 50);
        assert_eq!(status.tasks_by_status[&TaskStatus::Ready], 0);
        assert_eq!(status.tasks_by_status.len(), TaskStatus::ALL.len());

        admin.close().await;
    }

    #[tokio::test]
    async fn check_passes_on_a_new_database_and_names_what_is_broken() {
        let (test, db) = TestDatabase::migrated(PgConfig::default()).await;
        let admin = PgAdmin::new(db);
        run(test.url(), INSERT_TASK).await;
        // With amcheck, the index structure is verified too.
        run(test.url(), "CREATE EXTENSION amcheck").await;
        let report = admin.check().await.expect("check");
        assert!(report.is_ok(), "{report:?}");

        run(
            test.url(),
            "ALTER TABLE tasks DISABLE TRIGGER tasks_notify_ready_on_insert;
             DROP TABLE audit;
             UPDATE tasks SET dependencies = ARRAY[gen_random_uuid()]
             WHERE id = (SELECT min(id::text)::uuid FROM tasks);",
        )
        .await;
        let report = admin.check().await.expect("check");
        let problems = report.integrity_problems.join("\n");
        assert!(problems.contains("table audit is missing"), "{problems}");
        assert!(
            problems.contains("trigger tasks_notify_ready_on_insert on tasks is disabled"),
            "{problems}"
        );
        assert!(
            problems.contains("list of dependencies differs from its dependency rows"),
            "{problems}"
        );
        assert_eq!(report.foreign_key_problems.len(), 1, "{report:?}");
        assert_eq!(report.foreign_key_problems[0].table, "tasks");

        // History and attempts whose task is gone (the trigger that takes them along was
        // disabled when the task was deleted) are reported as a foreign key's rows would be.
        run(
            test.url(),
            "ALTER TABLE tasks DISABLE TRIGGER tasks_take_history_along;
             INSERT INTO task_attempts (id, task_id, attempt_number, worker_id, started_at,
                                        lease_expires_at)
             SELECT gen_random_uuid(), id, 1, 'w', now(), now() FROM tasks;
             INSERT INTO task_events (task_id, to_status, at, actor)
             SELECT id, 'ready', now(), 'test' FROM tasks;
             DELETE FROM tasks;",
        )
        .await;
        let report = admin.check().await.expect("check");
        let problems = report.integrity_problems.join("\n");
        assert!(
            problems.contains("trigger tasks_take_history_along on tasks is disabled"),
            "{problems}"
        );
        let mut orphaned: Vec<&str> = report
            .foreign_key_problems
            .iter()
            .map(|p| p.table.as_str())
            .collect();
        orphaned.dedup();
        assert_eq!(orphaned, ["task_attempts", "task_events"], "{report:?}");

        // Counts per status changed behind the triggers' back are named, with the repair.
        run(
            test.url(),
            "ALTER TABLE tasks DISABLE TRIGGER task_status_counts_insert;",
        )
        .await;
        run(test.url(), INSERT_TASK).await;
        let report = admin.check().await.expect("check");
        let problems = report.repairable_problems.join("\n");
        assert!(
            problems.contains("the overview's count of ready tasks is 0, but 50 tasks are ready"),
            "{problems}"
        );
        admin.close().await;
    }

    #[tokio::test]
    async fn check_reports_an_old_schema() {
        let (test, db) = TestDatabase::migrated(PgConfig::default()).await;
        let admin = PgAdmin::new(db);
        run(test.url(), "DELETE FROM _sqlx_migrations").await;
        let report = admin.check().await.expect("check");
        assert!(
            report.integrity_problems[0].contains("abathur db migrate"),
            "{report:?}"
        );
        admin.close().await;
    }

    #[tokio::test]
    async fn backup_points_to_pg_dump() {
        let (_test, db) = TestDatabase::migrated(PgConfig::default()).await;
        let admin = PgAdmin::new(db);
        let target = std::env::temp_dir().join("abathur-never-written.dump");
        match admin.backup_to(&target).await {
            Err(DatabaseError::Validation(e)) => {
                assert!(e.to_string().contains("pg_dump"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!target.exists());
        admin.close().await;
    }
}
