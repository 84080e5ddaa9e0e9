//! The request loop: take chains off the queue, parse them, and either
//! start them on the engine or answer them on the spot.
//!
//! One drain pushes every request it can and then starts them all with a
//! single `submit` (one `io_uring_enter`). Requests that need no I/O
//! (malformed, unsupported, GET_ID, read-only refusals) and those that
//! take the synchronous path are answered during the drain; the guest is
//! interrupted once at the end of each event, for everything used.

use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::GuestAddress;

use super::device::Active;
use super::io::StartError;
use super::request::{self, Request, RequestError, RequestType};
use super::{status, Block, SECTOR_SIZE, SEG_MAX};
use crate::disk::{Access, Route};
use crate::guest_warn;

/// What `request::parse` returns.
type Parsed = Result<Request, (RequestError, Option<GuestAddress>)>;

/// Queue-draining passes per notification before yielding to other
/// devices on the event loop (the device re-signals itself to resume).
const MAX_PASSES: usize = 4;

/// What became of a request.
enum Outcome {
    /// Answered now with (status, bytes written to the guest).
    Done(u8, u32),
    /// Started on the engine; its completion answers it.
    InFlight,
}

impl Block {
    /// Call when the queue `EventFd` is readable: clears it and processes
    /// the queue (a no-op until the driver has activated the device).
    pub fn handle_queue_event(&mut self) {
        // Always consume the event, even when inactive, so a level-
        // triggered event loop does not spin.
        let _ = self.events.queues[0].read();
        self.metrics.queue_events += 1;
        self.process_queue();
    }

    /// Call when the engine's completion eventfd is readable: answers the
    /// requests that finished, and resumes a drain that had run out of
    /// room.
    pub fn handle_completion_event(&mut self) {
        if let Some(fd) = self.io.engine.completion_fd() {
            let _ = fd.read();
        }
        self.metrics.completion_events += 1;
        let Some(mut a) = self.active.take() else {
            return;
        };
        self.reap(&mut a);
        if a.stalled && !a.broken && self.io.table.has_free() {
            self.drain(&mut a);
            self.reap(&mut a);
        }
        self.signal_used(&mut a);
        self.active = Some(a);
    }

    /// Starts or answers every available request, answers whatever has
    /// completed, and signals the guest once.
    pub fn process_queue(&mut self) {
        let Some(mut a) = self.active.take() else {
            return;
        };
        if !a.broken {
            self.drain(&mut a);
        }
        // Completions the submit itself produced (the kernel completes
        // much I/O inline) are answered now, not one event later.
        self.reap(&mut a);
        self.signal_used(&mut a);
        self.active = Some(a);
    }

    /// Blocks until every request in flight is answered, then signals the
    /// guest. For callers without an event loop (tests, fuzzing).
    pub fn complete_pending(&mut self) {
        let Some(mut a) = self.active.take() else {
            return;
        };
        self.complete_in_flight(&mut a);
        if a.stalled && !a.broken {
            self.drain(&mut a);
            self.complete_in_flight(&mut a);
        }
        self.signal_used(&mut a);
        self.active = Some(a);
    }

