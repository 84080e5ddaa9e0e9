//! Transmit: frames from the guest's TX chains, judged by the datapath,
//! to the tap.

use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::Bytes;

use super::device::Active;
use super::tap::VNET_HDR_LEN;
use super::Net;
use crate::guest_warn;
use crate::net::FromGuest;
use crate::virtio::VIRTIO_MMIO_INT_VRING;

/// Chains handled per notification before the thread looks at its other
/// events (RX); the queue eventfd is signalled again to come back.
const TX_BUDGET: usize = 256;

/// Ethernet header length: the least a frame must have.
const ETH_HLEN: usize = 14;

impl Net {
    /// Sends every frame the guest queued (up to the budget) and
    /// interrupts it once if it wants to be.
    pub(super) fn transmit(&mut self) {
        let Some(mut a) = self.active.take() else {
            return;
        };
        if !a.broken {
            self.transmit_frames(&mut a);
        }
        if std::mem::take(&mut a.tx_used) && a.tx.needs_notification(&a.mem).unwrap_or(true) {
            a.interrupt.trigger(VIRTIO_MMIO_INT_VRING);
            self.metrics.interrupts += 1;
        }
        self.active = Some(a);
    }

    fn transmit_frames(&mut self, a: &mut Active) {
        let mut budget = TX_BUDGET;
        loop {
            if a.tx.disable_notification(&a.mem).is_err() {
                return self.tx_broken(a);
            }
            while budget > 0 {
                let chain = match a.tx.iter(&a.mem) {
                    Ok(mut iter) => iter.next(),
                    Err(_) => return self.tx_broken(a),
                };
                let Some(chain) = chain else { break };
                budget -= 1;
                let head = chain.head_index();
                let mut len = 0usize;
                let mut bad = false;
                for desc in chain {
                    // u32 always fits a usize on the 64-bit hosts we run on.
                    let n = desc.len() as usize;
                    let end = len + n;
                    if desc.is_write_only()
                        || end > self.tx_buf.len()
                        || a.mem
                            .read_slice(&mut self.tx_buf[len..end], desc.addr())
                            .is_err()
                    {
                        bad = true;
                        break;
                    }
                    len = end;
                }
                if bad || len < VNET_HDR_LEN + ETH_HLEN {
                    self.metrics.tx_bad_chains += 1;
                } else {
                    self.send(len);
                }
                if a.tx.add_used(&a.mem, head, 0).is_err() {
                    return self.tx_broken(a);
                }
                a.tx_used = true;
            }
            if budget == 0 {
                // More may wait: come back after RX had its turn.
                let _ = self.events.queues[super::TX_QUEUE].write(1);
                return;
            }
            match a.tx.enable_notification(&a.mem) {
                Ok(true) => continue,
                Ok(false) => return,
                Err(_) => return self.tx_broken(a),
            }
        }
    }

    /// Judges the gathered frame (`len` bytes, header first) and sends it.
    fn send(&mut self, len: usize) {
        match self.datapath.from_guest(&self.tx_buf[VNET_HDR_LEN..len]) {
            FromGuest::Forward => match self.tap.write(&self.tx_buf[..len]) {
                Ok(()) => {
                    self.metrics.tx_frames += 1;
                    self.metrics.tx_bytes += (len - VNET_HDR_LEN) as u64;
                }
                Err(e) => {
                    guest_warn!("virtio-net: writing to tap {}: {e}", self.tap.name());
                    self.metrics.tap_write_errors += 1;
                }
            },
            FromGuest::Consumed => self.metrics.tx_consumed += 1,
            FromGuest::Drop(_) => self.metrics.datapath_drops += 1,
        }
    }

    fn tx_broken(&mut self, a: &mut Active) {
        guest_warn!("virtio-net: TX queue protocol violation, device needs reset");
        self.metrics.queue_errors += 1;
        a.broken = true;
        a.interrupt.set_needs_reset();
    }
}
