//! Command lines for the VMMs a scenario runs: stratus-vmm, QEMU's
//! `-M microvm`, and Firecracker, all booting the same guest the same way.

use crate::images::GuestImage;

/// The guest command line every test passes explicitly (the VMM's own
/// default is not what is under test): serial console, reset through the
/// keyboard controller, reboot (not hang) on panic, and little noise.
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 quiet";

/// Where an image's files are inside the host, relative to `$STRATUS_ROOT`.
#[derive(Debug, Clone)]
pub struct GuestFiles {
    /// The kernel, e.g. `images/tiny/kernel`.
    pub kernel: String,
    /// The initramfs.
    pub initrd: String,
}

impl GuestFiles {
    /// The conventional location of `image` inside the host.
    pub fn of(image: &GuestImage) -> Self {
        Self {
            kernel: format!("images/{}/kernel", image.name),
            initrd: format!("images/{}/initrd.cpio", image.name),
        }
    }
}

/// One guest boot: which files, how big, which command line.
#[derive(Debug, Clone)]
pub struct Boot {
    /// The guest's files.
    pub files: GuestFiles,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// The full kernel command line.
    pub cmdline: String,
}

impl Boot {
    /// A boot of `files` with [`BASE_CMDLINE`] plus `extra`.
    pub fn new(files: &GuestFiles, vcpus: u32, memory_mib: u32, extra: &str) -> Self {
        let cmdline = if extra.is_empty() {
            BASE_CMDLINE.to_owned()
        } else {
            format!("{BASE_CMDLINE} {extra}")
        };
        Self {
            files: files.clone(),
            vcpus,
            memory_mib,
            cmdline,
        }
    }

    /// `stratus-vmm` with command-line flags, its console to `serial`
    /// (`stdout`, `file:PATH`) and `extra` flags after the rest.
    pub fn stratus_vmm_with(&self, serial: &str, extra: &[&str]) -> Vec<String> {
        let mut argv = self.stratus_vmm();
        if let Some(pos) = argv.iter().position(|a| a == "--serial") {
            argv[pos + 1] = serial.to_owned();
        }
        argv.extend(extra.iter().map(|a| (*a).to_owned()));
        argv
    }

    /// `stratus-vmm` with command-line flags.
    pub fn stratus_vmm(&self) -> Vec<String> {
        let mut argv: Vec<String> = [
            "stratus-vmm",
            "--kernel",
            &self.files.kernel,
            "--initrd",
            &self.files.initrd,
        ]
        .map(str::to_owned)
        .to_vec();
        argv.extend(["--cmdline".to_owned(), self.cmdline.clone()]);
        argv.extend(["--vcpus".to_owned(), self.vcpus.to_string()]);
        argv.extend(["--memory".to_owned(), self.memory_mib.to_string()]);
        argv.extend(["--serial".to_owned(), "stdout".to_owned()]);
        argv
    }

    /// QEMU `-M microvm` on KVM with its own firmware, serial on stdout,
    /// exiting instead of rebooting (as Firecracker and stratus-vmm do).
    pub fn qemu_microvm(&self) -> Vec<String> {
        // `-L`: QEMU looks for its firmware next to its binary first, which
        // inside the virtual host is not where the firmware is.
        let mut argv: Vec<String> = [
            "qemu-system-x86_64",
            "-L",
            "/usr/share/qemu",
            "-M",
            "microvm",
            "-accel",
            "kvm",
            "-cpu",
            "host",
        ]
        .map(str::to_owned)
        .to_vec();
        argv.extend([
            "-smp".to_owned(),
            self.vcpus.to_string(),
            "-m".to_owned(),
            self.memory_mib.to_string(),
        ]);
        argv.extend(
            [
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-serial",
                "stdio",
                "-no-reboot",
            ]
            .map(str::to_owned),
        );
        argv.extend([
            "-kernel".to_owned(),
            self.files.kernel.clone(),
            "-initrd".to_owned(),
            self.files.initrd.clone(),
        ]);
        argv.extend(["-append".to_owned(), self.qemu_cmdline()]);
        argv
    }

    /// The command line for QEMU: microvm has no i8042 keyboard controller,
    /// so `reboot=k` would leave the guest looping in its reboot fallbacks;
    /// its reset is the ACPI reset register (`reboot=a`). Everything else
    /// stays the same as for the other VMMs.
    fn qemu_cmdline(&self) -> String {
        self.cmdline
            .split(' ')
            .map(|word| if word == "reboot=k" { "reboot=a" } else { word })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Firecracker's `--config-file` JSON for this boot.
    pub fn firecracker_config(&self) -> String {
        format!(
            concat!(
                "{{\"boot-source\":{{\"kernel_image_path\":\"{}\",\"initrd_path\":\"{}\",\"boot_args\":\"{}\"}},",
                "\"drives\":[],\"machine-config\":{{\"vcpu_count\":{},\"mem_size_mib\":{}}}}}"
            ),
            json_escape(&self.files.kernel),
            json_escape(&self.files.initrd),
            json_escape(&self.cmdline),
            self.vcpus,
            self.memory_mib
        )
    }
}

/// `argv` run with `STRATUS_LOG=level` (through `env`), or unchanged
/// when `level` is empty: the VMM's own timings and counters on stderr,
/// for benchmark diagnosis.
pub fn with_stratus_log(level: &str, argv: Vec<String>) -> Vec<String> {
    if level.is_empty() {
        return argv;
    }
    let mut with = vec!["env".to_owned(), format!("STRATUS_LOG={level}")];
    with.extend(argv);
    with
}

fn json_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot() -> Boot {
        let files = GuestFiles {
            kernel: "k".into(),
            initrd: "i".into(),
        };
        Boot::new(&files, 2, 512, "stratus.exit=reboot")
    }

    #[test]
    fn stratus_vmm_gets_every_setting() {
        let argv = boot().stratus_vmm().join(" ");
        assert_eq!(
            argv,
            "stratus-vmm --kernel k --initrd i --cmdline console=ttyS0 reboot=k panic=-1 quiet stratus.exit=reboot \
             --vcpus 2 --memory 512 --serial stdout"
        );
    }

    #[test]
    fn qemu_resets_through_acpi() {
        let argv = boot().qemu_microvm();
        let append = argv
            .iter()
            .position(|a| a == "-append")
            .map(|i| argv[i + 1].as_str());
        assert_eq!(
            append,
            Some("console=ttyS0 reboot=a panic=-1 quiet stratus.exit=reboot")
        );
    }

    #[test]
    fn firecracker_config_is_the_documented_minimum() {
        let json = boot().firecracker_config();
        assert!(json.contains("\"drives\":[]"), "{json}");
        assert!(
            json.contains("\"vcpu_count\":2,\"mem_size_mib\":512"),
            "{json}"
        );
        assert!(
            json.starts_with("{\"boot-source\":{\"kernel_image_path\":\"k\""),
            "{json}"
        );
    }
}
