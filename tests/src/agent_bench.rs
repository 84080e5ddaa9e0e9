//! The agent benchmark (`cargo xtask bench agent`): how long instances
//! take from the run call to `running` and to their guest's
//! `multi-user.target`, for 1, 5 and as many instances as the host's
//! memory allows, and what describe calls cost meanwhile.
//!
//! [`drive`] runs inside the virtual host (the `stratus-agent-bench`
//! binary) against a real `stratus-agent` that runs real VMMs booting the
//! Debian AMI; it talks to the agent only through its HTTP API, as a
//! control plane would:
//!
//! - one `POST /v1/instances` with `count` N starts a run; its clock
//!   starts just before that call;
//! - every [`POLL`] the instance list shows which are `running` (the
//!   agent's `running` means the guest signalled boot-complete, so this is
//!   "usable", not "created");
//! - every [`CONSOLE_POLL`] the console tail of each instance not yet
//!   seen there is read for the marker the AMI prints once
//!   `multi-user.target` is reached (`STRATUS-AMI-BOOTED`);
//! - meanwhile [`Settings::load_clients`] threads each make a describe
//!   call (alternately all instances and one instance) every
//!   [`Settings::load_interval`] and record its latency (a fresh TCP
//!   connection per call, as curl or a fleet poller would).
//!
//! The times are therefore quantised to the poll periods; the report says
//! so. Every run ends with all its instances terminated, and the next run
//! waits until the agent shows no memory allocated.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::agent_client::AgentClient;
use crate::error::{Error, Result};

/// How often the instance list is read for states.
pub const POLL: Duration = Duration::from_millis(500);
/// How often each booting instance's console tail is read.
pub const CONSOLE_POLL: Duration = Duration::from_secs(1);
/// The line the AMI's boot-complete unit prints after `multi-user.target`.
pub const MULTI_USER_MARKER: &str = "STRATUS-AMI-BOOTED";
/// Console bytes read per poll: enough that the marker is still in the
/// tail a poll period after it was printed.
const CONSOLE_TAIL_BYTES: usize = 16 * 1024;
/// Describe calls made before any instance exists, for the idle figure.
const IDLE_SAMPLES: usize = 200;
/// The subnet the benchmark's instances get their addresses from.
const SUBNET: &str = "10.0.120.0/24";

/// How many instances one run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Fixed(u32),
    /// As many as the host's memory allows (health's `instance_memory_mib`
    /// divided by the instance type's memory).
    Max,
}

impl std::str::FromStr for Count {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "max" => Ok(Count::Max),
            n => match n.parse::<u32>() {
                Ok(n) if n > 0 => Ok(Count::Fixed(n)),
                _ => Err(format!("`{s}` is not a count (a number from 1, or `max`)")),
            },
        }
    }
}

/// What one benchmark invocation does.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The agent's API address.
    pub endpoint: SocketAddr,
    /// Its bearer token.
    pub token: String,
    /// The AMI bundle's manifest, as the agent sees it.
    pub manifest: PathBuf,
    pub instance_type: String,
    pub counts: Vec<Count>,
    /// Runs per count.
    pub runs: u32,
    /// Threads making describe calls during each run.
    pub load_clients: u32,
    /// Pause between one load thread's calls.
    pub load_interval: Duration,
    /// The agent's process, whose CPU time each run reports.
    pub agent_pid: Option<i32>,
}

/// One instance's times, in seconds from just before the run call.
#[derive(Debug, Clone)]
struct InstanceTimes {
    id: String,
    running: Option<f64>,
    multi_user: Option<f64>,
}

/// The describe calls the load makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Describe {
    /// `GET /v1/instances`.
    All,
    /// `GET /v1/instances/{id}`.
    One,
}

impl Describe {
    const BOTH: [Describe; 2] = [Describe::All, Describe::One];

    fn name(self) -> &'static str {
        match self {
            Describe::All => "describe-all",
            Describe::One => "describe-one",
        }
    }
}

/// One timed call.
#[derive(Debug, Clone, Copy)]
struct Sample {
    kind: Describe,
    /// When it was sent, in seconds from the run's start.
    at: f64,
    /// How long until the whole answer was read, in milliseconds.
    ms: f64,
    /// Whether the answer was the expected one.
    ok: bool,
}

