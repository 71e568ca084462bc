//! The dashboard at scale: `abathur-bench dashboard [sqlite] [pg] [--tasks N] [--samples N]`.
//!
//! Loads N tasks (1,000,000 by default) raw into a new database of each backend named (both
//! when none is): nine in ten completed, the rest ready, blocked, failed or cancelled, submitted
//! over the last 30 days, with summaries `bench task <i>`, and a DAG of 500 tasks through the
//! queue. Then it serves the database as `abathur serve` does, on a loopback port, and times
//! each call of the dashboard's API as a browser makes it (HTTP, the whole JSON answer read).
//! Beside each call it times the SQL that does the same read, raw (rusqlite on the same file,
//! or a plain connection to the same PostgreSQL database), in the same process: what the server
//! adds to the database's own work. The figures are those of `docs/BENCHMARKS.md`, "Dashboard".

use std::fmt::Display;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Instant;

use abathur::backend::{Access, Backend, Location, Role};
use abathur::domain::queue::PriorityPolicy;
use abathur::domain::queue::{NewTask, TaskQueue};
use abathur::web::{self, HostRule, WebOptions};
use abathur_core::timestamp;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::fixture::{self, AGENT_TYPE};
use crate::machine;
use crate::pg::db::Fresh;
use crate::scenarios::count;
use crate::stats::{fmt_duration, Samples};
use crate::BenchError;

const USAGE: &str = "usage: abathur-bench dashboard [sqlite] [pg] [--tasks N] [--samples N]";

/// What the run is asked to do.
#[derive(Debug, Clone)]
struct Settings {
    sqlite: bool,
    pg: bool,
    tasks: usize,
    samples: usize,
}

/// The tasks of the DAG submitted through the queue, and the width of its layers.
const DAG_TASKS: usize = 500;
const DAG_WIDTH: usize = 10;

/// Untimed calls before each measurement.
const WARM_UP: usize = 5;

/// The dashboard run's `main`, given the arguments after `dashboard`.
pub fn main(args: &[String]) -> std::process::ExitCode {
    let settings = match parse(args) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    println!(
        "command: cargo run --release -p abathur-bench -- dashboard {}",
        args.join(" ")
    );
    println!("machine: {}", machine::describe());
    crate::run_command("dashboard", run(&settings))
}

