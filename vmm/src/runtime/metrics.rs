//! `GET /metrics`: one snapshot of the VMM's counters, rendered as
//! Prometheus text (the default) or JSON.
//!
//! Counters are read where they live (atomics on vCPUs and transports,
//! each device's own counters under its lock) only when asked for, so
//! the hot paths pay nothing for them.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::api::VmState;

/// One vCPU's exits by reason.
#[derive(Debug, Clone, Serialize)]
pub struct VcpuMetrics {
    /// The vCPU's index.
    pub index: u8,
    /// Userspace exits by reason.
    pub exits: BTreeMap<&'static str, u64>,
    /// Console writes KVM queued instead of exiting, applied by this vCPU.
    pub coalesced_writes: u64,
}

/// One device's counters.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceMetrics {
    /// The device's name (a drive id).
    pub name: String,
    /// `block`, `net`, …
    pub kind: &'static str,
    /// Counters by name, the device's own and its transport's.
    pub counters: BTreeMap<&'static str, u64>,
    /// Current values that go up and down, by name (a NIC's
    /// `guest_reachable`: whether the guest answers its ARP probes).
    pub gauges: BTreeMap<&'static str, u64>,
}

/// Packets one security-group rule allowed (new flows and untracked
/// packets; packets of tracked flows pass without a rule).
#[derive(Debug, Clone, Serialize)]
pub struct RuleHitMetrics {
    /// The NIC id.
    pub device: String,
    /// The security group's id.
    pub group: String,
    /// `ingress` or `egress`.
    pub direction: &'static str,
    /// The rule's index in the group's list for that direction.
    pub rule: usize,
    /// Which of the rule's CIDRs, then source groups, matched.
    pub peer: usize,
    /// Packets.
    pub packets: u64,
}

