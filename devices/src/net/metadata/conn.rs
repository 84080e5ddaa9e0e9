//! One TCP connection from the guest to the service, and the table of
//! them.
//!
//! A purpose-made responder, not a stack: passive open only; the guest's
//! data is taken in order into a fixed receive buffer (out-of-order
//! segments are dropped and the guest retransmits; data beyond the free
//! space is not acknowledged); HTTP responses wait in a fixed queue and go
//! out as segments of at most the MSS, at most [`FLIGHT_SEGMENTS`] in
//! flight and never beyond the guest's window; a timer resends from the
//! oldest unacknowledged byte (go-back-N), three duplicate ACKs do the
//! same at once. No window scaling, SACK or timestamps are offered, so the
//! guest uses none.
//!
//! Closing: the service closes after a response that says so (`Connection:
//! close`, HTTP/1.0, an error that ends the request stream), when the
//! guest closes its side, and when a connection sits idle. A connection is
//! forgotten as soon as both FINs are acknowledged (no TIME-WAIT: should
//! the guest's last ACK be lost, its retransmitted FIN gets a reset, which
//! it takes as the close it is); or [`FIN_TIMEOUT_MS`] after the first
//! FIN, with a reset, if the other never comes.

use std::collections::HashMap;

use super::http::{self, Context, Response, Scan, Step, TokenEvent};
use super::wire::{
    seq_add, seq_diff, seq_gt, seq_lt, ConnKey, Emitter, Header, Tcp, ACK, FIN, MIN_MSS, PSH, RST,
    SYN,
};
use super::Counters;
use crate::net::MacAddr;

/// Bytes of a connection's receive buffer: the largest request (headers
/// and any body) it takes.
pub const REQUEST_BUFFER: usize = 8 * 1024;
/// Responses that can wait per connection: more pipelined requests stay
/// unparsed in the receive buffer (whose window then shrinks) until the
/// guest acknowledges the oldest.
pub(crate) const QUEUE_DEPTH: usize = 4;
/// Most connections at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// A connection must complete a request, or acknowledge data, this long
/// after it opened or last did: slowloris and half-open connections end
/// here.
pub const IDLE_TIMEOUT_MS: u64 = 10_000;
/// A connection is forgotten this long after its first FIN, whatever the
/// other side does.
pub const FIN_TIMEOUT_MS: u64 = 5_000;
/// First retransmission timeout of a SYN-ACK (RFC 6298 §2.1).
const SYN_RTO_MS: u64 = 1_000;
/// First retransmission timeout of data: the guest is a memory copy away,
/// so only a lost frame (a full local-frame queue) waits for it.
const DATA_RTO_MS: u64 = 200;
/// Longest retransmission timeout.
const MAX_RTO_MS: u64 = 4_000;
/// Retransmissions before the connection is reset.
const MAX_RETRIES: u8 = 6;
/// Most unacknowledged segments: the datapath's local-frame queue holds
/// 16 frames, and a burst longer than what it can take is lost.
pub(crate) const FLIGHT_SEGMENTS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// SYN received, SYN-ACK sent.
    SynReceived,
    /// Handshake done.
    Established,
}

/// Whether a connection lives on after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Keep,
    Free,
}

/// One connection's state and fixed buffers.
pub(crate) struct Conn {
    key: ConnKey,
    /// The Ethernet address the guest sent the SYN to: the source of every
    /// frame of this connection.
    local_mac: MacAddr,
    state: State,

    /// Initial send sequence number.
    iss: u32,
    /// Oldest unacknowledged sequence number.
    snd_una: u32,
    /// Next sequence number to send.
    snd_nxt: u32,
    /// Highest sequence number sent, plus one.
    snd_max: u32,
    /// The guest's window (unscaled).
    snd_wnd: u16,
    /// Largest payload to send.
    mss: u16,
    /// Responses from `snd_una` on, oldest at `q_head`.
    queue: [Response; QUEUE_DEPTH],
    q_head: usize,
    q_len: usize,
    /// Bytes of the oldest response already acknowledged.
    front_acked: usize,
    /// No more requests are taken; FIN follows the last response.
    closing: bool,
    fin_sent: bool,
    fin_acked: bool,
    dup_acks: u8,
    /// Counted in `imds_timeouts` already (an idle connection closed
    /// politely whose FIN then times out counts once).
    timed_out: bool,

