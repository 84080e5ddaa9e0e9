//! Two tiny guests on one bridge, in the `boot` test binary's shared
//! virtual-host run: A (client) and B (server) each get their address
//! from their own VMM's DHCP; B's security groups are checked with real
//! TCP, UDP and ping from A (source-group rule, CIDR rules, no rule,
//! outbound-initiated replies); a live revoke through B's API blocks new
//! flows while an established tracked session keeps working and an
//! untracked one is cut; A talks to its instance metadata service
//! (IMDSv2 tokens, refusals, user-data, the identity document with both
//! signatures, verified here with openssl); B's flow log is checked
//! against the traffic.
//!
//! The guests run `stratus-netprobe` (this crate's binary) from an extra
//! initramfs archive appended to the tiny image's, with a script of their
//! own (`/etc/stratus-net.sh`, run by the tiny init after DHCP).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use stratus_tests::cache::TempDir;
use stratus_tests::case::CaseResult;
use stratus_tests::host_net;
use stratus_tests::images::GuestImage;
use stratus_tests::net_guest;
use stratus_tests::script::{quote, Script};
use stratus_tests::vhost::VirtualHost;
use stratus_tests::vmms::{Boot, GuestFiles};

use super::net::{BRIDGE, GATEWAY};
use super::{case, outcome};

/// Time for the case if it hits its limit.
pub const TIMEOUT_SECS: u64 = 480;

const TAP_A: &str = "sttapa";
const TAP_B: &str = "sttapb";
const IP_A: &str = "10.0.99.11";
const IP_B: &str = "10.0.99.12";
const MAC_A: &str = "02:00:0a:00:63:0b";
const MAC_B: &str = "02:00:0a:00:63:0c";
const INSTANCE_A: &str = "i-0aaaaaaaaaaaaaaa1";
const ENI_B: &str = "eni-0b0b0b0b";
const USER_DATA: &str = "#!/bin/sh\necho hello from user-data\n";
/// How long the guest's two TCP sessions last, in seconds: long enough
/// to span the live revoke under TCG.
const SESSION_SECS: u64 = 40;

/// B's groups: what A may reach, and how.
fn sg_b(with_revocable: bool) -> String {
    let revocable = if with_revocable {
        r#"{"protocol": "tcp", "from_port": 8081, "to_port": 8081, "cidrs": ["10.0.99.0/24"]},
           {"protocol": "tcp", "from_port": 9000, "to_port": 9000, "cidrs": ["0.0.0.0/0"]},"#
    } else {
        ""
    };
    format!(
        r#"{{"groups": [{{"id": "sg-b",
  "ingress": [{revocable}
    {{"protocol": "tcp", "from_port": 8080, "to_port": 8080, "source_groups": ["sg-a"]}},
    {{"protocol": "udp", "from_port": 9090, "to_port": 9090, "cidrs": ["{IP_A}/32"]}}],
  "egress": [{{"protocol": "-1", "cidrs": ["0.0.0.0/0"]}}]}}],
 "address_sets": {{"sg-a": ["{IP_A}"]}}}}"#
    )
}

/// A's group: nothing in, everything out.
fn sg_a() -> String {
    r#"{"groups": [{"id": "sg-a", "ingress": [], "egress": [{"protocol": "-1", "cidrs": ["0.0.0.0/0"]}]}]}"#
        .to_owned()
}

/// A's metadata document.
fn document_a() -> String {
    format!(
        r#"{{"instance_id": "{INSTANCE_A}", "ami_id": "ami-0123456789abcdef0",
  "instance_type": "t3.micro", "account_id": "123456789012", "region": "us-east-1",
  "availability_zone": "us-east-1a", "local_ipv4": "{IP_A}",
  "local_hostname": "ip-10-0-99-11.ec2.internal", "hostname": "ip-10-0-99-11.ec2.internal",
  "mac": "{MAC_A}", "pending_time": "2026-11-30T12:00:00Z", "security_groups": ["sg-a"],
  "user_data": "{}"}}"#,
        BASE64.encode(USER_DATA)
    )
}

/// The hop limit A's metadata replies carry: not the default (1), so the
/// TTL the guest sees shows the option at work.
const HOP_LIMIT_A: u8 = 3;
/// A's IPv6 address; its metadata service answers on `fd00:ec2::254` too.
const IPV6_A: &str = "fd00:99::11";

