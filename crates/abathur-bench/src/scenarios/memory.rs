//! Scenario 6: memory get and prefix search at 1,000,000 entries, through our repository and
//! through the same SQL text raw.

use std::time::Instant;

use abathur::domain::ports::MemoryRepository;
use abathur::infrastructure::database::{DatabaseConfig, DatabaseConnection, MemoryRepositoryImpl};
use rusqlite::types::Value;

use super::{count, warm_up, Lcg};
use crate::fixture::{self, memory_address};
use crate::raw::{MEMORY_GET_SQL, MEMORY_SEARCH_SQL};
use crate::report::{Measure, Row};
use crate::stats::Samples;
use crate::{BenchError, Context, Findings, Scenario};

/// Entries each searched prefix holds (one topic), and the search's limit.
const PER_TOPIC: usize = 100;

/// The prefix of topic `i`'s namespace and the least string above every extension of it.
fn topic_prefix(i: usize) -> (String, String) {
    let (namespace, _) = memory_address(i * PER_TOPIC);
    let mut upper = namespace.clone();
    // Topic namespaces end in an ASCII digit, so the successor is one character up.
    let last = upper.pop().map_or('0', |c| char::from(c as u8 + 1));
    upper.push(last);
    (namespace, upper)
}

pub async fn run(cx: &Context, findings: &mut Findings) -> Result<Vec<Row>, BenchError> {
    let s = cx.sizes;
    let title = Scenario::Memory.title();
    let path = cx.db_path("memory");
    fixture::create(&path).await?;
    let loaded = Instant::now();
    {
        let mut conn = fixture::raw(&path)?;
        fixture::load_memories(&mut conn, s.memories)?;
        conn.close().map_err(|(_, e)| e)?;
    }
    println!(
        "  loaded {} memories in {:.1} s",
        count(s.memories),
        loaded.elapsed().as_secs_f64()
    );
    let topics = s.memories / PER_TOPIC;

    // The baseline first, then ours, each over the same sequence of keys.
    let conn = fixture::raw(&path)?;
    let mut base_get = Samples::with_capacity(s.memory_gets);
    let mut keys = Lcg::new(7);
    let started = Instant::now();
    let warm = warm_up(s.memory_gets);
    for i in 0..warm + s.memory_gets {
        let (namespace, key) = memory_address(keys.below(s.memories));
        let t = Instant::now();
        let row: Vec<Value> = conn
            .prepare_cached(MEMORY_GET_SQL)?
            .query_row([&namespace, &key], |r| (0..11).map(|i| r.get(i)).collect())?;
        if i >= warm {
            base_get.push(t.elapsed());
        }
        if row.len() != 11 {
            return Err(BenchError("a memory row lacks columns".into()));
        }
    }
    let base_get = Measure::latency(started.elapsed(), base_get);
    let mut base_search = Samples::with_capacity(s.memory_searches);
    let mut picks = Lcg::new(11);
    let started = Instant::now();
    let warm = warm_up(s.memory_searches);
    for i in 0..warm + s.memory_searches {
        let (prefix, upper) = topic_prefix(picks.below(topics));
        let t = Instant::now();
        let found: Vec<Vec<Value>> = conn
            .prepare_cached(MEMORY_SEARCH_SQL)?
            .query_map(
                rusqlite::params![
                    prefix,
                    upper,
                    None::<String>,
                    None::<String>,
                    PER_TOPIC as i64
                ],
                |r| (0..11).map(|i| r.get(i)).collect(),
            )?
            .collect::<Result<_, _>>()?;
        if i >= warm {
            base_search.push(t.elapsed());
        }
        if found.len() != PER_TOPIC {
            return Err(BenchError(format!(
                "the baseline search found {}",
                found.len()
            )));
        }
    }
    let base_search = Measure::latency(started.elapsed(), base_search);
    drop(conn);

    let db = DatabaseConnection::open_path(&path, DatabaseConfig::default()).await?;
    let repo = MemoryRepositoryImpl::new(db.pool().clone());
    let mut get = Samples::with_capacity(s.memory_gets);
    let mut keys = Lcg::new(7);
    let started = Instant::now();
    let warm = warm_up(s.memory_gets);
    for i in 0..warm + s.memory_gets {
        let (namespace, key) = memory_address(keys.below(s.memories));
        let t = Instant::now();
        let found = repo.get(&namespace, &key).await?;
        if i >= warm {
            get.push(t.elapsed());
        }
        if found.is_none() {
            return Err(BenchError(format!("memory {namespace}/{key} not found")));
        }
    }
    let get = Measure::latency(started.elapsed(), get);
    let mut search = Samples::with_capacity(s.memory_searches);
    let mut picks = Lcg::new(11);
    let started = Instant::now();
    let warm = warm_up(s.memory_searches);
    for i in 0..warm + s.memory_searches {
        let (prefix, _) = topic_prefix(picks.below(topics));
        let t = Instant::now();
        let found = repo.search(&prefix, None, PER_TOPIC).await?;
        if i >= warm {
            search.push(t.elapsed());
        }
        if found.len() != PER_TOPIC {
            return Err(BenchError(format!(
                "search {prefix:?} found {}",
                found.len()
            )));
        }
    }
    let search = Measure::latency(started.elapsed(), search);
    db.close().await;

    findings.memory_get_p99 = get.latency.percentile(99.0);
    let get = Row::new(
        title,
        format!(
            "get, {} entries, {} calls",
            count(s.memories),
            count(s.memory_gets)
        ),
        get,
    )
    .baseline(base_get);
    get.print();
    let search = Row::new(
        title,
        format!(
            "prefix search (one topic: {PER_TOPIC} hits, limit {PER_TOPIC}), {} calls",
            count(s.memory_searches)
        ),
        search,
    )
    .baseline(base_search);
    search.print();
    Ok(vec![get, search])
}
