//! The 32-byte pre-shared key that signs and verifies announcements.
//!
//! Operators write it as 64 hex characters (`rgap genpsk` makes one). The key never shows up in
//! logs: `Debug` is redacted, so a config struct can derive `Debug` without leaking it.
//!
//! A group may have several keys at once, so that keys can be rotated without downtime
//! ([`PskList`]), written in the config or kept in a key file ([`parse_key_file`]): one key per
//! line, `#` starts a comment.

use std::fmt;
use std::str::FromStr;

/// Length of a key in bytes.
pub const PSK_LEN: usize = 32;
/// Length of a key written as hex.
pub const PSK_HEX_LEN: usize = PSK_LEN * 2;

/// A 32-byte pre-shared key.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk([u8; PSK_LEN]);

/// Why a key string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PskError {
    /// The string is not 64 characters long.
    #[error("expected {PSK_HEX_LEN} hex characters, got {0}")]
    WrongLength(usize),
    /// A character outside `0-9a-fA-F`.
    #[error("invalid hex character {ch:?} at position {position}")]
    NotHex {
        /// The offending character.
        ch: char,
        /// Its character index (0-based).
        position: usize,
    },
    /// The operating system could not provide random bytes.
    #[error("cannot read random bytes from the OS: {0}")]
    Random(String),
}

impl Psk {
    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; PSK_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses exactly 64 hex characters (either case); surrounding whitespace is not trimmed,
    /// so a stray space is reported rather than silently accepted.
    pub fn from_hex(text: &str) -> Result<Self, PskError> {
        // Check characters before length-in-bytes so that "12 chars" is reported as a length
        // problem only when every char is hex, and a typo is pointed at precisely.
        let count = text.chars().count();
        if let Some((position, ch)) = text.chars().enumerate().find(|(_, c)| !c.is_ascii_hexdigit())
        {
            return Err(PskError::NotHex { ch, position });
        }
        if count != PSK_HEX_LEN {
            return Err(PskError::WrongLength(count));
        }
        let mut bytes = [0u8; PSK_LEN];
        // Cannot fail: length and alphabet were checked above.
        hex::decode_to_slice(text, &mut bytes).map_err(|_| PskError::WrongLength(count))?;
        Ok(Self(bytes))
    }

    /// Makes a fresh key from the OS CSPRNG.
    pub fn generate() -> Result<Self, PskError> {
        let mut bytes = [0u8; PSK_LEN];
        getrandom::getrandom(&mut bytes).map_err(|e| PskError::Random(e.to_string()))?;
        Ok(Self(bytes))
    }

    /// The key as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw key bytes, for keying the HMAC.
    pub fn as_bytes(&self) -> &[u8; PSK_LEN] {
        &self.0
    }
}

impl FromStr for Psk {
    type Err = PskError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(<redacted>)")
    }
}

impl<'de> serde::Deserialize<'de> for Psk {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PskVisitor;

        impl serde::de::Visitor<'_> for PskVisitor {
            type Value = Psk;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a string of {PSK_HEX_LEN} hex characters")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Psk, E> {
                Psk::from_hex(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(PskVisitor)
    }
}

/// One or more keys of a group, in the order given: YAML takes one key or a list of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PskList(Vec<Psk>);

impl PskList {
    /// The keys, in the order given.
    pub fn keys(&self) -> &[Psk] {
        &self.0
    }

    /// No key at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Psk> for PskList {
    fn from(psk: Psk) -> Self {
        PskList(vec![psk])
    }
}

impl From<Vec<Psk>> for PskList {
    fn from(keys: Vec<Psk>) -> Self {
        PskList(keys)
    }
}

impl<'de> serde::Deserialize<'de> for PskList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PskListVisitor;

        impl<'de> serde::de::Visitor<'de> for PskListVisitor {
            type Value = PskList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a key of {PSK_HEX_LEN} hex characters or a list of them")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PskList, E> {
                Psk::from_hex(v).map(PskList::from).map_err(E::custom)
            }

            // Element by element, so that a bad key's error names its index (`psk[1]`).
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<PskList, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = seq.next_element::<Psk>()? {
                    keys.push(key);
                }
                Ok(PskList(keys))
            }
        }

        deserializer.deserialize_any(PskListVisitor)
    }
}

/// Why a key file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// A line that is not a key.
    #[error("line {line}: {error}")]
    BadKey {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        error: PskError,
    },
    /// Only comments and blank lines.
    #[error("holds no key (one per line, {PSK_HEX_LEN} hex characters; # starts a comment)")]
    Empty,
}

