//! One identity per node: an ed25519 keypair.
//!
//! The same key is the node's libp2p identity (its [`PublicKey`] displays and parses in the
//! libp2p PeerId text form, `12D3KooW…`), its Automerge actor id (the 32 raw public-key
//! bytes, [`PublicKey::actor_id`]) and the key that signs every envelope, entry and change.
//!
//! Keys arriving from peers are checked when parsed: wrong length, bytes that are not a
//! point on the curve, and weak (small-order) points are each a distinct [`KeyError`], so
//! nothing downstream ever holds a key a signature could be forged for.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of a raw ed25519 public key, and of an Automerge actor id here.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of an ed25519 secret seed.
pub const SEED_LEN: usize = 32;

/// Why bytes or text are not an acceptable public key.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The key does not have 32 bytes.
    #[error("public key has {len} bytes, expected {PUBLIC_KEY_LEN}")]
    WrongLength {
        /// Bytes given.
        len: usize,
    },
    /// The bytes do not decode to a point on the ed25519 curve.
    #[error("public key is not a valid ed25519 point")]
    NotOnCurve,
    /// The point has small order, so signatures under it prove nothing.
    #[error("public key is a weak (small-order) ed25519 point")]
    Weak,
    /// The text is not a libp2p PeerId.
    #[error("not a PeerId: {detail} (expected base58 text such as 12D3KooW…)")]
    BadPeerId {
        /// What the parser said.
        detail: String,
    },
    /// The PeerId is valid but does not embed an ed25519 key (for example an RSA key's
    /// hashed PeerId), so no public key can be recovered from it.
    #[error("PeerId does not embed an ed25519 public key")]
    NotEd25519,
}

/// A validated ed25519 public key: the identity of a node, an agent and an author.
///
/// Ordered and hashed by its bytes, so it can key a `BTreeMap` with a stable order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; PUBLIC_KEY_LEN]);

impl PublicKey {
    /// Parses and validates raw key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let raw: [u8; PUBLIC_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| KeyError::WrongLength { len: bytes.len() })?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| KeyError::NotOnCurve)?;
        if key.is_weak() {
            return Err(KeyError::Weak);
        }
        Ok(Self(raw))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// The Automerge actor id for changes this key authors: the raw public key.
    pub fn actor_id(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0
    }

    /// The libp2p form of this key.
    pub fn to_libp2p(&self) -> libp2p_identity::PublicKey {
        // Infallible: the bytes were validated as an ed25519 point when `self` was built.
        match libp2p_identity::ed25519::PublicKey::try_from_bytes(&self.0) {
            Ok(key) => key.into(),
            Err(_) => unreachable!("validated ed25519 key rejected by libp2p-identity"),
        }
    }

    /// The libp2p PeerId of this key.
    pub fn to_peer_id(&self) -> libp2p_identity::PeerId {
        self.to_libp2p().to_peer_id()
    }

    /// Recovers the public key embedded in an ed25519 PeerId.
    pub fn from_peer_id(peer: &libp2p_identity::PeerId) -> Result<Self, KeyError> {
        // ed25519 PeerIds use the identity multihash (code 0) over the protobuf-encoded key.
        let hash = peer.as_ref();
        if hash.code() != 0 {
            return Err(KeyError::NotEd25519);
        }
        let key = libp2p_identity::PublicKey::try_decode_protobuf(hash.digest())
            .map_err(|e| KeyError::BadPeerId {
                detail: e.to_string(),
            })?
            .try_into_ed25519()
            .map_err(|_| KeyError::NotEd25519)?;
        Self::from_bytes(&key.to_bytes())
    }

    pub(crate) fn verifying_key(&self) -> VerifyingKey {
        // Infallible for the same reason as in `to_libp2p`.
        match VerifyingKey::from_bytes(&self.0) {
            Ok(key) => key,
            Err(_) => unreachable!("validated ed25519 key rejected by ed25519-dalek"),
        }
    }

    /// A short form for logs and tables: the last 8 characters of the PeerId text.
    pub fn short(&self) -> String {
        let text = self.to_string();
        text[text.len().saturating_sub(8)..].to_owned()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_peer_id(), f)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let peer = libp2p_identity::PeerId::from_str(s).map_err(|e| KeyError::BadPeerId {
            detail: e.to_string(),
        })?;
        Self::from_peer_id(&peer)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
        Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

/// An ed25519 keypair. The secret never leaves this type except through
/// [`Keypair::to_seed`], which the node uses to write its key file.
pub struct Keypair {
    signing: SigningKey,
    public: PublicKey,
}

impl Keypair {
    /// Generates a keypair from a caller-given cryptographic RNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = [0u8; SEED_LEN];
        rng.fill_bytes(&mut seed);
        Self::from_seed(&seed)
    }

