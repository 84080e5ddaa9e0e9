//! `cargo xtask bench memory`: see `stratus_tests::memory_bench`.

use std::path::PathBuf;

use stratus_tests::images;
use stratus_tests::memory_bench::Plan;
use stratus_tests::vhost;

use crate::steps::{self, step, Result};

/// Measures each VMM's memory outside guest RAM and prints the report.
pub fn memory(runs: u32, firecracker: Option<PathBuf>) -> Result<()> {
    if runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    if let Some(path) = &firecracker {
        if !path.is_file() {
            return Err(format!("--firecracker {}: no such file", path.display()).into());
        }
    }
    step("installing missing packages");
    steps::install_packages()?;
    if !vhost::ensure_tools()? {
        return Err("QEMU is not available; the benchmark needs it".into());
    }
    step("building stratus-vmm (release) and the tiny image");
    let plan = Plan {
        runs,
        stratus_vmm: steps::build_vmm()?,
        firecracker,
        image: images::tiny()?,
    };
    let mut host = plan.host()?;
    host.case_runner(&steps::build_case_runner()?);
    step("booting the virtual host; the VMMs take turns");
    let outcome = host.run()?;
    println!("\n{}", plan.report(&outcome));
    Ok(())
}
