//! `stratus-agent`, the per-host agent: its API, its store and what it
//! changes on the host. The binary (`main.rs`) only parses its settings
//! and runs [`serve`].
//!
//! It keeps images, subnets (with their bridges), key pairs, security
//! groups and instances, each instance a `stratus-vmm` process it starts,
//! watches and finds again after its own restart; with a report URL it
//! pushes its health upward ([`report`]).

pub mod api;
pub mod config;
pub mod error;
pub mod host;
pub mod http_url;
pub mod identity;
pub mod launcher;
pub mod metrics;
pub mod model;
pub mod reboots;
pub mod report;
pub mod store;
pub mod supervisor;
pub mod vmm_client;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::api::App;
use crate::config::Config;
use crate::store::Store;

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("token file {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("token file {0} is empty")]
    EmptyToken(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("reconciling subnet bridges: {0}")]
    Bridges(#[from] host::bridge::BridgeError),
    #[error("serving: {0}")]
    Serve(std::io::Error),
    #[error("instance identity: {0}")]
    Identity(#[from] identity::IdentityError),
}

impl AgentError {
    /// The process's exit status for this error: 2, as for a bad flag or
    /// config file, when the host identity's files are unusable (an
    /// operator has to look at them: the agent will not replace them), 1
    /// for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Identity(_) => 2,
            _ => 1,
        }
    }
}

/// Opens the store, reconciles the host with it, and serves the API on
/// `config.listen` until SIGTERM or SIGINT.
pub async fn serve(config: Config) -> Result<(), AgentError> {
    std::fs::create_dir_all(&config.state_dir).map_err(|source| AgentError::StateDir {
        path: config.state_dir.display().to_string(),
        source,
    })?;
    let token = config::load_or_create_token(&config.token_file)?;
    // Before anything is served: every instance's metadata is signed.
    let identity = Arc::new(identity::HostIdentity::load_or_create(&config.state_dir)?);
    let mut store = Store::open(&config.state_dir)?;
    api::reconcile(&mut store)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
    let instances: Vec<model::instance::Instance> =
        store.read(|tx| tx.list(store::Table::Instances))?;
    // Watching from before the adoption below, so that what it settles
    // is reported too.
    let state_changes = store.state_changes();
    let reporting = config
        .report
        .as_ref()
        .map(|r| Arc::new(report::Reporting::new(r)));
    let reader = store::Reader::open(&config.state_dir)?;
    let app = Arc::new(App {
        store: Arc::new(Mutex::new(store)),
        reader: Arc::new(Mutex::new(reader)),
        metrics: Mutex::new(metrics::ApiMetrics::default()),
        token: Some(token),
        started: Instant::now(),
        supervisor: supervisor::Supervisor {
            vmm: config.vmm.clone(),
            instances_dir: config.state_dir.join("instances"),
            identity,
            reboots: Default::default(),
        },
        adopted: std::sync::atomic::AtomicU64::new(0),
        rule_pushes: std::sync::atomic::AtomicU64::new(0),
        impaired_since: Mutex::new(Default::default()),
        reporting,
        launcher: launcher::Launcher::new(config.max_booting),
    });
    let pusher = config
        .report
        .as_ref()
        .and_then(|settings| report::spawn(&app, settings, state_changes));
    let booting = supervisor::adopt(&app, instances);
    // After the adoption: a queued launch whose VMM a crash left behind
    // unrecorded has been found and ended first.
    launcher::spawn(Arc::clone(&app), booting);
    tracing::info!(listen = %config.listen, state_dir = %config.state_dir.display(), "stratus-agent ready");
    // Ready: the store is open, the VMMs are watched again, the listener
    // is bound.
    host::systemd::notify("READY=1\nSTATUS=serving the API");
    if let Some(every) = host::systemd::watchdog_interval() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                host::systemd::notify("WATCHDOG=1");
            }
        });
    }
    // The line a supervisor or a test waits for.
    println!(
        "stratus-agent: listening on {}",
        listener
            .local_addr()
            .map_or(config.listen.clone(), |a| a.to_string())
    );
    let served = axum::serve(listener, api::router(app))
        .with_graceful_shutdown(shutdown_signal())
        .await;
    // Undelivered reports are not waited for: a receiver that is down
    // must not hold up a restart (the sequence shows the gap).
    if let Some(pusher) = pusher {
        pusher.stop();
    }
    served.map_err(AgentError::Serve)?;
    host::systemd::notify("STOPPING=1");
    tracing::info!("stratus-agent stopped; its instances keep running");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the agent can still be killed; it just
        // does not drain connections first.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
