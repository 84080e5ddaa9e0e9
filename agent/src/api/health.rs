//! `GET /v1/health` (the host's view, open to monitors) and `GET
//! /metrics` (Prometheus text).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::{lock, App};
use crate::error::ApiError;
use crate::store::Table;

/// The host's capacity: online CPUs and memory in MiB.
fn capacity() -> (usize, u64) {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    (cpus, mem_kib / 1024)
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

pub async fn health(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let (cpus, memory_mib) = capacity();
    let resources: serde_json::Map<String, Value> = counts(&app)
        .await?
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    Ok(Json(json!({
        "agent_version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "host": {"vcpus": cpus, "memory_mib": memory_mib},
        "resources": resources,
    })))
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
    app.metrics
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .write(&mut out);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}