fn options_a() -> String {
    format!(
        r#"{{"http_tokens": "required", "http_endpoint": "enabled", "hop_limit": {HOP_LIMIT_A}}}"#
    )
}

/// A's `metadata=` file: the document, its options and the signing key.
fn metadata_a() -> String {
    format!(
        r#"{{"document": {}, "options": {},
 "identity_key": "net/identity-key.pem", "identity_certificate": "net/identity-cert.pem"}}"#,
        document_a(),
        options_a()
    )
}

/// A `PUT /metadata` body.
fn metadata_update() -> String {
    format!(
        r#"{{"document": {}, "options": {}}}"#,
        document_a(),
        options_a()
    )
}

fn flow_log_b() -> String {
    format!(
        r#"{{"destination": "/tmp/flow-b.log", "log": {{"account_id": "123456789012", "interface_id": "{ENI_B}"}}}}"#
    )
}

/// B's script: echo servers on the ports A probes (their output goes
/// elsewhere: the init reads the script's output until every writer of it
/// is gone).
const SCRIPT_B: &str =
    "#!/bin/sh\nstratus-netprobe serve 8080 8081 8082 9000 9090 9091 >/dev/null 2>&1 &\nsleep 1\n";

/// A's script: the probes, the metadata conversation, the sessions across
/// the revoke. Every result is one line (the init prefixes STRATUS-NET).
fn script_a() -> String {
    format!(
        r#"#!/bin/sh
P=stratus-netprobe
B={IP_B}
M=169.254.169.254
echo "probe tcp8080 $($P tcp $B 8080 3000)"
echo "probe tcp8082 $($P tcp $B 8082 2000)"
echo "probe udp9090 $($P udp $B 9090 3000)"
echo "probe udp9091 $($P udp $B 9091 2000)"
if ping -c 2 -W 2 $B >/dev/null 2>&1; then echo "probe ping_b ok"; else echo "probe ping_b fail"; fi
if ping -c 2 -W 3 {GATEWAY} >/dev/null 2>&1; then echo "probe ping_gw ok"; else echo "probe ping_gw fail"; fi
$P http $M GET /latest/meta-data/instance-id | sed 's/^/imds-v1 /'
out=$($P http $M PUT /latest/api/token X-aws-ec2-metadata-token-ttl-seconds:300)
echo "$out" | sed 's/^/imds-token /'
tok=$(echo "$out" | sed -n 's/^body=//p')
$P http $M PUT /latest/api/token X-aws-ec2-metadata-token-ttl-seconds:0 | sed 's/^/imds-bad-ttl /'
$P http $M PUT /latest/api/token X-aws-ec2-metadata-token-ttl-seconds:60 X-Forwarded-For:10.0.0.9 | sed 's/^/imds-xff /'
$P http $M PUT /2021-03-23/api/token X-aws-ec2-metadata-token-ttl-seconds:60 | sed 's/^/imds-dated /'
$P http $M GET /latest/meta-data/instance-id X-aws-ec2-metadata-token:$tok | sed 's/^/imds-id /'
$P http $M GET /latest/meta-data/instance-id X-aws-ec2-metadata-token:AAAAforged | sed 's/^/imds-forged /'
$P http $M GET /latest/user-data X-aws-ec2-metadata-token:$tok | sed 's/^/imds-userdata /'
$P http $M GET /latest/dynamic/instance-identity/document X-aws-ec2-metadata-token:$tok | sed 's/^/imds-document /'
$P http $M GET /latest/dynamic/instance-identity/signature X-aws-ec2-metadata-token:$tok | sed 's/^/imds-signature /'
$P http $M GET /latest/dynamic/instance-identity/rsa2048 X-aws-ec2-metadata-token:$tok | sed 's/^/imds-rsa2048 /'
# IPv6: the service's address is on-link; DAD must finish before the
# address can be a source.
ip addr add {IPV6_A}/64 dev eth0
ip route add fd00:ec2::254/128 dev eth0
sleep 3
M6=fd00:ec2::254
out6=$($P http $M6 PUT /latest/api/token X-aws-ec2-metadata-token-ttl-seconds:60)
echo "$out6" | sed 's/^/imds-v6-token /'
tok6=$(echo "$out6" | sed -n 's/^body=//p')
$P http $M6 GET /latest/meta-data/instance-id X-aws-ec2-metadata-token:$tok6 | sed 's/^/imds-v6-id /'
$P session $B 8081 {SESSION_SECS} > /tmp/tracked.log 2>&1 &
$P session $B 9000 {SESSION_SECS} > /tmp/untracked.log 2>&1 &
sleep 4
echo revoke-now
i=0
while [ $i -lt 60 ]; do
    r=$($P tcp $B 8081 1000)
    case "$r" in fail*) break ;; esac
    i=$((i + 1))
    sleep 1
done
echo "probe tcp8081_after_revoke $r"
echo "probe tcp8080_after_revoke $($P tcp $B 8080 3000)"
echo revoke-seen
wait
sed 's/^/tracked /' /tmp/tracked.log
sed 's/^/untracked /' /tmp/untracked.log
"#
    )
}

