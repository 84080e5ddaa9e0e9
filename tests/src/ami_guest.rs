//! Booting the Debian AMI (`debian_ami`) inside a scenario and reading its
//! test hooks' output back: the command lines (stratus-vmm straight from the
//! disk, QEMU microvm with the kernel and initrd given), the
//! `STRATUS-TEST-BEGIN/END` sections, `INFO key=value` lines and fio's terse
//! lines. Shared by the `ami` e2e test and the disk benchmark.

use crate::case::CaseResult;

/// Marker `stratus-boot-complete.service` prints once `multi-user.target`
/// is reached (on any VMM; only Stratus also gets the boot-complete byte).
pub const BOOTED: &str = "STRATUS-AMI-BOOTED";

/// One boot of the AMI from a disk image inside the host.
#[derive(Debug, Clone)]
pub struct AmiBoot {
    /// The root disk inside the host (normally a qcow2 overlay).
    pub disk: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// The image's own command line (the manifest's `kernel_cmdline`).
    pub base_cmdline: String,
    /// Test hooks to run, in order (`stratus.test=a,b`); none: just boot,
    /// and the guest then stays up.
    pub tests: Vec<String>,
    /// Further `stratus.KEY=VALUE` arguments for the hooks.
    pub params: Vec<(String, String)>,
    /// Whether the image's cloud-init runs. Off unless asked for: with
    /// no network it would spend minutes waiting for a metadata service
    /// (the platform is EC2 by its DMI tables), so the other boots pass
    /// `cloud-init=disabled`, cloud-init's own kernel argument for that.
    pub cloud_init: bool,
}

impl AmiBoot {
    /// A boot of `disk` with the image's command line `base_cmdline`.
    pub fn new(disk: &str, vcpus: u32, memory_mib: u32, base_cmdline: &str) -> Self {
        Self {
            disk: disk.to_owned(),
            vcpus,
            memory_mib,
            base_cmdline: base_cmdline.to_owned(),
            tests: Vec::new(),
            params: Vec::new(),
            cloud_init: false,
        }
    }

    /// Lets cloud-init run, as on a first boot on EC2.
    pub fn with_cloud_init(mut self) -> Self {
        self.cloud_init = true;
        self
    }

    /// Adds test hooks, run in this order.
    pub fn tests(mut self, names: &[&str]) -> Self {
        self.tests.extend(names.iter().map(|n| (*n).to_owned()));
        self
    }

    /// Adds `stratus.KEY=VALUE` (the hooks see it as `STRATUS_KEY`).
    pub fn param(mut self, key: &str, value: &str) -> Self {
        self.params.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The command line without `root=`: the image's, then the hooks'.
    pub fn cmdline(&self) -> String {
        let mut words = vec![self.base_cmdline.clone()];
        if !self.cloud_init {
            words.push("cloud-init=disabled".to_owned());
        }
        if !self.tests.is_empty() {
            words.push(format!("stratus.test={}", self.tests.join(",")));
        }
        words.extend(self.params.iter().map(|(k, v)| format!("stratus.{k}={v}")));
        words.join(" ")
    }

    /// `stratus-vmm --boot-from-disk` (it finds the kernel, initrd and root
    /// UUID in the disk itself), console to `serial` (`stdout`, `file:P`).
    pub fn stratus_vmm(&self, serial: &str) -> Vec<String> {
        self.stratus_vmm_with(serial, &[])
    }

    /// [`AmiBoot::stratus_vmm`] with `extra` arguments at the end
    /// (`--net …`, `--api-sock …`).
    pub fn stratus_vmm_with(&self, serial: &str, extra: &[&str]) -> Vec<String> {
        let mut argv: Vec<String> = [
            "stratus-vmm",
            "--disk",
            &format!("{},format=qcow2", self.disk),
            "--boot-from-disk",
            "--cmdline",
            &self.cmdline(),
            "--vcpus",
            &self.vcpus.to_string(),
            "--memory",
            &self.memory_mib.to_string(),
            "--serial",
            serial,
        ]
        .map(str::to_owned)
        .to_vec();
        argv.extend(extra.iter().map(|a| (*a).to_owned()));
        argv
    }

    /// QEMU `-M microvm` on KVM with the same disk as virtio-blk over
    /// virtio-mmio. microvm has no firmware that could read the disk, so the
    /// kernel and initrd (extracted from the image beforehand) and the
    /// `root=` that stratus-vmm would add are given explicitly.
    pub fn qemu_microvm(&self, kernel: &str, initrd: &str, root_uuid: &str) -> Vec<String> {
        // reboot=a: microvm has no keyboard controller (see vmms.rs).
        let cmdline = format!("root=UUID={root_uuid} rw {}", self.cmdline())
            .split(' ')
            .map(|w| if w == "reboot=k" { "reboot=a" } else { w })
            .collect::<Vec<_>>()
            .join(" ");
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
            "-smp",
            &self.vcpus.to_string(),
            "-m",
            &self.memory_mib.to_string(),
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-kernel",
            kernel,
            "-initrd",
            initrd,
            "-append",
            &cmdline,
        ]
        .map(str::to_owned)
        .to_vec();
        argv.extend(
            [
                "-drive",
                &format!("id=root,file={},format=qcow2,if=none", self.disk),
                "-device",
                "virtio-blk-device,drive=root",
            ]
            .map(str::to_owned),
        );
        argv
    }
}

