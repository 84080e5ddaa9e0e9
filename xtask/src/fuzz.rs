//! Bounded fuzzing runs: every cargo-fuzz target under `fuzz/` for a fixed
//! time, failing on the first crash. Part of `cargo xtask test`.

use std::path::Path;
use std::process::Command;

use stratus_tests::{cmd, workspace};

use crate::steps::Result;

/// The cargo-fuzz version installed when none is present.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Every target in `fuzz/Cargo.toml`.
pub const TARGETS: &[&str] = &[
    "virtio_blk_requests",
    "qcow2_image",
    "disk_boot_reader",
    "net_datapath",
    "metadata_http",
];

fn has_cargo_fuzz() -> bool {
    workspace::cargo()
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Installs cargo-fuzz from crates.io when it is missing.
fn ensure_cargo_fuzz() -> Result<()> {
    if has_cargo_fuzz() {
        return Ok(());
    }
    eprintln!("$ cargo install cargo-fuzz --locked --version {CARGO_FUZZ_VERSION}");
    let mut install = workspace::cargo();
    install.args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]);
    cmd::run_visible(&mut install)?;
    Ok(())
}

/// Runs each target for `seconds`, from an empty corpus kept outside the
/// repository, so a run is bounded and repeatable in CI.
pub fn run_all(seconds: u32) -> Result<()> {
    ensure_cargo_fuzz()?;
    let fuzz_dir = workspace::root().join("fuzz");
    let target_dir = workspace::root().join("target").join("fuzz");
    for target in TARGETS {
        let corpus = stratus_tests::cache::root()
            .join("fuzz-corpus")
            .join(target);
        std::fs::create_dir_all(&corpus)?;
        run_target(&fuzz_dir, &target_dir, target, &corpus, seconds)?;
    }
    Ok(())
}

fn run_target(
    fuzz_dir: &Path,
    target_dir: &Path,
    target: &str,
    corpus: &Path,
    seconds: u32,
) -> Result<()> {
    let mut fuzz: Command = workspace::cargo();
    fuzz.current_dir(fuzz_dir)
        // cargo-fuzz passes sanitizer flags that stable rustc accepts only
        // with this set; the toolchain here is stable.
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", target_dir)
        .args(["fuzz", "run", "-O", target])
        .arg(corpus)
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
        ]);
    eprintln!(
        "$ cargo fuzz run -O {target} {} -- -max_total_time={seconds}",
        corpus.display()
    );
    cmd::run_visible(&mut fuzz)?;
    Ok(())
}