/// Order statistics of the successful samples of one kind.
fn stats<'a>(samples: impl Iterator<Item = &'a Sample>) -> String {
    let mut failed = 0;
    let mut sorted: Vec<f64> = Vec::new();
    for s in samples {
        if s.ok {
            sorted.push(s.ms);
        } else {
            failed += 1;
        }
    }
    sorted.sort_by(f64::total_cmp);
    format!(
        "n={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} failed={failed}",
        sorted.len(),
        percentile(&sorted, 50.0),
        percentile(&sorted, 99.0),
        sorted.last().copied().unwrap_or(f64::NAN),
    )
}

/// The nearest-rank percentile of sorted values (NaN if none).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank: the smallest value with at least p% at or below it.
    let len = sorted.len();
    let rank = (1..=len)
        .find(|&r| r as f64 * 100.0 >= p * len as f64)
        .unwrap_or(len);
    sorted[rank - 1]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(values, 50.0)
}

/// One run's outcome.
#[derive(Debug)]
struct RunResult {
    count: u32,
    /// What each instance was given.
    memory_mib: u64,
    accept_ms: f64,
    instances: Vec<InstanceTimes>,
    /// When the last instance was both running and at multi-user.
    booted_at: f64,
    samples: Vec<Sample>,
    /// CPU seconds the agent used from the run call to `booted_at`.
    agent_cpu_s: Option<f64>,
    /// CPU seconds each instance's VMM (its vCPUs included) had used at
    /// `booted_at`: what booting one guest cost.
    vmm_cpu_s: Vec<f64>,
}

impl RunResult {
    /// The latest of one time over all instances (None if one lacks it).
    fn all(&self, pick: impl Fn(&InstanceTimes) -> Option<f64>) -> Option<f64> {
        self.instances
            .iter()
            .map(&pick)
            .try_fold(0.0_f64, |acc, t| t.map(|t| acc.max(t)))
    }

    /// The samples of `kind` taken while instances booted, or after.
    fn phase(&self, kind: Describe, booting: bool) -> impl Iterator<Item = &Sample> {
        let booted_at = self.booted_at;
        self.samples
            .iter()
            .filter(move |s| s.kind == kind && (s.at < booted_at) == booting)
    }
}

/// The benchmark's resources on the agent.
struct Fixture {
    image_id: String,
    subnet_id: String,
    group_id: String,
    instance_memory_mib: u64,
    /// The agent's most guests booting at once.
    max_booting: u64,
}

/// Runs the whole benchmark against the agent and prints its raw lines
/// as it goes and a summary at the end.
pub fn drive(settings: &Settings) -> Result<()> {
    leave_the_guests_cpu();
    let client = AgentClient::new(settings.endpoint, &settings.token);
    let fixture = set_up(&client, settings)?;
    println!(
        "setup image={} subnet={} group={} instance_type={} instance_memory_mib={} max_booting={} load_clients={} load_interval_ms={}",
        fixture.image_id,
        fixture.subnet_id,
        fixture.group_id,
        settings.instance_type,
        fixture.instance_memory_mib,
        fixture.max_booting,
        settings.load_clients,
        settings.load_interval.as_millis()
    );
    let idle = idle_latencies(&client);
    for kind in Describe::BOTH {
        println!(
            "latency idle kind={} {}",
            kind.name(),
            stats(idle.iter().filter(|s| s.kind == kind))
        );
    }
    let mut results: Vec<RunResult> = Vec::new();
    for &count in &settings.counts {
        let n = match count {
            Count::Fixed(n) => n,
            Count::Max => max_count(&client, &fixture, results.last().map(|r| r.memory_mib))?,
        };
        for round in 1..=settings.runs {
            let result = run_once(&client, settings, &fixture, n)?;
            print_run(&result, round);
            results.push(result);
        }
    }
    print!("{}", summary(&results, &idle));
    Ok(())
}

