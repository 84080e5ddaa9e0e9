//! Helpers shared by the crate's unit tests.

use std::process::Command;

/// Whether qemu-img can be run; without it a test that needs it skips,
/// except under CI, where it must be installed.
pub(crate) fn have_qemu_img() -> bool {
    let ok = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "qemu-img is required when CI is set"
        );
        eprintln!("skipping: qemu-img not found (install qemu-utils)");
    }
    ok
}
