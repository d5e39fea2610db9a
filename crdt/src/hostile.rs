//! Tools to build misbehaving replicas, for tests and adversary simulations.
//!
//! A medium validates what it receives, never what it loads from its own storage. Planting
//! a raw change in a replica's storage therefore makes that replica hold, and offer to its
//! peers, a change no honest node would produce: a forgery, a trespass, an equivocation.
//! Honest receivers must refuse it.

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, Change, ROOT, ScalarValue};
use membrane_protocol::envelope::sign_change;
use membrane_protocol::{
    EntryBody, EntryKind, Envelope, EnvelopeId, Evidence, Keypair, PublicKey, Space, Tier,
};

use crate::doc::DocId;
use crate::layout::{Namespace, RecordKey};
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

/// Changes of one misbehaving author, in order, each with the signature it travels with
/// (right or wrong), ready to plant in one or several stores.
#[derive(Debug, Clone)]
pub struct Hostile {
    /// The changes and their signatures.
    pub changes: Vec<(Change, [u8; 64])>,
    /// The entries they write, in order.
    pub entries: Vec<EnvelopeId>,
}

impl Hostile {
    /// Plants every change, in order, into `doc` of `storage`.
    pub fn plant<S: Storage>(&self, storage: &mut S, doc: &DocId) -> Result<(), S::Error> {
        for (n, (change, signature)) in self.changes.iter().enumerate() {
            plant_change(storage, doc, n as u64, change, signature)?;
        }
        Ok(())
    }

    /// An equivocation by `evil` in `space`'s public document: two changes, each validly
    /// signed, writing two different entries (`claims.a`, `claims.b`) with the same
    /// owner seq, 1.
    pub fn equivocation(evil: &Keypair, space: &Space) -> Self {
        let mut doc = actor_doc(evil);
        let a = entry(evil, space, "claims.a", 1, "EQUIVOCATION A", 0);
        let b = entry(evil, space, "claims.b", 1, "EQUIVOCATION B", 0);
        let ca = put(&mut doc, &evil.public(), &[&a]);
        let cb = put(&mut doc, &evil.public(), &[&b]);
        Self {
            changes: vec![signed(evil, ca), signed(evil, cb)],
            entries: vec![a.id(), b.id()],
        }
    }

    /// Two bad changes by `evil` in `space`'s public document: one writing an entry
    /// under `victim`'s key (a trespass, correctly signed), then one whose signature does
    /// not verify (a forgery).
    pub fn forgery_and_trespass(evil: &Keypair, victim: &PublicKey, space: &Space) -> Self {
        let mut doc = actor_doc(evil);
        let own = entry(evil, space, "poison.trespass", 1, "POISON trespass", 0);
        let trespass = put(&mut doc, victim, &[&own]);
        let env = entry(evil, space, "poison.forged", 2, "POISON forged", 0);
        let forged = put(&mut doc, &evil.public(), &[&env]);
        let wrong = sign_change(&Keypair::from_seed(&[99; 32]), &forged.hash().0);
        Self {
            changes: vec![signed(evil, trespass), (forged, wrong)],
            entries: vec![own.id(), env.id()],
        }
    }

    /// `count` valid public entries by `evil` in `space` (keys `spam.e<n>`, seqs 1, 2,
    /// …), all signed at `now_ms`, 500 to a change: a flood of entries ready to push to
    /// whoever connects.
    pub fn entry_flood(evil: &Keypair, space: &Space, count: usize, now_ms: u64) -> Self {
        let mut doc = actor_doc(evil);
        let mut out = Self {
            changes: Vec::new(),
            entries: Vec::with_capacity(count),
        };
        let mut n = 0;
        while n < count {
            let batch: Vec<Envelope> = (n..count.min(n + 500))
                .map(|i| {
                    entry(
                        evil,
                        space,
                        &format!("spam.e{i}"),
                        i as u64 + 1,
                        "spam",
                        now_ms,
                    )
                })
                .collect();
            n += batch.len();
            out.entries.extend(batch.iter().map(Envelope::id));
            let refs: Vec<&Envelope> = batch.iter().collect();
            let change = put(&mut doc, &evil.public(), &refs);
            out.changes.push(signed(evil, change));
        }
        out
    }
}

fn actor_doc(key: &Keypair) -> Automerge {
    Automerge::new().with_actor(ActorId::from(key.public().as_bytes().as_slice()))
}

fn signed(key: &Keypair, change: Change) -> (Change, [u8; 64]) {
    let signature = sign_change(key, &change.hash().0);
    (change, signature)
}