/// Moves this process off the virtual host's last CPU, where the agent
/// and every guest run (`guests_on_one_cpu`): the measuring side's own
/// work (its HTTP clients, its JSON parsing) then takes no time from the
/// guests it times, while the agent's side of every call still does, as
/// on a real host. A no-op on a one-CPU machine.
fn leave_the_guests_cpu() {
    // SAFETY: sysconf has no memory effects.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if cpus < 2 {
        return;
    }
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let last = usize::try_from(cpus - 1).unwrap_or(0);
    for cpu in 0..last {
        // SAFETY: `cpu` is below the number of online CPUs, well inside
        // the set's 1024 bits.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is
    // this thread, and threads started later inherit its mask.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        eprintln!(
            "stratus-agent-bench: staying on the guests' CPU: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn set_up(client: &AgentClient, settings: &Settings) -> Result<Fixture> {
    let image = client.expect(
        201,
        "POST",
        "/v1/images",
        Some(&json!({"manifest_path": settings.manifest, "name": "bench"})),
    )?;
    let subnet = client.expect(
        201,
        "POST",
        "/v1/subnets",
        Some(&json!({"cidr_block": SUBNET})),
    )?;
    let group = client.expect(
        201,
        "POST",
        "/v1/security-groups",
        Some(&json!({"group_name": "bench", "description": "agent benchmark"})),
    )?;
    let health = client.expect(200, "GET", "/v1/health", None)?;
    let instance_memory_mib = health["host"]["instance_memory_mib"]
        .as_u64()
        .ok_or_else(|| {
            Error::msg(format!(
                "health shows no host.instance_memory_mib: {health}"
            ))
        })?;
    let max_booting = health["host"]["max_booting"]
        .as_u64()
        .ok_or_else(|| Error::msg(format!("health shows no host.max_booting: {health}")))?;
    let text = |v: &Value, key: &str| -> Result<String> {
        v[key]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::msg(format!("no `{key}` in {v}")))
    };
    Ok(Fixture {
        image_id: text(&image, "image_id")?,
        subnet_id: text(&subnet, "subnet_id")?,
        group_id: text(&group, "group_id")?,
        instance_memory_mib,
        max_booting,
    })
}

/// As many instances of the type as still fit in the host's memory;
/// `per_instance_mib` is what an earlier run's instance was given.
fn max_count(
    client: &AgentClient,
    fixture: &Fixture,
    per_instance_mib: Option<u64>,
) -> Result<u32> {
    let per_instance = per_instance_mib.filter(|&m| m > 0).ok_or_else(|| {
        Error::msg("`max` needs a fixed count before it (its instance size comes from that run)")
    })?;
    let health = client.expect(200, "GET", "/v1/health", None)?;
    let allocated = health["allocated"]["memory_mib"].as_u64().unwrap_or(0);
    let n = fixture.instance_memory_mib.saturating_sub(allocated) / per_instance;
    u32::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| Error::msg(format!("no instance fits ({allocated} MiB allocated)")))
}