/// The tiny image's initramfs plus the probe tool and `script`.
fn guest_initrd(dir: &Path, tiny: &GuestImage, name: &str, script: &str) -> PathBuf {
    let netprobe = Path::new(env!("CARGO_BIN_EXE_stratus-netprobe"));
    net_guest::initrd(dir, tiny, netprobe, name, script).expect("build a guest initramfs")
}

/// A key and self-signed certificate for identity documents.
fn identity_key(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("identity-key.pem");
    let cert = dir.join("identity-cert.pem");
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=stratus-identity-test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed for the identity-document checks");
    assert!(status.status.success(), "openssl req failed: {status:?}");
    (key, cert)
}

fn scratch() -> &'static TempDir {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    DIR.get_or_init(|| TempDir::new("net-pair").expect("scratch directory"))
}

fn heredoc(script: &mut Script, path: &str, text: &str) {
    script.line(&format!("cat > {path} <<'STRATUS-EOF'"));
    script.line(text.trim_end());
    script.line("STRATUS-EOF");
}

/// Adds the pair case to the `boot` scenario.
pub fn add_cases(
    host: &mut VirtualHost,
    script: &mut Script,
    tiny: &GuestImage,
    files: &GuestFiles,
) {
    let dir = scratch().path();
    let (key, cert) = identity_key(dir);
    host.file("net/identity-key.pem", &key)
        .file("net/identity-cert.pem", &cert)
        .disk_file("net/a.cpio", &guest_initrd(dir, tiny, "a", &script_a()))
        .disk_file("net/b.cpio", &guest_initrd(dir, tiny, "b", SCRIPT_B));

    heredoc(script, "/tmp/sg-a.json", &sg_a());
    heredoc(script, "/tmp/sg-b.json", &sg_b(true));
    heredoc(script, "/tmp/sg-b-revoked.json", &sg_b(false));
    heredoc(script, "/tmp/md-a.json", &metadata_a());
    heredoc(script, "/tmp/md-update.json", &metadata_update());
    heredoc(script, "/tmp/flow-b.json", &flow_log_b());
    for tap in [TAP_A, TAP_B] {
        host_net::add_tap(script, tap, BRIDGE);
    }

    let vmm = |name: &str, initrd: &str, net: String| {
        let mut files = files.clone();
        files.initrd = initrd.to_owned();
        let boot = Boot::new(&files, 1, 256, "stratus.modules=1 stratus.run=net");
        let argv = boot.stratus_vmm_with(
            &format!("file:/tmp/{name}.log"),
            &["--api-sock", &format!("/tmp/{name}.sock"), "--net", &net],
        );
        argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
    };
    let vmm_a = vmm(
        "a",
        "net/a.cpio",
        format!("tap={TAP_A},mac={MAC_A},ip={IP_A}/24,gw={GATEWAY},ipv6={IPV6_A},sg=/tmp/sg-a.json,metadata=/tmp/md-a.json"),
    );
    let vmm_b = vmm(
        "b",
        "net/b.cpio",
        format!("tap={TAP_B},mac={MAC_B},ip={IP_B}/24,gw={GATEWAY},sg=/tmp/sg-b.json,flow-log=/tmp/flow-b.json"),
    );
    let pair = format!(
        r#"rm -f /tmp/a.sock /tmp/b.sock /tmp/a.log /tmp/b.log /tmp/flow-b.log
wait_for() {{
    waited=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        if [ "$waited" -ge "$3" ]; then echo "WAIT $2 timeout"; return 1; fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "WAIT $2 ok"
}}
# api SOCKET METHOD PATH BODY: one request; prints the body and status=CODE.
api() {{
    curl -s -S --max-time 30 --unix-socket "$1" -X "$2" -w ' status=%{{http_code}}' --data-binary "$4" "http://localhost$3"
    echo
}}
{vmm_b} 2>/tmp/b.err &
pb=$!
wait_for /tmp/b.log 'STRATUS-NET script-done' 240
{vmm_a} 2>/tmp/a.err &
pa=$!
if wait_for /tmp/a.log 'STRATUS-NET revoke-now' 300; then
    echo "REVOKE $(api /tmp/b.sock PUT /network-interfaces/net0/security-groups @/tmp/sg-b-revoked.json)"
fi
wait_for /tmp/a.log 'STRATUS-NET script-done' 200
curl -s -S --unix-socket /tmp/a.sock http://localhost/metrics | sed 's/^/METRICS-A /'
curl -s -S --unix-socket /tmp/b.sock http://localhost/metrics | sed 's/^/METRICS-B /'
echo "BAD-SG $(api /tmp/b.sock PUT /network-interfaces/net0/security-groups '{{"groups": [{{"id": "x", "ingress": [{{"protocol": "tcp", "from_port": 1, "to_port": 2, "source_groups": ["nope"]}}]}}]}}')"
echo "NO-NIC $(api /tmp/b.sock PUT /network-interfaces/net9/security-groups '{{"groups": []}}')"
echo "NO-METADATA $(api /tmp/b.sock PUT /metadata @/tmp/md-update.json)"
for s in /tmp/a.sock /tmp/b.sock; do
    curl -s -S --max-time 30 --unix-socket $s -X PUT -d '{{"action_type": "Reboot"}}' http://localhost/actions
done
for p in $pa $pb; do
    waited=0
    while kill -0 $p 2>/dev/null && [ $waited -lt 60 ]; do sleep 1; waited=$((waited + 1)); done
    kill -9 $p 2>/dev/null
    wait $p
    echo "VMM-EXIT pid=$p status=$?"
done
sed 's/^/CONSOLE-A /' /tmp/a.log
sed 's/^/CONSOLE-B /' /tmp/b.log
sed 's/^/STDERR-A /' /tmp/a.err
sed 's/^/STDERR-B /' /tmp/b.err
sed 's/^/FLOWLOG /' /tmp/flow-b.log
"#
    );
    heredoc(script, "/tmp/net-pair.sh", &pair);
    script.case("net_pair", TIMEOUT_SECS, &["sh", "/tmp/net-pair.sh"]);
    host_net::remove(script, &[TAP_A, TAP_B]);
}

