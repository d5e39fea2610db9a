//! The node's identity key on disk.
//!
//! The key is `<data-dir>/identity.key`: the 32 raw bytes of the ed25519 secret seed
//! (RFC 8032 §5.1.5), nothing else. [`load_or_create`] makes it on first start and reuses
//! it afterwards, so the node keeps its peer id across restarts.
//!
//! The seed is secret, so:
//! * the data dir is created with mode 0700 and the key file with mode 0600 (on unix);
//! * a key file that group or others can access is refused, with the `chmod` that fixes
//!   it, rather than used;
//! * a new key is written to a temporary file in the same directory, flushed to disk and
//!   only then given its name, so a crash never leaves a truncated key behind; and it is
//!   linked into place without replacing anything, so two nodes starting at once on one
//!   data dir end up with the same key rather than each believing its own.
//!
//! The randomness comes from the operating system, through libp2p's key generation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use membrane_protocol::Keypair;
use membrane_protocol::identity::SEED_LEN;

/// Name of the key file inside the data dir.
pub const KEY_FILE_NAME: &str = "identity.key";

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// A filesystem operation failed.
    #[error("could not {action} {}: {source}", .path.display())]
    Io {
        /// What was being done, such as "read" or "create".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not a 32-byte seed.
    #[error(
        "key file {} has {len} bytes (expected exactly {expected}: a raw ed25519 seed, as \
         written by `membrane keygen`)",
        .path.display()
    )]
    WrongLength {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The size a key file has.
        expected: usize,
    },
    /// Group or others may access the file, so the secret may have leaked or may leak.
    #[error(
        "key file {} has mode {mode:03o}, so group or others can access it (expected 600; \
         fix with `chmod 600 {}`)",
        .path.display(), .path.display()
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// `generate` would replace an existing key.
    #[error(
        "{} already exists; refusing to overwrite a key (expected a new path, or --force \
         to replace it and lose the old identity)",
        .path.display()
    )]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> KeyFileError {
    let path = path.to_owned();
    move |source| KeyFileError::Io {
        action,
        path,
        source,
    }
}

/// The key file's path in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE_NAME)
}

