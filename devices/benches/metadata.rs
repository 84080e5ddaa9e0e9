//! Instance metadata service: requests per second with 100 concurrent
//! clients, measured on the service itself (TCP responder, HTTP parsing,
//! IMDSv2 token check, response segments), as the datapath drives it.
//!
//! 100 connections are opened (handshakes done before timing); each
//! iteration sends one keep-alive IMDSv2 `GET /latest/meta-data/instance-id`
//! on every connection and acknowledges the reply, so one iteration is 100
//! requests. Run with `cargo bench -p stratus-devices --bench metadata`.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stratus_devices::net::metadata::{
    GuestAddrs, MetadataDocument, MetadataOptions, MetadataService,
};
use stratus_devices::net::MacAddr;

const CLIENTS: u16 = 100;
const GUEST_MAC: [u8; 6] = [2, 0, 10, 0, 0, 5];
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;

/// An Ethernet/IPv4/TCP segment from the guest to 169.254.169.254:80.
fn segment(sport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1];
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
    let total = u16::try_from(40 + payload.len()).unwrap();
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&GUEST_IP.octets());
    f.extend_from_slice(&[169, 254, 169, 254]);
    let mut sum = 0u32;
    for pair in f[14..34].chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let sum = !u16::try_from(sum).unwrap();
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&80u16.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// One client's view of its connection.
struct Client {
    port: u16,
    seq: u32,
    ack: u32,
}

/// The reply segments' highest sequence end, and the token body if any.
fn take_replies(frames: &mut Vec<Vec<u8>>) -> (Option<u32>, Vec<u8>) {
    let mut end = None;
    let mut body = Vec::new();
    for f in frames.drain(..) {
        if f.len() < 54 || f[23] != 6 {
            continue;
        }
        let seq = u32::from_be_bytes([f[38], f[39], f[40], f[41]]);
        // Past the TCP options (the SYN-ACK has MSS), up to the IP total
        // length (short frames are padded to 60 bytes).
        let ip_end = 14 + usize::from(u16::from_be_bytes([f[16], f[17]]));
        let data = &f[34 + usize::from(f[46] >> 4) * 4..ip_end.min(f.len())];
        let syn_fin = u32::from(f[47] & 0x03 != 0);
        let len = u32::try_from(data.len()).unwrap() + syn_fin;
        end = Some(seq.wrapping_add(len));
        body.extend_from_slice(data);
    }
    (end, body)
}

fn service() -> MetadataService {
    let doc: MetadataDocument = serde_json::from_str(
        r#"{"instance_id": "i-0123456789abcdef0", "ami_id": "ami-0123456789abcdef0",
            "instance_type": "t3.micro", "account_id": "123456789012", "region": "us-east-1",
            "availability_zone": "us-east-1a", "local_ipv4": "10.0.0.5",
            "local_hostname": "ip-10-0-0-5", "hostname": "ip-10-0-0-5",
            "mac": "02:00:0a:00:00:05", "pending_time": "2026-11-30T00:00:00Z"}"#,
    )
    .unwrap();
    let guest = GuestAddrs {
        mac: MacAddr(GUEST_MAC),
        ipv4: GUEST_IP,
        ipv6: None,
    };
    MetadataService::new(doc, MetadataOptions::default(), guest).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut svc = service();
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let now = 100_000_000;
    // A token first, on a connection of its own.
    let mut token_client = Client {
        port: 30000,
        seq: 1,
        ack: 0,
    };
    let handshake = |svc: &mut MetadataService, client: &mut Client| {
        let mut frames = Vec::new();
        svc.handle(
            &segment(client.port, client.seq, 0, SYN, &[]),
            now,
            &mut |f| frames.push(f.to_vec()),
        );
        let (end, _) = take_replies(&mut frames);
        client.seq = client.seq.wrapping_add(1);
        client.ack = end.expect("a SYN-ACK");
        svc.handle(
            &segment(client.port, client.seq, client.ack, ACK, &[]),
            now,
            &mut |f| frames.push(f.to_vec()),
        );
    };
    handshake(&mut svc, &mut token_client);
    let put = b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\r\n";
    svc.handle(
        &segment(
            token_client.port,
            token_client.seq,
            token_client.ack,
            PSH_ACK,
            put,
        ),
        now,
        &mut |f| frames.push(f.to_vec()),
    );
    let (_, reply) = take_replies(&mut frames);
    let reply = String::from_utf8(reply).unwrap();
    let token = reply
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no token in {reply:?}"))
        .to_owned();
    let request = format!(
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n"
    );
    let request = request.as_bytes();

    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| Client {
            port: 40000 + i,
            seq: 1,
            ack: 0,
        })
        .collect();
    for client in &mut clients {
        handshake(&mut svc, client);
    }
    let request_len = u32::try_from(request.len()).unwrap();
    let mut group = c.benchmark_group("metadata");
    group.throughput(Throughput::Elements(u64::from(CLIENTS)));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("requests_100_clients", |b| {
        b.iter(|| {
            for client in &mut clients {
                svc.handle(
                    &segment(client.port, client.seq, client.ack, PSH_ACK, request),
                    now,
                    &mut |f| frames.push(f.to_vec()),
                );
                client.seq = client.seq.wrapping_add(request_len);
                let (end, body) = take_replies(&mut frames);
                client.ack = end.unwrap_or_else(|| {
                    let mut m = String::new();
                    svc.write_metrics(&mut |n, v| m.push_str(&format!("{n}={v} ")));
                    panic!("no reply on port {}: {m}", client.port)
                });
                black_box(body);
                // Acknowledge the reply so the connection's buffer frees.
                svc.handle(
                    &segment(client.port, client.seq, client.ack, ACK, &[]),
                    now,
                    &mut |f| frames.push(f.to_vec()),
                );
                frames.clear();
            }
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
