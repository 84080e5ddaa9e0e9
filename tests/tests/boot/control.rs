//! The control API on a running guest, in the `boot` test binary's shared
//! virtual-host run: the socket, pause/resume, actions, metrics, console,
//! bad requests, and a drive's rate limiter measured from inside the guest
//! and changed live.

use stratus_tests::case::{CaseExit, CaseResult};
use stratus_tests::script::Script;
use stratus_tests::vmm_api::{self, ApiCall};
use stratus_tests::vmms::{Boot, GuestFiles};

use super::{case, outcome};

/// Time for all the cases below if each hits its limit.
pub const TIMEOUT_SECS: u64 = 3 * CASE_TIMEOUT_SECS;
const CASE_TIMEOUT_SECS: u64 = 300;

const INSTANCE_ID: &str = "i-0123456789abcdef0";
/// The rate-limited drive: 96 MiB (four phases of 16 MiB, then the ops
/// phases), first limited to 4 MiB/s and 100 ops/s, then changed to
/// 8 MiB/s and 200 ops/s through `PATCH /drives/rated`.
const RATE_DISK: &str = "/tmp/rate.raw";
const RATE_DISK_MIB: u64 = 96;
const RATE_MIB_PER_PHASE: u64 = 16;
const RATE_OPS_PER_PHASE: u64 = 400;
const BW_BEFORE: f64 = 4.0 * 1024.0 * 1024.0;
const BW_AFTER: f64 = 8.0 * 1024.0 * 1024.0;
const OPS_AFTER: f64 = 200.0;
/// How far a measured rate may be from its limit.
const RATE_TOLERANCE: f64 = 0.15;

/// Adds the control cases to the `boot` scenario.
pub fn add_cases(script: &mut Script, tiny: &GuestFiles) {
    vmm_api::install(script);

    let counting = Boot::new(tiny, 1, 256, "stratus.run=counter");
    let vmm = counting.stratus_vmm_with(
        "file:/tmp/session.log",
        &["--api-sock", "/tmp/session.sock", "--id", INSTANCE_ID],
    );
    script.case(
        "api_session",
        CASE_TIMEOUT_SECS,
        &vmm_api::argv("session", "/tmp/session.sock", "/tmp/session.log", &vmm),
    );

    let idle = Boot::new(tiny, 1, 256, "stratus.run=wait");
    let vmm = idle.stratus_vmm_with("file:/tmp/cad.log", &["--api-sock", "/tmp/cad.sock"]);
    script.case(
        "ctrl_alt_del",
        CASE_TIMEOUT_SECS,
        &vmm_api::argv("ctrl-alt-del", "/tmp/cad.sock", "/tmp/cad.log", &vmm),
    );

    script.command(&[
        "dd",
        "if=/dev/zero",
        &format!("of={RATE_DISK}"),
        "bs=1M",
        "count=0",
        &format!("seek={RATE_DISK_MIB}"),
    ]);
    let rate = Boot::new(
        tiny,
        1,
        256,
        &format!(
            "stratus.modules=1 stratus.run=disk-rate stratus.rate_mib={RATE_MIB_PER_PHASE} \
             stratus.rate_pause=5 stratus.rate_ops={RATE_OPS_PER_PHASE}"
        ),
    );
    let disk = format!("{RATE_DISK},format=raw,id=rated,bw=4194304,iops=100");
    let vmm = rate.stratus_vmm_with(
        "file:/tmp/rate.log",
        &["--disk", &disk, "--api-sock", "/tmp/rate.sock"],
    );
    script.case(
        "disk_rate",
        CASE_TIMEOUT_SECS,
        &vmm_api::argv("rate", "/tmp/rate.sock", "/tmp/rate.log", &vmm),
    );
}

fn session() -> Option<CaseResult> {
    outcome().map(|o| case(o, "api_session"))
}

fn call(case: &CaseResult, label: &str) -> ApiCall {
    vmm_api::call(case, label).unwrap_or_else(|| panic!("no API call {label}\n{}", case.describe()))
}

fn json(call: &ApiCall) -> serde_json::Value {
    serde_json::from_str(&call.body.replace('|', "\n"))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", call.body))
}

/// The `STRATUS-TINY` console lines the script printed at its end.
fn console(case: &CaseResult) -> Vec<String> {
    vmm_api::console(case)
        .into_iter()
        .filter(|l| l.contains("STRATUS-TINY"))
        .map(str::to_owned)
        .collect()
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(needle.as_str()))
}

