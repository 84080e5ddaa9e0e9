//! Per-NIC counters of the virtio-net device itself (the datapath keeps
//! its own: drops by reason, DHCP).

/// What one virtio-net device has done since it was created.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetMetrics {
    /// Frames put into the guest's RX queue.
    pub rx_frames: u64,
    /// Bytes of those frames (virtio-net header excluded).
    pub rx_bytes: u64,
    /// Of those, frames the datapath made itself (DHCP replies).
    pub rx_local_frames: u64,
    /// Frames the guest sent that reached the tap.
    pub tx_frames: u64,
    /// Bytes of those frames (virtio-net header excluded).
    pub tx_bytes: u64,
    /// Frames the guest sent that the datapath answered itself.
    pub tx_consumed: u64,
    /// Frames dropped by the datapath, either direction (its metrics say
    /// why).
    pub datapath_drops: u64,
    /// TX chains that were not a frame: too short for the header, larger
    /// than the biggest frame, or not readable guest memory.
    pub tx_bad_chains: u64,
    /// Frames from the tap dropped because the guest's buffers could not
    /// hold them (a single buffer too small without mergeable buffers, or
    /// more descriptors than a frame may need).
    pub rx_too_big: u64,
    /// RX chains whose buffers were not writable guest memory.
    pub rx_bad_chains: u64,
    /// Writes to the tap that failed (the frame is lost).
    pub tap_write_errors: u64,
    /// Reads from the tap that failed with something other than "empty".
    pub tap_read_errors: u64,
    /// Times the tap was unwatched because the guest had no RX buffers.
    pub rx_paused: u64,
    /// Broken queues (bad avail index, used ring not writable); the device
    /// then asks the driver for a reset.
    pub queue_errors: u64,
    /// Used-buffer interrupts raised.
    pub interrupts: u64,
}

impl NetMetrics {
    /// Reports every counter under its `snake_case` name.
    pub fn write(&self, out: &mut dyn FnMut(&'static str, u64)) {
        out("rx_frames", self.rx_frames);
        out("rx_bytes", self.rx_bytes);
        out("rx_local_frames", self.rx_local_frames);
        out("tx_frames", self.tx_frames);
        out("tx_bytes", self.tx_bytes);
        out("tx_consumed", self.tx_consumed);
        out("datapath_drops", self.datapath_drops);
        out("tx_bad_chains", self.tx_bad_chains);
        out("rx_too_big", self.rx_too_big);
        out("rx_bad_chains", self.rx_bad_chains);
        out("tap_write_errors", self.tap_write_errors);
        out("tap_read_errors", self.tap_read_errors);
        out("rx_paused", self.rx_paused);
        out("queue_errors", self.queue_errors);
        out("interrupts", self.interrupts);
    }
}
