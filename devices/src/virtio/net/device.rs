//! The virtio-net device: construction, features, config space,
//! activation and reset. Moving frames lives in `rx.rs` and `tx.rs`.

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_UFO,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS,
    VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::Queue;
use vmm_sys_util::timerfd::TimerFd;

use super::metrics::NetMetrics;
use super::rx::RxChains;
use super::tap::Tap;
use super::{MAX_BUFFER, RX_QUEUE, TX_QUEUE};
use crate::net::{Datapath, NicIdentity, MAX_LOCAL_FRAME};
use crate::virtio::features::{
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use crate::virtio::{
    checked_queues, device_type, read_config_bytes, ActivateError, DeviceEvents, GuestMemoryMmap,
    IrqTrigger, VirtioDevice,
};

/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;

/// `VIRTIO_NET_S_LINK_UP` as the 16-bit status field holds it.
const LINK_UP: u16 = 1;
const _: () = assert!(LINK_UP as u32 == VIRTIO_NET_S_LINK_UP);

/// Config space: mac (6), status (2), max_virtqueue_pairs (2), mtu (2).
const CONFIG_LEN: usize = 12;
const CONFIG_STATUS: usize = 6;

/// Errors building a net device.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The device's eventfds could not be created.
    #[error("cannot create the device's eventfds: {0}")]
    EventFd(std::io::Error),
    /// The datapath's timer could not be created.
    #[error("cannot create the datapath timer: {0}")]
    Timer(vmm_sys_util::errno::Error),
    /// The NIC's MAC address cannot be a station's.
    #[error("MAC address {0} is multicast or zero")]
    BadMac(crate::net::MacAddr),
}

/// What the device has while the driver runs it.
#[derive(Debug)]
pub(super) struct Active {
    pub mem: GuestMemoryMmap,
    pub rx: Queue,
    pub tx: Queue,
    pub interrupt: IrqTrigger,
    /// The driver broke the queue protocol; nothing more is processed
    /// until it resets the device.
    pub broken: bool,
    /// The driver accepted mergeable RX buffers.
    pub mergeable: bool,
    /// Chains were used in the queue since the last interrupt decision.
    pub rx_used: bool,
    pub tx_used: bool,
}

/// A virtio-net device over one tap.
#[derive(Debug)]
pub struct Net {
    pub(super) tap: Tap,
    pub(super) datapath: Datapath,
    avail_features: u64,
    pub(super) acked_features: u64,
    config: [u8; CONFIG_LEN],
    pub(super) events: DeviceEvents,
    pub(super) active: Option<Active>,
    /// Which fds the event handler watches besides the activation eventfd.
    pub(super) watching: super::event_handler::Watching,
    /// The frame on its way to the guest (header first), if one waits for
    /// guest buffers: `rx_len` bytes of it.
    pub(super) rx_buf: Box<[u8]>,
    pub(super) rx_len: Option<usize>,
    /// Whether that frame is one of the datapath's own (for metrics).
    pub(super) rx_local: bool,
    /// Guest RX chains taken for that frame.
    pub(super) rx_chains: RxChains,
    /// The frame the guest is sending, gathered from its chain.
    pub(super) tx_buf: Box<[u8]>,
    /// Wakes the device for the datapath's time-driven work (metadata
    /// retransmissions, connection-tracking sweeps, flow-log intervals).
    pub(super) timer: TimerFd,
    /// When the timer is armed for (the datapath's monotonic ms).
    pub(super) timer_deadline: Option<u64>,
    pub(super) metrics: NetMetrics,
}