/// Describe latencies with no instance running: the agent's own cost.
fn idle_latencies(client: &AgentClient) -> Vec<Sample> {
    let start = Instant::now();
    let mut samples = Vec::new();
    for _ in 0..IDLE_SAMPLES {
        samples.push(timed(client, Describe::All, "/v1/instances", 200, start));
    }
    // No instance exists yet: describe-one of an unknown id is a 404
    // answered after the same lookup, which is what is timed here.
    for _ in 0..IDLE_SAMPLES {
        let path = "/v1/instances/i-0000000000000000a";
        samples.push(timed(client, Describe::One, path, 404, start));
    }
    samples
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One GET of `path`, timed; an answer other than `want` is a failure.
fn timed(client: &AgentClient, kind: Describe, path: &str, want: u16, origin: Instant) -> Sample {
    let at = origin.elapsed().as_secs_f64();
    let start = Instant::now();
    let ok = matches!(client.call("GET", path, None), Ok((status, _)) if status == want);
    Sample {
        kind,
        at,
        ms: ms(start.elapsed()),
        ok,
    }
}

/// A load thread: describe calls until `stop`, alternating all and one.
fn load(
    client: AgentClient,
    ids: Arc<Vec<String>>,
    interval: Duration,
    stop: Arc<AtomicBool>,
    origin: Instant,
    first: usize,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut i = first;
    while !stop.load(Ordering::Relaxed) {
        samples.push(if i.is_multiple_of(2) {
            timed(&client, Describe::All, "/v1/instances", 200, origin)
        } else {
            let id = &ids[(i / 2) % ids.len()];
            timed(
                &client,
                Describe::One,
                &format!("/v1/instances/{id}"),
                200,
                origin,
            )
        });
        i += 1;
        thread::sleep(interval);
    }
    samples
}

/// How long the load goes on once every instance has booted: describe
/// latency with N guests running, after the boot storm.
const AFTER_BOOT: Duration = Duration::from_secs(20);

/// Starts `n` instances in one call, follows them to `running` and to
/// `multi-user.target` under the describe load, keeps the load on for
/// [`AFTER_BOOT`], then terminates them.
fn run_once(
    client: &AgentClient,
    settings: &Settings,
    fixture: &Fixture,
    n: u32,
) -> Result<RunResult> {
    let agent_cpu_before = settings.agent_pid.and_then(cpu_seconds);
    let started = Instant::now();
    let answer = client.expect(
        201,
        "POST",
        "/v1/instances",
        Some(&json!({
            "image_id": fixture.image_id,
            "instance_type": settings.instance_type,
            "subnet_id": fixture.subnet_id,
            "security_group_ids": [fixture.group_id],
            "count": n,
            "tags": {"bench": format!("n{n}")},
        })),
    )?;
    let accept_ms = ms(started.elapsed());
    let ids: Vec<String> = answer["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["instance_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if ids.len() != n as usize {
        return Err(Error::msg(format!(
            "asked for {n} instances, got: {answer}"
        )));
    }
    let ids = Arc::new(ids);
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..settings.load_clients as usize)
        .map(|k| {
            let (client, ids, stop) = (client.clone(), Arc::clone(&ids), Arc::clone(&stop));
            let interval = settings.load_interval;
            thread::spawn(move || load(client, ids, interval, stop, started, k))
        })
        .collect();
    let followed = follow(client, &ids, started, deadline(n));
    let booted_at = started.elapsed().as_secs_f64();
    let agent_cpu_s = settings
        .agent_pid
        .and_then(cpu_seconds)
        .zip(agent_cpu_before)
        .map(|(after, before)| after - before);
    let vmm_cpu_s = vmm_cpu_seconds(client, &ids);
    if followed.is_ok() {
        thread::sleep(AFTER_BOOT);
    }
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for loader in loaders {
        samples.extend(
            loader
                .join()
                .map_err(|_| Error::msg("a load thread panicked"))?,
        );
    }
    // Terminated whatever happened, so that a failed run leaves the host
    // as it found it.
    let cleaned = terminate_all(client, &ids);
    let instances = followed?;
    cleaned?;
    Ok(RunResult {
        count: n,
        memory_mib: answer["instances"][0]["memory_mib"].as_u64().unwrap_or(0),
        accept_ms,
        instances,
        booted_at,
        samples,
        agent_cpu_s,
        vmm_cpu_s,
    })
}

/// User plus system CPU seconds of process `pid` (all its threads), from
/// `/proc/PID/stat`.
fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may
    // hold spaces: state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) as f64 / ticks as f64)
}

