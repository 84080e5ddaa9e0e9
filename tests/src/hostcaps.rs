//! What kind of virtualization this machine offers, which decides whether a
//! scenario runs directly on it or inside the virtual host.

use std::fmt;
use std::path::Path;

/// The machine's virtualization, as far as running stock guest kernels goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Virtualization {
    /// The CPU has `vmx`/`svm` and `/dev/kvm` is a hardware KVM: stock
    /// kernels run natively.
    Hardware,
    /// `/dev/kvm` is PVM (`/sys/module/kvm_pvm`): stock kernels crash in
    /// its instruction emulator, so real guests need the virtual host.
    Pvm,
    /// No usable `/dev/kvm` (or no `vmx`/`svm`).
    Absent,
}

impl fmt::Display for Virtualization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Virtualization::Hardware => "hardware KVM (vmx/svm)",
            Virtualization::Pvm => "PVM /dev/kvm (cannot run stock kernels)",
            Virtualization::Absent => "no hardware virtualization",
        })
    }
}

/// Looks at `/proc/cpuinfo`, `/dev/kvm` and `/sys/module/kvm_pvm`.
pub fn detect() -> Virtualization {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    classify(
        &cpuinfo,
        Path::new("/dev/kvm").exists(),
        Path::new("/sys/module/kvm_pvm").exists(),
    )
}

fn classify(cpuinfo: &str, dev_kvm: bool, pvm: bool) -> Virtualization {
    if pvm {
        return Virtualization::Pvm;
    }
    let has_flag = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if has_flag && dev_kvm {
        Virtualization::Hardware
    } else {
        Virtualization::Absent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_flags_and_pvm() {
        let svm = "processor: 0\nflags\t\t: fpu sse2 svm npt\n";
        let plain = "processor: 0\nflags\t\t: fpu sse2 hypervisor\n";
        assert_eq!(classify(svm, true, false), Virtualization::Hardware);
        assert_eq!(classify(svm, false, false), Virtualization::Absent);
        assert_eq!(classify(plain, true, false), Virtualization::Absent);
        assert_eq!(classify(plain, true, true), Virtualization::Pvm);
        assert_eq!(classify(svm, true, true), Virtualization::Pvm);
    }
}
