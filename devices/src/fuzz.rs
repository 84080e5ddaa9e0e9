//! Entry points for fuzzers: each takes arbitrary bytes and must return
//! without panicking, hanging or allocating without bound. A cargo-fuzz
//! target only needs to call one of these.

use crate::disk::{DiskBackend, ImageFormat, MemStorage, Qcow2Disk};

/// Most a fuzzed image may grow while being written.
const MAX_GROWTH: u64 = 16 << 20;

/// Parses `data` as a qcow2 image (read-only and writable) and does a few
/// reads, writes and zeroings at offsets derived from its size.
pub fn qcow2_image(data: &[u8]) {
    let storage = MemStorage::new(data.to_vec(), data.len() as u64 + MAX_GROWTH);
    for read_only in [true, false] {
        let Ok(mut disk) = Qcow2Disk::from_storage(Box::new(storage.clone()), read_only) else {
            continue;
        };
        let size = disk.size();
        let mut buf = [0u8; 4096];
        for offset in [0, size / 3, size / 2 + 1000, size.saturating_sub(4096)] {
            let n = usize::try_from((size - offset.min(size)).min(buf.len() as u64)).unwrap_or(0);
            let _ = disk.read_at(&mut buf[..n], offset);
            if !read_only {
                buf[..n].fill(0x5a);
                let _ = disk.write_at(&buf[..n], offset);
                let _ = disk.read_at(&mut buf[..n], offset);
                let _ = disk.write_zeroes(offset, n as u64);
                let _ = disk.discard(offset, n as u64);
            }
        }
        let _ = disk.flush();
    }
}

/// Guest memory size for [`block_requests`].
const FUZZ_MEM_LEN: usize = 64 * 1024;
/// Disk size for [`block_requests`].
const FUZZ_DISK_LEN: usize = 64 * 1024;

/// Runs the virtio-blk request path on a guest memory image built from
/// `data`. Byte 0 picks options (bit 0 read-only, bit 1 EVENT_IDX, bits
/// 2..5 the queue size exponent, bit 5 the io_uring engine instead of the
/// synchronous one); the rest is guest memory, in which the descriptor
/// table sits at 0, the avail ring at 0x1000 and the used ring at 0x2000,
/// so the fuzzer controls every descriptor and ring entry. The disk is a
/// raw image in a temporary file, so requests take the direct path: the
/// iovecs into guest memory are built from fuzzed descriptors.
pub fn block_requests(data: &[u8]) {
    use crate::virtio::block::{Block, BlockOptions, IoEngine};
    use crate::virtio::{GuestMemoryMmap, VirtioDevice};
    use virtio_queue::{Queue, QueueT};
    use vm_memory::{Bytes, GuestAddress};

    let Some((&opts, image)) = data.split_first() else {
        return;
    };
    let Ok(mem) = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), FUZZ_MEM_LEN)]) else {
        return;
    };
    let n = image.len().min(FUZZ_MEM_LEN);
    if mem.write_slice(&image[..n], GuestAddress(0)).is_err() {
        return;
    }
    let Ok(file) = vmm_sys_util::tempfile::TempFile::new() else {
        return;
    };
    if file.as_file().set_len(FUZZ_DISK_LEN as u64).is_err() {
        return;
    }
    let options = BlockOptions {
        read_only: opts & 1 != 0,
        serial: "fuzz".into(),
        io_engine: if opts & 0x20 != 0 {
            IoEngine::Auto
        } else {
            IoEngine::Sync
        },
        rate_limiter: None,
    };
    let Ok(mut block) = Block::open(file.as_path(), Some(ImageFormat::Raw), options) else {
        return;
    };
    block.ack_features(block.avail_features());
    let Ok(mut queue) = Queue::new(256) else {
        return;
    };
    queue.set_size(1 << ((opts >> 2) & 7).min(8));
    queue.set_event_idx(opts & 2 != 0);
    queue.set_desc_table_address(Some(0), Some(0));
    queue.set_avail_ring_address(Some(0x1000), Some(0));
    queue.set_used_ring_address(Some(0x2000), Some(0));
    queue.set_ready(true);
    if block.activate(mem, vec![queue]).is_ok() {
        // Twice: the second pass sees the used ring the first one wrote.
        for _ in 0..2 {
            block.process_queue();
            block.complete_pending();
        }
    }
}

