//! The build cache outside the repository.
//!
//! Downloaded packages, extracted kernels and built images live in
//! `$STRATUS_CACHE`, else `$XDG_CACHE_HOME/stratus`, else `~/.cache/stratus`.
//! Every built artifact sits in a directory named after a fingerprint of its
//! inputs, so a change to a script or a package version builds a new one and
//! an unchanged input is never rebuilt. Directories are built under a
//! temporary name and renamed into place, so a crash or a concurrent build
//! never leaves a half-built artifact behind a valid name.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The root of the cache.
pub fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os("STRATUS_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("stratus");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache").join("stratus")
}

/// A stable 64-bit FNV-1a fingerprint of a sequence of inputs.
///
/// Not cryptographic: it only has to change when an input changes, and
/// (unlike `DefaultHasher`) give the same value across Rust versions.
#[derive(Debug, Clone)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    /// Adds one input. Each input is length-prefixed so that ("ab", "c") and
    /// ("a", "bc") differ.
    pub fn with(mut self, input: impl AsRef<[u8]>) -> Self {
        let input = input.as_ref();
        for byte in (input.len() as u64).to_le_bytes().iter().chain(input) {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    /// The fingerprint as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// Returns `dir`, building it with `build` first if it does not exist yet.
///
/// `build` receives an empty scratch directory that becomes `dir` only if
/// `build` succeeds.
pub fn build_dir(dir: &Path, build: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    if dir.is_dir() {
        return Ok(dir.to_path_buf());
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(Error::io("create", parent))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let scratch = TempDir::new_in(parent, &format!(".{name}.partial"))?;
    build(scratch.path())?;
    match fs::rename(scratch.path(), dir) {
        Ok(()) => {
            scratch.forget();
            Ok(dir.to_path_buf())
        }
        // Somebody else finished the same build first; theirs is as good.
        Err(_) if dir.is_dir() => Ok(dir.to_path_buf()),
        Err(err) => Err(Error::io("rename into", dir)(err)),
    }
}

/// Removes the other builds of the same artifact — siblings of `current`
/// named `<prefix><fingerprint hex>` — that have not been modified for `max_age`, so that
/// the cache does not grow with every input change. Recent ones stay: a
/// concurrent run (another worktree) may still be using them.
pub fn prune_siblings(current: &Path, prefix: &str, max_age: std::time::Duration) {
    let Some(parent) = current.parent() else {
        return;
    };
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > max_age);
        let same_artifact = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .is_some_and(|rest| rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit()));
        if path != current && same_artifact && stale {
            // Best effort: failing to prune must not fail a build.
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// Marks `dir` as used now (its mtime), which is what pruning looks at.
pub fn touch(dir: &Path) {
    if let Ok(handle) = fs::File::open(dir) {
        let _ = handle.set_modified(std::time::SystemTime::now());
    }
}

/// A directory removed (with its contents) when dropped, also on panic.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates a fresh directory `<parent>/<prefix>-<pid>-<n>`.
    pub fn new_in(parent: &Path, prefix: &str) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        fs::create_dir_all(parent).map_err(Error::io("create", parent))?;
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!("{prefix}-{}-{n}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Self { path, keep: false }),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(Error::io("create", path)(err)),
            }
        }
    }

    /// Creates a fresh directory under the system temporary directory.
    pub fn new(prefix: &str) -> Result<Self> {
        Self::new_in(&std::env::temp_dir(), prefix)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory: it now belongs to someone else.
    fn forget(mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            // Best effort: a leftover temp dir is not worth a panic in drop.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_input_sensitive() {
        let a = Fingerprint::default().with("ab").with("c").hex();
        let b = Fingerprint::default().with("a").with("bc").hex();
        assert_ne!(a, b);
        assert_eq!(a, Fingerprint::default().with("ab").with("c").hex());
        // Pinned so that an accidental change to the hash (which would
        // silently rebuild every cache) is noticed.
        assert_eq!(Fingerprint::default().hex(), "cbf29ce484222325");
    }

    #[test]
    fn build_dir_builds_once_and_cleans_up_failures() {
        let tmp = TempDir::new("stratus-cache-test").unwrap();
        let target = tmp.path().join("artifact");
        let err = build_dir(&target, |_| Err(Error::PackageNotFound("x".into())));
        assert!(err.is_err());
        assert!(!target.exists());
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "scratch dir left behind"
        );

        build_dir(&target, |d| {
            fs::write(d.join("f"), "1").map_err(Error::io("write", d))
        })
        .unwrap();
        build_dir(&target, |_| panic!("must not rebuild")).unwrap();
        assert_eq!(fs::read_to_string(target.join("f")).unwrap(), "1");
    }

    #[test]
    fn pruning_keeps_the_current_and_recent_builds() {
        let tmp = TempDir::new("stratus-prune-test").unwrap();
        for name in [
            "tiny-00000000000000aa",
            "tiny-00000000000000bb",
            "tiny-extra-00000000000000cc",
        ] {
            fs::create_dir(tmp.path().join(name)).unwrap();
        }
        let current = tmp.path().join("tiny-00000000000000aa");
        prune_siblings(&current, "tiny-", std::time::Duration::from_secs(3600));
        let sibling = tmp.path().join("tiny-00000000000000bb");
        assert!(sibling.exists(), "recent sibling removed");
        prune_siblings(&current, "tiny-", std::time::Duration::ZERO);
        assert!(current.exists());
        assert!(!sibling.exists());
        assert!(
            tmp.path().join("tiny-extra-00000000000000cc").exists(),
            "another artifact removed"
        );
    }

    #[test]
    fn temp_dir_is_removed_on_drop() {
        let path = {
            let dir = TempDir::new("stratus-tempdir-test").unwrap();
            fs::write(dir.path().join("x"), "y").unwrap();
            dir.path().to_path_buf()
        };
        assert!(!path.exists());
    }
}
