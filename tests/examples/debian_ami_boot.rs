//! Builds the Debian 12 AMI (or finds it in the cache) and boots it once
//! under stratus-vmm with `--boot-from-disk`, in the virtual host unless
//! this machine has hardware KVM, running one of the image's test hooks.
//!
//! ```text
//! cargo run -p stratus-tests --example debian_ami_boot [TEST [VCPUS]]
//! ```
//!
//! TEST is a hook in `guest-images/debian/tests/` (default `info`), or
//! several separated by commas, run in that order. The
//! guest boots from a qcow2 overlay on tmpfs over the read-only image, so
//! the cached image is never written. Prints the guest's console, the
//! VMM's boot-complete time and the case's wall time.

use std::path::PathBuf;
use std::process::ExitCode;

use stratus_tests::debian_ami;
use stratus_tests::script::{quote, Script};
use stratus_tests::vhost::{self, VirtualHost};
use stratus_tests::workspace;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("debian_ami_boot: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> stratus_tests::Result<bool> {
    let mut args = std::env::args().skip(1);
    let test = args.next().unwrap_or_else(|| "info".to_owned());
    let vcpus = args.next().unwrap_or_else(|| "1".to_owned());

    let ami = debian_ami::debian_ami()?;
    println!("AMI {} kernel {}", ami.ami_id, ami.kernel_release);
    println!("  {}", ami.qcow2.display());
    if !vhost::ensure_tools()? {
        return Ok(false);
    }
    let vmm = workspace::stratus_vmm()?;
    let qemu_img = which("qemu-img")?;

    let mut host = VirtualHost::new(&format!("debian-ami-{test}"));
    host.binary("stratus-vmm", &vmm)
        .binary("qemu-img", &qemu_img)
        .disk_file("images/debian-ami/disk.qcow2", &ami.qcow2);
    let cmdline = format!("{} stratus.test={test}", ami.kernel_cmdline);
    let mut script = Script::new();
    // The overlay takes the guest's writes; the image on the host's data
    // disk is read-only anyway.
    script.line(
        "qemu-img create -q -f qcow2 -F qcow2 \
         -b \"$STRATUS_ROOT/images/debian-ami/disk.qcow2\" /tmp/overlay.qcow2",
    );
    script.case(
        "boot",
        900,
        &[
            "env",
            "STRATUS_LOG=info",
            "stratus-vmm",
            "--disk",
            "/tmp/overlay.qcow2,format=qcow2",
            "--boot-from-disk",
            "--cmdline",
            &cmdline,
            "--vcpus",
            &vcpus,
            "--memory",
            "512",
            "--serial",
            "stdout",
        ],
    );
    host.scenario(script.text());
    println!("cmdline: {}", quote(&cmdline));
    let outcome = host.run()?;
    let Some(case) = outcome.case("boot") else {
        println!("no case record; log {}", outcome.log.display());
        return Ok(false);
    };
    println!(
        "exit {:?}, wall {:?}, boot complete {:?}, log {}",
        case.exit,
        case.wall,
        case.boot_complete(),
        outcome.log.display()
    );
    Ok(case.stdout_contains("STRATUS-AMI-BOOTED")
        && test
            .split(',')
            .all(|t| case.stdout_contains(&format!("STRATUS-TEST-END {t} status=0"))))
}

fn which(program: &str) -> stratus_tests::Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| stratus_tests::Error::Spawn {
            program: program.to_owned(),
            source: std::io::ErrorKind::NotFound.into(),
        })
}
