//! JSON values given on the command line: inline, or `@PATH` to read them from a file.

use serde_json::Value;

use super::error::{CliError, ExitCode};
use abathur_core::error::ValidationError;

/// `text` as a JSON value: the text itself, or the contents of the file `@PATH` names.
///
/// # Errors
/// Invalid input (exit 4) naming `field` when the text is not JSON or the file cannot be
/// read.
pub fn read(field: &'static str, text: &str) -> Result<Value, CliError> {
    let (source, owned);
    let json = match text.strip_prefix('@') {
        Some(path) => {
            owned = std::fs::read_to_string(path).map_err(|e| {
                CliError::new(
                    ExitCode::Invalid,
                    format!("cannot read {field} from {path}: {e}"),
                )
            })?;
            source = format!(" (in {path})");
            owned.as_str()
        }
        None => {
            source = String::new();
            text
        }
    };
    serde_json::from_str(json).map_err(|e| {
        let hint = if text.starts_with('@') || json.trim_start().starts_with(['{', '[', '"']) {
            ""
        } else {
            "; text must be quoted as a JSON string, like '\"some text\"'"
        };
        ValidationError::new(field, format!("is not valid JSON{source}: {e}{hint}")).into()
    })
}

/// [`read`] for an optional argument.
///
/// # Errors
/// As for [`read`].
pub fn read_opt(field: &'static str, text: Option<&str>) -> Result<Option<Value>, CliError> {
    text.map(|text| read(field, text)).transpose()
}
