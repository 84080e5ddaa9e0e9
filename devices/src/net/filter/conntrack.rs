//! The flow table: open addressing with linear probing, allocated once
//! for `max_flows`, keyed by a canonical 5-tuple.
//!
//! * One slot is six words: five of key, one of state (last packet time,
//!   protocol state, flags). An all-zero slot is empty, so the table is
//!   one zeroed allocation the kernel maps lazily (in huge pages where
//!   the kernel offers them: a random slot then costs no TLB miss).
//! * Beside the slots, one 16-bit tag per slot: 0 when the slot is empty,
//!   else bits of its key's hash (never 0). A lookup walks the tags and
//!   reads a slot only where the tag matches, so a new flow, whose key is
//!   in no slot, usually costs no access to the slots at all: the tags
//!   (2 bytes per slot, 1 MiB for the default table) stay in the caches
//!   where the slots (48 bytes each) cannot.
//! * There are twice as many slots as `max_flows`, so probes stay short
//!   (load ≤ ½). Beyond `max_flows` occupied slots a new flow is refused.
//! * The hash is three folded 64×64→128 multiplies of the key words
//!   xored with six per-table random seeds (drawn once from the std
//!   `RandomState`), so a peer cannot aim its flows at one chain.
//! * Expiry is lazy: a lookup treats an idle-too-long flow as absent (and
//!   a flow of the same key takes its slot back). [`FlowTable::expire`]
//!   sweeps a few slots per call, deleting by backward shift (no
//!   tombstones); a new flow that finds the table full sweeps near its
//!   home first ([`FlowTable::make_room`]).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// Words of key in a slot.
const KEY_WORDS: usize = 5;
/// A slot: key words, then `last_ms << 16 | state << 8 | flags`.
type Slot = [u64; KEY_WORDS + 1];

/// Set in every key's last word, so no key is all zeros.
const KEY_VALID: u64 = 1 << 63;

/// Slots [`FlowTable::make_room`] looks at.
pub(super) const LOCAL_SWEEP: usize = 64;

/// Flag: the flow's originator is the key's second endpoint.
pub(super) const FLAG_ORIG_IS_B: u8 = 1;
/// Flag: the flow was opened by a packet from the guest.
pub(super) const FLAG_ORIG_EGRESS: u8 = 2;

/// The low 64 bits.
#[allow(clippy::cast_possible_truncation)] // Truncation is the point.
fn low64(v: u128) -> u64 {
    v as u64
}

/// A canonical flow key. Both directions of a flow have the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Key([u64; KEY_WORDS]);

impl Key {
    /// The key of endpoints `a` and `b` (address, port) of protocol
    /// `proto` and family `v6`.
    #[inline(always)]
    pub(super) fn new(v6: bool, proto: u8, a: (u128, u16), b: (u128, u16)) -> Self {
        let meta = KEY_VALID
            | u64::from(v6) << 40
            | u64::from(proto) << 32
            | u64::from(a.1) << 16
            | u64::from(b.1);
        Key([
            low64(a.0 >> 64),
            low64(a.0),
            low64(b.0 >> 64),
            low64(b.0),
            meta,
        ])
    }
}

/// Per-flow protocol state. The value indexes the timeout table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum State {
    /// Only the originator's SYN seen.
    TcpSynSent = 0,
    /// The responder's SYN seen.
    TcpSynReceived = 1,
    TcpEstablished = 2,
    /// A FIN seen.
    TcpClosing = 3,
    /// A RST seen.
    TcpReset = 4,
    /// UDP seen from the originator only.
    UdpOneWay = 5,
    /// UDP: one request-response transaction.
    UdpReplied = 6,
    /// UDP: the originator spoke again after a reply.
    UdpReplied2 = 7,
    /// UDP: more than one request-response transaction.
    UdpStream = 8,
    /// An ICMP query.
    Icmp = 9,
    /// Any other protocol.
    Other = 10,
}