/// Everything `GET /metrics` reports.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsSnapshot {
    /// Running or paused.
    pub state: VmState,
    /// Seconds since the VMM process started.
    pub uptime_seconds: f64,
    /// Process start to the guest's boot-complete signal, once it came.
    pub boot_time_seconds: Option<f64>,
    /// Process start to the boot vCPU's first `KVM_RUN`, wall time.
    pub first_kvm_run_seconds: Option<f64>,
    /// The process's CPU time until then.
    pub first_kvm_run_cpu_seconds: Option<f64>,
    /// Times the VM was paused.
    pub pauses: u64,
    /// Bytes of serial output since start.
    pub console_bytes: u64,
    /// Per vCPU.
    pub vcpus: Vec<VcpuMetrics>,
    /// Per device.
    pub devices: Vec<DeviceMetrics>,
    /// Per security-group rule of every NIC.
    pub rule_hits: Vec<RuleHitMetrics>,
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes one metric family: its headers, then one line per sample
/// (`labels` is `{…}` or empty).
/// One sample per value of every device, labelled with the device, its
/// kind and the value's name under `key`.
fn device_samples(
    devices: &[DeviceMetrics],
    key: &str,
    values: impl Fn(&DeviceMetrics) -> &BTreeMap<&'static str, u64>,
) -> Vec<(String, String)> {
    devices
        .iter()
        .flat_map(|d| {
            values(d).iter().map(move |(name, value)| {
                (
                    format!(
                        "{{device=\"{}\",kind=\"{}\",{key}=\"{name}\"}}",
                        label(&d.name),
                        d.kind
                    ),
                    value.to_string(),
                )
            })
        })
        .collect()
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

impl MetricsSnapshot {
    /// Prometheus text exposition format (0.0.4), `stratus_vmm_` prefix,
    /// base units, `_total` on counters.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let plain = |v: String| vec![(String::new(), v)];
        family(
            &mut out,
            "stratus_vmm_up",
            "gauge",
            "1 while the VM runs, 0 while it is paused.",
            &plain(u8::from(self.state == VmState::Running).to_string()),
        );
        family(
            &mut out,
            "stratus_vmm_uptime_seconds",
            "gauge",
            "Seconds since the VMM process started.",
            &plain(format!("{:.3}", self.uptime_seconds)),
        );
        if let Some(wall) = self.first_kvm_run_seconds {
            family(
                &mut out,
                "stratus_vmm_start_to_first_kvm_run_seconds",
                "gauge",
                "VMM process start to the boot vCPU's first KVM_RUN, wall time.",
                &plain(format!("{wall:.6}")),
            );
        }
        if let Some(cpu) = self.first_kvm_run_cpu_seconds {
            family(
                &mut out,
                "stratus_vmm_start_to_first_kvm_run_cpu_seconds",
                "gauge",
                "CPU time the VMM process used until the boot vCPU's first KVM_RUN.",
                &plain(format!("{cpu:.6}")),
            );
        }
        if let Some(boot) = self.boot_time_seconds {
            family(
                &mut out,
                "stratus_vmm_boot_time_seconds",
                "gauge",
                "VMM process start to the guest's boot-complete signal.",
                &plain(format!("{boot:.6}")),
            );
        }
        family(
            &mut out,
            "stratus_vmm_pauses_total",
            "counter",
            "Times the VM was paused.",
            &plain(self.pauses.to_string()),
        );
        family(
            &mut out,
            "stratus_vmm_console_bytes_total",
            "counter",
            "Bytes the guest wrote to its serial console.",
            &plain(self.console_bytes.to_string()),
        );
        let exits: Vec<_> = self
            .vcpus
            .iter()
            .flat_map(|v| {
                v.exits.iter().map(move |(reason, count)| {
                    (
                        format!("{{vcpu=\"{}\",reason=\"{reason}\"}}", v.index),
                        count.to_string(),
                    )
                })
            })
            .collect();
        family(
            &mut out,
            "stratus_vmm_vcpu_exits_total",
            "counter",
            "Userspace exits of each vCPU, by reason.",
            &exits,
        );
        let coalesced: Vec<_> = self
            .vcpus
            .iter()
            .map(|v| {
                (
                    format!("{{vcpu=\"{}\"}}", v.index),
                    v.coalesced_writes.to_string(),
                )
            })
            .collect();
        family(
            &mut out,
            "stratus_vmm_vcpu_coalesced_writes_total",
            "counter",
            "Console writes queued by KVM instead of exiting, per vCPU.",
            &coalesced,
        );
        let devices = device_samples(&self.devices, "counter", |d| &d.counters);
        family(
            &mut out,
            "stratus_vmm_device_events_total",
            "counter",
            "Per-device counters (requests, bytes, errors, refused guest writes), by counter name.",
            &devices,
        );
        let gauges = device_samples(&self.devices, "gauge", |d| &d.gauges);
        family(
            &mut out,
            "stratus_vmm_device_state",
            "gauge",
            "Per-device current values (a NIC's guest_reachable: 1 while the guest answers its ARP probes), by gauge name.",
            &gauges,
        );
        let rules: Vec<_> = self
            .rule_hits
            .iter()
            .map(|r| {
                (
                    format!(
                        "{{device=\"{}\",group=\"{}\",direction=\"{}\",rule=\"{}\",peer=\"{}\"}}",
                        label(&r.device),
                        label(&r.group),
                        r.direction,
                        r.rule,
                        r.peer
                    ),
                    r.packets.to_string(),
                )
            })
            .collect();
        family(
            &mut out,
            "stratus_vmm_sg_rule_packets_total",
            "counter",
            "Packets each security-group rule allowed (new flows and untracked packets), by NIC, group, direction, rule and matching peer.",
            &rules,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> MetricsSnapshot {
        MetricsSnapshot {
            state: VmState::Running,
            uptime_seconds: 1.5,
            boot_time_seconds: Some(0.25),
            first_kvm_run_seconds: Some(0.005),
            first_kvm_run_cpu_seconds: Some(0.004),
            pauses: 2,
            console_bytes: 10,
            vcpus: vec![VcpuMetrics {
                index: 0,
                exits: BTreeMap::from([("pio_read", 3), ("mmio_write", 4)]),
                coalesced_writes: 7,
            }],
            rule_hits: vec![RuleHitMetrics {
                device: "net0".into(),
                group: "sg-1".into(),
                direction: "ingress",
                rule: 2,
                peer: 0,
                packets: 5,
            }],
            devices: vec![DeviceMetrics {
                name: "root\"fs".into(),
                kind: "block",
                counters: BTreeMap::from([("reads", 9)]),
                gauges: BTreeMap::from([("guest_reachable", 1)]),
            }],
        }
    }

    #[test]
    fn prometheus_text_has_headers_before_samples() {
        let text = snapshot().to_prometheus();
        assert!(text.contains("# TYPE stratus_vmm_vcpu_exits_total counter\n"));
        assert!(text.contains("stratus_vmm_vcpu_exits_total{vcpu=\"0\",reason=\"pio_read\"} 3\n"));
        assert!(text.contains(
            "stratus_vmm_device_events_total{device=\"root\\\"fs\",kind=\"block\",counter=\"reads\"} 9\n"
        ));
        assert!(text.contains("stratus_vmm_boot_time_seconds 0.250000\n"));
        assert!(text.contains("# TYPE stratus_vmm_device_state gauge\n"));
        assert!(text.contains(
            "stratus_vmm_device_state{device=\"root\\\"fs\",kind=\"block\",gauge=\"guest_reachable\"} 1\n"
        ));
        assert!(text.contains(
            "stratus_vmm_sg_rule_packets_total{device=\"net0\",group=\"sg-1\",direction=\"ingress\",rule=\"2\",peer=\"0\"} 5\n"
        ));
        // Each family's samples follow its own header, never another's.
        let exits_header = text.find("# TYPE stratus_vmm_vcpu_exits_total").unwrap();
        let exits_sample = text.find("stratus_vmm_vcpu_exits_total{").unwrap();
        let next_header = text
            .find("# HELP stratus_vmm_vcpu_coalesced_writes_total")
            .unwrap();
        assert!(exits_header < exits_sample && exits_sample < next_header);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn json_form_names_everything() {
        let v = serde_json::to_value(snapshot()).unwrap();
        assert_eq!(v["state"], "Running");
        assert_eq!(v["vcpus"][0]["exits"]["pio_read"], 3);
        assert_eq!(v["devices"][0]["counters"]["reads"], 9);
    }
}