/// A public fact by `key`, sealed at `at_ms`.
#[allow(clippy::expect_used)] // Test tooling: fixed, valid inputs.
fn entry(key: &Keypair, space: &Space, name: &str, seq: u64, value: &str, at_ms: u64) -> Envelope {
    let body = EntryBody {
        space: space.clone(),
        key: name.parse().expect("a valid key"),
        value: value.into(),
        tier: Tier::Public,
        tags: vec![],
        kind: EntryKind::Fact,
        evidence: Evidence::ToolResult,
        parents: vec![],
        seq,
        ttl_ms: None,
        half_life_ms: None,
    };
    Envelope::seal(key, at_ms, &body).expect("a sealable entry")
}

/// One change by `doc`'s actor writing each envelope under `author`'s entry keys.
#[allow(clippy::expect_used)] // Test tooling: fixed, valid inputs.
fn put(doc: &mut Automerge, author: &PublicKey, envelopes: &[&Envelope]) -> Change {
    let mut tx = doc.transaction();
    for envelope in envelopes {
        let key = RecordKey {
            ns: Namespace::Entry,
            author: *author,
            id: envelope.id(),
        };
        tx.put(
            ROOT,
            key.to_string(),
            ScalarValue::Bytes(envelope.to_bytes()),
        )
        .expect("a put on a fresh root key");
    }
    tx.commit();
    doc.get_last_local_change()
        .expect("the change just committed")
        .clone()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use membrane_protocol::cost::ApproxCounter;

    use super::*;
    use crate::doc::RejectReason;
    use crate::medium::{Config, Medium};
    use crate::storage::MemoryStorage;

    fn space() -> Space {
        "hostile".parse().unwrap()
    }

    /// What an honest replica refuses when the hostile one offers everything it holds
    /// (until the first refusal).
    fn offered(hostile: &Hostile, evil: &Keypair) -> (Medium<MemoryStorage>, Vec<RejectReason>) {
        let mut storage = MemoryStorage::new();
        hostile
            .plant(&mut storage, &DocId::public(space()))
            .unwrap();
        let counter = Arc::new(ApproxCounter);
        let mut bad =
            Medium::open(evil.clone(), storage, Config::default(), counter.clone()).unwrap();
        bad.join(space()).unwrap();
        let honest_key = Keypair::from_seed(&[1; 32]);
        let mut good = Medium::open(
            honest_key.clone(),
            MemoryStorage::new(),
            Config::default(),
            counter,
        )
        .unwrap();
        good.join(space()).unwrap();
        let doc = DocId::public(space());
        let mut refused = Vec::new();
        for _ in 0..10 {
            let out = bad.sync_generate(&honest_key.public(), &doc);
            let back = good.sync_generate(&evil.public(), &doc);
            if out.is_empty() && back.is_empty() {
                break;
            }
            for frame in out {
                let report = good.sync_receive(&evil.public(), &frame).unwrap();
                refused.extend(report.rejected.into_iter().map(|r| r.reason));
            }
            for frame in back {
                bad.sync_receive(&honest_key.public(), &frame).unwrap();
            }
            // An honest node ends the exchange with a peer that sent bad data.
            if !refused.is_empty() {
                break;
            }
        }
        (good, refused)
    }

    #[test]
    fn an_equivocation_is_refused_as_one() {
        let evil = Keypair::from_seed(&[7; 32]);
        let h = Hostile::equivocation(&evil, &space());
        let (good, refused) = offered(&h, &evil);
        assert_eq!(
            refused,
            vec![RejectReason::Equivocation {
                owner: evil.public(),
                seq: 1
            }]
        );
        let index = good.index(&space()).unwrap();
        assert!(index.entry(&h.entries[0]).is_some() && index.entry(&h.entries[1]).is_none());
    }

    #[test]
    fn a_forgery_and_a_trespass_are_refused() {
        let evil = Keypair::from_seed(&[7; 32]);
        let victim = Keypair::from_seed(&[8; 32]).public();
        let (good, refused) = offered(
            &Hostile::forgery_and_trespass(&evil, &victim, &space()),
            &evil,
        );
        assert!(
            matches!(
                &refused[..],
                [RejectReason::Trespass(_), RejectReason::Forged(_)]
            ),
            "{refused:?}"
        );
        assert!(good.index(&space()).unwrap().is_empty());
    }

    #[test]
    fn a_flood_of_valid_entries_is_applied() {
        let evil = Keypair::from_seed(&[7; 32]);
        let h = Hostile::entry_flood(&evil, &space(), 1_200, 5);
        assert_eq!((h.changes.len(), h.entries.len()), (3, 1_200));
        let (good, refused) = offered(&h, &evil);
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(good.index(&space()).unwrap().len(), 1_200);
    }
}
