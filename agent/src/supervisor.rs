//! Running instances: a VMM process per instance, started, watched and
//! released here.
//!
//! Each instance has a directory in the state directory with its
//! overlay disk (made by the VMM on first launch from the AMI), its
//! security-group and metadata documents, its console and its VMM's log
//! and API socket. A watcher task per running VMM waits on its pidfd and
//! polls its API until the guest has booted; the exit decides the next
//! state (power-off: stopped; reboot: a new VMM on the same disk; a stop
//! or terminate the agent asked for: stopped or released; anything
//! else: stopped with the reason). Every change goes through the store,
//! generation bumped, before it is acted on or reported.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use stratus_devices::net::metadata::{MetadataDocument, NetworkInterface, PublicKey};

use crate::api::App;
use crate::error::ApiError;
use crate::host::process::{self, Exit, ProcessId};
use crate::host::tap;
use crate::identity::HostIdentity;
use crate::model::cidr::Cidr;
use crate::model::image::Image;
use crate::model::instance::{Event, Instance, State};
use crate::model::key_pair::KeyPair;
use crate::model::nic_rules;
use crate::model::security_group::SecurityGroup;
use crate::model::subnet::Subnet;
use crate::store::{Table, Tx};

/// The region and zone this host reports (`placement/…` in metadata).
pub const REGION: &str = "stratus-1";
pub const AVAILABILITY_ZONE: &str = "stratus-1a";
/// The account id of the identity document.
pub const ACCOUNT_ID: &str = "000000000000";
/// How long a stop or terminate waits for the guest to power off after
/// the ACPI power button before the VMM is killed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// Where the VMM binary is, where instances live, and what signs their
/// identity documents.
#[derive(Debug, Clone)]
pub struct Supervisor {
    pub vmm: PathBuf,
    pub instances_dir: PathBuf,
    pub identity: Arc<HostIdentity>,
    /// Guest reboots that come too fast: the next VMM waits.
    pub reboots: Arc<crate::reboots::RebootBackoff>,
}

impl Supervisor {
    pub fn dir(&self, id: &str) -> PathBuf {
        self.instances_dir.join(id)
    }

    pub fn api_socket(&self, id: &str) -> PathBuf {
        self.dir(id).join("api.sock")
    }

    pub fn console_log(&self, id: &str) -> PathBuf {
        self.dir(id).join("console.log")
    }

    /// Where the VMM writes how it ended (`--exit-status-file`): the only
    /// way to know it for a VMM adopted after the agent's restart, which
    /// init reaps instead of the agent.
    pub fn exit_status_file(&self, id: &str) -> PathBuf {
        self.dir(id).join("exit-status.json")
    }
}

/// The exit code an adopted VMM recorded, if it did (a VMM killed by a
/// signal records nothing).
fn recorded_exit(sup: &Supervisor, id: &str) -> Exit {
    let code = std::fs::read_to_string(sup.exit_status_file(id))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v["exit_code"].as_i64())
        .and_then(|c| i32::try_from(c).ok());
    code.map_or(Exit::Unknown, Exit::Code)
}

/// Everything a launch reads from the store, read in one transaction.
#[derive(Debug)]
pub struct LaunchInputs {
    image: Image,
    subnet: Subnet,
    groups: Vec<SecurityGroup>,
    members: BTreeMap<String, Vec<Ipv4Addr>>,
    key: Option<KeyPair>,
}

/// The private addresses of the live instances in each group.
pub fn group_members(tx: &Tx<'_>) -> Result<BTreeMap<String, Vec<Ipv4Addr>>, ApiError> {
    let mut members: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
    let groups: Vec<SecurityGroup> = tx.list(Table::SecurityGroups)?;
    for g in &groups {
        members.entry(g.group_id.clone()).or_default();
    }
    let instances: Vec<Instance> = tx.list(Table::Instances)?;
    for i in instances.iter().filter(|i| i.state != State::Terminated) {
        let Some(ip) = i.private_ip.as_deref().and_then(|ip| ip.parse().ok()) else {
            continue;
        };
        for g in &i.security_group_ids {
            members.entry(g.clone()).or_default().push(ip);
        }
    }
    Ok(members)
}

/// The instances that are not terminated.
pub fn live_instances(tx: &Tx<'_>) -> Result<impl Iterator<Item = Instance>, ApiError> {
    let all: Vec<Instance> = tx.list(Table::Instances)?;
    Ok(all.into_iter().filter(|i| i.state != State::Terminated))
}

