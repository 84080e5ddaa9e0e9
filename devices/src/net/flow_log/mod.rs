//! VPC Flow Logs for one NIC: packets and bytes aggregated per 5-tuple and
//! action over a capture window, written as EC2's default (version 2)
//! records.
//!
//! ```text
//! version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status
//! 2 123456789012 eni-0a1b2c3d 10.0.0.5 10.0.0.9 49152 443 6 12 4096 1700000001 1700000042 ACCEPT OK
//! 2 123456789012 eni-0a1b2c3d - - - - - - - 1700000000 1700000060 - NODATA
//! 2 123456789012 eni-0a1b2c3d - - - - - - - 1700000000 1700000060 - SKIPDATA
//! ```
//!
//! A pure library: the datapath calls [`FlowLog::record`] for every packet
//! it accepts or rejects, giving the time, and now and then asks
//! [`FlowLog::flush_due`] and calls [`FlowLog::flush`] with somewhere to
//! write. Nothing here reads a clock, spawns a thread or blocks.
//!
//! # Capture windows
//!
//! A window opens at the first [`record`](FlowLog::record) or
//! [`flush`](FlowLog::flush) and is closed by the next `flush`, which opens
//! the following one at the same instant. [`flush_due`](FlowLog::flush_due)
//! says when the window has lasted `aggregation_interval_secs`, and also
//! while no window has opened yet, so that a caller driven by a timer opens
//! the first one (that flush writes nothing) and then gets a `NODATA`
//! record for every quiet window, as EC2 does. A packet that arrives after
//! the window's nominal end but before the flush still belongs to it; the
//! window's edges are the flush times, and a record's `start`/`end` are the
//! Unix seconds of the flow's first and last packet in the window.
//!
//! # Bounds
//!
//! The flow table holds at most `max_flows` flows (one per 5-tuple and
//! action), allocated up front, so recording a packet is one hash look-up
//! and never allocates. A packet of a flow that finds the table full is
//! not recorded, and the window's output ends with one `SKIPDATA` record.
//! At most `max_records_per_interval` flow records are written per window;
//! the flows past that are left out and, again, one `SKIPDATA` record
//! stands for them. `NODATA` and `SKIPDATA` records carry `-` in every
//! field from `srcaddr` to `bytes` and in `action`, and the window's
//! edges as `start` and `end`.
//!
//! # A writer that fails
//!
//! [`flush`](FlowLog::flush) closes the window whatever the writer does.
//! At the first write error (a full non-blocking pipe's `WouldBlock`
//! included) it stops writing: that record and every one after it in the
//! window are dropped and counted in `flow_log_write_errors`, and the error
//! is returned. A line the writer took only part of is ended with a newline
//! at the start of the next flush, so one torn record never runs into the
//! next.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// Largest `max_flows` accepted: the table is allocated up front.
pub const MAX_FLOWS_LIMIT: usize = 1 << 20;

/// The aggregation intervals EC2 lets a flow log have, in seconds.
pub const AGGREGATION_INTERVALS: [u32; 2] = [60, 600];

/// A flow log's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct FlowLogConfig {
    /// The owner's 12-digit AWS account ID.
    #[serde(default = "default_account_id")]
    pub account_id: String,
    /// The network interface's ID: `eni-` and 8 or 17 lowercase hex digits.
    pub interface_id: String,
    /// The capture window's length: 60 (as on Nitro, the default) or 600.
    #[serde(default = "default_interval")]
    pub aggregation_interval_secs: u32,
    /// How many flows (5-tuple and action) one window can hold,
    /// 1..=[`MAX_FLOWS_LIMIT`].
    #[serde(default = "default_max_flows")]
    pub max_flows: usize,
    /// How many flow records one window writes at most (at least 1).
    #[serde(default = "default_max_records")]
    pub max_records_per_interval: usize,
}

fn default_account_id() -> String {
    "000000000000".to_owned()
}

fn default_interval() -> u32 {
    60
}

fn default_max_flows() -> usize {
    10_000
}

fn default_max_records() -> usize {
    10_000
}

impl FlowLogConfig {
    /// The defaults for the interface `interface_id`.
    pub fn new(interface_id: &str) -> FlowLogConfig {
        FlowLogConfig {
            account_id: default_account_id(),
            interface_id: interface_id.to_owned(),
            aggregation_interval_secs: default_interval(),
            max_flows: default_max_flows(),
            max_records_per_interval: default_max_records(),
        }
    }
}

/// Why a [`FlowLogConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowLogError {
    /// The account ID is not 12 decimal digits.
    #[error("flow log account_id {0:?} is not 12 decimal digits")]
    AccountId(String),
    /// The interface ID is not `eni-` and 8 or 17 lowercase hex digits.
    #[error("flow log interface_id {0:?} is not eni- and 8 or 17 lowercase hex digits")]
    InterfaceId(String),
    /// The aggregation interval is neither 60 nor 600 seconds.
    #[error("flow log aggregation_interval_secs {0} is neither 60 nor 600")]
    Interval(u32),
    /// `max_flows` is 0 or above [`MAX_FLOWS_LIMIT`].
    #[error("flow log max_flows {0} is not in 1..={MAX_FLOWS_LIMIT}")]
    MaxFlows(usize),
    /// `max_records_per_interval` is 0.
    #[error("flow log max_records_per_interval must be at least 1")]
    MaxRecords,
}

