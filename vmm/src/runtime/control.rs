//! API requests, handled on the event loop one at a time.
//!
//! Every handler validates first and changes nothing on an error.

use std::collections::BTreeMap;

use kvm_bindings::kvm_clock_data;
use stratus_devices::rate_limiter::RateLimiterConfig;

use stratus_devices::net::filter::{Direction, FilterError, Firewall, SecurityGroupsConfig};

use super::{DeviceMetrics, MetricsSnapshot, RuleHitMetrics, VcpuMetrics, Vmm};
use crate::api::{
    Action, ApiError, ApiRequest, ApiResponse, ApiResult, DriveUpdate, InstanceInfo, VmState,
    VmStateChange,
};
use crate::device_manager::kind_name;
use crate::nic_services::{sign_document, MetadataUpdate};
use crate::outcome::VmOutcome;

impl Vmm {
    /// Answers every waiting API call.
    pub(super) fn serve_api(&mut self) {
        let Some(api) = self.api.take() else {
            return;
        };
        for call in api.drain() {
            let answer = self.handle(call.request);
            // The client may have gone away; nothing to do then.
            let _ = call.reply.send(answer);
        }
        self.api = Some(api);
    }

    fn handle(&mut self, request: ApiRequest) -> ApiResult {
        match request {
            ApiRequest::Describe => Ok(ApiResponse::Json(serde_json::json!(InstanceInfo {
                id: self.parts.config.id.clone(),
                state: self.state,
                vmm_version: env!("CARGO_PKG_VERSION").to_string(),
                app_name: "stratus-vmm".to_string(),
            }))),
            ApiRequest::GetConfig => serde_json::to_value(&self.parts.config)
                .map(ApiResponse::Json)
                .map_err(|e| ApiError::internal(format!("cannot render the config: {e}"))),
            ApiRequest::ChangeState(VmStateChange::Paused) => {
                self.pause().map(|()| ApiResponse::NoContent)
            }
            ApiRequest::ChangeState(VmStateChange::Resumed) => {
                self.resume().map(|()| ApiResponse::NoContent)
            }
            ApiRequest::Act(action) => self.act(action).map(|()| ApiResponse::NoContent),
            ApiRequest::Metrics => Ok(ApiResponse::Metrics(self.metrics())),
            ApiRequest::Console { bytes } => Ok(ApiResponse::Console(
                self.parts
                    .console
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .tail(bytes),
            )),
            ApiRequest::UpdateDrive { id, update } => self
                .update_drive(&id, &update)
                .map(|()| ApiResponse::NoContent),
            ApiRequest::SetSecurityGroups { id, config } => self
                .set_security_groups(&id, &config)
                .map(|()| ApiResponse::NoContent),
            ApiRequest::SetMetadata(update) => {
                self.set_metadata(*update).map(|()| ApiResponse::NoContent)
            }
        }
    }

    /// Parks every vCPU and freezes the guest's clock. Idempotent.
    fn pause(&mut self) -> Result<(), ApiError> {
        if self.state == VmState::Paused {
            return Ok(());
        }
        let fail = |e: crate::vcpu::VcpuControlError| ApiError::internal(e.to_string());
        for vcpu in &self.parts.vcpus {
            vcpu.request_pause().map_err(fail)?;
        }
        for vcpu in &self.parts.vcpus {
            vcpu.wait_paused().map_err(fail)?;
        }
        // Saved after every vCPU stopped, restored before any runs again:
        // the guest sees no time pass while paused, so its clock neither
        // jumps forward nor, once NTP-free guests compare, backward.
        match self.parts.vm_fd.get_clock() {
            Ok(clock) => self.paused_clock = Some(clock),
            Err(e) => log::warn!("KVM_GET_CLOCK failed, guest time will jump on resume: {e}"),
        }
        self.state = VmState::Paused;
        self.pauses += 1;
        log::info!("VM paused");
        Ok(())
    }

