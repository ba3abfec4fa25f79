//! Go-compatible durations (`time.ParseDuration` / `Duration.String`).
//!
//! Configs and the `-i` flag were written for the Go rgap, so "15s", "1m30s", "250ms" and
//! "1.5h" must mean what they meant there. Negative durations parse in Go but make no sense for
//! any rgap setting, so they are rejected here with a clear message.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Shown after every error so the operator sees the accepted syntax.
const HINT: &str = "(use e.g. 15s, 1m30s)";

/// Go stores durations as i64 nanoseconds; staying within that keeps configs portable.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Units in the order Go tries them; the longest match must come first ("ms" before "m").
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),  // U+00B5 MICRO SIGN, as Go prints it
    ("\u{3bc}s", 1_000), // U+03BC GREEK SMALL LETTER MU, also accepted by Go
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
];

/// Why a duration string was refused; `Display` quotes the original text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {kind} {HINT}")]
pub struct DurationError {
    /// The text as given.
    pub text: String,
    /// What was wrong with it.
    pub kind: DurationErrorKind,
}

/// The specific problem in a duration string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationErrorKind {
    /// Empty string (or a lone sign).
    #[error("empty")]
    Empty,
    /// A number was expected (e.g. "s" or "1m.s").
    #[error("expected a number at {0:?}")]
    ExpectedNumber(String),
    /// A number without a unit ("15").
    #[error("missing unit after {0:?}")]
    MissingUnit(String),
    /// A unit rgap does not know ("15 parsecs", "3d").
    #[error("unknown unit {0:?}")]
    UnknownUnit(String),
    /// Negative durations are meaningless for rgap settings.
    #[error("must not be negative")]
    Negative,
    /// More than Go's i64 nanoseconds (about 292 years).
    #[error("out of range")]
    Overflow,
}

/// Parses a Go duration string such as "1m30s" into a non-negative [`Duration`].
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    parse_nanos(text)
        // parse_nanos caps the value at i64::MAX, so it fits in u64.
        .map(|nanos| Duration::from_nanos(nanos as u64))
        .map_err(|kind| DurationError { text: text.to_string(), kind })
}

/// Formats like Go's `Duration.String`: "0s", "250ms", "1.5µs", "1m30s", "2h0m0s".
pub fn format(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        // Below a second Go switches to the largest unit that keeps an integer part.
        let (scale, digits, unit) = match nanos {
            n if n < 1_000 => (1, 0, "ns"),
            n if n < 1_000_000 => (1_000, 3, "\u{b5}s"),
            _ => (1_000_000, 6, "ms"),
        };
        return format!("{}{}{unit}", nanos / scale, fraction(nanos % scale, digits));
    }
    let secs = nanos / 1_000_000_000;
    let frac = fraction(nanos % 1_000_000_000, 9);
    let (hours, minutes, seconds) = (secs / 3600, (secs / 60) % 60, secs % 60);
    match (hours, secs / 60) {
        (0, 0) => format!("{seconds}{frac}s"),
        (0, _) => format!("{minutes}m{seconds}{frac}s"),
        _ => format!("{hours}h{minutes}m{seconds}{frac}s"),
    }
}

/// ".5" for (5, 1): the fractional digits without trailing zeros, or "" when zero.
fn fraction(value: u128, digits: usize) -> String {
    if value == 0 {
        return String::new();
    }
    let padded = format!("{value:0digits$}");
    format!(".{}", padded.trim_end_matches('0'))
}

/// The parser proper, as Go's: `[-+]? (number unit)+`, or a lone "0".
fn parse_nanos(text: &str) -> Result<u128, DurationErrorKind> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    // Go accepts a bare "0" (with or without sign) as the only unit-less value.
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(DurationErrorKind::Empty);
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (nanos, after) = parse_component(rest)?;
        total = total.saturating_add(nanos);
        if total > MAX_NANOS {
            return Err(DurationErrorKind::Overflow);
        }
        rest = after;
    }
    if negative && total != 0 {
        return Err(DurationErrorKind::Negative);
    }
    Ok(total)
}

