use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

/// 2023-11-14T22:13:20Z, in Unix milliseconds.
const T0: u64 = 1_700_000_000_000;

fn config() -> FlowLogConfig {
    FlowLogConfig {
        account_id: "123456789012".to_owned(),
        ..FlowLogConfig::new("eni-0a1b2c3d")
    }
}

fn log_with(edit: impl FnOnce(&mut FlowLogConfig)) -> FlowLog {
    let mut config = config();
    edit(&mut config);
    FlowLog::new(config).unwrap()
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn tcp(src_port: u16, dst_port: u16) -> FlowTuple {
    FlowTuple {
        src: v4(10, 0, 0, 5),
        dst: v4(10, 0, 0, 9),
        src_port,
        dst_port,
        protocol: 6,
    }
}

/// Flushes at `now_ms` and returns the lines written.
fn flush(log: &mut FlowLog, now_ms: u64) -> Vec<String> {
    let mut out = Vec::new();
    let n = log.flush(now_ms, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(n, lines.len());
    assert!(text.is_empty() || text.ends_with('\n'));
    lines
}

fn metrics(log: &FlowLog) -> Vec<(&'static str, u64)> {
    let mut all = Vec::new();
    log.write_metrics(&mut |name, value| all.push((name, value)));
    all
}

fn metric(log: &FlowLog, name: &str) -> u64 {
    metrics(log)
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap()
}

#[test]
fn aggregates_one_flow_into_one_exact_record() {
    let mut log = FlowLog::new(config()).unwrap();
    log.record(tcp(49152, 443), Action::Accept, 60, T0 + 1_500);
    log.record(tcp(49152, 443), Action::Accept, 1500, T0 + 20_000);
    log.record(tcp(49152, 443), Action::Accept, 40, T0 + 42_999);
    assert_eq!(
        flush(&mut log, T0 + 60_000),
        ["2 123456789012 eni-0a1b2c3d 10.0.0.5 10.0.0.9 49152 443 6 3 1600 1700000001 1700000042 ACCEPT OK"]
    );
    assert_eq!(metric(&log, "flow_log_records"), 1);
}

#[test]
fn both_actions_of_one_tuple_are_two_records_in_first_seen_order() {
    let mut log = FlowLog::new(config()).unwrap();
    let ssh = tcp(20641, 22);
    log.record(ssh, Action::Reject, 52, T0 + 3_000);
    log.record(ssh, Action::Accept, 60, T0 + 5_000);
    log.record(ssh, Action::Reject, 52, T0 + 7_000);
    log.record(tcp(20642, 22), Action::Accept, 60, T0 + 8_000);
    assert_eq!(
        flush(&mut log, T0 + 60_000),
        [
            "2 123456789012 eni-0a1b2c3d 10.0.0.5 10.0.0.9 20641 22 6 2 104 1700000003 1700000007 REJECT OK",
            "2 123456789012 eni-0a1b2c3d 10.0.0.5 10.0.0.9 20641 22 6 1 60 1700000005 1700000005 ACCEPT OK",
            "2 123456789012 eni-0a1b2c3d 10.0.0.5 10.0.0.9 20642 22 6 1 60 1700000008 1700000008 ACCEPT OK",
        ]
    );
}

#[test]
fn direction_is_part_of_the_tuple() {
    let mut log = FlowLog::new(config()).unwrap();
    let out = tcp(49152, 443);
    let back = FlowTuple {
        src: out.dst,
        dst: out.src,
        src_port: out.dst_port,
        dst_port: out.src_port,
        protocol: 6,
    };
    log.record(out, Action::Accept, 100, T0);
    log.record(back, Action::Accept, 200, T0);
    assert_eq!(flush(&mut log, T0 + 60_000).len(), 2);
}

#[test]
fn interval_boundaries() {
    let mut log = FlowLog::new(config()).unwrap();
    // Nothing open yet: a timer-driven caller's first flush opens a window.
    assert!(log.flush_due(T0));
    assert!(flush(&mut log, T0).is_empty());
    assert!(!log.flush_due(T0));

    log.record(tcp(1000, 80), Action::Accept, 100, T0 + 59_999);
    assert!(!log.flush_due(T0 + 59_999));
    assert!(log.flush_due(T0 + 60_000));
    // A packet after the nominal end but before the flush still counts
    // in the window being closed.
    log.record(tcp(1000, 80), Action::Accept, 100, T0 + 60_400);
    assert_eq!(
        flush(&mut log, T0 + 60_500),
        ["2 123456789012 eni-0a1b2c3d 10.0.0.5 10.0.0.9 1000 80 6 2 200 1700000059 1700000060 ACCEPT OK"]
    );

    // The next window opened at the flush.
    assert!(!log.flush_due(T0 + 120_499));
    assert!(log.flush_due(T0 + 120_500));
    log.record(tcp(1000, 80), Action::Accept, 100, T0 + 61_000);
    assert_eq!(
        flush(&mut log, T0 + 120_500),
        ["2 123456789012 eni-0a1b2c3d 10.0.0.5 10.0.0.9 1000 80 6 1 100 1700000061 1700000061 ACCEPT OK"]
    );
}

#[test]
fn ten_minute_interval() {
    let mut log = log_with(|c| c.aggregation_interval_secs = 600);
    log.record(tcp(1000, 80), Action::Accept, 100, T0);
    assert!(!log.flush_due(T0 + 599_999));
    assert!(log.flush_due(T0 + 600_000));
}

#[test]
fn first_record_opens_the_window() {
    let mut log = FlowLog::new(config()).unwrap();
    log.record(tcp(1000, 80), Action::Accept, 100, T0 + 5_000);
    assert!(!log.flush_due(T0 + 64_999));
    assert!(log.flush_due(T0 + 65_000));
}

#[test]
fn quiet_window_writes_nodata() {
    let mut log = FlowLog::new(config()).unwrap();
    assert!(flush(&mut log, T0).is_empty());
    assert_eq!(
        flush(&mut log, T0 + 60_000),
        ["2 123456789012 eni-0a1b2c3d - - - - - - - 1700000000 1700000060 - NODATA"]
    );
    // The next window starts where that one ended.
    assert_eq!(
        flush(&mut log, T0 + 120_000),
        ["2 123456789012 eni-0a1b2c3d - - - - - - - 1700000060 1700000120 - NODATA"]
    );
    assert_eq!(metric(&log, "flow_log_records"), 2);
}

#[test]
fn full_table_skips_new_flows_and_says_skipdata() {
    let mut log = log_with(|c| c.max_flows = 2);
    log.record(tcp(1, 80), Action::Accept, 100, T0);
    log.record(tcp(2, 80), Action::Accept, 100, T0 + 1_000);
    // Table full: a new tuple, and a known tuple with the other action.
    log.record(tcp(3, 80), Action::Accept, 100, T0 + 2_000);
    log.record(tcp(1, 80), Action::Reject, 100, T0 + 3_000);
    // Known flows keep counting.
    log.record(tcp(1, 80), Action::Accept, 100, T0 + 4_000);
    assert_eq!(
        flush(&mut log, T0 + 60_000),
        [
            "2 123456789012 eni-0a1b2c3d 10.0.0.5 10.0.0.9 1 80 6 2 200 1700000000 1700000004 ACCEPT OK",
            "2 123456789012 eni-0a1b2c3d 10.0.0.5 10.0.0.9 2 80 6 1 100 1700000001 1700000001 ACCEPT OK",
            "2 123456789012 eni-0a1b2c3d - - - - - - - 1700000000 1700000060 - SKIPDATA",
        ]
    );
    assert_eq!(metric(&log, "flow_log_skipped_flows"), 2);
    assert_eq!(metric(&log, "flow_log_records"), 3);

    // The next window has the whole table again.
    log.record(tcp(3, 80), Action::Accept, 100, T0 + 61_000);
    log.record(tcp(4, 80), Action::Accept, 100, T0 + 62_000);
    let lines = flush(&mut log, T0 + 120_000);
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l.ends_with(" ACCEPT OK")));
}