/// How many states.
pub(super) const STATES: usize = 11;

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            0 => State::TcpSynSent,
            1 => State::TcpSynReceived,
            2 => State::TcpEstablished,
            3 => State::TcpClosing,
            4 => State::TcpReset,
            5 => State::UdpOneWay,
            6 => State::UdpReplied,
            7 => State::UdpReplied2,
            8 => State::UdpStream,
            9 => State::Icmp,
            _ => State::Other,
        }
    }
}

/// Idle timeouts per [`State`], in milliseconds.
pub(super) type Timeouts = [u64; STATES];

/// What a slot says besides its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Flow {
    pub last_ms: u64,
    pub state: State,
    pub flags: u8,
}

impl Flow {
    fn word(self) -> u64 {
        self.last_ms << 16 | (self.state as u64) << 8 | u64::from(self.flags)
    }

    fn from_word(word: u64) -> Self {
        let [.., state, flags] = word.to_be_bytes();
        Flow {
            last_ms: word >> 16,
            state: State::from_u8(state),
            flags,
        }
    }

    fn expired(self, now_ms: u64, timeouts: &Timeouts) -> bool {
        now_ms.saturating_sub(self.last_ms) >= timeouts[self.state as usize]
    }
}

/// The result of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lookup {
    /// The key's live flow is in this slot.
    Live(usize),
    /// No live flow. A new one would go to `slot` (`None`: the table is
    /// full), replacing an expired flow if `evicts`.
    Absent { slot: Option<usize>, evicts: bool },
}

/// The flow table of one NIC.
#[derive(Debug)]
pub(super) struct FlowTable {
    slots: Vec<Slot>,
    /// `tags[i]`: 0 if `slots[i]` is empty, else its key's tag.
    tags: Vec<u16>,
    max_flows: usize,
    /// Occupied slots (live or expired, not yet reused or swept).
    count: usize,
    seeds: [u64; 6],
    cursor: usize,
}

/// The key in an occupied slot.
fn slot_key(slot: &Slot) -> Key {
    let mut key = [0; KEY_WORDS];
    key.copy_from_slice(&slot[..KEY_WORDS]);
    Key(key)
}

/// Whether `slot` holds `key` (word by word, no memcmp call).
#[inline(always)]
fn same_key(slot: &Slot, key: &[u64; KEY_WORDS]) -> bool {
    (slot[0] ^ key[0])
        | (slot[1] ^ key[1])
        | (slot[2] ^ key[2])
        | (slot[3] ^ key[3])
        | (slot[4] ^ key[4])
        == 0
}

/// Asks the kernel to back `slots` with transparent huge pages. A new
/// flow's lookup lands on a random slot of a table far larger than the
/// caches; with 4 KiB pages that costs a TLB miss (a page walk, itself
/// missing the caches) on top of the data miss. Advisory: where THP is
/// off, or the range is too small for a whole huge page, nothing changes.
fn advise_huge_pages(slots: &[Slot]) {
    const PAGE: usize = 4096;
    let start = slots.as_ptr() as usize;
    let end = start + std::mem::size_of_val(slots);
    // madvise wants a page-aligned start; the allocator's header may sit
    // before it, so round inward.
    let aligned = start.next_multiple_of(PAGE);
    if end <= aligned {
        return;
    }
    // SAFETY: the range lies inside `slots`' own allocation, which stays
    // alive for the call; MADV_HUGEPAGE only changes how the kernel backs
    // those pages, never their contents, so no Rust reference is affected.
    // A failure (THP compiled out: EINVAL) leaves ordinary pages.
    let _ = unsafe {
        libc::madvise(
            aligned as *mut libc::c_void,
            end - aligned,
            libc::MADV_HUGEPAGE,
        )
    };
}

/// A folded multiply: the two halves of the 128-bit product, xored.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    low64(p) ^ low64(p >> 64)
}

