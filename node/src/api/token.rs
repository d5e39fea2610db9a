//! The API's bearer token: 32 random bytes as 64 hex digits in `<data-dir>/api-token`,
//! mode 0600, created on first start and reused. Clients (the CLI, `membrane mcp`, the
//! Python example) read it from there.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The token file's name in the data dir.
pub const TOKEN_FILE: &str = "api-token";

/// Why the token could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// A filesystem operation failed.
    #[error("could not {action} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Group or others may read the token.
    #[error(
        "token file {} has mode {mode:03o}, so group or others can read it (expected 600; fix \
         with `chmod 600 {}`)",
        .path.display(), .path.display()
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold a token.
    #[error("token file {} is not 64 hex digits (delete it and restart the node for a new one)", .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// No randomness.
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

/// The token file of `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// Reads the token of the node in `data_dir`, creating it (mode 0600) if there is none.
pub fn load_or_create(data_dir: &Path) -> Result<String, TokenError> {
    let file = path(data_dir);
    match read(data_dir) {
        Err(TokenError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let io = |action| {
        let file = file.clone();
        move |source| TokenError::Io {
            action,
            path: file,
            source,
        }
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&file) {
        Ok(mut out) => {
            out.write_all(token.as_bytes()).map_err(io("write"))?;
            out.sync_all().map_err(io("flush"))?;
            Ok(token)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read(data_dir),
        Err(e) => Err(io("create")(e)),
    }
}

/// Reads the token of the node in `data_dir`, refusing a file group or others can read.
pub fn read(data_dir: &Path) -> Result<String, TokenError> {
    let file = path(data_dir);
    let meta = fs::metadata(&file).map_err(|source| TokenError::Io {
        action: "read",
        path: file.clone(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenError::InsecurePermissions { path: file, mode });
        }
    }
    if meta.len() > 1024 {
        return Err(TokenError::Malformed { path: file });
    }
    let text = fs::read_to_string(&file).map_err(|source| TokenError::Io {
        action: "read",
        path: file.clone(),
        source,
    })?;
    let token = text.trim();
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::Malformed { path: file });
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_mode_600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(load_or_create(dir.path()).unwrap(), first);
        assert_eq!(read(dir.path()).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(path(dir.path())).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), first);
    }

    #[cfg(unix)]
    #[test]
    fn a_readable_token_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path()).unwrap();
        fs::set_permissions(path(dir.path()), fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(matches!(
            err,
            TokenError::InsecurePermissions { mode: 0o644, .. }
        ));
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_garbled_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(path(dir.path()))
            .unwrap()
            .write_all(b"not a token")
            .unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(TokenError::Malformed { .. })
        ));
    }
}