fn parse(args: &[String]) -> Result<Settings, String> {
    let mut settings = Settings {
        sqlite: false,
        pg: false,
        tasks: 1_000_000,
        samples: 50,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            it.next()
                .ok_or(format!("{name} needs a number"))?
                .replace('_', "")
                .parse::<usize>()
                .map_err(|e| format!("{name}: {e}"))
                .and_then(|n| {
                    if n == 0 {
                        Err(format!("{name} must be above 0"))
                    } else {
                        Ok(n)
                    }
                })
        };
        match arg.as_str() {
            "sqlite" => settings.sqlite = true,
            "pg" => settings.pg = true,
            "--tasks" => settings.tasks = number("--tasks")?,
            "--samples" => settings.samples = number("--samples")?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !settings.sqlite && !settings.pg {
        settings.sqlite = true;
        settings.pg = true;
    }
    Ok(settings)
}

fn failed(e: impl Display) -> BenchError {
    BenchError(e.to_string())
}

/// The status, agent type and priority of loaded task `i`.
fn shape(i: usize) -> (&'static str, &'static str, f64) {
    let status = match i % 100 {
        0..=89 => "completed",
        90..=93 => "ready",
        94..=96 => "blocked",
        97..=98 => "failed",
        _ => "cancelled",
    };
    let agent = ["coder", "reviewer", "planner", AGENT_TYPE][i % 4];
    (status, agent, ((i * 7_919) % 1_000) as f64 / 100.0)
}

/// When loaded task `i` of `n` was submitted: evenly over the 30 days before `now`.
fn submitted(now: DateTime<Utc>, i: usize, n: usize) -> DateTime<Utc> {
    let span = ChronoDuration::days(30)
        .num_microseconds()
        .unwrap_or(i64::MAX);
    let step = span / i64::try_from(n.max(1)).unwrap_or(i64::MAX);
    now - ChronoDuration::days(30) + ChronoDuration::microseconds(step * i as i64)
}

async fn run(settings: &Settings) -> Result<(), BenchError> {
    let mut tables = Vec::new();
    if settings.sqlite {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("dashboard.db");
        fixture::create(&path).await?;
        let loaded = Instant::now();
        load_sqlite(&path, settings.tasks)?;
        println!(
            "SQLite: loaded {} tasks in {:.1} s",
            count(settings.tasks),
            loaded.elapsed().as_secs_f64()
        );
        let location = Location::parse(
            path.to_str()
                .ok_or_else(|| failed("a path that is not UTF-8"))?,
        )
        .map_err(failed)?;
        let raw = fixture::raw(&path)?;
        let cursor = sqlite_cursor(&raw, settings.tasks * 9 / 10)?;
        let rows = measure(&location, settings, Box::new(RawSqlite(raw)), cursor).await?;
        tables.push(("SQLite", rows));
    }
    if settings.pg {
        let fresh = Fresh::new(2).await?;
        let loaded = Instant::now();
        let mut conn = fresh.connection().await?;
        load_pg(&mut conn, settings.tasks).await?;
        println!(
            "PostgreSQL: loaded {} tasks in {:.1} s",
            count(settings.tasks),
            loaded.elapsed().as_secs_f64()
        );
        let location = Location::parse(fresh.url()).map_err(failed)?;
        let cursor = pg_cursor(&mut conn, settings.tasks * 9 / 10).await?;
        let rows = measure(&location, settings, Box::new(RawPg(conn)), cursor).await?;
        tables.push(("PostgreSQL", rows));
        fresh.finish().await;
    }
    for (backend, rows) in tables {
        println!(
            "\n{backend}, {} tasks, {} calls each:\n",
            count(settings.tasks),
            settings.samples
        );
        println!("| call | ours p50 | ours p99 | raw SQL p50 | raw SQL p99 |");
        println!("|---|---:|---:|---:|---:|");
        for row in rows {
            println!("{row}");
        }
    }
    Ok(())
}

/// Tasks as `load_sqlite` and `load_pg` write them, in one transaction.
fn load_sqlite(path: &Path, n: usize) -> Result<(), BenchError> {
    let mut conn = fixture::raw(path)?;
    let now = Utc::now();
    let policy = PriorityPolicy::default();
    conn.execute_batch("PRAGMA cache_size = -262144")?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO tasks (id, summary, description, agent_type, priority, calculated_priority,
                 status, dependency_type, dependency_depth, retry_count, max_retries,
                 max_execution_timeout_seconds, submitted_at, started_at, completed_at,
                 last_updated_at, source, claim_key)
             VALUES (?1, ?2, '', ?3, ?4, ?5, ?6, 'sequential', 0, 0, 3, 3600, ?7, ?8, ?8,
                     coalesce(?8, ?7), 'human', ?9)",
        )?;
        for i in 0..n {
            let (status, agent, calculated) = shape(i);
            let at = submitted(now, i, n);
            let priority = calculated.floor().clamp(0.0, 10.0) as u8;
            let finished = matches!(status, "completed" | "failed" | "cancelled")
                .then(|| timestamp::format(&(at + ChronoDuration::minutes(1))));
            let key = (status == "ready").then(|| policy.key(priority, 0, at));
            insert.execute(rusqlite::params![
                Uuid::new_v4().to_string(),
                format!("bench task {i}"),
                agent,
                priority,
                calculated,
                status,
                timestamp::format(&at),
                finished,
                key,
            ])?;
        }
    }
    tx.commit()?;
    // No ANALYZE: abathur never runs it, so the planner sees what it sees on a user's file.
    conn.execute_batch("PRAGMA cache_size = -2000")?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(())
}