    pub(super) fn drain(&mut self, a: &mut Active) {
        a.stalled = false;
        a.throttled = false;
        'passes: for pass in 0.. {
            if pass == MAX_PASSES {
                // Still busy: let other devices run, then come back.
                let _ = self.events.queues[0].write(1);
                break;
            }
            if a.queue.disable_notification(&a.mem).is_err() {
                self.queue_broken(a);
                break;
            }
            for _ in 0..a.queue.size() {
                if !self.io.table.has_free() {
                    // Left on the queue; a completion resumes the drain.
                    a.stalled = true;
                    self.metrics.queue_full_stalls += 1;
                    break 'passes;
                }
                let chain = match a.queue.iter(&a.mem) {
                    Ok(mut iter) => iter.next(),
                    Err(_) => {
                        self.queue_broken(a);
                        break 'passes;
                    }
                };
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                let parsed = request::parse(
                    chain,
                    &a.mem,
                    &mut self.segments,
                    SEG_MAX as usize,
                    self.capacity_sectors,
                );
                if !self.start_request(a, head, parsed) {
                    // Held back by the rate limiter; its timer resumes.
                    break 'passes;
                }
                if a.broken {
                    break 'passes;
                }
            }
            match a.queue.enable_notification(&a.mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(_) => {
                    self.queue_broken(a);
                    break;
                }
            }
        }
        self.submit();
    }

    /// Answers or starts one parsed chain (its data segments are in
    /// `self.segments`); `false` if the rate limiter put it back.
    fn start_request(&mut self, a: &mut Active, head: u16, parsed: Parsed) -> bool {
        let req = match parsed {
            Ok(req) => req,
            Err((e, Some(status_addr))) => {
                log::debug!("virtio-blk: malformed request: {e}");
                self.metrics.invalid_requests += 1;
                self.complete(a, head, status_addr, status::IOERR, 0);
                return true;
            }
            Err((e, None)) => {
                log::debug!("virtio-blk: dropped chain: {e}");
                self.metrics.dropped_chains += 1;
                self.add_used(a, head, 0);
                return true;
            }
        };
        if !self.admit(&req) {
            self.hold_back(a);
            return false;
        }
        if let Outcome::Done(status, written) = self.dispatch(a, head, &req) {
            self.complete(a, head, req.status_addr, status, written);
        }
        true
    }

    fn dispatch(&mut self, a: &mut Active, head: u16, req: &Request) -> Outcome {
        let writes_disk = matches!(
            req.request_type,
            RequestType::Out | RequestType::Discard | RequestType::WriteZeroes
        );
        if writes_disk && self.read_only {
            self.metrics.read_only_rejections += 1;
            return Outcome::Done(status::IOERR, 0);
        }
        match req.request_type {
            RequestType::In | RequestType::Out => self.start_data(a, head, req),
            RequestType::Flush => self.start_flush_request(a, head, req),
            RequestType::GetDeviceId => {
                self.metrics.get_ids += 1;
                Outcome::Done(status::OK, self.write_serial(&a.mem))
            }
            RequestType::Discard | RequestType::WriteZeroes => {
                let (status, written) = self.zero_ranges(a, req);
                Outcome::Done(status, written)
            }
            RequestType::Unsupported(t) => {
                log::debug!("virtio-blk: unsupported request type {t}");
                self.metrics.unsupported += 1;
                Outcome::Done(status::UNSUPP, 0)
            }
        }
    }

    fn start_data(&mut self, a: &mut Active, head: u16, req: &Request) -> Outcome {
        let access = match req.request_type {
            RequestType::In => Access::Read,
            _ => Access::Write,
        };
        if req.data_len == 0 {
            match access {
                Access::Read => self.metrics.reads += 1,
                Access::Write => self.metrics.writes += 1,
            }
            return Outcome::Done(status::OK, 0);
        }
        // parse() checked the sector range against the capacity.
        let offset = req.sector * SECTOR_SIZE;
        let route = self
            .disk
            .route(offset, req.data_len, access, &mut self.extents);
        let frees = match route {
            Ok(Route::Direct(fd)) => match self.start_rw(a, head, req, fd) {
                Ok(()) => return Outcome::InFlight,
                // Direct was possible, so it is written in place.
                Err(StartError::Fragmented) => false,
                Err(StartError::BadAddress) => {
                    self.metrics.invalid_requests += 1;
                    return Outcome::Done(status::IOERR, 0);
                }
                Err(StartError::Failed) => {
                    self.metrics.io_errors += 1;
                    return Outcome::Done(status::IOERR, 0);
                }
            },
            Ok(Route::Sync { frees }) => frees,
            Err(e) => {
                guest_warn!("virtio-blk: {:?} failed: {e}", req.request_type);
                self.metrics.io_errors += 1;
                return Outcome::Done(status::IOERR, 0);
            }
        };
        // When the synchronous path must wait: see io.rs.
        if frees || self.io.overlaps(offset, req.data_len) {
            self.complete_in_flight(a);
        }
        self.metrics.sync_path_requests += 1;
        let (status, written) = self.rw_sync(&a.mem, req);
        Outcome::Done(status, written)
    }

    fn start_flush_request(&mut self, a: &mut Active, head: u16, req: &Request) -> Outcome {
        if self.read_only {
            // Nothing was ever written, so nothing needs to be durable.
            self.metrics.flushes += 1;
            return Outcome::Done(status::OK, 0);
        }
        if let Some(fd) = self.disk.flush_fd() {
            if self.start_flush(a, head, req.status_addr, fd) {
                return Outcome::InFlight;
            }
        }
        self.complete_in_flight(a);
        self.metrics.sync_path_requests += 1;
        match self.disk.flush() {
            Ok(()) => {
                self.metrics.flushes += 1;
                Outcome::Done(status::OK, 0)
            }
            Err(e) => {
                guest_warn!("virtio-blk: flush failed: {e}");
                self.metrics.io_errors += 1;
                Outcome::Done(status::IOERR, 0)
            }
        }
    }
}
