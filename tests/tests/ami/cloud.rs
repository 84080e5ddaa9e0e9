//! Two instances of the Debian AMI on one Linux bridge, in the `ami` test
//! binary's shared virtual-host run, configured the way EC2 configures
//! them: nothing but their VMMs' DHCP and metadata service.
//!
//! Each instance boots from a fresh overlay on the shared base with
//! cloud-init enabled (Debian's package with its default settings). The
//! checks read what the guests printed on their consoles (test hooks in
//! `guest-images/debian/tests/`):
//!
//! - cloud-init finds the EC2 datasource by itself (DMI), takes the
//!   hostname, the SSH public key and the user-data script from the
//!   metadata service, and the NIC gets its address from the VMM's DHCP
//!   (dhclient, as cloud-init's network configuration asks);
//! - on D, whose metadata requires IMDSv2 tokens, botocore's IMDS client
//!   (from PyPI) reads the instance id and the availability zone;
//! - E reaches D's HTTP port that D's security group opens to E's group
//!   (a group reference), not the port no rule opens, and not by ping;
//!   D's flow log shows both.
//!
//! D serves until E asks it for `/done`, then both power off.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::json;
use stratus_tests::ami_guest::{self, AmiBoot, Section};
use stratus_tests::case::CaseResult;
use stratus_tests::host_net;
use stratus_tests::script::{quote, Script};

use super::case;

/// The whole pair: two nested first boots with cloud-init, side by side.
pub const TIMEOUT_SECS: u64 = 1500;
const MEMORY_MIB: u32 = 512;

const BRIDGE: &str = "stbr1";
const GATEWAY: &str = "10.0.98.1";
const TAP_D: &str = "sttapd";
const TAP_E: &str = "sttape";

/// The key pair's public half (its private half was thrown away: nothing
/// logs in, the test checks where cloud-init put the key).
pub const PUBLIC_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFwlhAA8saHVdGDKBoO+KQJmmon0ImaFHquYdP5lxGNW stratus-test-key";
/// Printed by the user-data script, on the console through cloud-final.
pub const USER_DATA_MARK: &str = "STRATUS-USER-DATA ran on";
const SERVE_PORT: u16 = 8080;
const CLOSED_PORT: u16 = 8082;

/// One of the two instances.
pub struct Instance {
    pub name: &'static str,
    pub id: &'static str,
    pub ip: &'static str,
    pub mac: &'static str,
    pub eni: &'static str,
    pub group: &'static str,
    pub zone: &'static str,
    tap: &'static str,
}

impl Instance {
    /// The short hostname cloud-init sets from `local-hostname`.
    pub fn hostname(&self) -> String {
        format!("ip-{}", self.ip.replace('.', "-"))
    }
    fn path(&self, what: &str) -> String {
        format!("/tmp/{}-{what}", self.name)
    }
}

/// D: the server, IMDSv2 required.
pub const D: Instance = Instance {
    name: "d",
    id: "i-0d00000000000000d",
    ip: "10.0.98.21",
    mac: "02:00:0a:00:62:15",
    eni: "eni-0d0d0d0d",
    group: "sg-0d0d0d0d",
    zone: "us-east-1a",
    tap: TAP_D,
};
/// E: the client, IMDSv1 allowed.
pub const E: Instance = Instance {
    name: "e",
    id: "i-0e00000000000000e",
    ip: "10.0.98.22",
    mac: "02:00:0a:00:62:16",
    eni: "eni-0e0e0e0e",
    group: "sg-0e0e0e0e",
    zone: "us-east-1b",
    tap: TAP_E,
};

fn user_data() -> String {
    format!("#!/bin/sh\necho \"{USER_DATA_MARK} $(hostname) as $(id -un)\"\n")
}

/// The `metadata=` file: the document as the agent would write it.
fn metadata(i: &Instance, tokens: &str) -> String {
    let fqdn = format!("{}.ec2.internal", i.hostname());
    json!({
        "document": {
            "instance_id": i.id,
            "ami_id": "ami-0123456789abcdef0",
            "instance_type": "t3.small",
            "account_id": "123456789012",
            "region": "us-east-1",
            "availability_zone": i.zone,
            "local_ipv4": i.ip,
            "local_hostname": fqdn,
            "hostname": fqdn,
            "mac": i.mac,
            "pending_time": "2026-11-30T12:00:00Z",
            "security_groups": [i.group],
            "public_keys": [{"name": "stratus-test-key", "openssh_key": PUBLIC_KEY}],
            "interfaces": [{
                "mac": i.mac,
                "device_number": 0,
                "interface_id": i.eni,
                "local_ipv4s": [i.ip],
                "subnet_id": "subnet-0a0a0a0a",
                "subnet_ipv4_cidr_block": "10.0.98.0/24",
                "vpc_id": "vpc-0a0a0a0a",
                "security_group_ids": [i.group],
            }],
            "user_data": BASE64.encode(user_data()),
        },
        "options": {"http_tokens": tokens, "http_endpoint": "enabled", "hop_limit": 1},
    })
    .to_string()
}