async fn load_pg(conn: &mut sqlx::PgConnection, n: usize) -> Result<(), BenchError> {
    use sqlx::Executor;
    let policy = PriorityPolicy::default();
    let aging = policy.aging_interval.as_secs_f64();
    sqlx::query(
        "INSERT INTO tasks (id, summary, description, agent_type, priority, calculated_priority,
             status, dependency_type, dependency_depth, retry_count, max_retries,
             max_execution_timeout_seconds, submitted_at, started_at, completed_at,
             last_updated_at, source, claim_key)
         SELECT gen_random_uuid(), 'bench task ' || i, '',
                (ARRAY['coder', 'reviewer', 'planner', $3])[i % 4 + 1],
                least(greatest(floor(cp), 0), 10)::smallint, cp, st, 'sequential', 0, 0, 3, 3600,
                sub, fin, fin, coalesce(fin, sub), 'human',
                CASE WHEN st = 'ready'
                     THEN least(greatest(floor(cp), 0), 10)::float8
                          - extract(epoch FROM sub)::float8 / $2 END
         FROM (
             SELECT i, cp, sub,
                    CASE WHEN st IN ('completed', 'failed', 'cancelled')
                         THEN sub + interval '1 minute' END AS fin, st
             FROM (
                 SELECT i, ((i * 7919) % 1000) / 100.0::float8 AS cp,
                        now() - interval '30 days'
                            + (i * (2592000000000 / $1)) * interval '1 microsecond' AS sub,
                        CASE WHEN i % 100 < 90 THEN 'completed'
                             WHEN i % 100 < 94 THEN 'ready'
                             WHEN i % 100 < 97 THEN 'blocked'
                             WHEN i % 100 < 99 THEN 'failed'
                             ELSE 'cancelled' END AS st
                 FROM generate_series(0::bigint, $1::bigint - 1) AS i
             ) AS g
         ) AS t",
    )
    .bind(i64::try_from(n).map_err(failed)?)
    .bind(aging)
    .bind(AGENT_TYPE)
    .execute(&mut *conn)
    .await?;
    conn.execute("VACUUM ANALYZE").await?;
    Ok(())
}

/// One line of the table: a call, our times, and the raw SQL's.
struct Timed {
    call: String,
    ours: Samples,
    raw: Option<Samples>,
}

impl Display for Timed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pair = |s: &Samples| match s.p50_p99() {
            Some((p50, p99)) => format!("{} | {}", fmt_duration(p50), fmt_duration(p99)),
            None => "- | -".to_string(),
        };
        write!(
            f,
            "| {} | {} | {} |",
            self.call,
            pair(&self.ours),
            self.raw.as_ref().map_or("- | -".to_string(), pair)
        )
    }
}

type RawFuture<'a> = Pin<Box<dyn Future<Output = Result<usize, BenchError>> + Send + 'a>>;

/// The raw side: runs one read of [`RawRead`] and answers the rows it gave.
trait Raw: Send {
    fn read<'a>(&'a mut self, read: &'a RawRead) -> RawFuture<'a>;
}

/// The SQL that reads what one call reads, in each dialect.
struct RawRead {
    sqlite: String,
    pg: String,
}

impl RawRead {
    fn same(sql: &str) -> Self {
        Self {
            sqlite: sql.to_string(),
            pg: sql.to_string(),
        }
    }
}

struct RawSqlite(rusqlite::Connection);

impl Raw for RawSqlite {
    fn read<'a>(&'a mut self, read: &'a RawRead) -> RawFuture<'a> {
        Box::pin(async move {
            let mut statement = self.0.prepare_cached(&read.sqlite)?;
            let columns = statement.column_count();
            let mut rows = statement.query([])?;
            let mut n = 0;
            while let Some(row) = rows.next()? {
                // Every column is read, as the server reads every field.
                for c in 0..columns {
                    let _: rusqlite::types::Value = row.get(c)?;
                }
                n += 1;
            }
            Ok(n)
        })
    }
}

struct RawPg(sqlx::PgConnection);

impl Raw for RawPg {
    fn read<'a>(&'a mut self, read: &'a RawRead) -> RawFuture<'a> {
        Box::pin(async move {
            let rows = sqlx::query(&read.pg).fetch_all(&mut self.0).await?;
            Ok(rows.len())
        })
    }
}

