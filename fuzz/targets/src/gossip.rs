//! `gossip_frame`: datagrams as they arrive on a member's gossip port, through the transport's
//! receive path (`geolb_member::fuzz::GossipEndpoint`).
//!
//! # Input
//! A sequence of records, `flags` (1 byte), `length` (2 bytes, big-endian), then that many bytes
//! of datagram (fewer at the end of the input). Flags:
//! - bit 0: sign: the datagram's last 32 bytes are replaced by the HMAC-SHA256 of the bytes before
//!   them under the cluster key (so mutations reach what is checked after the tag);
//! - bit 1: the datagram comes from [`SOURCE`] as an IPv4-mapped IPv6 address (a dual-stack
//!   socket's view), else from [`SOURCE`] itself;
//! - bits 2–4: the receiver's clock against the frame's "sent at" field (bytes 4–11, or
//!   [`FIXED_NOW`] when the datagram is shorter): one of [`SKEWS_MS`].
//!
//! Frames in the corpus are written by the real sender, advertising [`SOURCE`].

use std::net::{IpAddr, SocketAddr};

use chitchat::{ChitchatMessage, Deserializable, Serializable};
use geolb_member::fuzz::{GossipEndpoint, MAX_DATAGRAM, TAG_LEN};
use hmac::{KeyInit, Mac};

use crate::fixture::{must, runtime};

/// The cluster key every frame of the corpus is signed with (`openssl rand -hex 32` style, and
/// public: it protects nothing).
pub const KEY: &[u8; 32] = b"geolb fuzz cluster key, 32 bytes";
/// The sender of every frame of the corpus and the source of every datagram.
pub const SOURCE: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)), 7946);
/// The receiver's clock for datagrams too short to say when they were sent.
pub const FIXED_NOW: u64 = 1_790_000_000_000;
/// The receiver's clock minus the frame's "sent at", by flag bits 2–4: on time, at either edge
/// of the accepted skew, just past it, past the reassembly timeout, past the replay memory.
pub const SKEWS_MS: [i64; 8] = [0, 30_000, -30_000, 30_001, -30_001, 5_001, 60_001, 1];

/// One record of the input.
struct Record<'a> {
    flags: u8,
    datagram: &'a [u8],
}

/// Splits an input into records.
fn records(mut data: &[u8]) -> Vec<Record<'_>> {
    let mut out = Vec::new();
    while let Some((&flags, rest)) = data.split_first() {
        let (length, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
            _ => (rest.len(), &[][..]),
        };
        let (datagram, rest) = rest.split_at(length.min(rest.len()));
        out.push(Record { flags, datagram });
        data = rest;
    }
    out
}

/// Writes one record: what the corpus generator and the tests use.
pub fn record(flags: u8, datagram: &[u8], out: &mut Vec<u8>) {
    out.push(flags);
    out.extend_from_slice(&u16::try_from(datagram.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(datagram);
}

fn mac() -> hmac::Hmac<sha2::Sha256> {
    must(hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY), "key HMAC-SHA256")
}

/// Whether the datagram ends in the key's HMAC of the bytes before it.
fn signed_by_key(datagram: &[u8]) -> bool {
    let Some(split) = datagram.len().checked_sub(TAG_LEN) else { return false };
    let (body, tag) = datagram.split_at(split);
    let mut mac = mac();
    mac.update(body);
    mac.verify_slice(tag).is_ok()
}

/// `datagram` with its last [`TAG_LEN`] bytes (or all of them, and the rest appended) replaced
/// by the key's HMAC of what comes before.
fn sign(datagram: &[u8]) -> Vec<u8> {
    let body = &datagram[..datagram.len().saturating_sub(TAG_LEN)];
    let mut mac = mac();
    mac.update(body);
    let mut out = body.to_vec();
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

/// The frame's "sent at" field, if the datagram has one.
fn sent_at(datagram: &[u8]) -> Option<u64> {
    datagram.get(4..12).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes)
}

/// The target: every record handed to one endpoint, in order.
pub fn gossip_frame(data: &[u8]) {
    let mut endpoint = must(GossipEndpoint::new(KEY, SOURCE, MAX_DATAGRAM), "open a gossip endpoint");
    let mapped = SocketAddr::new(IpAddr::V6(std::net::Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped()), SOURCE.port());
    for record in records(data) {
        let datagram = if record.flags & 1 == 1 { sign(record.datagram) } else { record.datagram.to_vec() };
        let source = if record.flags & 2 == 2 { mapped } else { SOURCE };
        let skew = SKEWS_MS[usize::from((record.flags >> 2) & 7)];
        let now = sent_at(&datagram).unwrap_or(FIXED_NOW).saturating_add_signed(skew);
        let before = endpoint.counters();
        let message = endpoint.receive(&datagram, source, now);
        let after = endpoint.counters();
        let taken = after.accepted - before.accepted;
        let held = after.fragments_held - before.fragments_held;
        let rejected = after.rejected_total() - before.rejected_total();
        assert_eq!(after.datagrams_received - before.datagrams_received, 1);
        assert_eq!(taken + held + rejected, 1, "a datagram must be accepted, held or rejected, once");
        assert_eq!(message.is_some(), taken == 1);
        if taken + held > 0 {
            assert!(
                signed_by_key(&datagram),
                "a datagram without the key's tag was {}",
                if held > 0 { "held" } else { "accepted" }
            );
        }
        if let Some(message) = message {
            round_trip(message, now);
        }
    }
}

/// An accepted message survives chitchat's encoding, and the real sender and receiver.
///
/// Not for messages carrying a delta: chitchat 0.11.2's `Delta::serialize` asserts that it writes
/// as many bytes as the delta was read from, and panics on a delta read from a stream it would
/// not write itself (found by this target). A received delta is applied, never sent on, so
/// neither chitchat nor geolb serializes one: only this check did.
fn round_trip(message: ChitchatMessage, now: u64) {
    if matches!(message, ChitchatMessage::SynAck { .. } | ChitchatMessage::Ack { .. }) {
        return;
    }
    let bytes = message.serialize_to_vec();
    let mut cursor = bytes.as_slice();
    let again = ChitchatMessage::deserialize(&mut cursor);
    assert!(
        again.as_ref().is_ok_and(|m| *m == message) && cursor.is_empty(),
        "chitchat does not read back {message:?}"
    );
    let mut sender = must(GossipEndpoint::new(KEY, SOURCE, MAX_DATAGRAM), "open a gossip endpoint");
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let frames = RUNTIME.get_or_init(runtime).block_on(sender.send(SOURCE, message));
    let mut receiver = must(GossipEndpoint::new(KEY, SOURCE, MAX_DATAGRAM), "open a gossip endpoint");
    let mut got = None;
    for frame in &frames {
        // The sender stamps its own clock; receive at it.
        got = receiver.receive(frame, SOURCE, sent_at(frame).unwrap_or(now));
    }
    let again = got.unwrap_or_else(|| panic!("a message the transport accepted does not go through it again"));
    let original = ChitchatMessage::deserialize(&mut bytes.as_slice()).ok();
    assert!(original.as_ref() == Some(&again), "a message changed through the transport");
}
