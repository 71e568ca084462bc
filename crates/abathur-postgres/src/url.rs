//! Checking a PostgreSQL URL before anything connects with it.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;

/// Checks that `url` is a PostgreSQL URL the driver takes (a malformed port, an unknown
/// `sslmode`, ...), without connecting.
///
/// # Errors
/// What is wrong with it, in the driver's words; the message never holds the password.
pub fn check_url(url: &str) -> Result<(), String> {
    PgConnectOptions::from_str(url)
        .map(|_| ())
        .map_err(|e| crate::redact(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn urls_the_driver_takes_pass_and_others_say_why() {
        assert!(check_url("postgres://u:p@h:5432/db?sslmode=disable").is_ok());
        assert!(check_url("postgres://h/db").is_ok());
        let err = check_url("postgres://u:secret@h:notaport/db").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }
}