impl FlowTable {
    /// An empty table for `max_flows` flows (≥ 1).
    pub(super) fn new(max_flows: usize) -> Self {
        let state = RandomState::new();
        let mut seeds = [0; 6];
        for (i, seed) in (0u64..).zip(seeds.iter_mut()) {
            *seed = state.hash_one(0x5ec0_0000 + i);
        }
        Self::with_seeds(max_flows, seeds)
    }

    fn with_seeds(max_flows: usize, seeds: [u64; 6]) -> Self {
        let max_flows = max_flows.max(1);
        // Zeroed arrays of integers come from a zeroed allocation.
        let slots = vec![[0u64; KEY_WORDS + 1]; max_flows.saturating_mul(2)];
        advise_huge_pages(&slots);
        Self {
            tags: vec![0; slots.len()],
            slots,
            max_flows,
            count: 0,
            seeds,
            cursor: 0,
        }
    }

    /// Slots in use (live flows and expired ones not yet reused).
    pub(super) fn len(&self) -> usize {
        self.count
    }

    /// Changes the most flows: within the allocated slots the limit just
    /// moves (lowering it below the flows present refuses new ones until
    /// enough expire; the memory stays); beyond them the table is
    /// reallocated and every flow moved over.
    pub(super) fn set_max_flows(&mut self, max_flows: usize) {
        let max_flows = max_flows.max(1);
        if max_flows.saturating_mul(2) <= self.slots.len() {
            self.max_flows = max_flows;
            return;
        }
        let mut bigger = Self::with_seeds(max_flows, self.seeds);
        for (slot, &tag) in self.slots.iter().zip(&self.tags) {
            if tag == 0 {
                continue;
            }
            let (mut i, tag) = bigger.home(&slot_key(slot));
            while bigger.tags[i] != 0 {
                i = bigger.next(i);
            }
            bigger.slots[i] = *slot;
            bigger.tags[i] = tag;
            bigger.count += 1;
        }
        bigger.cursor = 0;
        *self = bigger;
    }

    /// The key's home slot and its tag.
    #[inline(always)]
    fn home(&self, key: &Key) -> (usize, u16) {
        // Two independent folded multiplies of the keyed address words,
        // then one of both with the ports: a short dependency chain.
        let [k0, k1, k2, k3, k4] = key.0;
        let s = &self.seeds;
        let x = fold_mul(k0 ^ s[0], k1 ^ s[1]);
        let y = fold_mul(k2 ^ s[2], k3 ^ s[3]);
        let h = fold_mul(x ^ k4 ^ s[4], y ^ s[5]);
        // Multiply-shift onto 0..len (no power of two needed): the home
        // comes from the high bits of h, the tag from the low ones.
        let len = self.slots.len() as u128;
        let home = usize::try_from((u128::from(h) * len) >> 64).unwrap_or(0);
        let [.., hi, lo] = h.to_be_bytes();
        (home, u16::from_be_bytes([hi, lo]).max(1))
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    /// Finds `key`'s live flow, or where a new one would go.
    #[inline(always)]
    pub(super) fn lookup(&self, key: &Key, now_ms: u64, timeouts: &Timeouts) -> Lookup {
        let (mut i, tag) = self.home(key);
        for _ in 0..self.slots.len() {
            let t = self.tags[i];
            if t == 0 {
                return Lookup::Absent {
                    slot: (self.count < self.max_flows).then_some(i),
                    evicts: false,
                };
            }
            if t == tag {
                let slot = &self.slots[i];
                if same_key(slot, &key.0) {
                    return if Flow::from_word(slot[KEY_WORDS]).expired(now_ms, timeouts) {
                        // The same key's old flow: its slot is reused.
                        Lookup::Absent {
                            slot: Some(i),
                            evicts: true,
                        }
                    } else {
                        Lookup::Live(i)
                    };
                }
            }
            i = self.next(i);
        }
        // Every slot occupied: only possible with max_flows reached.
        Lookup::Absent {
            slot: None,
            evicts: false,
        }
    }

    /// The flow in slot `i` (from [`FlowTable::lookup`]).
    #[inline]
    pub(super) fn flow(&self, i: usize) -> Flow {
        Flow::from_word(self.slots[i][KEY_WORDS])
    }

    /// Updates the flow in slot `i`.
    #[inline]
    pub(super) fn set_flow(&mut self, i: usize, flow: Flow) {
        self.slots[i][KEY_WORDS] = flow.word();
    }

    /// Puts a flow in slot `i` from [`Lookup::Absent`]; `evicts` as it
    /// said.
    pub(super) fn insert(&mut self, i: usize, evicts: bool, key: &Key, flow: Flow) {
        self.tags[i] = self.home(key).1;
        let slot = &mut self.slots[i];
        slot[..KEY_WORDS].copy_from_slice(&key.0);
        slot[KEY_WORDS] = flow.word();
        if !evicts {
            self.count += 1;
        }
    }

    /// Empties slot `i`, shifting later members of its chain back.
    fn remove(&mut self, mut i: usize) {
        self.slots[i] = [0; KEY_WORDS + 1];
        self.tags[i] = 0;
        self.count -= 1;
        let mut j = self.next(i);
        loop {
            if self.tags[j] == 0 {
                return;
            }
            let (home, _) = self.home(&slot_key(&self.slots[j]));
            // The entry at j may move to the hole at i unless its home
            // lies cyclically in (i, j].
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.slots[i] = self.slots[j];
                self.tags[i] = self.tags[j];
                self.slots[j] = [0; KEY_WORDS + 1];
                self.tags[j] = 0;
                i = j;
            }
            j = self.next(j);
        }
    }

