//! `cargo xtask test`: the whole check, as CI runs it.

use std::time::Instant;

use stratus_tests::vhost;

use crate::steps::{self, cargo, cargo_with_env, step, Result};

/// How long each fuzz target runs in a full check.
const FUZZ_SECONDS_PER_TARGET: u32 = 45;

/// Runs every check in order and stops at the first failure.
pub fn run(e2e: bool) -> Result<()> {
    let start = Instant::now();
    step("installing missing packages");
    steps::install_packages()?;

    step("format");
    cargo(&["fmt", "--all", "--check"])?;

    step("clippy");
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;

    step("unit tests");
    // The end-to-end tests (stratus-tests' integration tests) come last, on
    // their own, one at a time.
    cargo(&[
        "test",
        "--workspace",
        "--exclude",
        "stratus-tests",
        "--exclude",
        "xtask",
    ])?;
    cargo(&["test", "-p", "stratus-tests", "--lib", "--bins"])?;
    cargo(&["test", "-p", "xtask"])?;

    step("fuzzing (each target for a bounded time)");
    crate::fuzz::run_all(FUZZ_SECONDS_PER_TARGET)?;

    if e2e {
        step("end-to-end tests: release build and guest images");
        let vmm = steps::build_vmm()?;
        steps::images()?;
        if !vhost::ensure_tools()? {
            return Ok(());
        }
        step("end-to-end tests (each test binary boots one virtual host)");
        eprintln!(
            "stratus-vmm under test: {}; {:.0} s so far; serial logs in {}",
            vmm.display(),
            start.elapsed().as_secs_f64(),
            stratus_tests::cache::root().join("logs").display()
        );
        // Last, so that the output ends with cargo test's summary lines.
        cargo_with_env(
            &[
                "test",
                "-p",
                "stratus-tests",
                "--test",
                "*",
                "--",
                "--test-threads=1",
            ],
            &[("STRATUS_VMM", &vmm)],
        )?;
    } else {
        eprintln!(
            "\nxtask test: all checks passed in {:.0} s (end-to-end tests skipped)",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
