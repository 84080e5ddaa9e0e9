//! `cargo xtask <command>`: the project's automation.
//!
//! - `demo`: start stratus-agent (in the virtual host without hardware
//!   virtualization) and run a Debian AMI instance through the `stratus`
//!   CLI, showing its console, metadata and status checks; `demo
//!   --vmm-only` boots the tiny image under stratus-vmm alone.
//! - `test`: everything CI runs, in one command.
//! - `images`: build the guest images into the cache.
//! - `bench boot`: boot-time benchmark against QEMU microvm (and
//!   Firecracker, given its binary).
//! - `bench disk`: the Debian AMI under stratus-vmm vs QEMU microvm: boot
//!   to `multi-user.target` and fio.
//! - `bench memory`: memory outside guest RAM with an idle guest.
//! - `bench agent`: stratus-agent launching 1, 5 and as many Debian AMI
//!   instances as fit, to `running` and `multi-user.target`, with describe
//!   latency meanwhile (in the virtual host).
//! - `bench start`: process start to API socket and to the first
//!   `KVM_RUN`, wall and CPU time, on this machine's `/dev/kvm`.

mod bench;
mod bench_agent;
mod bench_disk;
mod bench_memory;
mod bench_net;
mod bench_start;
mod demo;
mod demo_agent;
mod fuzz;
mod steps;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Stratus project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start stratus-agent and run a Debian AMI instance through the
    /// `stratus` CLI, showing its console, its metadata and its status
    /// checks; `--vmm-only` boots the tiny image under stratus-vmm alone.
    Demo {
        /// Boot the tiny image under stratus-vmm only (no agent, no AMI).
        #[arg(long)]
        vmm_only: bool,
        /// The demo instance's type.
        #[arg(long, default_value = "t3.micro")]
        instance_type: String,
        /// vCPUs of the `--vmm-only` guest.
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Memory of the `--vmm-only` guest in MiB.
        #[arg(long, default_value_t = 256)]
        memory: u32,
    },
    /// Format check, clippy, unit tests, then the end-to-end tests.
    Test {
        /// Stop after the unit tests (no guest boots).
        #[arg(long)]
        no_e2e: bool,
    },
    /// Build the guest images into the cache and print where they are.
    Images,
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Boot time of stratus-vmm vs QEMU microvm (and Firecracker).
    Boot {
        /// Boots per VMM.
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// A Firecracker binary to include in the comparison.
        #[arg(long)]
        firecracker: Option<PathBuf>,
        /// Boot with `quiet` on the guest command line (every VMM).
        #[arg(long)]
        quiet: bool,
        /// Leave QEMU microvm out of the comparison.
        #[arg(long)]
        without_qemu: bool,
        /// Extra guest command-line words for every VMM (diagnosis only,
        /// e.g. "initcall_debug").
        #[arg(long, default_value = "")]
        extra_cmdline: String,
        /// STRATUS_LOG for stratus-vmm (its own timings; diagnosis only).
        #[arg(long, default_value = "")]
        stratus_log: String,
    },
    /// Memory outside guest RAM with an idle guest (and Firecracker's).
    Memory {
        /// Measurements per configuration.
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// A Firecracker binary to include in the comparison.
        #[arg(long)]
        firecracker: Option<PathBuf>,
    },
    /// stratus-agent: run → `running` and → guest `multi-user.target` for
    /// 1, 5 and as many instances as fit, and describe latency (p50/p99)
    /// meanwhile, in the virtual host.
    Agent {
        /// Runs per count.
        #[arg(long, default_value_t = 1)]
        runs: u32,
        /// Instance counts, comma-separated; `max` is as many as the
        /// virtual host's memory allows and needs a number before it.
        #[arg(long, default_value = "1,5,max")]
        counts: String,
        /// The instances' type.
        #[arg(long, default_value = "t2.nano")]
        instance_type: String,
        /// The virtual host's memory in MiB.
        #[arg(long, default_value_t = 8192)]
        memory_mib: u32,
    },
    /// Process start to API socket and first KVM_RUN (wall and CPU time).
    Start {
        /// Measured starts per kernel.
        #[arg(long, default_value_t = 20)]
        runs: u32,
    },
    /// TCP and 64-byte UDP between two tiny guests: stratus-vmm with and
    /// without 1 000 security-group rules vs QEMU microvm.
    Net {
        /// Boot pairs per VMM.
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Seconds of TCP, then of UDP, per boot pair.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
    },
    /// Debian AMI boot time and fio under stratus-vmm vs QEMU microvm.
    Disk {
        /// Boots per VMM.
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// fio's runtime per job, in seconds.
        #[arg(long, default_value_t = 3)]
        fio_runtime: u32,
        /// stratus-vmm's disk I/O engine: auto, io_uring or sync.
        #[arg(long, default_value = "auto")]
        io_engine: String,
        /// STRATUS_LOG for stratus-vmm (timings, device counters).
        #[arg(long, default_value = "")]
        stratus_log: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo {
            vmm_only: true,
            vcpus,
            memory,
            ..
        } => demo::run(vcpus, memory),
        Command::Demo { instance_type, .. } => demo_agent::run(&instance_type),
        Command::Test { no_e2e } => test::run(!no_e2e),
        Command::Images => steps::images().map(|_| ()),
        Command::Bench {
            what:
                BenchCommand::Boot {
                    runs,
                    firecracker,
                    quiet,
                    without_qemu,
                    extra_cmdline,
                    stratus_log,
                },
        } => bench::boot(
            runs,
            firecracker,
            bench::BootOptions {
                quiet,
                without_qemu,
                extra_cmdline,
                stratus_log,
            },
        ),
        Command::Bench {
            what:
                BenchCommand::Disk {
                    runs,
                    fio_runtime,
                    io_engine,
                    stratus_log,
                },
        } => bench_disk::disk(runs, fio_runtime, io_engine, stratus_log),
        Command::Bench {
            what: BenchCommand::Start { runs },
        } => bench_start::start(runs),
        Command::Bench {
            what:
                BenchCommand::Agent {
                    runs,
                    counts,
                    instance_type,
                    memory_mib,
                },
        } => bench_agent::agent(&bench_agent::AgentOptions {
            runs,
            counts,
            instance_type,
            memory_mib,
        }),
        Command::Bench {
            what: BenchCommand::Net { runs, seconds },
        } => bench_net::net(runs, seconds),
        Command::Bench {
            what: BenchCommand::Memory { runs, firecracker },
        } => bench_memory::memory(runs, firecracker),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err}");
            ExitCode::FAILURE
        }
    }
}