    /// Looks at `budget` slots from `i` on and removes the expired flows
    /// there. Returns how many it removed and where it stopped.
    fn sweep(
        &mut self,
        mut i: usize,
        budget: usize,
        now_ms: u64,
        timeouts: &Timeouts,
    ) -> (usize, usize) {
        let mut removed = 0;
        let mut looked = 0;
        while looked < budget.min(self.slots.len()) {
            if self.tags[i] != 0
                && Flow::from_word(self.slots[i][KEY_WORDS]).expired(now_ms, timeouts)
            {
                // Slot i may now hold a flow shifted back: look again.
                // (Each removal empties a slot, so this ends.)
                self.remove(i);
                removed += 1;
                continue;
            }
            i = self.next(i);
            looked += 1;
        }
        (removed, i)
    }

    /// Looks at up to `budget` slots from where the last call stopped and
    /// removes the expired flows there. Returns how many it removed.
    pub(super) fn expire(&mut self, now_ms: u64, budget: usize, timeouts: &Timeouts) -> usize {
        let (removed, end) = self.sweep(self.cursor, budget, now_ms, timeouts);
        self.cursor = end;
        removed
    }

    /// For a new flow that found the table full: removes the expired
    /// flows among the [`LOCAL_SWEEP`] slots from `key`'s home on or, if
    /// there are none, among the next `4 * LOCAL_SWEEP` slots of the
    /// incremental sweep, so a full table of idle flows does not refuse it
    /// for want of a sweep. Returns how many it removed.
    pub(super) fn make_room(&mut self, key: &Key, now_ms: u64, timeouts: &Timeouts) -> usize {
        let (home, _) = self.home(key);
        match self.sweep(home, LOCAL_SWEEP, now_ms, timeouts).0 {
            // New flows fill the expired slots near where they land, so a
            // neighbourhood can run out while the table has plenty: then
            // the incremental sweep goes on a little instead.
            0 => self.expire(now_ms, 4 * LOCAL_SWEEP, timeouts),
            removed => removed,
        }
    }