fn field_f64(line: &str, key: &str) -> f64 {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn api_socket_is_owner_only_and_removed_on_exit() {
    let Some(case) = session() else { return };
    assert_eq!(
        vmm_api::value(&case, "SOCKET", "mode"),
        Some("600"),
        "{}",
        case.describe()
    );
    assert!(
        case.stdout.iter().any(|l| l == "SOCKET-REMOVED"),
        "{}",
        case.describe()
    );
}

#[test]
fn get_root_describes_the_instance() {
    let Some(case) = session() else { return };
    let describe = call(&case, "describe");
    assert_eq!(describe.status, 200, "{}", case.describe());
    let info = json(&describe);
    assert_eq!(info["id"], INSTANCE_ID);
    assert_eq!(info["state"], "Running");
    assert_eq!(info["app_name"], "stratus-vmm");
    assert!(info["vmm_version"].is_string());
}

#[test]
fn get_vm_config_is_the_effective_configuration() {
    let Some(case) = session() else { return };
    let config = call(&case, "config");
    assert_eq!(config.status, 200, "{}", case.describe());
    let config = json(&config);
    assert_eq!(config["memory_mib"], 256);
    assert_eq!(config["vcpus"], 1);
    assert_eq!(config["id"], INSTANCE_ID);
    assert_eq!(config["api_socket"], "/tmp/session.sock");
    assert!(config["cmdline"]
        .as_str()
        .is_some_and(|c| c.contains("stratus.run=counter")));
}

#[test]
fn metrics_in_prometheus_text_and_json() {
    let Some(case) = session() else { return };
    let text: Vec<&str> = case
        .stdout
        .iter()
        .filter_map(|l| l.strip_prefix("METRICS "))
        .collect();
    assert!(
        text.contains(&"# TYPE stratus_vmm_vcpu_exits_total counter"),
        "{}",
        case.describe()
    );
    assert!(text.contains(&"stratus_vmm_up 1"), "{}", case.describe());
    let pio_reads = text
        .iter()
        .find_map(|l| {
            l.strip_prefix("stratus_vmm_vcpu_exits_total{vcpu=\"0\",reason=\"pio_read\"} ")
        })
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no pio_read exits\n{}", case.describe()));
    assert!(pio_reads > 0, "a console-printing guest reads COM1's LSR");
    assert!(
        text.iter()
            .any(|l| l.starts_with("stratus_vmm_boot_time_seconds ")),
        "the guest signalled boot-complete before the metrics were read\n{}",
        case.describe()
    );

    let metrics = call(&case, "metrics_json");
    assert_eq!(metrics.status, 200, "{}", case.describe());
    let metrics = json(&metrics);
    assert_eq!(metrics["state"], "Running");
    assert!(metrics["vcpus"][0]["exits"]["pio_read"].as_u64() > Some(0));
    assert!(metrics["console_bytes"].as_u64() > Some(0));
}

#[test]
fn console_returns_the_last_bytes() {
    let Some(case) = session() else { return };
    let console = call(&case, "console");
    assert_eq!(console.status, 200, "{}", case.describe());
    // 64 bytes at most (newlines were turned into `|`).
    assert!(console.body.len() <= 64, "{}", console.body);
    assert!(
        console.body.contains("counter="),
        "the tail of a counting guest's console: {}",
        console.body
    );
}

#[test]
fn pause_stops_the_guest_and_resume_continues_it() {
    let Some(case) = session() else { return };
    assert_eq!(call(&case, "pause").status, 204, "{}", case.describe());
    let before: u64 = vmm_api::value(&case, "PAUSE", "before")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{}", case.describe()));
    let after: u64 = vmm_api::value(&case, "PAUSE", "after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{}", case.describe()));
    assert_eq!(
        before,
        after,
        "the guest printed while paused (a line every 200 ms, 2 s watched)\n{}",
        case.describe()
    );
    assert_eq!(json(&call(&case, "describe_paused"))["state"], "Paused");
    assert_eq!(
        call(&case, "pause_again").status,
        204,
        "pausing is idempotent"
    );
    assert_eq!(call(&case, "resume").status, 204, "{}", case.describe());
    let resumed: u64 = vmm_api::value(&case, "RESUME", "count")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{}", case.describe()));
    assert!(
        resumed > after + 2,
        "the guest did not go on counting after resume ({after} -> {resumed})\n{}",
        case.describe()
    );
    assert_eq!(json(&call(&case, "still_running"))["state"], "Running");
}

#[test]
fn guest_clock_neither_goes_back_nor_jumps_across_a_pause() {
    let Some(case) = session() else { return };
    let uptimes: Vec<f64> = console(&case)
        .iter()
        .filter(|l| l.contains("counter="))
        .map(|l| field_f64(l, "uptime"))
        .collect();
    assert!(uptimes.len() > 10, "{}", case.describe());
    for pair in uptimes.windows(2) {
        let step = pair[1] - pair[0];
        assert!(step >= 0.0, "guest uptime went backwards: {pair:?}");
        // The pause lasted over 2.5 s of wall time; kvmclock is restored
        // on resume, so the guest sees only its own 200 ms sleeps.
        assert!(
            step < 1.5,
            "guest uptime jumped by {step:.2} s between two lines 200 ms apart\n{}",
            case.describe()
        );
    }
}

