//! Hostile frames: truncated at every length, mutated, random. The
//! firewall never panics and always decides.

use super::*;

fn rich_firewall() -> Firewall {
    firewall(json!({"groups": [
        {"id": "sg-1",
         "ingress": [{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["198.51.100.0/24", "2001:db8::/32"]},
                     {"protocol": "icmp", "cidrs": ["0.0.0.0/0"]},
                     {"protocol": "icmpv6", "cidrs": ["::/0"]},
                     {"protocol": "udp", "from_port": 0, "to_port": 65535, "cidrs": ["0.0.0.0/0"]}],
         "egress": [{"protocol": "-1", "cidrs": ["0.0.0.0/0", "::/0"]}]}]}))
}

fn samples() -> Vec<Vec<u8>> {
    let syn = tcp(GUEST, 40000, REMOTE, 443, SYN);
    let dgram = udp(GUEST6, 5000, REMOTE6, 4789);
    let mut with_ext = ip_frame(REMOTE6, GUEST6, 0, &[]);
    // Hop-by-hop, destination options, then TCP.
    let mut ext = vec![60, 0, 5, 2, 0, 0, 1, 0, 6, 0, 1, 4, 0, 0, 0, 0];
    ext.extend_from_slice(&tcp_segment(1000, 22, SYN));
    with_ext.truncate(14 + 40);
    with_ext.extend_from_slice(&ext);
    let len = u16::try_from(ext.len()).unwrap();
    with_ext[18..20].copy_from_slice(&len.to_be_bytes());
    vec![
        syn.clone(),
        tcp(REMOTE6, 1000, GUEST6, 22, SYN),
        dgram.clone(),
        icmp(REMOTE, GUEST, 8, 0, 1),
        icmp(REMOTE6, GUEST6, 128, 0, 1),
        icmp_error_frame("192.0.2.1", GUEST, 3, 4, &syn),
        icmp_error_frame("2001:db8:1::1", GUEST6, 2, 0, &dgram),
        ip_frame_with(
            REMOTE,
            GUEST,
            17,
            &udp_datagram(1, 53),
            64,
            Some((5, 0, true)),
        ),
        ip_frame_with(REMOTE, GUEST, 17, &[0; 16], 64, Some((5, 1, false))),
        ip_frame_with(
            REMOTE6,
            GUEST6,
            17,
            &udp_datagram(1, 53),
            64,
            Some((5, 0, true)),
        ),
        ip_frame_with(REMOTE6, GUEST6, 17, &[0; 16], 64, Some((5, 1, false))),
        ip_frame_with(
            "fe80::1",
            GUEST6,
            58,
            &icmp_message(135, 0, 0, &[0; 16]),
            255,
            None,
        ),
        with_ext,
        ip_frame(REMOTE, GUEST, 47, &[0; 4]),
    ]
}

/// Sets the IP length fields to what the frame holds.
fn fix_lengths(frame: &mut [u8]) {
    if frame.len() < 14 {
        return;
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let ip_len = frame.len() - 14;
    if ethertype == 0x0800 && ip_len >= 4 {
        let len = u16::try_from(ip_len).unwrap_or(u16::MAX);
        frame[16..18].copy_from_slice(&len.to_be_bytes());
    } else if ethertype == 0x86dd && ip_len >= 6 {
        let len = u16::try_from(ip_len.saturating_sub(40)).unwrap_or(u16::MAX);
        frame[18..20].copy_from_slice(&len.to_be_bytes());
    }
}

#[test]
fn truncated_at_every_length() {
    let mut fw = rich_firewall();
    for sample in samples() {
        allowed_or_denied(&mut fw, &sample);
        for len in 0..sample.len() {
            let mut cut = sample[..len].to_vec();
            allowed_or_denied(&mut fw, &cut);
            fix_lengths(&mut cut);
            allowed_or_denied(&mut fw, &cut);
        }
    }
}

fn allowed_or_denied(fw: &mut Firewall, frame: &[u8]) {
    // Both directions, twice (the second time may meet a flow).
    for now in [0, 1] {
        let _ = fw.ingress(frame, now);
        let _ = fw.egress(frame, now);
    }
}

#[test]
fn mutated_samples() {
    let mut fw = rich_firewall();
    let mut rng = Rng(0xbad_f00d);
    let samples = samples();
    for _ in 0..20_000 {
        let mut frame = rng.pick(&samples).clone();
        for _ in 0..1 + rng.below(4) {
            let i = usize::try_from(rng.below(frame.len() as u64)).unwrap();
            frame[i] = u8::try_from(rng.below(256)).unwrap();
        }
        if rng.chance(50) {
            fix_lengths(&mut frame);
        }
        allowed_or_denied(&mut fw, &frame);
    }
    fw.expire(1, usize::MAX);
}

#[test]
fn random_bytes() {
    let mut fw = rich_firewall();
    let mut rng = Rng(0x1234_5678);
    for _ in 0..20_000 {
        let len = usize::try_from(rng.below(160)).unwrap();
        let mut frame: Vec<u8> = (0..len)
            .map(|_| u8::try_from(rng.below(256)).unwrap())
            .collect();
        if len >= 15 && rng.chance(80) {
            let v6 = rng.chance(50);
            frame[12..14].copy_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
            frame[14] = if v6 { 0x60 } else { 0x45 | (frame[14] & 0x0f) };
            if rng.chance(70) {
                fix_lengths(&mut frame);
            }
        }
        allowed_or_denied(&mut fw, &frame);
    }
}
