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
