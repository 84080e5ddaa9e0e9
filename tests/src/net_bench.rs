//! The network benchmark (`cargo xtask bench net`): two tiny guests on one
//! Linux bridge in the virtual host, a client sending to a server, under
//! stratus-vmm without security groups, stratus-vmm with 1 000 rules on
//! each NIC, and QEMU `-M microvm` with its userspace virtio-net on a tap
//! (QEMU's default, no vhost-net). Per boot pair: TCP for a few seconds
//! as fast as it goes (`stratus-netprobe tcp-blast`, rate measured by the
//! receiver), then 18-byte UDP payloads (64-byte Ethernet frames with the
//! FCS) for a few seconds (packets per second received).
//!
//! Everything runs under TCG inside the virtual host: compare ratios, not
//! absolute rates.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::case::CaseResult;
use crate::error::Result;
use crate::images::GuestImage;
use crate::net_guest;
use crate::script::{quote, Script};
use crate::vhost::{Outcome, VirtualHost};
use crate::vmms::{Boot, GuestFiles};

const BRIDGE: &str = "stbench0";
const GATEWAY: &str = "10.0.98.1";
const SUBNET: &str = "10.0.98.0/24";
const SERVER_IP: &str = "10.0.98.21";
const CLIENT_IP: &str = "10.0.98.22";
const SERVER_MAC: &str = "02:00:0a:00:62:15";
const CLIENT_MAC: &str = "02:00:0a:00:62:16";
const SERVER_TAP: &str = "stbsrv0";
const CLIENT_TAP: &str = "stbcli0";
const PORT: u16 = 5001;
/// The UDP payload that makes a 64-byte Ethernet frame (with its FCS).
const UDP_PAYLOAD: usize = 18;
const RUN_TIMEOUT_SECS: u64 = 600;
const IPROUTE2: &str = "iproute2";

/// Who runs the two guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    /// stratus-vmm, no security groups.
    Stratus,
    /// stratus-vmm, 1 000 rules on each NIC (EC2's quota).
    Stratus1000,
    /// QEMU `-M microvm`, virtio-net-device on a tap.
    QemuMicrovm,
}

impl Contender {
    const ALL: [Contender; 3] = [
        Contender::Stratus,
        Contender::Stratus1000,
        Contender::QemuMicrovm,
    ];

