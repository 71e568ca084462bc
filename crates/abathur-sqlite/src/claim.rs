//! Which ready tasks a claim takes: the statements that find them and the merge that ranks
//! them. The ranking is [`PriorityPolicy`]'s, computed in Rust; the statements only read.
//!
//! A task's rank at `now` is its claim key (`tasks.claim_key`, [`PriorityPolicy::key`], written
//! when it became ready and fixed while it waits) plus its deadline urgency at `now`
//! ([`PriorityPolicy::urgency`]), which is 0 unless the deadline is within the horizon or past.
//! So a claim of `n` tasks reads two sets, each through an index, and never sorts every ready
//! task:
//!
//! - [`BY_KEY`]: the first `n` claimable tasks in key order among those whose deadline is not
//!   within the horizon (their urgency is 0, so the key is their rank), read in index order;
//! - [`BY_DEADLINE`]: every claimable task whose deadline is within the horizon or past, read
//!   through the deadline index, ranked here by key plus urgency.
//!
//! The best `n` of both are the answer: a task of the first kind that is not among the first
//! `n` of its kind is outranked by `n` tasks already read. Ties go to the earliest submitted,
//! then the lowest id.
//!
//! Each statement has a form per agent-type filter of a claim ([`AgentFilter`]).

use abathur_core::queue::{PriorityPolicy, QueueError};
use abathur_core::timestamp;
use chrono::{DateTime, Utc};
use rusqlite::Connection;

use super::errors::raw_on;

/// A statement of the claim, with `$types` the agent-type filter of its form.
macro_rules! by_key {
    ($types:expr) => {
        concat!(
            "SELECT id, claim_key, submitted_at, NULL FROM tasks t
             WHERE status = 'ready'",
            $types,
            " AND (deadline IS NULL OR deadline > :until)
               AND NOT EXISTS (SELECT 1 FROM task_schedule s
                               WHERE s.task_id = t.id AND s.run_after > :now)
             ORDER BY claim_key DESC, submitted_at, id
             LIMIT :limit"
        )
    };
}

/// As [`by_key`], for the tasks whose deadline is within the horizon or past.
macro_rules! by_deadline {
    ($types:expr) => {
        concat!(
            "SELECT id, claim_key, submitted_at, deadline FROM tasks t
             WHERE status = 'ready'",
            $types,
            " AND deadline <= :until
               AND NOT EXISTS (SELECT 1 FROM task_schedule s
                               WHERE s.task_id = t.id AND s.run_after > :now)"
        )
    };
}

/// One agent type reads the index that leads with it; several read the key index and skip
/// the other types' rows (`+` keeps the planner from gathering each type and sorting them).
macro_rules! one_type {
    () => {
        " AND agent_type = :agent_type"
    };
}
macro_rules! many_types {
    () => {
        " AND +agent_type IN (SELECT value FROM json_each(:agent_types))"
    };
}

/// The claimable tasks whose deadline is not within the horizon, best key first, for each
/// [`AgentFilter`] in order: `:now`, `:until` ([`PriorityPolicy::urgent_until`]), `:limit`,
/// and `:agent_type` or `:agent_types` (a JSON array).
pub(crate) const BY_KEY: [&str; 3] = [by_key!(""), by_key!(one_type!()), by_key!(many_types!())];

/// The claimable tasks whose deadline is within the horizon or past, unordered, for each
/// [`AgentFilter`] in order: `:now`, `:until`, and `:agent_type` or `:agent_types`.
pub(crate) const BY_DEADLINE: [&str; 3] = [
    by_deadline!(""),
    by_deadline!(one_type!()),
    by_deadline!(many_types!()),
];

/// Every statement of the claim, by name, for the tests that prepare them.
#[cfg_attr(not(test), allow(dead_code))] // reason: read only by tests
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("BY_KEY_ANY_TYPE", BY_KEY[0]),
    ("BY_KEY_ONE_TYPE", BY_KEY[1]),
    ("BY_KEY_MANY_TYPES", BY_KEY[2]),
    ("BY_DEADLINE_ANY_TYPE", BY_DEADLINE[0]),
    ("BY_DEADLINE_ONE_TYPE", BY_DEADLINE[1]),
    ("BY_DEADLINE_MANY_TYPES", BY_DEADLINE[2]),
];

