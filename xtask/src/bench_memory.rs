//! `cargo xtask bench memory`: see `stratus_tests::memory_bench`.

use std::path::PathBuf;

use stratus_tests::images;
use stratus_tests::memory_bench::Plan;

use crate::steps::{self, step, Result};

/// Measures each VMM's memory outside guest RAM and prints the report.
pub fn memory(runs: u32, firecracker: Option<PathBuf>) -> Result<()> {
    steps::prepare_vhost_bench(runs, firecracker.as_deref())?;
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