impl Net {
    /// A NIC for `identity` over `tap`, with a datapath of only the source
    /// check and DHCP; see [`Self::datapath_mut`] for the rest.
    pub fn new(tap: Tap, identity: NicIdentity) -> Result<Self, NetError> {
        if !identity.mac.is_unicast() || identity.mac.is_zero() {
            return Err(NetError::BadMac(identity.mac));
        }
        let avail_features = 1u64 << VIRTIO_F_VERSION_1
            | 1 << VIRTIO_RING_F_EVENT_IDX
            | 1 << VIRTIO_RING_F_INDIRECT_DESC
            | 1 << VIRTIO_NET_F_MAC
            | 1 << VIRTIO_NET_F_STATUS
            | 1 << VIRTIO_NET_F_MTU
            | 1 << VIRTIO_NET_F_MRG_RXBUF
            | 1 << VIRTIO_NET_F_CSUM
            | 1 << VIRTIO_NET_F_GUEST_CSUM
            | 1 << VIRTIO_NET_F_GUEST_TSO4
            | 1 << VIRTIO_NET_F_GUEST_TSO6
            | 1 << VIRTIO_NET_F_GUEST_UFO
            | 1 << VIRTIO_NET_F_HOST_TSO4
            | 1 << VIRTIO_NET_F_HOST_TSO6
            | 1 << VIRTIO_NET_F_HOST_UFO;
        let mut config = [0u8; CONFIG_LEN];
        config[..6].copy_from_slice(&identity.mac.octets());
        config[6..8].copy_from_slice(&LINK_UP.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config[10..12].copy_from_slice(&identity.mtu.to_le_bytes());
        log::info!(
            "virtio-net on tap {}: mac {}, {}/{}",
            tap.name(),
            identity.mac,
            identity.ipv4,
            identity.prefix_len
        );
        Ok(Self {
            tap,
            datapath: Datapath::new(identity),
            avail_features,
            acked_features: 0,
            config,
            events: DeviceEvents::new(2).map_err(NetError::EventFd)?,
            active: None,
            watching: Default::default(),
            rx_buf: vec![0; MAX_BUFFER.max(MAX_LOCAL_FRAME + super::tap::VNET_HDR_LEN)]
                .into_boxed_slice(),
            rx_len: None,
            rx_local: false,
            rx_chains: RxChains::new(usize::from(QUEUE_SIZE)),
            tx_buf: vec![0; MAX_BUFFER].into_boxed_slice(),
            timer: TimerFd::new().map_err(NetError::Timer)?,
            timer_deadline: None,
            metrics: NetMetrics::default(),
        })
    }

    /// The datapath, to give it security groups, metadata and a flow log
    /// or change them live (through the device lock, like every other
    /// change: the datapath runs on the device's thread).
    pub fn datapath_mut(&mut self) -> &mut Datapath {
        &mut self.datapath
    }

    /// The datapath.
    pub fn datapath(&self) -> &Datapath {
        &self.datapath
    }

    /// Counters since creation.
    pub fn metrics(&self) -> NetMetrics {
        self.metrics
    }

    /// The tap's name.
    pub fn tap_name(&self) -> &str {
        self.tap.name()
    }

    /// Whether the link is up (as the guest sees it).
    pub fn link_up(&self) -> bool {
        let status =
            u16::from_le_bytes([self.config[CONFIG_STATUS], self.config[CONFIG_STATUS + 1]]);
        status & LINK_UP != 0
    }

    /// Sets the link status the guest sees and tells its driver with a
    /// configuration-change interrupt.
    pub fn set_link_up(&mut self, up: bool) {
        if self.link_up() == up {
            return;
        }
        let status = if up { LINK_UP } else { 0 };
        self.config[CONFIG_STATUS..CONFIG_STATUS + 2].copy_from_slice(&status.to_le_bytes());
        self.events
            .interrupt
            .notify_config_change(self.active.is_some());
    }

    /// The offloads the tap may use towards the guest, from what its
    /// driver accepted.
    pub(super) fn tap_offloads(&self) -> libc::c_uint {
        let has = |bit: u32| self.acked_features & (1 << bit) != 0;
        let mut flags = 0;
        if has(VIRTIO_NET_F_GUEST_CSUM) {
            flags |= libc::TUN_F_CSUM;
            if has(VIRTIO_NET_F_GUEST_TSO4) {
                flags |= libc::TUN_F_TSO4;
            }
            if has(VIRTIO_NET_F_GUEST_TSO6) {
                flags |= libc::TUN_F_TSO6;
            }
            if has(VIRTIO_NET_F_GUEST_UFO) {
                flags |= libc::TUN_F_UFO;
            }
        }
        flags
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn events(&self) -> &DeviceEvents {
        &self.events
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // The MAC is writable only with VIRTIO_NET_F_CTRL_MAC_ADDR (not
        // offered); nothing else is writable at all.
        log::debug!(
            "virtio-net: ignored {}-byte config write at {offset:#x}",
            data.len()
        );
    }

    fn activate(&mut self, mem: GuestMemoryMmap, queues: Vec<Queue>) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let mut queues = checked_queues(&mem, queues, 2)?;
        let tx = queues.remove(TX_QUEUE);
        let rx = queues.remove(RX_QUEUE);
        self.active = Some(Active {
            mem,
            rx,
            tx,
            interrupt: self.events.interrupt.clone(),
            broken: false,
            mergeable: self.acked_features & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0,
            rx_used: false,
            tx_used: false,
        });
        Ok(())
    }

    fn reset(&mut self) {
        // Nothing is in flight outside this thread's calls: frames move
        // synchronously. Held chains belong to the old queue.
        self.active = None;
        self.acked_features = 0;
        self.rx_chains.clear();
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn write_metrics(&self, out: &mut dyn FnMut(&'static str, u64)) {
        self.metrics.write(out);
        self.datapath.write_metrics(out);
    }

    fn write_gauges(&self, out: &mut dyn FnMut(&'static str, u64)) {
        self.datapath.write_gauges(out);
    }
}