/// D's groups: port 8080 from E's group (resolved to E's address), no
/// rule for 8082 or ICMP. E's: nothing in. Both: everything out.
fn security_groups(i: &Instance) -> String {
    let egress = json!([{"protocol": "-1", "cidrs": ["0.0.0.0/0"]}]);
    if i.name == D.name {
        json!({
            "groups": [{
                "id": D.group,
                "ingress": [{"protocol": "tcp", "from_port": SERVE_PORT, "to_port": SERVE_PORT,
                             "source_groups": [E.group]}],
                "egress": egress,
            }],
            "address_sets": {E.group: [E.ip]},
        })
    } else {
        json!({"groups": [{"id": E.group, "ingress": [], "egress": egress}]})
    }
    .to_string()
}

fn flow_log(i: &Instance) -> String {
    json!({
        "destination": i.path("flow.log"),
        "log": {"account_id": "123456789012", "interface_id": i.eni},
    })
    .to_string()
}

fn heredoc(script: &mut Script, path: &str, text: &str) {
    script.line(&format!("cat > {path} <<'STRATUS-EOF'"));
    script.line(text.trim_end());
    script.line("STRATUS-EOF");
}

/// The VMM's command line for `i`, booting `overlay`.
fn vmm(i: &Instance, boot: AmiBoot) -> String {
    let mut nic = format!(
        "tap={},mac={},ip={}/24,gw={GATEWAY},sg={},metadata={}",
        i.tap,
        i.mac,
        i.ip,
        i.path("sg.json"),
        i.path("md.json")
    );
    if i.name == D.name {
        nic.push_str(&format!(",flow-log={}", i.path("flow.json")));
    }
    let argv = boot.with_cloud_init().stratus_vmm_with(
        &format!("file:{}", i.path("console.log")),
        &[
            "--id",
            i.id,
            "--instance-type",
            "t3.small",
            "--api-sock",
            &i.path("api.sock"),
            "--net",
            &nic,
        ],
    );
    argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

/// Adds the pair to the `ami` scenario; `base` is the writable copy of
/// the AMI's image, `cmdline` the manifest's kernel command line.
pub fn add_cases(script: &mut Script, base: &str, cmdline: &str) {
    host_net::add_bridge(script, BRIDGE, &format!("{GATEWAY}/24"));
    for i in [&D, &E] {
        host_net::add_tap(script, i.tap, BRIDGE);
        heredoc(
            script,
            &i.path("md.json"),
            &metadata(
                i,
                if i.name == D.name {
                    "required"
                } else {
                    "optional"
                },
            ),
        );
        heredoc(script, &i.path("sg.json"), &security_groups(i));
        heredoc(script, &i.path("flow.json"), &flow_log(i));
    }
    let overlay = |i: &Instance| i.path("disk.qcow2");
    let vmm_d = vmm(
        &D,
        AmiBoot::new(&overlay(&D), 1, MEMORY_MIB, cmdline)
            .tests(&["cloud-init", "imds-botocore", "net-serve"])
            .param("serve_ports", &format!("{SERVE_PORT}+{CLOSED_PORT}"))
            .param("serve_secs", "900"),
    );
    let vmm_e = vmm(
        &E,
        AmiBoot::new(&overlay(&E), 1, MEMORY_MIB, cmdline)
            .tests(&["cloud-init", "net-probe"])
            .param("peer", D.ip)
            .param("allow_port", &SERVE_PORT.to_string())
            .param("deny_port", &CLOSED_PORT.to_string())
            .param("wait_secs", "900"),
    );
    let pair = format!(
        r#"for i in d e; do
    rm -f /tmp/$i-api.sock /tmp/$i-console.log /tmp/$i-flow.log /tmp/$i-disk.qcow2
    qemu-img create -q -f qcow2 -F qcow2 -b {base} /tmp/$i-disk.qcow2 || echo "OVERLAY $i failed"
done
# wait_exit NAME PID LIMIT [PEER]: the VMM's exit status, or kill -9 at
# LIMIT s, or 60 s after PEER's VMM ended (E's probes need D: without it
# E would wait out its whole limit).
wait_exit() {{
    waited=0
    peer_gone=0
    while kill -0 "$2" 2>/dev/null && [ "$waited" -lt "$3" ] && [ "$peer_gone" -lt 60 ]; do
        sleep 2
        waited=$((waited + 2))
        if [ -n "$4" ] && ! kill -0 "$4" 2>/dev/null; then peer_gone=$((peer_gone + 2)); fi
    done
    if kill -0 "$2" 2>/dev/null; then echo "VMM-TIMEOUT $1 after=$waited peer_gone=$peer_gone"; kill -9 "$2"; fi
    wait "$2"
    echo "VMM-EXIT $1 status=$?"
}}
{vmm_d} 2>/tmp/d-stderr.log &
pd=$!
{vmm_e} 2>/tmp/e-stderr.log &
pe=$!
wait_exit e $pe {limit_e} $pd
wait_exit d $pd 300
for i in d e; do
    sed "s/^/CONSOLE-$i /" /tmp/$i-console.log
    sed "s/^/STDERR-$i /" /tmp/$i-stderr.log
done
sed 's/^/FLOWLOG /' {flow_d}
# Their disks live on the host's tmpfs: freed for what comes next.
rm -f /tmp/d-disk.qcow2 /tmp/e-disk.qcow2
"#,
        limit_e = TIMEOUT_SECS - 400,
        flow_d = D.path("flow.log"),
    );
    heredoc(script, "/tmp/cloud-pair.sh", &pair);
    script.case("cloud_pair", TIMEOUT_SECS, &["sh", "/tmp/cloud-pair.sh"]);
    host_net::remove(script, &[TAP_D, TAP_E, BRIDGE]);
}

fn pair() -> Option<CaseResult> {
    case("cloud_pair")
}

/// Instance `i`'s console lines, without the prefix.
fn console(case: &CaseResult, i: &Instance) -> Vec<String> {
    let prefix = format!("CONSOLE-{} ", i.name);
    case.stdout
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

fn hook(case: &CaseResult, i: &Instance, name: &str) -> Section {
    ami_guest::section(&console(case, i), name).unwrap_or_else(|| {
        panic!(
            "instance {}: hook {name} did not run\n{}",
            i.name,
            case.describe()
        )
    })
}

fn lines_with<'a>(section: &'a Section, prefix: &str) -> Vec<&'a str> {
    section
        .lines
        .iter()
        .filter_map(|l| l.split_once(prefix).map(|(_, rest)| rest.trim_end()))
        .collect()
}