/// Parses one "1.5h" component from the front of `text`, returning its nanoseconds and the rest.
fn parse_component(text: &str) -> Result<(u128, &str), DurationErrorKind> {
    let (whole, after_whole) = split_digits(text);
    let (frac, after_number) = match after_whole.strip_prefix('.') {
        Some(after_dot) => split_digits(after_dot),
        None => ("", after_whole),
    };
    if whole.is_empty() && frac.is_empty() {
        return Err(DurationErrorKind::ExpectedNumber(text.to_string()));
    }
    let unit_len =
        after_number.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(after_number.len());
    let (unit, rest) = after_number.split_at(unit_len);
    if unit.is_empty() {
        let number = &text[..text.len() - after_number.len()];
        return Err(DurationErrorKind::MissingUnit(number.to_string()));
    }
    let scale = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, scale)| *scale)
        .ok_or_else(|| DurationErrorKind::UnknownUnit(unit.to_string()))?;
    Ok((component_nanos(whole, frac, scale)?, rest))
}

/// `whole.frac` times `scale`, truncated to whole nanoseconds like Go.
fn component_nanos(whole: &str, frac: &str, scale: u128) -> Result<u128, DurationErrorKind> {
    let whole_value = digits_value(whole)?;
    // Digits past 18 cannot change the result by a whole nanosecond for any unit we have;
    // dropping them (as Go does on overflow) keeps the arithmetic in range.
    let frac = &frac[..frac.len().min(18)];
    let frac_value = digits_value(frac)?;
    let frac_scale = 10u128.pow(frac.len() as u32);
    let nanos = whole_value
        .checked_mul(scale)
        .and_then(|n| n.checked_add(frac_value * scale / frac_scale))
        .ok_or(DurationErrorKind::Overflow)?;
    if nanos > MAX_NANOS {
        return Err(DurationErrorKind::Overflow);
    }
    Ok(nanos)
}

/// Value of an all-digit string ("" is 0); anything longer than i64 nanos is an overflow.
fn digits_value(digits: &str) -> Result<u128, DurationErrorKind> {
    if digits.len() > 30 {
        return Err(DurationErrorKind::Overflow);
    }
    Ok(digits.bytes().fold(0u128, |acc, d| acc * 10 + u128::from(d - b'0')))
}

/// Splits the leading ASCII digits off `text`.
fn split_digits(text: &str) -> (&str, &str) {
    let end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    text.split_at(end)
}

/// A [`Duration`] that reads and prints Go style; use it for config fields.
///
/// Deserializes from a string ("15s") or, as Go's YAML decoding did, from a plain integer meaning
/// nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    /// The wrapped duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Self {
        d.0
    }
}

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s).map(Self)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

