//! The Debian 12 AMI: a real bookworm system (systemd, the stock 6.1
//! cloud kernel and its initramfs) on a GPT disk, as raw and qcow2, with
//! the AMI manifest beside them.
//!
//! `guest-images/debian/build.sh` builds it (see `guest-images/README.md`);
//! this module runs that script into the cache, in a directory named after
//! a fingerprint of the recipe's files and the kernel versions the mirror
//! currently offers, so it is built once per change of either. The build
//! happens in a scratch directory that is renamed into place only when
//! complete, so an interrupted build never leaves an image behind a valid
//! name.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::apt;
use crate::cache::{self, Fingerprint};
use crate::cmd;
use crate::error::{Error, Result};
use crate::kernel;
use crate::workspace;

/// Bumped when the Rust side of the build changes its output.
const BUILDER_VERSION: &str = "1";

/// Host tools `build.sh` runs: debootstrap (with the archive keys it checks
/// the mirror's signatures against), `sfdisk`, `mkfs.ext4 -d`, `qemu-img`.
pub const BUILD_PACKAGES: &[&str] = &[
    "debootstrap",
    "debian-archive-keyring",
    "gpgv",
    "fdisk",
    "e2fsprogs",
    "qemu-utils",
    // The trust store pip uses inside the image build (see build.sh).
    "ca-certificates",
];

/// Environment variables `build.sh` reads; their values are part of the
/// fingerprint, since they change what is built.
const BUILD_ENV: &[&str] = &[
    "STRATUS_DEBIAN_MIRROR",
    "STRATUS_DEBIAN_SECURITY_MIRROR",
    "STRATUS_DISK_MIB",
];

/// Lines of the build log quoted in an error.
const LOG_TAIL_LINES: usize = 40;

/// A built Debian AMI bundle in the cache.
#[derive(Debug, Clone)]
pub struct DebianAmi {
    /// The bundle's directory (`manifest.json`, the disks, `info`,
    /// `packages.txt`).
    pub dir: PathBuf,
    /// The GPT disk, raw (sparse).
    pub raw: PathBuf,
    /// The same disk as qcow2; the manifest's root device.
    pub qcow2: PathBuf,
    /// The AMI manifest (`vmm/src/ami/manifest.rs`).
    pub manifest: PathBuf,
    /// The manifest's id, `ami-` and 17 hex digits.
    pub ami_id: String,
    /// `uname -r` of the image's kernel, e.g. `6.1.0-56-cloud-amd64`.
    pub kernel_release: String,
    /// The manifest's kernel command line (`console=ttyS0 ...`), without
    /// the `root=` the VMM adds.
    pub kernel_cmdline: String,
}

/// The recipe: `guest-images/debian` in the workspace.
pub fn recipe_dir() -> PathBuf {
    workspace::root().join("guest-images").join("debian")
}

/// Builds the Debian AMI into the cache, or returns the one already there
/// for the same inputs. Needs root; installs the host tools it needs.
pub fn debian_ami() -> Result<DebianAmi> {
    apt::ensure_installed(BUILD_PACKAGES)?;
    let recipe = recipe_dir();
    let key = fingerprint(&recipe)?;
    let dir = cache::root()
        .join("images")
        .join(format!("debian-ami-{}", key.hex()));
    if !dir.is_dir() {
        crate::note(&format!(
            "building the Debian 12 AMI (debootstrap; a few minutes) into {}",
            dir.display()
        ));
    }
    let start = Instant::now();
    let dir = cache::build_dir(&dir, |scratch| build(&recipe, &key, scratch))?;
    if start.elapsed().as_secs() > 1 {
        crate::note(&format!(
            "Debian AMI built in {:.0} s",
            start.elapsed().as_secs_f64()
        ));
    }
    load(&dir)
}