/// The guest's MAC, IPv4 address and gateway in the net fuzz targets.
const FUZZ_MAC: [u8; 6] = [2, 0, 10, 0, 0, 5];
const FUZZ_IP: [u8; 4] = [10, 0, 0, 5];
const FUZZ_GW: [u8; 4] = [10, 0, 0, 1];

/// A NIC datapath with everything on: source check, DHCP, security
/// groups (tracked, untracked and address-set rules), metadata.
fn fuzz_datapath() -> Option<crate::net::Datapath> {
    use crate::net::filter::{Firewall, SecurityGroupsConfig};
    use crate::net::metadata::{GuestAddrs, MetadataDocument, MetadataOptions, MetadataService};
    use crate::net::{Datapath, MacAddr, NicIdentity};

    let identity = NicIdentity {
        mac: MacAddr(FUZZ_MAC),
        ipv4: FUZZ_IP.into(),
        prefix_len: 24,
        gateway: FUZZ_GW.into(),
        ipv6: Some("fd00::5".parse().ok()?),
        dns: vec![FUZZ_GW.into()],
        hostname: "ip-10-0-0-5".into(),
        domain: "compute.internal".into(),
        mtu: 1500,
        lease_secs: 3600,
        source_dest_check: true,
    };
    let sg: SecurityGroupsConfig = serde_json::from_str(
        r#"{"groups": [{"id": "sg-1",
            "ingress": [{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.0.0.0/8"]},
                        {"protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": ["0.0.0.0/0"]},
                        {"protocol": "udp", "from_port": 53, "to_port": 53, "source_groups": ["sg-2"]},
                        {"protocol": "icmp", "from_port": 8, "to_port": -1, "cidrs": ["0.0.0.0/0"]},
                        {"protocol": "icmpv6", "from_port": -1, "to_port": -1, "cidrs": ["::/0"]}],
            "egress": [{"protocol": "-1", "cidrs": ["0.0.0.0/0", "::/0"]}]}],
          "address_sets": {"sg-2": ["10.0.0.9", "fd00::9"]},
          "connection_tracking": {"max_flows": 64}}"#,
    )
    .ok()?;
    let doc: MetadataDocument = serde_json::from_str(
        r#"{"instance_id": "i-0123456789abcdef0", "ami_id": "ami-0123456789abcdef0",
            "instance_type": "t3.micro", "account_id": "123456789012", "region": "us-east-1",
            "availability_zone": "us-east-1a", "local_ipv4": "10.0.0.5",
            "local_hostname": "ip-10-0-0-5", "hostname": "ip-10-0-0-5",
            "mac": "02:00:0a:00:00:05", "pending_time": "2026-11-30T00:00:00Z",
            "user_data": "aGVsbG8K"}"#,
    )
    .ok()?;
    let guest = GuestAddrs {
        mac: MacAddr(FUZZ_MAC),
        ipv4: FUZZ_IP.into(),
        ipv6: identity.ipv6,
    };
    let metadata = MetadataService::new(doc, MetadataOptions::default(), guest).ok()?;
    let mut datapath = Datapath::new(identity);
    datapath.set_firewall(Some(Firewall::new(&sg).ok()?));
    datapath.set_metadata(Some(metadata));
    Some(datapath)
}

/// Frames through one NIC's whole datapath, both ways: `data` is a
/// sequence of records `[flags, len_lo, len_hi, bytes…]`; bit 0 of flags
/// picks the direction (guest TX or tap RX), bit 1 runs the timer work
/// afterwards, bit 2 gives the frame the guest's own Ethernet and IPv4
/// source (TX) or destination (RX) so the fuzzer gets past the source and
/// destination checks into DHCP, metadata and the security groups.
pub fn net_datapath(data: &[u8]) {
    let Some(mut datapath) = fuzz_datapath() else {
        return;
    };
    let mut frame = Vec::with_capacity(2048);
    let mut out = vec![0u8; crate::net::MAX_LOCAL_FRAME];
    let mut rest = data;
    while let [flags, lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi]))
            .min(tail.len())
            .min(4096);
        let (bytes, next) = tail.split_at(len);
        rest = next;
        frame.clear();
        frame.extend_from_slice(bytes);
        let tx = flags & 1 == 0;
        if flags & 4 != 0 && frame.len() >= 34 {
            if tx {
                frame[6..12].copy_from_slice(&FUZZ_MAC);
                frame[26..30].copy_from_slice(&FUZZ_IP);
            } else {
                frame[0..6].copy_from_slice(&FUZZ_MAC);
                frame[30..34].copy_from_slice(&FUZZ_IP);
            }
            frame[12..14].copy_from_slice(&[0x08, 0x00]);
        }
        if tx {
            let _ = datapath.from_guest(&frame);
        } else {
            let _ = datapath.to_guest(&frame);
        }
        if flags & 2 != 0 {
            datapath.poll();
        }
        while datapath.pop_local_frame(&mut out).is_some() {}
    }
    let _ = datapath.next_deadline_ms();
}

