//! The Debian 12 AMI boots under stratus-vmm straight from its disk (a
//! qcow2 overlay over the image), finds that disk through ACPI, and what
//! the guest writes survives a clean shutdown and a `kill -9` of the VMM,
//! without reaching the base image or another overlay on the same base.
//!
//! One virtual-host boot runs every guest boot below in sequence (each
//! nested AMI boot takes about a minute); each test asserts one behaviour
//! on the shared record. Overlay A and overlay B share one base:
//!
//! | case | disk | vCPUs | guest hooks |
//! | --- | --- | --- | --- |
//! | `a1` | A | 2 | info, write-marker `alpha` |
//! | `b1` | B | 1 | info, check-marker, write-marker `bravo` |
//! | `a2` | A | 1 | check-marker, write-then-hang `charlie`; `kill -9` after FSYNC-DONE |
//! | `b2` | B | 1 | check-marker |
//! | `a3` | A | 1 | check-marker |
//!
//! so `a2` shows persistence across a clean shutdown (alpha) and isolation
//! from B (not bravo), `b1` isolation from A (no marker), `b2` B's own
//! persistence, `a3` persistence across the kill (charlie).
//!
//! Then the same base as an AMI bundle (`--ami MANIFEST --instance-disk C`,
//! the VMM creating overlay C on first launch), driven through the API:
//! `c1` is shut down with the `Shutdown` action (the ACPI power button,
//! handled by the guest's systemd-logind), `c2` gets `SendCtrlAltDel`
//! (systemd reboots). Then two instances, D and E, boot side by side from
//! fresh overlays on one bridge with cloud-init, DHCP, metadata and
//! security groups from their VMMs (`ami/cloud.rs`). First of all,
//! `stratus-agent` runs, restarts, stops, starts and terminates two
//! instances (`ami/agent.rs`), then five with traffic between them under
//! live security-group changes (`ami/fleet.rs`).
//! Then every overlay goes through `qemu-img check` and the base through
//! `sha256sum`.

#[path = "ami/agent.rs"]
mod agent;
#[path = "ami/cloud.rs"]
mod cloud;
mod common;
#[path = "ami/fleet.rs"]
mod fleet;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use stratus_tests::ami_guest::{self, AmiBoot, Section, BOOTED};
use stratus_tests::case::{CaseExit, CaseResult};
use stratus_tests::cmd;
use stratus_tests::debian_ami::{self, DebianAmi};
use stratus_tests::host_net;
use stratus_tests::script::Script;
use stratus_tests::vhost::Outcome;
use stratus_tests::{vmm_api, workspace};

/// Per-boot limit. A nested AMI boot takes about a minute to
/// `multi-user.target` under TCG, plus the hooks and the shutdown; a VMM
/// that hangs must not eat the whole run.
const BOOT_TIMEOUT_SECS: u64 = 360;
/// Guest memory: plenty for the image's minimal userspace.
const MEMORY_MIB: u32 = 512;
/// Where the base image is copied: a writable file, so that a VMM writing
/// through an overlay into its backing file would be caught by the hash
/// (the host's data disk, where the cached image arrives, is read-only).
const BASE: &str = "/tmp/base.qcow2";
const OVERLAY_A: &str = "/tmp/a.qcow2";
const OVERLAY_B: &str = "/tmp/b.qcow2";
/// The instance disk the VMM itself creates from the AMI bundle.
const INSTANCE_C: &str = "/tmp/c.qcow2";
/// The bundle's manifest, next to `BASE` so its image path stays inside.
const MANIFEST: &str = "/tmp/manifest.json";

static RUN: OnceLock<Option<Result<Outcome, String>>> = OnceLock::new();

fn ami() -> &'static DebianAmi {
    static AMI: OnceLock<DebianAmi> = OnceLock::new();
    AMI.get_or_init(|| debian_ami::debian_ami().expect("build the Debian AMI"))
}

/// The base image's sha256 on this machine, before the virtual host ran.
fn base_sha256() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| {
        let out = cmd::stdout(Command::new("sha256sum").arg(&ami().qcow2))
            .expect("sha256sum of the base image");
        out.split_whitespace().next().unwrap_or_default().to_owned()
    })
}

fn boot(disk: &str, vcpus: u32) -> AmiBoot {
    AmiBoot::new(disk, vcpus, MEMORY_MIB, &ami().kernel_cmdline)
}