/// What the datapath did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let through.
    Accept,
    /// Dropped by a rule.
    Reject,
}

impl Action {
    /// The record's `action` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "ACCEPT",
            Action::Reject => "REJECT",
        }
    }
}

/// A packet's 5-tuple. Protocols without ports (ICMP, ICMPv6, …) give 0
/// for both, as EC2's records show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port, 0 without one.
    pub src_port: u16,
    /// Destination port, 0 without one.
    pub dst_port: u16,
    /// IANA protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub protocol: u8,
}

/// One flow of the open window.
#[derive(Debug, Clone, Copy)]
struct Flow {
    tuple: FlowTuple,
    action: Action,
    packets: u64,
    bytes: u64,
    first_secs: u64,
    last_secs: u64,
}

/// Monotonic counters, reported by [`FlowLog::write_metrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    /// Lines written whole (flow, `NODATA` and `SKIPDATA` records).
    records: u64,
    /// Flows left out: each packet that found the table full (the table
    /// cannot tell a new flow's second packet from another new flow), and
    /// each flow past `max_records_per_interval`.
    skipped_flows: u64,
    /// Records dropped because the writer failed.
    write_errors: u64,
}

/// The flow log of one NIC.
#[derive(Debug)]
pub struct FlowLog {
    config: FlowLogConfig,
    /// Where each (tuple, action) is in `flows`.
    index: HashMap<(FlowTuple, Action), usize>,
    /// The open window's flows, in the order they were first seen.
    flows: Vec<Flow>,
    /// When the open window opened (Unix ms); `None` before the first
    /// record or flush.
    opened_ms: Option<u64>,
    /// Packets of the open window that found the table full.
    table_full_packets: u64,
    /// The writer took part of the last line and failed.
    torn_line: bool,
    /// Reused to format one record.
    line: String,
    counters: Counters,
}