    /// Next sequence number expected from the guest.
    rcv_nxt: u32,
    fin_received: bool,
    rx: Box<[u8]>,
    rx_len: usize,
    scan: Scan,
    /// An ACK must go out (data or FIN taken, or a segment to answer).
    ack_due: bool,

    rto_ms: u64,
    retries: u8,
    rto_at: Option<u64>,
    idle_at: u64,
    linger_at: Option<u64>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("key", &self.key)
            .field("state", &self.state)
            .field("snd_una", &self.snd_una)
            .field("snd_nxt", &self.snd_nxt)
            .field("rcv_nxt", &self.rcv_nxt)
            .field("queued", &self.q_len)
            .field("rx_len", &self.rx_len)
            .field("closing", &self.closing)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// A free slot with its receive buffer.
    fn new() -> Self {
        Self {
            rx: vec![0; REQUEST_BUFFER].into_boxed_slice(),
            ..Self::new_shell()
        }
    }

    /// Makes this (free) slot the connection a SYN opens, and answers it.
    fn open(
        &mut self,
        key: ConnKey,
        local_mac: MacAddr,
        syn: &Tcp<'_>,
        iss: u32,
        now_ms: u64,
        tx: &mut Emitter<'_>,
    ) {
        let rx = std::mem::take(&mut self.rx);
        *self = Self {
            key,
            local_mac,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: syn.window,
            mss: syn.mss.unwrap_or(MIN_MSS).clamp(MIN_MSS, key.max_mss()),
            rcv_nxt: syn.seq.wrapping_add(1),
            rx,
            idle_at: now_ms.saturating_add(IDLE_TIMEOUT_MS),
            ..Self::new_shell()
        };
        self.send_syn_ack(now_ms, tx);
    }

    /// A connection without a receive buffer.
    fn new_shell() -> Self {
        Self {
            key: ConnKey {
                guest_ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
                guest_port: 0,
            },
            local_mac: MacAddr::default(),
            state: State::SynReceived,
            iss: 0,
            snd_una: 0,
            snd_nxt: 0,
            snd_max: 0,
            snd_wnd: 0,
            mss: MIN_MSS,
            queue: Default::default(),
            q_head: 0,
            q_len: 0,
            front_acked: 0,
            closing: false,
            fin_sent: false,
            fin_acked: false,
            dup_acks: 0,
            timed_out: false,
            rcv_nxt: 0,
            fin_received: false,
            rx: Box::default(),
            rx_len: 0,
            scan: Scan::default(),
            ack_due: false,
            rto_ms: SYN_RTO_MS,
            retries: 0,
            rto_at: None,
            idle_at: 0,
            linger_at: None,
        }
    }

    /// Lets go of what the connection holds (shared response bodies).
    fn release(&mut self) {
        for resp in &mut self.queue {
            resp.clear();
        }
        self.q_len = 0;
        self.rx_len = 0;
    }

    /// The earliest time [`Conn::on_timer`] has something to do.
    pub(crate) fn deadline(&self) -> u64 {
        let mut at = self.idle_at;
        for t in [self.rto_at, self.linger_at].into_iter().flatten() {
            at = at.min(t);
        }
        at
    }

    fn window(&self) -> u16 {
        let free = if self.closing {
            REQUEST_BUFFER
        } else {
            REQUEST_BUFFER - self.rx_len
        };
        u16::try_from(free).unwrap_or(u16::MAX)
    }

    fn header(&self, seq: u32, flags: u8) -> Header {
        Header {
            seq,
            ack: self.rcv_nxt,
            flags,
            window: self.window(),
            mss: None,
        }
    }

