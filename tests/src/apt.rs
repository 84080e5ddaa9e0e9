//! Debian packages: installing the tools the harness runs, and downloading
//! and unpacking packages (kernels) whose files go into images.
//!
//! CI starts on a fresh machine, so everything the harness needs is
//! installed from here, by package name, when running as root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, Once};

use crate::cache;
use crate::cmd;
use crate::error::{Error, Result};

/// Whether this process runs as root (reads `/proc` rather than calling
/// `geteuid`, to keep the harness free of `unsafe`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// Whether the Debian package `name` is installed.
pub fn is_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", name])
        .output()
        .map(|out| out.status.success() && out.stdout == b"installed")
        .unwrap_or(false)
}

/// The installed version of `name`.
pub fn installed_version(name: &str) -> Result<String> {
    cmd::stdout(Command::new("dpkg-query").args(["-W", "-f=${Version}", name]))
}

/// Installs whichever of `packages` are missing (needs root).
pub fn ensure_installed(packages: &[&str]) -> Result<()> {
    let missing: Vec<String> = packages
        .iter()
        .filter(|p| !is_installed(p))
        .map(|p| (*p).to_owned())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(Error::MissingPackages {
            packages: missing,
            reason: "not root; install them with apt-get".into(),
        });
    }
    crate::note(&format!("installing {}", missing.join(" ")));
    let install = || {
        cmd::output(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    // A fresh machine may have no package lists yet: update once and retry.
    if install().is_err() {
        update_lists()?;
        install().map_err(|err| Error::MissingPackages {
            packages: missing.clone(),
            reason: err.to_string(),
        })?;
    }
    Ok(())
}

/// Runs `apt-get update` at most once per process.
fn update_lists() -> Result<()> {
    static UPDATE: Once = Once::new();
    let mut result = Ok(());
    UPDATE.call_once(|| {
        crate::note("apt-get update");
        result = cmd::output(Command::new("apt-get").args(["update", "-q"])).map(drop);
    });
    result
}

/// A field of the candidate version's record in `apt-cache show`.
///
/// Records are memoized per process: each `apt-cache` call takes over a
/// second, and every image build asks about the same few packages.
fn candidate_field(package: &str, field: &str) -> Result<Option<String>> {
    static RECORDS: Mutex<BTreeMap<String, Option<String>>> = Mutex::new(BTreeMap::new());
    let cached = RECORDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(package)
        .cloned();
    let record = match cached {
        Some(record) => record,
        None => {
            let record = match cmd::stdout(Command::new("apt-cache").args([
                "show",
                "--no-all-versions",
                package,
            ])) {
                Ok(record) => Some(record),
                Err(Error::CommandFailed { .. }) => None,
                Err(err) => return Err(err),
            };
            RECORDS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(package.to_owned(), record.clone());
            record
        }
    };
    let prefix = format!("{field}: ");
    Ok(record.and_then(|r| {
        r.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(str::to_owned)
    }))
}

/// Resolves what the meta package `meta` currently depends on, e.g.
/// `linux-image-cloud-amd64` → `linux-image-6.1.0-56-cloud-amd64`, so that
/// no version is hard-coded. Prefers the `-unsigned` twin when it exists:
/// same kernel, without the Secure Boot wrapper.
pub fn resolve_meta(meta: &str) -> Result<String> {
    let depends = |meta: &str| -> Result<Option<String>> {
        let text = match cmd::stdout(Command::new("apt-cache").args(["depends", meta])) {
            Ok(text) => text,
            Err(Error::CommandFailed { .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        Ok(text
            .lines()
            .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends: "))
            .find(|dep| dep.starts_with("linux-image-"))
            .map(str::to_owned))
    };
    let target = match depends(meta)? {
        Some(target) => target,
        None => {
            update_lists()?;
            depends(meta)?.ok_or_else(|| Error::PackageNotFound(meta.to_owned()))?
        }
    };
    let unsigned = format!("{target}-unsigned");
    if candidate_field(&unsigned, "Filename")?.is_some() {
        Ok(unsigned)
    } else {
        Ok(target)
    }
}

/// A downloaded `.deb`.
#[derive(Debug, Clone)]
pub struct Deb {
    /// The package name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The file in the cache.
    pub path: PathBuf,
}

/// Downloads the candidate version of `package` into the cache (once).
pub fn download(package: &str) -> Result<Deb> {
    let not_found = || Error::PackageNotFound(package.to_owned());
    let filename = candidate_field(package, "Filename")?.ok_or_else(not_found)?;
    let version = candidate_field(package, "Version")?.ok_or_else(not_found)?;
    let basename = filename.rsplit('/').next().unwrap_or(&filename).to_owned();
    let debs = cache::root().join("debs");
    let path = debs.join(&basename);
    if !path.is_file() {
        crate::note(&format!("downloading {package} {version}"));
        let scratch = cache::TempDir::new_in(&debs, ".download")?;
        cmd::output(
            Command::new("apt-get")
                .current_dir(scratch.path())
                // Root downloading into a root-owned directory: the _apt
                // sandbox user could not write there anyway.
                .args(["-q", "-o", "APT::Sandbox::User=root", "download", package]),
        )?;
        let fetched = scratch.path().join(&basename);
        std::fs::rename(&fetched, &path).map_err(Error::io("move", &fetched))?;
    }
    Ok(Deb {
        name: package.to_owned(),
        version,
        path,
    })
}

/// Unpacks `deb` into the cache (once) and returns the directory.
pub fn extract(deb: &Deb) -> Result<PathBuf> {
    let stem = deb
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = cache::root().join("packages").join(stem);
    cache::build_dir(&dir, |scratch: &Path| {
        cmd::output(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb.path)
                .arg(scratch),
        )
        .map(drop)
    })
}
