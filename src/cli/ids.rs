//! Ids as people type them: a full UUID, or any unambiguous prefix of one, as with git.

use std::fmt;
use std::sync::Arc;

use abathur_core::ports::{IdKind, IdLookup};
use uuid::Uuid;

use super::error::{CliError, ExitCode};

/// The fewest hex digits a prefix may have: shorter ones match too much to be meant.
const MIN_DIGITS: usize = 4;
/// How many candidates an ambiguous prefix lists.
const SHOWN: usize = 10;

/// An id as typed, checked for form but not yet looked up: lower-case hex digits with the
/// hyphens where a UUID has them, possibly cut short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdArg(String);

impl IdArg {
    /// The full UUID, when all 32 digits were given.
    fn full(&self) -> Option<Uuid> {
        Uuid::try_parse(&self.0).ok()
    }
}

impl fmt::Display for IdArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// clap's parser for id arguments.
pub fn parse_id(text: &str) -> Result<IdArg, String> {
    let text = text.trim().to_ascii_lowercase();
    let digits: String = text.chars().filter(|c| *c != '-').collect();
    if let Some(bad) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "{bad:?} cannot be part of an id: ids are hex digits, like 67e55044-10b1-426f-9247-bb680e5fe0c8"
        ));
    }
    if digits.len() < MIN_DIGITS {
        return Err(format!(
            "give at least {MIN_DIGITS} characters of the id, or all of it"
        ));
    }
    if digits.len() > 32 {
        return Err("an id has 32 hex digits; this has more".to_string());
    }
    // Hyphens go where a UUID has them, whatever the person typed.
    let mut canonical = String::with_capacity(36);
    for (i, digit) in digits.chars().enumerate() {
        if matches!(i, 8 | 12 | 16 | 20) {
            canonical.push('-');
        }
        canonical.push(digit);
    }
    Ok(IdArg(canonical))
}

/// Turns typed ids into stored ones.
pub struct Ids {
    lookup: Arc<dyn IdLookup>,
}

impl Ids {
    pub fn new(lookup: Arc<dyn IdLookup>) -> Self {
        Self { lookup }
    }

    /// The one id of `kind` that `id` names. A full id is returned as it is, whether or not
    /// it exists: the command that uses it reports a missing record in its own terms.
    ///
    /// # Errors
    /// Not found (exit 3) when no id starts with the prefix; usage (exit 2), listing the
    /// candidates, when several do.
    pub async fn resolve(&self, kind: IdKind, id: &IdArg) -> Result<Uuid, CliError> {
        if let Some(full) = id.full() {
            return Ok(full);
        }
        let found = self
            .lookup
            .ids_with_prefix(kind, &id.0, SHOWN as u32 + 1)
            .await?;
        match found.as_slice() {
            [] => Err(CliError::new(
                ExitCode::NotFound,
                format!("no {} id starts with {id}", kind.name()),
            )),
            [one] => Ok(*one),
            many => {
                let mut message = format!(
                    "the {} id prefix {id} is ambiguous; it matches:",
                    kind.name()
                );
                for candidate in many.iter().take(SHOWN) {
                    message.push_str(&format!("\n  {candidate}"));
                }
                if many.len() > SHOWN {
                    message.push_str("\n  ...");
                }
                Err(CliError::new(ExitCode::Usage, message))
            }
        }
    }

    /// [`Ids::resolve`] for an optional id.
    ///
    /// # Errors
    /// As for [`Ids::resolve`].
    pub async fn resolve_opt(
        &self,
        kind: IdKind,
        id: Option<&IdArg>,
    ) -> Result<Option<Uuid>, CliError> {
        match id {
            Some(id) => self.resolve(kind, id).await.map(Some),
            None => Ok(None),
        }
    }

    /// [`Ids::resolve`] for each of `ids`.
    ///
    /// # Errors
    /// As for [`Ids::resolve`].
    pub async fn resolve_all(&self, kind: IdKind, ids: &[IdArg]) -> Result<Vec<Uuid>, CliError> {
        let mut resolved = Vec::with_capacity(ids.len());
        for id in ids {
            resolved.push(self.resolve(kind, id).await?);
        }
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn ids_are_lower_cased_and_hyphenated_like_uuids() {
        let full = "67E55044-10B1-426F-9247-BB680E5FE0C8";
        assert_eq!(
            parse_id(full).unwrap().to_string(),
            full.to_ascii_lowercase()
        );
        assert_eq!(
            parse_id("67e5504410b1").unwrap().to_string(),
            "67e55044-10b1"
        );
        assert_eq!(parse_id(" 67e5 ").unwrap().to_string(), "67e5");
    }

    #[test]
    fn short_long_and_foreign_ids_are_refused() {
        for bad in ["", "67e", "67e5x", "ghij", &"a".repeat(33), "67e5'; DROP"] {
            assert!(parse_id(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
