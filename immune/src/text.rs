//! Serde helpers so records read well as JSON: hashes and signatures as lowercase hex,
//! peers as their PeerId text (`12D3KooW…`). CBOR (the audit chain's canonical bytes)
//! uses the same forms, so one encoding serves both.

use std::fmt::Write as _;

use membrane_protocol::PublicKey;
use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

/// Lowercase hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Parses exactly `N` bytes of hex (either case).
pub(crate) fn from_hex<const N: usize>(text: &str) -> Result<[u8; N], String> {
    let raw = text.as_bytes();
    if raw.len() != N * 2 {
        return Err(format!(
            "hex has {} characters, expected {}",
            raw.len(),
            N * 2
        ));
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(format!("{:?} is not a hex digit", char::from(c))),
    };
    let mut out = [0u8; N];
    for (i, pair) in raw.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Ok(out)
}

/// `#[serde(with = "hex")]` for `[u8; N]`.
pub(crate) mod hex {
    use super::*;

    pub(crate) fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_hex(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(d)?;
        from_hex(&text).map_err(D::Error::custom)
    }
}

/// `#[serde(with = "opt_hex")]` for `Option<[u8; 32]>`.
pub(crate) mod opt_hex {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        bytes: &Option<[u8; 32]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&to_hex(b)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<[u8; 32]>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| from_hex(&t).map_err(D::Error::custom))
            .transpose()
    }
}

/// `#[serde(with = "peer")]` for a [`PublicKey`] as PeerId text.
pub(crate) mod peer {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(key: &PublicKey, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(key)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(D::Error::custom)
    }
}

/// `#[serde(with = "opt_peer")]` for an optional [`PublicKey`].
pub(crate) mod opt_peer {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        key: &Option<PublicKey>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match key {
            Some(k) => s.serialize_some(&k.to_string()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<PublicKey>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse().map_err(D::Error::custom))
            .transpose()
    }
}

/// `#[serde(with = "peers")]` for `Vec<PublicKey>`.
pub(crate) mod peers {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(keys: &[PublicKey], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(keys.iter().map(ToString::to_string))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PublicKey>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|t| t.parse().map_err(D::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_bad_input() {
        let bytes = [0x00, 0x7f, 0xff, 0xa5];
        assert_eq!(to_hex(&bytes), "007fffa5");
        assert_eq!(from_hex::<4>("007FFFa5"), Ok(bytes));
        assert!(from_hex::<4>("007fff").is_err());
        assert!(from_hex::<2>("0g00").is_err());
    }
}