    fn send_syn_ack(&mut self, now_ms: u64, tx: &mut Emitter<'_>) {
        let header = Header {
            mss: Some(self.key.max_mss()),
            ..self.header(self.iss, SYN | ACK)
        };
        tx.control(&self.key, self.local_mac, header);
        self.snd_nxt = self.iss.wrapping_add(1);
        self.snd_max = self.snd_nxt;
        self.rto_at = Some(now_ms.saturating_add(self.rto_ms));
    }

    /// Resets the connection (the caller then frees it).
    fn abort(&mut self, tx: &mut Emitter<'_>) {
        let header = self.header(self.snd_nxt, RST | ACK);
        tx.control(&self.key, self.local_mac, header);
    }

    /// Bytes of the response stream from `snd_una` on.
    fn stream_len(&self) -> usize {
        let queued: usize = (0..self.q_len)
            .map(|i| self.queue[(self.q_head + i) % QUEUE_DEPTH].len())
            .sum();
        queued - self.front_acked
    }

    /// Copies the stream from `offset` (bytes after `snd_una`) into `dst`.
    fn copy_stream(&self, offset: usize, dst: &mut [u8]) -> usize {
        let mut offset = offset + self.front_acked;
        let mut copied = 0;
        for i in 0..self.q_len {
            let resp = &self.queue[(self.q_head + i) % QUEUE_DEPTH];
            if offset >= resp.len() {
                offset -= resp.len();
                continue;
            }
            copied += resp.copy_at(offset, &mut dst[copied..]);
            offset = 0;
            if copied == dst.len() {
                break;
            }
        }
        copied
    }

    /// Takes an acknowledgment of `n` bytes past `snd_una`.
    fn acknowledge(&mut self, ack: u32, now_ms: u64) {
        let mut n = seq_diff(ack, self.snd_una);
        while n > 0 && self.q_len > 0 {
            let front = &mut self.queue[self.q_head];
            let left = front.len() - self.front_acked;
            if n >= left {
                n -= left;
                front.clear();
                self.q_head = (self.q_head + 1) % QUEUE_DEPTH;
                self.q_len -= 1;
                self.front_acked = 0;
            } else {
                self.front_acked += n;
                n = 0;
            }
        }
        if n > 0 && self.fin_sent {
            self.fin_acked = true;
        }
        self.snd_una = ack;
        if seq_lt(self.snd_nxt, ack) {
            self.snd_nxt = ack;
        }
        self.retries = 0;
        self.rto_ms = DATA_RTO_MS;
        self.rto_at = None;
        self.dup_acks = 0;
        self.idle_at = now_ms.saturating_add(IDLE_TIMEOUT_MS);
    }