/// Addresses leased in `subnet_id`.
pub fn leased(tx: &Tx<'_>, subnet_id: &str) -> Result<BTreeSet<Ipv4Addr>, ApiError> {
    let instances: Vec<Instance> = tx.list(Table::Instances)?;
    Ok(instances
        .iter()
        .filter(|i| i.subnet_id == subnet_id)
        .filter_map(|i| i.private_ip.as_deref()?.parse().ok())
        .collect())
}

pub fn launch_inputs(tx: &Tx<'_>, inst: &Instance) -> Result<LaunchInputs, ApiError> {
    let missing = |what: &str, id: &str| {
        ApiError::conflict(
            "IncorrectState",
            format!("the instance's {what} {id} is gone"),
        )
    };
    let image: Image = tx
        .get(Table::Images, &inst.image_id)?
        .ok_or_else(|| missing("image", &inst.image_id))?;
    let subnet: Subnet = tx
        .get(Table::Subnets, &inst.subnet_id)?
        .ok_or_else(|| missing("subnet", &inst.subnet_id))?;
    let mut groups = Vec::new();
    for g in &inst.security_group_ids {
        groups.push(
            tx.get(Table::SecurityGroups, g)?
                .ok_or_else(|| missing("security group", g))?,
        );
    }
    let key = match &inst.key_name {
        Some(name) => match tx.id_by(Table::KeyPairs, "key_name", name)? {
            Some(id) => tx.get(Table::KeyPairs, &id)?,
            None => None,
        },
        None => None,
    };
    Ok(LaunchInputs {
        image,
        subnet,
        groups,
        members: group_members(tx)?,
        key,
    })
}

/// EC2's private DNS name for an address.
fn private_hostname(ip: &str) -> String {
    format!("ip-{}.{REGION}.compute.internal", ip.replace('.', "-"))
}

/// What the instance's metadata service serves, unsigned.
fn metadata_document(inst: &Instance, inputs: &LaunchInputs) -> Result<MetadataDocument, String> {
    let ip: Ipv4Addr = inst
        .private_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .ok_or("the instance has no address")?;
    let mac = inst.mac.parse().map_err(|e| format!("mac: {e:?}"))?;
    let hostname = private_hostname(&ip.to_string());
    let doc = MetadataDocument {
        instance_id: inst.instance_id.clone(),
        ami_id: inst.image_id.clone(),
        instance_type: inst.instance_type.clone(),
        account_id: ACCOUNT_ID.into(),
        architecture: "x86_64".into(),
        region: REGION.into(),
        availability_zone: AVAILABILITY_ZONE.into(),
        local_ipv4: ip,
        local_hostname: hostname.clone(),
        hostname,
        mac,
        pending_time: inst.launch_time.clone(),
        security_groups: inputs.groups.iter().map(|g| g.group_name.clone()).collect(),
        public_keys: inputs
            .key
            .iter()
            .map(|k| PublicKey {
                name: k.key_name.clone(),
                openssh_key: k.public_key.clone(),
            })
            .collect(),
        interfaces: vec![NetworkInterface {
            mac,
            device_number: 0,
            network_card: 0,
            interface_id: format!("eni-{}", inst.instance_id.trim_start_matches("i-")),
            local_ipv4s: vec![ip],
            subnet_id: inst.subnet_id.clone(),
            subnet_ipv4_cidr_block: inputs.subnet.cidr_block.clone(),
            vpc_id: "vpc-00000000".into(),
            security_group_ids: inst.security_group_ids.clone(),
        }],
        user_data: inst.user_data.clone(),
        // Signed by `metadata_file`, over the fields above.
        identity: Default::default(),
    };
    Ok(doc)
}

/// The VMM's `metadata=` file: the document, its identity document
/// signed with the host's key, and the options. The same JSON is the body
/// of the VMM's `PUT /metadata`. No key path is given to the VMM: the key
/// stays with the agent (see `identity`), so the VMM serves the
/// signatures as they are.
fn metadata_file(
    identity: &HostIdentity,
    inst: &Instance,
    inputs: &LaunchInputs,
) -> Result<String, String> {
    let mut doc = metadata_document(inst, inputs)?;
    identity.sign(&mut doc).map_err(|e| e.to_string())?;
    serde_json::to_string(&serde_json::json!({"document": doc, "options": inst.metadata_options}))
        .map_err(|e| e.to_string())
}

