//! Decoding of stored text into domain values. A value that does not parse is a
//! [`DatabaseError::CorruptRow`] naming the table, the row and the column: never a silent
//! `None`.

use std::fmt::Display;
use std::str::FromStr;

use abathur_core::error::DatabaseError;
use abathur_core::timestamp;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// The row being decoded, for error messages.
pub(crate) struct RowContext<'a> {
    pub table: &'static str,
    pub id: &'a str,
}

impl RowContext<'_> {
    pub fn corrupt(&self, column: &'static str, reason: impl Display) -> DatabaseError {
        DatabaseError::CorruptRow {
            table: self.table,
            id: self.id.to_string(),
            column,
            reason: reason.to_string(),
        }
    }

    pub fn uuid(&self, column: &'static str, text: &str) -> Result<Uuid, DatabaseError> {
        Uuid::parse_str(text)
            .map_err(|e| self.corrupt(column, format!("{text:?} is not a UUID: {e}")))
    }

    pub fn opt_uuid(
        &self,
        column: &'static str,
        text: Option<&str>,
    ) -> Result<Option<Uuid>, DatabaseError> {
        text.map(|t| self.uuid(column, t)).transpose()
    }

    pub fn timestamp(
        &self,
        column: &'static str,
        text: &str,
    ) -> Result<DateTime<Utc>, DatabaseError> {
        timestamp::parse(text).map_err(|e| self.corrupt(column, e))
    }

    pub fn opt_timestamp(
        &self,
        column: &'static str,
        text: Option<&str>,
    ) -> Result<Option<DateTime<Utc>>, DatabaseError> {
        text.map(|t| self.timestamp(column, t)).transpose()
    }

    pub fn json(&self, column: &'static str, text: &str) -> Result<Value, DatabaseError> {
        serde_json::from_str(text).map_err(|e| self.corrupt(column, format!("not valid JSON: {e}")))
    }

    pub fn opt_json(
        &self,
        column: &'static str,
        text: Option<&str>,
    ) -> Result<Option<Value>, DatabaseError> {
        text.map(|t| self.json(column, t)).transpose()
    }

    /// Any `FromStr` value: the stored enums.
    pub fn parse<T>(&self, column: &'static str, text: &str) -> Result<T, DatabaseError>
    where
        T: FromStr,
        T::Err: Display,
    {
        text.parse().map_err(|e| self.corrupt(column, e))
    }

    /// An integer that must fit a narrower unsigned type.
    pub fn int<T: TryFrom<i64>>(
        &self,
        column: &'static str,
        value: i64,
    ) -> Result<T, DatabaseError> {
        T::try_from(value).map_err(|_| {
            self.corrupt(
                column,
                format!(
                    "{value} is out of range for a {}",
                    std::any::type_name::<T>()
                ),
            )
        })
    }

    pub fn opt_int<T: TryFrom<i64>>(
        &self,
        column: &'static str,
        value: Option<i64>,
    ) -> Result<Option<T>, DatabaseError> {
        value.map(|v| self.int(column, v)).transpose()
    }
}

/// The stored text of a JSON value.
pub(crate) fn json_text(value: &Value) -> String {
    value.to_string()
}

/// The stored text of an optional timestamp.
pub(crate) fn opt_timestamp_text(ts: Option<&DateTime<Utc>>) -> Option<String> {
    ts.map(timestamp::format)
}
