//! Decoding of stored values into domain values. A value outside what the domain allows (an
//! unknown enum name, an integer out of range) is a [`DatabaseError::CorruptRow`] naming the
//! table, the row and the column: never a silent default.

use std::fmt::Display;
use std::str::FromStr;

use abathur_core::error::DatabaseError;

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

    /// Any `FromStr` value: the stored enums.
    pub fn parse<T>(&self, column: &'static str, text: &str) -> Result<T, DatabaseError>
    where
        T: FromStr,
        T::Err: Display,
    {
        text.parse().map_err(|e| self.corrupt(column, e))
    }

    /// An integer that must fit a narrower type.
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
