//! The queue of frames the datapath wrote itself (DHCP replies) and that
//! wait for the device to have an RX buffer for them.
//!
//! It is a ring of slots allocated once, when the NIC is made: the guest
//! decides how many frames are written (one per DHCP request), so neither
//! the number nor the size of allocations may follow from what it sends.
//! When the ring is full, new frames are refused; the guest's DHCP client
//! retransmits.

use std::fmt;

use super::datapath::MAX_LOCAL_FRAME;

/// How many frames can wait.
pub(crate) const LOCAL_FRAME_SLOTS: usize = 64;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PushError<E> {
    /// Every slot holds a frame.
    #[error("the local-frame queue is full")]
    Full,
    /// Writing the frame failed.
    #[error("building a local frame: {0}")]
    Build(E),
}

/// Why the oldest frame was thrown away instead of returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {need}-byte local frame does not fit a {have}-byte buffer")]
pub(crate) struct TooSmall {
    /// The frame's length.
    pub need: usize,
    /// The buffer's.
    pub have: usize,
}

/// A bounded FIFO of frames up to [`MAX_LOCAL_FRAME`] bytes.
pub(crate) struct LocalFrames {
    slots: Box<[[u8; MAX_LOCAL_FRAME]]>,
    lens: [usize; LOCAL_FRAME_SLOTS],
    /// Index of the oldest frame.
    head: usize,
    /// Frames waiting.
    len: usize,
}

impl fmt::Debug for LocalFrames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalFrames")
            .field("waiting", &self.len)
            .finish_non_exhaustive()
    }
}

impl LocalFrames {
    /// An empty queue, its slots allocated.
    pub(crate) fn new() -> Self {
        Self {
            slots: vec![[0; MAX_LOCAL_FRAME]; LOCAL_FRAME_SLOTS].into_boxed_slice(),
            lens: [0; LOCAL_FRAME_SLOTS],
            head: 0,
            len: 0,
        }
    }

    /// Whether no frame waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Frames waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Queues a frame `build` writes straight into a free slot, returning
    /// its length. Nothing is queued if there is no free slot (`build` is
    /// not called then), if `build` fails, or if it claims more bytes than
    /// the slot has.
    pub(crate) fn push_with<E>(
        &mut self,
        build: impl FnOnce(&mut [u8; MAX_LOCAL_FRAME]) -> Result<usize, E>,
    ) -> Result<(), PushError<E>> {
        if self.len >= LOCAL_FRAME_SLOTS {
            return Err(PushError::Full);
        }
        let at = (self.head + self.len) % LOCAL_FRAME_SLOTS;
        let (Some(slot), Some(slot_len)) = (self.slots.get_mut(at), self.lens.get_mut(at)) else {
            return Err(PushError::Full);
        };
        let n = build(slot).map_err(PushError::Build)?;
        *slot_len = n.min(MAX_LOCAL_FRAME);
        self.len += 1;
        Ok(())
    }

    /// Copies the oldest frame into `buf` and returns its length; `None`
    /// when none waits. A frame that does not fit `buf` is dropped and
    /// reported, so a caller with a short buffer cannot wedge the queue.
    pub(crate) fn pop_into(&mut self, buf: &mut [u8]) -> Option<Result<usize, TooSmall>> {
        if self.len == 0 {
            return None;
        }
        let at = self.head;
        self.head = (self.head + 1) % LOCAL_FRAME_SLOTS;
        self.len -= 1;
        let n = self.lens.get(at).copied().unwrap_or(0);
        let frame = self
            .slots
            .get(at)
            .and_then(|slot| slot.get(..n))
            .unwrap_or(&[]);
        Some(match buf.get_mut(..n) {
            Some(dst) => {
                dst.copy_from_slice(frame);
                Ok(n)
            }
            None => Err(TooSmall {
                need: n,
                have: buf.len(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(q: &mut LocalFrames, byte: u8, len: usize) -> Result<(), PushError<()>> {
        q.push_with(|slot| {
            slot[..len].fill(byte);
            Ok(len)
        })
    }

    #[test]
    fn first_in_first_out_across_the_wrap() {
        let mut q = LocalFrames::new();
        let mut buf = [0u8; MAX_LOCAL_FRAME];
        for round in 0..3u8 {
            for i in 0..10u8 {
                push(&mut q, round * 10 + i, 60 + usize::from(i)).unwrap();
            }
            for i in 0..10u8 {
                let n = q.pop_into(&mut buf).unwrap().unwrap();
                assert_eq!(n, 60 + usize::from(i));
                assert!(buf[..n].iter().all(|&b| b == round * 10 + i));
            }
            assert!(q.is_empty());
            assert!(q.pop_into(&mut buf).is_none());
        }
    }

    #[test]
    fn refuses_frames_when_full() {
        let mut q = LocalFrames::new();
        for i in 0..LOCAL_FRAME_SLOTS {
            push(&mut q, u8::try_from(i).unwrap(), 100).unwrap();
        }
        let mut called = false;
        let refused = q.push_with(|_| {
            called = true;
            Ok::<_, ()>(1)
        });
        assert_eq!(refused, Err(PushError::Full));
        assert!(!called);
        assert_eq!(q.len(), LOCAL_FRAME_SLOTS);
        let mut buf = [0u8; MAX_LOCAL_FRAME];
        assert_eq!(q.pop_into(&mut buf), Some(Ok(100)));
        assert_eq!(buf[0], 0);
        push(&mut q, 0xaa, MAX_LOCAL_FRAME).unwrap();
        for _ in 1..LOCAL_FRAME_SLOTS {
            q.pop_into(&mut buf).unwrap().unwrap();
        }
        assert_eq!(q.pop_into(&mut buf), Some(Ok(MAX_LOCAL_FRAME)));
        assert_eq!(buf[MAX_LOCAL_FRAME - 1], 0xaa);
    }

    #[test]
    fn failed_builds_and_short_buffers() {
        let mut q = LocalFrames::new();
        assert_eq!(
            q.push_with(|_| Err::<usize, _>("no")),
            Err(PushError::Build("no"))
        );
        assert!(q.is_empty());
        // A build claiming more than a slot is clamped, never read past.
        q.push_with(|_| Ok::<_, ()>(usize::MAX)).unwrap();
        let mut buf = vec![0u8; MAX_LOCAL_FRAME + 10];
        assert_eq!(q.pop_into(&mut buf), Some(Ok(MAX_LOCAL_FRAME)));
        push(&mut q, 1, 200).unwrap();
        push(&mut q, 2, 10).unwrap();
        let mut small = [0u8; 100];
        assert_eq!(
            q.pop_into(&mut small),
            Some(Err(TooSmall {
                need: 200,
                have: 100
            }))
        );
        assert_eq!(q.pop_into(&mut small), Some(Ok(10)));
        assert!(q.is_empty());
    }
}