/// Writes the instance's documents, makes its tap and starts its VMM.
pub fn start_vmm(
    sup: &Supervisor,
    inst: &Instance,
    inputs: &LaunchInputs,
) -> Result<ProcessId, String> {
    let dir = sup.dir(&inst.instance_id);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let sg = nic_rules::document(&inputs.groups, &inputs.members)?;
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    write(
        "sg.json",
        serde_json::to_string(&sg).map_err(|e| e.to_string())?,
    )?;
    write("metadata.json", metadata_file(&sup.identity, inst, inputs)?)?;
    tap::create(&inst.tap, &inputs.subnet.bridge).map_err(|e| e.to_string())?;
    let cidr: Cidr = inputs
        .subnet
        .cidr_block
        .parse()
        .map_err(|e| format!("{e}"))?;
    let ip = inst.private_ip.as_deref().unwrap_or_default();
    let socket = sup.api_socket(&inst.instance_id);
    // A socket left by a VMM that died would make the new one refuse to
    // start; an exit status left by one would be taken for the new one's.
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(sup.exit_status_file(&inst.instance_id));
    let mut cmd = Command::new(&sup.vmm);
    cmd.arg("--ami")
        .arg(&inputs.image.manifest_path)
        .arg("--instance-disk")
        .arg(dir.join("disk.qcow2"))
        .args([
            "--vcpus",
            &inst.vcpus.to_string(),
            "--memory",
            &inst.memory_mib.to_string(),
        ])
        .arg("--serial")
        .arg(format!(
            "file:{}",
            sup.console_log(&inst.instance_id).display()
        ))
        .arg("--api-sock")
        .arg(&socket)
        .arg("--exit-status-file")
        .arg(sup.exit_status_file(&inst.instance_id))
        .args([
            "--id",
            &inst.instance_id,
            "--instance-type",
            &inst.instance_type,
        ])
        .arg("--net")
        .arg(format!(
            "tap={},mac={},ip={ip}/{},gw={},hostname={},sg={},metadata={}",
            inst.tap,
            inst.mac,
            cidr.len,
            inputs.subnet.gateway,
            private_hostname(ip).split('.').next().unwrap_or_default(),
            dir.join("sg.json").display(),
            dir.join("metadata.json").display()
        ));
    process::spawn(cmd, &dir.join("vmm.log"))
        .map_err(|e| format!("cannot start {}: {e}", sup.vmm.display()))
}

/// Removes what a terminated instance held on the host.
pub fn release(sup: &Supervisor, inst: &Instance) {
    if let Err(e) = tap::delete(&inst.tap) {
        tracing::warn!(instance_id = %inst.instance_id, error = %e, "removing the tap");
    }
    let dir = sup.dir(&inst.instance_id);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(instance_id = %inst.instance_id, error = %e, "removing the instance directory");
        }
    }
}

/// Whether the VMM's guest has booted (its boot-complete signal).
async fn booted(socket: &Path) -> bool {
    match crate::vmm_client::call(socket, "GET", "/metrics", None, Duration::from_secs(5)).await {
        Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
            .is_ok_and(|v| v["boot_time_seconds"].is_number()),
        _ => false,
    }
}

/// Watches the VMM `pid` of instance `id` until it exits, marking the
/// instance running once its guest has booted.
pub fn watch(app: Arc<App>, id: String, pid: ProcessId) {
    tokio::spawn(async move {
        let Some(pidfd) = process::open(pid) else {
            exited(&app, &id, pid, Exit::Unknown).await;
            return;
        };
        let exit = process::exited(pidfd);
        tokio::pin!(exit);
        let socket = app.supervisor.api_socket(&id);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let status = loop {
            tokio::select! {
                status = &mut exit => break status,
                _ = tick.tick() => {
                    if booted(&socket).await {
                        mark(&app, &id, pid, Event::Booted, None).await;
                        break exit.await;
                    }
                }
            }
        };
        exited(&app, &id, pid, status).await;
    });
}

/// Instance `id`, if its VMM is still `pid` (else a newer VMM, or none,
/// has taken over and this news is stale).
fn with_vmm(tx: &Tx<'_>, id: &str, pid: ProcessId) -> Result<Option<Instance>, ApiError> {
    Ok(tx
        .get::<Instance>(Table::Instances, id)?
        .filter(|inst| inst.process == Some(pid)))
}

