//! The node's on-disk store: [`SledStorage`], a [`Storage`] over [sled] 0.34.
//!
//! Everything the medium stores lives in sled's default tree (the immune layer keeps a tree
//! of its own, see [`crate::immune`]), so a [`Batch`] maps onto exactly one
//! [`sled::Batch`], which sled applies atomically ([`sled::Tree::apply_batch`]: after a crash
//! recovery sees all of it or none of it). [`Storage::write`] then calls
//! [`sled::Tree::flush`], which writes out sled's IO buffers and syncs its log to disk, and
//! only returns after that; so a write that returned is durable, which is what lets the medium
//! acknowledge it to its agent.
//!
//! What "durable" covers: a write that returned survives the process being killed at any
//! later moment (`tests/storage_crash.rs` checks that over hundreds of `SIGKILL`s). It is not
//! guaranteed to survive a power cut or kernel crash. On Linux, sled 0.34's flush uses
//! `sync_file_range` instead of `fsync`: that writes the data out, but persists neither
//! file metadata (such as a grown file's length) nor the drive's volatile write cache. And
//! values too large to sit in sled's log (over roughly 128 KiB) go into separate blob files
//! that sled never syncs.
//!
//! Configuration, chosen for an embedded node sharing a machine with other work:
//!
//! - **No background flusher** (`flush_every_ms(None)`). sled's default flushes every 500 ms
//!   on a thread of its own; we flush at the end of every write instead, so durability never
//!   depends on a timer, and no flusher thread wakes up while the node is idle.
//! - **A bounded page cache** of [`DEFAULT_CACHE_CAPACITY`] bytes (sled's default is 1 GiB,
//!   far more than a node should take for itself); [`SledStorage::open_with_cache_capacity`]
//!   changes it. The cache only affects speed, never what is stored.
//! - **[`sled::Mode::LowSpace`]**: sled rewrites fragmented segments more eagerly, trading some
//!   write throughput for a smaller footprint on disk. The node writes small batches, and
//!   each one waits for a flush anyway, so throughput is bounded by the disk, not the mode.
//! - No compression: it would need sled's `compression` feature, which builds zstd from C.

use std::fmt;
use std::path::{Path, PathBuf};

use membrane_crdt::storage::{Batch, BatchOp, Storage};

/// The page cache sled may use by default, in bytes (64 MiB).
pub const DEFAULT_CACHE_CAPACITY: u64 = 64 * 1024 * 1024;

/// What can go wrong in a [`SledStorage`]. Each variant names the store's directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The store could not be opened (or created, or recovered after a crash).
    #[error("cannot open the sled store at {}", path.display())]
    Open {
        /// The store's directory.
        path: PathBuf,
        /// What sled reported.
        #[source]
        source: sled::Error,
    },
    /// A read (a lookup or a prefix scan) failed.
    #[error("cannot read from the sled store at {}", path.display())]
    Read {
        /// The store's directory.
        path: PathBuf,
        /// What sled reported.
        #[source]
        source: sled::Error,
    },
    /// Applying a batch failed, so it must not be acknowledged. What this handle shows from
    /// then on is not to be trusted, but a reopened store holds the batch whole or not at all.
    #[error("cannot apply a batch to the sled store at {}", path.display())]
    Write {
        /// The store's directory.
        path: PathBuf,
        /// What sled reported.
        #[source]
        source: sled::Error,
    },
    /// A batch was applied but could not be flushed to disk, so it is not known to be durable
    /// and must not be acknowledged.
    #[error("cannot flush the sled store at {} to disk", path.display())]
    Flush {
        /// The store's directory.
        path: PathBuf,
        /// What sled reported.
        #[source]
        source: sled::Error,
    },
    /// The store's size on disk could not be measured.
    #[error("cannot measure the size of the sled store at {}", path.display())]
    Size {
        /// The store's directory.
        path: PathBuf,
        /// What sled reported.
        #[source]
        source: sled::Error,
    },
}

/// A [`Storage`] kept on disk by sled, in one directory.
///
/// Writes are atomic and durable when [`Storage::write`] returns (see the module docs).
/// Only one process can have a given directory open at a time: sled locks it.
pub struct SledStorage {
    db: sled::Db,
    path: PathBuf,
    cache_capacity: u64,
}

