//! Where plaintext secrets may touch a disk: a 0700 directory of this user,
//! outside the repository, preferably in memory.
//!
//! The base is `$XDG_RUNTIME_DIR` (per user, tmpfs, emptied at logout), else
//! `/dev/shm` (tmpfs), else the temp directory. Nothing under the repository
//! qualifies: a file there is one `git add -A` away from history, and editors,
//! backup tools and IDE indexers read it.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::support::cleanup;

/// The directory of this project's decrypted secrets, created 0700 when
/// missing: `<base>/xtask-secrets-<uid>/<project>-<hash of its path>`. Two
/// checkouts get two directories; the same checkout always the same one, so
/// `secrets encrypt` finds what `secrets decrypt` wrote.
pub fn project_dir(root: &Path) -> Result<PathBuf> {
    let user_dir = user_dir(root)?;
    let canonical_root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let digest = openssl::sha::sha256(canonical_root.as_os_str().as_encoded_bytes());
    let hash: String = digest[..6].iter().map(|byte| format!("{byte:02x}")).collect();
    let project = canonical_root.file_name().map_or_else(|| "project".into(), |name| name.to_string_lossy());
    let dir = user_dir.join(format!("{project}-{hash}"));
    create_private(&dir)?;
    Ok(dir)
}

/// A 0600 file in a fresh 0700 directory of the user's private directory.
/// Both are removed when this is dropped, and by the signal handler on
/// Ctrl-C or SIGTERM.
pub struct PrivateTempFile {
    pub path: PathBuf,
    _cleanup: cleanup::CleanupGuard,
}

impl PrivateTempFile {
    pub fn create(root: &Path, file_name: &str, content: &[u8]) -> Result<PrivateTempFile> {
        let base = user_dir(root)?;
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let dir = base.join(format!("edit-{}-{nanos}", std::process::id()));
        // `create`, not `create_all`: an existing directory (someone else's) is an error.
        fs::DirBuilder::new().mode(0o700).create(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let cleanup_dir = dir.clone();
        let guard = cleanup::register(format!("remove {}", dir.display()), move || {
            let _ = fs::remove_dir_all(&cleanup_dir);
        });
        let path = dir.join(file_name);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.write_all(content).with_context(|| format!("writing {}", path.display()))?;
        Ok(PrivateTempFile { path, _cleanup: guard })
    }
}

/// Refuses a plaintext destination inside the repository, whatever git
/// thinks of it.
pub fn ensure_outside_repository(root: &Path, path: &Path) -> Result<()> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().context("reading the current directory")?.join(path)
    };
    // The parent is what exists; the file itself may not yet.
    let parent = absolute.parent().unwrap_or(Path::new("/"));
    let resolved = fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
    let canonical_root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    if resolved.starts_with(&canonical_root) {
        bail!(
            "{} is inside the repository ({}): decrypted secrets stay outside it; omit --out to use the private \
             directory ({}), or pass --stdout",
            path.display(),
            canonical_root.display(),
            user_dir(root).map_or_else(|_| "$XDG_RUNTIME_DIR".to_owned(), |dir| dir.display().to_string())
        );
    }
    Ok(())
}

/// `<base>/xtask-secrets-<uid>`, 0700 and owned by this user (in a shared
/// `/dev/shm` someone else could have made it first).
fn user_dir(root: &Path) -> Result<PathBuf> {
    let base = base_dir();
    let canonical_base = fs::canonicalize(&base).with_context(|| format!("resolving {}", base.display()))?;
    if canonical_base.starts_with(fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf())) {
        bail!(
            "{} is inside the repository; point XDG_RUNTIME_DIR (or TMPDIR) elsewhere so the plaintext stays out of it",
            base.display()
        );
    }
    let uid = fs::metadata("/proc/self").map(|meta| meta.uid()).context("reading this process's user id")?;
    let dir = canonical_base.join(format!("xtask-secrets-{uid}"));
    create_private(&dir)?;
    let meta = fs::symlink_metadata(&dir).with_context(|| format!("reading {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} is not a private directory of user {uid} (owner {}, mode {:o}): remove it, it may not be yours",
            dir.display(),
            meta.uid(),
            meta.permissions().mode() & 0o777
        );
    }
    Ok(dir)
}

fn base_dir() -> PathBuf {
    let usable = |dir: &Path| dir.is_absolute() && dir.is_dir();
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|dir| usable(dir)) {
        return runtime;
    }
    let shm = Path::new("/dev/shm");
    if usable(shm) {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

fn create_private(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err).with_context(|| format!("creating {}", dir.display())),
    }
}