#[test]
fn cloud_init_detects_ec2_and_finishes_cleanly_on_both() {
    let Some(c) = pair() else { return };
    for i in [&D, &E] {
        let cloud = hook(&c, i, "cloud-init");
        assert!(
            cloud.passed(),
            "instance {}: cloud-init did not finish cleanly\n{}",
            i.name,
            c.describe()
        );
        assert_eq!(cloud.info("cloud_id"), Some("aws"), "{}", c.describe());
        // Ec2Local, cloud-init's early stage with its own DHCP, runs only
        // where the platform is AWS for sure.
        assert!(
            cloud.contains("CLOUD-STATUS DataSourceEc2Local"),
            "{}",
            c.describe()
        );
        assert_eq!(cloud.info("datasource"), Some(i.id), "{}", c.describe());
        let uuid = cloud.info("dmi_uuid").unwrap_or_default();
        assert!(uuid.starts_with("ec2"), "{uuid}\n{}", c.describe());
        assert_eq!(
            cloud.info("dmi_serial").map(str::to_lowercase),
            Some(uuid.to_lowercase()),
            "{}",
            c.describe()
        );
        assert_eq!(
            cloud.info("dmi_product"),
            Some("t3.small"),
            "{}",
            c.describe()
        );
    }
}

#[test]
fn cloud_init_takes_hostname_and_ssh_key_from_metadata() {
    let Some(c) = pair() else { return };
    for i in [&D, &E] {
        let cloud = hook(&c, i, "cloud-init");
        assert_eq!(
            cloud.info("hostname"),
            Some(i.hostname().as_str()),
            "{}",
            c.describe()
        );
        // Debian's cloud.cfg names the default user `debian`.
        assert_eq!(
            cloud.info("default_user"),
            Some("debian"),
            "{}",
            c.describe()
        );
        let keys = lines_with(&cloud, "AUTHORIZED-KEY ");
        assert!(
            keys.iter().any(|k| k.trim() == PUBLIC_KEY),
            "instance {}: the key is not in the default user's authorized_keys: {keys:?}\n{}",
            i.name,
            c.describe()
        );
    }
}