    /// Handles a segment of this connection.
    pub(crate) fn on_segment(
        &mut self,
        seg: &Tcp<'_>,
        ctx: &Context<'_>,
        tx: &mut Emitter<'_>,
        counters: &mut Counters,
    ) -> Fate {
        let now_ms = ctx.now_ms;
        if seg.has(RST) {
            // RFC 5961 §3: only a reset inside the window is believed.
            let offset = seq_diff(seg.seq, self.rcv_nxt);
            if offset < usize::from(self.window()).max(1) {
                return Fate::Free;
            }
            counters.bad_segments += 1;
            return Fate::Keep;
        }
        if seg.has(SYN) {
            if self.state == State::SynReceived && !seg.has(ACK) {
                // The SYN again: our SYN-ACK was lost.
                self.rcv_nxt = seg.seq.wrapping_add(1);
                self.send_syn_ack(now_ms, tx);
            } else {
                // RFC 5961 §4: a challenge ACK; a guest that restarted
                // answers it with a reset, then connects again.
                tx.control(&self.key, self.local_mac, self.header(self.snd_nxt, ACK));
            }
            return Fate::Keep;
        }
        if !seg.has(ACK) {
            counters.bad_segments += 1;
            return Fate::Keep;
        }
        if self.state == State::SynReceived {
            if seg.ack != self.iss.wrapping_add(1) {
                counters.bad_segments += 1;
                tx.reset_for(&self.key, self.local_mac, seg);
                return Fate::Keep;
            }
            self.state = State::Established;
            self.snd_una = seg.ack;
            self.snd_nxt = seg.ack;
            self.snd_max = seg.ack;
            self.rto_ms = DATA_RTO_MS;
            self.rto_at = None;
            self.retries = 0;
        } else if seq_gt(seg.ack, self.snd_max) {
            // Acknowledges what was never sent: dropped, answered with
            // an ACK (RFC 9293 §3.10.7.4).
            counters.bad_segments += 1;
            self.ack_due = true;
            self.output(now_ms, false, tx);
            return Fate::Keep;
        } else if seq_gt(seg.ack, self.snd_una) {
            self.acknowledge(seg.ack, now_ms);
        } else if seg.ack == self.snd_una
            && seg.payload.is_empty()
            && !seg.has(FIN)
            && seg.window == self.snd_wnd
            && self.snd_max != self.snd_una
        {
            self.dup_acks = self.dup_acks.saturating_add(1);
            if self.dup_acks == 3 {
                // Fast retransmit (RFC 5681 §3.2), go-back-N style.
                self.snd_nxt = self.snd_una;
                counters.retransmits += 1;
            }
        }
        self.snd_wnd = seg.window;
        self.receive(seg, now_ms, counters);
        self.serve_requests(ctx, counters);
        self.output(now_ms, false, tx);
        self.fate()
    }

    /// Takes the segment's data and FIN, in order only.
    fn receive(&mut self, seg: &Tcp<'_>, now_ms: u64, counters: &mut Counters) {
        let carries = !seg.payload.is_empty() || seg.has(FIN);
        if !carries {
            return;
        }
        self.ack_due = true;
        if self.fin_received {
            return;
        }
        if seq_gt(seg.seq, self.rcv_nxt) {
            counters.out_of_order += 1;
            return;
        }
        let skip = seq_diff(self.rcv_nxt, seg.seq);
        let Some(new) = seg.payload.get(skip..) else {
            // Entirely old: a retransmission; the ACK answers it.
            return;
        };
        let mut whole = true;
        if self.closing {
            // Nothing more is read: take it and throw it away.
            self.rcv_nxt = seq_add(self.rcv_nxt, new.len());
        } else {
            let take = new.len().min(REQUEST_BUFFER - self.rx_len);
            self.rx[self.rx_len..self.rx_len + take].copy_from_slice(&new[..take]);
            self.rx_len += take;
            self.rcv_nxt = seq_add(self.rcv_nxt, take);
            whole = take == new.len();
        }
        if seg.has(FIN) && whole {
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
            self.fin_received = true;
            self.linger_at
                .get_or_insert(now_ms.saturating_add(FIN_TIMEOUT_MS));
        }
    }

    /// Answers the whole requests in the receive buffer, oldest first,
    /// while the response queue has room.
    fn serve_requests(&mut self, ctx: &Context<'_>, counters: &mut Counters) {
        let mut incomplete = self.rx_len == 0;
        while !self.closing && self.q_len < QUEUE_DEPTH && self.rx_len > 0 {
            let slot = (self.q_head + self.q_len) % QUEUE_DEPTH;
            let step = http::serve(
                &self.rx[..self.rx_len],
                REQUEST_BUFFER,
                &mut self.scan,
                ctx,
                &mut self.queue[slot],
            );
            match step {
                Step::Incomplete => {
                    incomplete = true;
                    break;
                }
                Step::Skip(n) => self.drain(n),
                Step::Answered {
                    consumed,
                    status,
                    close,
                    token,
                } => {
                    self.q_len += 1;
                    self.drain(consumed);
                    counters.requests += 1;
                    match status {
                        200..=299 => counters.responses_2xx += 1,
                        _ => counters.responses_4xx += 1,
                    }
                    match token {
                        TokenEvent::Issued => counters.tokens_issued += 1,
                        TokenEvent::Rejected => counters.token_rejected += 1,
                        TokenEvent::None => {}
                    }
                    self.idle_at = ctx.now_ms.saturating_add(IDLE_TIMEOUT_MS);
                    if close {
                        self.stop_reading();
                    }
                }
            }
            incomplete = self.rx_len == 0;
        }
        // Whatever the guest sent before its FIN is all it will send.
        if self.fin_received && incomplete {
            self.stop_reading();
        }
    }