/// The crash case: runs the VMM in the background with its console going
/// to a file (so this script can watch it), waits for FSYNC-DONE, kills
/// the VMM with SIGKILL, then prints the console. `$1` is the console file,
/// `$2` the wait limit in seconds, the rest the VMM's command line.
const CRASH_SCRIPT: &str = r#"log=$1
limit=$2
shift 2
rm -f "$log"
"$@" &
pid=$!
waited=0
while ! grep -q FSYNC-DONE "$log" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "CRASH-VMM-EXITED-EARLY"
        break
    fi
    if [ "$waited" -ge "$limit" ]; then
        echo "CRASH-WAIT-TIMEOUT"
        break
    fi
    sleep 1
    waited=$((waited + 1))
done
kill -9 "$pid" 2>/dev/null
wait "$pid"
echo "CRASH-KILLED vmm_status=$?"
cat "$log"
"#;

fn outcome() -> Option<&'static Outcome> {
    common::shared_run(&RUN, || {
        let ami = ami();
        base_sha256();
        let vmm = workspace::stratus_vmm()?;
        let agent = workspace::stratus_agent()?;
        let mut host = common::host("ami");
        host.binary("stratus-vmm", &vmm)
            .binary("stratus-agent", &agent)
            .binary(
                "stratus-report-sink",
                Path::new(env!("CARGO_BIN_EXE_stratus-report-sink")),
            )
            .binary("qemu-img", &stratus_tests::vhost::which("qemu-img")?)
            .binary("curl", &stratus_tests::vhost::which("curl")?)
            .binary(host_net::IPROUTE2, &stratus_tests::vhost::which("ip")?)
            .modules(host_net::MODULES)
            .disk_file("images/debian-ami/disk.qcow2", &ami.qcow2)
            .file("images/debian-ami/manifest.json", &ami.manifest)
            // The base copy and the overlays live on the host's tmpfs.
            .memory_mib(4096)
            // The cloud pair and the agent's instances overlap.
            .guests_on_one_cpu();

        let mut script = Script::new();
        script.line("cat > /tmp/crash.sh <<'EOF'");
        script.line(CRASH_SCRIPT.trim_end());
        script.line("EOF");
        script.case(
            "copy_base",
            300,
            &["cp", "images/debian-ami/disk.qcow2", BASE],
        );
        for (name, overlay) in [("overlay_a", OVERLAY_A), ("overlay_b", OVERLAY_B)] {
            script.case(
                name,
                60,
                &[
                    "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", BASE, overlay,
                ],
            );
        }

        // The agent's scenario first, in a fresh host.
        script.line(&format!(
            "sed 's/\"disk.qcow2\"/\"base.qcow2\"/' images/debian-ami/manifest.json > {MANIFEST}"
        ));
        agent::add_cases(&mut script, MANIFEST);
        fleet::add_cases(&mut script, MANIFEST);

        let a1 = boot(OVERLAY_A, 2)
            .tests(&["info", "write-marker"])
            .param("marker", "alpha");
        script.case("a1", BOOT_TIMEOUT_SECS, &a1.stratus_vmm("stdout"));
        let b1 = boot(OVERLAY_B, 1)
            .tests(&["info", "check-marker", "write-marker"])
            .param("marker", "bravo");
        script.case("b1", BOOT_TIMEOUT_SECS, &b1.stratus_vmm("stdout"));
        let a2 = boot(OVERLAY_A, 1)
            .tests(&["check-marker", "write-then-hang"])
            .param("marker", "charlie");
        let console = "/tmp/a2-console.log";
        let mut crash = vec![
            "sh".to_owned(),
            "/tmp/crash.sh".to_owned(),
            console.to_owned(),
            (BOOT_TIMEOUT_SECS - 30).to_string(),
        ];
        crash.extend(a2.stratus_vmm(&format!("file:{console}")));
        script.case("a2", BOOT_TIMEOUT_SECS, &crash);
        script.case(
            "b2",
            BOOT_TIMEOUT_SECS,
            &boot(OVERLAY_B, 1)
                .tests(&["check-marker"])
                .stratus_vmm("stdout"),
        );
        script.case(
            "a3",
            BOOT_TIMEOUT_SECS,
            &boot(OVERLAY_A, 1)
                .tests(&["check-marker"])
                .stratus_vmm("stdout"),
        );

        vmm_api::install(&mut script);
        for (name, mode) in [("c1", "shutdown"), ("c2", "ctrl-alt-del")] {
            let (sock, log) = (format!("/tmp/{name}.sock"), format!("/tmp/{name}.log"));
            let vmm: Vec<String> = [
                "stratus-vmm",
                "--ami",
                MANIFEST,
                "--instance-disk",
                INSTANCE_C,
                "--vcpus",
                "1",
                "--memory",
                &MEMORY_MIB.to_string(),
                "--serial",
                &format!("file:{log}"),
                "--api-sock",
                &sock,
                // No NIC here: cloud-init would wait minutes for metadata.
                "--cmdline",
                "console=ttyS0 reboot=k panic=1 cloud-init=disabled",
            ]
            .map(str::to_owned)
            .to_vec();
            script.case(
                name,
                BOOT_TIMEOUT_SECS + 240,
                &vmm_api::argv(mode, &sock, &log, &vmm),
            );
        }
        cloud::add_cases(&mut script, BASE, &ami.kernel_cmdline);

        for (name, overlay) in [
            ("check_a", OVERLAY_A),
            ("check_b", OVERLAY_B),
            ("check_c", INSTANCE_C),
        ] {
            script.case(name, 120, &["qemu-img", "check", overlay]);
        }
        script.case("base_sha256", 300, &["sha256sum", BASE]);
        host.scenario(script.text());
        host.timeout(Duration::from_secs(
            7 * BOOT_TIMEOUT_SECS
                + 480
                + cloud::TIMEOUT_SECS
                + agent::TIMEOUT_SECS
                + fleet::TIMEOUT_SECS
                + 1200,
        ));
        Ok(host)
    })
}

