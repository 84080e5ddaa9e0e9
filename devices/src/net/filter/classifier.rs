//! The compiled rules: which rule, if any, allows a packet that belongs to
//! no tracked flow. Never a linear scan of the rules.
//!
//! Rules are compiled per direction, address family and protocol class:
//! one class per protocol number some rule names (holding that protocol's
//! rules and the `-1` rules), and one for every other protocol (the `-1`
//! rules alone). A class answers "which rule allows peer address A and
//! port P" in two binary searches:
//!
//! 1. The prefixes of the class (CIDRs and address-set entries) cut the
//!    address space into sorted elementary ranges; each range maps to its
//!    longest covering prefix (a laminar family: prefixes nest or are
//!    disjoint), or to none. The ranges' starts are searched in
//!    Eytzinger order (`eytzinger.rs`).
//! 2. Each prefix has a port map: sorted elementary port intervals, each
//!    with the rule that allows it, precomputed as the prefix's own rules
//!    overlaid on its parent prefix's map. So the map of a prefix answers
//!    for every rule of every prefix containing it.
//!
//! The "port" is the destination port for TCP and UDP, `type << 8 | code`
//! for ICMP and ICMPv6, and 0 for other protocols (whose rules allow all
//! of 0..=65535).
//!
//! When several rules allow a packet, the one credited (per-rule counters)
//! is the one with the longest prefix, then the first in the document.
//!
//! Size: a prefix's map has at most the intervals of its own rules plus
//! its parent's, so memory is bounded by rules × nesting depth of the
//! prefixes; lookup is O(log prefixes + log intervals).

use std::collections::BTreeMap;

use super::config::{Direction, Entry, Proto};
use super::eytzinger::Predecessors;

/// No rule.
pub(super) const NO_RULE: u32 = u32::MAX;
/// No class for a protocol.
const NO_CLASS: u16 = u16::MAX;

/// An address of one family, as the classifier keys it.
pub(super) trait Addr: Copy + Ord + Default + std::fmt::Debug {
    /// The address from the low bits of `v`.
    fn from_u128(v: u128) -> Self;
    /// The last address of the prefix starting here with `len` bits.
    fn prefix_end(self, len: u8) -> Self;
    /// The next address (never called on the last one).
    fn succ(self) -> Self;
}

impl Addr for u32 {
    fn from_u128(v: u128) -> Self {
        u32::try_from(v & u128::from(u32::MAX)).unwrap_or(0)
    }
    fn prefix_end(self, len: u8) -> Self {
        self | u32::MAX.checked_shr(u32::from(len)).unwrap_or(0)
    }
    fn succ(self) -> Self {
        self.wrapping_add(1)
    }
}

impl Addr for u128 {
    fn from_u128(v: u128) -> Self {
        v
    }
    fn prefix_end(self, len: u8) -> Self {
        self | u128::MAX.checked_shr(u32::from(len)).unwrap_or(0)
    }
    fn succ(self) -> Self {
        self.wrapping_add(1)
    }
}

/// A step function over the 16-bit port space: `starts[i]..` (up to the
/// next start) is allowed by `rules[i]` (or by none). `starts[0] == 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PortMap {
    starts: Vec<u16>,
    rules: Vec<u32>,
}

impl PortMap {
    fn at(&self, port: u16) -> u32 {
        let i = self.starts.partition_point(|&s| s <= port);
        self.rules
            .get(i.wrapping_sub(1))
            .copied()
            .unwrap_or(NO_RULE)
    }

    /// Appends a step, merging it with the last one if they agree.
    fn push(&mut self, start: u16, rule: u32) {
        if self.rules.last() == Some(&rule) {
            return;
        }
        if self.starts.last() == Some(&start) {
            if let Some(last) = self.rules.last_mut() {
                *last = rule;
            }
            return;
        }
        self.starts.push(start);
        self.rules.push(rule);
    }

    fn empty() -> Self {
        Self {
            starts: Vec::new(),
            rules: Vec::new(),
        }
    }