#[test]
fn actions_that_need_a_running_guest_are_refused_while_paused() {
    let Some(case) = session() else { return };
    let refused = call(&case, "shutdown_paused");
    assert_eq!(refused.status, 409, "{}", case.describe());
    assert!(json(&refused)["fault_message"].is_string());
}

#[test]
fn bad_requests_get_4xx_with_a_fault_message_and_change_nothing() {
    let Some(case) = session() else { return };
    for (label, status) in [
        ("bad_state", 400),
        ("bad_json", 400),
        ("bad_action", 400),
        ("bad_path", 404),
        ("bad_method", 405),
        ("bad_query", 400),
        ("unknown_drive", 404),
    ] {
        let answer = call(&case, label);
        assert_eq!(answer.status, status, "{label}\n{}", case.describe());
        let message = json(&answer)["fault_message"].clone();
        assert!(
            message.as_str().is_some_and(|m| !m.is_empty()),
            "{label}: {}",
            answer.body
        );
    }
    assert_eq!(json(&call(&case, "still_running"))["state"], "Running");
}

#[test]
fn reboot_action_resets_with_exit_code_3() {
    let Some(case) = session() else { return };
    assert_eq!(call(&case, "reboot").status, 204, "{}", case.describe());
    assert_eq!(vmm_api::vmm_exit(&case), Some(3), "{}", case.describe());
    assert_eq!(case.exit, Some(CaseExit::Code(0)));
}

#[test]
fn send_ctrl_alt_del_reaches_the_guest() {
    let Some(outcome) = outcome() else { return };
    let case = case(outcome, "ctrl_alt_del");
    assert_eq!(
        call(&case, "ctrl_alt_del").status,
        204,
        "{}",
        case.describe()
    );
    // The tiny guest leaves Ctrl-Alt-Del to the kernel, which restarts the
    // machine at once (through the i8042, reboot=k): the VMM exits 3.
    assert_eq!(vmm_api::vmm_exit(&case), Some(3), "{}", case.describe());
}

/// Rate of one timed guest phase in units per second.
fn phase_rate(lines: &[String], kind: &str, phase: u32, unit_key: &str, unit: f64) -> f64 {
    let line = lines
        .iter()
        .find(|l| l.contains(&format!("STRATUS-TINY {kind} phase={phase} ")))
        .unwrap_or_else(|| panic!("no {kind} phase {phase} in {lines:#?}"));
    let seconds = field_f64(line, "end") - field_f64(line, "start");
    assert!(seconds > 0.0, "{line}");
    field_f64(line, unit_key) * unit / seconds
}

fn assert_near(what: &str, measured: f64, limit: f64) {
    let ratio = measured / limit;
    assert!(
        (1.0 - RATE_TOLERANCE..=1.0 + RATE_TOLERANCE).contains(&ratio),
        "{what}: measured {measured:.0}/s against a limit of {limit:.0}/s (ratio {ratio:.3})"
    );
}

#[test]
fn kernel_with_disk_boots_through_virtio_mmio_cmdline() {
    let Some(outcome) = outcome() else { return };
    let case = case(outcome, "disk_rate");
    let lines = console(&case);
    assert!(
        lines.iter().any(|l| l == "STRATUS-TINY-BOOTED"),
        "{}",
        case.describe()
    );
    let cmdline = lines
        .iter()
        .find_map(|l| l.strip_prefix("STRATUS-TINY cmdline="))
        .unwrap_or_default();
    assert!(cmdline.contains("virtio_mmio.device=4K@"), "{cmdline}");
    let sectors = lines
        .iter()
        .find_map(|l| l.strip_prefix("STRATUS-TINY disk_sectors="))
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(sectors, Some(RATE_DISK_MIB * 2048), "{}", case.describe());
    assert!(
        !lines.iter().any(|l| l.contains("dd failed")),
        "{}",
        case.describe()
    );
    assert_eq!(vmm_api::vmm_exit(&case), Some(0), "{}", case.describe());
}

#[test]
fn drive_rate_limits_hold_and_change_live() {
    let Some(outcome) = outcome() else { return };
    let case = case(outcome, "disk_rate");
    let lines = console(&case);
    let mib = 1024.0 * 1024.0;
    assert_near(
        "bandwidth before the change",
        phase_rate(&lines, "rate", 1, "mib", mib),
        BW_BEFORE,
    );
    assert_eq!(
        call(&case, "patch_drive").status,
        204,
        "{}",
        case.describe()
    );
    let bad = call(&case, "patch_bad_limiter");
    assert_eq!(bad.status, 400, "{}", case.describe());
    assert_eq!(call(&case, "patch_path").status, 400, "{}", case.describe());
    assert_near(
        "bandwidth after the change (the refused update changed nothing)",
        phase_rate(&lines, "rate", 3, "mib", mib),
        BW_AFTER,
    );
    assert_near(
        "operations after the change",
        phase_rate(&lines, "ops", 1, "reads", 1.0),
        OPS_AFTER,
    );
}
