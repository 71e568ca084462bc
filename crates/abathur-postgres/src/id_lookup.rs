//! Ids by prefix, read from each table's primary key index.
//!
//! Ids are `uuid`s, whose order is the order of their text form (lower-case hex, compared
//! byte by byte). The ids whose text starts with a prefix are therefore one range of the
//! `uuid` type: from the prefix's hex digits padded with `0` to the same padded with `f`. That
//! range is read from the primary key index, rather than comparing `id::text` row by row.

use abathur_core::error::DatabaseError;
use abathur_core::ports::{IdKind, IdLookup};
use async_trait::async_trait;
use sqlx::PgPool;
use uuid::Uuid;

use crate::errors::on;

/// [`IdLookup`] on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgIdLookup {
    pool: PgPool,
}

impl PgIdLookup {
    /// A lookup on `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// The length of an id's text form, `8-4-4-4-12` hex digits.
const ID_TEXT_LEN: usize = 36;

/// The range of ids whose text form starts with `prefix`, first and last included; `None` when
/// no id can start with it (a character that is not lower-case hex where an id has a digit,
/// or not `-` where it has a hyphen, or a prefix longer than an id).
pub(crate) fn prefix_range(prefix: &str) -> Option<(Uuid, Uuid)> {
    if prefix.len() > ID_TEXT_LEN {
        return None;
    }
    let mut digits = String::with_capacity(32);
    for (i, c) in prefix.chars().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != '-' {
                return None;
            }
        } else if c.is_ascii_digit() || ('a'..='f').contains(&c) {
            digits.push(c);
        } else {
            return None;
        }
    }
    let low = format!("{digits:0<32}");
    let high = format!("{digits:f<32}");
    Some((Uuid::parse_str(&low).ok()?, Uuid::parse_str(&high).ok()?))
}

#[async_trait]
impl IdLookup for PgIdLookup {
    async fn ids_with_prefix(
        &self,
        kind: IdKind,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<Uuid>, DatabaseError> {
        let Some((low, high)) = prefix_range(prefix) else {
            return Ok(Vec::new());
        };
        let limit = i64::from(limit);
        let ids = match kind {
            IdKind::Task => {
                sqlx::query_scalar!(
                    "SELECT id FROM tasks WHERE id BETWEEN $1 AND $2 ORDER BY id LIMIT $3",
                    low,
                    high,
                    limit
                )
                .fetch_all(&self.pool)
                .await
            }
            IdKind::Attempt => {
                sqlx::query_scalar!(
                    "SELECT id FROM task_attempts WHERE id BETWEEN $1 AND $2 ORDER BY id LIMIT $3",
                    low,
                    high,
                    limit
                )
                .fetch_all(&self.pool)
                .await
            }
            IdKind::Session => {
                sqlx::query_scalar!(
                    "SELECT id FROM sessions WHERE id BETWEEN $1 AND $2 ORDER BY id LIMIT $3",
                    low,
                    high,
                    limit
                )
                .fetch_all(&self.pool)
                .await
            }
            IdKind::Agent => {
                sqlx::query_scalar!(
                    "SELECT id FROM agents WHERE id BETWEEN $1 AND $2 ORDER BY id LIMIT $3",
                    low,
                    high,
                    limit
                )
                .fetch_all(&self.pool)
                .await
            }
        };
        ids.map_err(on(kind.name(), prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_range;
    use uuid::Uuid;

    #[test]
    fn a_prefix_is_the_range_of_ids_that_start_with_it() {
        let id = Uuid::new_v4();
        let text = id.to_string();
        for len in 0..=36 {
            let (low, high) = prefix_range(&text[..len]).expect("a prefix of an id");
            assert!(low <= id && id <= high, "prefix of {len}");
            assert!(low.to_string().starts_with(&text[..len]));
            assert!(high.to_string().starts_with(&text[..len]));
        }
        assert_eq!(prefix_range(&text), Some((id, id)));
        assert_eq!(
            prefix_range(""),
            Some((Uuid::nil(), Uuid::from_u128(u128::MAX)))
        );
    }

    #[test]
    fn what_no_id_starts_with_is_no_range() {
        for prefix in ["zz", "A", "0123456-", "01234567x", "0123456789", "%", "_"] {
            assert_eq!(prefix_range(prefix), None, "{prefix}");
        }
        let long = format!("{}0", Uuid::new_v4());
        assert_eq!(prefix_range(&long), None);
    }
}