fn case(name: &str) -> Option<CaseResult> {
    let outcome = outcome()?;
    Some(
        outcome
            .case(name)
            .unwrap_or_else(|| panic!("case {name} did not run; log {}", outcome.log.display())),
    )
}

fn hook(case: &CaseResult, name: &str) -> Section {
    ami_guest::case_section(case, name)
        .unwrap_or_else(|| panic!("hook {name} did not run\n{}", case.describe()))
}

/// The boot reached `multi-user.target`, the VMM saw the boot-complete
/// signal, and the hooks ran and powered the guest off (exit 0).
fn assert_booted_and_powered_off(case: &CaseResult) {
    assert!(
        case.stdout_contains(BOOTED),
        "no {BOOTED}: the guest did not reach multi-user.target\n{}",
        case.describe()
    );
    assert!(
        case.boot_complete().is_some(),
        "no boot-complete line from the VMM\n{}",
        case.describe()
    );
    assert_eq!(
        case.exit,
        Some(CaseExit::Code(0)),
        "the VMM did not exit 0 (guest power-off)\n{}",
        case.describe()
    );
}

fn marker(case: &CaseResult) -> String {
    let section = hook(case, "check-marker");
    assert!(section.passed(), "check-marker failed\n{}", case.describe());
    if section.contains("MARKER-MISSING") {
        return "MISSING".to_owned();
    }
    section
        .lines
        .iter()
        .find_map(|l| l.split_once("MARKER: ").map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no MARKER line\n{}", case.describe()))
}

fn assert_info(case: &CaseResult, nproc: &str) {
    let info = hook(case, "info");
    assert!(info.passed(), "info hook failed\n{}", case.describe());
    assert_eq!(info.info("nproc"), Some(nproc), "{}", case.describe());
}

#[test]
fn boots_to_multi_user_with_two_vcpus() {
    let Some(a1) = case("a1") else { return };
    assert_booted_and_powered_off(&a1);
    assert_info(&a1, "2");
    eprintln!(
        "a1 (2 vCPUs): boot complete {:?}, wall {:?}",
        a1.boot_complete(),
        a1.wall
    );
}

#[test]
fn boots_to_multi_user_with_one_vcpu() {
    let Some(b1) = case("b1") else { return };
    assert_booted_and_powered_off(&b1);
    assert_info(&b1, "1");
    eprintln!(
        "b1 (1 vCPU): boot complete {:?}, wall {:?}",
        b1.boot_complete(),
        b1.wall
    );
}

#[test]
fn root_is_the_first_virtio_disk_mounted_read_write() {
    for name in ["a1", "b1"] {
        let Some(c) = case(name) else { return };
        let info = hook(&c, "info");
        let root = info.info("root").unwrap_or_default();
        let mut words = root.split_whitespace();
        assert_eq!(words.next(), Some("/dev/vda1"), "{}", c.describe());
        assert_eq!(words.next(), Some("ext4"), "{}", c.describe());
        let options = words.next().unwrap_or_default();
        assert!(
            options.split(',').any(|o| o == "rw"),
            "root not mounted rw: {root}\n{}",
            c.describe()
        );
    }
}

#[test]
fn disk_is_found_through_acpi_not_the_command_line() {
    for name in ["a1", "b1"] {
        let Some(c) = case(name) else { return };
        let info = hook(&c, "info");
        let sysfs = info.info("root_sysfs").unwrap_or_default();
        assert!(
            sysfs.contains("/LNRO0005:"),
            "root device not under an ACPI LNRO0005 device: {sysfs}\n{}",
            c.describe()
        );
        let cmdline = info.info("cmdline").unwrap_or_default();
        assert!(
            !cmdline.contains("virtio_mmio.device="),
            "{cmdline}\n{}",
            c.describe()
        );
        assert!(
            cmdline.starts_with("root=UUID="),
            "the VMM did not add root=UUID=: {cmdline}"
        );
    }
}

#[test]
fn marker_survives_a_clean_shutdown() {
    let Some(a1) = case("a1") else { return };
    let written = hook(&a1, "write-marker");
    assert!(
        written.passed() && written.contains("MARKER-WRITTEN alpha"),
        "{}",
        a1.describe()
    );
    let Some(a2) = case("a2") else { return };
    assert_eq!(marker(&a2), "alpha", "{}", a2.describe());
}

#[test]
fn marker_survives_kill_9_after_fsync() {
    let Some(a2) = case("a2") else { return };
    assert!(
        a2.stdout_contains("FSYNC-DONE charlie"),
        "the guest never reported its fsync\n{}",
        a2.describe()
    );
    // 137 = 128 + SIGKILL: the shell's status of a job killed by signal 9.
    assert!(
        a2.stdout_contains("CRASH-KILLED vmm_status=137"),
        "the VMM was not killed by SIGKILL\n{}",
        a2.describe()
    );
    let Some(a3) = case("a3") else { return };
    assert_booted_and_powered_off(&a3);
    assert_eq!(marker(&a3), "charlie", "{}", a3.describe());
}

#[test]
fn overlays_on_one_base_are_isolated() {
    let Some(b1) = case("b1") else { return };
    assert_eq!(
        marker(&b1),
        "MISSING",
        "overlay B saw overlay A's marker\n{}",
        b1.describe()
    );
    let Some(a2) = case("a2") else { return };
    assert_eq!(marker(&a2), "alpha", "{}", a2.describe());
    let Some(b2) = case("b2") else { return };
    assert_booted_and_powered_off(&b2);
    assert_eq!(marker(&b2), "bravo", "{}", b2.describe());
}

#[test]
fn overlays_pass_qemu_img_check() {
    for name in ["check_a", "check_b", "check_c"] {
        let Some(c) = case(name) else { return };
        assert_eq!(c.exit, Some(CaseExit::Code(0)), "{}", c.describe());
        assert!(
            c.stdout_contains("No errors were found"),
            "{}",
            c.describe()
        );
    }
}

#[test]
fn base_image_is_unchanged() {
    let Some(c) = case("base_sha256") else { return };
    let copy = case("copy_base").expect("copy_base ran");
    assert_eq!(copy.exit, Some(CaseExit::Code(0)), "{}", copy.describe());
    let after = c
        .stdout
        .first()
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default();
    assert_eq!(
        after,
        base_sha256(),
        "the base image changed ({} on this machine)\n{}",
        Path::new(&ami().qcow2).display(),
        c.describe()
    );
}

/// The console a `vmm-api.sh` case printed, as one string.
fn api_console(case: &CaseResult) -> String {
    vmm_api::console(case).join("\n")
}

#[test]
fn ami_launch_creates_the_instance_disk_and_boots() {
    let Some(c1) = case("c1") else { return };
    let console = api_console(&c1);
    assert!(
        console.contains(BOOTED),
        "the AMI launched with --ami/--instance-disk did not reach multi-user.target\n{}",
        c1.describe()
    );
    let Some(c2) = case("c2") else { return };
    assert!(
        api_console(&c2).contains(BOOTED),
        "the second launch from the same instance disk did not boot\n{}",
        c2.describe()
    );
}

#[test]
fn shutdown_action_powers_the_guest_off_cleanly() {
    let Some(c1) = case("c1") else { return };
    let shutdown = vmm_api::call(&c1, "shutdown")
        .unwrap_or_else(|| panic!("the Shutdown action was never sent\n{}", c1.describe()));
    assert_eq!(shutdown.status, 204, "{}", c1.describe());
    assert_eq!(
        vmm_api::vmm_exit(&c1),
        Some(0),
        "the guest did not power off after the power button\n{}",
        c1.describe()
    );
    assert!(
        c1.stdout.iter().any(|l| l == "SOCKET-REMOVED"),
        "{}",
        c1.describe()
    );
}

#[test]
fn send_ctrl_alt_del_makes_systemd_reboot() {
    let Some(c2) = case("c2") else { return };
    let cad = vmm_api::call(&c2, "ctrl_alt_del")
        .unwrap_or_else(|| panic!("SendCtrlAltDel was never sent\n{}", c2.describe()));
    assert_eq!(cad.status, 204, "{}", c2.describe());
    assert_eq!(
        vmm_api::vmm_exit(&c2),
        Some(3),
        "the guest did not reboot on Ctrl-Alt-Del\n{}",
        c2.describe()
    );
}