/// The CPU seconds of each instance's VMM, found through the pid the
/// agent shows for it.
fn vmm_cpu_seconds(client: &AgentClient, ids: &[String]) -> Vec<f64> {
    let Ok(list) = client.expect(200, "GET", "/v1/instances", None) else {
        return Vec::new();
    };
    list["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| ids.iter().any(|id| i["instance_id"] == id.as_str()))
        .filter_map(|i| i["process"]["pid"].as_i64())
        .filter_map(|pid| cpu_seconds(i32::try_from(pid).ok()?))
        .collect()
}

/// How long `n` instances may take: every guest shares the virtual
/// host's one CPU, so the limit grows with the count.
fn deadline(n: u32) -> Duration {
    // Under TCG a guest's boot costs more CPU the more guests share the
    // CPU (54 s alone, 100 s among five): room for 300 s each.
    Duration::from_secs(300 + 300 * u64::from(n))
}

/// Polls states and consoles until every instance is running and has
/// reached `multi-user.target`.
fn follow(
    client: &AgentClient,
    ids: &[String],
    started: Instant,
    limit: Duration,
) -> Result<Vec<InstanceTimes>> {
    let mut times: Vec<InstanceTimes> = ids
        .iter()
        .map(|id| InstanceTimes {
            id: id.clone(),
            running: None,
            multi_user: None,
        })
        .collect();
    let mut last_console = None::<Instant>;
    loop {
        let now = started.elapsed().as_secs_f64();
        let list = client.expect(200, "GET", "/v1/instances", None)?;
        for t in times.iter_mut().filter(|t| t.running.is_none()) {
            let state = list["instances"]
                .as_array()
                .and_then(|a| a.iter().find(|i| i["instance_id"] == t.id.as_str()))
                .map(|i| {
                    (
                        i["state"].as_str().unwrap_or("").to_owned(),
                        i["state_reason"].clone(),
                    )
                });
            match state {
                Some((s, _)) if s == "running" => t.running = Some(now),
                Some((s, reason)) if s != "pending" => {
                    return Err(Error::msg(format!(
                        "{} ended {s} while booting: {reason}",
                        t.id
                    )))
                }
                _ => {}
            }
        }
        if last_console.is_none_or(|at| at.elapsed() >= CONSOLE_POLL) {
            last_console = Some(Instant::now());
            for t in times.iter_mut().filter(|t| t.multi_user.is_none()) {
                let path = format!("/v1/instances/{}/console?bytes={CONSOLE_TAIL_BYTES}", t.id);
                let console = client.expect(200, "GET", &path, None)?;
                if console["output"]
                    .as_str()
                    .is_some_and(|o| o.contains(MULTI_USER_MARKER))
                {
                    t.multi_user = Some(started.elapsed().as_secs_f64());
                }
            }
        }
        if times
            .iter()
            .all(|t| t.running.is_some() && t.multi_user.is_some())
        {
            return Ok(times);
        }
        if started.elapsed() > limit {
            // What was seen, and where each late guest got to, so that a
            // failed run still says something.
            let mut text = format!("after {} s not all booted:", limit.as_secs());
            for t in &times {
                let _ = write!(
                    text,
                    "\n  {} running_s={:?} multi_user_s={:?}",
                    t.id, t.running, t.multi_user
                );
                if t.running.is_none() || t.multi_user.is_none() {
                    let path = format!("/v1/instances/{}/console?bytes=2048", t.id);
                    let tail = client
                        .call("GET", &path, None)
                        .map(|(_, v)| v["output"].as_str().unwrap_or_default().to_owned())
                        .unwrap_or_default();
                    let _ = write!(text, "\n  console tail: {tail:?}");
                }
            }
            return Err(Error::msg(text));
        }
        thread::sleep(POLL);
    }
}

/// Terminates the instances and waits until the agent holds no memory
/// for any of them.
fn terminate_all(client: &AgentClient, ids: &[String]) -> Result<()> {
    for id in ids {
        client.expect(200, "POST", &format!("/v1/instances/{id}/terminate"), None)?;
    }
    let started = Instant::now();
    loop {
        let health = client.expect(200, "GET", "/v1/health", None)?;
        if health["allocated"]["memory_mib"].as_u64() == Some(0) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(300) {
            return Err(Error::msg(format!(
                "instances still hold memory 300 s after terminate: {}",
                health["allocated"]
            )));
        }
        thread::sleep(Duration::from_secs(1));
    }
}

fn print_run(result: &RunResult, round: u32) {
    let fmt = |t: Option<f64>| t.map_or("-".to_owned(), |t| format!("{t:.1}"));
    let count = result.count;
    println!(
        "run count={count} round={round} accept_ms={:.1} all_running_s={} all_multi_user_s={}",
        result.accept_ms,
        fmt(result.all(|t| t.running)),
        fmt(result.all(|t| t.multi_user)),
    );
    let mean_vmm = result.vmm_cpu_s.iter().sum::<f64>() / result.vmm_cpu_s.len().max(1) as f64;
    println!(
        "cpu count={count} round={round} agent_cpu_s={} vmm_cpu_s_mean={mean_vmm:.1} vmm_cpu_s={:?}",
        fmt(result.agent_cpu_s),
        result.vmm_cpu_s.iter().map(|c| format!("{c:.1}")).collect::<Vec<_>>()
    );
    for t in &result.instances {
        println!(
            "instance count={count} round={round} id={} running_s={} multi_user_s={}",
            t.id,
            fmt(t.running),
            fmt(t.multi_user)
        );
    }
    for (phase, booting) in [("booting", true), ("booted", false)] {
        for kind in Describe::BOTH {
            println!(
                "latency count={count} round={round} phase={phase} kind={} {}",
                kind.name(),
                stats(result.phase(kind, booting))
            );
        }
    }
    let mut slowest: Vec<&Sample> = result.samples.iter().collect();
    slowest.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    for s in slowest.iter().take(3) {
        println!(
            "slowest count={count} round={round} kind={} at_s={:.1} ms={:.1} ok={}",
            s.kind.name(),
            s.at,
            s.ms,
            s.ok
        );
    }
}

/// The tables the README quotes: per count, medians over runs, and the
/// latencies of all its runs pooled.
fn summary(results: &[RunResult], idle: &[Sample]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nsummary: medians over runs; seconds from just before the run call, quantised to {} ms state polls and {} ms console polls",
        POLL.as_millis(),
        CONSOLE_POLL.as_millis()
    );
    let _ = writeln!(
        out,
        "{:>5} {:>4} {:>10} {:>14} {:>17} {:>20} {:>13} {:>19}",
        "count",
        "runs",
        "accept_ms",
        "all_running_s",
        "all_multi_user_s",
        "multi_user_s/count",
        "agent_cpu_s",
        "vmm_cpu_s/instance"
    );
    let mut counts: Vec<u32> = results.iter().map(|r| r.count).collect();
    counts.dedup();
    for &count in &counts {
        let runs: Vec<&RunResult> = results.iter().filter(|r| r.count == count).collect();
        let mut accept: Vec<f64> = runs.iter().map(|r| r.accept_ms).collect();
        let mut running: Vec<f64> = runs.iter().filter_map(|r| r.all(|t| t.running)).collect();
        let mut multi: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.all(|t| t.multi_user))
            .collect();
        let mut per_count: Vec<f64> = multi.iter().map(|m| m / f64::from(count)).collect();
        let mut agent_cpu: Vec<f64> = runs.iter().filter_map(|r| r.agent_cpu_s).collect();
        let mut vmm_cpu: Vec<f64> = runs
            .iter()
            .flat_map(|r| r.vmm_cpu_s.iter().copied())
            .collect();
        let _ = writeln!(
            out,
            "{count:>5} {:>4} {:>10.1} {:>14.1} {:>17.1} {:>20.1} {:>13.1} {:>19.1}",
            runs.len(),
            median(&mut accept),
            median(&mut running),
            median(&mut multi),
            median(&mut per_count),
            median(&mut agent_cpu),
            median(&mut vmm_cpu),
        );
    }
    out.push_str(&growth(results, &counts));
    let _ = writeln!(
        out,
        "\ndescribe latency (runs pooled; a new TCP connection per call)"
    );
    for kind in Describe::BOTH {
        let _ = writeln!(
            out,
            "{:>5} {:<8} {:<13} {}",
            "-",
            "idle",
            kind.name(),
            stats(idle.iter().filter(|s| s.kind == kind))
        );
    }
    for &count in &counts {
        for (phase, booting) in [("booting", true), ("booted", false)] {
            for kind in Describe::BOTH {
                let pooled = results
                    .iter()
                    .filter(|r| r.count == count)
                    .flat_map(|r| r.phase(kind, booting));
                let _ = writeln!(
                    out,
                    "{count:>5} {phase:<8} {:<13} {}",
                    kind.name(),
                    stats(pooled)
                );
            }
        }
    }
    out
}