/// Applies `event` to instance `id` if its VMM is still `pid`.
async fn mark(app: &Arc<App>, id: &str, pid: ProcessId, event: Event, reason: Option<String>) {
    let id = id.to_string();
    let r = app
        .write(move |tx| {
            let Some(mut inst) = with_vmm(tx, &id, pid)? else {
                return Ok(());
            };
            if let Some(to) = inst.apply(event, reason) {
                tracing::info!(instance_id = %id, state = to.name(), "instance state");
                put(tx, &inst)?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e.message, "recording an instance state");
    }
    // A booted guest frees its boot slot.
    app.launcher.wake();
}

/// Writes instance `inst`: the one place instances are written, so the
/// one place a change of state (a new instance included) is noted for
/// the store's state-change watchers (the reporter).
pub fn put(tx: &Tx<'_>, inst: &Instance) -> Result<(), ApiError> {
    /// The stored record's state alone (the rest is not parsed).
    #[derive(serde::Deserialize)]
    struct Stored {
        state: State,
    }
    let before: Option<Stored> = tx.get(Table::Instances, &inst.instance_id)?;
    if before.is_none_or(|b| b.state != inst.state) {
        tx.note_state_change();
    }
    Ok(tx.put(
        Table::Instances,
        &inst.instance_id,
        &[("client_token", inst.client_token.as_deref().unwrap_or(""))],
        inst,
    )?)
}

/// What to do after instance `id`'s VMM `pid` ended with `exit`.
async fn exited(app: &Arc<App>, id: &str, pid: ProcessId, exit: Exit) {
    let sup = app.supervisor.clone();
    let exit = match exit {
        Exit::Unknown => recorded_exit(&sup, id),
        known => known,
    };
    let id = id.to_string();
    let app2 = Arc::clone(app);
    let r = app
        .write(move |tx| {
            let Some(mut inst) = with_vmm(tx, &id, pid)? else {
                return Ok(());
            };
            inst.process = None;
            if exit != Exit::Code(3) {
                // Not a reboot: any reboot loop is over.
                sup.reboots.forget(&id);
            }
            let reason = match exit {
                Exit::Code(0) => {
                    "Client.InstanceInitiatedShutdown: Instance initiated shutdown".to_string()
                }
                Exit::Code(c) => format!("Server.InternalError: the VMM exited with status {c}"),
                Exit::Signal(s) => {
                    format!("Server.InternalError: the VMM was killed by signal {s}")
                }
                Exit::Unknown => {
                    "Server.InternalError: the VMM ended without an exit status (killed)".into()
                }
            };
            match inst.state {
                State::ShuttingDown => {
                    release(&sup, &inst);
                    inst.private_ip = None;
                    inst.apply(Event::Released, None);
                    // A member left its groups.
                    let app = Arc::clone(&app2);
                    tokio::spawn(async move { push_rules(&app).await });
                }
                State::Stopping => {
                    inst.apply(
                        Event::Halted,
                        Some("Client.UserInitiatedShutdown: User initiated shutdown".into()),
                    );
                }
                State::Pending | State::Running if exit == Exit::Code(3) => {
                    // The guest rebooted: a new VMM on the same disk, as
                    // EC2 keeps a rebooted instance running; at once,
                    // unless it is rebooting in a loop.
                    let restart = sup.reboots.rebooted(&id, std::time::Instant::now());
                    if restart.wait.is_zero() {
                        return start_again(tx, &app2, inst);
                    }
                    tracing::warn!(instance_id = %id, in_a_row = restart.in_a_row, wait_s = restart.wait.as_secs(), "the guest reboots in a loop; its next VMM waits");
                    inst.state_reason = Some(format!(
                        "Client.InstanceRebootLoop: the guest rebooted {} times in a row within {} s of a restart; its next VMM starts in {} s",
                        restart.in_a_row + 1,
                        crate::reboots::QUICK.as_secs(),
                        restart.wait.as_secs()
                    ));
                    inst.restart_at = Some(unix_now() + restart.wait.as_secs());
                    inst.generation += 1;
                    put(tx, &inst)?;
                    restart_later(Arc::clone(&app2), id.clone(), restart.wait);
                    return Ok(());
                }
                State::Pending | State::Running => {
                    let event = if exit == Exit::Code(0) {
                        Event::Halted
                    } else {
                        Event::Failed
                    };
                    inst.apply(event, Some(reason));
                }
                State::Stopped | State::Terminated => {}
            }
            tracing::info!(instance_id = %id, state = inst.state.name(), ?exit, "VMM exited");
            put(tx, &inst)
        })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e.message, "recording a VMM exit");
    }
    // An exited VMM frees its boot slot, if it held one.
    app.launcher.wake();
}

/// Seconds since the Unix epoch, by the wall clock (what a restart time
/// kept across agent restarts is measured in).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Starts instance `id`'s next VMM after `wait`: a guest rebooting in a
/// loop, waiting out its backoff. Nothing happens if the instance was
/// stopped, terminated or given a VMM meanwhile.
fn restart_later(app: Arc<App>, id: String, wait: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        let r = app
            .clone()
            .write(move |tx| {
                let Some(inst) = tx.get::<Instance>(Table::Instances, &id)? else {
                    return Ok(());
                };
                if inst.process.is_some()
                    || inst.restart_at.is_none()
                    || !matches!(inst.state, State::Pending | State::Running)
                {
                    return Ok(());
                }
                start_again(tx, &app, inst)
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e.message, "restarting after a reboot");
        }
    });
}

