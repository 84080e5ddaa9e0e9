//! Building blocks shared by the xtask commands.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use stratus_tests::debian_ami::DebianAmi;
use stratus_tests::images::{self, GuestImage};
use stratus_tests::vhost::VirtualHost;
use stratus_tests::{apt, cmd, debian_ami, host_net, vhost, workspace, Error};

/// An xtask failure, printed once by `main`.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Tools the other crates' tests run: `qemu-img` (the devices crate's
/// qcow2 tests), `sfdisk` and `mkfs.ext4` (the vmm's AMI test disks).
const WORKSPACE_TEST_PACKAGES: &[&str] = &["qemu-utils", "fdisk", "e2fsprogs"];

/// Every apt package the commands use: the image build and virtual-host
/// tools, and what the workspace's unit tests call.
pub fn install_packages() -> Result<()> {
    let mut all: Vec<&str> = vhost::PACKAGES.to_vec();
    all.extend(images::BUILD_PACKAGES);
    all.extend(debian_ami::BUILD_PACKAGES);
    all.extend(WORKSPACE_TEST_PACKAGES);
    all.sort_unstable();
    all.dedup();
    apt::ensure_installed(&all)?;
    Ok(())
}

/// Prints a step header with the time since the first step.
pub fn step(title: &str) {
    static START: OnceLock<Instant> = OnceLock::new();
    let elapsed = START.get_or_init(Instant::now).elapsed();
    eprintln!("\n==> [{:>4.0} s] {title}", elapsed.as_secs_f64());
}

/// Runs a cargo command in the workspace with its output shown.
pub fn cargo(args: &[&str]) -> Result<()> {
    cargo_with_env(args, &[])
}

/// [`cargo`] with extra environment variables. Prints nothing after
/// cargo's own output, so a final `cargo test` ends the run with its
/// summary lines.
pub fn cargo_with_env(args: &[&str], env: &[(&str, &std::path::Path)]) -> Result<()> {
    let mut cargo = workspace::cargo();
    cargo.current_dir(workspace::root()).args(args);
    for (key, value) in env {
        cargo.env(key, value);
    }
    eprintln!("$ cargo {}", args.join(" "));
    cmd::run_visible(&mut cargo)?;
    Ok(())
}

/// Builds the release stratus-vmm in the workspace's target directory.
pub fn build_vmm() -> Result<PathBuf> {
    cargo(&["build", "--release", "-p", "stratus-vmm"])?;
    let path = workspace::profile_dir(true).join("stratus-vmm");
    if !path.is_file() {
        return Err(Box::new(Error::BadInput {
            path,
            problem: "not built".into(),
        }));
    }
    Ok(path)
}

/// Builds the `stratus-case` runner the virtual host needs.
pub fn build_case_runner() -> Result<PathBuf> {
    cargo(&[
        "build",
        "--release",
        "-p",
        "stratus-tests",
        "--bin",
        "stratus-case",
    ])?;
    Ok(workspace::profile_dir(true).join("stratus-case"))
}

/// Builds (or finds in the cache) both kernel+initramfs guest images and
/// the Debian AMI; returns the former.
pub fn images() -> Result<Vec<GuestImage>> {
    install_packages()?;
    let start = Instant::now();
    let built = vec![images::tiny()?, images::debian61()?];
    for image in &built {
        eprintln!(
            "image {:<9} kernel {} ({})\n                initrd {}",
            image.name,
            image.kernel.display(),
            image.kernel_release,
            image.initrd.display()
        );
    }
    // The Debian AMI too (the `ami` e2e test boots it): on a cold machine
    // its debootstrap takes minutes, better spent here than inside a test.
    let ami = debian_ami::debian_ami()?;
    eprintln!(
        "image debian-ami {} kernel {}\n                disk {}",
        ami.ami_id,
        ami.kernel_release,
        ami.qcow2.display()
    );
    eprintln!("images ready in {:.1} s", start.elapsed().as_secs_f64());
    Ok(built)
}

/// Runs a command with inherited output and returns its exit code.
pub fn status(command: &mut Command) -> Result<i32> {
    let status = command.status().map_err(|source| Error::Spawn {
        program: command.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    Ok(status.code().unwrap_or(-1))
}

/// The checks and setup every virtual-host benchmark starts with: a
/// positive run count, an existing Firecracker binary when one is named,
/// the packages, and QEMU.
pub fn prepare_vhost_bench(runs: u32, firecracker: Option<&std::path::Path>) -> Result<()> {
    if runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    if let Some(path) = firecracker {
        if !path.is_file() {
            return Err(format!("--firecracker {}: no such file", path.display()).into());
        }
    }
    step("installing missing packages");
    install_packages()?;
    if !vhost::ensure_tools()? {
        return Err("QEMU is not available; the benchmark needs it".into());
    }
    Ok(())
}

/// Where a virtual host for the agent holds the Debian AMI's disk.
pub const AMI_DISK_IN_HOST: &str = "images/debian-ami/disk.qcow2";
/// Where it holds the AMI's manifest.
pub const AMI_MANIFEST_IN_HOST: &str = "images/debian-ami/manifest.json";

/// A virtual host named `name` with what `stratus-agent` needs to run
/// the Debian AMI: the release `stratus-vmm` and `stratus-agent` from
/// `release`, curl, iproute2 and the bridge and tap modules, and the AMI
/// bundle at [`AMI_DISK_IN_HOST`] and [`AMI_MANIFEST_IN_HOST`].
pub fn agent_host(
    name: &str,
    release: &std::path::Path,
    case_runner: &std::path::Path,
    ami: &DebianAmi,
) -> Result<VirtualHost> {
    let mut host = VirtualHost::new(name);
    host.case_runner(case_runner)
        .binary("stratus-vmm", &release.join("stratus-vmm"))
        .binary("stratus-agent", &release.join("stratus-agent"))
        .binary("curl", &vhost::which("curl")?)
        .binary(host_net::IPROUTE2, &vhost::which("ip")?)
        .modules(host_net::MODULES)
        .disk_file(AMI_DISK_IN_HOST, &ami.qcow2)
        .file(AMI_MANIFEST_IN_HOST, &ami.manifest);
    Ok(host)
}