#[test]
fn record_cap_replaces_the_rest_with_one_skipdata() {
    let mut log = log_with(|c| c.max_records_per_interval = 2);
    for port in 1..=5 {
        log.record(
            tcp(port, 53),
            Action::Accept,
            80,
            T0 + u64::from(port) * 1_000,
        );
    }
    assert_eq!(
        flush(&mut log, T0 + 60_000),
        [
            "2 123456789012 eni-0a1b2c3d 10.0.0.5 10.0.0.9 1 53 6 1 80 1700000001 1700000001 ACCEPT OK",
            "2 123456789012 eni-0a1b2c3d 10.0.0.5 10.0.0.9 2 53 6 1 80 1700000002 1700000002 ACCEPT OK",
            "2 123456789012 eni-0a1b2c3d - - - - - - - 1700000001 1700000060 - SKIPDATA",
        ]
    );
    assert_eq!(metric(&log, "flow_log_skipped_flows"), 3);
}

#[test]
fn exactly_at_the_cap_writes_no_skipdata() {
    let mut log = log_with(|c| c.max_records_per_interval = 2);
    log.record(tcp(1, 53), Action::Accept, 80, T0);
    log.record(tcp(2, 53), Action::Accept, 80, T0);
    assert_eq!(flush(&mut log, T0 + 60_000).len(), 2);
    assert_eq!(metric(&log, "flow_log_skipped_flows"), 0);
}