/// Starts a new VMM for `inst` on its disk after its guest rebooted,
/// recording it (or, if it cannot start, the failure: stopped).
fn start_again(tx: &Tx<'_>, app: &Arc<App>, mut inst: Instance) -> Result<(), ApiError> {
    let inputs = launch_inputs(tx, &inst)?;
    inst.restart_at = None;
    match start_vmm(&app.supervisor, &inst, &inputs) {
        Ok(new) => {
            inst.process = Some(new);
            inst.generation += 1;
            put(tx, &inst)?;
            watch(Arc::clone(app), inst.instance_id.clone(), new);
        }
        Err(e) => {
            inst.apply(
                Event::Failed,
                Some(format!("Server.InternalError: restart after reboot: {e}")),
            );
            put(tx, &inst)?;
        }
    }
    Ok(())
}

/// Asks the guest to power off (ACPI power button); kills the VMM if it
/// has not exited after [`SHUTDOWN_GRACE`].
pub fn shut_down(app: &Arc<App>, id: &str, pid: ProcessId) {
    let socket = app.supervisor.api_socket(id);
    tokio::spawn(async move {
        let body = Some(r#"{"action_type": "Shutdown"}"#.to_string());
        let _ = crate::vmm_client::call(&socket, "PUT", "/actions", body, Duration::from_secs(10))
            .await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        // A no-op if it exited (its pidfd no longer opens).
        process::signal(pid, libc::SIGKILL);
    });
}

/// Decodes base64 user data as EC2 does (16 KiB at most, decoded).
pub fn check_user_data(b64: &str) -> Result<(), String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "user_data is not base64".to_string())?;
    if bytes.len() > 16 * 1024 {
        return Err(format!(
            "user_data is {} bytes decoded; the limit is 16384",
            bytes.len()
        ));
    }
    Ok(())
}

/// On agent start: watch every VMM that still runs, and settle what
/// was half done while the agent was away. Returns the instances whose
/// guests are still booting, which hold the launcher's boot slots.
///
/// A `pending` instance without a VMM is a launch or start that was
/// accepted (the caller was answered) and not carried out: it stays
/// queued and the launcher carries it out. A VMM the agent had started
/// for it but not recorded when it died is killed first, or two VMMs
/// would share the instance's disk and tap.
pub fn adopt(app: &Arc<App>, instances: Vec<Instance>) -> Vec<String> {
    let mut booting = Vec::new();
    for inst in instances {
        match (inst.state, inst.process) {
            (State::Terminated | State::Stopped, None) => {}
            (state, Some(pid)) => {
                tracing::info!(instance_id = %inst.instance_id, pid = pid.pid, "re-adopting its VMM");
                app.adopted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if state == State::Pending {
                    booting.push(inst.instance_id.clone());
                }
                watch(Arc::clone(app), inst.instance_id.clone(), pid);
                // A stop or terminate the agent had asked for: its kill
                // timer went with the old agent, so ask again and arm a
                // new one (a guest that ignores the power button must
                // not stay `stopping` for ever).
                if matches!(state, State::Stopping | State::ShuttingDown) {
                    shut_down(app, &inst.instance_id, pid);
                }
            }
            // A guest rebooting in a loop, waiting for its next VMM: the
            // wait goes on where it was.
            (State::Pending | State::Running, None) if inst.restart_at.is_some() => {
                let due = inst.restart_at.unwrap_or(0);
                let wait = Duration::from_secs(due.saturating_sub(unix_now()));
                tracing::info!(instance_id = %inst.instance_id, wait_s = wait.as_secs(), "reboot-loop wait resumed");
                restart_later(Arc::clone(app), inst.instance_id.clone(), wait);
            }
            (State::Pending, None) => {
                let strays =
                    process::kill_strays(&app.supervisor.vmm, &["--id", &inst.instance_id]);
                if strays > 0 {
                    tracing::warn!(instance_id = %inst.instance_id, strays, "killed a VMM the agent had not recorded");
                }
                tracing::info!(instance_id = %inst.instance_id, "launch queued again");
            }
            // A stop or terminate whose VMM ended while the agent was
            // away: finish it.
            (_, None) => {
                let app = Arc::clone(app);
                let sup = app.supervisor.clone();
                tokio::spawn(async move {
                    let id = inst.instance_id.clone();
                    let r = app
                        .write(move |tx| {
                            let Some(mut inst) = tx.get::<Instance>(Table::Instances, &id)? else {
                                return Ok(());
                            };
                            match inst.state {
                                State::ShuttingDown => {
                                    release(&sup, &inst);
                                    inst.private_ip = None;
                                    inst.apply(Event::Released, None);
                                }
                                State::Stopping | State::Running => {
                                    inst.apply(Event::Halted, None);
                                }
                                _ => return Ok(()),
                            }
                            put(tx, &inst)
                        })
                        .await;
                    if let Err(e) = r {
                        tracing::error!(error = %e.message, "settling an instance on start");
                    }
                });
            }
        }
    }
    booting
}

