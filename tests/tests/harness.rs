//! The harness itself, checked with a VMM other than ours: QEMU's
//! `-M microvm` on the virtual host's `/dev/kvm` boots the tiny image.
//! When this passes and a stratus-vmm test fails, the VMM is at fault.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use stratus_tests::case::CaseExit;
use stratus_tests::images;
use stratus_tests::script::Script;
use stratus_tests::vhost::Outcome;
use stratus_tests::vmms::{Boot, GuestFiles};

static RUN: OnceLock<Option<Result<Outcome, String>>> = OnceLock::new();

fn outcome() -> Option<&'static Outcome> {
    common::shared_run(&RUN, || {
        let tiny = images::tiny()?;
        let mut host = common::host("harness");
        let files = GuestFiles::of(&tiny);
        // The kernel travels on the data disk, the initramfs inside the
        // host's own initramfs: both placements get exercised.
        host.disk_file(&files.kernel, &tiny.kernel)
            .file(&files.initrd, &tiny.initrd)
            .nested_qemu()?;
        // Modules later tests need (bridge pulls in stp and llc).
        host.modules(&["tun", "bridge"]);
        let mut script = Script::new();
        script.case("disk_file", 30, &["stat", "-L", "-c", "%s", &files.kernel]);
        script.case("modules", 30, &["cat", "/proc/modules"]);
        script.case("slow", 2, &["sleep", "60"]);
        script.case(
            "qemu_tiny",
            300,
            &Boot::new(&files, 1, 256, "").qemu_microvm(),
        );
        host.scenario(script.text());
        Ok(host)
    })
}

#[test]
fn virtual_host_has_kvm() {
    let Some(outcome) = outcome() else { return };
    assert_eq!(
        outcome.kvm,
        Some(true),
        "no /dev/kvm in the virtual host; log {}",
        outcome.log.display()
    );
    assert_eq!(outcome.exit_code, 0);
}

#[test]
fn data_disk_files_are_visible() {
    let Some(outcome) = outcome() else { return };
    let tiny = images::tiny().unwrap();
    let expected = std::fs::metadata(&tiny.kernel).unwrap().len().to_string();
    let case = outcome.case("disk_file").expect("disk_file case missing");
    assert_eq!(case.exit, Some(CaseExit::Code(0)), "{}", case.describe());
    assert_eq!(
        case.stdout.first().map(String::as_str),
        Some(expected.as_str()),
        "{}",
        case.describe()
    );
}

#[test]
fn a_hanging_command_is_killed_at_its_time_limit() {
    let Some(outcome) = outcome() else { return };
    let case = outcome.case("slow").expect("slow case missing");
    assert_eq!(case.exit, Some(CaseExit::TimedOut), "{}", case.describe());
    let wall = case.wall.expect("wall time");
    assert!(
        wall >= Duration::from_secs(2) && wall < Duration::from_secs(30),
        "{wall:?}"
    );
}

#[test]
fn requested_modules_and_their_dependencies_are_loaded() {
    let Some(outcome) = outcome() else { return };
    let case = outcome.case("modules").expect("modules case missing");
    for module in ["kvm_amd", "tun", "bridge", "stp", "llc"] {
        assert!(
            case.stdout
                .iter()
                .any(|l| l.starts_with(&format!("{module} "))),
            "{module} not loaded\n{}",
            case.describe()
        );
    }
}

#[test]
fn qemu_microvm_boots_tiny_to_userspace() {
    let Some(outcome) = outcome() else { return };
    let tiny = images::tiny().unwrap();
    let case = outcome.case("qemu_tiny").expect("qemu_tiny case missing");
    assert!(
        case.stdout_contains("STRATUS-TINY-BOOTED"),
        "{}",
        case.describe()
    );
    assert_eq!(
        case.value("STRATUS-TINY", "nproc"),
        Some("1"),
        "{}",
        case.describe()
    );
    assert_eq!(
        case.value("STRATUS-TINY", "kernel"),
        Some(tiny.kernel_release.as_str()),
        "{}",
        case.describe()
    );
    assert_eq!(case.exit, Some(CaseExit::Code(0)), "{}", case.describe());
}
