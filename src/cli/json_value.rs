//! Values given on the command line: inline, or `@PATH` to read them from a file; JSON, or
//! plain text where a command takes text.

use std::borrow::Cow;

use serde_json::Value;

use super::error::{CliError, ExitCode};
use abathur_core::error::ValidationError;

/// `text` as a JSON value: the text itself, or the contents of the file `@PATH` names.
///
/// # Errors
/// Invalid input (exit 4) naming `field` when the text is not JSON or the file cannot be
/// read.
pub fn read(field: &'static str, text: &str) -> Result<Value, CliError> {
    let json = read_text(field, text)?;
    let source = match text.strip_prefix('@') {
        Some(path) => format!(" (in {path})"),
        None => String::new(),
    };
    serde_json::from_str(&json).map_err(|e| {
        let hint = if text.starts_with('@') || json.trim_start().starts_with(['{', '[', '"']) {
            ""
        } else {
            "; text must be quoted as a JSON string, like '\"some text\"'"
        };
        ValidationError::new(field, format!("is not valid JSON{source}: {e}{hint}")).into()
    })
}

/// `text` itself, or the contents of the file `@PATH` names, as text.
///
/// # Errors
/// Invalid input (exit 4) naming `field` when the file cannot be read or is not UTF-8.
pub fn read_text<'a>(field: &'static str, text: &'a str) -> Result<Cow<'a, str>, CliError> {
    match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map(Cow::Owned).map_err(|e| {
            CliError::new(
                ExitCode::Invalid,
                format!("cannot read {field} from {path}: {e}"),
            )
        }),
        None => Ok(Cow::Borrowed(text)),
    }
}

/// [`read`] for an optional argument.
///
/// # Errors
/// As for [`read`].
pub fn read_opt(field: &'static str, text: Option<&str>) -> Result<Option<Value>, CliError> {
    text.map(|text| read(field, text)).transpose()
}
