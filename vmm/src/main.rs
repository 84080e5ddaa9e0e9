//! `stratus-vmm` command line.
//!
//! ```text
//! stratus-vmm --kernel PATH [--initrd PATH] [--cmdline STR] [--vcpus N]
//!             [--memory MIB] [--serial stdout|off|file:PATH]
//!             [--disk SPEC]... [--id ID] [--instance-type NAME]
//!             [--api-sock PATH]
//! stratus-vmm --config FILE.json
//! ```
//!
//! Exit codes: 0 guest powered off, 3 guest rebooted, 1 VMM/KVM error or
//! guest crash, 2 invalid configuration (nothing was created).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use stratus_vmm::api;
use stratus_vmm::config::{ConfigError, SerialTarget, VmConfig, DEFAULT_CMDLINE};
use stratus_vmm::outcome::{EXIT_BAD_CONFIG, EXIT_ERROR, EXIT_POWER_OFF, EXIT_REBOOT};
use stratus_vmm::vm::Vm;

/// Boot a Linux kernel in a KVM virtual machine.
#[derive(Debug, Parser)]
#[command(name = "stratus-vmm", version)]
struct Cli {
    /// Kernel image: ELF vmlinux (PVH entry used when present) or bzImage.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long)]
    cmdline: Option<String>,
    /// Number of vCPUs (1-32).
    #[arg(long)]
    vcpus: Option<u64>,
    /// Guest memory in MiB.
    #[arg(long)]
    memory: Option<u64>,
    /// Console: stdout, off, or file:PATH.
    #[arg(long)]
    serial: Option<String>,
    /// A virtio-blk disk: PATH[,format=raw|qcow2][,readonly][,serial=ID].
    /// Repeatable; the first is the root disk.
    #[arg(long = "disk", value_name = "SPEC")]
    disks: Vec<String>,
    /// A virtio-net card on an existing tap:
    /// tap=NAME,mac=MAC,ip=ADDR/PREFIX,gw=IP[,id=NAME][,dns=IP[+IP]][,hostname=NAME][,domain=NAME][,mtu=N][,source-dest-check=on|off].
    /// Repeatable. The VMM answers the guest's DHCP with these settings.
    #[arg(long = "net", value_name = "SPEC")]
    nets: Vec<String>,
    /// Boot the kernel and initrd found in the first disk's root filesystem.
    #[arg(long)]
    boot_from_disk: bool,
    /// Announce virtio-mmio devices on the kernel command line too
    /// (`virtio_mmio.device=`); default true with --kernel, false with
    /// --boot-from-disk.
    #[arg(long, value_name = "BOOL")]
    virtio_mmio_cmdline: Option<bool>,
    /// Launch from an AMI manifest (with --instance-disk).
    #[arg(long, value_name = "MANIFEST", requires = "instance_disk")]
    ami: Option<PathBuf>,
    /// The instance's root disk: a qcow2 overlay over the AMI's image,
    /// created on first launch.
    #[arg(long, value_name = "PATH", requires = "ami")]
    instance_disk: Option<PathBuf>,
    /// The instance's id, reported by the API's `GET /`.
    #[arg(long)]
    id: Option<String>,
    /// The instance type (e.g. t3.micro), the guest's SMBIOS product name;
    /// default stratus.custom.
    #[arg(long, value_name = "NAME")]
    instance_type: Option<String>,
    /// Serve the control API (HTTP/JSON) on this Unix socket.
    #[arg(long = "api-sock", value_name = "PATH")]
    api_sock: Option<PathBuf>,
    /// On exit, write `{"exit_code": N, "outcome": "…"}` here (atomically):
    /// how the VMM ended, for a supervisor that is not its parent (one
    /// that adopted it after its own restart cannot reap it). Allowed with
    /// --config: it is about the process, not the VM.
    #[arg(long, value_name = "PATH")]
    exit_status_file: Option<PathBuf>,
    /// Read the whole VM configuration from a JSON file instead.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl Cli {
    fn into_config(self) -> Result<VmConfig, ConfigError> {
        if let Some(path) = &self.config {
            let flag = [
                (self.kernel.is_some(), "--kernel"),
                (self.initrd.is_some(), "--initrd"),
                (self.cmdline.is_some(), "--cmdline"),
                (self.vcpus.is_some(), "--vcpus"),
                (self.memory.is_some(), "--memory"),
                (self.serial.is_some(), "--serial"),
                (!self.disks.is_empty(), "--disk"),
                (!self.nets.is_empty(), "--net"),
                (self.boot_from_disk, "--boot-from-disk"),
                (self.virtio_mmio_cmdline.is_some(), "--virtio-mmio-cmdline"),
                (self.ami.is_some(), "--ami"),
                (self.id.is_some(), "--id"),
                (self.instance_type.is_some(), "--instance-type"),
                (self.api_sock.is_some(), "--api-sock"),
            ]
            .into_iter()
            .find_map(|(given, name)| given.then_some(name));
            if let Some(name) = flag {
                return Err(ConfigError::ConfigAndFlags(name));
            }
            return VmConfig::from_json_file(path);
        }
        let disks = self
            .disks
            .iter()
            .map(|spec| spec.parse())
            .collect::<Result<Vec<_>, _>>()?;
        let nets = self
            .nets
            .iter()
            .map(|spec| spec.parse())
            .collect::<Result<Vec<_>, _>>()?;
        let vcpus = self.vcpus.unwrap_or(1);
        let serial = match &self.serial {
            Some(s) => s.parse()?,
            None => SerialTarget::Stdout,
        };
        Ok(VmConfig {
            id: self
                .id
                .unwrap_or_else(|| stratus_vmm::config::DEFAULT_INSTANCE_ID.to_string()),
            instance_type: self.instance_type,
            api_socket: self.api_sock,
            kernel: self.kernel,
            disks,
            nets,
            boot_from_disk: self.boot_from_disk,
            virtio_mmio_cmdline: self.virtio_mmio_cmdline,
            ami: self
                .ami
                .zip(self.instance_disk)
                .map(|(manifest, instance_disk)| stratus_vmm::config::AmiLaunch {
                    manifest,
                    instance_disk,
                }),
            initrd: self.initrd,
            cmdline: self.cmdline.unwrap_or_else(|| DEFAULT_CMDLINE.to_string()),
            vcpus: u8::try_from(vcpus).map_err(|_| ConfigError::BadVcpuCount(vcpus))?,
            memory_mib: self.memory.unwrap_or(256),
            serial,
        })
    }
}