/// An IPv4/TCP frame from the guest to the metadata service.
fn metadata_segment(sport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(54 + payload.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]); // the gateway's MAC, as the guest routes it
    f.extend_from_slice(&FUZZ_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = u16::try_from(40 + payload.len()).unwrap_or(u16::MAX);
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&FUZZ_IP);
    f.extend_from_slice(&[169, 254, 169, 254]);
    let sum = crate::net::checksum::internet_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&80u16.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    // Header length 5 words; no options. The checksum is left 0: offloaded
    // checksums arrive partial, so the service does not check them.
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// HTTP requests to the metadata service over a real TCP conversation:
/// a handshake, then `data` as the request stream in segments (each
/// record `[len, bytes…]`), so the fuzzer drives the HTTP parser and the
/// IMDS rules rather than the handshake.
pub fn metadata_http(data: &[u8]) {
    let _ = metadata_conversation(data);
}

/// [`metadata_http`], returning the datapath for a look at its counters.
fn metadata_conversation(data: &[u8]) -> Option<crate::net::Datapath> {
    let mut datapath = fuzz_datapath()?;
    let mut out = vec![0u8; crate::net::MAX_LOCAL_FRAME];
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const PSH: u8 = 0x08;
    let sport = 40000;
    let mut seq = 1000u32;
    let _ = datapath.from_guest(&metadata_segment(sport, seq, 0, SYN, &[]));
    // The SYN-ACK's sequence number, to acknowledge.
    let mut server_seq = 0u32;
    while let Some(n) = datapath.pop_local_frame(&mut out) {
        if n >= 54 && out[23] == 6 {
            server_seq = u32::from_be_bytes([out[38], out[39], out[40], out[41]]);
        }
    }
    seq = seq.wrapping_add(1);
    let mut ack = server_seq.wrapping_add(1);
    let _ = datapath.from_guest(&metadata_segment(sport, seq, ack, ACK, &[]));
    let mut rest = data;
    while let [len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        let _ = datapath.from_guest(&metadata_segment(sport, seq, ack, ACK | PSH, bytes));
        seq = seq.wrapping_add(u32::try_from(bytes.len()).unwrap_or(0));
        while let Some(n) = datapath.pop_local_frame(&mut out) {
            // Acknowledge what the service sent, so it keeps sending.
            if n >= 54 && out[23] == 6 {
                let their_seq = u32::from_be_bytes([out[38], out[39], out[40], out[41]]);
                let sent = u32::try_from(n - 54).unwrap_or(0);
                ack = their_seq.wrapping_add(sent);
            }
        }
        datapath.poll();
    }
    Some(datapath)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_requests_survive_noise() {
        block_requests(&[]);
        block_requests(&[0xff]);
        let mut x = 0x1234_5678_9abc_def0u64;
        for round in 0..64u8 {
            let mut data = vec![0u8; 0x3000];
            for b in data.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x.to_le_bytes()[0];
            }
            data[0] = round | if round % 2 == 0 { 0x20 } else { 0 };
            // Plausible ring indices so chains are actually walked.
            data[1 + 0x1002] = round % 5;
            data[1 + 0x1003] = 0;
            block_requests(&data);
        }
    }

    #[test]
    fn net_targets_survive_noise_and_reach_the_services() {
        net_datapath(&[]);
        metadata_http(&[]);
        let request = b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut data = vec![u8::try_from(request.len()).unwrap()];
        data.extend_from_slice(request);
        let datapath = metadata_conversation(&data).unwrap();
        let mut answered = 0;
        datapath.write_metrics(&mut |name, n| {
            if name == "imds_requests" {
                answered = n;
            }
        });
        assert_eq!(answered, 1, "the target reaches the HTTP layer");
        let mut x = 0x0bad_5eed_dead_beefu64;
        for _ in 0..200 {
            let mut data = vec![0u8; 600];
            for b in data.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x.to_le_bytes()[0];
            }
            net_datapath(&data);
            metadata_http(&data);
        }
    }
}
