//! Hostile input: truncations and random bytes must neither panic nor
//! produce anything but a verdict and well-formed replies.

use super::*;
use crate::net::{DropReason, FromGuest, ToGuest};

/// A DISCOVER with a few options, as a frame.
fn discover() -> Vec<u8> {
    let mut m = vec![1, 1, 6, 0, 1, 2, 3, 4, 0, 0, 0, 0];
    m.extend_from_slice(&[0; 16]); // ciaddr, yiaddr, siaddr, giaddr
    m.extend_from_slice(&GUEST_MAC.0);
    m.extend_from_slice(&[0; 10 + 64 + 128]);
    m.extend_from_slice(&[
        99, 130, 83, 99, 53, 1, 1, 50, 4, 10, 0, 0, 5, 55, 3, 1, 3, 6, 255,
    ]);
    eth(
        MacAddr::BROADCAST,
        GUEST_MAC,
        ETHERTYPE_IPV4,
        &ipv4_packet(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            17,
            &udp(68, 67, &m),
        ),
    )
}

/// `frame` with its IPv4 total length, header checksum and UDP length made
/// to agree with its length again.
fn fix_lengths(frame: &mut [u8]) {
    if frame.len() < 14 + 20 {
        return;
    }
    let ip_len = u16::try_from(frame.len() - 14).unwrap();
    frame[16..18].copy_from_slice(&ip_len.to_be_bytes());
    frame[24..26].fill(0);
    let sum = checksum(&[&frame[14..34]]);
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
    if frame.len() >= 14 + 20 + 8 {
        frame[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    }
}

/// Whatever the datapath queued must be a frame it could have meant.
fn check_local_frames(dp: &mut Datapath) {
    for frame in local_frames(dp) {
        assert!(
            (14 + 20 + 8 + 300..=14 + 576).contains(&frame.len()),
            "{}",
            frame.len()
        );
        assert_eq!(ones_sum(&[&frame[14..34]]), 0xffff);
    }
}

#[test]
fn every_truncation_of_a_dhcp_frame() {
    let whole = discover();
    let mut dp = datapath();
    assert_eq!(dp.from_guest(&whole), FromGuest::Consumed);
    check_local_frames(&mut dp);
    for len in 0..whole.len() {
        // As cut off on the wire…
        let verdict = dp.from_guest(&whole[..len]);
        assert!(
            matches!(verdict, FromGuest::Drop(_)),
            "cut to {len}: {verdict:?}"
        );
        // …and with lengths and checksum fixed up, so the DHCP parser
        // itself sees the short message.
        let mut fixed = whole[..len].to_vec();
        fix_lengths(&mut fixed);
        let verdict = dp.from_guest(&fixed);
        // Cut between options (after 53, 50 and 55; there is no END
        // then) the message is still whole; anywhere else it is not.
        let dhcp_len = len.saturating_sub(14 + 20 + 8);
        if [243, 249, 254].contains(&dhcp_len) {
            assert_eq!(verdict, FromGuest::Consumed, "fixed at {len}");
        } else {
            assert!(
                matches!(verdict, FromGuest::Drop(_)),
                "fixed at {len}: {verdict:?}"
            );
        }
        check_local_frames(&mut dp);
    }
}

#[test]
fn corrupted_dhcp_frames() {
    let whole = discover();
    let mut rng = XorShift(0x5eed_1234_abcd_0001);
    for mut dp in [datapath(), unchecked_datapath()] {
        for i in 0..20_000 {
            let mut frame = whole.clone();
            for _ in 0..=rng.below(8) {
                // Mostly the options and the fixed BOOTP fields.
                let at = if rng.below(4) == 0 {
                    rng.below(frame.len())
                } else {
                    14 + 20 + 8 + 236 + rng.below(frame.len() - 278)
                };
                frame[at] = rng.byte();
            }
            if rng.below(3) == 0 {
                frame.truncate(rng.below(frame.len() + 1));
            }
            if i % 2 == 0 {
                fix_lengths(&mut frame);
            }
            let _ = dp.from_guest(&frame);
            if dp.has_local_frames() {
                check_local_frames(&mut dp);
            }
        }
    }
}

#[test]
fn random_bytes_in_both_directions() {
    let mut rng = XorShift(0x0dd_ba11_cafe_f00d);
    let ethertypes = [0x0800u16, 0x86dd, 0x0806, 0x8100, 0x88cc];
    for mut dp in [datapath(), unchecked_datapath()] {
        for _ in 0..30_000 {
            let len = rng.below(400);
            let mut frame: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            if len >= 15 && rng.below(4) != 0 {
                frame[6..12].copy_from_slice(&GUEST_MAC.0);
                let ethertype = ethertypes[rng.below(ethertypes.len())];
                frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
                // A plausible version nibble gets the parsers further.
                frame[14] = match ethertype {
                    0x0800 => 0x45,
                    0x86dd => 0x60,
                    _ => frame[14],
                };
            }
            let _ = dp.from_guest(&frame);
            let _ = dp.to_guest(&frame);
            if dp.has_local_frames() {
                check_local_frames(&mut dp);
            }
        }
    }
}

#[test]
fn random_reports_and_extension_headers() {
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    let mut dp = datapath();
    for _ in 0..20_000 {
        let body: Vec<u8> = (0..rng.below(120)).map(|_| rng.byte()).collect();
        let mut igmp = body.clone();
        if let Some(kind) = igmp.first_mut() {
            *kind = [0x12, 0x16, 0x17, 0x22][rng.below(4)];
        }
        let _ = dp.from_guest(&ipv4_frame(
            GUEST_IP,
            Ipv4Addr::new(224, 0, 0, 22),
            2,
            &igmp,
        ));
        let mut mld = body;
        if let Some(kind) = mld.first_mut() {
            *kind = [131, 132, 143][rng.below(3)];
        }
        let next = [58, 0, 60, 43][rng.below(4)];
        let _ = dp.from_guest(&ipv6_frame(guest_link_local(), next, &mld));
    }
    // Random membership never exceeds the table or breaks the fixed groups.
    let all_nodes = eth(
        MacAddr([0x33, 0x33, 0, 0, 0, 1]),
        OTHER_MAC,
        ETHERTYPE_IPV6,
        &[0; 40],
    );
    assert_eq!(dp.to_guest(&all_nodes), ToGuest::Deliver);
    let stranger = eth(OTHER_MAC, GUEST_MAC, ETHERTYPE_IPV6, &[0; 40]);
    assert_eq!(
        dp.to_guest(&stranger),
        ToGuest::Drop(DropReason::NotForGuest)
    );
}
