//! stratus-vmm boots stock Debian kernels, reports how the guest ended
//! through its exit code, and rejects bad configurations.
//!
//! All checks share one virtual-host boot (see `common`); each test below
//! asserts one user-visible behaviour of its own. The control API's checks
//! (pause/resume, actions, rate limiters, metrics, console) share the same
//! boot and live in `boot/control.rs`.

mod common;
#[path = "boot/control.rs"]
mod control;
#[path = "boot/net.rs"]
mod net;
#[path = "boot/net_pair.rs"]
mod net_pair;

use std::sync::OnceLock;
use std::time::Duration;

use stratus_tests::case::{CaseExit, CaseResult};
use stratus_tests::images::{self, GuestImage};
use stratus_tests::script::Script;
use stratus_tests::vhost::Outcome;
use stratus_tests::vmms::{Boot, GuestFiles, BASE_CMDLINE};
use stratus_tests::workspace;

/// Per-case limit: a nested boot under TCG takes seconds to tens of
/// seconds; a VMM that hangs must not eat the whole run.
const CASE_TIMEOUT_SECS: u64 = 120;

static RUN: OnceLock<Option<Result<Outcome, String>>> = OnceLock::new();

struct Images {
    tiny: GuestImage,
    debian61: GuestImage,
}

fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| Images {
        tiny: images::tiny().expect("build the tiny image"),
        debian61: images::debian61().expect("build the debian61 image"),
    })
}

pub(crate) fn outcome() -> Option<&'static Outcome> {
    common::shared_run(&RUN, || {
        let images = images();
        let vmm = workspace::stratus_vmm()?;
        let tiny = GuestFiles::of(&images.tiny);
        let debian61 = GuestFiles::of(&images.debian61);
        let mut host = common::host("boot");
        host.binary("stratus-vmm", &vmm)
            .binary("curl", &stratus_tests::vhost::which("curl")?)
            .binary("chattr", &stratus_tests::vhost::which("chattr")?)
            .binary(net::IPROUTE2, &stratus_tests::vhost::which("ip")?)
            .modules(net::MODULES)
            .file(&tiny.kernel, &images.tiny.kernel)
            .file(&tiny.initrd, &images.tiny.initrd)
            .disk_file(&debian61.kernel, &images.debian61.kernel)
            .disk_file(&debian61.initrd, &images.debian61.initrd)
            // The network pair's guests overlap.
            .guests_on_one_cpu();

        let mut script = Script::new();
        script.case(
            "tiny_1cpu",
            CASE_TIMEOUT_SECS,
            &Boot::new(&tiny, 1, 256, "").stratus_vmm(),
        );
        script.case(
            "tiny_2cpu",
            CASE_TIMEOUT_SECS,
            &Boot::new(&tiny, 2, 512, "").stratus_vmm(),
        );
        let reboot = Boot::new(&tiny, 1, 256, "stratus.exit=reboot");
        script.case("tiny_reboot", CASE_TIMEOUT_SECS, &reboot.stratus_vmm());
        // A later `reboot=` wins: the guest resets by triple-faulting, which
        // the VMM cannot tell from a crash and must report as one.
        let triple = Boot::new(&tiny, 1, 256, "stratus.exit=reboot reboot=t");
        script.case("triple_fault", CASE_TIMEOUT_SECS, &triple.stratus_vmm());
        script.case(
            "debian61",
            CASE_TIMEOUT_SECS,
            &Boot::new(&debian61, 1, 256, "").stratus_vmm(),
        );

        // The kernel in a file that cannot change (immutable, on a tmpfs
        // of its own): the VMM maps its pages instead of copying them.
        script.line("mkdir -p /tmp/immutable && mount -t tmpfs immutable /tmp/immutable");
        script.line(&format!(
            "cp \"$STRATUS_ROOT/{}\" /tmp/immutable/vmlinux && chattr +i /tmp/immutable/vmlinux",
            tiny.kernel
        ));
        let mut mapped = Boot::new(&tiny, 1, 256, "");
        mapped.files.kernel = "/tmp/immutable/vmlinux".into();
        let mut argv = vec!["env".to_owned(), "STRATUS_LOG=info".to_owned()];
        argv.extend(mapped.stratus_vmm());
        script.case("tiny_mapped_kernel", CASE_TIMEOUT_SECS, &argv);
        script.line("chattr -i /tmp/immutable/vmlinux; umount /tmp/immutable");

        // The same boot described by a JSON file instead of flags.
        script.line("cat > /tmp/vm.json <<EOF");
        script.line(&format!(
            "{{\"kernel\": \"$STRATUS_ROOT/{}\", \"initrd\": \"$STRATUS_ROOT/{}\", \"cmdline\": \"{BASE_CMDLINE}\", \
             \"vcpus\": 1, \"memory_mib\": 256, \"serial\": \"stdout\"}}",
            tiny.kernel, tiny.initrd
        ));
        script.line("EOF");
        script.case(
            "config_file",
            CASE_TIMEOUT_SECS,
            &["stratus-vmm", "--config", "/tmp/vm.json"],
        );

        // Invalid configurations: no guest may start.
        script.line("head -c 1048576 /dev/urandom > /tmp/random-kernel");
        let mut bad = Boot::new(&tiny, 1, 256, "");
        bad.files.kernel = "/tmp/random-kernel".into();
        script.case("bad_kernel", 60, &bad.stratus_vmm());
        bad.files.kernel = "/nonexistent/vmlinux".into();
        script.case("missing_kernel", 60, &bad.stratus_vmm());
        script.case(
            "zero_vcpus",
            60,
            &Boot::new(&tiny, 0, 256, "").stratus_vmm(),
        );
        script.case(
            "memory_128m",
            CASE_TIMEOUT_SECS,
            &Boot::new(&tiny, 1, 128, "").stratus_vmm(),
        );
        control::add_cases(&mut script, &tiny);
        net::add_cases(&mut script, &tiny);
        net_pair::add_cases(&mut host, &mut script, &images.tiny, &tiny);
        net::teardown(&mut script);
        host.scenario(script.text());
        // Every case timing out, plus the host's own boot, fits in this.
        host.timeout(Duration::from_secs(
            7 * CASE_TIMEOUT_SECS
                + control::TIMEOUT_SECS
                + net::TIMEOUT_SECS
                + net_pair::TIMEOUT_SECS
                + 3 * 60
                + 180,
        ));
        Ok(host)
    })
}

