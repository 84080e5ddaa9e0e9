//! `cargo xtask bench agent`: see `stratus_tests::agent_bench`. Starts
//! `stratus-agent` in the virtual host (its memory sets what `max` is) and
//! runs `stratus-agent-bench` against it there.

use std::time::Duration;

use stratus_tests::debian_ami;
use stratus_tests::host_net;
use stratus_tests::workspace;

use crate::steps::{self, step, Result};

/// The case name of the measuring program's run.
const CASE: &str = "agent_bench";

/// What `bench agent` varies.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub runs: u32,
    /// Comma-separated counts, `max` for as many as fit.
    pub counts: String,
    pub instance_type: String,
    /// The virtual host's memory: what `max` comes to.
    pub memory_mib: u32,
}

pub fn agent(options: &AgentOptions) -> Result<()> {
    steps::prepare_vhost_bench(options.runs, None)?;
    step("building stratus-vmm, stratus-agent and the benchmark (release)");
    steps::cargo(&[
        "build",
        "--release",
        "-p",
        "stratus-vmm",
        "-p",
        "stratus-agent",
        "-p",
        "stratus-tests",
        "--bin",
        "stratus-vmm",
        "--bin",
        "stratus-agent",
        "--bin",
        "stratus-agent-bench",
        "--bin",
        "stratus-case",
    ])?;
    let release = workspace::profile_dir(true);
    step("building the Debian AMI (cached after the first time)");
    let ami = debian_ami::debian_ami()?;
    let mut host = steps::agent_host("bench-agent", &release, &release.join("stratus-case"), &ami)?;
    host.binary("stratus-agent-bench", &release.join("stratus-agent-bench"))
        .memory_mib(options.memory_mib)
        // Two nested guests on multi-threaded TCG at once occasionally
        // crash (see `guests_on_one_cpu`): every VMM, the agent and the
        // benchmark share the virtual host's last CPU.
        .guests_on_one_cpu()
        .timeout(time_limit(options))
        .scenario(&scenario(options));
    step(&format!(
        "booting the virtual host ({} MiB); counts {}, {} run(s) each",
        options.memory_mib, options.counts, options.runs
    ));
    let outcome = host.run()?;
    let case = outcome.case(CASE);
    let lines = case.as_ref().map(|c| c.stdout.clone()).unwrap_or_default();
    println!(
        "\ncommand: cargo xtask bench agent --runs {} --counts {} --instance-type {} --memory-mib {}",
        options.runs, options.counts, options.instance_type, options.memory_mib
    );
    println!(
        "where: the virtual host (QEMU/TCG, nested SVM; the agent, its VMMs and the benchmark on one of its CPUs), {} MiB",
        options.memory_mib
    );
    for line in &lines {
        println!("{line}");
    }
    match case {
        Some(c) if c.stdout_contains("summary: ") && outcome.exit_code == 0 => Ok(()),
        Some(c) => Err(format!(
            "the benchmark failed: {}; the whole log is {}",
            c.describe(),
            outcome.log.display()
        )
        .into()),
        None => Err(format!(
            "the benchmark did not run (exit {}); the whole log is {}",
            outcome.exit_code,
            outcome.log.display()
        )
        .into()),
    }
}

/// A limit on the whole virtual-host run: every instance the memory
/// could hold booting one after another, per run and count, with room.
fn time_limit(options: &AgentOptions) -> Duration {
    let most = u64::from(options.memory_mib / 512);
    let per_run = 300 + 300 * most + 120;
    let counts = options.counts.split(',').count() as u64;
    Duration::from_secs(900 + per_run * counts * u64::from(options.runs))
}

fn scenario(options: &AgentOptions) -> String {
    format!(
        r#"set -u
mkdir -p /tmp/bench-bin && ln -sf "$(command -v {ip})" /tmp/bench-bin/ip
export PATH=/tmp/bench-bin:$PATH
ip link set lo up
# The bundle on the host's tmpfs, as an operator would keep it on a
# local disk (the overlays the agent makes are there too).
mkdir -p /tmp/ami
cp {disk} /tmp/ami/disk.qcow2 && cp {manifest} /tmp/ami/manifest.json
STATE=/tmp/stratus-bench
stratus-agent --state-dir $STATE --listen 127.0.0.1:8470 --vmm "$(command -v stratus-vmm)" 2>/tmp/agent.err &
AGENT=$!
tries=0
until curl -s -o /dev/null http://127.0.0.1:8470/v1/health; do
    sleep 1; tries=$((tries + 1))
    if [ $tries -ge 120 ]; then echo "the agent did not start:"; cat /tmp/agent.err; exit 1; fi
done
stratus-case {case} {limit} stratus-agent-bench --endpoint 127.0.0.1:8470 \
    --token-file $STATE/api-token --manifest /tmp/ami/manifest.json \
    --instance-type {itype} --counts {counts} --runs {runs} --agent-pid $AGENT
grep -E 'ERROR|WARN' /tmp/agent.err | tail -n 20
kill -TERM $AGENT; wait $AGENT
"#,
        ip = host_net::IPROUTE2,
        disk = steps::AMI_DISK_IN_HOST,
        manifest = steps::AMI_MANIFEST_IN_HOST,
        case = CASE,
        limit = time_limit(options).as_secs().saturating_sub(300),
        itype = options.instance_type,
        counts = options.counts,
        runs = options.runs,
    )
}
