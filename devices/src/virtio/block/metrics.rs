//! Per-device counters, bumped where each event happens and read by the
//! VMM on demand (the device sits behind a mutex, so plain integers do).

/// What one block device has done since it was created.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockMetrics {
    /// Queue notifications handled.
    pub queue_events: u64,
    /// Completed reads.
    pub reads: u64,
    /// Bytes read into the guest.
    pub read_bytes: u64,
    /// Completed writes.
    pub writes: u64,
    /// Bytes written from the guest.
    pub write_bytes: u64,
    /// Completed flushes.
    pub flushes: u64,
    /// GET_ID requests answered.
    pub get_ids: u64,
    /// Completed discards.
    pub discards: u64,
    /// Completed write-zeroes requests.
    pub write_zeroes: u64,
    /// Requests answered IOERR because the disk failed.
    pub io_errors: u64,
    /// Malformed requests answered IOERR (bad descriptors, directions,
    /// lengths, sectors or guest addresses).
    pub invalid_requests: u64,
    /// Requests answered UNSUPP (unknown type, reserved flags).
    pub unsupported: u64,
    /// Writes refused because the device is read-only.
    pub read_only_rejections: u64,
    /// Chains without a usable status byte: returned with length 0 and
    /// no status, since there is nowhere to write one.
    pub dropped_chains: u64,
    /// Broken queues (bad avail index, used ring not writable); the device
    /// then asks the driver for a reset.
    pub queue_errors: u64,
    /// Used-buffer interrupts raised.
    pub interrupts: u64,
    /// Completion events handled (the io_uring eventfd fired).
    pub completion_events: u64,
    /// Requests the backend served on the device thread instead of direct
    /// I/O: reads and writes it routed to the synchronous path (qcow2
    /// allocation, copy-on-write, backing file, compressed or zero
    /// clusters, no host file), discards, write-zeroes, backend flushes.
    pub sync_path_requests: u64,
    /// Most requests in flight at once.
    pub inflight_high_water: u64,
    /// Times a drain stopped with requests left on the queue because every
    /// in-flight slot was busy.
    pub queue_full_stalls: u64,
    /// Times the rate limiter held a request back (it stays on the queue
    /// and is counted again if held back again).
    pub rate_limited: u64,
    /// 1 when direct I/O runs on io_uring, 0 on the synchronous engine.
    pub io_uring: u64,
}

impl BlockMetrics {
    /// Calls `out` with each counter's name and value.
    pub fn write(&self, out: &mut dyn FnMut(&'static str, u64)) {
        out("queue_events", self.queue_events);
        out("reads", self.reads);
        out("read_bytes", self.read_bytes);
        out("writes", self.writes);
        out("write_bytes", self.write_bytes);
        out("flushes", self.flushes);
        out("get_ids", self.get_ids);
        out("discards", self.discards);
        out("write_zeroes", self.write_zeroes);
        out("io_errors", self.io_errors);
        out("invalid_requests", self.invalid_requests);
        out("unsupported", self.unsupported);
        out("read_only_rejections", self.read_only_rejections);
        out("dropped_chains", self.dropped_chains);
        out("queue_errors", self.queue_errors);
        out("interrupts", self.interrupts);
        out("completion_events", self.completion_events);
        out("sync_path_requests", self.sync_path_requests);
        out("inflight_high_water", self.inflight_high_water);
        out("queue_full_stalls", self.queue_full_stalls);
        out("rate_limited", self.rate_limited);
        out("io_uring", self.io_uring);
    }
}
