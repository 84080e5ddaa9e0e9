//! `GET /v1/health` (the host's view, open to monitors) and `GET
//! /metrics` (Prometheus text).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use std::time::Duration;

use super::{lock, now_rfc3339, App};
use crate::error::ApiError;
use crate::host::{process, tap};
use crate::model::instance::{Instance, State as State_};
use crate::model::subnet::Subnet;
use crate::store::Table;

/// The host's capacity: online CPUs and memory in MiB.
fn capacity() -> (usize, u64) {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    (cpus, crate::host::memory_total_mib())
}

/// How many rows each table holds.
async fn counts(app: &Arc<App>) -> Result<[(&'static str, usize); 4], ApiError> {
    app.read(|tx| {
        Ok([
            ("images", tx.list::<Value>(Table::Images)?.len()),
            ("subnets", tx.list::<Value>(Table::Subnets)?.len()),
            ("key_pairs", tx.list::<Value>(Table::KeyPairs)?.len()),
            (
                "security_groups",
                tx.list::<Value>(Table::SecurityGroups)?.len(),
            ),
        ])
    })
    .await
}

/// EC2's system status check of one instance: its VMM process lives,
/// its API answers, its tap is on its subnet's bridge.
async fn system_check(app: &Arc<App>, inst: &Instance, bridge: &str) -> (bool, Vec<&'static str>) {
    let mut failed = Vec::new();
    let alive = inst.process.and_then(process::open).is_some();
    if !alive {
        failed.push("vmm-process");
    }
    let socket = app.supervisor.api_socket(&inst.instance_id);
    let api = crate::vmm_client::call(&socket, "GET", "/", None, Duration::from_secs(2)).await;
    if !matches!(api, Ok((200, _))) {
        failed.push("vmm-api");
    }
    let (tap, bridge) = (inst.tap.clone(), bridge.to_string());
    let on_bridge = tokio::task::spawn_blocking(move || tap::on_bridge(&tap, &bridge))
        .await
        .unwrap_or(false);
    if !on_bridge {
        failed.push("tap-on-bridge");
    }
    (failed.is_empty(), failed)
}

/// How long a guest that has never answered its NIC's ARP probes counts
/// as still starting ("initializing") rather than failed: a slow first
/// boot (a nested one under emulation, cloud-init's first run) takes
/// minutes before its interface is up.
const FIRST_ANSWER_GRACE_SECS: f64 = 600.0;

/// What one instance check found.
struct InstanceCheck {
    /// EC2's status: `ok`, `initializing`, `impaired`, `insufficient-data`.
    status: &'static str,
    /// The `reachability` detail: `passed`, `initializing`, `failed`,
    /// `insufficient-data`.
    detail: &'static str,
}

/// EC2's instance status check of one instance: does the guest answer the
/// ARP probes its VMM's datapath sends it (the NIC's `guest_reachable`
/// gauge)? A VMM that does not answer says nothing about the guest:
/// `insufficient-data` (the system check reports the VMM).
async fn instance_check(app: &Arc<App>, inst: &Instance) -> InstanceCheck {
    const NO_DATA: InstanceCheck = InstanceCheck {
        status: "insufficient-data",
        detail: "insufficient-data",
    };
    let socket = app.supervisor.api_socket(&inst.instance_id);
    let Ok((200, body)) =
        crate::vmm_client::call(&socket, "GET", "/metrics", None, Duration::from_secs(2)).await
    else {
        return NO_DATA;
    };
    let Ok(metrics) = serde_json::from_str::<Value>(&body) else {
        return NO_DATA;
    };
    let Some(nic) = metrics["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["kind"] == "net"))
    else {
        return NO_DATA;
    };
    let reachable = nic["gauges"]["guest_reachable"].as_u64();
    let replies = nic["counters"]["arp_probe_replies"].as_u64();
    let uptime = metrics["uptime_seconds"].as_f64().unwrap_or(0.0);
    match (reachable, replies) {
        (Some(1), _) => InstanceCheck {
            status: "ok",
            detail: "passed",
        },
        (Some(_), Some(0)) if uptime < FIRST_ANSWER_GRACE_SECS => InstanceCheck {
            status: "initializing",
            detail: "initializing",
        },
        (Some(_), Some(_)) => InstanceCheck {
            status: "impaired",
            detail: "failed",
        },
        _ => NO_DATA,
    }
}

/// When `key` became impaired (now, if it just did); forgets it when not.
fn impaired_since(app: &App, key: String, impaired: bool) -> Option<String> {
    let mut map = app
        .impaired_since
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if impaired {
        Some(map.entry(key).or_insert_with(now_rfc3339).clone())
    } else {
        map.remove(&key);
        None
    }
}

pub async fn health(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    document(&app).await.map(Json)
}

/// The health document: what `GET /v1/health` answers and what the
/// reporter pushes (one builder, so the two cannot drift apart).
pub async fn document(app: &Arc<App>) -> Result<Value, ApiError> {
    let app = Arc::clone(app);
    let (cpus, memory_mib) = capacity();
    let resources: serde_json::Map<String, Value> = counts(&app)
        .await?
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let (instances, subnets): (Vec<Instance>, Vec<Subnet>) = app
        .read(|tx| Ok((tx.list(Table::Instances)?, tx.list(Table::Subnets)?)))
        .await?;
    let by_state: serde_json::Map<String, Value> = State_::ALL
        .iter()
        .map(|s| {
            (
                s.name().to_string(),
                json!(instances.iter().filter(|i| i.state == *s).count()),
            )
        })
        .collect();
    let holding = |i: &&Instance| {
        matches!(
            i.state,
            State_::Pending | State_::Running | State_::Stopping | State_::ShuttingDown
        )
    };
    let allocated_vcpus: u32 = instances.iter().filter(holding).map(|i| i.vcpus).sum();
    let allocated_mib: u32 = instances.iter().filter(holding).map(|i| i.memory_mib).sum();
    // EC2's DescribeInstanceStatus with IncludeAllInstances: every
    // instance but the terminated, with the system and instance checks.
    let mut statuses = Vec::new();
    for inst in instances.iter().filter(|i| i.state != State_::Terminated) {
        let live = matches!(inst.state, State_::Pending | State_::Running);
        let (system, failed, since) = if live {
            let bridge = subnets
                .iter()
                .find(|s| s.subnet_id == inst.subnet_id)
                .map_or(String::new(), |s| s.bridge.clone());
            let (ok, failed) = system_check(&app, inst, &bridge).await;
            let since = impaired_since(&app, inst.instance_id.clone(), !ok);
            let status = match (ok, inst.state) {
                (true, _) => "ok",
                (false, State_::Pending) => "initializing",
                (false, _) => "impaired",
            };
            (status, failed, since)
        } else if inst
            .state_reason
            .as_deref()
            .is_some_and(|r| r.starts_with("Server."))
        {
            // Its VMM died under it: the host failed it, not the user.
            let since = app
                .impaired_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(inst.instance_id.clone())
                .or_insert_with(now_rfc3339)
                .clone();
            ("impaired", vec!["vmm-process"], Some(since))
        } else {
            ("not-applicable", Vec::new(), None)
        };
        let instance_status = if live {
            let check = instance_check(&app, inst).await;
            let key = format!("{}/instance", inst.instance_id);
            let since = impaired_since(&app, key, check.status == "impaired");
            json!({
                "status": check.status,
                "details": [{"name": "reachability", "status": check.detail}],
                "impaired_since": since,
            })
        } else {
            json!({
                "status": "not-applicable",
                "details": [{"name": "reachability", "status": "not-applicable"}],
                "impaired_since": null,
            })
        };
        let reachability = match system {
            "ok" => "passed",
            "not-applicable" => "not-applicable",
            _ => "failed",
        };
        statuses.push(json!({
            "instance_id": inst.instance_id,
            "instance_state": {"code": inst.state.code(), "name": inst.state.name()},
            "state_reason": inst.state_reason,
            "system_status": {
                "status": system,
                "details": [{"name": "reachability", "status": reachability}],
                "failed_checks": failed,
                "impaired_since": since,
            },
            "instance_status": instance_status,
        }));
    }
    Ok(json!({
        "agent_version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "host": {
            "vcpus": cpus,
            "memory_mib": memory_mib,
            "instance_memory_mib": crate::host::instance_memory_mib(),
            "max_booting": app.launcher.max_booting,
        },
        "allocated": {"vcpus": allocated_vcpus, "memory_mib": allocated_mib},
        "instances": by_state,
        "instance_statuses": statuses,
        "resources": resources,
        "reporting": app.reporting.as_deref().map(crate::report::Reporting::to_json),
    }))
}

pub async fn metrics(State(app): State<Arc<App>>) -> Result<impl IntoResponse, ApiError> {
    let mut out = String::new();
    out.push_str("# HELP stratus_agent_uptime_seconds Seconds since the agent started.\n");
    out.push_str("# TYPE stratus_agent_uptime_seconds gauge\n");
    let _ = writeln!(
        out,
        "stratus_agent_uptime_seconds {}",
        app.started.elapsed().as_secs_f64()
    );
    out.push_str("# HELP stratus_agent_resources Resources in the agent's store, by kind.\n");
    out.push_str("# TYPE stratus_agent_resources gauge\n");
    for (kind, n) in counts(&app).await? {
        let _ = writeln!(out, "stratus_agent_resources{{kind=\"{kind}\"}} {n}");
    }
    out.push_str(
        "# HELP stratus_agent_vmms_adopted_total VMMs found running at start and watched again.\n",
    );
    out.push_str("# TYPE stratus_agent_vmms_adopted_total counter\n");
    let adopted = app.adopted.load(std::sync::atomic::Ordering::Relaxed);
    let _ = writeln!(out, "stratus_agent_vmms_adopted_total {adopted}");
    out.push_str(
        "# HELP stratus_agent_rule_pushes_total Security-group documents handed to running VMMs.\n",
    );
    out.push_str("# TYPE stratus_agent_rule_pushes_total counter\n");
    let pushes = app.rule_pushes.load(std::sync::atomic::Ordering::Relaxed);
    let _ = writeln!(out, "stratus_agent_rule_pushes_total {pushes}");
    out.push_str("# HELP stratus_agent_instances Instances by state.\n");
    out.push_str("# TYPE stratus_agent_instances gauge\n");
    let instances: Vec<crate::model::instance::Instance> =
        app.read(|tx| Ok(tx.list(Table::Instances)?)).await?;
    for st in crate::model::instance::State::ALL {
        let n = instances.iter().filter(|i| i.state == st).count();
        let _ = writeln!(
            out,
            "stratus_agent_instances{{state=\"{}\"}} {n}",
            st.name()
        );
    }
    out.push_str(
        "# HELP stratus_agent_store_commit_duration_seconds State database commit durations.\n",
    );
    out.push_str("# TYPE stratus_agent_store_commit_duration_seconds histogram\n");
    let commits = lock(&app.store).commit_seconds.clone();
    commits.write(&mut out, "stratus_agent_store_commit_duration_seconds", "");
    crate::report::write_metrics(app.reporting.as_deref(), &mut out);
    app.metrics
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .write(&mut out);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}