#[test]
fn icmp_has_ports_zero() {
    let mut log = FlowLog::new(config()).unwrap();
    let ping = FlowTuple {
        src: v4(203, 0, 113, 12),
        dst: v4(172, 31, 16, 139),
        src_port: 0,
        dst_port: 0,
        protocol: 1,
    };
    log.record(ping, Action::Accept, 84, T0 + 10_000);
    log.record(ping, Action::Accept, 84, T0 + 11_000);
    assert_eq!(
        flush(&mut log, T0 + 60_000),
        ["2 123456789012 eni-0a1b2c3d 203.0.113.12 172.31.16.139 0 0 1 2 168 1700000010 1700000011 ACCEPT OK"]
    );
}

#[test]
fn ipv6_addresses_in_their_short_form() {
    let mut log = FlowLog::new(config()).unwrap();
    let flow = FlowTuple {
        src: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x1234, 0xa100, 0, 0, 0, 0x5)),
        dst: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x1234, 0xa102, 0, 0, 0, 0x100)),
        src_port: 34892,
        dst_port: 22,
        protocol: 6,
    };
    log.record(flow, Action::Reject, 80, T0 + 2_000);
    let icmp6 = FlowTuple {
        src: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0x1, 0x2, 0x3, 0x4)),
        dst: IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x1)),
        src_port: 0,
        dst_port: 0,
        protocol: 58,
    };
    log.record(icmp6, Action::Accept, 72, T0 + 3_000);
    assert_eq!(
        flush(&mut log, T0 + 60_000),
        [
            "2 123456789012 eni-0a1b2c3d 2001:db8:1234:a100::5 2001:db8:1234:a102::100 34892 22 6 1 80 1700000002 1700000002 REJECT OK",
            "2 123456789012 eni-0a1b2c3d fe80::1:2:3:4 ff02::1 0 0 58 1 72 1700000003 1700000003 ACCEPT OK",
        ]
    );
}

#[test]
fn record_never_grows_the_table() {
    let mut log = log_with(|c| c.max_flows = 64);
    let (flows, index) = (log.flows.capacity(), log.index.capacity());
    for window in 0..3u64 {
        for port in 0..200u16 {
            log.record(tcp(port, 80), Action::Accept, 60, T0 + window * 60_000 + 1);
            log.record(tcp(port, 80), Action::Reject, 60, T0 + window * 60_000 + 2);
        }
        let mut sink = io::sink();
        log.flush(T0 + (window + 1) * 60_000, &mut sink).unwrap();
        assert_eq!(log.flows.capacity(), flows);
        assert_eq!(log.index.capacity(), index);
    }
}

/// Takes `lines` whole lines (and `extra` bytes of the next), then fails
/// with `kind`.
struct Failing {
    taken: Vec<u8>,
    lines: usize,
    extra: usize,
    kind: io::ErrorKind,
    calls: usize,
}

