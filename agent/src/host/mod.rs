//! What the agent changes on the host itself.

pub mod atomic_file;
pub mod bridge;
pub mod process;
pub mod systemd;
pub mod tap;

/// The host's memory in MiB (`MemTotal`), 0 if unreadable.
pub fn memory_total_mib() -> u64 {
    let kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    kib / 1024
}

/// Memory kept for the host itself (the agent, the VMMs' own overhead,
/// the page cache the overlays live in): instances never get it.
pub const HOST_RESERVED_MIB: u64 = 1024;

/// The host's memory that instances may be given: all but
/// [`HOST_RESERVED_MIB`]. Launches are refused past it, and health shows
/// it so a client can tell how many instances still fit.
pub fn instance_memory_mib() -> u64 {
    memory_total_mib().saturating_sub(HOST_RESERVED_MIB)
}
