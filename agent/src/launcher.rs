//! Launches: starting the VMMs of `pending` instances that have none yet.
//!
//! A run or start call only records its instances as `pending` (durably)
//! and wakes the launcher; the call answers at once, as EC2's
//! `RunInstances` does, and the VMMs start here in the background. The
//! same queue is what a restarted agent finds: a `pending` instance
//! without a VMM is a launch or start that was accepted and not yet
//! carried out, so it is carried out (not rolled back).
//!
//! Boots are admitted a few at a time: at most [`Launcher::max_booting`]
//! guests boot at once, the rest wait `pending` in launch order. A boot
//! is CPU-bound; running more of them than there are CPUs stretches every
//! one of them (each guest spends longer in its timeouts and polling
//! loops) and makes the whole batch slower, not faster. A boot holds its
//! slot until the guest has booted, its VMM has exited, or
//! [`BOOT_SLOT`] has passed (a guest that never signals must not hold
//! up the queue; it stays `pending`, and its instance check says why).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::sync::Notify;

use crate::api::App;
use crate::error::ApiError;
use crate::model::instance::{Event, Instance, State};
use crate::store::Table;
use crate::supervisor::{self, launch_inputs, put, release, start_vmm, watch};

/// Longest a boot holds its slot.
pub const BOOT_SLOT: Duration = Duration::from_secs(300);

/// The launcher's settings and its wake-up call.
#[derive(Debug)]
pub struct Launcher {
    /// Most guests booting at once.
    pub max_booting: usize,
    wake: Notify,
}

impl Launcher {
    pub fn new(max_booting: usize) -> Self {
        Self {
            max_booting: max_booting.max(1),
            wake: Notify::new(),
        }
    }

    /// Something changed that may let a launch go ahead: an instance was
    /// queued, a guest booted, a VMM exited. A wake while the launcher is
    /// busy is kept, not lost.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// The CPUs this agent may run on (its affinity and cgroup limit, which
/// its VMMs inherit): the default for [`Launcher::max_booting`].
pub fn default_max_booting() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs the launcher until the agent exits. `booting` are the instances
/// whose guests were booting when the agent started (adopted VMMs of
/// `pending` instances): they hold slots as if just started.
pub fn spawn(app: Arc<App>, booting: Vec<String>) {
    tokio::spawn(async move {
        let now = Instant::now();
        let mut slots: HashMap<String, Instant> = booting.into_iter().map(|id| (id, now)).collect();
        loop {
            // A store error must not leave the queue waiting for a wake
            // that may never come: try again soon.
            let retry = match launch_what_fits(&app, &mut slots).await {
                Ok(()) => None,
                Err(e) => {
                    tracing::error!(error = %e.message, "launching queued instances");
                    Some(Duration::from_secs(1))
                }
            };
            let next_expiry = slots
                .values()
                .map(|since| BOOT_SLOT.saturating_sub(since.elapsed()))
                .chain(retry)
                .min();
            match next_expiry {
                Some(wait) => {
                    tokio::select! {
                        () = app.launcher.wake.notified() => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                None => app.launcher.wake.notified().await,
            }
        }
    });
}

/// Frees the slots whose boots ended, then starts queued instances,
/// oldest first, while slots are free.
async fn launch_what_fits(
    app: &Arc<App>,
    slots: &mut HashMap<String, Instant>,
) -> Result<(), ApiError> {
    let instances: Vec<Instance> = app.read(|tx| Ok(tx.list(Table::Instances)?)).await?;
    let booting = |i: &Instance| i.state == State::Pending && i.process.is_some();
    slots.retain(|id, since| {
        since.elapsed() < BOOT_SLOT && instances.iter().any(|i| &i.instance_id == id && booting(i))
    });
    // Queued: pending without a VMM, unless it is a guest in a reboot
    // loop waiting for its restart (which is not the launcher's to make).
    let mut queue: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.state == State::Pending && i.process.is_none() && i.restart_at.is_none())
        .collect();
    queue.sort_by(|a, b| (&a.launch_time, &a.instance_id).cmp(&(&b.launch_time, &b.instance_id)));
    let mut failed = false;
    for inst in queue {
        if slots.len() >= app.launcher.max_booting {
            break;
        }
        match launch(app, inst.instance_id.clone()).await? {
            Launched::Started => {
                slots.insert(inst.instance_id.clone(), Instant::now());
            }
            Launched::Failed => failed = true,
            Launched::NotQueued => {}
        }
    }
    if failed {
        // A failed launch released its address: its groups lost a member.
        supervisor::push_rules(app).await;
    }
    Ok(())
}

/// What became of one queued instance.
enum Launched {
    Started,
    /// Its VMM could not start; the instance records why.
    Failed,
    /// It was no longer waiting (terminated meanwhile, or started).
    NotQueued,
}

/// Starts instance `id`'s VMM if it is still queued, recording the
/// process (or the failure) in the same transaction, so that no VMM runs
/// that the store does not name. A first launch that fails is
/// terminated (its address released), as EC2 does; a start of a stopped
/// instance that fails leaves it stopped, its disk kept.
async fn launch(app: &Arc<App>, id: String) -> Result<Launched, ApiError> {
    let sup = app.supervisor.clone();
    let app2 = Arc::clone(app);
    app.write(move |tx| {
        let Some(mut inst) = tx.get::<Instance>(Table::Instances, &id)? else {
            return Ok(Launched::NotQueued);
        };
        if inst.state != State::Pending || inst.process.is_some() {
            return Ok(Launched::NotQueued);
        }
        let first = inst.is_first_launch();
        let started = launch_inputs(tx, &inst).and_then(|inputs| {
            start_vmm(&sup, &inst, &inputs)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e))
        });
        match started {
            Ok(pid) => {
                inst.process = Some(pid);
                inst.generation += 1;
                put(tx, &inst)?;
                tracing::info!(instance_id = %id, pid = pid.pid, "VMM started");
                watch(app2, id, pid);
                Ok(Launched::Started)
            }
            Err(e) => {
                let reason = format!("Server.InternalError: {}", e.message);
                tracing::error!(instance_id = %id, %reason, "the VMM did not start");
                if first {
                    release(&sup, &inst);
                    inst.private_ip = None;
                    inst.state = State::Terminated;
                    inst.state_reason = Some(reason);
                    inst.generation += 1;
                } else {
                    inst.apply(Event::Failed, Some(reason));
                }
                put(tx, &inst)?;
                Ok(Launched::Failed)
            }
        }
    })
    .await
}
