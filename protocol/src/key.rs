//! Entry keys, key patterns, space names and tags: the grammar an agent writes in.
//!
//! A key is a dotted path, `findings.heat_islands`: 1 to [`MAX_SEGMENTS`] segments of
//! `[a-z0-9_-]`, each 1 to [`MAX_SEGMENT_LEN`] bytes, at most [`MAX_KEY_LEN`] bytes in all.
//! A pattern has the same shape, where a segment may also be `*` (exactly one segment) or
//! `**` (one or more segments): `findings.*`, `*.intro`, `drafts.**`, `**`.
//!
//! Every violation is its own [`KeyError`] variant naming the byte offset or segment, so an
//! agent that sends `Findings.x` learns which character is wrong and what is allowed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most segments in a key or pattern.
pub const MAX_SEGMENTS: usize = 8;
/// Longest segment, in bytes.
pub const MAX_SEGMENT_LEN: usize = 64;
/// Longest key or pattern, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 64;
/// Longest space name, in bytes.
pub const MAX_SPACE_LEN: usize = 64;

/// What is wrong with a key, pattern, tag or space name.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// Nothing was given.
    #[error("empty {what}: expected at least one segment of [a-z0-9_-]")]
    Empty {
        /// "key", "pattern", "tag" or "space".
        what: &'static str,
    },
    /// Longer than the total limit.
    #[error("{what} is {len} bytes long, the limit is {max}")]
    TooLong {
        /// "key", "pattern", "tag" or "space".
        what: &'static str,
        /// Bytes given.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// More than [`MAX_SEGMENTS`] segments.
    #[error("{what} has {count} segments, the limit is {MAX_SEGMENTS}")]
    TooManySegments {
        /// "key" or "pattern".
        what: &'static str,
        /// Segments given.
        count: usize,
    },
    /// Two dots in a row, or a leading or trailing dot.
    #[error("{what} has an empty segment at position {index} (leading, trailing or double dot)")]
    EmptySegment {
        /// "key" or "pattern".
        what: &'static str,
        /// Zero-based segment index.
        index: usize,
    },
    /// A segment longer than [`MAX_SEGMENT_LEN`].
    #[error("segment {index} of the {what} is {len} bytes long, the limit is {MAX_SEGMENT_LEN}")]
    SegmentTooLong {
        /// "key" or "pattern".
        what: &'static str,
        /// Zero-based segment index.
        index: usize,
        /// Bytes in the segment.
        len: usize,
    },
    /// A character outside the grammar.
    #[error(
        "{what} has {found:?} at byte {offset}: expected lowercase a-z, digits, '_' or '-'{extra}"
    )]
    InvalidChar {
        /// "key", "pattern", "tag" or "space".
        what: &'static str,
        /// Byte offset of the character.
        offset: usize,
        /// The character.
        found: char,
        /// What else this grammar allows, for the message.
        extra: &'static str,
    },
    /// A wildcard mixed with other characters, such as `find*`.
    #[error("pattern segment {index} mixes a wildcard with text: use '*' or '**' alone")]
    PartialWildcard {
        /// Zero-based segment index.
        index: usize,
    },
}

fn is_segment_byte(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-')
}

/// Checks one dotted path; `wildcards` allows `*` and `**` segments.
fn check_path(what: &'static str, text: &str, wildcards: bool) -> Result<(), KeyError> {
    if text.is_empty() {
        return Err(KeyError::Empty { what });
    }
    if text.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong {
            what,
            len: text.len(),
            max: MAX_KEY_LEN,
        });
    }
    let mut offset = 0;
    let mut count = 0;
    for (index, segment) in text.split('.').enumerate() {
        count += 1;
        if count > MAX_SEGMENTS {
            return Err(KeyError::TooManySegments {
                what,
                count: text.split('.').count(),
            });
        }
        if segment.is_empty() {
            return Err(KeyError::EmptySegment { what, index });
        }
        if segment.len() > MAX_SEGMENT_LEN {
            return Err(KeyError::SegmentTooLong {
                what,
                index,
                len: segment.len(),
            });
        }
        let is_wildcard = segment == "*" || segment == "**";
        if !(wildcards && is_wildcard) {
            for (i, ch) in segment.char_indices() {
                if ch == '*' && wildcards {
                    return Err(KeyError::PartialWildcard { index });
                }
                if !(ch.is_ascii() && is_segment_byte(ch as u8)) {
                    return Err(KeyError::InvalidChar {
                        what,
                        offset: offset + i,
                        found: ch,
                        extra: if wildcards {
                            ", or a whole segment '*' or '**'"
                        } else {
                            ""
                        },
                    });
                }
            }
        }
        offset += segment.len() + 1;
    }
    Ok(())
}

