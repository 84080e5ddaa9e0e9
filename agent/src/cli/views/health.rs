//! `stratus health`: the host's summary, then EC2's two status checks of
//! every instance (what an operator looks at first when something is
//! wrong). Fields a given agent does not send yet show as `-`.

use serde_json::Value;

use super::{field, items, text};
use crate::cli::table::Table;

/// Instance states in lifecycle order, for the health summary.
const STATES: [&str; 6] = [
    "pending",
    "running",
    "stopping",
    "stopped",
    "shutting-down",
    "terminated",
];

/// The host summary, then each instance's status checks.
pub fn health(doc: &Value) -> String {
    let by_state = doc["instances"].as_object();
    let count = |s: &str| by_state.and_then(|m| m.get(s)).and_then(Value::as_u64);
    let known = STATES
        .iter()
        .filter_map(|s| count(s).filter(|n| *n > 0).map(|n| format!("{n} {s}")));
    let others = by_state.into_iter().flatten().filter_map(|(s, n)| {
        let n = n.as_u64().filter(|n| *n > 0)?;
        (!STATES.contains(&s.as_str())).then(|| format!("{n} {s}"))
    });
    let instances: Vec<String> = known.chain(others).collect();
    let resources = doc["resources"].as_object().map_or(String::new(), |m| {
        m.iter()
            .map(|(k, n)| format!("{} {}", text(n), k.replace('_', " ")))
            .collect::<Vec<_>>()
            .join(", ")
    });
    let mut t = Table::plain();
    for (name, value) in [
        ("agent version", field(doc, "agent_version")),
        (
            "uptime",
            doc["uptime_seconds"]
                .as_u64()
                .map_or(String::new(), duration),
        ),
        (
            "vcpus",
            format!(
                "{} allocated of {}",
                text(&doc["allocated"]["vcpus"]),
                text(&doc["host"]["vcpus"])
            ),
        ),
        (
            "memory",
            format!(
                "{} MiB allocated of {} MiB",
                text(&doc["allocated"]["memory_mib"]),
                text(&doc["host"]["memory_mib"])
            ),
        ),
        (
            "instances",
            if instances.is_empty() {
                "none".into()
            } else {
                instances.join(", ")
            },
        ),
        ("resources", resources),
        ("reporting", reporting(&doc["reporting"])),
    ] {
        t.row([name.to_string(), value]);
    }
    let mut checks = Table::new(&[
        "INSTANCE ID",
        "STATE",
        "SYSTEM CHECK",
        "INSTANCE CHECK",
        "FAILED CHECKS",
        "IMPAIRED SINCE",
        "STATE REASON",
    ]);
    for s in items(doc, "instance_statuses") {
        let (system, instance) = (&s["system_status"], &s["instance_status"]);
        let since = [system, instance]
            .iter()
            .map(|c| text(&c["impaired_since"]))
            .find(|t| !t.is_empty())
            .unwrap_or_default();
        checks.row([
            field(s, "instance_id"),
            text(&s["instance_state"]["name"]),
            text(&system["status"]),
            text(&instance["status"]),
            text(&system["failed_checks"]),
            since,
            field(s, "state_reason"),
        ]);
    }
    format!("{}\n{}", t.render(), checks.render())
}

/// Health's `reporting`: off, or where reports go and how that goes.
fn reporting(r: &Value) -> String {
    if r.is_null() {
        return "off".into();
    }
    let mut out = format!(
        "{}, last success {}, backlog {}, dropped {}",
        field(r, "url"),
        r["last_success_at"].as_str().unwrap_or("never"),
        text(&r["backlog"]),
        text(&r["dropped"]),
    );
    if let Some(e) = r["last_error"].as_str() {
        out.push_str(", last error: ");
        out.push_str(e);
    }
    out
}

/// Seconds as `2d 3h 4m 5s`, the larger units only when not zero.
fn duration(secs: u64) -> String {
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3600, "h"),
        (secs % 3600 / 60, "m"),
    ];
    let mut out: Vec<String> = parts
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    out.push(format!("{}s", secs % 60));
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn health_summary_and_checks() {
        let doc = json!({"agent_version": "0.1.0", "uptime_seconds": 93_784,
            "host": {"vcpus": 8, "memory_mib": 16000}, "allocated": {"vcpus": 2, "memory_mib": 1024},
            "instances": {"running": 1, "stopped": 2, "pending": 0},
            "resources": {"images": 1, "key_pairs": 0},
            "reporting": null,
            "instance_statuses": [{"instance_id": "i-1", "instance_state": {"name": "running"},
                "state_reason": null,
                "system_status": {"status": "impaired", "failed_checks": ["vmm-api", "tap-on-bridge"],
                                  "impaired_since": "2025-01-01T00:00:00Z"},
                "instance_status": {"status": "insufficient-data"}}]});
        let out = health(&doc);
        assert!(out.contains("uptime         1d 2h 3m 4s\n"), "{out}");
        assert!(
            out.contains("instances      1 running, 2 stopped\n"),
            "{out}"
        );
        assert!(
            out.contains("resources      1 images, 0 key pairs\n"),
            "{out}"
        );
        assert!(out.contains("reporting      off\n"), "{out}");
        assert!(out.contains("vcpus          2 allocated of 8\n"), "{out}");
        assert!(
            out.contains("i-1          running  impaired      insufficient-data  vmm-api,tap-on-bridge  2025-01-01T00:00:00Z  -"),
            "{out}"
        );
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3600), "1h 0m 0s");
    }
}
