//! `cargo xtask bench disk`: see `stratus_tests::disk_bench`.

use stratus_tests::cache::TempDir;
use stratus_tests::debian_ami;
use stratus_tests::disk_bench::{extract_boot_files, Plan};

use crate::steps::{self, step, Result};

/// Runs the disk benchmark and prints its report.
pub fn disk(
    runs: u32,
    fio_runtime_secs: u32,
    io_engine: String,
    stratus_log: String,
) -> Result<()> {
    if fio_runtime_secs == 0 {
        return Err("--fio-runtime must be at least 1".into());
    }
    steps::prepare_vhost_bench(runs, None)?;
    step("building stratus-vmm (release) and the Debian AMI");
    let stratus_vmm = steps::build_vmm()?;
    let case_runner = steps::build_case_runner()?;
    let ami = debian_ami::debian_ami()?;
    // QEMU microvm cannot read the disk itself: give it the image's kernel
    // and initrd as files. They live only as long as this run.
    let scratch = TempDir::new("stratus-bench-disk")?;
    let boot_files = extract_boot_files(&ami, scratch.path())?;
    let plan = Plan {
        runs,
        fio_runtime_secs,
        stratus_vmm,
        ami,
        boot_files,
        io_engine,
        stratus_log,
    };
    let mut host = plan.host()?;
    host.case_runner(&case_runner);
    step("booting the virtual host; the VMMs take turns (boot + fio each)");
    let outcome = host.run()?;
    let report = plan.report(&outcome);
    println!("\n{}", report.render(&plan));
    if report.all_succeeded() {
        Ok(())
    } else {
        Err("some boots failed (see above)".into())
    }
}