impl SledStorage {
    /// Opens the store in directory `path`, creating it if needed, with a page cache of
    /// [`DEFAULT_CACHE_CAPACITY`] bytes. After the process was killed, this recovers every
    /// write that [`Storage::write`] had returned from (see the module docs for power loss).
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        Self::open_with_cache_capacity(path, DEFAULT_CACHE_CAPACITY)
    }

    /// Like [`SledStorage::open`], with a page cache of `cache_capacity` bytes.
    pub fn open_with_cache_capacity(
        path: &Path,
        cache_capacity: u64,
    ) -> Result<Self, StorageError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .mode(sled::Mode::LowSpace)
            // We flush at the end of every write ourselves; no background flusher.
            .flush_every_ms(None)
            .open()
            .map_err(|source| StorageError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            db,
            path: path.to_path_buf(),
            cache_capacity,
        })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sled database, for trees of its own beside the medium's (the immune layer's,
    /// [`crate::immune::ImmuneStore::open`]).
    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    fn read_error(&self, source: sled::Error) -> StorageError {
        StorageError::Read {
            path: self.path.clone(),
            source,
        }
    }
}

impl fmt::Debug for SledStorage {
    // sled's own `Debug` dumps the whole tree, so we show the configuration only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStorage")
            .field("path", &self.path)
            .field("cache_capacity", &self.cache_capacity)
            .finish_non_exhaustive()
    }
}

