//! Machine-readable figures. Beside its text, each scenario prints one `@figure <key>
//! <value>` line per figure it measured; `rgap-bench all` runs the scenarios and collects
//! these lines, so what it tabulates is exactly what the scenario measured.

/// The prefix of a figure line.
pub const PREFIX: &str = "@figure ";

/// Prints one figure line. `key` is lower-case words joined by `_`, ending in its unit
/// (`_us`, `_ms`, `_s`, `_mib`, `_per_s`) or naming a count.
pub fn figure(key: &str, value: f64) {
    println!("{PREFIX}{} {value}", key_of(key));
}

/// `key` with every character outside `[a-z0-9_]` turned into `_` (thread names have
/// spaces).
pub fn key_of(key: &str) -> String {
    key.trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect()
}

/// Parses one figure line back into its key and value.
pub fn parse(line: &str) -> Option<(String, f64)> {
    let (key, value) = line.strip_prefix(PREFIX)?.split_once(' ')?;
    Some((key.to_owned(), value.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_line_parses_back() {
        let line = format!("{PREFIX}{} {}", key_of("thread rgap dns_us"), 1.25);
        assert_eq!(parse(&line), Some(("thread_rgap_dns_us".into(), 1.25)));
        assert_eq!(parse("  sent 5 datagrams"), None);
        assert_eq!(parse(&format!("{PREFIX}x notanumber")), None);
    }
}
