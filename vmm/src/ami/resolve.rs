//! Following symlinks inside the image, under a policy.
//!
//! ext4-view would follow links for us, but silently and to anywhere in the
//! filesystem. A guest image is untrusted, and a `/vmlinuz` that points at
//! `/etc/shadow` should be an error, not a kernel. So paths are resolved
//! here one component at a time, with these rules:
//!
//! - Links are interpreted inside the image: an absolute target starts at
//!   the image's root, never the host's.
//! - A target that climbs above the root (`../../..` past `/`) is refused
//!   ([`ResolveError::EscapesRoot`]) rather than clamped as the kernel
//!   would: such a link was written for some other mount point, and
//!   honouring it would only ever find the wrong file.
//! - At most [`MAX_LINKS`] links per lookup, which also ends loops.
//! - If any link was followed, the file it lands on must lie under one of
//!   [`BOOT_DIRS`]. A path we named ourselves (`/vmlinuz`) may be a plain
//!   file where it is, unless the caller confines it (paths that come from
//!   the image itself, like a BLS entry's `linux /boot/../etc/shadow`).
//! - The result must be a regular file.

use ext4_view::{Ext4, Ext4Error};

/// Most symlinks followed while resolving one path.
pub const MAX_LINKS: usize = 8;

/// Where a followed link may land.
pub const BOOT_DIRS: [&str; 3] = ["/boot/", "/usr/lib/modules/", "/lib/modules/"];

/// Longest path (in bytes) we are willing to build while resolving.
const MAX_PATH: usize = 4096;

/// Why a path in the image could not be resolved to a boot file.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Nothing at the path (or a directory along it is missing).
    #[error("{path} does not exist in the image")]
    NotFound {
        /// The path, as far as it was resolved.
        path: String,
    },
    /// A link chain is longer than [`MAX_LINKS`] (or loops).
    #[error("resolving {path} follows more than {MAX_LINKS} symlinks (a loop?)")]
    TooManyLinks {
        /// The path asked for.
        path: String,
    },
    /// A link's target climbs above the filesystem's root.
    #[error("{path}: symlink target {target:?} climbs above the filesystem root")]
    EscapesRoot {
        /// The link.
        path: String,
        /// Its target.
        target: String,
    },
    /// A link (or an image-supplied path) leads out of the boot directories.
    #[error("{path} resolves to {resolved}, outside the boot directories ({})", BOOT_DIRS.join(", "))]
    OutsideBootDirs {
        /// The path asked for.
        path: String,
        /// Where its links led.
        resolved: String,
    },
    /// The path resolves to a directory, device or other non-file.
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The resolved path.
        path: String,
    },
    /// A path or link target is not UTF-8 or is too long.
    #[error("{path}: path or symlink target is malformed")]
    Malformed {
        /// The path, as far as it was resolved.
        path: String,
    },
    /// The filesystem reader failed (corruption, I/O).
    #[error("reading {path}: {source}")]
    Fs {
        /// The path being looked at.
        path: String,
        /// The reader's error.
        source: Ext4Error,
    },
}

fn join(parts: &[String]) -> String {
    if parts.is_empty() {
        "/".to_owned()
    } else {
        parts.iter().flat_map(|p| ["/", p.as_str()]).collect()
    }
}

fn fs_err(path: &str) -> impl FnOnce(Ext4Error) -> ResolveError + '_ {
    move |source| match source {
        Ext4Error::NotFound | Ext4Error::NotADirectory => ResolveError::NotFound {
            path: path.to_owned(),
        },
        source => ResolveError::Fs {
            path: path.to_owned(),
            source,
        },
    }
}

/// Pushes `path`'s components, in reverse, onto the work stack.
fn push_components(todo: &mut Vec<String>, path: &str) {
    todo.extend(
        path.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .rev()
            .map(str::to_owned),
    );
}

/// Resolves the absolute path `path` inside `fs` to a regular file with no
/// symlinks along it, under the rules in the module documentation. With
/// `confine`, the result must lie in [`BOOT_DIRS`] even if no link was
/// followed.
pub fn resolve_file(fs: &Ext4, path: &str, confine: bool) -> Result<String, ResolveError> {
    let mut done: Vec<String> = Vec::new();
    let mut todo: Vec<String> = Vec::new();
    push_components(&mut todo, path);
    let mut links = 0;
    // The most recent link followed, to name in an escape error.
    let mut last_link: Option<(String, String)> = None;
    while let Some(name) = todo.pop() {
        if name == ".." {
            if done.pop().is_none() {
                let (path, target) =
                    last_link.unwrap_or_else(|| (path.to_owned(), path.to_owned()));
                return Err(ResolveError::EscapesRoot { path, target });
            }
            continue;
        }
        done.push(name);
        let here = join(&done);
        if here.len() > MAX_PATH || todo.len() > MAX_PATH {
            return Err(ResolveError::Malformed { path: here });
        }
        let meta = fs.symlink_metadata(here.as_str()).map_err(fs_err(&here))?;
        if !meta.is_symlink() {
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(ResolveError::TooManyLinks {
                path: path.to_owned(),
            });
        }
        let target = fs.read_link(here.as_str()).map_err(fs_err(&here))?;
        let target = target
            .to_str()
            .map_err(|_| ResolveError::Malformed { path: here.clone() })?
            .to_owned();
        done.pop();
        if target.starts_with('/') {
            done.clear();
        }
        push_components(&mut todo, &target);
        last_link = Some((here, target));
    }
    let resolved = join(&done);
    if (links > 0 || confine) && !BOOT_DIRS.iter().any(|d| resolved.starts_with(d)) {
        return Err(ResolveError::OutsideBootDirs {
            path: path.to_owned(),
            resolved,
        });
    }
    let meta = fs
        .symlink_metadata(resolved.as_str())
        .map_err(fs_err(&resolved))?;
    if !meta.file_type().is_regular_file() {
        return Err(ResolveError::NotAFile { path: resolved });
    }
    Ok(resolved)
}