/// Loads the node's key from `<data_dir>/identity.key`, creating the directory and a new
/// key on first start. Returns the key and whether it was created just now.
pub fn load_or_create(data_dir: &Path) -> Result<(Keypair, bool), KeyFileError> {
    let path = path(data_dir);
    match read(&path) {
        Ok(key) => return Ok((key, false)),
        Err(KeyFileError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    create_dir(data_dir)?;
    let key = new_keypair();
    match write_new(&path, &key, false) {
        Ok(()) => Ok((key, true)),
        // Another process created it between our read and our link: use theirs.
        Err(KeyFileError::AlreadyExists { .. }) => read(&path).map(|key| (key, false)),
        Err(e) => Err(e),
    }
}

/// Generates a new key at `path` (for `membrane keygen --out PATH`). Refuses to replace an
/// existing file unless `force`. Creates the parent directory if it is missing.
pub fn generate(path: &Path, force: bool) -> Result<Keypair, KeyFileError> {
    if !force && fs::symlink_metadata(path).is_ok() {
        return Err(KeyFileError::AlreadyExists {
            path: path.to_owned(),
        });
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir(parent)?;
    }
    let key = new_keypair();
    write_new(path, &key, force)?;
    Ok(key)
}

/// Reads a key file, refusing one of the wrong size or, on unix, one that group or others
/// can access.
pub fn read(path: &Path) -> Result<Keypair, KeyFileError> {
    let mut file = File::open(path).map_err(io_error("read", path))?;
    let meta = file.metadata().map_err(io_error("read", path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::InsecurePermissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let wrong_length = |len: u64| KeyFileError::WrongLength {
        path: path.to_owned(),
        len,
        expected: SEED_LEN,
    };
    if meta.len() != SEED_LEN as u64 {
        return Err(wrong_length(meta.len()));
    }
    // Read one byte more than a seed, in case the file grew since `metadata`.
    let mut bytes = Vec::with_capacity(SEED_LEN + 1);
    (&mut file)
        .take(SEED_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error("read", path))?;
    let seed: [u8; SEED_LEN] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| wrong_length(bytes.len() as u64))?;
    bytes.fill(0);
    Ok(Keypair::from_seed(&seed))
}

/// A keypair from the operating system's randomness.
fn new_keypair() -> Keypair {
    let secret = libp2p::identity::ed25519::SecretKey::generate();
    match <[u8; SEED_LEN]>::try_from(secret.as_ref()) {
        Ok(seed) => Keypair::from_seed(&seed),
        // An ed25519 secret key is 32 bytes by construction.
        Err(_) => unreachable!("libp2p generated an ed25519 secret key that is not 32 bytes"),
    }
}

/// Creates `dir` and its missing parents, mode 0700 on unix.
fn create_dir(dir: &Path) -> Result<(), KeyFileError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(io_error("create directory", dir))
}

/// Writes `key` to a temporary file beside `path`, flushes it, and moves it to `path`:
/// replacing what is there if `replace`, else failing with `AlreadyExists`.
fn write_new(path: &Path, key: &Keypair, replace: bool) -> Result<(), KeyFileError> {
    let temp = temp_path(path);
    let result = write_temp(&temp, key).and_then(|()| {
        if replace {
            fs::rename(&temp, path).map_err(io_error("rename into place", path))
        } else {
            link_new(&temp, path)
        }
    });
    // Gone already after a rename; after a link or a failure it is a stray copy.
    let _ = fs::remove_file(&temp);
    result?;
    sync_parent(path);
    Ok(())
}

fn write_temp(temp: &Path, key: &Keypair) -> Result<(), KeyFileError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(temp).map_err(io_error("create", temp))?;
    let mut seed = key.to_seed();
    let written = file.write_all(&seed).and_then(|()| file.sync_all());
    seed.fill(0);
    written.map_err(io_error("write", temp))
}

/// Gives `temp` the name `path` unless `path` exists. A hard link fails atomically if the
/// name is taken; on filesystems without hard links, fall back to check-then-rename.
fn link_new(temp: &Path, path: &Path) -> Result<(), KeyFileError> {
    match fs::hard_link(temp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(KeyFileError::AlreadyExists {
            path: path.to_owned(),
        }),
        Err(_) => {
            if fs::symlink_metadata(path).is_ok() {
                return Err(KeyFileError::AlreadyExists {
                    path: path.to_owned(),
                });
            }
            fs::rename(temp, path).map_err(io_error("rename into place", path))
        }
    }
}

/// A name in the same directory as `path`, unique to this process, call and moment.
fn temp_path(path: &Path) -> PathBuf {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pid = std::process::id();
    path.with_file_name(format!(".{name}.{pid}.{call}.{nanos}.tmp"))
}

/// Flushes the directory entry of `path`, so the new name survives a crash. Best effort:
/// not every platform can open a directory.
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use membrane_protocol::PublicKey;

    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_once_then_reloads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a").join("b");
        let (first, created) = load_or_create(&data).unwrap();
        assert!(created);
        let (again, created) = load_or_create(&data).unwrap();
        assert!(!created);
        assert_eq!(first.public(), again.public());
        assert_eq!(read(&path(&data)).unwrap().public(), first.public());
        assert_eq!(fs::read(path(&data)).unwrap().len(), SEED_LEN);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&data).unwrap().count(), 1);
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("node");
        let results: Vec<(PublicKey, bool)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        let (key, created) = load_or_create(&data).unwrap();
                        (key.public(), created)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
        assert!(results.iter().all(|(key, _)| *key == results[0].0));
        assert_eq!(read(&path(&data)).unwrap().public(), results[0].0);
        assert_eq!(fs::read_dir(&data).unwrap().count(), 1);
    }

    #[test]
    fn keys_differ_between_data_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = load_or_create(&dir.path().join("a")).unwrap();
        let (b, _) = load_or_create(&dir.path().join("b")).unwrap();
        assert_ne!(a.public(), b.public());
    }

    #[cfg(unix)]
    #[test]
    fn created_file_is_0600_in_a_0700_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("node");
        load_or_create(&data).unwrap();
        assert_eq!(mode(&path(&data)), 0o600);
        assert_eq!(mode(&data), 0o700);
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_key_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (_, _) = load_or_create(dir.path()).unwrap();
        let key = path(dir.path());
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(err, KeyFileError::InsecurePermissions { mode: 0o644, .. }),
            "{err}"
        );
        let message = err.to_string();
        assert!(message.contains(&key.display().to_string()), "{message}");
        assert!(message.contains("644"), "{message}");
        assert!(
            message.contains(&format!("chmod 600 {}", key.display())),
            "{message}"
        );
        // And the file is left alone, not replaced.
        assert_eq!(mode(&key), 0o644);
    }

    #[test]
    fn refuses_a_short_or_long_file() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 31, 33, 64] {
            let key = path(dir.path());
            let _ = fs::remove_file(&key);
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            options
                .open(&key)
                .unwrap()
                .write_all(&vec![7; len])
                .unwrap();
            let err = load_or_create(dir.path()).unwrap_err();
            match &err {
                KeyFileError::WrongLength {
                    path,
                    len: got,
                    expected,
                } => {
                    assert_eq!(path, &key);
                    assert_eq!(*got, len as u64);
                    assert_eq!(*expected, 32);
                }
                other => panic!("unexpected {other:?}"),
            }
            assert!(err.to_string().contains("expected exactly 32"), "{err}");
        }
    }

    #[test]
    fn keygen_refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("keys").join("node.key");
        let first = generate(&out, false).unwrap();
        assert_eq!(read(&out).unwrap().public(), first.public());

        let err = generate(&out, false).unwrap_err();
        assert!(matches!(err, KeyFileError::AlreadyExists { .. }), "{err}");
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(read(&out).unwrap().public(), first.public());

        let second = generate(&out, true).unwrap();
        assert_ne!(second.public(), first.public());
        assert_eq!(read(&out).unwrap().public(), second.public());
        #[cfg(unix)]
        assert_eq!(mode(&out), 0o600);
    }

    #[test]
    fn a_generated_key_serves_as_a_data_dir_key() {
        let dir = tempfile::tempdir().unwrap();
        let made = generate(&path(dir.path()), false).unwrap();
        let (loaded, created) = load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(loaded.public(), made.public());
    }

    #[test]
    fn missing_file_is_an_io_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.key");
        let err = read(&missing).unwrap_err();
        assert!(
            matches!(&err, KeyFileError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
    }
}
