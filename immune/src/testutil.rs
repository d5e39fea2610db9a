//! Helpers shared by the unit tests.

use membrane_protocol::{Keypair, PublicKey};

/// A deterministic key for test peer `n`.
pub(crate) fn keypair(n: u8) -> Keypair {
    Keypair::from_seed(&[n; 32])
}

/// The public key of test peer `n`.
pub(crate) fn peer(n: u8) -> PublicKey {
    keypair(n).public()
}