    /// The map of `(lo, hi, rule)` intervals, the lowest rule winning
    /// where they overlap.
    fn paint(intervals: &[(u16, u16, u32)]) -> Self {
        let mut sorted = intervals.to_vec();
        sorted.sort_by_key(|&(_, _, id)| id);
        let mut bounds: Vec<u32> = vec![0];
        for &(lo, hi, _) in &sorted {
            bounds.push(u32::from(lo));
            bounds.push(u32::from(hi) + 1);
        }
        bounds.sort_unstable();
        bounds.dedup();
        // The last bound is 65536 at most: elementary intervals are
        // bounds[i]..bounds[i + 1], and the last one runs to 65535.
        let n = bounds.len();
        let mut owner = vec![NO_RULE; n];
        // next[i]: the first unpainted interval at or after i (union-find
        // with path halving), so each interval is painted once.
        let mut next: Vec<usize> = (0..=n).collect();
        fn find(next: &mut [usize], mut i: usize) -> usize {
            while next[i] != i {
                next[i] = next[next[i]];
                i = next[i];
            }
            i
        }
        for &(lo, hi, id) in &sorted {
            let first = bounds.partition_point(|&b| b < u32::from(lo));
            let end = bounds.partition_point(|&b| b <= u32::from(hi));
            let mut i = find(&mut next, first);
            while i < end {
                owner[i] = id;
                next[i] = i + 1;
                i = find(&mut next, i + 1);
            }
        }
        let mut map = Self::empty();
        for (&start, &rule) in bounds.iter().zip(&owner) {
            if let Ok(start) = u16::try_from(start) {
                map.push(start, rule);
            }
        }
        map
    }

    /// `self` where it allows, `parent` in its gaps.
    fn overlay(&self, parent: &PortMap) -> Self {
        let mut starts: Vec<u16> = self.starts.iter().chain(&parent.starts).copied().collect();
        starts.sort_unstable();
        starts.dedup();
        let mut map = Self::empty();
        for start in starts {
            let own = self.at(start);
            map.push(
                start,
                if own == NO_RULE {
                    parent.at(start)
                } else {
                    own
                },
            );
        }
        map
    }

    fn covers_everything(&self) -> bool {
        !self.rules.contains(&NO_RULE)
    }
}

/// Port intervals `(lo, hi, rule)`.
type Intervals = Vec<(u16, u16, u32)>;

/// The compiled rules of one direction, family and protocol class.
#[derive(Debug, Clone)]
struct Class<A> {
    /// Elementary address ranges: from each start on, up to the next,
    /// the addresses belong to the prefix it maps to (or none). The first
    /// start is address 0.
    ranges: Predecessors<A>,
    /// Per prefix: offset and length of its port map in the arenas.
    spans: Box<[(u32, u32)]>,
    port_starts: Box<[u16]>,
    port_rules: Box<[u32]>,
    /// The `/0` prefix, if the class has one: its own rules are the
    /// "all traffic" rules of the untracked-flow test.
    zero: Option<u32>,
    /// Whether the `/0` rules allow every port.
    zero_all_ports: bool,
}

