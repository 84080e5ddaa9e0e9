//! Reporting upward, end to end: the real agent binary pushes to a real
//! HTTP receiver that this test runs on a loopback port (axum, recording
//! every report it takes). Periodic reports, a state-change report soon
//! after an instance changes state, catch-up after the receiver was away,
//! sequence numbers across a restart, an agent that stops at once while
//! its receiver hangs, and bad report URLs refused at startup.
//!
//! Only the state-change test needs root (an instance needs a subnet's
//! bridge and a tap); it makes its state change without any VMM: with
//! `--vmm` naming no file, a launch records the instance `pending`, fails
//! to start the VMM and records it `terminated` with the reason.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use common::{privileged, Agent};

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// 200, and the report is recorded.
    Up,
    /// 503, nothing recorded.
    Down,
    /// No answer ever.
    Hang,
}

#[derive(Debug)]
struct Taken {
    mode: Mode,
    /// Reports taken, in arrival order, with when they arrived.
    reports: Vec<(Instant, Value)>,
    refused: usize,
}

/// A report receiver on a loopback port, served from a thread of its own
/// for the rest of the test process.
struct Receiver {
    port: u16,
    taken: Arc<Mutex<Taken>>,
}

impl Receiver {
    /// Listens on `port` (0: any free one).
    fn start(port: u16, mode: Mode) -> Receiver {
        let taken = Arc::new(Mutex::new(Taken {
            mode,
            reports: Vec::new(),
            refused: 0,
        }));
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the receiver");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::clone(&taken);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new()
                    .route("/reports", axum::routing::post(receive))
                    .with_state(state);
                axum::serve(listener, app).await.unwrap();
            });
        });
        Receiver { port, taken }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/reports", self.port)
    }

    fn set_mode(&self, mode: Mode) {
        self.taken.lock().unwrap().mode = mode;
    }

    fn reports(&self) -> Vec<Value> {
        let t = self.taken.lock().unwrap();
        t.reports.iter().map(|(_, v)| v.clone()).collect()
    }

    fn arrivals(&self) -> Vec<(Instant, Value)> {
        self.taken.lock().unwrap().reports.clone()
    }

    fn refused(&self) -> usize {
        self.taken.lock().unwrap().refused
    }

    /// Waits up to `within` for `ok` to hold of the reports taken.
    fn wait_for(&self, within: Duration, what: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let reports = self.reports();
            if ok(&reports) {
                return reports;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {within:?}; got {reports:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn receive(
    State(taken): State<Arc<Mutex<Taken>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mode = taken.lock().unwrap().mode;
    match mode {
        Mode::Up => {
            let json = headers
                .get("content-type")
                .is_some_and(|v| v == "application/json");
            let Ok(report) = serde_json::from_slice::<Value>(&body) else {
                return StatusCode::BAD_REQUEST;
            };
            if !json {
                return StatusCode::UNSUPPORTED_MEDIA_TYPE;
            }
            taken.lock().unwrap().reports.push((Instant::now(), report));
            StatusCode::OK
        }
        Mode::Down => {
            taken.lock().unwrap().refused += 1;
            StatusCode::SERVICE_UNAVAILABLE
        }
        Mode::Hang => std::future::pending().await,
    }
}

fn sequences(reports: &[Value]) -> Vec<u64> {
    reports
        .iter()
        .map(|r| r["sequence"].as_u64().expect("a sequence number"))
        .collect()
}

/// Every report has the documented shape.
fn assert_shape(report: &Value) {
    assert!(
        report["sequence"].as_u64().is_some_and(|s| s > 0),
        "{report}"
    );
    assert!(
        matches!(report["reason"].as_str(), Some("periodic" | "state-change")),
        "{report}"
    );
    let sent_at = report["sent_at"].as_str().unwrap_or_default();
    assert!(
        sent_at.len() == 20 && sent_at.starts_with("20") && sent_at.ends_with('Z'),
        "{report}"
    );
    let health = &report["health"];
    assert_eq!(health["agent_version"], env!("CARGO_PKG_VERSION"));
    assert!(health["instances"].is_object(), "{report}");
    assert!(health["reporting"]["url"].is_string(), "{report}");
}

/// SIGTERM; how long the agent took to exit, and whether it exited 0.
fn terminate(agent: &mut Agent) -> (Duration, bool) {
    let mut child = agent.child.take().expect("a running agent");
    let pid = i32::try_from(child.id()).unwrap();
    let start = Instant::now();
    // SAFETY: kill with a pid we own (not yet waited for) and a valid
    // signal number.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (start.elapsed(), status.success());
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            return (start.elapsed(), false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn health_of(agent: &Agent) -> Value {
    agent.ok("GET", "/v1/health", None, 200)
}

/// `GET /metrics` as text.
fn metrics_text(agent: &Agent) -> String {
    let (status, _, text) = agent.get_open("/metrics");
    assert_eq!(status, 200);
    text
}

/// The value of the unlabelled metric `name` in `GET /metrics`.
fn metric(agent: &Agent, name: &str) -> f64 {
    let text = metrics_text(agent);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn periodic_reports_arrive_with_rising_sequence_numbers() {
    let receiver = Receiver::start(0, Mode::Up);
    let url = receiver.url();
    let agent = Agent::start_with_args(
        "periodic",
        &["--report-url", &url, "--report-interval-secs", "1"],
    );
    let reports = receiver.wait_for(Duration::from_secs(15), "four reports", |r| r.len() >= 4);
    for r in &reports {
        assert_shape(r);
        assert_eq!(r["reason"], "periodic", "{r}");
        assert_eq!(r["health"]["reporting"]["url"], url.as_str());
    }
    // A fresh state directory: 1, 2, 3, … with nothing skipped.
    let seq = sequences(&reports);
    assert_eq!(seq, (1..=seq.len() as u64).collect::<Vec<_>>());
    // About a second apart (the first at once).
    let arrivals = receiver.arrivals();
    let gap = arrivals[3].0 - arrivals[1].0;
    assert!(
        gap >= Duration::from_millis(1500) && gap <= Duration::from_secs(6),
        "two intervals took {gap:?}"
    );
    let health = health_of(&agent);
    let reporting = &health["reporting"];
    assert_eq!(reporting["url"], url.as_str(), "{health}");
    assert!(reporting["last_success_at"].is_string(), "{health}");
    assert!(
        reporting["last_sequence_delivered"].as_u64() >= Some(4),
        "{health}"
    );
    assert_eq!(reporting["dropped"], 0, "{health}");
    assert_eq!(reporting["last_error"], Value::Null, "{health}");
    assert!(metric(&agent, "stratus_agent_reports_sent_total") >= 4.0);
    assert_eq!(metric(&agent, "stratus_agent_report_failures_total"), 0.0);
    assert_eq!(metric(&agent, "stratus_agent_reports_dropped_total"), 0.0);
    assert!(metric(&agent, "stratus_agent_report_backlog") <= 1.0);
    // Each metric's samples follow its own HELP and TYPE lines.
    let text = metrics_text(&agent);
    let lines: Vec<&str> = text.lines().collect();
    for (name, kind) in [
        ("stratus_agent_reports_sent_total", "counter"),
        ("stratus_agent_report_failures_total", "counter"),
        ("stratus_agent_reports_dropped_total", "counter"),
        ("stratus_agent_report_backlog", "gauge"),
    ] {
        let at = lines
            .iter()
            .position(|l| *l == format!("# TYPE {name} {kind}"))
            .unwrap_or_else(|| panic!("no TYPE line for {name}: {text}"));
        assert!(
            lines[at - 1].starts_with(&format!("# HELP {name} ")),
            "{text}"
        );
        assert!(lines[at + 1].starts_with(&format!("{name} ")), "{text}");
    }
}

#[test]
fn without_a_report_url_health_says_so() {
    let agent = Agent::start_with_args("none", &[]);
    let health = health_of(&agent);
    assert_eq!(health["reporting"], Value::Null, "{health}");
    assert_eq!(metric(&agent, "stratus_agent_reports_sent_total"), 0.0);
    assert_eq!(metric(&agent, "stratus_agent_report_backlog"), 0.0);
}

#[test]
fn a_receiver_that_was_away_gets_every_report_in_order() {
    // A port with nothing on it yet: first the agent's connections are
    // refused, then the receiver answers 503, then it takes reports.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/reports");
    let agent = Agent::start_with_args(
        "catch-up",
        &["--report-url", &url, "--report-interval-secs", "1"],
    );
    std::thread::sleep(Duration::from_secs(2));
    let health = health_of(&agent);
    let reporting = &health["reporting"];
    assert_eq!(reporting["last_success_at"], Value::Null, "{health}");
    assert!(
        reporting["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connect")),
        "{health}"
    );
    assert!(reporting["backlog"].as_u64() >= Some(2), "{health}");
    let receiver = Receiver::start(port, Mode::Down);
    receiver.wait_for(Duration::from_secs(15), "a refused attempt", |_| {
        receiver.refused() > 0
    });
    let health = health_of(&agent);
    assert!(
        health["reporting"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{health}"
    );
    let owed = usize::try_from(health["reporting"]["backlog"].as_u64().unwrap()).unwrap();
    assert!(owed >= 3, "{health}");
    assert!(metric(&agent, "stratus_agent_report_failures_total") >= 2.0);
    assert!(metric(&agent, "stratus_agent_report_backlog") >= 3.0);

    receiver.set_mode(Mode::Up);
    // The backlog first, then new reports: every number from 1, in order,
    // once (the backoff is at most 8 s by now).
    let reports = receiver.wait_for(Duration::from_secs(30), "the backlog", |r| {
        r.len() > owed + 1
    });
    let seq = sequences(&reports);
    assert_eq!(seq, (1..=seq.len() as u64).collect::<Vec<_>>());
    for r in &reports {
        assert_shape(r);
        assert_eq!(r["reason"], "periodic", "{r}");
    }
    // Caught up: the old ones came back to back, before the newer ones.
    let arrivals = receiver.arrivals();
    let burst = arrivals[owed - 1].0 - arrivals[0].0;
    assert!(
        burst < Duration::from_millis(900),
        "{owed} owed reports took {burst:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        let h = health_of(&agent);
        if h["reporting"]["backlog"].as_u64() == Some(0) || Instant::now() > deadline {
            break h;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let reporting = &health["reporting"];
    assert!(reporting["last_success_at"].is_string(), "{health}");
    assert_eq!(reporting["last_error"], Value::Null, "{health}");
    assert_eq!(reporting["backlog"], 0, "{health}");
    assert_eq!(reporting["dropped"], 0, "{health}");
    assert!(
        reporting["last_sequence_delivered"].as_u64() >= seq.last().copied(),
        "{health}"
    );
    assert!(metric(&agent, "stratus_agent_reports_sent_total") >= seq.len() as f64);
}

#[test]
fn sequence_numbers_rise_across_restarts_and_a_hung_receiver_does_not_hold_shutdown() {
    let receiver = Receiver::start(0, Mode::Up);
    let url = receiver.url();
    let mut agent = Agent::start_with_args(
        "restart",
        &["--report-url", &url, "--report-interval-secs", "1"],
    );
    receiver.wait_for(Duration::from_secs(15), "two reports", |r| r.len() >= 2);
    // A receiver that never answers: a delivery is stuck when the agent
    // is told to stop, and it stops at once anyway.
    receiver.set_mode(Mode::Hang);
    std::thread::sleep(Duration::from_millis(1500));
    let before = sequences(&receiver.reports());
    let (took, clean) = terminate(&mut agent);
    assert!(clean, "the agent did not exit 0 on SIGTERM");
    assert!(took < Duration::from_secs(3), "SIGTERM took {took:?}");

    receiver.set_mode(Mode::Up);
    agent.spawn();
    let reports = receiver.wait_for(Duration::from_secs(15), "a report after the restart", |r| {
        r.len() > before.len()
    });
    let seq = sequences(&reports);
    assert!(
        seq.windows(2).all(|w| w[0] < w[1]),
        "not rising across the restart: {seq:?}"
    );
    // The report that hung and those queued behind it were lost with the
    // agent; their numbers are not used again.
    let last_before = *before.last().unwrap();
    assert!(seq[before.len()] > last_before + 1, "{seq:?}");
    assert!(reports[before.len()]["health"]["uptime_seconds"].as_u64() < Some(5));
}

#[test]
fn a_state_change_is_reported_at_once() {
    // A state change needs an instance, so a subnet's bridge and a tap.
    if !privileged() {
        return;
    }
    let receiver = Receiver::start(0, Mode::Up);
    let url = receiver.url();
    // An hour between periodic reports: after the first (at start) any
    // report is a state change's. No VMM: the launch fails at once.
    let mut agent = Agent::start_with_args(
        "state-change",
        &[
            "--report-url",
            &url,
            "--report-interval-secs",
            "3600",
            "--vmm",
            "/nonexistent/stratus-vmm",
        ],
    );
    receiver.wait_for(Duration::from_secs(10), "the first report", |r| {
        !r.is_empty()
    });

    // What an instance needs; none of it is a state change.
    let fx = agent.launch_fixture("10.215.0.0/28");
    std::thread::sleep(Duration::from_millis(500));
    let quiet = receiver.reports();
    assert_eq!(quiet.len(), 1, "{quiet:#?}");
    assert_eq!(quiet[0]["reason"], "periodic");

    // pending, then terminated: its VMM cannot start.
    let launched = agent.ok(
        "POST",
        "/v1/instances",
        Some(json!({
            "image_id": fx.image_id,
            "instance_type": "t3.nano",
            "subnet_id": fx.subnet_id,
            "security_group_ids": [fx.group_id],
        })),
        201,
    );
    let at = Instant::now();
    let inst = &launched["instances"][0];
    // Accepted; the launcher then finds that its VMM cannot start.
    assert_eq!(inst["state"], "pending", "{launched}");
    let reports = receiver.wait_for(Duration::from_secs(10), "a state-change report", |r| {
        r.last().is_some_and(|r| {
            r["reason"] == "state-change" && r["health"]["instances"]["terminated"] == 1
        })
    });
    let (arrived, _) = *receiver.arrivals().last().unwrap();
    assert!(
        arrived.saturating_duration_since(at) < Duration::from_secs(2),
        "the report came {:?} after the change",
        arrived.saturating_duration_since(at)
    );
    for r in &reports {
        assert_shape(r);
    }
    assert!(
        reports[1..].iter().all(|r| r["reason"] == "state-change"),
        "{reports:#?}"
    );
    // The launch's two changes make one report or two, not more.
    assert!(reports.len() <= 3, "{reports:#?}");
    let seq = sequences(&reports);
    assert_eq!(seq, (1..=seq.len() as u64).collect::<Vec<_>>());
    agent.ok(
        "DELETE",
        &format!("/v1/subnets/{}", fx.subnet_id.as_str().unwrap()),
        None,
        204,
    );
    agent.bridges.clear();
}

#[test]
fn bad_report_settings_stop_the_agent_with_exit_code_2() {
    let dir = std::env::temp_dir().join(format!("stratus-agent-report-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("agent.json");
    std::fs::write(&config, r#"{"report_url": "gopher://collector/"}"#).unwrap();
    let state = dir.join("state");
    let cases: &[&[&str]] = &[
        &["--report-url", "ftp://x"],
        &["--report-url", "not a url"],
        &["--report-url", "https://collector.example/reports"],
        &["--report-url", "http://"],
        &["--report-url", "collector:9000"],
        &["--report-url", "http://user:pw@collector/"],
        &[
            "--report-url",
            "http://collector/",
            "--report-interval-secs",
            "0",
        ],
        &["--config", config.to_str().unwrap()],
    ];
    for args in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_stratus-agent"))
            .arg("--state-dir")
            .arg(&state)
            .args(["--listen", "127.0.0.1:0"])
            .args(*args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let line = stderr.trim_end();
        assert!(!line.contains('\n'), "{args:?}: more than a line: {stderr}");
        assert!(
            line.starts_with("stratus-agent: --report-"),
            "{args:?}: {stderr}"
        );
        assert!(!line.contains("pw@"), "{args:?}: {stderr}");
        // Refused before anything was made.
        assert!(!state.exists(), "{args:?} made the state directory");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