#[test]
fn user_data_script_runs_and_prints_on_the_console() {
    let Some(c) = pair() else { return };
    for i in [&D, &E] {
        let expected = format!("{USER_DATA_MARK} {} as root", i.hostname());
        // The hook also copies cloud-init's output log (CLOUD-OUTPUT
        // lines); the console line must come from cloud-final itself.
        let on_console = console(&c, i)
            .iter()
            .any(|l| l.contains(&expected) && !l.contains("CLOUD-OUTPUT"));
        assert!(
            on_console,
            "instance {}: no `{expected}` on the console\n{}",
            i.name,
            c.describe()
        );
    }
}

#[test]
fn each_nic_gets_its_address_from_its_own_vmm_dhcp() {
    let Some(c) = pair() else { return };
    for i in [&D, &E] {
        let cloud = hook(&c, i, "cloud-init");
        let addresses = cloud.info("addresses").unwrap_or_default();
        assert!(
            addresses.contains(&format!("={}/24", i.ip)),
            "instance {}: {addresses}\n{}",
            i.name,
            c.describe()
        );
        let route = cloud.info("default_route").unwrap_or_default();
        assert!(
            route.contains(&format!("via {GATEWAY}")),
            "instance {}: default route: {route}\n{}",
            i.name,
            c.describe()
        );
        // What makes the address DHCP's: cloud-init wrote no static
        // address, only `inet dhcp`, for ifupdown's dhclient.
        let ifaces = cloud.info("ifaces").unwrap_or_default();
        assert!(
            ifaces.contains("inet dhcp") && !ifaces.contains("inet static"),
            "instance {}: {ifaces}\n{}",
            i.name,
            c.describe()
        );
    }
}

#[test]
fn botocore_reads_instance_id_and_zone_over_imdsv2() {
    let Some(c) = pair() else { return };
    let boto = hook(&c, &D, "imds-botocore");
    assert!(boto.passed(), "{}", c.describe());
    assert_eq!(boto.info("botocore_token"), Some("yes"), "{}", c.describe());
    assert_eq!(
        boto.info("botocore_instance_id"),
        Some(D.id),
        "{}",
        c.describe()
    );
    assert_eq!(
        boto.info("botocore_availability_zone"),
        Some(D.zone),
        "{}",
        c.describe()
    );
    assert_eq!(
        boto.info("botocore_region"),
        Some("us-east-1"),
        "{}",
        c.describe()
    );
}

#[test]
fn security_groups_between_two_amis_with_real_traffic() {
    let Some(c) = pair() else { return };
    let probe = hook(&c, &E, "net-probe");
    let result = |what: &str| {
        lines_with(&probe, &format!("PROBE {what} "))
            .first()
            .map(|s| (*s).to_owned())
            .unwrap_or_default()
    };
    let allowed = result("allowed");
    assert!(
        allowed.contains(&format!("served-by {} port {SERVE_PORT}", D.hostname())),
        "E could not reach D's port {SERVE_PORT}, opened to E's group: {allowed}\n{}",
        c.describe()
    );
    assert!(
        result("denied").starts_with("failed"),
        "E reached D's port {CLOSED_PORT}, which no rule opens\n{}",
        c.describe()
    );
    assert_eq!(
        result("ping"),
        "failed",
        "ICMP got through\n{}",
        c.describe()
    );
    let serve = hook(&c, &D, "net-serve");
    assert!(
        serve.contains(&format!("SERVE {SERVE_PORT} / from {}", E.ip)),
        "{}",
        c.describe()
    );
    assert!(
        !serve.contains(&format!("SERVE {CLOSED_PORT} ")),
        "D's closed port saw a request\n{}",
        c.describe()
    );
    assert!(serve.contains("SERVE stopped done"), "{}", c.describe());
}

#[test]
fn flow_log_shows_the_accepted_and_rejected_flows() {
    let Some(c) = pair() else { return };
    let records: Vec<Vec<&str>> = c
        .stdout
        .iter()
        .filter_map(|l| l.strip_prefix("FLOWLOG "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    // version account interface src dst srcport dstport proto packets bytes start end action status
    let has = |dport: u16, action: &str| {
        records.iter().any(|r| {
            r.len() == 14
                && r[2] == D.eni
                && r[3] == E.ip
                && r[4] == D.ip
                && r[6] == dport.to_string()
                && r[7] == "6"
                && r[12] == action
        })
    };
    assert!(has(SERVE_PORT, "ACCEPT"), "{records:?}\n{}", c.describe());
    assert!(has(CLOSED_PORT, "REJECT"), "{records:?}\n{}", c.describe());
}

#[test]
fn both_instances_power_off_by_themselves() {
    let Some(c) = pair() else { return };
    for i in [&D, &E] {
        assert!(
            c.stdout
                .iter()
                .any(|l| l == &format!("VMM-EXIT {} status=0", i.name)),
            "instance {} did not power off cleanly\n{}",
            i.name,
            c.describe()
        );
    }
}