impl Failing {
    fn new(lines: usize, extra: usize, kind: io::ErrorKind) -> Failing {
        Failing {
            taken: Vec::new(),
            lines,
            extra,
            kind,
            calls: 0,
        }
    }
}

impl Write for Failing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.lines > 0 {
            // Whole lines are given one per call.
            self.lines -= 1;
            self.taken.extend_from_slice(buf);
            return Ok(buf.len());
        }
        if self.extra > 0 {
            let n = self.extra.min(buf.len());
            self.extra = 0;
            self.taken.extend_from_slice(&buf[..n]);
            return Ok(n);
        }
        Err(self.kind.into())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_pipe_drops_and_counts_the_rest_of_the_window() {
    let mut log = log_with(|c| c.max_flows = 3);
    for port in 1..=5 {
        log.record(tcp(port, 80), Action::Accept, 100, T0);
    }
    // Three flows and a SKIPDATA; the pipe takes one line.
    let mut pipe = Failing::new(1, 0, io::ErrorKind::WouldBlock);
    let err = log.flush(T0 + 60_000, &mut pipe).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    // It stopped at the first error instead of trying every record.
    assert_eq!(pipe.calls, 2);
    assert_eq!(String::from_utf8(pipe.taken).unwrap().lines().count(), 1);
    assert_eq!(metric(&log, "flow_log_records"), 1);
    assert_eq!(metric(&log, "flow_log_write_errors"), 3);

    // The window was closed all the same and the log goes on.
    assert!(!log.flush_due(T0 + 60_000));
    log.record(tcp(9, 80), Action::Accept, 100, T0 + 61_000);
    assert_eq!(
        flush(&mut log, T0 + 120_000),
        ["2 123456789012 eni-0a1b2c3d 10.0.0.5 10.0.0.9 9 80 6 1 100 1700000061 1700000061 ACCEPT OK"]
    );
    assert_eq!(metric(&log, "flow_log_write_errors"), 3);
}

#[test]
fn a_failing_nodata_is_counted() {
    let mut log = FlowLog::new(config()).unwrap();
    log.flush(T0, &mut io::sink()).unwrap();
    let mut broken = Failing::new(0, 0, io::ErrorKind::BrokenPipe);
    assert!(log.flush(T0 + 60_000, &mut broken).is_err());
    assert_eq!(metric(&log, "flow_log_write_errors"), 1);
    assert_eq!(metric(&log, "flow_log_records"), 0);
}

#[test]
fn a_torn_line_is_ended_before_the_next_records() {
    let mut log = FlowLog::new(config()).unwrap();
    log.record(tcp(1, 80), Action::Accept, 100, T0);
    log.record(tcp(2, 80), Action::Accept, 100, T0);
    let mut pipe = Failing::new(1, 10, io::ErrorKind::WouldBlock);
    assert!(log.flush(T0 + 60_000, &mut pipe).is_err());
    let taken = String::from_utf8(pipe.taken).unwrap();
    assert!(taken.ends_with("2 12345678"), "{taken:?}");
    assert_eq!(metric(&log, "flow_log_write_errors"), 1);

    // The next flush first ends the torn line.
    let mut out = Vec::new();
    assert_eq!(log.flush(T0 + 120_000, &mut out).unwrap(), 1);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "\n2 123456789012 eni-0a1b2c3d - - - - - - - 1700000060 1700000120 - NODATA\n"
    );
    // And only once.
    let mut out = Vec::new();
    log.flush(T0 + 180_000, &mut out).unwrap();
    assert!(out.starts_with(b"2 "));
}

/// Fails with `Interrupted` every other call.
struct Interrupting {
    out: Vec<u8>,
    interrupt: bool,
}

impl Write for Interrupting {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(io::ErrorKind::Interrupted.into());
        }
        // Short writes too.
        let n = buf.len().min(7);
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn interrupted_and_short_writes_are_retried() {
    let mut log = FlowLog::new(config()).unwrap();
    log.record(tcp(1, 80), Action::Accept, 100, T0);
    let mut out = Interrupting {
        out: Vec::new(),
        interrupt: false,
    };
    assert_eq!(log.flush(T0 + 60_000, &mut out).unwrap(), 1);
    assert_eq!(
        String::from_utf8(out.out).unwrap(),
        "2 123456789012 eni-0a1b2c3d 10.0.0.5 10.0.0.9 1 80 6 1 100 1700000000 1700000000 ACCEPT OK\n"
    );
    assert_eq!(metric(&log, "flow_log_write_errors"), 0);
}