    /// Every occupied slot's key and flow (tests).
    #[cfg(test)]
    pub(super) fn occupied(&self) -> impl Iterator<Item = (Key, Flow)> + '_ {
        self.slots
            .iter()
            .zip(&self.tags)
            .filter(|(_, &tag)| tag != 0)
            .map(|(s, _)| (slot_key(s), Flow::from_word(s[KEY_WORDS])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = [1000; STATES];

    fn key(n: u16) -> Key {
        Key::new(false, 17, (1, n), (2, 53))
    }

    fn flow(last_ms: u64) -> Flow {
        Flow {
            last_ms,
            state: State::UdpOneWay,
            flags: 0,
        }
    }

    /// Every tag says what its slot holds: 0 for empty, else its key's.
    fn assert_tags_match(t: &FlowTable) {
        for (i, (slot, &tag)) in t.slots.iter().zip(&t.tags).enumerate() {
            if slot[KEY_WORDS - 1] == 0 {
                assert_eq!(tag, 0, "slot {i} is empty");
            } else {
                assert_eq!(tag, t.home(&slot_key(slot)).1, "slot {i}");
            }
        }
    }

    fn add(t: &mut FlowTable, k: &Key, now: u64) -> bool {
        match t.lookup(k, now, &TIMEOUTS) {
            Lookup::Absent {
                slot: Some(i),
                evicts,
            } => {
                t.insert(i, evicts, k, flow(now));
                true
            }
            _ => false,
        }
    }

    #[test]
    fn insert_find_fill_and_reuse_expired() {
        let mut t = FlowTable::with_seeds(
            100,
            [1u64, 2, 3, 4, 5, 6].map(|n| n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        );
        for n in 0..100 {
            assert!(add(&mut t, &key(n), 0), "{n}");
        }
        assert_eq!(t.len(), 100);
        assert!(!add(&mut t, &key(100), 10), "full");
        for n in 0..100 {
            assert!(matches!(t.lookup(&key(n), 999, &TIMEOUTS), Lookup::Live(_)));
        }
        // Once all expired, new flows go where the old ones were: the
        // full table sweeps the slots after the new flow's home.
        assert!(matches!(
            t.lookup(&key(0), 1000, &TIMEOUTS),
            Lookup::Absent { .. }
        ));
        let mut added = 0;
        for n in 100..200 {
            if add(&mut t, &key(n), 1000)
                || (t.make_room(&key(n), 1000, &TIMEOUTS) > 0 && add(&mut t, &key(n), 1000))
            {
                added += 1;
            }
        }
        assert!(added > 90, "{added}");
        t.expire(1000, usize::MAX, &TIMEOUTS);
        assert_eq!(t.len(), added);
        assert_tags_match(&t);
    }

    #[test]
    fn sweep_removes_expired_and_keeps_chains_whole() {
        // Few slots per flow so chains are long and wrap around.
        let mut t = FlowTable::with_seeds(64, [3, 5, 7, 11, 13, 17]);
        for n in 0..64 {
            assert!(add(&mut t, &key(n), u64::from(n % 2) * 500));
        }
        // Flows added at 0 expire at 1000, those at 500 at 1500.
        let removed = t.expire(1200, 10_000, &TIMEOUTS);
        assert_eq!(removed, 32);
        assert_eq!(t.len(), 32);
        for n in 0..64 {
            let live = matches!(t.lookup(&key(n), 1200, &TIMEOUTS), Lookup::Live(_));
            assert_eq!(live, n % 2 == 1, "{n}");
        }
        assert_eq!(t.occupied().count(), 32);
        assert_tags_match(&t);
    }

    #[test]
    fn growing_keeps_live_flows() {
        let mut t = FlowTable::new(4);
        for n in 0..4 {
            assert!(add(&mut t, &key(n), 0));
        }
        t.set_max_flows(2);
        assert!(!add(&mut t, &key(9), 0));
        t.set_max_flows(1000);
        for n in 0..4 {
            assert!(matches!(t.lookup(&key(n), 0, &TIMEOUTS), Lookup::Live(_)));
        }
        assert!(add(&mut t, &key(9), 0));
        assert_eq!(t.len(), 5);
        assert_tags_match(&t);
    }
}