macro_rules! string_newtype_serde {
    ($ty:ident) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl $ty {
            /// The text form.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

/// A validated entry key, such as `findings.heat_islands`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

impl FromStr for Key {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_path("key", s, false)?;
        Ok(Self(s.to_owned()))
    }
}

impl Key {
    /// The key's segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

string_newtype_serde!(Key);

/// One segment of a [`Pattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: one or more segments.
    Many,
}

/// A validated glob over keys: `findings.*`, `*.intro`, `drafts.**`, `**`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pattern(String);

impl FromStr for Pattern {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_path("pattern", s, true)?;
        Ok(Self(s.to_owned()))
    }
}

impl Pattern {
    /// The pattern that matches every key.
    pub fn all() -> Self {
        Self("**".to_owned())
    }

    fn parsed(&self) -> Vec<Segment> {
        self.0
            .split('.')
            .map(|s| match s {
                "*" => Segment::One,
                "**" => Segment::Many,
                literal => Segment::Literal(literal.to_owned()),
            })
            .collect()
    }

    /// Whether `key` matches. Linear in practice: both sides have at most 8 segments.
    pub fn matches(&self, key: &Key) -> bool {
        let pattern = self.parsed();
        let key: Vec<&str> = key.segments().collect();
        matches_from(&pattern, &key)
    }

    /// Whether this pattern has no wildcard, so it names one key.
    pub fn is_literal(&self) -> bool {
        !self.0.split('.').any(|s| s == "*" || s == "**")
    }

    /// The text every matching key starts with: the literal segments before the first
    /// wildcard, with their dot (`findings.` for `findings.*`); the whole pattern when it
    /// is literal; empty when it starts with a wildcard. Lets an ordered index scan only
    /// the range that can match.
    pub fn literal_prefix(&self) -> &str {
        match self.0.find('*') {
            None => &self.0,
            Some(at) => &self.0[..at],
        }
    }
}

fn matches_from(pattern: &[Segment], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((Segment::Literal(lit), rest)) => {
            key.first().is_some_and(|k| k == lit) && matches_from(rest, &key[1..])
        }
        Some((Segment::One, rest)) => !key.is_empty() && matches_from(rest, &key[1..]),
        Some((Segment::Many, rest)) => {
            (1..=key.len()).any(|taken| matches_from(rest, &key[taken..]))
        }
    }
}

string_newtype_serde!(Pattern);

/// A validated tag: 1 to [`MAX_TAG_LEN`] bytes of `[a-z0-9_-:]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(String);

impl FromStr for Tag {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_word("tag", s, MAX_TAG_LEN, true)?;
        Ok(Self(s.to_owned()))
    }
}

string_newtype_serde!(Tag);

/// A validated space name, such as `climate-brief`: 1 to [`MAX_SPACE_LEN`] bytes of
/// `[a-z0-9_-]`. It names gossip topics, so it never holds a `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Space(String);

impl Space {
    /// The space every node belongs to.
    pub fn default_space() -> Self {
        Self("default".to_owned())
    }
}

impl FromStr for Space {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_word("space", s, MAX_SPACE_LEN, false)?;
        Ok(Self(s.to_owned()))
    }
}

string_newtype_serde!(Space);