impl serde::Serialize for GoDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct GoDurationVisitor;

        impl serde::de::Visitor<'_> for GoDurationVisitor {
            type Value = GoDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"15s\" or \"1m30s\", or integer nanoseconds")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GoDuration, E> {
                parse(v).map(GoDuration).map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<GoDuration, E> {
                if u128::from(v) > MAX_NANOS {
                    return Err(E::custom(format!("duration {v}ns is out of range")));
                }
                Ok(GoDuration(Duration::from_nanos(v)))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<GoDuration, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("duration {v}ns must not be negative")))
                    .and_then(|v| self.visit_u64(v))
            }
        }

        deserializer.deserialize_any(GoDurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_the_forms_go_configs_use() {
        assert_eq!(parse("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse("250ms").unwrap(), ms(250));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("2h45m").unwrap(), Duration::from_secs(2 * 3600 + 45 * 60));
        assert_eq!(parse("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse(".5s").unwrap(), ms(500));
        assert_eq!(parse("1.s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse("+5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("10ns").unwrap(), Duration::from_nanos(10));
        assert_eq!(parse("7us").unwrap(), Duration::from_micros(7));
        assert_eq!(parse("7µs").unwrap(), Duration::from_micros(7));
        assert_eq!(parse("7μs").unwrap(), Duration::from_micros(7));
        assert_eq!(parse("1h1m1s1ms1us1ns").unwrap().as_nanos(), 3_661_001_001_001);
    }

    #[test]
    fn zero_is_allowed_with_or_without_unit() {
        for text in ["0", "-0", "+0", "0s", "0.0ms", "-0s"] {
            assert_eq!(parse(text).unwrap(), Duration::ZERO, "{text}");
        }
    }

    #[test]
    fn fraction_is_truncated_to_nanoseconds_like_go() {
        assert_eq!(parse("1.0000000009s").unwrap().as_nanos(), 1_000_000_000);
        assert_eq!(parse("0.3333333333333333333333ms").unwrap().as_nanos(), 333_333);
    }

    #[test]
    fn errors_quote_the_text_and_show_an_example() {
        let err = parse("15 parsecs").unwrap_err();
        assert_eq!(err.kind, DurationErrorKind::UnknownUnit(" parsecs".into()));
        assert_eq!(
            err.to_string(),
            r#"invalid duration "15 parsecs": unknown unit " parsecs" (use e.g. 15s, 1m30s)"#
        );
    }

    #[test]
    fn each_kind_of_mistake_is_named() {
        use DurationErrorKind::*;
        let kind = |t: &str| parse(t).unwrap_err().kind;
        assert_eq!(kind(""), Empty);
        assert_eq!(kind("-"), Empty);
        assert_eq!(kind("15"), MissingUnit("15".into()));
        assert_eq!(kind("1m30"), MissingUnit("30".into()));
        assert_eq!(kind("s"), ExpectedNumber("s".into()));
        assert_eq!(kind("."), ExpectedNumber(".".into()));
        assert_eq!(kind("3d"), UnknownUnit("d".into()));
        assert_eq!(kind("-5s"), Negative);
        assert_eq!(kind("3000000h"), Overflow);
        assert_eq!(kind("99999999999999999999999999999999999s"), Overflow);
    }

    #[test]
    fn formats_like_go_duration_string() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1_100), "1.1µs"),
            (ms(250), "250ms"),
            (Duration::from_micros(2_200), "2.2ms"),
            (Duration::from_secs(15), "15s"),
            (ms(1_500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(120), "2m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(72 * 3600 + 180) + ms(500), "72h3m0.5s"),
        ];
        for (duration, expected) in cases {
            assert_eq!(format(duration), expected);
            assert_eq!(GoDuration(duration).to_string(), expected);
        }
    }

    #[test]
    fn deserializes_strings_and_integer_nanoseconds() {
        let d: GoDuration = serde_yaml::from_str("1m30s").unwrap();
        assert_eq!(d.get(), Duration::from_secs(90));
        let d: GoDuration = serde_yaml::from_str("1500000000").unwrap();
        assert_eq!(d.get(), ms(1500));
        let err = serde_yaml::from_str::<GoDuration>("15 parsecs").unwrap_err();
        assert!(err.to_string().contains("invalid duration \"15 parsecs\""), "{err}");
        assert!(serde_yaml::from_str::<GoDuration>("-1").is_err());
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(nanos in 0u64..=i64::MAX as u64) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse(&format(d)).unwrap(), d);
        }

        #[test]
        fn components_add_up(h in 0u64..1000, m in 0u64..1000, s in 0u64..1000, milli in 0u64..1000) {
            let text = format!("{h}h{m}m{s}s{milli}ms");
            let expected = Duration::from_secs(h * 3600 + m * 60 + s) + ms(milli);
            prop_assert_eq!(parse(&text).unwrap(), expected);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,20}") {
            let _ = parse(&text);
        }
    }
}