    /// Takes no more requests: FIN follows the responses queued.
    fn stop_reading(&mut self) {
        self.closing = true;
        self.rx_len = 0;
        self.scan = Scan::default();
    }

    fn drain(&mut self, n: usize) {
        let n = n.min(self.rx_len);
        self.rx.copy_within(n..self.rx_len, 0);
        self.rx_len -= n;
    }

    /// Sends what the window and flight limit allow, the FIN when due, and
    /// an ACK if one is owed and nothing else carried it. `probe` lets one
    /// byte through a zero window (a retransmission timeout).
    fn output(&mut self, now_ms: u64, probe: bool, tx: &mut Emitter<'_>) {
        if self.state == State::SynReceived {
            return;
        }
        let stream_len = self.stream_len();
        let data_end = seq_add(self.snd_una, stream_len);
        let mss = usize::from(self.mss).min(Emitter::room(&self.key, false));
        let mut window = usize::from(self.snd_wnd);
        if probe {
            window = window.max(1);
        }
        let limit = seq_add(self.snd_una, window.min(FLIGHT_SEGMENTS * mss));
        loop {
            let offset = seq_diff(self.snd_nxt, self.snd_una);
            let remaining = if seq_gt(self.snd_nxt, data_end) {
                0
            } else {
                stream_len.saturating_sub(offset)
            };
            let allowed = if seq_lt(self.snd_nxt, limit) {
                seq_diff(limit, self.snd_nxt)
            } else {
                0
            };
            let n = remaining.min(allowed).min(mss);
            let fin = self.closing
                && !self.fin_acked
                && n == remaining
                && seq_add(self.snd_nxt, n) == data_end;
            if n == 0 && !fin {
                break;
            }
            let flags = ACK | if n > 0 { PSH } else { 0 } | if fin { FIN } else { 0 };
            let header = self.header(self.snd_nxt, flags);
            let this = &*self;
            tx.tcp(&self.key, self.local_mac, header, n, |dst| {
                this.copy_stream(offset, dst)
            });
            self.snd_nxt = seq_add(self.snd_nxt, n + usize::from(fin));
            if seq_gt(self.snd_nxt, self.snd_max) {
                self.snd_max = self.snd_nxt;
            }
            self.ack_due = false;
            if fin {
                self.fin_sent = true;
                self.linger_at
                    .get_or_insert(now_ms.saturating_add(FIN_TIMEOUT_MS));
                break;
            }
        }
        if self.ack_due {
            tx.control(&self.key, self.local_mac, self.header(self.snd_nxt, ACK));
            self.ack_due = false;
        }
        let outstanding = self.snd_max != self.snd_una;
        let blocked = stream_len > 0 || (self.closing && !self.fin_acked);
        if outstanding || blocked {
            self.rto_at
                .get_or_insert(now_ms.saturating_add(self.rto_ms));
        } else {
            self.rto_at = None;
        }
    }

    fn fate(&self) -> Fate {
        if self.fin_received && self.fin_acked {
            Fate::Free
        } else {
            Fate::Keep
        }
    }

    fn count_timeout(&mut self, counters: &mut Counters) {
        if !self.timed_out {
            self.timed_out = true;
            counters.timeouts += 1;
        }
    }