fn check_word(what: &'static str, s: &str, max: usize, colon: bool) -> Result<(), KeyError> {
    if s.is_empty() {
        return Err(KeyError::Empty { what });
    }
    if s.len() > max {
        return Err(KeyError::TooLong {
            what,
            len: s.len(),
            max,
        });
    }
    for (offset, ch) in s.char_indices() {
        let ok = ch.is_ascii() && (is_segment_byte(ch as u8) || (colon && ch == ':'));
        if !ok {
            return Err(KeyError::InvalidChar {
                what,
                offset,
                found: ch,
                extra: if colon { ", or ':'" } else { "" },
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(s: &str) -> Key {
        s.parse().unwrap()
    }

    fn pat(s: &str) -> Pattern {
        s.parse().unwrap()
    }

    #[test]
    fn accepts_the_grammar() {
        for ok in ["a", "findings.heat_islands", "x-1.y_2.z", "a.b.c.d.e.f.g.h"] {
            assert!(ok.parse::<Key>().is_ok(), "{ok}");
        }
        let longest_segment = "a".repeat(64);
        assert!(longest_segment.parse::<Key>().is_ok());
    }

    #[test]
    fn each_violation_is_its_own_error() {
        assert_eq!("".parse::<Key>(), Err(KeyError::Empty { what: "key" }));
        assert_eq!(
            "a..b".parse::<Key>(),
            Err(KeyError::EmptySegment {
                what: "key",
                index: 1
            })
        );
        assert_eq!(
            ".a".parse::<Key>(),
            Err(KeyError::EmptySegment {
                what: "key",
                index: 0
            })
        );
        assert_eq!(
            "a.b.c.d.e.f.g.h.i".parse::<Key>(),
            Err(KeyError::TooManySegments {
                what: "key",
                count: 9
            })
        );
        assert_eq!(
            format!("a.{}", "b".repeat(65)).parse::<Key>(),
            Err(KeyError::SegmentTooLong {
                what: "key",
                index: 1,
                len: 65
            })
        );
        let long = vec!["a".repeat(60); 5].join(".");
        assert_eq!(
            long.parse::<Key>(),
            Err(KeyError::TooLong {
                what: "key",
                len: 304,
                max: 256
            })
        );
        assert!(matches!(
            "findings.Heat".parse::<Key>(),
            Err(KeyError::InvalidChar {
                offset: 9,
                found: 'H',
                ..
            })
        ));
        assert!(matches!(
            "a.b*".parse::<Key>(),
            Err(KeyError::InvalidChar { found: '*', .. })
        ));
        assert!(matches!(
            "é".parse::<Key>(),
            Err(KeyError::InvalidChar { found: 'é', .. })
        ));
        assert_eq!(
            "find*.x".parse::<Pattern>(),
            Err(KeyError::PartialWildcard { index: 0 })
        );
    }

    #[test]
    fn glob_semantics() {
        assert!(pat("findings.*").matches(&key("findings.heat_islands")));
        assert!(!pat("findings.*").matches(&key("findings")));
        assert!(!pat("findings.*").matches(&key("findings.a.b")));
        assert!(pat("*.intro").matches(&key("drafts.intro")));
        assert!(!pat("*.intro").matches(&key("drafts.body")));
        assert!(pat("drafts.**").matches(&key("drafts.a.b.c")));
        assert!(pat("drafts.**").matches(&key("drafts.a")));
        assert!(!pat("drafts.**").matches(&key("drafts")));
        assert!(pat("**").matches(&key("anything.at.all")));
        assert!(pat("a.**.z").matches(&key("a.b.c.z")));
        assert!(!pat("a.**.z").matches(&key("a.z")));
        assert!(pat("tasks.brief").matches(&key("tasks.brief")));
        assert!(pat("tasks.brief").is_literal());
        assert_eq!(pat("findings.*").literal_prefix(), "findings.");
        assert_eq!(pat("a.b.**.c").literal_prefix(), "a.b.");
        assert_eq!(pat("*.intro").literal_prefix(), "");
        assert_eq!(pat("tasks.brief").literal_prefix(), "tasks.brief");
        assert!(!pat("tasks.*").is_literal());
    }

    #[test]
    fn tags_and_spaces() {
        assert!("source:web".parse::<Tag>().is_ok());
        assert!("climate-brief".parse::<Space>().is_ok());
        assert!(matches!(
            "a/b".parse::<Space>(),
            Err(KeyError::InvalidChar { found: '/', .. })
        ));
        assert!(matches!(
            "x".repeat(65).parse::<Tag>(),
            Err(KeyError::TooLong { .. })
        ));
    }

    fn segment() -> impl Strategy<Value = String> {
        "[a-z0-9_-]{1,12}"
    }

    proptest! {
        #[test]
        fn valid_keys_round_trip_through_text_and_cbor(segs in prop::collection::vec(segment(), 1..=8)) {
            let text = segs.join(".");
            let parsed: Key = text.parse().unwrap();
            prop_assert_eq!(parsed.to_string(), text.clone());
            let bytes = crate::codec::to_vec(&parsed).unwrap();
            let back: Key = crate::codec::from_slice(&bytes, 1024).unwrap();
            prop_assert_eq!(back, parsed);
        }

        #[test]
        fn every_key_matches_itself_and_double_star(segs in prop::collection::vec(segment(), 1..=8)) {
            let k: Key = segs.join(".").parse().unwrap();
            let literal: Pattern = segs.join(".").parse().unwrap();
            prop_assert!(literal.matches(&k));
            prop_assert!(Pattern::all().matches(&k));
            // Every match starts with the pattern's literal prefix.
            prop_assert!(k.as_str().starts_with(literal.literal_prefix()));
            // Replacing any one segment by `*` still matches.
            for i in 0..segs.len() {
                let mut p = segs.clone();
                p[i] = "*".into();
                prop_assert!(p.join(".").parse::<Pattern>().unwrap().matches(&k));
            }
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,300}") {
            let _ = s.parse::<Key>();
            let _ = s.parse::<Pattern>();
            let _ = s.parse::<Tag>();
            let _ = s.parse::<Space>();
        }
    }
}
