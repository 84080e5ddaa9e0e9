//! virtio-net in the `boot` test binary's shared virtual-host run: a tiny
//! guest on a tap on a Linux bridge gets its address from the VMM's own
//! DHCP server with busybox `udhcpc`, reaches the bridge and is reached
//! from it, and cannot send from an address that is not its own; a
//! missing or busy tap is a one-line error with exit code 2.

use stratus_tests::case::{CaseExit, CaseResult};
use stratus_tests::host_net;
use stratus_tests::script::Script;
use stratus_tests::vmm_api;
use stratus_tests::vmms::{Boot, GuestFiles};

use super::{case, outcome};

/// Time for all the cases below if each hits its limit.
pub const TIMEOUT_SECS: u64 = CASE_TIMEOUT_SECS + 2 * 60;
const CASE_TIMEOUT_SECS: u64 = 360;

pub use stratus_tests::host_net::{IPROUTE2, MODULES};

pub const BRIDGE: &str = "stbr0";
const TAP: &str = "sttap0";
pub const GATEWAY: &str = "10.0.99.1";
const GUEST_IP: &str = "10.0.99.5";
const GUEST_MAC: &str = "02:00:0a:00:63:05";
const DNS: &str = "10.0.99.2";
const HOSTNAME: &str = "tiny-net";

fn nic_spec(tap: &str) -> String {
    format!(
        "tap={tap},mac={GUEST_MAC},ip={GUEST_IP}/24,gw={GATEWAY},dns={DNS},hostname={HOSTNAME},mtu=1500"
    )
}

/// Adds the network cases to the `boot` scenario.
pub fn add_cases(script: &mut Script, tiny: &GuestFiles) {
    // The host side: a bridge holding the gateway address, a tap on it.
    host_net::add_bridge(script, BRIDGE, &format!("{GATEWAY}/24"));
    host_net::add_tap(script, TAP, BRIDGE);

    let guest = Boot::new(
        tiny,
        1,
        256,
        "stratus.modules=1 stratus.run=net stratus.net_spoof=1",
    );
    let vmm = guest.stratus_vmm_with(
        "file:/tmp/net.log",
        &["--api-sock", "/tmp/net.sock", "--net", &nic_spec(TAP)],
    );
    script.case(
        "net_dhcp",
        CASE_TIMEOUT_SECS,
        &vmm_api::argv("net", "/tmp/net.sock", "/tmp/net.log", &vmm),
    );

    let missing = guest.stratus_vmm_with("stdout", &["--net", &nic_spec("stnotap0")]);
    script.case("net_missing_tap", 60, &missing);
}

/// Removes what [`add_cases`] created (after every case that uses it).
pub fn teardown(script: &mut Script) {
    host_net::remove(script, &[TAP, BRIDGE]);
}

fn dhcp_case() -> Option<CaseResult> {
    outcome().map(|o| case(o, "net_dhcp"))
}

/// The guest's `STRATUS-NET` console lines.
fn net_lines(case: &CaseResult) -> Vec<String> {
    vmm_api::console(case)
        .into_iter()
        .filter_map(|l| {
            l.split_once("STRATUS-NET ")
                .map(|(_, rest)| rest.to_owned())
        })
        .collect()
}

fn has_line(case: &CaseResult, line: &str) -> bool {
    net_lines(case).iter().any(|l| l == line)
}

/// A counter of the NIC from the Prometheus text the script fetched.
fn nic_counter(case: &CaseResult, counter: &str) -> Option<u64> {
    let needle = format!("device=\"net0\",kind=\"net\",counter=\"{counter}\"}}");
    case.stdout.iter().find_map(|l| {
        let rest = l.strip_prefix("METRICS stratus_vmm_device_events_total{")?;
        let value = rest.strip_prefix(needle.as_str())?;
        value.trim().parse().ok()
    })
}

#[test]
fn guest_gets_its_address_from_the_vmm_dhcp_server() {
    let Some(case) = dhcp_case() else { return };
    let lines = net_lines(&case);
    let bound = lines
        .iter()
        .find(|l| l.starts_with("dhcp=bound "))
        .unwrap_or_else(|| panic!("no DHCP lease\n{}", case.describe()));
    for expected in [
        format!("ip={GUEST_IP}"),
        "subnet=255.255.255.0".to_owned(),
        format!("router={GATEWAY}"),
        format!("dns={DNS}"),
        format!("hostname={HOSTNAME}"),
        "domain=compute.internal".to_owned(),
        "mtu=1500".to_owned(),
        "lease=3600".to_owned(),
        format!("serverid={GATEWAY}"),
    ] {
        assert!(
            bound.split_whitespace().any(|w| w == expected),
            "{expected} missing from {bound:?}\n{}",
            case.describe()
        );
    }
    assert!(has_line(&case, "dhcp_ok"), "{}", case.describe());
    assert!(
        has_line(&case, &format!("mac={GUEST_MAC} mtu=1500")),
        "the guest's NIC has the configured MAC and MTU\n{}",
        case.describe()
    );
    assert!(
        nic_counter(&case, "dhcp_acks").unwrap_or(0) >= 1,
        "{}",
        case.describe()
    );
}

#[test]
fn guest_and_bridge_reach_each_other() {
    let Some(case) = dhcp_case() else { return };
    assert!(has_line(&case, "ping_gateway=ok"), "{}", case.describe());
    assert!(
        case.stdout.iter().any(|l| l == "HOST ping_guest=ok"),
        "{}",
        case.describe()
    );
    assert!(
        nic_counter(&case, "rx_frames").unwrap_or(0) >= 3,
        "{}",
        case.describe()
    );
    assert!(
        nic_counter(&case, "tx_frames").unwrap_or(0) >= 3,
        "{}",
        case.describe()
    );
}

#[test]
fn a_forged_source_address_reaches_nobody() {
    let Some(case) = dhcp_case() else { return };
    assert!(
        has_line(&case, "ping_spoofed=dropped"),
        "{}",
        case.describe()
    );
    assert!(
        nic_counter(&case, "tx_dropped_source_ip").unwrap_or(0) >= 2,
        "{}",
        case.describe()
    );
}

#[test]
fn a_busy_tap_is_refused_with_exit_2() {
    let Some(case) = dhcp_case() else { return };
    assert_eq!(
        vmm_api::value(&case, "BUSY-TAP", "exit"),
        Some("2"),
        "{}",
        case.describe()
    );
    let msg: Vec<_> = case
        .stdout
        .iter()
        .filter_map(|l| l.strip_prefix("BUSY-TAP-MSG "))
        .collect();
    assert_eq!(msg.len(), 1, "one line: {msg:?}\n{}", case.describe());
    assert!(msg[0].contains("busy"), "{}", case.describe());
}

#[test]
fn a_missing_tap_is_refused_with_exit_2() {
    let Some(outcome) = outcome() else { return };
    let case = case(outcome, "net_missing_tap");
    assert_eq!(case.exit, Some(CaseExit::Code(2)), "{}", case.describe());
    assert_eq!(case.stderr.len(), 1, "one line\n{}", case.describe());
    assert!(
        case.stderr[0].contains("stnotap0 does not exist"),
        "{}",
        case.describe()
    );
}
