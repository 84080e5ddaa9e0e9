//! Later fragments of allowed datagrams.
//!
//! A later fragment has no transport header, so no rule or flow can judge
//! it. When a first fragment (offset 0, more to come) is allowed, its
//! datagram is remembered here by (direction, source, destination,
//! protocol, IP identification) for [`FRAGMENT_TIMEOUT_MS`]; a later
//! fragment passes only if its datagram is here. A later fragment that
//! arrives before its first fragment is dropped, as is any fragment of a
//! datagram whose first fragment was denied.
//!
//! The table is small and bounded: [`SETS`] sets of [`WAYS`] entries,
//! indexed by a keyed hash; when a set is full the entry closest to
//! expiry makes room. A flood of fragmented datagrams therefore costs
//! their own later fragments, never memory.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use super::config::Direction;
use super::FlowKey;

/// How long a first fragment vouches for its datagram (the Linux
/// reassembly timeout, `ipfrag_time`).
pub(super) const FRAGMENT_TIMEOUT_MS: u64 = 30_000;
/// Sets in the table.
pub(super) const SETS: usize = 64;
/// Entries per set.
pub(super) const WAYS: usize = 4;

/// A datagram, as its fragments name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct DatagramId {
    pub direction: Direction,
    pub v6: bool,
    pub src: u128,
    pub dst: u128,
    pub proto: u8,
    pub id: u32,
}

#[derive(Debug, Clone, Copy)]
struct Remembered {
    datagram: DatagramId,
    flow: FlowKey,
    deadline_ms: u64,
}

/// The datagrams whose first fragment was allowed.
#[derive(Debug)]
pub(super) struct Fragments {
    entries: Box<[Option<Remembered>]>,
    hasher: RandomState,
}

impl Fragments {
    pub(super) fn new() -> Self {
        Self {
            entries: vec![None; SETS * WAYS].into_boxed_slice(),
            hasher: RandomState::new(),
        }
    }

    fn set(&self, datagram: &DatagramId) -> usize {
        let h = self.hasher.hash_one(datagram);
        usize::try_from(h % SETS as u64).unwrap_or(0) * WAYS
    }

    /// Remembers that the first fragment of `datagram`, of `flow`, was
    /// allowed at `now_ms`.
    pub(super) fn remember(&mut self, datagram: DatagramId, flow: FlowKey, now_ms: u64) {
        let base = self.set(&datagram);
        let ways = &mut self.entries[base..base + WAYS];
        let fresh = Remembered {
            datagram,
            flow,
            deadline_ms: now_ms.saturating_add(FRAGMENT_TIMEOUT_MS),
        };
        let slot = ways
            .iter()
            .position(|e| e.is_some_and(|e| e.datagram == datagram))
            .or_else(|| {
                ways.iter()
                    .position(|e| e.is_none_or(|e| e.deadline_ms <= now_ms))
            })
            .unwrap_or_else(|| {
                // Full of live entries: replace the one closest to expiry.
                (0..WAYS)
                    .min_by_key(|&w| ways[w].map_or(0, |e| e.deadline_ms))
                    .unwrap_or(0)
            });
        ways[slot] = Some(fresh);
    }

    /// The flow of `datagram` if its first fragment was allowed and has
    /// not timed out.
    pub(super) fn find(&self, datagram: &DatagramId, now_ms: u64) -> Option<FlowKey> {
        let base = self.set(datagram);
        self.entries[base..base + WAYS]
            .iter()
            .flatten()
            .find(|e| e.datagram == *datagram && e.deadline_ms > now_ms)
            .map(|e| e.flow)
    }
}
