//! Reporting upward (`--report-url`): the health document of
//! `GET /v1/health` POSTed to a collector every interval and soon after
//! any instance changes state, so the layer above learns of a host's
//! trouble without polling every host.
//!
//! Two tasks share a [`Reporting`]: the maker builds each report (the
//! health document, the next sequence number from the store, the time)
//! and queues it; the sender delivers the queue in order, one at a time,
//! waiting with exponential backoff after a failure. Split so that a
//! receiver that is slow or down delays deliveries, never the making of
//! reports: the backlog keeps what happened meanwhile (bounded; see
//! [`outbox`]) and is caught up oldest first once it answers again.
//!
//! Every report is
//! `{"sequence", "reason": "periodic"|"state-change", "sent_at", "health"}`.
//! Sequence numbers are taken from the store, committed before the
//! report is queued, so they keep rising across restarts (a gap means
//! reports lost: dropped from a full backlog, or queued when the agent
//! stopped). `sent_at` is when the report was made, which a report sent
//! late from the backlog keeps: it dates the health document in it.

pub mod outbox;
pub mod target;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::api::{now_rfc3339, App};
use outbox::{Backoff, Outbox, Reason, Report};
use target::Target;

/// Default interval between periodic reports.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Most reports waiting for delivery; older ones are dropped.
pub const BACKLOG: usize = 64;
/// First wait after a failed delivery; it doubles up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
pub const MAX_RETRY: Duration = Duration::from_secs(60);
/// How long one delivery may take, connection to answer.
pub const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a state change waits before its report is made, so that a
/// burst (a launch of many instances, a stop and its halt) is one report.
pub const SETTLE: Duration = Duration::from_millis(100);
/// The store counter holding the last sequence number used.
const SEQUENCE_COUNTER: &str = "report_sequence";

/// `--report-url` and `--report-interval-secs`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub target: Target,
    pub interval: Duration,
}

/// What the maker, the sender, `/v1/health` and `/metrics` share.
#[derive(Debug)]
pub struct Reporting {
    url: String,
    state: Mutex<Status>,
    /// Rung when a report is queued; wakes the sender.
    queued: Notify,
}

/// The queue and what is known of deliveries.
#[derive(Debug)]
struct Status {
    outbox: Outbox,
    last_success_at: Option<String>,
    last_sequence_delivered: Option<u64>,
    /// The last attempt's failure; cleared by a delivery, so it says
    /// whether reports are getting through now.
    last_error: Option<String>,
    sent: u64,
    failures: u64,
}