/// The NIC id the VMM gives an instance's only NIC.
const NIC_ID: &str = "net0";

/// An error of the agent's own making (a document it cannot build or
/// write), as the API reports it.
fn internal(e: impl ToString) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        e.to_string(),
    )
}

/// The security-group document, as the JSON its VMM is given, of every
/// instance that has a VMM (running, or pending on one), by instance id.
/// Each comes from the instance's groups and the current members of every
/// group they reference ([`group_members`]), so what one instance's
/// change of groups or state does to the others shows here.
fn rule_documents(tx: &Tx<'_>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    let instances: Vec<Instance> = tx.list(Table::Instances)?;
    for inst in instances.iter().filter(|i| i.process.is_some()) {
        let inputs = launch_inputs(tx, inst)?;
        let doc = nic_rules::document(&inputs.groups, &inputs.members).map_err(internal)?;
        let text = serde_json::to_string(&doc).map_err(internal)?;
        out.insert(inst.instance_id.clone(), text);
    }
    Ok(out)
}

/// Hands every live VMM its security-group document again where it
/// changed: after a rule changed, a group's members did (an instance
/// launched into it, left it, or changed its groups), or an instance's
/// own groups did. The document is rewritten in the instance's directory
/// first (a VMM started later reads it), then `PUT` to the VMM, which
/// swaps its rules without touching the guest. Which VMMs get one is
/// decided by comparing with that file, so an instance whose document
/// came out the same is left alone.
pub async fn push_rules(app: &Arc<App>) {
    let sup = app.supervisor.clone();
    // (instance id, document) for every instance with a VMM whose
    // document changed.
    // On the writing connection although it changes no row: the files it
    // writes must match one committed state, and the writer is what
    // keeps it from running inside another transaction's window (a
    // terminate removes the instance's directory before its commit).
    let changed = app
        .write(move |tx| {
            let mut out = Vec::new();
            for (id, text) in rule_documents(tx)? {
                let path = sup.dir(&id).join("sg.json");
                if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
                    continue;
                }
                match std::fs::write(&path, &text) {
                    Ok(()) => out.push((id, text)),
                    // Its VMM is gone with its directory: nothing to tell,
                    // and no reason to keep the others' news from them.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        tracing::debug!(instance_id = %id, "no directory: not pushing its groups");
                    }
                    Err(e) => return Err(internal(e)),
                }
            }
            Ok(out)
        })
        .await;
    let changed = match changed {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e.message, "recomputing security groups");
            return;
        }
    };
    let path = format!("/network-interfaces/{NIC_ID}/security-groups");
    for (id, text) in changed {
        match put_to_vmm(app, &id, &path, text).await {
            Ok(()) => {
                app.rule_pushes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(instance_id = %id, "security groups pushed to the VMM");
            }
            Err(e) => {
                tracing::warn!(instance_id = %id, error = %e, "could not push security groups to the VMM");
            }
        }
    }
}

/// Hands instance `id`'s VMM its metadata document again (after the
/// instance's groups changed: `security-groups` and the interface's
/// `security-group-ids`), freshly signed: rewritten in its directory,
/// then `PUT /metadata`, which the VMM serves from the next request on.
/// An instance without a VMM gets its file at its next start.
pub async fn push_metadata(app: &Arc<App>, id: &str) {
    let sup = app.supervisor.clone();
    let id2 = id.to_string();
    // The writing connection, as for `push_rules`: a file written to match
    // one committed state.
    let text = app
        .write(move |tx| {
            let Some(inst) = tx.get::<Instance>(Table::Instances, &id2)? else {
                return Ok(None);
            };
            if inst.process.is_none() {
                return Ok(None);
            }
            let inputs = launch_inputs(tx, &inst)?;
            let text = metadata_file(&sup.identity, &inst, &inputs).map_err(internal)?;
            std::fs::write(sup.dir(&id2).join("metadata.json"), &text).map_err(internal)?;
            Ok(Some(text))
        })
        .await;
    let text = match text {
        Ok(Some(t)) => t,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(instance_id = %id, error = %e.message, "rebuilding the metadata document");
            return;
        }
    };
    match put_to_vmm(app, id, "/metadata", text).await {
        Ok(()) => tracing::info!(instance_id = %id, "metadata pushed to the VMM"),
        Err(e) => {
            tracing::warn!(instance_id = %id, error = %e, "could not push metadata to the VMM");
        }
    }
}