impl<A: Addr> Class<A> {
    fn build(entries: &[&Entry]) -> Self {
        let mut by_prefix: BTreeMap<(A, u8), Intervals> = BTreeMap::new();
        for e in entries {
            by_prefix
                .entry((A::from_u128(e.start), e.len))
                .or_default()
                .push((e.lo, e.hi, e.id));
        }
        let mut maps: Vec<PortMap> = Vec::with_capacity(by_prefix.len());
        let mut ranges: Vec<(A, u32)> = vec![(A::default(), NO_RULE)];
        let mut stack: Vec<(A, u32)> = Vec::new();
        let mut zero = None;
        fn emit<A: Addr>(ranges: &mut Vec<(A, u32)>, start: A, prefix: u32) {
            match ranges.last_mut() {
                Some(last) if last.0 == start => last.1 = prefix,
                Some(last) if last.1 == prefix => {}
                _ => ranges.push((start, prefix)),
            }
        }
        fn close<A: Addr>(
            ranges: &mut Vec<(A, u32)>,
            stack: &mut Vec<(A, u32)>,
            before: Option<A>,
        ) {
            while let Some(&(end, _)) = stack.last() {
                if before.is_some_and(|start| end >= start) {
                    break;
                }
                stack.pop();
                let resumed = stack.last().map_or(NO_RULE, |&(_, p)| p);
                if end != A::default().prefix_end(0) {
                    emit(ranges, end.succ(), resumed);
                }
            }
        }
        // BTreeMap order is (start, len): a prefix comes after every
        // prefix that contains it.
        for (index, ((start, len), own)) in by_prefix.iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(NO_RULE - 1);
            close(&mut ranges, &mut stack, Some(*start));
            let own = PortMap::paint(own);
            let map = match stack.last() {
                Some(&(_, parent)) => own.overlay(&maps[parent as usize]),
                None => own,
            };
            maps.push(map);
            if *len == 0 {
                zero = Some(index);
            }
            emit(&mut ranges, *start, index);
            stack.push((start.prefix_end(*len), index));
        }
        close(&mut ranges, &mut stack, None);

        let mut spans = Vec::with_capacity(maps.len());
        let mut port_starts = Vec::new();
        let mut port_rules = Vec::new();
        for map in &maps {
            let offset = u32::try_from(port_starts.len()).unwrap_or(u32::MAX);
            let len = u32::try_from(map.starts.len()).unwrap_or(0);
            spans.push((offset, len));
            port_starts.extend_from_slice(&map.starts);
            port_rules.extend_from_slice(&map.rules);
        }
        let zero_all_ports = zero.is_some_and(|z| maps[z as usize].covers_everything());
        Self {
            ranges: Predecessors::new(&ranges),
            spans: spans.into_boxed_slice(),
            port_starts: port_starts.into_boxed_slice(),
            port_rules: port_rules.into_boxed_slice(),
            zero,
            zero_all_ports,
        }
    }

    /// The rule of `prefix` for `port`.
    #[inline]
    fn port_rule(&self, prefix: u32, port: u16) -> u32 {
        let Some(&(offset, len)) = self.spans.get(prefix as usize) else {
            return NO_RULE;
        };
        let (offset, len) = (offset as usize, len as usize);
        let Some(starts) = self.port_starts.get(offset..offset + len) else {
            return NO_RULE;
        };
        let i = starts.partition_point(|&s| s <= port);
        self.port_rules
            .get((offset + i).wrapping_sub(1))
            .copied()
            .unwrap_or(NO_RULE)
    }

    /// The rule allowing `addr` and `port`, or [`NO_RULE`].
    #[inline]
    fn lookup(&self, addr: A, port: u16) -> u32 {
        match self.ranges.get(addr) {
            Some(prefix) if prefix != NO_RULE => self.port_rule(prefix, port),
            _ => NO_RULE,
        }
    }

    /// Whether a `/0` rule of the class allows `port`.
    fn zero_allows(&self, port: u16) -> bool {
        self.zero
            .is_some_and(|zero| self.port_rule(zero, port) != NO_RULE)
    }
}

/// The compiled rules of one direction and family.
#[derive(Debug, Clone)]
struct Family<A> {
    class_of: Box<[u16; 256]>,
    classes: Vec<Class<A>>,
}

impl<A: Addr> Family<A> {
    fn build(entries: &[&Entry]) -> Self {
        let all: Vec<&Entry> = entries
            .iter()
            .copied()
            .filter(|e| e.proto == Proto::All)
            .collect();
        let mut by_proto: BTreeMap<u8, Vec<&Entry>> = BTreeMap::new();
        for e in entries {
            if let Proto::Number(p) = e.proto {
                by_proto.entry(p).or_default().push(e);
            }
        }
        let mut class_of = Box::new([NO_CLASS; 256]);
        let mut classes = Vec::new();
        if !all.is_empty() {
            classes.push(Class::build(&all));
            class_of.fill(0);
        }
        for (proto, mut list) in by_proto {
            list.extend(all.iter().copied());
            class_of[usize::from(proto)] = u16::try_from(classes.len()).unwrap_or(NO_CLASS);
            classes.push(Class::build(&list));
        }
        Self { class_of, classes }
    }

