//! Text helpers every store shares: prefix search as an index range.

/// The least string greater than every string that starts with `prefix`, or `None` when there
/// is none (`prefix` is empty, or all U+10FFFF). Together with `>= prefix` it bounds an index
/// range that holds exactly the strings with this prefix in byte order (UTF-8 byte order is
/// code point order, which both SQLite's `BINARY` and PostgreSQL's `COLLATE "C"` follow), with
/// no pattern syntax, so `%` and `_` are ordinary characters.
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// How errors and messages name a memory: `namespace/key`.
pub fn memory_id(namespace: &str, key: &str) -> String {
    format!("{namespace}/{key}")
}

#[cfg(test)]
mod tests {
    use super::prefix_upper_bound;

    #[test]
    fn the_upper_bound_is_the_next_string_after_every_extension_of_the_prefix() {
        assert_eq!(prefix_upper_bound("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_upper_bound("a%").as_deref(), Some("a&"));
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        // U+D7FF is followed by U+E000: surrogates are not characters.
        assert_eq!(prefix_upper_bound("\u{D7FF}").as_deref(), Some("\u{E000}"));
    }
}