/// Serves the database at `location` and times every call against its raw read.
async fn measure(
    location: &Location,
    settings: &Settings,
    mut raw: Box<dyn Raw>,
    cursor: DeepCursor,
) -> Result<Vec<Timed>, BenchError> {
    let backend = Backend::open(location, Access::Write, Role::Server).await?;
    let dag_end = submit_dag(&backend).await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let options = WebOptions {
        access: web::Access {
            hosts: HostRule::new(address, Vec::new()),
            token: None,
        },
        read_only: false,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let backend = backend.clone();
        tokio::spawn(async move {
            web::serve(&backend, listener, &options, async {
                let _ = stopped.await;
            })
            .await
        })
    };
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{address}"),
        samples: settings.samples,
    };
    let n = settings.tasks;
    let first = api.get("/api/v1/tasks?limit=1&order=newest").await?;
    let newest = first["tasks"][0]["id"]
        .as_str()
        .ok_or_else(|| failed("no task in the table"))?
        .to_string();
    let rare = format!("task {}", n / 3);
    let sample = settings.samples;
    let mut rows = Vec::new();
    let raw = &mut *raw;

    // The overview as a page first reads it, after a change: counted again, not served from
    // what the server kept. Each sample cancels a ready task through the API, untimed.
    let ready: Vec<String> = {
        let page = api
            .get(&format!(
                "/api/v1/tasks?status=ready&limit={}",
                (WARM_UP + sample).min(500)
            ))
            .await?;
        page["tasks"]
            .as_array()
            .map(|tasks| {
                tasks
                    .iter()
                    .filter_map(|t| t["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut overview = Samples::with_capacity(sample);
    for (i, id) in ready.iter().enumerate() {
        let response = api
            .http
            .post(format!("{}/api/v1/tasks/{id}/cancel", api.base))
            .header("origin", &api.base)
            .send()
            .await
            .map_err(failed)?;
        if !response.status().is_success() {
            return Err(BenchError(format!("cancel {id}: {}", response.status())));
        }
        let t = Instant::now();
        api.get("/api/v1/overview").await?;
        if i >= WARM_UP {
            overview.push(t.elapsed());
        }
    }
    let counts = RawRead {
        sqlite: "SELECT status, tasks FROM task_status_counts".to_string(),
        pg: "SELECT status, sum(tasks) FROM task_status_counts GROUP BY status".to_string(),
    };
    let counts_samples = time_raw(raw, &counts, sample).await?;
    let row = Timed {
        call: "overview, after a change (raw: the kept counts)".to_string(),
        ours: overview,
        raw: Some(counts_samples),
    };
    println!("  {row}");
    rows.push(row);
    rows.push(
        api.time(
            raw,
            "overview, unchanged (raw: counting the tasks per status)",
            "/api/v1/overview".to_string(),
            Some(RawRead::same(
                "SELECT status, COUNT(*) FROM tasks GROUP BY status",
            )),
        )
        .await?,
    );

    const COLUMNS: &str = "*";
    let page = |filter: &str, order: &str| {
        RawRead::same(&format!(
            "SELECT {COLUMNS} FROM tasks {filter} ORDER BY {order} LIMIT 50"
        ))
    };
    const NEWEST: &str = "submitted_at DESC, id DESC";
    const PRIORITY: &str = "calculated_priority DESC, submitted_at, id";
    rows.push(
        api.time(
            raw,
            "tasks, newest first, first page",
            "/api/v1/tasks?limit=50".to_string(),
            Some(page("", NEWEST)),
        )
        .await?,
    );
    rows.push(
        api.time(
            raw,
            &format!(
                "tasks, newest first, the page after row {}",
                count(n * 9 / 10)
            ),
            format!("/api/v1/tasks?limit=50&after={}", cursor.text),
            Some(RawRead {
                sqlite: format!(
                    "SELECT {COLUMNS} FROM tasks WHERE (submitted_at, id) < ('{}', '{}') \
                     ORDER BY {NEWEST} LIMIT 50",
                    cursor.at, cursor.id
                ),
                pg: format!(
                    "SELECT {COLUMNS} FROM tasks \
                     WHERE (submitted_at, id) < ('{}'::timestamptz, '{}'::uuid) \
                     ORDER BY {NEWEST} LIMIT 50",
                    cursor.at, cursor.id
                ),
            }),
        )
        .await?,
    );
    rows.push(
        api.time(
            raw,
            "tasks by priority",
            "/api/v1/tasks?limit=50&order=priority".to_string(),
            Some(page("", PRIORITY)),
        )
        .await?,
    );
    rows.push(
        api.time(
            raw,
            "tasks, status completed",
            "/api/v1/tasks?limit=50&status=completed".to_string(),
            Some(page("WHERE status = 'completed'", NEWEST)),
        )
        .await?,
    );
    rows.push(
        api.time(
            raw,
            "tasks, status failed, by priority",
            "/api/v1/tasks?limit=50&status=failed&order=priority".to_string(),
            Some(page("WHERE status = 'failed'", PRIORITY)),
        )
        .await?,
    );
    rows.push(
        api.time(
            raw,
            "tasks, agent type reviewer, status ready",
            "/api/v1/tasks?limit=50&agent_type=reviewer&status=ready".to_string(),
            Some(page(
                "WHERE agent_type = 'reviewer' AND status = 'ready'",
                NEWEST,
            )),
        )
        .await?,
    );
    let escaped = rare.replace(' ', "%20");
    rows.push(
        api.time(
            raw,
            &format!("search {rare:?}: one match (raw: the trigram index)"),
            format!("/api/v1/tasks?limit=50&q={escaped}"),
            Some(RawRead {
                sqlite: format!(
                    "SELECT {COLUMNS} FROM tasks WHERE rowid IN (SELECT rowid FROM \
                     task_summaries WHERE task_summaries MATCH '\"{rare}\"') \
                     ORDER BY {NEWEST} LIMIT 50"
                ),
                pg: format!(
                    "SELECT {COLUMNS} FROM tasks WHERE id IN (SELECT task_id FROM \
                     task_summaries WHERE summary ILIKE '%{rare}%') ORDER BY {NEWEST} LIMIT 50"
                ),
            }),
        )
        .await?,
    );
    rows.push(
        api.time(
            raw,
            &format!("search {rare:?} (raw: the same search without the index)"),
            format!("/api/v1/tasks?limit=50&q={escaped}"),
            Some(RawRead {
                sqlite: format!(
                    "SELECT {COLUMNS} FROM tasks WHERE summary LIKE '%{rare}%' \
                     ORDER BY {NEWEST} LIMIT 50"
                ),
                pg: format!(
                    "SELECT {COLUMNS} FROM tasks WHERE summary ILIKE '%{rare}%' \
                     ORDER BY {NEWEST} LIMIT 50"
                ),
            }),
        )
        .await?,
    );
    rows.push(
        api.time(
            raw,
            "search \"no such words\": no match",
            "/api/v1/tasks?limit=50&q=no%20such%20words".to_string(),
            None,
        )
        .await?,
    );
    rows.push(
        api.time(
            raw,
            "search \"bench\": every task matches",
            "/api/v1/tasks?limit=50&q=bench".to_string(),
            Some(RawRead {
                sqlite: format!(
                    "SELECT {COLUMNS} FROM tasks WHERE summary LIKE '%bench%' \
                     ORDER BY {NEWEST} LIMIT 50"
                ),
                pg: format!(
                    "SELECT {COLUMNS} FROM tasks WHERE summary ILIKE '%bench%' \
                     ORDER BY {NEWEST} LIMIT 50"
                ),
            }),
        )
        .await?,
    );
    rows.push(
        api.time(
            raw,
            "search \"77\": two characters, no trigram",
            "/api/v1/tasks?limit=50&q=77".to_string(),
            None,
        )
        .await?,
    );
    rows.push(
        api.time(
            raw,
            "search \"k 9\" and status failed: about 11% match the text",
            "/api/v1/tasks?limit=50&q=k%209&status=failed".to_string(),
            None,
        )
        .await?,
    );
    rows.push(
        api.time(
            raw,
            "one task",
            format!("/api/v1/tasks/{newest}"),
            Some(RawRead::same(&format!(
                "SELECT {COLUMNS} FROM tasks WHERE id = '{newest}'"
            ))),
        )
        .await?,
    );
    rows.push(
        api.time(
            raw,
            "what cancelling one task reaches",
            format!("/api/v1/tasks/{newest}/reach?action=cancel"),
            None,
        )
        .await?,
    );
    rows.push(
        api.time(
            raw,
            &format!("the DAG of a task with {} ancestors", DAG_TASKS - 1),
            format!("/api/v1/tasks/{dag_end}/dag"),
            None,
        )
        .await?,
    );
    rows.push(
        api.time(raw, "agents", "/api/v1/agents".to_string(), None)
            .await?,
    );
    rows.push(
        api.time(raw, "memories", "/api/v1/memories".to_string(), None)
            .await?,
    );

    let _ = stop.send(());
    server.await.map_err(failed)?.map_err(failed)?;
    backend.close().await;
    Ok(rows)
}

/// A cursor of the newest-first order after one task, as the API's `after`, and the task's
/// id and submission time as SQL literals.
struct DeepCursor {
    text: String,
    id: String,
    at: String,
}

impl DeepCursor {
    fn new(id: String, calculated_priority: f64, at: String) -> Self {
        Self {
            text: format!("newest~{:016x}~{at}~{id}", calculated_priority.to_bits()),
            id,
            at,
        }
    }
}

/// The task at `offset` in newest-first order.
fn sqlite_cursor(conn: &rusqlite::Connection, offset: usize) -> Result<DeepCursor, BenchError> {
    let (id, priority, at) = conn.query_row(
        "SELECT id, calculated_priority, submitted_at FROM tasks
         ORDER BY submitted_at DESC, id DESC LIMIT 1 OFFSET ?1",
        [i64::try_from(offset).map_err(failed)?],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    Ok(DeepCursor::new(id, priority, at))
}

async fn pg_cursor(conn: &mut sqlx::PgConnection, offset: usize) -> Result<DeepCursor, BenchError> {
    let (id, priority, at): (Uuid, f64, DateTime<Utc>) = sqlx::query_as(
        "SELECT id, calculated_priority, submitted_at FROM tasks
         ORDER BY submitted_at DESC, id DESC LIMIT 1 OFFSET $1",
    )
    .bind(i64::try_from(offset).map_err(failed)?)
    .fetch_one(&mut *conn)
    .await?;
    Ok(DeepCursor::new(
        id.to_string(),
        priority,
        timestamp::format(&at),
    ))
}

/// The dashboard's API on one server.
struct Api {
    http: reqwest::Client,
    base: String,
    samples: usize,
}

impl Api {
    /// GETs `path` and reads the whole answer as JSON.
    async fn get(&self, path: &str) -> Result<serde_json::Value, BenchError> {
        let url = format!("{}{path}", self.base);
        let response = self.http.get(&url).send().await.map_err(failed)?;
        let status = response.status();
        let body = response.bytes().await.map_err(failed)?;
        if !status.is_success() {
            return Err(BenchError(format!(
                "GET {url}: {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        serde_json::from_slice(&body).map_err(failed)
    }

    /// Times `path`, then `read` raw, each after [`WARM_UP`] untimed calls.
    async fn time(
        &self,
        raw: &mut dyn Raw,
        call: &str,
        path: String,
        read: Option<RawRead>,
    ) -> Result<Timed, BenchError> {
        let mut ours = Samples::with_capacity(self.samples);
        for i in 0..WARM_UP + self.samples {
            let t = Instant::now();
            self.get(&path).await?;
            if i >= WARM_UP {
                ours.push(t.elapsed());
            }
        }
        let raw = match read {
            Some(read) => Some(time_raw(raw, &read, self.samples).await?),
            None => None,
        };
        let row = Timed {
            call: call.to_string(),
            ours,
            raw,
        };
        println!("  {row}");
        Ok(row)
    }
}

async fn time_raw(
    raw: &mut dyn Raw,
    read: &RawRead,
    samples: usize,
) -> Result<Samples, BenchError> {
    let mut timed = Samples::with_capacity(samples);
    for i in 0..WARM_UP + samples {
        let t = Instant::now();
        raw.read(read).await?;
        if i >= WARM_UP {
            timed.push(t.elapsed());
        }
    }
    Ok(timed)
}

/// Submits [`DAG_TASKS`] tasks through the queue: all but one in layers of [`DAG_WIDTH`],
/// each waiting for two tasks of the layer before, and a last one waiting for the last layer,
/// so that every other task is an ancestor of it; answers the id of the last.
async fn submit_dag(backend: &Backend) -> Result<Uuid, BenchError> {
    let queue = TaskQueue::new(backend.queue_store.clone());
    let mut ids: Vec<Uuid> = Vec::with_capacity(DAG_TASKS);
    for i in 0..DAG_TASKS - 1 {
        let (layer, k) = (i / DAG_WIDTH, i % DAG_WIDTH);
        let dependencies = if layer == 0 {
            Vec::new()
        } else {
            let before = (layer - 1) * DAG_WIDTH;
            vec![ids[before + k], ids[before + (k + 1) % DAG_WIDTH]]
        };
        let task = queue
            .submit(NewTask {
                dependencies,
                ..NewTask::new(format!("dag {layer}.{k}"), "a step", AGENT_TYPE)
            })
            .await
            .map_err(failed)?;
        ids.push(task.id);
    }
    let last_layer = (DAG_TASKS - 2) / DAG_WIDTH * DAG_WIDTH;
    let last = queue
        .submit(NewTask {
            dependencies: ids[last_layer..].to_vec(),
            ..NewTask::new("dag end", "the last step", AGENT_TYPE)
        })
        .await
        .map_err(failed)?;
    Ok(last.id)
}