    fn name(self) -> &'static str {
        match self {
            Contender::Stratus => "stratus-vmm",
            Contender::Stratus1000 => "stratus-vmm-1000-rules",
            Contender::QemuMicrovm => "qemu-microvm",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Boot pairs per contender.
    pub runs: u32,
    /// Seconds of TCP, then of UDP, per boot pair.
    pub seconds: u32,
    /// The VMM under test.
    pub stratus_vmm: PathBuf,
    /// The tiny image.
    pub tiny: GuestImage,
    /// `stratus-netprobe`, statically linked.
    pub netprobe: PathBuf,
    /// Where the guests' initramfs files are written.
    pub scratch: PathBuf,
}

/// 1 000 rules (EC2's per-NIC quota): 16 groups of 60 ingress rules (the
/// per-group quota) and 40 egress rules, none matching the benchmark's
/// traffic but one allowing the bridge's subnet in and one allowing
/// everything out.
fn thousand_rules() -> String {
    let rule = |port: u32, g: u32, r: u32| {
        format!(
            r#"{{"protocol": "tcp", "from_port": {port}, "to_port": {port}, "cidrs": ["172.{g}.{r}.0/24"]}}"#
        )
    };
    let mut groups = Vec::new();
    for g in 0..16u32 {
        let last = g == 15;
        let filler = if last { 59 } else { 60 };
        let mut ingress: Vec<String> = (0..filler)
            .map(|r| rule(10_000 + g * 100 + r, g, r))
            .collect();
        let mut egress = Vec::new();
        if last {
            ingress.push(format!(r#"{{"protocol": "-1", "cidrs": ["{SUBNET}"]}}"#));
            egress = (0..39).map(|r| rule(20_000 + r, 99, r)).collect();
            egress.push(r#"{"protocol": "-1", "cidrs": ["0.0.0.0/0"]}"#.to_owned());
        }
        groups.push(format!(
            r#"{{"id": "sg-{g}", "ingress": [{}], "egress": [{}]}}"#,
            ingress.join(", "),
            egress.join(", ")
        ));
    }
    format!(r#"{{"groups": [{}]}}"#, groups.join(", "))
}

impl Plan {
    fn server_script(&self) -> String {
        format!("#!/bin/sh\nexec stratus-netprobe sink {PORT}\n")
    }

    fn client_script(&self) -> String {
        let s = self.seconds;
        format!(
            "#!/bin/sh\nsleep 1\nstratus-netprobe tcp-blast {SERVER_IP} {PORT} {s}\nsleep 2\n\
             stratus-netprobe udp-blast {SERVER_IP} {PORT} {s} {UDP_PAYLOAD}\nsleep 2\n"
        )
    }

    /// One guest's VMM command line.
    fn vmm(&self, who: Contender, role: &str, ip: &str, mac: &str, tap: &str) -> Vec<String> {
        let files = GuestFiles {
            kernel: "images/tiny/kernel".to_owned(),
            initrd: format!("net-bench/{role}.cpio"),
        };
        let serial = format!("/tmp/{role}.log");
        match who {
            Contender::Stratus | Contender::Stratus1000 => {
                let boot = Boot::new(
                    &files,
                    1,
                    256,
                    &format!(
                        "stratus.modules=1 stratus.run=net stratus.net_exit={}",
                        u8::from(role == "client")
                    ),
                );
                let mut net = format!("tap={tap},mac={mac},ip={ip}/24,gw={GATEWAY}");
                if who == Contender::Stratus1000 {
                    net.push_str(",sg=/tmp/sg1000.json");
                }
                boot.stratus_vmm_with(&format!("file:{serial}"), &["--net", &net])
            }
            Contender::QemuMicrovm => {
                let boot = Boot::new(
                    &files,
                    1,
                    256,
                    &format!(
                        "stratus.modules=1 stratus.run=net stratus.net_static={ip}/24,{GATEWAY} stratus.net_exit={}",
                        u8::from(role == "client")
                    ),
                );
                let mut argv = boot.qemu_microvm();
                if let Some(i) = argv.iter().position(|a| a == "-serial") {
                    argv[i + 1] = format!("file:{serial}");
                }
                argv.extend([
                    "-netdev".to_owned(),
                    format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
                    "-device".to_owned(),
                    format!("virtio-net-device,netdev=n0,mac={mac}"),
                ]);
                argv
            }
        }
    }

    /// The virtual host that runs the benchmark.
    pub fn host(&self) -> Result<VirtualHost> {
        let server = net_guest::initrd(
            &self.scratch,
            &self.tiny,
            &self.netprobe,
            "server",
            &self.server_script(),
        )?;
        let client = net_guest::initrd(
            &self.scratch,
            &self.tiny,
            &self.netprobe,
            "client",
            &self.client_script(),
        )?;
        let mut host = VirtualHost::new("bench-net");
        host.binary("stratus-vmm", &self.stratus_vmm)
            .binary(IPROUTE2, &crate::vhost::which("ip")?)
            .file("images/tiny/kernel", &self.tiny.kernel)
            .disk_file("net-bench/server.cpio", &server)
            .disk_file("net-bench/client.cpio", &client)
            .modules(&["tun", "bridge"])
            .nested_qemu()?;
        let mut script = Script::new();
        script.line("cat > /tmp/sg1000.json <<'STRATUS-EOF'");
        script.line(&thousand_rules());
        script.line("STRATUS-EOF");
        let ip = IPROUTE2;
        script.line(&format!(
            "{ip} link add {BRIDGE} type bridge && {ip} addr add {GATEWAY}/24 dev {BRIDGE} && {ip} link set {BRIDGE} up"
        ));
        for tap in [SERVER_TAP, CLIENT_TAP] {
            script.line(&format!(
                "{ip} tuntap add dev {tap} mode tap vnet_hdr && {ip} link set {tap} master {BRIDGE} && {ip} link set {tap} up"
            ));
        }
        for run in 0..self.runs {
            for k in 0..Contender::ALL.len() {
                let who = Contender::ALL[(k + run as usize) % Contender::ALL.len()];
                let server = self.vmm(who, "server", SERVER_IP, SERVER_MAC, SERVER_TAP);
                let client = self.vmm(who, "client", CLIENT_IP, CLIENT_MAC, CLIENT_TAP);
                let join =
                    |argv: &[String]| argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ");
                let pair = format!(
                    r#"rm -f /tmp/server.log /tmp/client.log
{server} >/dev/null 2>&1 &
pid=$!
waited=0
while ! grep -q 'STRATUS-NET sinking' /tmp/server.log 2>/dev/null && [ $waited -lt 240 ]; do sleep 1; waited=$((waited + 1)); done
{client} >/dev/null 2>&1
echo "CLIENT-EXIT $?"
sleep 3
kill $pid; sleep 1; kill -9 $pid 2>/dev/null; wait $pid
sed 's/^/CLIENT /' /tmp/client.log
sed 's/^/SERVER /' /tmp/server.log
"#,
                    server = join(&server),
                    client = join(&client),
                );
                let name = format!("{}-{}", who.name(), run + 1);
                let path = format!("/tmp/{name}.sh");
                script.line(&format!("cat > {path} <<'STRATUS-EOF'"));
                script.line(pair.trim_end());
                script.line("STRATUS-EOF");
                script.case(&name, RUN_TIMEOUT_SECS, &["sh", &path]);
            }
        }
        host.scenario(script.text());
        let pairs = u64::from(self.runs) * Contender::ALL.len() as u64;
        host.timeout(Duration::from_secs(600 + pairs * RUN_TIMEOUT_SECS));
        Ok(host)
    }

    /// Summarizes a finished run.
    pub fn report(&self, outcome: &Outcome) -> Report {
        let cases = outcome.cases();
        let rows = Contender::ALL
            .into_iter()
            .map(|who| {
                let prefix = format!("{}-", who.name());
                let mut row = Row {
                    who,
                    tcp_mbit_s: Vec::new(),
                    udp_pps: Vec::new(),
                    failures: Vec::new(),
                };
                for case in cases.iter().filter(|c| {
                    c.name
                        .strip_prefix(&prefix)
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                }) {
                    match measure(case) {
                        Ok((tcp, udp)) => {
                            row.tcp_mbit_s.push(tcp);
                            row.udp_pps.push(udp);
                        }
                        Err(why) => row.failures.push(format!("{why}\n{}", case.describe())),
                    }
                }
                row
            })
            .collect();
        Report { rows }
    }
}

fn field(line: &str, key: &str) -> Option<f64> {
    let needle = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(needle.as_str()))
        .and_then(|v| v.parse().ok())
}

/// The receiver's TCP rate and the largest UDP burst's packet rate.
fn measure(case: &CaseResult) -> std::result::Result<(f64, f64), String> {
    let server = |prefix: &str| -> Vec<&str> {
        case.stdout
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .collect()
    };
    let tcp = server("SERVER STRATUS-NET tcp bytes=")
        .iter()
        .filter_map(|l| field(&format!("bytes={l}"), "mbit_s"))
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let udp = server("SERVER STRATUS-NET udp datagrams=")
        .iter()
        .filter_map(|l| field(&format!("datagrams={l}"), "pps"))
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    match (tcp, udp) {
        (Some(t), Some(u)) if t > 0.0 && u > 0.0 => Ok((t, u)),
        _ => Err(format!(
            "case {}: no TCP or UDP result from the server",
            case.name
        )),
    }
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// One contender's results.
#[derive(Debug, Clone)]
pub struct Row {
    who: Contender,
    tcp_mbit_s: Vec<f64>,
    udp_pps: Vec<f64>,
    failures: Vec<String>,
}

/// The benchmark's results.
#[derive(Debug, Clone)]
pub struct Report {
    rows: Vec<Row>,
}

impl Report {
    /// Whether every boot pair measured.
    pub fn all_succeeded(&self) -> bool {
        self.rows.iter().all(|r| r.failures.is_empty())
    }

    fn row(&self, who: Contender) -> Option<&Row> {
        self.rows.iter().find(|r| r.who == who)
    }

    /// The report as text: medians, ratios, per-run numbers, failures.
    pub fn render(&self, plan: &Plan) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "network benchmark: two tiny guests (1 vCPU, 256 MiB) on one bridge in the virtual host; \
             {} s of TCP (receiver-measured) then {} s of {UDP_PAYLOAD}-byte UDP payloads (64-byte frames) per boot pair; \
             QEMU microvm uses virtio-net-device on a tap without vhost-net (its default)",
            plan.seconds, plan.seconds
        );
        let _ = writeln!(
            out,
            "\n{:<24} {:>14} {:>14}   per run (TCP Mbit/s; UDP pps)",
            "VMM", "TCP Mbit/s", "UDP pps"
        );
        for row in &self.rows {
            let _ = writeln!(
                out,
                "{:<24} {:>14} {:>14}   {:?}; {:?}",
                row.who.name(),
                median(&row.tcp_mbit_s).map_or("-".into(), |v| format!("{v:.1}")),
                median(&row.udp_pps).map_or("-".into(), |v| format!("{v:.0}")),
                row.tcp_mbit_s
                    .iter()
                    .map(|v| format!("{v:.1}"))
                    .collect::<Vec<_>>(),
                row.udp_pps
                    .iter()
                    .map(|v| format!("{v:.0}"))
                    .collect::<Vec<_>>(),
            );
        }
        let ratio = |a: Contender, b: Contender, tcp: bool| -> String {
            let pick = |r: &Row| median(if tcp { &r.tcp_mbit_s } else { &r.udp_pps });
            match (self.row(a).and_then(pick), self.row(b).and_then(pick)) {
                (Some(x), Some(y)) if y > 0.0 => format!("{:.2}", x / y),
                _ => "-".into(),
            }
        };
        let _ = writeln!(out, "\nratios of medians (>1 favours the first):");
        let _ = writeln!(
            out,
            "  TCP  stratus-vmm / qemu-microvm            {}",
            ratio(Contender::Stratus, Contender::QemuMicrovm, true)
        );
        let _ = writeln!(
            out,
            "  TCP  stratus-vmm 1000 rules / no rules     {}",
            ratio(Contender::Stratus1000, Contender::Stratus, true)
        );
        let _ = writeln!(
            out,
            "  UDP  stratus-vmm / qemu-microvm            {}",
            ratio(Contender::Stratus, Contender::QemuMicrovm, false)
        );
        let _ = writeln!(
            out,
            "  UDP  stratus-vmm 1000 rules / no rules     {}",
            ratio(Contender::Stratus1000, Contender::Stratus, false)
        );
        for row in &self.rows {
            for failure in &row.failures {
                let _ = writeln!(out, "\nFAILED {}: {failure}", row.who.name());
            }
        }
        out
    }
}

/// Where the scratch files go for a run.
pub fn scratch_dir(base: &Path) -> PathBuf {
    base.join("net-bench")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousand_rules_is_within_ec2_quotas_and_valid_json() {
        let text = thousand_rules();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let groups = doc["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 16);
        let ingress: usize = groups
            .iter()
            .map(|g| g["ingress"].as_array().unwrap().len())
            .sum();
        let egress: usize = groups
            .iter()
            .map(|g| g["egress"].as_array().unwrap().len())
            .sum();
        assert_eq!(ingress + egress, 1000);
        assert!(groups
            .iter()
            .all(|g| g["ingress"].as_array().unwrap().len() <= 60));
    }
}
