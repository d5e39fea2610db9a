//! The one place that knows the wire is CBOR.
//!
//! Every other module encodes through [`to_vec`] and decodes through [`from_slice`], which
//! checks the input against a caller-given size limit *before* the decoder sees a byte, and
//! rejects trailing bytes. Structs on the wire are CBOR arrays (serde tuple structs) or maps
//! with short keys, byte fields are CBOR byte strings (`serde_bytes`), and integers use the
//! shortest form, so one value has exactly one encoding (RFC 8949 §4.2.1, "preferred
//! serialization"), which is what signatures and content ids are computed over.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is larger than the receiver accepts; nothing was decoded.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    Oversized {
        /// Length of the frame received.
        len: usize,
        /// Largest frame accepted here.
        limit: usize,
    },
    /// The bytes end before the value does.
    #[error("truncated CBOR: the input ended inside a value ({detail})")]
    Truncated {
        /// The decoder's description.
        detail: String,
    },
    /// The bytes are not CBOR of the expected shape.
    #[error("malformed CBOR: {detail}")]
    Malformed {
        /// The decoder's description.
        detail: String,
    },
}

/// Why a value could not be encoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The serializer refused the value (only possible for types outside this crate).
    #[error("cannot encode value as CBOR: {detail}")]
    Cbor {
        /// The serializer's description.
        detail: String,
    },
    /// The encoded value is larger than its limit.
    #[error("encoded value of {len} bytes exceeds the limit of {limit} bytes")]
    Oversized {
        /// Length of the encoding.
        len: usize,
        /// Largest encoding allowed.
        limit: usize,
    },
}

/// Encodes `value` as CBOR.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    serde_cbor::to_vec(value).map_err(|e| EncodeError::Cbor {
        detail: e.to_string(),
    })
}

/// Encodes `value` as CBOR and refuses encodings longer than `limit` bytes, so a sender
/// never produces a frame its receivers would drop.
pub fn to_vec_limited<T: Serialize>(value: &T, limit: usize) -> Result<Vec<u8>, EncodeError> {
    let bytes = to_vec(value)?;
    if bytes.len() > limit {
        return Err(EncodeError::Oversized {
            len: bytes.len(),
            limit,
        });
    }
    Ok(bytes)
}

/// Decodes one CBOR value from `bytes`, which must be at most `limit` bytes long and hold
/// nothing after the value.
///
/// The length is checked before decoding starts, so an oversized frame costs nothing but
/// the comparison. The decoder itself bounds nesting depth, and never allocates more than
/// the input could describe.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::Oversized {
            len: bytes.len(),
            limit,
        });
    }
    serde_cbor::from_slice(bytes).map_err(|e| {
        if e.is_eof() {
            DecodeError::Truncated {
                detail: e.to_string(),
            }
        } else {
            DecodeError::Malformed {
                detail: e.to_string(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Pair(u64, #[serde(with = "serde_bytes")] Vec<u8>);

    #[test]
    fn round_trips_and_uses_shortest_integers() {
        let bytes = to_vec(&Pair(1, vec![0xAB])).unwrap();
        // array(2), uint 1 in one byte, bstr(1) 0xAB
        assert_eq!(bytes, [0x82, 0x01, 0x41, 0xAB]);
        assert_eq!(from_slice::<Pair>(&bytes, 16).unwrap(), Pair(1, vec![0xAB]));
    }

    #[test]
    fn checks_the_limit_before_decoding() {
        // Garbage that would be malformed is reported as oversized: the decoder never ran.
        let err = from_slice::<Pair>(&[0xFF; 17], 16).unwrap_err();
        assert_eq!(err, DecodeError::Oversized { len: 17, limit: 16 });
    }

    #[test]
    fn distinguishes_truncation_from_garbage() {
        let bytes = to_vec(&Pair(7, vec![1, 2, 3])).unwrap();
        let cut = &bytes[..bytes.len() - 1];
        assert!(matches!(
            from_slice::<Pair>(cut, 64),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            from_slice::<Pair>(&[0x1F, 0x00], 64),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn rejects_trailing_bytes_and_extra_array_items() {
        let mut bytes = to_vec(&Pair(7, vec![1])).unwrap();
        bytes.push(0x00);
        assert!(matches!(
            from_slice::<Pair>(&bytes, 64),
            Err(DecodeError::Malformed { .. })
        ));
        // array(3) where two items are expected
        let three = [0x83, 0x01, 0x41, 0xAB, 0x01];
        assert!(from_slice::<Pair>(&three, 64).is_err());
    }

    #[test]
    fn encoder_limit_refuses_large_values() {
        let err = to_vec_limited(&Pair(1, vec![0; 100]), 50).unwrap_err();
        assert!(matches!(err, EncodeError::Oversized { limit: 50, .. }));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = vec![0x81u8; 100_000];
        assert!(from_slice::<serde_cbor::Value>(&deep, 200_000).is_err());
    }
}
