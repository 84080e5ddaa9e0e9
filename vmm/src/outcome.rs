//! How a VM ended, and the process exit code for each ending.

use crate::vcpu::VcpuStop;

/// Exit code: the guest powered off.
pub const EXIT_POWER_OFF: u8 = 0;
/// Exit code: the VMM or KVM failed, or the guest crashed (triple fault).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: the configuration was rejected before any VM was created.
pub const EXIT_BAD_CONFIG: u8 = 2;
/// Exit code: the guest asked for a reset (reboot).
pub const EXIT_REBOOT: u8 = 3;

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmOutcome {
    /// ACPI soft-off.
    PowerOff,
    /// Keyboard-controller or ACPI reset.
    Reboot,
    /// A vCPU stopped for a reason that is an error.
    VcpuFailed {
        /// Which vCPU.
        index: u8,
        /// Why.
        stop: VcpuStop,
    },
}

impl VmOutcome {
    /// The process exit code for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self {
            VmOutcome::PowerOff => EXIT_POWER_OFF,
            VmOutcome::Reboot => EXIT_REBOOT,
            VmOutcome::VcpuFailed { .. } => EXIT_ERROR,
        }
    }
}

impl std::fmt::Display for VmOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmOutcome::PowerOff => write!(f, "guest powered off"),
            VmOutcome::Reboot => write!(f, "guest requested a reboot"),
            VmOutcome::VcpuFailed { index, stop } => write!(f, "vCPU {index} stopped: {stop}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct() {
        let codes = [
            VmOutcome::PowerOff.exit_code(),
            VmOutcome::Reboot.exit_code(),
            VmOutcome::VcpuFailed {
                index: 0,
                stop: VcpuStop::TripleFault,
            }
            .exit_code(),
            EXIT_BAD_CONFIG,
        ];
        let mut sorted = codes.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), codes.len());
    }
}