pub(crate) fn case(outcome: &Outcome, name: &str) -> CaseResult {
    outcome
        .case(name)
        .unwrap_or_else(|| panic!("case {name} did not run; log {}", outcome.log.display()))
}

fn assert_booted(case: &CaseResult, image: &GuestImage) {
    assert!(
        case.stdout_contains("STRATUS-TINY-BOOTED"),
        "guest did not reach userspace\n{}",
        case.describe()
    );
    assert_eq!(
        case.value("STRATUS-TINY", "kernel"),
        Some(image.kernel_release.as_str()),
        "{}",
        case.describe()
    );
}

fn memtotal_kib(case: &CaseResult) -> u64 {
    case.value("STRATUS-TINY", "memtotal_kb")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no memtotal_kb line\n{}", case.describe()))
}

#[test]
fn boots_tiny_with_one_vcpu() {
    let Some(outcome) = outcome() else { return };
    let case = case(outcome, "tiny_1cpu");
    assert_booted(&case, &images().tiny);
    assert_eq!(
        case.value("STRATUS-TINY", "nproc"),
        Some("1"),
        "{}",
        case.describe()
    );
}

/// A kernel file that cannot change is mapped into guest RAM, not copied,
/// and the guest boots from it as from a copy.
#[test]
fn boots_a_kernel_mapped_from_an_immutable_file() {
    let Some(outcome) = outcome() else { return };
    let case = case(outcome, "tiny_mapped_kernel");
    assert_booted(&case, &images().tiny);
    assert!(
        case.stderr
            .iter()
            .any(|l| l.contains("mapped from an image that cannot change")),
        "the kernel was copied, not mapped\n{}",
        case.describe()
    );
}

#[test]
fn boots_tiny_with_two_vcpus() {
    let Some(outcome) = outcome() else { return };
    let case = case(outcome, "tiny_2cpu");
    assert_booted(&case, &images().tiny);
    assert_eq!(
        case.value("STRATUS-TINY", "nproc"),
        Some("2"),
        "{}",
        case.describe()
    );
}

