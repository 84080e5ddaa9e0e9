//! `cargo xtask bench net`: see `stratus_tests::net_bench`.

use stratus_tests::cache::TempDir;
use stratus_tests::net_bench::Plan;
use stratus_tests::{images, workspace};

use crate::steps::{self, step, Result};

/// Runs the network benchmark and prints its report.
pub fn net(runs: u32, seconds: u32) -> Result<()> {
    if seconds == 0 {
        return Err("--seconds must be at least 1".into());
    }
    steps::prepare_vhost_bench(runs, None)?;
    step("building stratus-vmm, stratus-netprobe (release) and the tiny image");
    let stratus_vmm = steps::build_vmm()?;
    let case_runner = steps::build_case_runner()?;
    let netprobe = workspace::workspace_binary("stratus-tests", "stratus-netprobe", true)?;
    let tiny = images::tiny()?;
    let scratch = TempDir::new("stratus-bench-net")?;
    let plan = Plan {
        runs,
        seconds,
        stratus_vmm,
        tiny,
        netprobe,
        scratch: scratch.path().to_path_buf(),
    };
    let mut host = plan.host()?;
    host.case_runner(&case_runner);
    step("booting the virtual host; each VMM runs a client and a server guest in turn");
    let outcome = host.run()?;
    let report = plan.report(&outcome);
    println!("\n{}", report.render(&plan));
    if report.all_succeeded() {
        Ok(())
    } else {
        Err("some boot pairs failed (see above)".into())
    }
}