impl FlowLog {
    /// Checks `config` and allocates the flow table.
    pub fn new(config: FlowLogConfig) -> Result<FlowLog, FlowLogError> {
        if config.account_id.len() != 12 || !config.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FlowLogError::AccountId(config.account_id));
        }
        if !valid_interface_id(&config.interface_id) {
            return Err(FlowLogError::InterfaceId(config.interface_id));
        }
        if !AGGREGATION_INTERVALS.contains(&config.aggregation_interval_secs) {
            return Err(FlowLogError::Interval(config.aggregation_interval_secs));
        }
        if config.max_flows == 0 || config.max_flows > MAX_FLOWS_LIMIT {
            return Err(FlowLogError::MaxFlows(config.max_flows));
        }
        if config.max_records_per_interval == 0 {
            return Err(FlowLogError::MaxRecords);
        }
        Ok(FlowLog {
            index: HashMap::with_capacity(config.max_flows),
            flows: Vec::with_capacity(config.max_flows),
            opened_ms: None,
            table_full_packets: 0,
            torn_line: false,
            line: String::with_capacity(192),
            counters: Counters::default(),
            config,
        })
    }

    /// The settings it runs with.
    pub fn config(&self) -> &FlowLogConfig {
        &self.config
    }

    /// Counts one packet of `bytes` bytes (its IP length, as EC2 counts)
    /// that the datapath dealt with as `action` at `now_ms` (Unix epoch
    /// milliseconds). Never allocates: a flow that finds the table full
    /// is left out and the window will say `SKIPDATA`.
    pub fn record(&mut self, key: FlowTuple, action: Action, bytes: u32, now_ms: u64) {
        if self.opened_ms.is_none() {
            self.opened_ms = Some(now_ms);
        }
        let now_secs = now_ms / 1000;
        if let Some(&slot) = self.index.get(&(key, action)) {
            let flow = &mut self.flows[slot];
            flow.packets = flow.packets.saturating_add(1);
            flow.bytes = flow.bytes.saturating_add(u64::from(bytes));
            // A clock stepped back keeps start <= end.
            flow.first_secs = flow.first_secs.min(now_secs);
            flow.last_secs = flow.last_secs.max(now_secs);
            return;
        }
        if self.flows.len() >= self.config.max_flows {
            self.table_full_packets = self.table_full_packets.saturating_add(1);
            self.counters.skipped_flows = self.counters.skipped_flows.saturating_add(1);
            return;
        }
        // Both stay within the capacity reserved in `new`: no allocation.
        self.index.insert((key, action), self.flows.len());
        self.flows.push(Flow {
            tuple: key,
            action,
            packets: 1,
            bytes: u64::from(bytes),
            first_secs: now_secs,
            last_secs: now_secs,
        });
    }

    /// Whether the open window has lasted the aggregation interval at
    /// `now_ms`, or no window has opened yet (a flush then opens one).
    pub fn flush_due(&self, now_ms: u64) -> bool {
        match self.opened_ms {
            None => true,
            Some(opened) => {
                let interval_ms = u64::from(self.config.aggregation_interval_secs) * 1000;
                now_ms >= opened.saturating_add(interval_ms)
            }
        }
    }

    /// Closes the open window at `now_ms`, writes its records to `out`
    /// (one line each) and opens the next window. Returns how many records
    /// were written: every flow (at most `max_records_per_interval`), then
    /// one `SKIPDATA` record if any flow was left out, or one `NODATA`
    /// record for a window without traffic; nothing if no window was open.
    ///
    /// At the first write error the rest of the window's records are
    /// dropped (and counted in `flow_log_write_errors`) and that error is
    /// returned; the window is closed all the same, so a retry writes
    /// nothing of it again.
    pub fn flush(&mut self, now_ms: u64, out: &mut dyn Write) -> io::Result<usize> {
        let Some(opened_ms) = self.opened_ms.replace(now_ms) else {
            return Ok(0);
        };
        let window_start = opened_ms / 1000;
        let window_end = (now_ms / 1000).max(window_start);

        let cap = self.config.max_records_per_interval;
        let over_cap = self.flows.len().saturating_sub(cap);
        self.counters.skipped_flows = self
            .counters
            .skipped_flows
            .saturating_add(u64::try_from(over_cap).unwrap_or(u64::MAX));
        let skipped = self.table_full_packets > 0 || over_cap > 0;
        let status_record = if self.flows.is_empty() {
            Some("NODATA")
        } else if skipped {
            Some("SKIPDATA")
        } else {
            None
        };
        let total = self.flows.len().min(cap) + usize::from(status_record.is_some());

        let mut written = 0;
        let mut result = Ok(());
        if self.torn_line {
            match write_whole(out, b"\n") {
                Ok(()) => self.torn_line = false,
                Err((_, err)) => result = Err(err),
            }
        }
        if result.is_ok() {
            for i in 0..self.flows.len().min(cap) {
                let flow = self.flows[i];
                self.format_flow(&flow);
                if let Err(err) = self.emit(out) {
                    result = Err(err);
                    break;
                }
                written += 1;
            }
        }
        if result.is_ok() {
            if let Some(status) = status_record {
                self.format_status(window_start, window_end, status);
                match self.emit(out) {
                    Ok(()) => written += 1,
                    Err(err) => result = Err(err),
                }
            }
        }

        let lost = total - written;
        self.counters.records = self
            .counters
            .records
            .saturating_add(u64::try_from(written).unwrap_or(u64::MAX));
        self.counters.write_errors = self
            .counters
            .write_errors
            .saturating_add(u64::try_from(lost).unwrap_or(u64::MAX));
        self.flows.clear();
        self.index.clear();
        self.table_full_packets = 0;
        result.map(|()| written)
    }

    /// Reports the counters under their `snake_case` names.
    pub fn write_metrics(&self, out: &mut dyn FnMut(&'static str, u64)) {
        out("flow_log_records", self.counters.records);
        out("flow_log_skipped_flows", self.counters.skipped_flows);
        out("flow_log_write_errors", self.counters.write_errors);
    }

    /// Puts `flow`'s record in `self.line`.
    fn format_flow(&mut self, flow: &Flow) {
        self.line.clear();
        let t = &flow.tuple;
        // Writing to a String cannot fail.
        let _ = writeln!(
            self.line,
            "2 {} {} {} {} {} {} {} {} {} {} {} {} OK",
            self.config.account_id,
            self.config.interface_id,
            t.src,
            t.dst,
            t.src_port,
            t.dst_port,
            t.protocol,
            flow.packets,
            flow.bytes,
            flow.first_secs,
            flow.last_secs,
            flow.action.as_str(),
        );
    }

    /// Puts a `NODATA` or `SKIPDATA` record in `self.line`.
    fn format_status(&mut self, start: u64, end: u64, status: &str) {
        self.line.clear();
        let _ = writeln!(
            self.line,
            "2 {} {} - - - - - - - {start} {end} - {status}",
            self.config.account_id, self.config.interface_id,
        );
    }

    /// Writes `self.line`, remembering a line the writer took only part of.
    fn emit(&mut self, out: &mut dyn Write) -> io::Result<()> {
        write_whole(out, self.line.as_bytes()).map_err(|(done, err)| {
            self.torn_line = done > 0;
            err
        })
    }
}

/// Writes all of `bytes`, retrying only on `Interrupted`; on failure says
/// how many bytes the writer had taken.
fn write_whole(out: &mut dyn Write, bytes: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut done = 0;
    while done < bytes.len() {
        match out.write(&bytes[done..]) {
            Ok(0) => return Err((done, io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err((done, err)),
        }
    }
    Ok(())
}

/// `eni-` and 8 or 17 lowercase hex digits, as EC2 names interfaces.
fn valid_interface_id(id: &str) -> bool {
    let Some(hex) = id.strip_prefix("eni-") else {
        return false;
    };
    (hex.len() == 8 || hex.len() == 17)
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
