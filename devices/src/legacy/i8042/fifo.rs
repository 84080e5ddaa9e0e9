//! A fixed-capacity FIFO: the i8042's queues never allocate and never grow,
//! whatever the guest or the host does.

/// Up to `N` items; a push onto a full FIFO is refused.
#[derive(Debug, Clone)]
pub(super) struct Fifo<T, const N: usize> {
    items: [T; N],
    head: usize,
    len: usize,
}

impl<T: Copy + Default, const N: usize> Fifo<T, N> {
    const NON_EMPTY: () = assert!(N > 0, "a FIFO needs room for one item");

    /// An empty FIFO.
    pub(super) fn new() -> Self {
        let () = Self::NON_EMPTY;
        Self {
            items: [T::default(); N],
            head: 0,
            len: 0,
        }
    }

    /// Appends `item`; `false` (and nothing stored) if full.
    pub(super) fn push(&mut self, item: T) -> bool {
        if self.len == N {
            return false;
        }
        self.items[(self.head + self.len) % N] = item;
        self.len += 1;
        true
    }

    /// Appends all of `items`, or none if they do not all fit.
    pub(super) fn push_all(&mut self, items: &[T]) -> bool {
        if items.len() > self.free() {
            return false;
        }
        for &item in items {
            self.push(item);
        }
        true
    }

    /// Removes the oldest item.
    pub(super) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let item = self.items[self.head];
        self.head = (self.head + 1) % N;
        self.len -= 1;
        Some(item)
    }

    /// Room left.
    pub(super) fn free(&self) -> usize {
        N - self.len
    }

    /// Drops everything.
    pub(super) fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_order_and_all_or_nothing() {
        let mut fifo: Fifo<u8, 3> = Fifo::new();
        assert!(fifo.push_all(&[1, 2]));
        assert!(!fifo.push_all(&[3, 4]), "only one slot left");
        assert_eq!(fifo.pop(), Some(1));
        assert!(fifo.push(3));
        assert!(fifo.push(4));
        assert!(!fifo.push(5));
        assert_eq!(fifo.free(), 0);
        assert_eq!(
            [fifo.pop(), fifo.pop(), fifo.pop(), fifo.pop()],
            [Some(2), Some(3), Some(4), None]
        );
        fifo.push(9);
        fifo.clear();
        assert_eq!(fifo.pop(), None);
    }
}
