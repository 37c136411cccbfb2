//! The compilation cache: wasmtime's own (`Config::cache`), in a directory
//! only the operator can write. Compiling the component costs about 0.3 s of
//! CPU per process; a warm cache turns that into a file read. Entries are
//! keyed by wasmtime's version, the engine configuration and the
//! component's bytes, so a stale or foreign entry is a miss, never a wrong
//! hit.
//!
//! A cache entry is native code the host will run, so the directory must
//! not be writable by anyone else: it is created with mode 0700, and an
//! existing one is refused when another user owns it or when group or others
//! may write it. A refused or unusable directory is a warning and a plain
//! compile, never a failed start.

use std::path::{Path, PathBuf};

use wasmtime::{Cache, CacheConfig};

/// The cache directory's name under the user's cache home.
const DIR_NAME: &str = "relay-host";

/// The per-user default: `$XDG_CACHE_HOME/relay-host`, else
/// `$HOME/.cache/relay-host`; `None` when neither variable is set (a
/// service account without a home compiles every time unless told where).
pub(crate) fn default_dir() -> Option<PathBuf> {
    let nonempty = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    nonempty("XDG_CACHE_HOME")
        .map(|base| base.join(DIR_NAME))
        .or_else(|| nonempty("HOME").map(|home| home.join(".cache").join(DIR_NAME)))
}

/// Opens (creating it if needed) the cache in `dir`. The error says why the
/// directory is unusable; the caller compiles without a cache then.
pub(crate) fn open(dir: &Path) -> Result<Cache, String> {
    let dir = prepare(dir)?;
    let mut config = CacheConfig::new();
    config.with_directory(&dir);
    Cache::new(config).map_err(|e| format!("compilation cache {}: {e:#}", dir.display()))
}

/// Absolute, created with mode 0700, owned by us, not writable by others.
fn prepare(dir: &Path) -> Result<PathBuf, String> {
    let dir = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("compilation cache {}: {e}", dir.display()))?
            .join(dir)
    };
    let shown = dir.display();
    create_private(&dir).map_err(|e| format!("cannot create compilation cache {shown}: {e}"))?;
    let meta = std::fs::metadata(&dir).map_err(|e| format!("compilation cache {shown}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!("compilation cache {shown} is not a directory"));
    }
    check_private(&dir, &meta)?;
    Ok(dir)
}

#[cfg(unix)]
fn create_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Refuses a directory someone else owns or may write. Our own uid is read
/// off a probe file we create in it (which also proves it is writable),
/// so no libc call is needed.
#[cfg(unix)]
fn check_private(dir: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let shown = dir.display();
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "compilation cache {shown} is writable by group or others (mode {mode:o}); \
             use a directory with mode 0700"
        ));
    }
    let probe = dir.join(format!(".owner-probe-{}", std::process::id()));
    let created = std::fs::File::create(&probe)
        .and_then(|f| f.metadata())
        .map_err(|e| format!("compilation cache {shown} is not writable: {e}"));
    let _ = std::fs::remove_file(&probe);
    let ours = created?.uid();
    if meta.uid() != ours {
        return Err(format!(
            "compilation cache {shown} belongs to uid {}, not to this process (uid {ours})",
            meta.uid()
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_dir: &Path, _meta: &std::fs::Metadata) -> Result<(), String> {
    Ok(())
}