impl SledStorage {
    /// Applies `batch` atomically, not flushed.
    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        // sled keeps one pending write per key, the last one given, which is exactly the
        // in-order semantics of `Batch`.
        let mut sled_batch = sled::Batch::default();
        for op in batch.into_ops() {
            match op {
                BatchOp::Put(key, value) => sled_batch.insert(key, value),
                BatchOp::Delete(key) => sled_batch.remove(key),
            }
        }
        self.db
            .apply_batch(sled_batch)
            .map_err(|source| StorageError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

impl Storage for SledStorage {
    type Error = StorageError;

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db
            .get(key)
            .map(|value| value.map(|v| v.to_vec()))
            .map_err(|source| self.read_error(source))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        // sled orders keys bytewise (lexicographically), like the trait asks.
        self.db
            .scan_prefix(prefix)
            .map(|pair| pair.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| self.read_error(source))
    }

    fn write(&mut self, batch: Batch) -> Result<(), StorageError> {
        if batch.is_empty() {
            // Nothing to apply, and every earlier write was flushed before it returned.
            return Ok(());
        }
        self.apply(batch)?;
        self.flush()
    }

    fn write_lazy(&mut self, batch: Batch) -> Result<(), StorageError> {
        self.apply(batch)
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        self.db.flush().map_err(|source| StorageError::Flush {
            path: self.path.clone(),
            source,
        })?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StorageError> {
        self.db.size_on_disk().map_err(|source| StorageError::Size {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(ops: &[(&str, Option<&str>)]) -> Batch {
        let mut batch = Batch::new();
        for (key, value) in ops {
            match value {
                Some(value) => batch.put(key.as_bytes(), value.as_bytes()),
                None => batch.delete(key.as_bytes()),
            }
        }
        batch
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        list.iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledStorage::open(dir.path()).unwrap();
        assert_eq!(store.get(b"k").unwrap(), None);
        store.write(batch(&[("k", Some("v"))])).unwrap();
        assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
        store.write(batch(&[("k", Some("w"))])).unwrap();
        assert_eq!(store.get(b"k").unwrap(), Some(b"w".to_vec()));
        // Binary keys and values, including empty ones.
        let mut binary = Batch::new();
        binary.put(vec![0u8, 255, 0], vec![]);
        binary.put(vec![], vec![1u8, 2, 3]);
        store.write(binary).unwrap();
        assert_eq!(store.get(&[0, 255, 0]).unwrap(), Some(vec![]));
        assert_eq!(store.get(&[]).unwrap(), Some(vec![1, 2, 3]));
        assert!(store.size_on_disk().unwrap() > 0);
    }

    #[test]
    fn lazy_writes_are_read_at_once_and_survive_a_reopen_once_flushed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = SledStorage::open(dir.path()).unwrap();
            store.write_lazy(batch(&[("lazy", Some("1"))])).unwrap();
            assert_eq!(store.get(b"lazy").unwrap(), Some(b"1".to_vec()));
            store.write_lazy(batch(&[("later", Some("2"))])).unwrap();
            store.flush().unwrap();
        }
        let store = SledStorage::open(dir.path()).unwrap();
        assert_eq!(store.get(b"lazy").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get(b"later").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn delete() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledStorage::open(dir.path()).unwrap();
        store
            .write(batch(&[("a", Some("1")), ("b", Some("2"))]))
            .unwrap();
        store.write(batch(&[("a", None)])).unwrap();
        assert_eq!(store.get(b"a").unwrap(), None);
        assert_eq!(store.get(b"b").unwrap(), Some(b"2".to_vec()));
        // Deleting a missing key is fine.
        store.write(batch(&[("never", None)])).unwrap();
        // Within one batch, the last op on a key wins, whichever way round.
        store
            .write(batch(&[
                ("c", Some("3")),
                ("c", None),
                ("d", None),
                ("d", Some("4")),
            ]))
            .unwrap();
        assert_eq!(store.get(b"c").unwrap(), None);
        assert_eq!(store.get(b"d").unwrap(), Some(b"4".to_vec()));
        // An empty batch changes nothing.
        store.write(Batch::new()).unwrap();
        assert_eq!(
            store.scan_prefix(b"").unwrap(),
            pairs(&[("b", "2"), ("d", "4")])
        );
    }

    #[test]
    fn scan_is_in_key_order_and_respects_prefix_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledStorage::open(dir.path()).unwrap();
        // Written out of order, with neighbours just outside the prefix on both sides.
        store
            .write(batch(&[
                ("p/b", Some("2")),
                ("q", Some("after")),
                ("p/a", Some("1")),
                ("p.", Some("before")),
                ("p/", Some("0")),
                ("p0", Some("after too")),
                ("p/c/d", Some("3")),
                ("o", Some("before too")),
            ]))
            .unwrap();
        let mut edge = Batch::new();
        edge.put(b"p/\xff".to_vec(), b"4".to_vec());
        store.write(edge).unwrap();
        let mut expected = pairs(&[("p/", "0"), ("p/a", "1"), ("p/b", "2"), ("p/c/d", "3")]);
        expected.push((b"p/\xff".to_vec(), b"4".to_vec()));
        assert_eq!(store.scan_prefix(b"p/").unwrap(), expected);
        assert_eq!(store.scan_prefix(b"p/c").unwrap(), pairs(&[("p/c/d", "3")]));
        assert_eq!(store.scan_prefix(b"z").unwrap(), vec![]);
        let all = store.scan_prefix(b"").unwrap();
        assert_eq!(all.len(), 9);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn reopen_after_drop_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = Vec::new();
        {
            let mut store = SledStorage::open(dir.path()).unwrap();
            for i in 0..100u32 {
                let mut b = Batch::new();
                let key = format!("key/{i:04}").into_bytes();
                let value = i.to_be_bytes().to_vec();
                b.put(key.clone(), value.clone());
                store.write(b).unwrap();
                expected.push((key, value));
            }
            store.write(batch(&[("key/0007", None)])).unwrap();
            expected.retain(|(k, _)| k.as_slice() != b"key/0007");
        }
        let store = SledStorage::open(dir.path()).unwrap();
        assert_eq!(store.scan_prefix(b"key/").unwrap(), expected);
        assert_eq!(store.get(b"key/0007").unwrap(), None);
        assert_eq!(store.path(), dir.path());
    }

    #[test]
    fn a_batch_is_visible_as_a_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledStorage::open(dir.path()).unwrap();
        store
            .write(batch(&[("old", Some("x")), ("keep", Some("y"))]))
            .unwrap();
        let mut big = Batch::new();
        for i in 0..500u32 {
            big.put(format!("batch/{i:03}").into_bytes(), vec![7u8; 64]);
        }
        big.delete(b"old".to_vec());
        store.write(big).unwrap();
        let scanned = store.scan_prefix(b"batch/").unwrap();
        assert_eq!(scanned.len(), 500);
        assert!(scanned.iter().all(|(_, v)| v == &vec![7u8; 64]));
        assert_eq!(store.get(b"old").unwrap(), None);
        assert_eq!(store.get(b"keep").unwrap(), Some(b"y".to_vec()));
        drop(store);
        let store = SledStorage::open(dir.path()).unwrap();
        assert_eq!(store.scan_prefix(b"batch/").unwrap().len(), 500);
        assert_eq!(store.get(b"old").unwrap(), None);
    }

    #[test]
    fn errors_name_the_path_and_debug_is_short() {
        // A regular file where the directory should be.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = SledStorage::open(&file).unwrap_err();
        assert!(matches!(err, StorageError::Open { .. }));
        assert!(err.to_string().contains("not-a-dir"), "{err}");
        assert!(std::error::Error::source(&err).is_some());

        let store = SledStorage::open(&dir.path().join("db")).unwrap();
        let debug = format!("{store:?}");
        assert!(debug.starts_with("SledStorage"), "{debug}");
        assert!(debug.contains("db"), "{debug}");
    }
}