/// Whether the cost grows linearly with the count, two ways: within each
/// run, the k-th instance to reach `running` against k (the slope is what
/// one more instance costs; a cost that grew with the instances already
/// running would bend the line upwards), and across counts, the median
/// time until all were running against the count.
fn growth(results: &[RunResult], counts: &[u32]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ngrowth: least-squares line through (k, when the k-th instance was running) per run, and through (count, all_running_s) over counts"
    );
    let _ = writeln!(
        out,
        "{:>5} {:>5} {:>9} {:>12} {:>10} {:>15} {:>14}",
        "count", "round", "first_s", "per_extra_s", "r_squared", "max_residual_s", "gaps_s"
    );
    let mut seen: Vec<u32> = Vec::new();
    for r in results {
        seen.push(r.count);
        let round = seen.iter().filter(|&&c| c == r.count).count();
        let mut times: Vec<f64> = r.instances.iter().filter_map(|t| t.running).collect();
        times.sort_by(f64::total_cmp);
        if times.len() < 3 {
            continue;
        }
        let points: Vec<(f64, f64)> = (1..).map(f64::from).zip(times.iter().copied()).collect();
        let Some(line) = Line::fit(&points) else {
            continue;
        };
        let gaps: Vec<String> = times
            .windows(2)
            .map(|w| format!("{:.0}", w[1] - w[0]))
            .collect();
        let _ = writeln!(
            out,
            "{:>5} {round:>5} {:>9.1} {:>12.1} {:>10.3} {:>15.1} {:>14}",
            r.count,
            times[0],
            line.slope,
            line.r_squared(&points),
            line.max_residual(&points),
            gaps.join(",")
        );
    }
    let across: Vec<(f64, f64)> = counts
        .iter()
        .filter_map(|&count| {
            let mut all: Vec<f64> = results
                .iter()
                .filter(|r| r.count == count)
                .filter_map(|r| r.all(|t| t.running))
                .collect();
            (!all.is_empty()).then(|| (f64::from(count), median(&mut all)))
        })
        .collect();
    if let Some(line) = Line::fit(&across).filter(|_| across.len() >= 3) {
        let _ = writeln!(
            out,
            "over counts {:?}: all_running_s = {:.1} + {:.1} * count, r_squared {:.3}, max residual {:.1} s",
            counts,
            line.intercept,
            line.slope,
            line.r_squared(&across),
            line.max_residual(&across)
        );
    }
    out
}