fn pair_case() -> Option<CaseResult> {
    outcome().map(|o| case(o, "net_pair"))
}

/// A's `STRATUS-NET` lines from its console, without the prefix.
fn guest_a(case: &CaseResult) -> Vec<&str> {
    case.stdout
        .iter()
        .filter_map(|l| l.strip_prefix("CONSOLE-A STRATUS-NET "))
        .collect()
}

/// The rest of A's line starting with `key `.
fn a_value<'a>(case: &'a CaseResult, key: &str) -> &'a str {
    let prefix = format!("{key} ");
    guest_a(case)
        .into_iter()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key:?} line\n{}", case.describe()))
}

/// The `status=` and `body=` of an HTTP exchange A printed under `label`.
fn http(case: &CaseResult, label: &str) -> (String, String) {
    let prefix = format!("imds-{label} ");
    let lines: Vec<&str> = guest_a(case)
        .into_iter()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect();
    let status = lines
        .iter()
        .find_map(|l| l.strip_prefix("status="))
        .unwrap_or_else(|| panic!("no status for {label}\n{}", case.describe()));
    let body = lines
        .iter()
        .find_map(|l| l.strip_prefix("body="))
        .unwrap_or_default();
    (status.to_owned(), unescape(body))
}

/// The TTLs (hop limits) of the reply segments of request `label`.
fn reply_ttls(case: &CaseResult, label: &str) -> Vec<String> {
    let prefix = format!("imds-{label} reply-ttl=");
    let line = guest_a(case)
        .into_iter()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no reply-ttl for {label}\n{}", case.describe()));
    line.split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn metadata_replies_carry_the_configured_hop_limit() {
    let Some(case) = pair_case() else { return };
    for label in ["id", "document", "v6-id"] {
        let ttls = reply_ttls(&case, label);
        assert!(
            !ttls.is_empty() && ttls.iter().all(|t| *t == HOP_LIMIT_A.to_string()),
            "{label}: reply TTLs {ttls:?}, configured hop limit {HOP_LIMIT_A}\n{}",
            case.describe()
        );
    }
}

#[test]
fn metadata_answers_on_its_ipv6_address() {
    let Some(case) = pair_case() else { return };
    let (status, token) = http(&case, "v6-token");
    assert_eq!(status, "200", "{}", case.describe());
    assert!(!token.is_empty());
    assert_eq!(
        http(&case, "v6-id"),
        ("200".to_owned(), INSTANCE_A.to_owned()),
        "{}",
        case.describe()
    );
}

/// Undoes Rust's `escape_default`.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let code: String = chars.by_ref().skip(1).take_while(|&c| c != '}').collect();
                if let Some(c) = u32::from_str_radix(&code, 16).ok().and_then(char::from_u32) {
                    out.push(c);
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[test]
fn both_guests_get_their_addresses_from_their_own_vmm() {
    let Some(case) = pair_case() else { return };
    assert!(
        guest_a(&case)
            .iter()
            .any(|l| l.starts_with(&format!("dhcp=bound ip={IP_A} "))),
        "{}",
        case.describe()
    );
    assert!(
        case.stdout
            .iter()
            .any(|l| l.starts_with(&format!("CONSOLE-B STRATUS-NET dhcp=bound ip={IP_B} "))),
        "{}",
        case.describe()
    );
}

#[test]
fn security_groups_allow_only_what_their_rules_say() {
    let Some(case) = pair_case() else { return };
    for (probe, expected) in [
        ("tcp8080", "ok"),   // source-group rule
        ("tcp8082", "fail"), // no rule
        ("udp9090", "ok"),   // CIDR rule
        ("udp9091", "fail"), // no rule
        ("ping_b", "fail"),  // no ICMP rule
        ("ping_gw", "ok"),   // outbound-initiated: its replies need no rule
    ] {
        let got = a_value(&case, &format!("probe {probe}"));
        assert!(
            got.starts_with(expected),
            "{probe}: {got}\n{}",
            case.describe()
        );
    }
}

#[test]
fn a_live_revoke_blocks_new_flows_keeps_tracked_ones_and_cuts_untracked_ones() {
    let Some(case) = pair_case() else { return };
    let revoke = case
        .stdout
        .iter()
        .find(|l| l.starts_with("REVOKE "))
        .unwrap_or_else(|| panic!("no revoke\n{}", case.describe()));
    assert!(
        revoke.ends_with("status=204"),
        "{revoke}\n{}",
        case.describe()
    );
    assert!(a_value(&case, "probe tcp8081_after_revoke").starts_with("fail"));
    assert!(a_value(&case, "probe tcp8080_after_revoke").starts_with("ok"));
    // The last seconds of each session: after the revoke in any case.
    let echoed = |label: &str| -> Vec<u64> {
        let prefix = format!("{label} second=");
        guest_a(&case)
            .into_iter()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("echoed="))
                    .and_then(|v| v.parse().ok())
            })
            .collect()
    };
    let tracked = echoed("tracked");
    let untracked = echoed("untracked");
    assert_eq!(tracked.len() as u64, SESSION_SECS, "{}", case.describe());
    assert_eq!(untracked.len() as u64, SESSION_SECS, "{}", case.describe());
    let tail = |v: &[u64]| v[v.len() - 5..].iter().sum::<u64>();
    assert!(tail(&tracked) > 0, "tracked session cut: {tracked:?}");
    assert_eq!(
        tail(&untracked),
        0,
        "untracked session survived: {untracked:?}"
    );
    assert!(
        untracked[..3].iter().sum::<u64>() > 0,
        "untracked never worked: {untracked:?}"
    );
}

