//! Tools to build misbehaving replicas, for tests and adversary simulations.
//!
//! A medium validates what it receives, never what it loads from its own storage. Planting
//! a raw change in a replica's storage therefore makes that replica hold, and offer to its
//! peers, a change no honest node would produce: a forgery, a trespass, an equivocation.
//! Honest receivers must refuse it.

use automerge::Change;

use crate::doc::DocId;
use crate::medium::{change_key, doc_list_key, sig_key};
use crate::storage::{Batch, Storage};

/// Writes `change` (with `signature`, right or wrong) into `storage` as change number
/// `n` of document `doc`, so the next [`crate::Medium::open`] on that storage loads it.
pub fn plant_change<S: Storage>(
    storage: &mut S,
    doc: &DocId,
    n: u64,
    change: &Change,
    signature: &[u8; 64],
) -> Result<(), S::Error> {
    let mut batch = Batch::new();
    batch.put(
        doc_list_key(doc),
        membrane_protocol::codec::to_vec(&(&doc.space, &doc.doc)).unwrap_or_default(),
    );
    batch.put(change_key(doc, n), change.raw_bytes().to_vec());
    batch.put(sig_key(&change.hash()), signature.to_vec());
    batch.put(format!("m/space/{}", doc.space).into_bytes(), Vec::new());
    storage.write(batch)
}
