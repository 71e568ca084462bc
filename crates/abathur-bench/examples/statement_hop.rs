//! What one statement costs through sqlx against the same statement on the same connection's
//! handle, and against plain rusqlite: the measurement behind running the queue's writes on
//! the connection's handle (`docs/QUEUE.md`, "How the SQLite stores write").
//!
//! `cargo run --release -p abathur-bench --example statement_hop`

use std::str::FromStr;
use std::time::Instant;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection};

const CALLS: usize = 20_000;
const UPDATE: &str = "UPDATE t SET v = v + 1 WHERE id = ?1";

fn per_call(started: Instant, calls: usize) -> f64 {
    started.elapsed().as_secs_f64() * 1e6 / calls as f64
}

async fn through_sqlx(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    for _ in 0..CALLS / 10 {
        sqlx::query(UPDATE).bind(1_i64).execute(&mut *conn).await?;
    }
    let mut tx = conn.begin().await?;
    let started = Instant::now();
    for _ in 0..CALLS {
        sqlx::query(UPDATE).bind(1_i64).execute(&mut *tx).await?;
    }
    let sqlx_us = per_call(started, CALLS);
    let started = Instant::now();
    {
        let mut locked = tx.lock_handle().await?;
        // SAFETY: the handle is used only while `locked` parks sqlx's thread, and `raw` is
        // dropped before it; `from_handle` never closes the handle.
        let raw = unsafe { rusqlite::Connection::from_handle(locked.as_raw_handle().as_ptr()) }
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        for _ in 0..CALLS {
            raw.prepare_cached(UPDATE)
                .and_then(|mut s| s.execute([1_i64]))
                .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        }
    }
    let handle_us = per_call(started, CALLS);
    tx.commit().await?;
    println!("one UPDATE inside a transaction, {CALLS} calls:");
    println!("  through sqlx (a hop to the connection's thread each): {sqlx_us:>7.1} µs");
    println!("  on the same connection's handle, parked once:        {handle_us:>7.1} µs");
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("command: cargo run --release -p abathur-bench --example statement_hop");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("hop.db");
    let options = SqliteConnectOptions::from_str(&format!("sqlite:{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut conn = SqliteConnection::connect_with(&options).await?;
        sqlx::raw_sql(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER); INSERT INTO t VALUES (1, 0)",
        )
        .execute(&mut conn)
        .await?;
        through_sqlx(&mut conn).await?;
        conn.close().await
    })?;
    let raw = rusqlite::Connection::open(&path)?;
    raw.execute_batch("BEGIN")?;
    let started = Instant::now();
    for _ in 0..CALLS {
        raw.prepare_cached(UPDATE)?.execute([1_i64])?;
    }
    let raw_us = per_call(started, CALLS);
    raw.execute_batch("COMMIT")?;
    println!("  plain rusqlite, its own connection (the baseline):    {raw_us:>7.1} µs");
    Ok(())
}
