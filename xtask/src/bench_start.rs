//! `cargo xtask bench start`: see `stratus_tests::start_bench`.

use stratus_tests::images;
use stratus_tests::start_bench::{self, StartKernel};

use crate::steps::{self, step, Result};

/// Starts stratus-vmm `runs` times per kernel on this machine's KVM and
/// prints the per-run figures and medians.
pub fn start(runs: u32) -> Result<()> {
    if runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    if !std::path::Path::new("/dev/kvm").exists() {
        return Err("the start benchmark runs on this machine's /dev/kvm, which is missing".into());
    }
    step("installing missing packages");
    steps::install_packages()?;
    step("building stratus-vmm (release) and the guest images");
    let vmm = steps::build_vmm()?;
    let tiny = images::tiny()?;
    let debian61 = images::debian61()?;
    // The same vmlinux once more from a sealed memfd, which the VMM maps
    // instead of copying (kept open for the whole benchmark).
    let (_sealed, sealed_kernel) = start_bench::sealed_copy(&tiny.kernel)?;
    let mut kernels = [
        ("Debian 6.12 vmlinux (ELF, PVH)", &tiny),
        (
            "Debian 6.12 vmlinux (ELF, PVH) from a sealed memfd: mapped, not copied",
            &tiny,
        ),
        ("Debian 6.1 bzImage", &debian61),
    ]
    .map(|(label, image)| StartKernel {
        label: label.to_owned(),
        kernel: image.kernel.clone(),
        initrd: image.initrd.clone(),
    });
    kernels[1].kernel = sealed_kernel;
    let socket = std::env::temp_dir().join(format!("stratus-start-{}.sock", std::process::id()));
    let mut results = Vec::new();
    for kernel in kernels {
        step(&format!("{}: {runs} starts", kernel.label));
        // One unmeasured start first, so every measured one finds the
        // binary and the images in the page cache.
        start_bench::run_once(&vmm, &kernel, &socket)?;
        let mut measured = Vec::new();
        for _ in 0..runs {
            measured.push(start_bench::run_once(&vmm, &kernel, &socket)?);
        }
        results.push((kernel, measured));
    }
    println!(
        "\nstratus-vmm start, measured by the VMM itself (process start → API socket bound; → boot vCPU's first KVM_RUN), on this machine's /dev/kvm\n"
    );
    print!("{}", start_bench::render(&results));
    Ok(())
}