/// The output of one test hook in a boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The hook's exit status as printed (`0`, `1`, `bad-name`), `None` if
    /// it never ended (`write-then-hang`, or the VMM died).
    pub status: Option<String>,
    /// Its console lines, between the BEGIN and END lines.
    pub lines: Vec<String>,
}

impl Section {
    /// Whether the hook ended with status 0.
    pub fn passed(&self) -> bool {
        self.status.as_deref() == Some("0")
    }

    /// The value of `INFO key=...` (rest of the line). Looked for anywhere
    /// in a line: the serial getty's login prompt can land in front of it.
    pub fn info(&self, key: &str) -> Option<&str> {
        let needle = format!("INFO {key}=");
        self.lines
            .iter()
            .find_map(|l| l.split_once(&needle).map(|(_, v)| v.trim_end()))
    }

    /// Whether some line contains `text`.
    pub fn contains(&self, text: &str) -> bool {
        self.lines.iter().any(|l| l.contains(text))
    }
}

/// The section of test hook `name` in `lines` (the first one, if the hook
/// ran more than once).
pub fn section<S: AsRef<str>>(lines: &[S], name: &str) -> Option<Section> {
    let begin = format!("STRATUS-TEST-BEGIN {name}");
    let end = format!("STRATUS-TEST-END {name} status=");
    let mut iter = lines.iter().map(AsRef::as_ref);
    // `ends_with`: the BEGIN line is the hook's own, a whole line, but
    // console noise may precede it.
    iter.by_ref().find(|l| l.trim_end().ends_with(&begin))?;
    let mut section = Section {
        status: None,
        lines: Vec::new(),
    };
    for line in iter {
        if let Some((_, status)) = line.split_once(&end) {
            section.status = Some(status.trim().to_owned());
            break;
        }
        section.lines.push(line.to_owned());
    }
    Some(section)
}

/// [`section`] of a case's console output.
pub fn case_section(case: &CaseResult, name: &str) -> Option<Section> {
    section(&case.stdout, name)
}

/// One fio job's result, from its terse (version 3) line.
#[derive(Debug, Clone, PartialEq)]
pub struct Fio {
    /// The job name, e.g. `rand-read-4k-qd32`.
    pub job: String,
    /// Read bandwidth in KiB/s.
    pub read_kib_s: f64,
    /// Read IOPS.
    pub read_iops: f64,
    /// Write bandwidth in KiB/s.
    pub write_kib_s: f64,
    /// Write IOPS.
    pub write_iops: f64,
}

impl Fio {
    /// Whether the job wrote (else it read).
    pub fn is_write(&self) -> bool {
        self.write_iops > 0.0 || self.job.contains("write")
    }

    /// The job's bandwidth in its direction, KiB/s.
    pub fn kib_s(&self) -> f64 {
        if self.is_write() {
            self.write_kib_s
        } else {
            self.read_kib_s
        }
    }

    /// The job's IOPS in its direction.
    pub fn iops(&self) -> f64 {
        if self.is_write() {
            self.write_iops
        } else {
            self.read_iops
        }
    }
}

