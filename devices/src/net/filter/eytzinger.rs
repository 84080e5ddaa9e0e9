//! Predecessor search over a sorted, fixed set of keys, laid out in
//! Eytzinger (breadth-first) order: node `k`'s children are `2k` and
//! `2k + 1`, so the first levels of every search share a few cache lines
//! and the nodes four levels below `k` (`16k..16k + 16`) are contiguous,
//! which lets each step prefetch the line the search needs four steps
//! later. A search is a fixed number of branch-free steps (no
//! mispredictions) whose memory waits overlap, where a binary search over
//! a sorted array of thousands of keys waits on one cache miss per step
//! after the first few.
//!
//! Used by the classifier for its address ranges (up to two per prefix:
//! some 20 000 keys at 10 000 rules).

/// Keys in Eytzinger order with one value each.
#[derive(Debug, Clone)]
pub(super) struct Predecessors<K> {
    /// `keys[k]` for nodes `1..=n`; `keys[0]` is unused padding.
    keys: Box<[K]>,
    /// `values[k]`: the value of node `k`'s key.
    values: Box<[u32]>,
}

impl<K: Copy + Ord + Default> Predecessors<K> {
    /// The keys (sorted ascending, distinct) and their values.
    pub(super) fn new(sorted: &[(K, u32)]) -> Self {
        debug_assert!(sorted.windows(2).all(|w| w[0].0 < w[1].0));
        let n = sorted.len();
        let mut keys = vec![K::default(); n + 1];
        let mut values = vec![0; n + 1];
        // An in-order walk of the implicit tree visits its nodes in key
        // order: the i-th node visited gets the i-th key.
        let mut next = sorted.iter();
        let mut stack = Vec::new();
        let mut k = 1;
        loop {
            while k <= n {
                stack.push(k);
                k *= 2;
            }
            let Some(node) = stack.pop() else { break };
            if let Some(&(key, value)) = next.next() {
                keys[node] = key;
                values[node] = value;
            }
            k = 2 * node + 1;
        }
        Self {
            keys: keys.into_boxed_slice(),
            values: values.into_boxed_slice(),
        }
    }

    /// The value of the greatest key ≤ `key`, if there is one.
    #[inline]
    pub(super) fn get(&self, key: K) -> Option<u32> {
        let n = self.keys.len() - 1;
        let mut k = 1;
        while k <= n {
            prefetch(self.keys.as_ptr().wrapping_add(16 * k));
            // Right (1) when this node's key is ≤ the one searched for.
            k = 2 * k + usize::from(self.keys[k] <= key);
        }
        // The last right turn was at the predecessor: drop the left turns
        // after it (trailing zeros), then that turn itself.
        k >>= k.trailing_zeros() + 1;
        self.values.get(k).copied().filter(|_| k != 0)
    }
}

/// Hints that the cache line at `p` will be read soon. Never faults, even
/// past the end of an allocation, so the address needs no checking.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: PREFETCHT0 is a hint: it reads nothing into a register
        // and raises no fault for any address, mapped or not.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: a binary search over the sorted keys.
    fn reference(sorted: &[(u32, u32)], key: u32) -> Option<u32> {
        let i = sorted.partition_point(|&(k, _)| k <= key);
        i.checked_sub(1).map(|i| sorted[i].1)
    }

    #[test]
    fn agrees_with_binary_search_for_every_size() {
        for n in 0..200u32 {
            let sorted: Vec<(u32, u32)> = (0..n).map(|i| (10 + 3 * i, i * 7)).collect();
            let index = Predecessors::new(&sorted);
            for key in 0..(20 + 3 * n) {
                assert_eq!(index.get(key), reference(&sorted, key), "n={n} key={key}");
            }
            assert_eq!(index.get(u32::MAX), reference(&sorted, u32::MAX), "n={n}");
        }
    }

    #[test]
    fn extreme_keys() {
        let sorted = [(0u128, 1), (u128::MAX - 1, 2), (u128::MAX, 3)];
        let index = Predecessors::new(&sorted);
        assert_eq!(index.get(0), Some(1));
        assert_eq!(index.get(u128::MAX - 2), Some(1));
        assert_eq!(index.get(u128::MAX - 1), Some(2));
        assert_eq!(index.get(u128::MAX), Some(3));
        let empty = Predecessors::<u32>::new(&[]);
        assert_eq!(empty.get(5), None);
    }
}