#[test]
fn bad_security_group_requests_get_4xx() {
    let Some(case) = pair_case() else { return };
    for (label, status) in [("BAD-SG", "400"), ("NO-NIC", "404"), ("NO-METADATA", "409")] {
        let line = case
            .stdout
            .iter()
            .find(|l| l.starts_with(&format!("{label} ")))
            .unwrap_or_else(|| panic!("no {label}\n{}", case.describe()));
        assert!(line.ends_with(&format!("status={status}")), "{line}");
    }
}

#[test]
fn imdsv2_tokens_and_refusals_follow_ec2() {
    let Some(case) = pair_case() else { return };
    assert_eq!(
        http(&case, "v1").0,
        "401",
        "v1 refused when tokens are required"
    );
    let (status, token) = http(&case, "token");
    assert_eq!(status, "200");
    assert!(!token.is_empty());
    assert!(
        guest_a(&case).iter().any(|l| l
            .eq_ignore_ascii_case("imds-token header X-aws-ec2-metadata-token-ttl-seconds: 300")),
        "the token reply carries its TTL\n{}",
        case.describe()
    );
    assert_eq!(http(&case, "bad-ttl").0, "400");
    assert_eq!(http(&case, "xff").0, "403");
    assert_eq!(http(&case, "dated").0, "403");
    assert_eq!(http(&case, "forged").0, "401");
    assert_eq!(http(&case, "id"), ("200".to_owned(), INSTANCE_A.to_owned()));
    assert_eq!(
        http(&case, "userdata"),
        ("200".to_owned(), USER_DATA.to_owned())
    );
}