fn main() -> ExitCode {
    let start = Instant::now();
    stratus_vmm::logger::init();

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One line: clap's first line names the problem; usage follows
            // in `--help` for whoever wants it.
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("stratus-vmm: {first} (see --help)");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
        Err(e) => {
            // --help / --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let exit_file = cli.exit_status_file.clone();
    let code = run(cli, start);
    if let Some(path) = exit_file {
        record_exit(&path, code);
    }
    ExitCode::from(code)
}

/// Runs the VMM from its parsed command line; the exit code.
fn run(cli: Cli, start: Instant) -> u8 {
    let config = match cli
        .into_config()
        .and_then(VmConfig::resolve_ami)
        .and_then(|c| c.validate().map(|()| c))
    {
        Ok(config) => config,
        Err(e) => {
            eprintln!("stratus-vmm: {e}");
            return EXIT_BAD_CONFIG;
        }
    };

    // The socket exists before the VM does, so a supervisor can connect as
    // soon as the process is up; a path already in use is a configuration
    // error (nothing was created).
    let api = match config.api_socket.as_deref().map(start_api).transpose() {
        Ok(Some(api)) => {
            log::info!(
                "API socket ready after {:.3} ms ({:.3} CPU-ms)",
                start.elapsed().as_secs_f64() * 1000.0,
                stratus_vmm::vcpu::process_cpu_time().as_secs_f64() * 1000.0
            );
            Some(api)
        }
        Ok(None) => None,
        Err(e) => {
            eprintln!("stratus-vmm: {e}");
            return EXIT_BAD_CONFIG;
        }
    };

    let vm = match Vm::new(&config, start) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("stratus-vmm: {e}");
            // A kernel image that no loader accepts is a configuration
            // error: nothing ran.
            let code = if e.is_bad_config() {
                EXIT_BAD_CONFIG
            } else {
                EXIT_ERROR
            };
            return code;
        }
    };
    match vm.run(api) {
        Ok(outcome) => {
            eprintln!("stratus-vmm: {outcome}");
            outcome.exit_code()
        }
        Err(e) => {
            eprintln!("stratus-vmm: {e}");
            EXIT_ERROR
        }
    }
}

/// Writes `code` to `path` through a temporary file and a rename, so a
/// reader sees the whole record or none. A failure is reported, not fatal:
/// the exit code itself still tells a parent.
fn record_exit(path: &std::path::Path, code: u8) {
    let meaning = match code {
        EXIT_POWER_OFF => "the guest powered off",
        EXIT_REBOOT => "the guest rebooted",
        EXIT_BAD_CONFIG => "invalid configuration",
        _ => "the VMM or KVM failed, or the guest crashed",
    };
    let record = format!("{{\"exit_code\": {code}, \"outcome\": \"{meaning}\"}}\n");
    let tmp = path.with_extension("tmp");
    let written = std::fs::write(&tmp, record).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        eprintln!(
            "stratus-vmm: cannot write the exit status to {}: {e}",
            path.display()
        );
    }
}

/// Binds the API socket and starts the API thread.
fn start_api(
    path: &std::path::Path,
) -> Result<(api::ApiServer, api::ApiInbox), api::ApiServerError> {
    let listener = api::bind_api_socket(path)?;
    let (client, inbox) = match api::api_channel() {
        Ok(pair) => pair,
        Err(e) => {
            let _ = std::fs::remove_file(path);
            return Err(api::ApiServerError::Start(e));
        }
    };
    let server = match api::ApiServer::spawn(path.to_path_buf(), listener, client) {
        Ok(server) => server,
        Err(e) => {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
    };
    Ok((server, inbox))
}