#[test]
fn guest_memory_matches_the_configuration() {
    let Some(outcome) = outcome() else { return };
    // MemTotal excludes what the kernel reserves for itself (its image,
    // page tables, crash kernel...): about 15 % of 256 MiB for this kernel
    // under QEMU too. More than configured would mean a wrong memory map.
    for (name, mib) in [("tiny_1cpu", 256u64), ("tiny_2cpu", 512)] {
        let case = case(outcome, name);
        let kib = memtotal_kib(&case);
        let configured = mib * 1024;
        assert!(
            kib <= configured && kib >= configured * 3 / 4,
            "{name}: MemTotal {kib} KiB for {mib} MiB configured\n{}",
            case.describe()
        );
    }
}

#[test]
fn poweroff_exits_0() {
    let Some(outcome) = outcome() else { return };
    for name in ["tiny_1cpu", "tiny_2cpu"] {
        let case = case(outcome, name);
        assert!(
            case.stdout_contains("STRATUS-TINY exit=poweroff"),
            "{}",
            case.describe()
        );
        assert_eq!(case.exit, Some(CaseExit::Code(0)), "{}", case.describe());
    }
}

#[test]
fn reboot_exits_3() {
    let Some(outcome) = outcome() else { return };
    let case = case(outcome, "tiny_reboot");
    assert!(
        case.stdout_contains("STRATUS-TINY exit=reboot"),
        "{}",
        case.describe()
    );
    assert_eq!(case.exit, Some(CaseExit::Code(3)), "{}", case.describe());
}

#[test]
fn guest_triple_fault_exits_1_with_an_error() {
    let Some(outcome) = outcome() else { return };
    let case = case(outcome, "triple_fault");
    assert!(
        case.stdout_contains("STRATUS-TINY exit=reboot"),
        "{}",
        case.describe()
    );
    assert_eq!(case.exit, Some(CaseExit::Code(1)), "{}", case.describe());
    assert!(
        case.stderr
            .iter()
            .any(|l| l.to_lowercase().contains("triple fault")),
        "no error naming the triple fault\n{}",
        case.describe()
    );
}

#[test]
fn boot_complete_is_reported() {
    let Some(outcome) = outcome() else { return };
    let case = case(outcome, "tiny_1cpu");
    let boot = case.boot_complete().unwrap_or_else(|| {
        panic!(
            "no `stratus-vmm: boot complete in <ms> ms` line\n{}",
            case.describe()
        )
    });
    let wall = case.wall.unwrap_or(Duration::MAX);
    assert!(
        boot > Duration::ZERO && boot < wall,
        "boot {boot:?} vs process wall time {wall:?}"
    );
}

#[test]
fn boots_the_debian_6_1_bzimage() {
    let Some(outcome) = outcome() else { return };
    let case = case(outcome, "debian61");
    assert_booted(&case, &images().debian61);
    assert_eq!(case.exit, Some(CaseExit::Code(0)), "{}", case.describe());
}

#[test]
fn boots_from_a_config_file() {
    let Some(outcome) = outcome() else { return };
    let case = case(outcome, "config_file");
    assert_booted(&case, &images().tiny);
    assert_eq!(
        case.value("STRATUS-TINY", "nproc"),
        Some("1"),
        "{}",
        case.describe()
    );
    assert_eq!(case.exit, Some(CaseExit::Code(0)), "{}", case.describe());
}

fn assert_config_error(case: &CaseResult) {
    assert_eq!(case.exit, Some(CaseExit::Code(2)), "{}", case.describe());
    let errors: Vec<&String> = case
        .stderr
        .iter()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "expected a one-line error\n{}",
        case.describe()
    );
    assert!(
        case.stdout.iter().all(|l| l.trim().is_empty()),
        "guest output from a bad config\n{}",
        case.describe()
    );
}

#[test]
fn bad_kernel_image_exits_2_with_an_error() {
    let Some(outcome) = outcome() else { return };
    assert_config_error(&case(outcome, "bad_kernel"));
}

#[test]
fn invalid_configuration_exits_2_with_an_error() {
    let Some(outcome) = outcome() else { return };
    for name in ["missing_kernel", "zero_vcpus"] {
        assert_config_error(&case(outcome, name));
    }
}

#[test]
fn debian_6_12_vmlinux_boots_in_128_mib() {
    let Some(outcome) = outcome() else { return };
    let case = case(outcome, "memory_128m");
    assert_booted(&case, &images().tiny);
    assert_eq!(case.exit, Some(CaseExit::Code(0)), "{}", case.describe());
}
