//! Where the medium keeps its bytes: a small ordered key-value trait.
//!
//! The medium does no IO itself; it hands byte batches to a [`Storage`]. The node provides
//! the sled implementation (the default, embedded); [`MemoryStorage`] serves tests and
//! simulations. A [`Storage::write`] is atomic and durable when it returns: the medium
//! acknowledges a write to its agent only after that, so an acknowledged entry survives a
//! crash at any later moment.

use std::collections::BTreeMap;
use std::convert::Infallible;

/// One change to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Remove `key`.
    Delete(Vec<u8>),
}

/// Changes applied together: all or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<BatchOp>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Put(key.into(), value.into()));
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Delete(key.into()));
    }

    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The changes, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Takes the changes out.
    pub fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }
}

/// Key-value pairs, in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// An ordered byte store.
pub trait Storage {
    /// What can go wrong in this store.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The value at `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Self::Error>;

    /// Every pair whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, Self::Error>;

    /// Applies `batch` atomically, and returns only once it is durable (flushed).
    fn write(&mut self, batch: Batch) -> Result<(), Self::Error>;

    /// Applies `batch` atomically, without waiting for it to be durable: it becomes so at
    /// the next [`Storage::write`] or [`Storage::flush`]. For records nobody was promised,
    /// such as events the node logs on receiving gossip. By default, a durable write.
    fn write_lazy(&mut self, batch: Batch) -> Result<(), Self::Error> {
        self.write(batch)
    }

    /// Makes every lazy write so far durable.
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Bytes the store occupies, as well as it can tell (for benchmarks).
    fn size_on_disk(&self) -> Result<u64, Self::Error>;
}

/// A store in memory: for tests and simulations. Durable for as long as it lives.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Storage for MemoryStorage {
    type Error = Infallible;

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Infallible> {
        Ok(self.map.get(key).cloned())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, Infallible> {
        Ok(self
            .map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn write(&mut self, batch: Batch) -> Result<(), Infallible> {
        for op in batch.into_ops() {
            match op {
                BatchOp::Put(k, v) => {
                    self.map.insert(k, v);
                }
                BatchOp::Delete(k) => {
                    self.map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, Infallible> {
        Ok(self
            .map
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_apply_in_order_and_scans_respect_prefixes() {
        let mut store = MemoryStorage::new();
        let mut batch = Batch::new();
        batch.put(b"a/1".to_vec(), b"x".to_vec());
        batch.put(b"a/2".to_vec(), b"y".to_vec());
        batch.put(b"b/1".to_vec(), b"z".to_vec());
        batch.delete(b"a/2".to_vec());
        store.write(batch).unwrap();
        assert_eq!(store.get(b"a/1").unwrap(), Some(b"x".to_vec()));
        assert_eq!(store.get(b"a/2").unwrap(), None);
        let scanned = store.scan_prefix(b"a/").unwrap();
        assert_eq!(scanned, vec![(b"a/1".to_vec(), b"x".to_vec())]);
        assert_eq!(store.size_on_disk().unwrap(), 3 + 1 + 3 + 1);
    }
}