    /// Restores the clock and runs the vCPUs again. Idempotent.
    fn resume(&mut self) -> Result<(), ApiError> {
        if self.state == VmState::Running {
            return Ok(());
        }
        if let Some(saved) = self.paused_clock.take() {
            let clock = kvm_clock_data {
                clock: saved.clock,
                ..Default::default()
            };
            if let Err(e) = self.parts.vm_fd.set_clock(&clock) {
                log::warn!("KVM_SET_CLOCK failed, guest time jumps by the pause: {e}");
            }
        }
        let fail = |e: crate::vcpu::VcpuControlError| ApiError::internal(e.to_string());
        for vcpu in &self.parts.vcpus {
            vcpu.request_resume().map_err(fail)?;
        }
        for vcpu in &self.parts.vcpus {
            vcpu.wait_resumed().map_err(fail)?;
        }
        self.state = VmState::Running;
        log::info!("VM resumed");
        Ok(())
    }

    fn act(&mut self, action: Action) -> Result<(), ApiError> {
        let needs_running_guest = matches!(action, Action::SendCtrlAltDel | Action::Shutdown);
        if needs_running_guest && self.state == VmState::Paused {
            return Err(ApiError::conflict(format!(
                "{action:?} needs the guest to run: resume the VM first"
            )));
        }
        match action {
            Action::SendCtrlAltDel => self
                .parts
                .i8042
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .trigger_ctrl_alt_del()
                .map_err(|e| ApiError::conflict(format!("cannot send Ctrl-Alt-Del: {e}"))),
            Action::Shutdown => {
                log::info!("power button pressed through the API");
                self.parts
                    .power_button
                    .press()
                    .map_err(|e| ApiError::internal(format!("cannot press the power button: {e}")))
            }
            Action::Reboot => {
                log::info!("reset requested through the API");
                self.outcome = Some(VmOutcome::Reboot);
                self.finish();
                Ok(())
            }
        }
    }

    /// `PATCH /drives/{id}`: Firecracker's semantics — the buckets named
    /// replace the drive's (a `size` of 0 lifts that limit), an absent one
    /// stays as it was; nothing changes unless all of it is valid.
    fn update_drive(&mut self, id: &str, update: &DriveUpdate) -> Result<(), ApiError> {
        let Some(index) = self.parts.devices.drives().iter().position(|d| d.id == id) else {
            return Err(ApiError::not_found(format!("no drive with id {id:?}")));
        };
        if update.path_on_host.is_some() {
            return Err(ApiError::bad_request(
                "changing a drive's path_on_host is not supported",
            ));
        }
        let Some(change) = update.rate_limiter else {
            // Nothing to change (Firecracker accepts this too).
            return Ok(());
        };
        change
            .validate()
            .map_err(|e| ApiError::bad_request(format!("invalid rate_limiter: {e}")))?;
        let current = self
            .parts
            .config
            .disks
            .get(index)
            .and_then(|d| d.rate_limiter)
            .unwrap_or_default();
        let merged = RateLimiterConfig {
            bandwidth: change.bandwidth.or(current.bandwidth),
            ops: change.ops.or(current.ops),
        };
        let drive = &self.parts.devices.drives()[index];
        drive
            .block
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_rate_limiter(&merged)
            .map_err(|e| ApiError::bad_request(format!("cannot apply rate_limiter: {e}")))?;
        if let Some(disk) = self.parts.config.disks.get_mut(index) {
            disk.rate_limiter = Some(merged);
        }
        log::info!("drive {id}: rate limits now {merged:?}");
        Ok(())
    }

    /// `PUT /network-interfaces/{id}/security-groups`: the NIC's groups
    /// from now on, applied between two packets. Tracked flows stay (as on
    /// EC2, they last until idle); untracked ones are judged by the new
    /// rules from the next packet. A NIC launched without groups starts
    /// filtering. An invalid document changes nothing.
    fn set_security_groups(
        &mut self,
        id: &str,
        config: &SecurityGroupsConfig,
    ) -> Result<(), ApiError> {
        let Some(nic) = self.parts.devices.nics().iter().find(|n| n.id == id) else {
            return Err(ApiError::not_found(format!(
                "no network interface with id {id:?}"
            )));
        };
        let invalid =
            |e: FilterError| ApiError::bad_request(format!("invalid security groups: {e}"));
        let mut net = nic.net.lock().unwrap_or_else(|p| p.into_inner());
        let datapath = net.datapath_mut();
        match datapath.firewall_mut() {
            Some(firewall) => firewall.replace_rules(config).map_err(invalid)?,
            None => datapath.set_firewall(Some(Firewall::new(config).map_err(invalid)?)),
        }
        let rules: usize = config
            .groups
            .iter()
            .map(|g| g.ingress.len() + g.egress.len())
            .sum();
        log::info!(
            "network interface {id}: {} security groups, {rules} rules",
            config.groups.len()
        );
        Ok(())
    }

