//! A small least-recently-used cache of metadata clusters (L2 tables,
//! refcount blocks), keyed by host offset.
//!
//! Write-through: callers write a changed entry to the file and into the
//! cached copy together, so evicting never loses data and `flush` is just
//! an fdatasync. The capacity is fixed at open, bounding memory whatever
//! the image says.

#[derive(Debug)]
struct Slot<T> {
    offset: u64,
    last_used: u64,
    table: T,
}

/// Up to `capacity` tables of type `T`.
#[derive(Debug)]
pub(super) struct TableCache<T> {
    slots: Vec<Slot<T>>,
    capacity: usize,
    tick: u64,
}

impl<T> TableCache<T> {
    /// A cache holding at most `capacity` (at least 1) tables.
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: Vec::new(),
            capacity: capacity.max(1),
            tick: 0,
        }
    }

    /// The cached table at `offset`, loading it with `load` on a miss.
    pub fn get_or_load<E>(
        &mut self,
        offset: u64,
        load: impl FnOnce() -> Result<T, E>,
    ) -> Result<&mut T, E> {
        self.tick += 1;
        let idx = match self.slots.iter().position(|s| s.offset == offset) {
            Some(i) => i,
            None => {
                let table = load()?;
                self.insert(offset, table)
            }
        };
        let slot = &mut self.slots[idx];
        slot.last_used = self.tick;
        Ok(&mut slot.table)
    }

    /// Puts a table the caller just created (e.g. a zeroed new L2 table).
    pub fn insert(&mut self, offset: u64, table: T) -> usize {
        self.tick += 1;
        let slot = Slot {
            offset,
            last_used: self.tick,
            table,
        };
        if let Some(i) = self.slots.iter().position(|s| s.offset == offset) {
            self.slots[i] = slot;
            return i;
        }
        if self.slots.len() < self.capacity {
            self.slots.push(slot);
            return self.slots.len() - 1;
        }
        let lru = self
            .slots
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.last_used)
            .map(|(i, _)| i)
            .expect("capacity is at least 1");
        self.slots[lru] = slot;
        lru
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut c = TableCache::new(2);
        let mut loads = 0;
        let mut get = |c: &mut TableCache<u64>, off: u64| {
            *c.get_or_load(off, || {
                loads += 1;
                Ok::<_, ()>(off * 10)
            })
            .unwrap()
        };
        assert_eq!(get(&mut c, 1), 10);
        assert_eq!(get(&mut c, 2), 20);
        assert_eq!(get(&mut c, 1), 10); // 2 is now least recently used
        assert_eq!(get(&mut c, 3), 30); // evicts 2
        assert_eq!(get(&mut c, 1), 10);
        assert_eq!(get(&mut c, 2), 20); // reloaded
        assert_eq!(loads, 4);
    }
}