/// `PUT path` with `body` to instance `id`'s VMM; a VMM still starting
/// may not answer yet, so a few tries. The last failure, if all failed.
async fn put_to_vmm(app: &Arc<App>, id: &str, path: &str, body: String) -> Result<(), String> {
    let socket = app.supervisor.api_socket(id);
    let mut last = String::new();
    for _ in 0..5 {
        match crate::vmm_client::call(
            &socket,
            "PUT",
            path,
            Some(body.clone()),
            Duration::from_secs(10),
        )
        .await
        {
            Ok((204, _)) => return Ok(()),
            Ok((status, body)) => last = format!("{status} {body}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::host::process::ProcessId;
    use crate::model::security_group::{IpPermission, SecurityGroup};
    use crate::store::Store;

    fn group(id: &str, name: &str, ingress: &str) -> SecurityGroup {
        let perms: Vec<IpPermission> = serde_json::from_str(ingress).unwrap();
        SecurityGroup {
            group_id: id.into(),
            group_name: name.into(),
            description: "d".into(),
            ingress: perms.iter().flat_map(|p| p.entries().unwrap()).collect(),
            egress: SecurityGroup::default_egress(),
            created_at: String::new(),
        }
    }

    /// The id of instance `n`.
    fn iid(n: u8) -> String {
        format!("i-{n:017x}")
    }

    /// The ids of instances `ns`.
    fn iids(ns: &[u8]) -> BTreeSet<String> {
        ns.iter().map(|&n| iid(n)).collect()
    }

    /// Instance `n` at 10.0.0.1n in `groups`, with a VMM when `running`.
    fn instance(n: u8, groups: &[&str], running: bool) -> Instance {
        let id = iid(n);
        serde_json::from_value(serde_json::json!({
            "instance_id": id, "image_id": "ami-00000001", "instance_type": "t3.nano",
            "vcpus": 2, "memory_mib": 512, "subnet_id": "subnet-00000001",
            "private_ip": format!("10.0.0.1{n}"), "mac": crate::model::instance::mac_for(&id),
            "security_group_ids": groups, "key_name": null, "user_data": null, "tags": {},
            "metadata_options": {}, "state": if running { "running" } else { "stopped" },
            "state_reason": null, "generation": 1, "launch_time": "2024-05-01T12:00:00Z",
            "client_token": null, "restart_at": null,
            "process": running.then_some(ProcessId { pid: 1_000_000 + i32::from(n), start_ticks: 1 }),
            "tap": crate::host::tap::name(&id)
        }))
        .unwrap()
    }

    fn store(name: &str) -> (PathBuf, Store) {
        let dir = std::env::temp_dir().join(format!(
            "stratus-agent-supervisor-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir).unwrap();
        (dir, store)
    }

    /// web (sg-0000000a) lets admin (sg-0000000b) in on 22; db
    /// (sg-0000000c) lets web in on 5432; other (sg-0000000d) names no
    /// group. Instances 1-4 run, in web, db, other and admin; 5 is
    /// stopped, in db.
    fn setup(store: &mut Store) {
        let from = |port: u16, g: &str| {
            format!(
                r#"[{{"ip_protocol": "tcp", "from_port": {port}, "to_port": {port}, "user_id_group_pairs": [{{"group_id": "{g}"}}]}}]"#
            )
        };
        store
            .write(|tx| {
                tx.put(
                    Table::Images,
                    "ami-00000001",
                    &[],
                    &serde_json::json!({"image_id": "ami-00000001", "name": "n", "manifest_path": "/m",
                        "architecture": "x86_64", "root_device_image": "/d", "root_device_format": "raw",
                        "boot_mode": "b", "kernel_cmdline": "", "state": "available", "created_at": ""}),
                )?;
                tx.put(
                    Table::Subnets,
                    "subnet-00000001",
                    &[("cidr_block", "10.0.0.0/24")],
                    &serde_json::json!({"subnet_id": "subnet-00000001", "cidr_block": "10.0.0.0/24",
                        "gateway": "10.0.0.1", "bridge": "stbr0", "available_ip_address_count": 251,
                        "state": "available", "created_at": ""}),
                )?;
                for g in [
                    group("sg-0000000a", "web", &from(22, "sg-0000000b")),
                    group("sg-0000000b", "admin", "[]"),
                    group("sg-0000000c", "db", &from(5432, "sg-0000000a")),
                    group("sg-0000000d", "other", "[]"),
                ] {
                    tx.put(
                        Table::SecurityGroups,
                        &g.group_id,
                        &[("group_name", &g.group_name)],
                        &g,
                    )?;
                }
                for inst in [
                    instance(1, &["sg-0000000a"], true),
                    instance(2, &["sg-0000000c"], true),
                    instance(3, &["sg-0000000d"], true),
                    instance(4, &["sg-0000000b"], true),
                    instance(5, &["sg-0000000c"], false),
                ] {
                    tx.put(Table::Instances, &inst.instance_id, &[("client_token", "")], &inst)?;
                }
                Ok::<_, crate::store::StoreError>(())
            })
            .unwrap();
    }

    /// Gives instance `id` `groups`; the ids of the instances whose rule
    /// documents changed with it.
    fn regroup(store: &mut Store, n: u8, groups: &[&str]) -> BTreeSet<String> {
        let id = iid(n);
        let before = store.read(|tx| rule_documents(tx)).unwrap();
        store
            .write(|tx| {
                let mut inst: Instance = tx.get(Table::Instances, &id)?.unwrap();
                inst.security_group_ids = groups.iter().map(|g| g.to_string()).collect();
                put(tx, &inst)
            })
            .unwrap();
        let after = store.read(|tx| rule_documents(tx)).unwrap();
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            after.keys().collect::<Vec<_>>()
        );
        after
            .iter()
            .filter(|(id, doc)| before[*id] != **doc)
            .map(|(id, _)| id.clone())
            .collect()
    }

    #[test]
    fn a_change_of_groups_reaches_the_instance_and_those_whose_rules_name_its_groups() {
        let (dir, mut store) = store("affected");
        setup(&mut store);
        // Only instances with a VMM get documents.
        let docs = store.read(|tx| rule_documents(tx)).unwrap();
        assert_eq!(
            docs.keys().cloned().collect::<BTreeSet<_>>(),
            iids(&[1, 2, 3, 4])
        );
        assert!(docs[&iid(1)].contains("10.0.0.14"), "{}", docs[&iid(1)]);

        // 4 leaves admin (which web's rule names) for other (which no
        // rule names): its own document and web's member 1's change; 2
        // (db names web, whose members are the same) and 3 (in other,
        // naming nothing) do not.
        let changed = regroup(&mut store, 4, &["sg-0000000d"]);
        assert_eq!(changed, iids(&[1, 4]));
        let docs = store.read(|tx| rule_documents(tx)).unwrap();
        assert!(!docs[&iid(1)].contains("10.0.0.14"), "{}", docs[&iid(1)]);

        // 3 joins web: db's members (2 runs; 5 is stopped and is given its
        // document when it starts) learn its address.
        let changed = regroup(&mut store, 3, &["sg-0000000a", "sg-0000000d"]);
        assert_eq!(changed, iids(&[2, 3]));
        let docs = store.read(|tx| rule_documents(tx)).unwrap();
        assert!(docs[&iid(2)].contains("10.0.0.13"), "{}", docs[&iid(2)]);

        // A stopped instance's change reaches the running members of the
        // groups that name its groups: 5 joins web, so 2 (db) learns it.
        let changed = regroup(&mut store, 5, &["sg-0000000a"]);
        assert_eq!(changed, iids(&[2]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_metadata_file_is_signed_and_names_the_current_groups() {
        let (dir, mut store) = store("metadata");
        setup(&mut store);
        regroup(&mut store, 4, &["sg-0000000d", "sg-0000000a"]);
        let identity = crate::identity::tests::shared();
        let text = store
            .read(|tx| {
                let inst: Instance = tx.get(Table::Instances, &iid(4))?.unwrap();
                let inputs = launch_inputs(tx, &inst)?;
                metadata_file(&identity, &inst, &inputs).map_err(internal)
            })
            .unwrap();
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        let doc = MetadataDocument::from_json(&file["document"].to_string()).unwrap();
        assert_eq!(doc.security_groups, ["other", "web"]);
        assert_eq!(
            doc.interfaces[0].security_group_ids,
            ["sg-0000000d", "sg-0000000a"]
        );
        let mut again = doc.clone();
        identity.sign(&mut again).unwrap();
        // PKCS#1 v1.5 is deterministic: the same document, the same
        // signatures (the SignedData too, as it holds no signing time).
        assert_eq!(doc.identity, again.identity);
        assert!(doc.identity.signature.is_some() && doc.identity.rsa2048.is_some());
        assert_eq!(file["options"]["hop_limit"], 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