/// The agent types a claim asks for, as its statements filter them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgentFilter<'a> {
    /// Any type.
    Any,
    /// Exactly this one.
    One(&'a str),
    /// Any of these, at least two.
    Many(&'a [String]),
}

impl<'a> AgentFilter<'a> {
    pub(crate) fn of(agent_types: &'a [String]) -> Self {
        match agent_types {
            [] => Self::Any,
            [one] => Self::One(one),
            many => Self::Many(many),
        }
    }

    /// The index of this form in [`BY_KEY`] and [`BY_DEADLINE`].
    fn form(self) -> usize {
        match self {
            Self::Any => 0,
            Self::One(_) => 1,
            Self::Many(_) => 2,
        }
    }
}

/// A claimable task as the claim ranks it.
struct Candidate {
    id: String,
    rank: f64,
    submitted_at: String,
}

fn raw(e: rusqlite::Error) -> QueueError {
    QueueError::Database(raw_on("task", "")(e))
}

/// The deadline a row's text stands for. Total: a deadline stored by an older version that
/// does not parse counts as passed once its text is not after `now`'s (timestamps are
/// fixed-width, so text order is time order), and as no deadline before.
pub(crate) fn deadline(text: &str, now_text: &str) -> Option<DateTime<Utc>> {
    match timestamp::parse(text) {
        Ok(deadline) => Some(deadline),
        Err(_) => (text <= now_text).then_some(timestamp::MIN),
    }
}

/// The ids of up to `limit` claimable tasks of `filter`, the most urgent at `now` first.
pub(crate) fn most_urgent(
    conn: &Connection,
    filter: AgentFilter<'_>,
    limit: u32,
    priority: &PriorityPolicy,
    now: DateTime<Utc>,
) -> Result<Vec<String>, QueueError> {
    let now_text = timestamp::format(&now);
    let until = timestamp::format(&priority.urgent_until(now));
    let limit = i64::from(limit);
    let (type_name, types): (&str, String) = match filter {
        AgentFilter::Any => ("", String::new()),
        AgentFilter::One(agent_type) => (":agent_type", agent_type.to_string()),
        AgentFilter::Many(types) => (":agent_types", serde_json::Value::from(types).to_string()),
    };
    let read = |sql: &str, with_limit: bool| -> Result<Vec<Candidate>, QueueError> {
        let mut params: Vec<(&str, &dyn rusqlite::ToSql)> =
            vec![(":now", &now_text), (":until", &until)];
        if with_limit {
            params.push((":limit", &limit));
        }
        if !type_name.is_empty() {
            params.push((type_name, &types));
        }
        let mut statement = conn.prepare_cached(sql).map_err(raw)?;
        let found = statement
            .query_map(params.as_slice(), |r| {
                let key: Option<f64> = r.get(1)?;
                let deadline_text: Option<String> = r.get(3)?;
                let urgency = priority.urgency(
                    deadline_text.and_then(|text| deadline(&text, &now_text)),
                    now,
                );
                Ok(Candidate {
                    id: r.get(0)?,
                    // A task made ready outside the queue has no key: it comes after every
                    // other.
                    rank: key.map_or(f64::NEG_INFINITY, |key| key + urgency),
                    submitted_at: r.get(2)?,
                })
            })
            .map_err(raw)?;
        found.collect::<Result<Vec<_>, _>>().map_err(raw)
    };
    let mut candidates = read(BY_DEADLINE[filter.form()], false)?;
    candidates.extend(read(BY_KEY[filter.form()], true)?);
    candidates.sort_by(|a, b| {
        b.rank
            .total_cmp(&a.rank)
            .then_with(|| a.submitted_at.cmp(&b.submitted_at))
            .then_with(|| a.id.cmp(&b.id))
    });
    candidates.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(candidates.into_iter().map(|c| c.id).collect())
}

#[cfg(test)]
mod tests {
    //! The claim's statements prepare and read indexes (`EXPLAIN QUERY PLAN` of each form,
    //! against the migrated schema), and the keys migration 0006 wrote are the policy's.

    use super::*;

    /// A database with every migration up to `last` applied.
    fn migrated_to(last: i64) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        for migration in crate::MIGRATOR.iter() {
            if !migration.migration_type.is_down_migration() && migration.version <= last {
                conn.execute_batch(&migration.sql).unwrap();
            }
        }
        conn
    }

    /// A database with every migration applied.
    fn migrated() -> Connection {
        migrated_to(i64::MAX)
    }

    /// Migration 0006 keys the ready tasks of older versions in SQL, with the default policy;
    /// its keys must be the ones `PriorityPolicy::key` gives.
    #[test]
    fn the_migration_keys_ready_tasks_as_the_default_policy_does() {
        let conn = migrated_to(5);
        let insert = |id: &str, status: &str, submitted_at: &str| {
            conn.execute(
                "INSERT INTO tasks (id, summary, description, agent_type, priority, status,
                     dependency_depth, submitted_at, last_updated_at, source)
                 VALUES (?1, 's', 'd', 'a', 7, ?2, 3, ?3, ?3, 'human')",
                [id, status, submitted_at],
            )
            .unwrap();
        };
        let (plain, delayed, blocked) = (
            "00000000-0000-0000-0000-000000000001",
            "00000000-0000-0000-0000-000000000002",
            "00000000-0000-0000-0000-000000000003",
        );
        insert(plain, "ready", "2026-11-28T09:00:00.250000Z");
        insert(delayed, "ready", "2026-11-28T09:00:00.000000Z");
        insert(blocked, "blocked", "2026-11-28T09:00:00.000000Z");
        conn.execute(
            "INSERT INTO task_schedule (task_id, run_after) VALUES (?1, ?2)",
            [delayed, "2026-11-28T10:30:00.000000Z"],
        )
        .unwrap();
        let migration = crate::MIGRATOR
            .iter()
            .find(|m| m.version == 6 && !m.migration_type.is_down_migration())
            .unwrap();
        conn.execute_batch(&migration.sql).unwrap();
        let key = |id: &str| -> Option<f64> {
            conn.query_row("SELECT claim_key FROM tasks WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap()
        };
        let policy = PriorityPolicy::default();
        let at = |text: &str| timestamp::parse(text).unwrap();
        for (id, ready_since) in [
            (plain, "2026-11-28T09:00:00.250000Z"),
            (delayed, "2026-11-28T10:30:00.000000Z"),
        ] {
            let expected = policy.key(7, 3, at(ready_since));
            let stored = key(id).unwrap();
            // julianday() keeps time to about a millisecond: 1e-6 of a point.
            assert!((stored - expected).abs() < 1e-5, "{stored} vs {expected}");
        }
        assert_eq!(key(blocked), None);
    }

    /// The detail lines of the statement's query plan.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let values = vec!["x"; statement.parameter_count()];
        let lines = statement
            .query_map(rusqlite::params_from_iter(values), |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        lines
    }

    #[track_caller]
    fn assert_reads(plan: &[String], index: &str) {
        assert!(
            plan.iter()
                .any(|line| line.starts_with("SEARCH t USING INDEX ") && line.contains(index)),
            "expected a search of {index} in {plan:?}"
        );
        for line in plan {
            assert!(!line.starts_with("SCAN t"), "a scan of tasks in {plan:?}");
            assert!(!line.contains("TEMP B-TREE"), "a sort in {plan:?}");
        }
    }

    #[test]
    fn the_key_part_of_a_claim_of_any_type_reads_the_key_index_in_order() {
        let conn = migrated();
        let plan = plan(&conn, BY_KEY[AgentFilter::Any.form()]);
        println!("{plan:#?}");
        assert_reads(&plan, "idx_tasks_claim_key ");
    }

    #[test]
    fn the_key_part_of_a_claim_of_one_type_reads_the_index_that_leads_with_it() {
        let conn = migrated();
        let plan = plan(&conn, BY_KEY[AgentFilter::One("x").form()]);
        println!("{plan:#?}");
        assert_reads(&plan, "idx_tasks_claim_key_type ");
    }

    #[test]
    fn the_key_part_of_a_claim_of_several_types_reads_the_key_index_in_order() {
        let conn = migrated();
        let plan = plan(&conn, BY_KEY[AgentFilter::Many(&[]).form()]);
        println!("{plan:#?}");
        assert_reads(&plan, "idx_tasks_claim_key ");
    }

    #[test]
    fn the_deadline_part_of_a_claim_reads_the_deadline_index_in_every_form() {
        let conn = migrated();
        for filter in [
            AgentFilter::Any,
            AgentFilter::One("x"),
            AgentFilter::Many(&[]),
        ] {
            let plan = plan(&conn, BY_DEADLINE[filter.form()]);
            println!("{filter:?}: {plan:#?}");
            assert_reads(&plan, "idx_tasks_ready_deadline ");
        }
    }
}