/// Reads the keys of a key file's text: one key per line, in order; blank lines and `#`
/// comments (whole lines or after a key) are skipped.
pub fn parse_key_file(text: &str) -> Result<Vec<Psk>, KeyFileError> {
    let mut keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        // Hex keys never contain '#', so everything after one is a comment.
        let key = line.split_once('#').map_or(line, |(key, _)| key).trim();
        if key.is_empty() {
            continue;
        }
        let psk =
            Psk::from_hex(key).map_err(|error| KeyFileError::BadKey { line: index + 1, error })?;
        keys.push(psk);
    }
    if keys.is_empty() {
        return Err(KeyFileError::Empty);
    }
    Ok(keys)
}

/// Reads the keys of the key file at `path`; the error names the file (and the line).
pub fn read_key_file(path: &std::path::Path) -> Result<Vec<Psk>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    parse_key_file(&text).map_err(|error| format!("{}: {error}", path.display()))
}

/// The warning for a file holding keys that users other than its owner may read, if it is
/// one: `<file> is readable by others (mode 0644) and holds pre-shared keys: chmod 600 it`.
pub fn readable_by_others_warning(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o044 != 0).then(|| {
        format!(
            "{} is readable by others (mode {mode:04o}) and holds pre-shared keys: chmod 600 it",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "8f1302643b0809279794c5cc47f236561d7442b85d748bd7d1a58adfbe9ff431";

    #[test]
    fn parses_and_round_trips_lowercase_hex() {
        let psk = Psk::from_hex(KEY).unwrap();
        assert_eq!(psk.as_bytes()[0], 0x8f);
        assert_eq!(psk.to_hex(), KEY);
    }

    #[test]
    fn uppercase_hex_is_accepted_and_printed_lowercase() {
        let psk = Psk::from_hex(&KEY.to_uppercase()).unwrap();
        assert_eq!(psk.to_hex(), KEY);
    }

    #[test]
    fn wrong_length_says_how_many_characters() {
        let err = Psk::from_hex("0123456789ab").unwrap_err();
        assert_eq!(err, PskError::WrongLength(12));
        assert_eq!(err.to_string(), "expected 64 hex characters, got 12");
        assert_eq!(Psk::from_hex("").unwrap_err(), PskError::WrongLength(0));
        assert_eq!(Psk::from_hex(&format!("{KEY}00")).unwrap_err(), PskError::WrongLength(66));
    }

    #[test]
    fn non_hex_character_is_pointed_at() {
        let mut bad = KEY.to_string();
        bad.replace_range(5..6, "g");
        let err = Psk::from_hex(&bad).unwrap_err();
        assert_eq!(err, PskError::NotHex { ch: 'g', position: 5 });
        assert!(err.to_string().contains("'g' at position 5"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let psk = Psk::from_hex(KEY).unwrap();
        let shown = format!("{psk:?} {:?}", Some(&psk));
        assert!(!shown.contains("8f13"), "{shown}");
        assert!(shown.contains("Psk(<redacted>)"));
    }

    #[test]
    fn generated_keys_differ() {
        let a = Psk::generate().unwrap();
        let b = Psk::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.to_hex().len(), PSK_HEX_LEN);
    }

    #[test]
    fn deserializes_from_a_yaml_string() {
        let psk: Psk = serde_yaml::from_str(KEY).unwrap();
        assert_eq!(psk.to_hex(), KEY);
        let err = serde_yaml::from_str::<Psk>("abc").unwrap_err();
        assert!(err.to_string().contains("expected 64 hex characters, got 3"), "{err}");
    }

    #[test]
    fn a_list_of_keys_deserializes_in_order_and_a_bad_one_is_named_by_index() {
        let other = "11".repeat(32);
        let list: PskList = serde_yaml::from_str(&format!("[{KEY}, {other}]")).unwrap();
        assert_eq!(list.keys().len(), 2);
        assert_eq!(list.keys()[1].to_hex(), other);
        let one: PskList = serde_yaml::from_str(KEY).unwrap();
        assert_eq!(one.keys(), &[Psk::from_hex(KEY).unwrap()]);
        let yaml = format!("psk:\n- {KEY}\n- abc\n");
        let error =
            serde_path_to_error::deserialize::<_, std::collections::HashMap<String, PskList>>(
                serde_yaml::Deserializer::from_str(&yaml),
            )
            .unwrap_err();
        assert_eq!(error.path().to_string(), "psk[1]");
        assert!(error.to_string().contains("expected 64 hex characters, got 3"), "{error}");
    }

    #[test]
    fn key_files_hold_one_key_per_line_with_comments() {
        let other = "22".repeat(32);
        let text =
            format!("# current key first\n{KEY}\n\n  {other}  # the old one, until Friday\n");
        let keys = parse_key_file(&text).unwrap();
        assert_eq!(keys.iter().map(Psk::to_hex).collect::<Vec<_>>(), [KEY.to_string(), other]);
        assert_eq!(parse_key_file("# nothing\n\n"), Err(KeyFileError::Empty));
        let error = parse_key_file(&format!("{KEY}\nabcd\n")).unwrap_err();
        assert_eq!(error.to_string(), "line 2: expected 64 hex characters, got 4");
    }
}