#[test]
fn a_clock_stepping_back_keeps_start_before_end() {
    let mut log = FlowLog::new(config()).unwrap();
    log.record(tcp(1, 80), Action::Accept, 100, T0 + 30_000);
    log.record(tcp(1, 80), Action::Accept, 100, T0 + 10_000);
    assert_eq!(
        flush(&mut log, T0 + 5_000),
        ["2 123456789012 eni-0a1b2c3d 10.0.0.5 10.0.0.9 1 80 6 2 200 1700000010 1700000030 ACCEPT OK"]
    );
    // A NODATA window whose flush time is before its opening.
    assert_eq!(
        flush(&mut log, T0 + 1_000),
        ["2 123456789012 eni-0a1b2c3d - - - - - - - 1700000005 1700000005 - NODATA"]
    );
}

#[test]
fn metric_names() {
    let log = FlowLog::new(config()).unwrap();
    assert_eq!(
        metrics(&log),
        [
            ("flow_log_records", 0),
            ("flow_log_skipped_flows", 0),
            ("flow_log_write_errors", 0),
        ]
    );
}

#[test]
fn config_from_json_with_defaults() {
    let config: FlowLogConfig = serde_json::from_str(r#"{"interface_id":"eni-0a1b2c3d"}"#).unwrap();
    assert_eq!(config, FlowLogConfig::new("eni-0a1b2c3d"));
    assert_eq!(config.account_id, "000000000000");
    assert_eq!(config.aggregation_interval_secs, 60);
    assert_eq!(config.max_flows, 10_000);
    FlowLog::new(config).unwrap();

    let config: FlowLogConfig = serde_json::from_str(
        r#"{"account_id":"123456789012","interface_id":"eni-1235b8ca123456789",
            "aggregation_interval_secs":600,"max_flows":5,"max_records_per_interval":3}"#,
    )
    .unwrap();
    assert_eq!(config.max_records_per_interval, 3);
    FlowLog::new(config).unwrap();

    assert!(
        serde_json::from_str::<FlowLogConfig>(r#"{"interface_id":"eni-0a1b2c3d","x":1}"#).is_err()
    );
    assert!(serde_json::from_str::<FlowLogConfig>("{}").is_err());
}

#[test]
fn config_is_checked() {
    let refused = |edit: fn(&mut FlowLogConfig)| {
        let mut config = config();
        edit(&mut config);
        FlowLog::new(config).unwrap_err()
    };
    assert_eq!(
        refused(|c| c.account_id = "12345".into()),
        FlowLogError::AccountId("12345".into())
    );
    assert!(matches!(
        refused(|c| c.account_id = "12345678901a".into()),
        FlowLogError::AccountId(_)
    ));
    for bad in [
        "eni-0A1B2C3D",
        "eni-0a1b2c3",
        "0a1b2c3d",
        "eni-0a1b 2c3",
        "eni-0a1b2c3d\n",
        "",
    ] {
        let mut config = config();
        config.interface_id = bad.into();
        assert_eq!(
            FlowLog::new(config).unwrap_err(),
            FlowLogError::InterfaceId(bad.into())
        );
    }
    assert_eq!(
        refused(|c| c.aggregation_interval_secs = 30),
        FlowLogError::Interval(30)
    );
    assert_eq!(
        refused(|c| c.aggregation_interval_secs = 0),
        FlowLogError::Interval(0)
    );
    assert_eq!(refused(|c| c.max_flows = 0), FlowLogError::MaxFlows(0));
    assert_eq!(
        refused(|c| c.max_flows = MAX_FLOWS_LIMIT + 1),
        FlowLogError::MaxFlows(MAX_FLOWS_LIMIT + 1)
    );
    assert_eq!(
        refused(|c| c.max_records_per_interval = 0),
        FlowLogError::MaxRecords
    );
}
