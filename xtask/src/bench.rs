//! `cargo xtask bench boot`: see `stratus_tests::bench`.

use std::path::PathBuf;

use stratus_tests::bench::Plan;
use stratus_tests::images;

use crate::steps::{self, step, Result};

/// How `bench boot` varies from its default run.
#[derive(Debug, Clone, Default)]
pub struct BootOptions {
    /// The `quiet` guest command line.
    pub quiet: bool,
    /// Leave QEMU microvm out.
    pub without_qemu: bool,
    /// Extra guest command-line words, for diagnosis only.
    pub extra_cmdline: String,
    /// `STRATUS_LOG` for stratus-vmm, for diagnosis only.
    pub stratus_log: String,
}

/// Runs the boot benchmark and prints its report.
pub fn boot(runs: u32, firecracker: Option<PathBuf>, options: BootOptions) -> Result<()> {
    steps::prepare_vhost_bench(runs, firecracker.as_deref())?;
    step("building stratus-vmm (release) and the tiny image");
    let stratus_vmm = steps::build_vmm()?;
    let case_runner = steps::build_case_runner()?;
    let plan = Plan {
        runs,
        stratus_vmm,
        firecracker,
        image: images::tiny()?,
        quiet: options.quiet,
        without_qemu: options.without_qemu,
        extra_cmdline: options.extra_cmdline,
        stratus_log: options.stratus_log,
    };
    let mut host = plan.host()?;
    host.case_runner(&case_runner);
    step("booting the virtual host; the VMMs take turns");
    let outcome = host.run()?;
    let report = plan.report(&outcome);
    println!("\n{}", report.render(&plan));
    if report.all_succeeded() {
        Ok(())
    } else {
        Err("some boots failed (see above)".into())
    }
}