    #[inline]
    fn class(&self, proto: u8) -> Option<&Class<A>> {
        self.classes
            .get(usize::from(self.class_of[usize::from(proto)]))
    }
}

/// Every rule of a NIC, compiled.
#[derive(Debug, Clone)]
pub(super) struct Classifier {
    v4: [Family<u32>; 2],
    v6: [Family<u128>; 2],
}

impl Classifier {
    /// Compiles the expanded entries of a validated document.
    pub(super) fn new(entries: &[Entry]) -> Self {
        let pick = |direction: Direction, v6: bool| -> Vec<&Entry> {
            entries
                .iter()
                .filter(|e| e.direction == direction && e.v6 == v6)
                .collect()
        };
        Self {
            v4: [
                Family::build(&pick(Direction::Ingress, false)),
                Family::build(&pick(Direction::Egress, false)),
            ],
            v6: [
                Family::build(&pick(Direction::Ingress, true)),
                Family::build(&pick(Direction::Egress, true)),
            ],
        }
    }

    /// The rule allowing a packet of `proto` in `direction` whose peer
    /// (source on ingress, destination on egress) is `peer` and whose
    /// classifier port is `port`, or [`NO_RULE`].
    #[inline]
    pub(super) fn lookup(
        &self,
        direction: Direction,
        v6: bool,
        proto: u8,
        peer: u128,
        port: u16,
    ) -> u32 {
        let d = direction.index();
        if v6 {
            self.v6[d]
                .class(proto)
                .map_or(NO_RULE, |c| c.lookup(peer, port))
        } else {
            self.v4[d]
                .class(proto)
                .map_or(NO_RULE, |c| c.lookup(u32::from_u128(peer), port))
        }
    }

    /// Whether a rule with a `/0` peer in `direction` allows `proto` to
    /// destination port `port`.
    pub(super) fn zero_allows(&self, direction: Direction, v6: bool, proto: u8, port: u16) -> bool {
        let d = direction.index();
        if v6 {
            self.v6[d].class(proto).is_some_and(|c| c.zero_allows(port))
        } else {
            self.v4[d].class(proto).is_some_and(|c| c.zero_allows(port))
        }
    }

    /// Whether rules with a `/0` peer in `direction` allow `proto` on
    /// every port (0–65535).
    pub(super) fn zero_allows_all_ports(&self, direction: Direction, v6: bool, proto: u8) -> bool {
        let d = direction.index();
        if v6 {
            self.v6[d].class(proto).is_some_and(|c| c.zero_all_ports)
        } else {
            self.v4[d].class(proto).is_some_and(|c| c.zero_all_ports)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paint_lets_the_first_rule_win() {
        let map = PortMap::paint(&[(10, 20, 5), (15, 30, 2), (0, 0, 9), (65535, 65535, 1)]);
        assert_eq!(map.at(0), 9);
        assert_eq!(map.at(1), NO_RULE);
        assert_eq!(map.at(10), 5);
        assert_eq!(map.at(14), 5);
        assert_eq!(map.at(15), 2);
        assert_eq!(map.at(30), 2);
        assert_eq!(map.at(31), NO_RULE);
        assert_eq!(map.at(65535), 1);
        assert!(!map.covers_everything());
        assert!(PortMap::paint(&[(0, 65535, 3)]).covers_everything());
    }

    #[test]
    fn overlay_fills_gaps_only() {
        let own = PortMap::paint(&[(10, 20, 1)]);
        let parent = PortMap::paint(&[(0, 15, 2), (100, 200, 3)]);
        let map = own.overlay(&parent);
        assert_eq!(map.at(5), 2);
        assert_eq!(map.at(12), 1);
        assert_eq!(map.at(21), NO_RULE);
        assert_eq!(map.at(150), 3);
    }
}