    /// `PUT /metadata`: a new document (signed again with the NIC's key)
    /// and optionally new options, for every NIC that serves metadata.
    /// Checked for every NIC before any changes.
    fn set_metadata(&mut self, update: MetadataUpdate) -> Result<(), ApiError> {
        let bad = |e: String| ApiError::bad_request(format!("invalid metadata: {e}"));
        let nics: Vec<_> = self
            .parts
            .devices
            .nics()
            .iter()
            .filter(|n| {
                n.net
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .datapath()
                    .serves_metadata()
            })
            .collect();
        if nics.is_empty() {
            return Err(ApiError::conflict(
                "no network interface serves metadata (launch it with --net …,metadata=FILE)",
            ));
        }
        update.document.validate().map_err(|e| bad(e.to_string()))?;
        if let Some(options) = &update.options {
            options.validate().map_err(|e| bad(e.to_string()))?;
        }
        let mut documents = Vec::with_capacity(nics.len());
        for nic in &nics {
            let mut doc = update.document.clone();
            if let Some(signer) = &nic.signer {
                sign_document(&mut doc, signer).map_err(ApiError::internal)?;
            }
            documents.push(doc);
        }
        for (nic, doc) in nics.iter().zip(documents) {
            let mut net = nic.net.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(metadata) = net.datapath_mut().metadata_mut() {
                metadata
                    .replace_document(doc)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                if let Some(options) = update.options {
                    metadata
                        .set_options(options)
                        .map_err(|e| ApiError::internal(e.to_string()))?;
                }
            }
        }
        log::info!("metadata replaced on {} network interfaces", nics.len());
        Ok(())
    }

    pub(super) fn metrics(&self) -> MetricsSnapshot {
        let vcpus = self
            .parts
            .vcpus
            .iter()
            .map(|v| {
                let mut exits = BTreeMap::new();
                v.stats().write_exits(&mut |reason, n| {
                    exits.insert(reason, n);
                });
                VcpuMetrics {
                    index: v.index(),
                    exits,
                    coalesced_writes: v.stats().coalesced(),
                }
            })
            .collect();
        let mut rule_hits = Vec::new();
        for nic in self.parts.devices.nics() {
            let net = nic.net.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(firewall) = net.datapath().firewall() {
                for (rule, packets) in firewall.rule_hits() {
                    rule_hits.push(RuleHitMetrics {
                        device: nic.id.clone(),
                        group: rule.group.to_string(),
                        direction: match rule.direction {
                            Direction::Ingress => "ingress",
                            Direction::Egress => "egress",
                        },
                        rule: rule.rule,
                        peer: rule.peer,
                        packets,
                    });
                }
            }
        }
        let devices = self
            .parts
            .devices
            .slots()
            .iter()
            .map(|slot| {
                let (mut counters, mut gauges) = (BTreeMap::new(), BTreeMap::new());
                let device = slot.device.lock().unwrap_or_else(|p| p.into_inner());
                device.write_metrics(&mut |name, n| {
                    counters.insert(name, n);
                });
                device.write_gauges(&mut |name, n| {
                    gauges.insert(name, n);
                });
                let kind = kind_name(device.device_type());
                drop(device);
                slot.transport.write(&mut |name, n| {
                    counters.insert(name, n);
                });
                DeviceMetrics {
                    name: slot.name.clone(),
                    kind,
                    counters,
                    gauges,
                }
            })
            .collect();
        MetricsSnapshot {
            state: self.state,
            uptime_seconds: self.parts.start.elapsed().as_secs_f64(),
            boot_time_seconds: self.parts.boot_time.get().map(|d| d.as_secs_f64()),
            first_kvm_run_seconds: self.parts.first_run.get().map(|f| f.wall.as_secs_f64()),
            first_kvm_run_cpu_seconds: self.parts.first_run.get().map(|f| f.cpu.as_secs_f64()),
            pauses: self.pauses,
            console_bytes: self
                .parts
                .console
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .total(),
            vcpus,
            devices,
            rule_hits,
        }
    }
}
