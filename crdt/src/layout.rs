//! How records sit in an Automerge document.
//!
//! Every document is one flat root map. Each record is a byte value (its signed envelope)
//! under the key `<ns>/<author>/<id>`: the namespace says what kind of record it is, the
//! author is the hex of the signer's public key, and the id is the hex of the envelope id.
//!
//! A flat map is deliberate. If two actors concurrently created the same nested map (say
//! `agents`), Automerge would keep one and hide the other's whole subtree; with flat keys
//! there is nothing to create, every key belongs to exactly one author, and a record is
//! never overwritten (its key is its content hash). That makes the validity rule for a
//! change simple and local: every op must be a first `put` of a byte value under the
//! change author's own prefix, whose bytes are a valid envelope by that author with the
//! id the key names.

use std::fmt;

use membrane_protocol::envelope::EnvelopeId;
use membrane_protocol::{Kind, PublicKey};

/// What kind of record a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Namespace {
    /// An entry.
    Entry,
    /// A retraction or supersession.
    Retraction,
    /// A trust edge.
    Trust,
    /// The public trace of a trusted or private entry.
    Presence,
}

impl Namespace {
    /// Every namespace.
    pub const ALL: [Namespace; 4] = [
        Namespace::Entry,
        Namespace::Retraction,
        Namespace::Trust,
        Namespace::Presence,
    ];

    /// The key prefix letter.
    pub fn letter(self) -> char {
        match self {
            Namespace::Entry => 'e',
            Namespace::Retraction => 'r',
            Namespace::Trust => 't',
            Namespace::Presence => 'p',
        }
    }

    /// The envelope kind records of this namespace must have.
    pub fn kind(self) -> Kind {
        match self {
            Namespace::Entry => Kind::Entry,
            Namespace::Retraction => Kind::Retraction,
            Namespace::Trust => Kind::TrustEdge,
            Namespace::Presence => Kind::Presence,
        }
    }

    /// The namespace records of `kind` live in, if any.
    pub fn for_kind(kind: Kind) -> Option<Namespace> {
        Namespace::ALL.into_iter().find(|ns| ns.kind() == kind)
    }

    fn from_letter(s: &str) -> Option<Namespace> {
        Namespace::ALL
            .into_iter()
            .find(|ns| s.len() == 1 && s.starts_with(ns.letter()))
    }
}

/// A parsed document key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecordKey {
    /// What the record is.
    pub ns: Namespace,
    /// Who signed it.
    pub author: PublicKey,
    /// The envelope id.
    pub id: EnvelopeId,
}

/// Why a document key is not one of ours.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("document key {key:?} is not <ns>/<author hex>/<id hex>: {why}")]
pub struct KeyLayoutError {
    key: String,
    why: &'static str,
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl RecordKey {
    /// Parses a document key.
    pub fn parse(key: &str) -> Result<RecordKey, KeyLayoutError> {
        let err = |why| KeyLayoutError {
            key: key.chars().take(160).collect(),
            why,
        };
        let mut parts = key.split('/');
        let (Some(ns), Some(author), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err("expected three parts"));
        };
        let ns = Namespace::from_letter(ns).ok_or_else(|| err("unknown namespace"))?;
        let author = hex32(author)
            .and_then(|raw| PublicKey::from_bytes(&raw).ok())
            .ok_or_else(|| err("author is not a valid key in lowercase hex"))?;
        let id = hex32(id)
            .map(EnvelopeId)
            .ok_or_else(|| err("id is not 64 lowercase hex digits"))?;
        Ok(RecordKey { ns, author, id })
    }

    /// The prefix every key of `author` in `ns` starts with.
    pub fn prefix(ns: Namespace, author: &PublicKey) -> String {
        format!("{}/{}/", ns.letter(), hex(author.as_bytes()))
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", RecordKey::prefix(self.ns, &self.author), self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use membrane_protocol::Keypair;

    #[test]
    fn keys_round_trip_and_reject_everything_else() {
        let author = Keypair::from_seed(&[1; 32]).public();
        let key = RecordKey {
            ns: Namespace::Entry,
            author,
            id: EnvelopeId([0xAB; 32]),
        };
        let text = key.to_string();
        assert!(text.starts_with("e/8a88e3dd"));
        assert_eq!(RecordKey::parse(&text).unwrap(), key);
        for bad in [
            "",
            "e",
            "x/aa/bb",
            &text.to_uppercase(),
            &format!("{text}/extra"),
            &text.replacen("e/", "ee/", 1),
            &format!("e/{}/{}", "00".repeat(32), "ab".repeat(32)),
        ] {
            assert!(RecordKey::parse(bad).is_err(), "{bad}");
        }
    }
}