impl Reporting {
    pub fn new(settings: &Settings) -> Self {
        Self {
            url: settings.target.url(),
            state: Mutex::new(Status {
                outbox: Outbox::new(BACKLOG),
                last_success_at: None,
                last_sequence_delivered: None,
                last_error: None,
                sent: 0,
                failures: 0,
            }),
            queued: Notify::new(),
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        // Nothing is left half-updated by a panic under this lock.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The `reporting` object of `GET /v1/health`.
    pub fn to_json(&self) -> Value {
        let s = self.status();
        json!({
            "url": self.url,
            "last_success_at": s.last_success_at,
            "last_sequence_delivered": s.last_sequence_delivered,
            "backlog": s.outbox.backlog(),
            "dropped": s.outbox.dropped(),
            "last_error": s.last_error,
        })
    }

    fn enqueue(&self, report: Report) {
        self.status().outbox.push(report);
        self.queued.notify_one();
    }

    fn take(&self) -> Option<Report> {
        self.status().outbox.take()
    }

    fn delivered(&self, report: &Report) {
        let mut s = self.status();
        s.outbox.delivered();
        s.last_success_at = Some(now_rfc3339());
        s.last_sequence_delivered = Some(report.sequence);
        s.last_error = None;
        s.sent += 1;
    }

    fn failed(&self, report: Report, error: String) {
        let mut s = self.status();
        s.outbox.put_back(report);
        s.last_error = Some(error);
        s.failures += 1;
    }
}

/// Appends the reporting metrics (zeros when reporting is off, so that
/// dashboards and alerts need no special case).
pub fn write_metrics(reporting: Option<&Reporting>, out: &mut String) {
    let (sent, failures, dropped, backlog) = reporting.map_or((0, 0, 0, 0), |r| {
        let s = r.status();
        (s.sent, s.failures, s.outbox.dropped(), s.outbox.backlog())
    });
    for (name, kind, help, value) in [
        (
            "stratus_agent_reports_sent_total",
            "counter",
            "Reports delivered to the report URL.",
            sent,
        ),
        (
            "stratus_agent_report_failures_total",
            "counter",
            "Report deliveries that failed (each is retried).",
            failures,
        ),
        (
            "stratus_agent_reports_dropped_total",
            "counter",
            "Reports dropped undelivered from a full backlog.",
            dropped,
        ),
        (
            "stratus_agent_report_backlog",
            "gauge",
            "Reports waiting for delivery.",
            u64::try_from(backlog).unwrap_or(u64::MAX),
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
}

/// The running tasks; [`Pusher::stop`] ends them at once (what was not
/// delivered is lost with them, and the sequence says so).
#[derive(Debug)]
pub struct Pusher {
    maker: JoinHandle<()>,
    sender: JoinHandle<()>,
}

impl Pusher {
    pub fn stop(self) {
        self.maker.abort();
        self.sender.abort();
    }
}

/// Starts reporting with `settings` into `app.reporting` (`None` if that
/// is not set), `changes` being the store's state-change signal.
pub fn spawn(app: &Arc<App>, settings: &Settings, changes: watch::Receiver<u64>) -> Option<Pusher> {
    let reporting = Arc::clone(app.reporting.as_ref()?);
    tracing::info!(url = %reporting.url, every = ?settings.interval, "reporting upward");
    let maker = tokio::spawn(make_reports(
        Arc::clone(app),
        Arc::clone(&reporting),
        settings.interval,
        changes,
    ));
    let sender = tokio::spawn(send_reports(reporting, settings.target.clone()));
    Some(Pusher { maker, sender })
}

/// Makes a report every `interval` (the first at once, so the receiver
/// hears of a (re)started agent) and after every burst of state changes.
async fn make_reports(
    app: Arc<App>,
    reporting: Arc<Reporting>,
    interval: Duration,
    mut changes: watch::Receiver<u64>,
) {
    let mut tick = tokio::time::interval(interval);
    // After a stall, one report, not a catch-up burst of identical ones.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watching = true;
    loop {
        let reason = tokio::select! {
            _ = tick.tick() => Reason::Periodic,
            changed = changes.changed(), if watching => {
                if changed.is_err() {
                    // The store is gone: only periodic reports from now.
                    watching = false;
                    continue;
                }
                tokio::time::sleep(SETTLE).await;
                // Whatever changed during the wait is in this report.
                changes.borrow_and_update();
                Reason::StateChange
            }
        };
        match make(&app, reason).await {
            Ok(report) => reporting.enqueue(report),
            Err(e) => tracing::warn!(error = %e, reason = reason.as_str(), "cannot make a report"),
        }
    }
}

/// Why a report could not be made (it is skipped; the next one, periodic
/// at the latest, says the same and more).
#[derive(Debug, thiserror::Error)]
enum MakeError {
    #[error("building the health document: {0}")]
    Health(String),
    #[error("taking a sequence number: {0}")]
    Sequence(String),
    #[error("serializing: {0}")]
    Json(#[from] serde_json::Error),
}

/// One report: the health document and the next sequence number.
async fn make(app: &Arc<App>, reason: Reason) -> Result<Report, MakeError> {
    let health = crate::api::health_document(app)
        .await
        .map_err(|e| MakeError::Health(e.message))?;
    let sequence = app
        .write(|tx| Ok(tx.next_in_sequence(SEQUENCE_COUNTER)?))
        .await
        .map_err(|e| MakeError::Sequence(e.message))?;
    let body = serde_json::to_vec(&json!({
        "sequence": sequence,
        "reason": reason.as_str(),
        "sent_at": now_rfc3339(),
        "health": health,
    }))?;
    Ok(Report {
        sequence,
        reason,
        body: body.into(),
    })
}

/// Delivers queued reports oldest first, one at a time; after a failure
/// the same report is tried again after the backoff, so a receiver sees
/// sequence numbers in order.
async fn send_reports(reporting: Arc<Reporting>, target: Target) {
    let mut backoff = Backoff::new(FIRST_RETRY, MAX_RETRY);
    loop {
        let Some(report) = reporting.take() else {
            reporting.queued.notified().await;
            continue;
        };
        match target::post(&target, report.body.clone(), POST_TIMEOUT).await {
            Ok(()) => {
                reporting.delivered(&report);
                backoff.succeeded();
            }
            Err(e) => {
                let delay = outbox::jittered(backoff.failed(), random());
                tracing::warn!(sequence = report.sequence, error = %e, retry_in = ?delay, "report not delivered");
                reporting.failed(report, e.to_string());
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// A random number for jitter; a failing random source means no jitter.
fn random() -> u32 {
    let mut bytes = [0u8; 4];
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => u32::from_ne_bytes(bytes),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(sequence: u64) -> Report {
        Report {
            sequence,
            reason: Reason::StateChange,
            body: bytes::Bytes::new(),
        }
    }

    #[test]
    fn status_follows_deliveries_and_failures() {
        let settings = Settings {
            target: Target::parse("http://127.0.0.1:9/r").unwrap(),
            interval: DEFAULT_INTERVAL,
        };
        let r = Reporting::new(&settings);
        let v = r.to_json();
        assert_eq!(v["url"], "http://127.0.0.1:9/r");
        assert_eq!(v["last_success_at"], Value::Null);
        assert_eq!(v["last_sequence_delivered"], Value::Null);
        assert_eq!(
            (v["backlog"].as_u64(), v["dropped"].as_u64()),
            (Some(0), Some(0))
        );
        r.enqueue(report(1));
        r.enqueue(report(2));
        let first = r.take().unwrap();
        r.failed(first, "the receiver answered 503: ".into());
        let v = r.to_json();
        assert_eq!(v["backlog"], 2);
        assert_eq!(v["last_error"], "the receiver answered 503: ");
        for want in [1, 2] {
            let next = r.take().unwrap();
            assert_eq!(next.sequence, want);
            r.delivered(&next);
        }
        let v = r.to_json();
        assert_eq!(v["backlog"], 0);
        assert_eq!(v["last_sequence_delivered"], 2);
        assert_eq!(v["last_error"], Value::Null);
        assert!(v["last_success_at"].is_string());
        let mut out = String::new();
        write_metrics(Some(&r), &mut out);
        assert!(
            out.contains("\nstratus_agent_reports_sent_total 2\n"),
            "{out}"
        );
        assert!(
            out.contains("\nstratus_agent_report_failures_total 1\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "# TYPE stratus_agent_report_backlog gauge\nstratus_agent_report_backlog 0\n"
            ),
            "{out}"
        );
        let mut off = String::new();
        write_metrics(None, &mut off);
        assert!(
            off.contains("\nstratus_agent_reports_dropped_total 0\n"),
            "{off}"
        );
    }
}