/// The cache key: the builder version, every recipe file (path, mode and
/// contents), the kernel the mirror offers, and the build's environment.
fn fingerprint(recipe: &Path) -> Result<Fingerprint> {
    let mut key = Fingerprint::default().with(BUILDER_VERSION);
    for (rel, path) in recipe_files(recipe)? {
        let contents = fs::read(&path).map_err(Error::io("read", &path))?;
        key = key
            .with(rel)
            .with(if is_executable(&path)? { "x" } else { "-" })
            .with(contents);
    }
    // The ABI package the meta package points at (this also refreshes the
    // package lists on a fresh machine) and every version of the meta
    // package the configured suites offer: the image gets the newest one
    // (bookworm plus its updates and security suites), so a kernel update
    // on the mirror builds a new image.
    key = key
        .with(apt::resolve_meta(kernel::CLOUD_6_1)?)
        .with(cmd::stdout(
            Command::new("apt-cache").args(["madison", kernel::CLOUD_6_1]),
        )?);
    for var in BUILD_ENV {
        key = key.with(var).with(std::env::var(var).unwrap_or_default());
    }
    Ok(key)
}

/// Every file under `dir` as (relative path, path), sorted, so the
/// fingerprint does not depend on directory order.
fn recipe_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in fs::read_dir(&current).map_err(Error::io("list", &current))? {
            let path = entry.map_err(Error::io("list", &current))?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                files.push((rel, path));
            }
        }
    }
    files.sort();
    Ok(files)
}

fn is_executable(path: &Path) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(Error::io("stat", path))?;
    Ok(meta.permissions().mode() & 0o111 != 0)
}

/// Derives `count` hex digits from `key` (more than the fingerprint's 16
/// when needed, by hashing it again with a counter).
fn derived_hex(key: &Fingerprint, purpose: &str, count: usize) -> String {
    let mut hex = String::new();
    let mut round = 0u32;
    while hex.len() < count {
        hex.push_str(
            &Fingerprint::default()
                .with(purpose)
                .with(key.hex())
                .with(round.to_le_bytes())
                .hex(),
        );
        round += 1;
    }
    hex.truncate(count);
    hex
}

/// The AMI id for a fingerprint: `ami-` and 17 hex digits.
fn ami_id(key: &Fingerprint) -> String {
    format!("ami-{}", derived_hex(key, "ami-id", 17))
}

/// A version-4-shaped UUID for the root filesystem, from the fingerprint,
/// so one set of inputs always gives the same `root=UUID=`.
fn root_uuid(key: &Fingerprint) -> String {
    let h = derived_hex(key, "root-uuid", 32);
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Runs `build.sh` with its staging tree inside `scratch` and the bundle
/// written to `scratch` itself, then deletes the staging tree.
fn build(recipe: &Path, key: &Fingerprint, scratch: &Path) -> Result<()> {
    let rootfs = scratch.join("rootfs");
    let logs = cache::root().join("logs");
    fs::create_dir_all(&logs).map_err(Error::io("create", &logs))?;
    let log_path = logs.join("debian-ami-build.log");
    let result = run_script(recipe, key, &rootfs, scratch, &log_path);
    // Whatever happened, nothing may stay mounted under the tree: the
    // scratch directory is deleted recursively on failure, and a leftover
    // bind mount of /dev would take the machine's device nodes with it.
    if let Err(err) = unmount_under(&rootfs) {
        // Move the tree out of the scratch directory so that its cleanup
        // cannot reach through the mount.
        let quarantine =
            cache::root().join(format!(".debian-ami-stuck-mounts-{}", std::process::id()));
        let _ = fs::rename(&rootfs, &quarantine);
        return Err(err);
    }
    result?;
    fs::remove_dir_all(&rootfs).map_err(Error::io("remove", &rootfs))
}

fn run_script(
    recipe: &Path,
    key: &Fingerprint,
    rootfs: &Path,
    out: &Path,
    log_path: &Path,
) -> Result<()> {
    let script = recipe.join("build.sh");
    let mut log = fs::File::create(log_path).map_err(Error::io("create", log_path))?;
    let log_out = log.try_clone().map_err(Error::io("open", log_path))?;
    let mut command = Command::new("bash");
    command
        .arg(&script)
        .arg(rootfs)
        .arg(out)
        .env("STRATUS_AMI_ID", ami_id(key))
        .env("STRATUS_ROOT_UUID", root_uuid(key))
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(log_out)
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| Error::Spawn {
        program: script.display().to_string(),
        source,
    })?;
    // Everything goes to the log; the script's own step lines also become
    // progress notes, since a build takes minutes.
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "{line}");
            if let Some(step) = line.strip_prefix("build.sh: ") {
                crate::note(&format!("debian-ami: {step}"));
            }
        }
    }
    let status = child.wait().map_err(|source| Error::Spawn {
        program: script.display().to_string(),
        source,
    })?;
    if status.success() {
        return Ok(());
    }
    let text = fs::read_to_string(log_path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    Err(Error::CommandFailed {
        command: cmd::describe(&command),
        status: status.to_string(),
        stderr: format!("{tail}\n(whole log: {})", log_path.display()),
    })
}