    /// Derives the keypair from 32 secret seed bytes (RFC 8032 §5.1.5).
    pub fn from_seed(seed: &[u8; SEED_LEN]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        // A key derived from a seed is clamped, so it is never small-order.
        let public = PublicKey(signing.verifying_key().to_bytes());
        Self { signing, public }
    }

    /// The secret seed, for persisting the key. Treat the result as secret.
    pub fn to_seed(&self) -> [u8; SEED_LEN] {
        self.signing.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// Signs `message` as is. Callers add the domain-separation context; see
    /// [`crate::envelope`].
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(message).to_bytes()
    }

    /// The same key as a libp2p keypair, for the node's transport identity.
    pub fn to_libp2p(&self) -> libp2p_identity::Keypair {
        // Infallible: the seed is always a valid ed25519 secret key.
        match libp2p_identity::Keypair::ed25519_from_bytes(self.to_seed()) {
            Ok(key) => key,
            Err(_) => unreachable!("32-byte seed rejected by libp2p-identity"),
        }
    }
}

impl Clone for Keypair {
    fn clone(&self) -> Self {
        Self::from_seed(&self.to_seed())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Verifies `signature` over `message` strictly (rejecting non-canonical and small-order
/// components, `verify_strict`).
pub fn verify_strict(key: &PublicKey, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
    let signature = ed25519_dalek::Signature::from_bytes(signature);
    key.verifying_key()
        .verify_strict(message, &signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn the_same_key_is_peer_id_and_actor_id() {
        let keypair = Keypair::from_seed(&[7; 32]);
        let public = keypair.public();
        let libp2p = keypair.to_libp2p();
        assert_eq!(libp2p.public().to_peer_id(), public.to_peer_id());
        assert_eq!(public.actor_id(), *public.as_bytes());
        let text = public.to_string();
        assert!(text.starts_with("12D3KooW"), "{text}");
        assert_eq!(text.parse::<PublicKey>().unwrap(), public);
    }

    #[test]
    fn generation_is_determined_by_the_rng() {
        let a = Keypair::generate(&mut ChaCha20Rng::seed_from_u64(1));
        let b = Keypair::generate(&mut ChaCha20Rng::seed_from_u64(1));
        let c = Keypair::generate(&mut ChaCha20Rng::seed_from_u64(2));
        assert_eq!(a.public(), b.public());
        assert_ne!(a.public(), c.public());
        assert_eq!(Keypair::from_seed(&a.to_seed()).public(), a.public());
    }

    #[test]
    fn rejects_malformed_and_weak_keys() {
        assert_eq!(
            PublicKey::from_bytes(&[1; 31]),
            Err(KeyError::WrongLength { len: 31 })
        );
        // The identity point (y = 1) has order 1: weak.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(PublicKey::from_bytes(&identity), Err(KeyError::Weak));
        // y = 2 is not on the curve.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert_eq!(PublicKey::from_bytes(&off_curve), Err(KeyError::NotOnCurve));
    }

    #[test]
    fn rejects_bad_peer_id_text() {
        assert!(matches!(
            "not-a-peer".parse::<PublicKey>(),
            Err(KeyError::BadPeerId { .. })
        ));
        // A valid PeerId that hashes its key (sha256 multihash) has no key to recover.
        let mut sha256_multihash = vec![0x12, 0x20];
        sha256_multihash.extend_from_slice(&[0x5A; 32]);
        let hashed = libp2p_identity::PeerId::from_bytes(&sha256_multihash).unwrap();
        assert_eq!(PublicKey::from_peer_id(&hashed), Err(KeyError::NotEd25519));
    }

    #[test]
    fn signatures_verify_strictly_and_only_for_their_message() {
        let keypair = Keypair::from_seed(&[9; 32]);
        let sig = keypair.sign(b"hello");
        assert!(verify_strict(&keypair.public(), b"hello", &sig));
        assert!(!verify_strict(&keypair.public(), b"hellO", &sig));
        let other = Keypair::from_seed(&[10; 32]).public();
        assert!(!verify_strict(&other, b"hello", &sig));
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let keypair = Keypair::from_seed(&[0xAB; 32]);
        let shown = format!("{keypair:?}");
        assert!(!shown.contains("171, 171"), "{shown}");
        assert!(!shown.to_lowercase().contains("abab"), "{shown}");
    }
}