/// Parses `FIO: <terse v3 line>`. Fields (1-based, fio's HOWTO): 3 job
/// name, 5 error; read 7 bandwidth KiB/s, 8 IOPS; write 48 and 49.
pub fn parse_fio(line: &str) -> Option<Fio> {
    let terse = line.split_once("FIO: ")?.1.trim();
    let fields: Vec<&str> = terse.split(';').collect();
    if fields.len() < 50 || fields[0] != "3" || fields[4] != "0" {
        return None;
    }
    let num = |i: usize| fields[i].parse::<f64>().ok();
    Some(Fio {
        job: fields[2].to_owned(),
        read_kib_s: num(6)?,
        read_iops: num(7)?,
        write_kib_s: num(47)?,
        write_iops: num(48)?,
    })
}

/// Every fio result in `lines`, in order.
pub fn fio_results<S: AsRef<str>>(lines: &[S]) -> Vec<Fio> {
    lines.iter().filter_map(|l| parse_fio(l.as_ref())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratus_and_qemu_get_the_same_disk_and_command_line() {
        let boot = AmiBoot::new("/tmp/a.qcow2", 2, 512, "console=ttyS0 reboot=k quiet")
            .tests(&["info", "write-marker"])
            .param("marker", "alpha");
        assert_eq!(
            boot.cmdline(),
            "console=ttyS0 reboot=k quiet cloud-init=disabled stratus.test=info,write-marker stratus.marker=alpha"
        );
        assert!(!boot
            .clone()
            .with_cloud_init()
            .cmdline()
            .contains("cloud-init"));
        let s = boot.stratus_vmm("stdout").join(" ");
        assert!(
            s.starts_with("stratus-vmm --disk /tmp/a.qcow2,format=qcow2 --boot-from-disk"),
            "{s}"
        );
        assert!(s.ends_with("--vcpus 2 --memory 512 --serial stdout"), "{s}");
        let with = boot.stratus_vmm_with("stdout", &["--api-sock", "/tmp/a.sock"]);
        assert_eq!(with[with.len() - 2..], ["--api-sock", "/tmp/a.sock"]);
        let q = boot.qemu_microvm("k", "i", "U");
        let append = q.iter().position(|a| a == "-append").map(|i| &q[i + 1]);
        assert_eq!(
            append.map(String::as_str),
            Some("root=UUID=U rw console=ttyS0 reboot=a quiet cloud-init=disabled stratus.test=info,write-marker stratus.marker=alpha")
        );
        assert!(q
            .join(" ")
            .ends_with("-drive id=root,file=/tmp/a.qcow2,format=qcow2,if=none -device virtio-blk-device,drive=root"));
    }

    #[test]
    fn sections_are_cut_per_hook_and_info_is_found_after_a_prompt() {
        let lines = [
            "noise",
            "STRATUS-TEST-BEGIN info",
            "INFO nproc=2",
            "host login: INFO root=/dev/vda1 ext4 rw,relatime",
            "STRATUS-TEST-END info status=0",
            "STRATUS-TEST-BEGIN write-then-hang",
            "FSYNC-DONE x",
        ];
        let info = section(&lines, "info").unwrap();
        assert!(info.passed());
        assert_eq!(info.info("nproc"), Some("2"));
        assert_eq!(info.info("root"), Some("/dev/vda1 ext4 rw,relatime"));
        let hang = section(&lines, "write-then-hang").unwrap();
        assert_eq!(hang.status, None);
        assert!(hang.contains("FSYNC-DONE"));
        assert_eq!(section(&lines, "check-marker"), None);
    }

    #[test]
    fn fio_terse_v3_fields() {
        let mut fields = vec!["0"; 130];
        fields[0] = "3";
        fields[1] = "fio-3.33";
        fields[2] = "rand-write-4k-qd1";
        fields[6] = "0";
        fields[47] = "4000";
        fields[48] = "1000.5";
        let line = format!("[x out] FIO: {}", fields.join(";"));
        let fio = parse_fio(&line).unwrap();
        assert_eq!(fio.job, "rand-write-4k-qd1");
        assert!(fio.is_write());
        assert_eq!(fio.iops(), 1000.5);
        assert_eq!(fio.kib_s(), 4000.0);
        fields[4] = "5";
        assert_eq!(parse_fio(&format!("FIO: {}", fields.join(";"))), None);
    }
}