#[test]
fn identity_document_signatures_verify_with_openssl() {
    let Some(case) = pair_case() else { return };
    let (status, document) = http(&case, "document");
    assert_eq!(status, "200");
    let doc: serde_json::Value = serde_json::from_str(&document).expect("JSON document");
    assert_eq!(doc["instanceId"], INSTANCE_A);
    assert_eq!(doc["privateIp"], IP_A);
    assert_eq!(doc["region"], "us-east-1");
    let (_, signature) = http(&case, "signature");
    let (_, rsa2048) = http(&case, "rsa2048");

    let dir = TempDir::new("identity-verify").unwrap();
    let d = dir.path();
    let cert = scratch().path().join("identity-cert.pem");
    std::fs::write(d.join("document"), &document).unwrap();
    std::fs::write(d.join("signature.b64"), format!("{}\n", signature.trim())).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
        out
    };
    run(&["base64", "-d", "-in", "signature.b64", "-out", "signature"]);
    run(&[
        "x509",
        "-pubkey",
        "-noout",
        "-in",
        cert.to_str().unwrap(),
        "-out",
        "pubkey.pem",
    ]);
    run(&[
        "dgst",
        "-sha256",
        "-verify",
        "pubkey.pem",
        "-signature",
        "signature",
        "document",
    ]);
    std::fs::write(
        d.join("rsa2048.pem"),
        format!(
            "-----BEGIN PKCS7-----\n{}\n-----END PKCS7-----\n",
            rsa2048.trim()
        ),
    )
    .unwrap();
    let out = run(&[
        "smime",
        "-verify",
        "-in",
        "rsa2048.pem",
        "-inform",
        "PEM",
        "-certfile",
        cert.to_str().unwrap(),
        "-noverify",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), document);
}

#[test]
fn flow_log_records_match_the_traffic() {
    let Some(case) = pair_case() else { return };
    let records: Vec<Vec<&str>> = case
        .stdout
        .iter()
        .filter_map(|l| l.strip_prefix("FLOWLOG "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(!records.is_empty(), "no flow log\n{}", case.describe());
    for r in &records {
        assert_eq!(r.len(), 14, "v2 has 14 fields: {r:?}");
        assert_eq!(&r[..3], ["2", "123456789012", ENI_B]);
    }
    let has = |dst_port: &str, proto: &str, action: &str| {
        records.iter().any(|r| {
            r[3] == IP_A && r[4] == IP_B && r[6] == dst_port && r[7] == proto && r[12] == action
        })
    };
    assert!(has("8080", "6", "ACCEPT"), "{records:?}");
    assert!(has("8082", "6", "REJECT"), "{records:?}");
    assert!(has("9090", "17", "ACCEPT"), "{records:?}");
    assert!(has("9091", "17", "REJECT"), "{records:?}");
}

#[test]
fn metrics_count_security_group_decisions_per_rule_and_reason() {
    let Some(case) = pair_case() else { return };
    let value = |prefix: &str| -> u64 {
        case.stdout
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|rest| rest.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let rule = "METRICS-B stratus_vmm_sg_rule_packets_total{device=\"net0\",group=\"sg-b\",direction=\"ingress\"";
    assert!(value(rule) > 0, "no per-rule counts\n{}", case.describe());
    let denied = "METRICS-B stratus_vmm_device_events_total{device=\"net0\",kind=\"net\",counter=\"sg_denied_ingress\"}";
    assert!(value(denied) > 0, "no denied count\n{}", case.describe());
}