/// A least-squares straight line `y = intercept + slope * x`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Line {
    intercept: f64,
    slope: f64,
}

impl Line {
    /// None for fewer than two points or when every x is the same.
    fn fit(points: &[(f64, f64)]) -> Option<Line> {
        if points.len() < 2 {
            return None;
        }
        let n = points.len() as f64;
        let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
        if sxx == 0.0 {
            return None;
        }
        let slope = sxy / sxx;
        Some(Line {
            intercept: mean_y - slope * mean_x,
            slope,
        })
    }

    fn at(&self, x: f64) -> f64 {
        self.intercept + self.slope * x
    }

    /// The share of the variance in y the line explains (1 when every
    /// point is on it).
    fn r_squared(&self, points: &[(f64, f64)]) -> f64 {
        let mean_y = points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64;
        let total: f64 = points.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
        let residual: f64 = points.iter().map(|p| (p.1 - self.at(p.0)).powi(2)).sum();
        if total == 0.0 {
            1.0
        } else {
            1.0 - residual / total
        }
    }

    /// The largest distance of a point from the line, in y.
    fn max_residual(&self, points: &[(f64, f64)]) -> f64 {
        points
            .iter()
            .map(|p| (p.1 - self.at(p.0)).abs())
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_through_points_on_it_fits_exactly() {
        let points = [(1.0, 48.0), (2.0, 123.0), (3.0, 198.0)];
        let line = Line::fit(&points).unwrap();
        assert!((line.slope - 75.0).abs() < 1e-9);
        assert!((line.intercept + 27.0).abs() < 1e-9);
        assert!((line.r_squared(&points) - 1.0).abs() < 1e-12);
        assert!(line.max_residual(&points) < 1e-9);
    }

    #[test]
    fn a_bent_curve_shows_in_the_fit() {
        // Quadratic growth: each instance costs more than the one before.
        let points: Vec<(f64, f64)> = (1..=9)
            .map(|k| (f64::from(k), 10.0 * f64::from(k * k)))
            .collect();
        let line = Line::fit(&points).unwrap();
        assert!(line.r_squared(&points) < 0.97);
        assert!(line.max_residual(&points) > 50.0);
        assert_eq!(Line::fit(&[(1.0, 2.0)]), None);
        assert_eq!(Line::fit(&[(1.0, 2.0), (1.0, 3.0)]), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), 2.0);
    }

    #[test]
    fn counts_parse() {
        assert_eq!("max".parse::<Count>(), Ok(Count::Max));
        assert_eq!("5".parse::<Count>(), Ok(Count::Fixed(5)));
        assert!("0".parse::<Count>().is_err());
        assert!("five".parse::<Count>().is_err());
    }

    #[test]
    fn reads_own_cpu_time() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(cpu_seconds(me).is_some_and(|s| s >= 0.0));
        assert_eq!(cpu_seconds(-1), None);
    }
}