    /// Runs the timers due at `now_ms`.
    pub(crate) fn on_timer(
        &mut self,
        now_ms: u64,
        tx: &mut Emitter<'_>,
        counters: &mut Counters,
    ) -> Fate {
        if self.linger_at.is_some_and(|t| now_ms >= t) {
            self.count_timeout(counters);
            self.abort(tx);
            return Fate::Free;
        }
        if now_ms >= self.idle_at {
            self.count_timeout(counters);
            let quiet = self.state == State::Established
                && self.rx_len == 0
                && self.q_len == 0
                && !self.closing
                && self.snd_max == self.snd_una;
            if !quiet {
                self.abort(tx);
                return Fate::Free;
            }
            // An idle keep-alive connection: close it politely.
            self.stop_reading();
            self.idle_at = now_ms.saturating_add(IDLE_TIMEOUT_MS);
            self.output(now_ms, false, tx);
            return Fate::Keep;
        }
        if self.rto_at.is_some_and(|t| now_ms >= t) {
            self.retries += 1;
            if self.retries > MAX_RETRIES {
                self.count_timeout(counters);
                self.abort(tx);
                return Fate::Free;
            }
            self.rto_ms = (self.rto_ms * 2).min(MAX_RTO_MS);
            self.rto_at = None;
            counters.retransmits += 1;
            if self.state == State::SynReceived {
                self.send_syn_ack(now_ms, tx);
            } else {
                self.snd_nxt = self.snd_una;
                self.output(now_ms, true, tx);
            }
        }
        Fate::Keep
    }
}

/// The connections, found by 4-tuple in O(1): a hash map of indices
/// (capacity reserved up front, so it never grows) into slots allocated
/// the first time that many connections are open at once, and reused.
#[derive(Debug)]
pub(crate) struct Table {
    map: HashMap<ConnKey, usize>,
    slots: Vec<Conn>,
    free: Vec<usize>,
}

impl Table {
    pub(crate) fn new() -> Self {
        Self {
            // Twice what is needed: the map then always has room to
            // rehash in place over the tombstones closed connections leave,
            // so it never reallocates.
            map: HashMap::with_capacity(2 * MAX_CONNECTIONS),
            slots: Vec::with_capacity(MAX_CONNECTIONS),
            free: Vec::with_capacity(MAX_CONNECTIONS),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn get_mut(&mut self, key: &ConnKey) -> Option<(usize, &mut Conn)> {
        let &index = self.map.get(key)?;
        self.slots.get_mut(index).map(|conn| (index, conn))
    }

    /// Opens a connection for `syn`, or returns `false` if the table is
    /// full.
    pub(crate) fn open(
        &mut self,
        key: ConnKey,
        local_mac: MacAddr,
        syn: &Tcp<'_>,
        iss: u32,
        now_ms: u64,
        tx: &mut Emitter<'_>,
    ) -> Option<&Conn> {
        if self.map.len() >= MAX_CONNECTIONS {
            return None;
        }
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Conn::new());
                self.slots.len() - 1
            }
        };
        let conn = self.slots.get_mut(index)?;
        conn.open(key, local_mac, syn, iss, now_ms, tx);
        self.map.insert(key, index);
        Some(conn)
    }

    /// Forgets the connection in slot `index`.
    pub(crate) fn close(&mut self, index: usize) {
        if let Some(conn) = self.slots.get_mut(index) {
            if self.map.remove(&conn.key).is_some() {
                conn.release();
                self.free.push(index);
            }
        }
    }

    /// Runs every connection's due timers; returns the earliest deadline
    /// left.
    pub(crate) fn poll(
        &mut self,
        now_ms: u64,
        tx: &mut Emitter<'_>,
        counters: &mut Counters,
    ) -> Option<u64> {
        let mut earliest: Option<u64> = None;
        for index in 0..self.slots.len() {
            let conn = &mut self.slots[index];
            if self.map.get(&conn.key) != Some(&index) {
                continue;
            }
            let fate = if conn.deadline() <= now_ms {
                conn.on_timer(now_ms, tx, counters)
            } else {
                Fate::Keep
            };
            match fate {
                Fate::Free => self.close(index),
                Fate::Keep => {
                    let at = conn.deadline();
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                }
            }
        }
        earliest
    }
}