/// Unmounts everything mounted below `dir`, deepest first; fails if
/// anything is still mounted afterwards.
fn unmount_under(dir: &Path) -> Result<()> {
    let mounted = || -> Vec<String> {
        let prefix = format!("{}/", dir.display());
        let table = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut points: Vec<String> = table
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|p| p.starts_with(&prefix))
            .map(str::to_owned)
            .collect();
        // Reverse order puts `a/b/c` before `a/b`.
        points.sort_by(|a, b| b.cmp(a));
        points
    };
    for point in mounted() {
        crate::note(&format!("debian-ami: unmounting leftover {point}"));
        if cmd::output(Command::new("umount").arg(&point)).is_err() {
            let _ = cmd::output(Command::new("umount").arg("-l").arg(&point));
        }
    }
    let left = mounted();
    if left.is_empty() {
        Ok(())
    } else {
        Err(Error::BadInput {
            path: dir.to_path_buf(),
            problem: format!("still mounted after the build: {}", left.join(" ")),
        })
    }
}

/// Reads a built bundle's paths and facts back from its `info` file.
fn load(dir: &Path) -> Result<DebianAmi> {
    let info_path = dir.join("info");
    let info = fs::read_to_string(&info_path).map_err(Error::io("read", &info_path))?;
    let field = |name: &str| -> Result<String> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
            .ok_or_else(|| Error::BadInput {
                path: info_path.clone(),
                problem: format!("no {name}="),
            })
    };
    Ok(DebianAmi {
        dir: dir.to_path_buf(),
        raw: dir.join("disk.raw"),
        qcow2: dir.join("disk.qcow2"),
        manifest: dir.join("manifest.json"),
        ami_id: field("ami_id")?,
        kernel_release: field("kernel_release")?,
        kernel_cmdline: field("kernel_cmdline")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_have_the_manifest_shapes_and_are_stable() {
        let key = Fingerprint::default().with("x");
        let id = ami_id(&key);
        assert_eq!(id.len(), 4 + 17, "{id}");
        assert!(id.starts_with("ami-"));
        assert!(id[4..]
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(id, ami_id(&key));
        assert_ne!(id, ami_id(&Fingerprint::default().with("y")));

        let uuid = root_uuid(&key);
        let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{uuid}");
        assert_eq!(&uuid[14..15], "4", "version nibble: {uuid}");
        assert_eq!(&uuid[19..20], "8", "variant nibble: {uuid}");
    }

    #[test]
    fn recipe_files_are_listed_sorted_with_the_build_script() {
        let files = recipe_files(&recipe_dir()).unwrap();
        let names: Vec<&str> = files.iter().map(|(rel, _)| rel.as_str()).collect();
        assert!(names.contains(&"build.sh"), "{names:?}");
        assert!(names.contains(&"tests/info.sh"), "{names:?}");
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
    }

    #[test]
    fn info_file_is_read_back() {
        let tmp = cache::TempDir::new("stratus-debian-ami-test").unwrap();
        fs::write(
            tmp.path().join("info"),
            "ami_id=ami-0123456789abcdef0\nkernel_release=6.1.0-1-cloud-amd64\nkernel_cmdline=console=ttyS0 quiet\n",
        )
        .unwrap();
        let ami = load(tmp.path()).unwrap();
        assert_eq!(ami.ami_id, "ami-0123456789abcdef0");
        assert_eq!(ami.kernel_release, "6.1.0-1-cloud-amd64");
        assert_eq!(ami.kernel_cmdline, "console=ttyS0 quiet");
        assert_eq!(ami.qcow2, tmp.path().join("disk.qcow2"));
        fs::remove_file(tmp.path().join("info")).unwrap();
        assert!(load(tmp.path()).is_err());
    }
}
