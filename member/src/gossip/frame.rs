//! The authenticated gossip frame: encoding, verification, the replay cache and fragment
//! reassembly, as pure state machines (no sockets, no clock: callers pass `now_ms`).
//!
//! [`super::transport`] drives these over a datagram socket; nothing here does I/O.
//!
//! # Wire format
//!
//! Every datagram a geolb member sends is one frame. Integers are big-endian. An address is its
//! family (`4` or `6`), its IP (4 or 16 bytes) and its UDP port (2 bytes): 7 bytes for IPv4, 19
//! for IPv6. Offsets below are for an IPv4 sender and receiver; each IPv6 address moves what
//! follows it by 12 bytes.
//!
//! | offset | length | field |
//! |---|---|---|
//! | 0 | 4 | magic `b"GLB3"` (the frame format's version) |
//! | 4 | 8 | sent at: sender's clock, unix milliseconds, `u64` |
//! | 12 | 7 / 19 | sender: the member's advertised gossip address |
//! | 19 | 7 / 19 | receiver: the address the sender sent the datagram to (IPv4-mapped IPv6 written as IPv4) |
//! | 26 | 4 | message id, `u32`: distinct for every message a sender sends (a counter) |
//! | 30 | 1 | fragment index, 0-based |
//! | 31 | 1 | fragment count, `1..=`[`MAX_FRAGMENTS`] |
//! | 32 | n | payload: fragment `index` of one `ChitchatMessage` serialized by chitchat 0.11.2, then compressed (one zstd frame) |
//! | len − 32 | 32 | HMAC-SHA256, keyed with the cluster key, over every byte before it |
//!
//! So the overhead is 64 bytes per datagram between IPv4 members, 88 between IPv6 members.
//! A datagram is at most [`MAX_DATAGRAM`] bytes (the IPv4 UDP payload limit).
//!
//! The receiver is in the tag so a frame is good for one member only: captured on its way to
//! one member and replayed from its real source to another, it is refused there
//! ([`Reject::WrongReceiver`]). A member's receiver address is the address it advertises, the
//! address every peer sends to; a seed must therefore be given as that address (a name that
//! resolves to it is fine).
//!
//! The previous format, `b"GLB2"` (no receiver field, geolb before the receiver was bound), is
//! not accepted: a datagram with that magic whose tag verifies under the cluster key is counted
//! as [`Reject::OldFormat`] (and logged), so a member of the previous version shows as such
//! rather than as noise. The previous version counts these frames as `bad_magic`. Members of the
//! two versions do not hear each other: upgrade them all within a short window.
//!
//! Fragments exist because chitchat sizes its deltas for a whole 65,507-byte datagram without
//! knowing about our header and tag: a near-full delta plus the frame would not fit, would be
//! refused by the kernel every time, and (chitchat recomputes the same delta) would block that
//! member's sync for good. Messages that fit go as one frame (count 1); larger ones are split
//! into at most [`MAX_FRAGMENTS`] frames, each authenticated on its own.
//!
//! # Receiving
//!
//! Checks run in this order; the first failure drops the datagram with that [`Reject`] reason:
//! 1. length ≤ the datagram bound, else [`Reject::Oversize`];
//! 2. the magic, else [`Reject::BadMagic`] ([`Reject::OldFormat`] for an authenticated frame of
//!    the previous format); at least a header and a tag, else [`Reject::Malformed`];
//! 3. the tag (constant-time compare), else [`Reject::BadTag`]. Nothing unauthenticated is parsed;
//! 4. the header parses (families, index < count ≤ [`MAX_FRAGMENTS`]), else [`Reject::Malformed`];
//! 5. `|now − sent at| ≤ 30 s`, else [`Reject::Stale`];
//! 6. the sender address equals the datagram's source address, else [`Reject::SpoofedSender`];
//! 7. the receiver address is this member's advertised address, else [`Reject::WrongReceiver`];
//! 8. the tag was not seen in the last 60 s ([`ReplayCache`]), else [`Reject::Replay`]. A frame
//!    stays acceptable for at most 60 s of the receiver's clock (30 s of skew either way), so
//!    remembering tags that long closes the replay window; only frames that passed 1–7 enter it.
//! 9. fragments are held until their message is complete ([`Reassembler`], 5 s, bounded).

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// First four bytes of every frame: the format's version.
pub(crate) const MAGIC: [u8; 4] = *b"GLB3";
/// The magic of the previous format (no receiver in the header), refused as
/// [`Reject::OldFormat`].
pub(crate) const OLD_MAGIC: [u8; 4] = *b"GLB2";
/// Length of the HMAC-SHA256 tag that ends every frame.
pub(crate) const TAG_LEN: usize = 32;
/// Largest datagram sent or accepted: the IPv4 UDP payload limit.
pub(crate) const MAX_DATAGRAM: usize = 65_507;
/// Largest accepted difference between the sender's and the receiver's clock.
pub(crate) const MAX_SKEW_MS: u64 = 30_000;
/// Most fragments one message may be split into.
pub(crate) const MAX_FRAGMENTS: u8 = 8;
/// Shortest accepted cluster key.
pub(crate) const MIN_KEY_LEN: usize = 32;
/// Most frame tags the replay cache remembers; beyond it the oldest are forgotten.
///
/// Only authenticated frames enter, so only a key holder can fill it. Normal traffic is a few
/// dozen frames per second per member, far below this over the 60 s memory.
pub(crate) const REPLAY_CAPACITY: usize = 65_536;
/// How long the fragments of an incomplete message are kept.
pub(crate) const REASSEMBLY_TIMEOUT_MS: u64 = 5_000;
/// Most incomplete messages kept at once; beyond it the oldest is dropped.
pub(crate) const MAX_PENDING_MESSAGES: usize = 32;
/// Smallest datagram bound [`Outbound`] and [`Inbound`] accept (tests use small ones).
pub(crate) const MIN_DATAGRAM: usize = 128;

/// Magic, time, message id, index and count: the header without its two addresses.
const FIXED_HEADER_LEN: usize = 4 + 8 + 4 + 1 + 1;
/// Shortest header: both addresses IPv4.
const MIN_HEADER_LEN: usize = FIXED_HEADER_LEN + 2 * 7;
/// Shortest frame of the previous format (an IPv4 sender, no receiver), with its tag.
const MIN_OLD_FRAME_LEN: usize = FIXED_HEADER_LEN + 7 + TAG_LEN;
/// How long a seen tag is remembered: a frame is acceptable for at most twice the skew.
const REPLAY_MEMORY_MS: u64 = 2 * MAX_SKEW_MS;

/// Bytes of one address in the header: family, IP, port.
fn address_len(addr: SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => 1 + 16 + 2,
    }
}

/// Header length for frames from `sender` to `receiver`.
pub(crate) fn header_len(sender: SocketAddr, receiver: SocketAddr) -> usize {
    FIXED_HEADER_LEN + address_len(sender) + address_len(canonical(receiver))
}

/// `sender` with an IPv4-mapped IPv6 address turned into plain IPv4, so a dual-stack socket's
/// view of an IPv4 peer compares equal to the address that peer advertises.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The cluster key is shorter than [`MIN_KEY_LEN`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster key is {len} bytes; at least {MIN_KEY_LEN} are required (openssl rand -hex 32)")]
pub struct KeyTooShort {
    /// Length of the rejected key.
    pub len: usize,
}

/// The cluster key, ready to sign and verify frames. `Debug` never prints the key.
#[derive(Clone)]
pub(crate) struct FrameKey(Hmac<Sha256>);

impl fmt::Debug for FrameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrameKey(<redacted>)")
    }
}

impl FrameKey {
    /// Keys HMAC-SHA256 with `key` (used as is: no derivation).
    pub(crate) fn new(key: &[u8]) -> Result<FrameKey, KeyTooShort> {
        if key.len() < MIN_KEY_LEN {
            return Err(KeyTooShort { len: key.len() });
        }
        // HMAC takes keys of any length; the error arm is unreachable but costs nothing.
        Hmac::<Sha256>::new_from_slice(key).map(FrameKey).map_err(|_| KeyTooShort { len: key.len() })
    }

    fn sign(&self, data: &[u8], out: &mut Vec<u8>) {
        let mut mac = self.0.clone();
        mac.update(data);
        out.extend_from_slice(&mac.finalize().into_bytes());
    }

    fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.0.clone();
        mac.update(data);
        mac.verify_slice(tag).is_ok()
    }
}

/// The authenticated fields before the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// Sender's clock when it built the frame, unix ms.
    pub sent_at_ms: u64,
    /// The sender's advertised gossip address; must equal the datagram's source.
    pub sender: SocketAddr,
    /// The address the sender sent the frame to; must be the receiver's advertised address.
    pub receiver: SocketAddr,
    /// Identifies the message the fragment belongs to (per sender).
    pub msg_id: u32,
    /// Fragment index, `< count`.
    pub index: u8,
    /// Number of fragments of the message, `1..=MAX_FRAGMENTS`.
    pub count: u8,
}

fn push_address(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Appends one signed frame to `out` (cleared first). The receiver is written in canonical form
/// (an IPv4-mapped IPv6 address as IPv4).
pub(crate) fn encode_frame(key: &FrameKey, header: &FrameHeader, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(header_len(header.sender, header.receiver) + payload.len() + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&header.sent_at_ms.to_be_bytes());
    push_address(out, header.sender);
    push_address(out, canonical(header.receiver));
    out.extend_from_slice(&header.msg_id.to_be_bytes());
    out.push(header.index);
    out.push(header.count);
    out.extend_from_slice(payload);
    let mut tag = Vec::with_capacity(TAG_LEN);
    key.sign(out, &mut tag);
    out.extend_from_slice(&tag);
}

/// Why a received datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Longer than the datagram bound.
    Oversize,
    /// Does not start with [`MAGIC`]: not a geolb frame (e.g. plain chitchat, a port scan).
    BadMagic,
    /// Too short, an impossible header, a broken fragment set, or an authenticated payload that
    /// is not a chitchat message.
    Malformed,
    /// The tag does not verify: wrong key or altered bytes.
    BadTag,
    /// The sender's timestamp is more than 30 s from our clock.
    Stale,
    /// The sender address in the frame is not the datagram's source address.
    SpoofedSender,
    /// The frame was sent to another member (captured on its way there and replayed to us),
    /// or to an address of ours that is not the one we advertise (a seed given by another
    /// address).
    WrongReceiver,
    /// The same frame was already accepted in the last 60 s.
    Replay,
    /// An authenticated frame of the previous format (`GLB2`): a member of an older geolb.
    OldFormat,
}

impl Reject {
    /// Every reason, for exporting counters.
    pub const ALL: [Reject; 9] = [
        Reject::Oversize,
        Reject::BadMagic,
        Reject::Malformed,
        Reject::BadTag,
        Reject::Stale,
        Reject::SpoofedSender,
        Reject::WrongReceiver,
        Reject::Replay,
        Reject::OldFormat,
    ];

    /// Lower-case name, suitable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Oversize => "oversize",
            Reject::BadMagic => "bad_magic",
            Reject::Malformed => "malformed",
            Reject::BadTag => "bad_tag",
            Reject::Stale => "stale",
            Reject::SpoofedSender => "spoofed_sender",
            Reject::WrongReceiver => "wrong_receiver",
            Reject::Replay => "replay",
            Reject::OldFormat => "old_format",
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A frame whose tag verified (steps 1–4), not yet checked for age, sender or replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenedFrame<'a> {
    /// The authenticated header.
    pub header: FrameHeader,
    /// The authenticated payload.
    pub payload: &'a [u8],
    /// The first 16 bytes of the tag: the frame's identity in the replay cache.
    pub tag_id: u128,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }
}

impl Reader<'_> {
    fn address(&mut self) -> Option<SocketAddr> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return None,
        };
        Some(SocketAddr::new(ip, u16::from_be_bytes(self.array()?)))
    }
}

fn parse_header(body: &[u8]) -> Option<(FrameHeader, &[u8])> {
    let mut r = Reader(body);
    r.take(MAGIC.len())?;
    let sent_at_ms = u64::from_be_bytes(r.array()?);
    let sender = r.address()?;
    let receiver = r.address()?;
    let msg_id = u32::from_be_bytes(r.array()?);
    let index = r.u8()?;
    let count = r.u8()?;
    if count == 0 || count > MAX_FRAGMENTS || index >= count {
        return None;
    }
    let header = FrameHeader { sent_at_ms, sender, receiver, msg_id, index, count };
    Some((header, r.0))
}

/// Steps 1–4: bound, magic, tag, header. Nothing is parsed before the tag verifies.
pub(crate) fn open_frame<'a>(
    key: &FrameKey,
    datagram: &'a [u8],
    max_datagram: usize,
) -> Result<OpenedFrame<'a>, Reject> {
    if datagram.len() > max_datagram {
        return Err(Reject::Oversize);
    }
    if datagram.get(..OLD_MAGIC.len()) == Some(&OLD_MAGIC[..]) {
        if datagram.len() < MIN_OLD_FRAME_LEN {
            return Err(Reject::Malformed);
        }
        let (body, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        return Err(if key.verify(body, tag) { Reject::OldFormat } else { Reject::BadTag });
    }
    if datagram.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err(Reject::BadMagic);
    }
    if datagram.len() < MIN_HEADER_LEN + TAG_LEN {
        return Err(Reject::Malformed);
    }
    let (body, tag) = datagram.split_at(datagram.len() - TAG_LEN);
    if !key.verify(body, tag) {
        return Err(Reject::BadTag);
    }
    let (header, payload) = parse_header(body).ok_or(Reject::Malformed)?;
    let tag_id = tag.get(..16).and_then(|t| <[u8; 16]>::try_from(t).ok()).map(u128::from_be_bytes).unwrap_or(0);
    Ok(OpenedFrame { header, payload, tag_id })
}

/// Steps 5–7: the sender's clock is within [`MAX_SKEW_MS`] of `now_ms`, the claimed sender is
/// the datagram's source, and the frame was sent to `me` (the receiver's advertised address).
pub(crate) fn check_origin(
    header: &FrameHeader,
    source: SocketAddr,
    me: SocketAddr,
    now_ms: u64,
) -> Result<(), Reject> {
    if now_ms.abs_diff(header.sent_at_ms) > MAX_SKEW_MS {
        return Err(Reject::Stale);
    }
    if canonical(header.sender) != canonical(source) {
        return Err(Reject::SpoofedSender);
    }
    if canonical(header.receiver) != canonical(me) {
        return Err(Reject::WrongReceiver);
    }
    Ok(())
}

/// Remembers the tags of accepted frames for 60 s, bounded by a capacity.
///
/// Expiry is by insertion time on the receiver's clock, so the queue is ordered and expiring is a
/// pop from the front.
#[derive(Debug)]
pub(crate) struct ReplayCache {
    seen: HashSet<u128>,
    order: VecDeque<(u64, u128)>,
    capacity: usize,
    evicted: u64,
}

impl ReplayCache {
    /// An empty cache holding at most `capacity` tags (at least 1).
    pub(crate) fn new(capacity: usize) -> ReplayCache {
        ReplayCache { seen: HashSet::new(), order: VecDeque::new(), capacity: capacity.max(1), evicted: 0 }
    }

    /// Records `tag_id`; returns `false` if it was already there (a replay).
    pub(crate) fn insert(&mut self, tag_id: u128, now_ms: u64) -> bool {
        while let Some(&(expires_ms, old)) = self.order.front() {
            if expires_ms > now_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&old);
        }
        if self.seen.contains(&tag_id) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some((_, old)) = self.order.pop_front()
        {
            self.seen.remove(&old);
            self.evicted += 1;
        }
        self.seen.insert(tag_id);
        self.order.push_back((now_ms.saturating_add(REPLAY_MEMORY_MS), tag_id));
        true
    }

    /// Tags currently remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Tags forgotten early because the cache was full.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[derive(Debug)]
struct Pending {
    sender: SocketAddr,
    msg_id: u32,
    started_ms: u64,
    parts: Vec<Option<Vec<u8>>>,
    have: usize,
}

/// Collects the fragments of multi-frame messages; bounded in count and time.
#[derive(Debug, Default)]
pub(crate) struct Reassembler {
    pending: VecDeque<Pending>,
    dropped: u64,
}

impl Reassembler {
    /// Stores one authenticated fragment; returns the whole message once every fragment is in.
    ///
    /// Two fragments of one message that disagree on the count, or a second different fragment
    /// for the same index, drop the message as [`Reject::Malformed`].
    pub(crate) fn offer(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, Reject> {
        let before = self.pending.len();
        self.pending.retain(|p| now_ms.saturating_sub(p.started_ms) <= REASSEMBLY_TIMEOUT_MS);
        self.dropped += (before - self.pending.len()) as u64;

        let sender = canonical(header.sender);
        let count = usize::from(header.count);
        let pos = match self.pending.iter().position(|p| p.sender == sender && p.msg_id == header.msg_id) {
            Some(pos) => pos,
            None => {
                if self.pending.len() >= MAX_PENDING_MESSAGES {
                    self.pending.pop_front();
                    self.dropped += 1;
                }
                self.pending.push_back(Pending {
                    sender,
                    msg_id: header.msg_id,
                    started_ms: now_ms,
                    parts: vec![None; count],
                    have: 0,
                });
                self.pending.len() - 1
            }
        };
        let Some(entry) = self.pending.get_mut(pos) else {
            return Ok(None);
        };
        let slot_ok =
            entry.parts.len() == count && entry.parts.get(usize::from(header.index)).is_some_and(Option::is_none);
        if !slot_ok {
            self.pending.remove(pos);
            self.dropped += 1;
            return Err(Reject::Malformed);
        }
        if let Some(slot) = entry.parts.get_mut(usize::from(header.index)) {
            *slot = Some(payload.to_vec());
            entry.have += 1;
        }
        if entry.have < entry.parts.len() {
            return Ok(None);
        }
        let Some(done) = self.pending.remove(pos) else {
            return Ok(None);
        };
        Ok(Some(done.parts.into_iter().flatten().flatten().collect()))
    }

    /// Incomplete messages currently held.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Incomplete messages dropped (timed out, crowded out, or inconsistent).
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The receive side: runs every check and reassembles fragments.
#[derive(Debug)]
pub(crate) struct Inbound {
    key: FrameKey,
    me: SocketAddr,
    max_datagram: usize,
    replay: ReplayCache,
    reassembly: Reassembler,
}

impl Inbound {
    /// A receiver at `me` (its advertised address: frames must be sent to it) for frames signed
    /// with `key`, at most `max_datagram` bytes long.
    pub(crate) fn new(key: FrameKey, me: SocketAddr, max_datagram: usize) -> Inbound {
        Inbound {
            key,
            me,
            max_datagram: max_datagram.clamp(MIN_DATAGRAM, MAX_DATAGRAM),
            replay: ReplayCache::new(REPLAY_CAPACITY),
            reassembly: Reassembler::default(),
        }
    }

    /// Checks one datagram from `source`. `Ok(Some(message))` is a complete serialized chitchat
    /// message (not yet deserialized); `Ok(None)` a fragment that was stored.
    pub(crate) fn accept<'a>(
        &mut self,
        datagram: &'a [u8],
        source: SocketAddr,
        now_ms: u64,
    ) -> Result<Option<Cow<'a, [u8]>>, Reject> {
        let frame = open_frame(&self.key, datagram, self.max_datagram)?;
        check_origin(&frame.header, source, self.me, now_ms)?;
        if !self.replay.insert(frame.tag_id, now_ms) {
            return Err(Reject::Replay);
        }
        if frame.header.count == 1 {
            return Ok(Some(Cow::Borrowed(frame.payload)));
        }
        Ok(self.reassembly.offer(&frame.header, frame.payload, now_ms)?.map(Cow::Owned))
    }

    /// The replay cache (for its counters).
    pub(crate) fn replay_cache(&self) -> &ReplayCache {
        &self.replay
    }

    /// The reassembler (for its counters).
    pub(crate) fn reassembler(&self) -> &Reassembler {
        &self.reassembly
    }
}

/// The send side: splits a serialized message into signed frames.
#[derive(Debug)]
pub(crate) struct Outbound {
    key: FrameKey,
    sender: SocketAddr,
    max_datagram: usize,
    next_msg_id: u32,
}

impl Outbound {
    /// A sender that signs with `key` and claims `sender` (its advertised address). `first_msg_id`
    /// should differ between restarts (e.g. derived from the clock) so ids rarely repeat.
    pub(crate) fn new(key: FrameKey, sender: SocketAddr, max_datagram: usize, first_msg_id: u32) -> Outbound {
        Outbound {
            key,
            sender,
            max_datagram: max_datagram.clamp(MIN_DATAGRAM, MAX_DATAGRAM),
            next_msg_id: first_msg_id,
        }
    }

    /// The address written into every frame.
    pub(crate) fn sender(&self) -> SocketAddr {
        self.sender
    }

    /// Payload bytes that fit in one frame to `to`.
    pub(crate) fn max_payload(&self, to: SocketAddr) -> usize {
        self.max_datagram - header_len(self.sender, to) - TAG_LEN
    }

    /// Frames for one serialized message to `to`, or [`Reject::Oversize`] if it needs more than
    /// [`MAX_FRAGMENTS`] frames.
    pub(crate) fn encode(&mut self, message: &[u8], to: SocketAddr, now_ms: u64) -> Result<Vec<Vec<u8>>, Reject> {
        let chunk = self.max_payload(to);
        let count = message.len().div_ceil(chunk).max(1);
        let count = u8::try_from(count).ok().filter(|c| *c <= MAX_FRAGMENTS).ok_or(Reject::Oversize)?;
        let msg_id = self.next_msg_id;
        self.next_msg_id = self.next_msg_id.wrapping_add(1);
        let mut frames = Vec::with_capacity(usize::from(count));
        let mut parts = message.chunks(chunk);
        for index in 0..count {
            let header = FrameHeader { sent_at_ms: now_ms, sender: self.sender, receiver: to, msg_id, index, count };
            let mut out = Vec::new();
            encode_frame(&self.key, &header, parts.next().unwrap_or_default(), &mut out);
            frames.push(out);
        }
        Ok(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_790_000_000_000;

    fn key(byte: u8) -> FrameKey {
        FrameKey::new(&[byte; 32]).unwrap()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The receiver of the tests' frames.
    const ME: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 7946);

    fn frame_to(k: &FrameKey, sender: SocketAddr, receiver: SocketAddr, ts: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let header = FrameHeader { sent_at_ms: ts, sender, receiver, msg_id: 7, index: 0, count: 1 };
        encode_frame(k, &header, payload, &mut out);
        out
    }

    fn frame(k: &FrameKey, sender: SocketAddr, ts: u64, payload: &[u8]) -> Vec<u8> {
        frame_to(k, sender, ME, ts, payload)
    }

    fn inbound(k: FrameKey, max_datagram: usize) -> Inbound {
        Inbound::new(k, ME, max_datagram)
    }

    /// A frame of the previous format (`GLB2`: no receiver), signed with `k`.
    fn old_frame(k: &FrameKey, sender: SocketAddr, ts: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = b"GLB2".to_vec();
        out.extend_from_slice(&ts.to_be_bytes());
        push_address(&mut out, sender);
        out.extend_from_slice(&[0, 0, 0, 7, 0, 1]);
        out.extend_from_slice(payload);
        let mut tag = Vec::new();
        k.sign(&out, &mut tag);
        out.extend_from_slice(&tag);
        out
    }

    #[test]
    fn layout_is_as_documented() {
        let f = frame_to(&key(1), addr(0x1f90), addr(0x1f91), 0x0102_0304_0506_0708, b"hello");
        assert_eq!(f.len(), 64 + 5);
        assert_eq!(&f[0..4], b"GLB3");
        assert_eq!(&f[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(f[12], 4);
        assert_eq!(&f[13..17], &[127, 0, 0, 1]);
        assert_eq!(&f[17..19], &[0x1f, 0x90]);
        assert_eq!(f[19], 4);
        assert_eq!(&f[20..24], &[127, 0, 0, 1]);
        assert_eq!(&f[24..26], &[0x1f, 0x91]);
        assert_eq!(&f[26..30], &[0, 0, 0, 7]);
        assert_eq!((f[30], f[31]), (0, 1));
        assert_eq!(&f[32..37], b"hello");
        assert_eq!(f.len() - TAG_LEN, 37);
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 9));
        let f6 = frame_to(&key(1), v6, v6, NOW, b"x");
        assert_eq!(f6.len(), 88 + 1);
        assert_eq!((f6[12], f6[31]), (6, 6));
        assert_eq!(header_len(v6, v6), 56);
        // A receiver written as IPv4-mapped IPv6 goes out as IPv4.
        let mapped = SocketAddr::new(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), 9);
        let f4 = frame_to(&key(1), addr(1), mapped, NOW, b"x");
        assert_eq!((f4.len(), f4[19], &f4[20..24]), (65, 4, &[127, 0, 0, 1][..]));
    }

    #[test]
    fn round_trip() {
        let mut inbound = inbound(key(1), MAX_DATAGRAM);
        let f = frame(&key(1), addr(1), NOW, b"payload");
        let got = inbound.accept(&f, addr(1), NOW + 10).unwrap().unwrap();
        assert_eq!(&*got, b"payload");
    }

    #[test]
    fn a_frame_sent_to_another_member_is_refused() {
        let k = key(1);
        let mut inbound = inbound(k.clone(), MAX_DATAGRAM);
        // To another member, and to another port of our address: both not us.
        for other in [SocketAddr::from(([127, 0, 0, 3], 7946)), SocketAddr::from(([127, 0, 0, 2], 7947))] {
            let f = frame_to(&k, addr(1), other, NOW, b"p");
            assert_eq!(inbound.accept(&f, addr(1), NOW), Err(Reject::WrongReceiver), "{other}");
        }
        // Not remembered as seen: the frame sent to us is accepted once after it.
        let f = frame_to(&k, addr(1), ME, NOW, b"p");
        assert!(inbound.accept(&f, addr(1), NOW).unwrap().is_some());
        assert_eq!(inbound.accept(&f, addr(1), NOW), Err(Reject::Replay));
        // Our address as IPv4-mapped IPv6, as a dual-stack sender may write it, is us.
        let mapped = SocketAddr::new(IpAddr::V6(Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped()), 7946);
        let mut out = Vec::new();
        let header = FrameHeader { sent_at_ms: NOW, sender: addr(1), receiver: mapped, msg_id: 8, index: 0, count: 1 };
        encode_frame(&k, &header, b"p", &mut out);
        assert!(inbound.accept(&out, addr(1), NOW).unwrap().is_some());
    }

    #[test]
    fn the_previous_format_is_refused_as_such() {
        let k = key(1);
        let mut inbound = inbound(k.clone(), MAX_DATAGRAM);
        assert_eq!(inbound.accept(&old_frame(&k, addr(1), NOW, b"p"), addr(1), NOW), Err(Reject::OldFormat));
        // Signed with another key, or noise after the old magic: not a member of ours.
        assert_eq!(inbound.accept(&old_frame(&key(2), addr(1), NOW, b"p"), addr(1), NOW), Err(Reject::BadTag));
        assert_eq!(inbound.accept(b"GLB2 short", addr(1), NOW), Err(Reject::Malformed));
        // And an old member reading a new frame finds a magic it does not know.
        assert_ne!(&frame(&k, addr(1), NOW, b"p")[..4], b"GLB2");
    }

    #[test]
    fn short_key_is_refused() {
        assert_eq!(FrameKey::new(&[0; 31]).unwrap_err(), KeyTooShort { len: 31 });
        assert!(format!("{:?}", key(9)).contains("redacted"));
    }

    #[test]
    fn every_reject_reason() {
        let k = key(1);
        let good = frame(&k, addr(1), NOW, b"payload");
        let mut inbound = inbound(k.clone(), MAX_DATAGRAM);
        // Tampered: any single flipped bit fails the tag.
        for i in 4..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert_eq!(inbound.accept(&bad, addr(1), NOW), Err(Reject::BadTag), "byte {i}");
        }
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(inbound.accept(&bad, addr(1), NOW), Err(Reject::BadMagic));
        assert_eq!(inbound.accept(&frame(&key(2), addr(1), NOW, b"p"), addr(1), NOW), Err(Reject::BadTag));
        assert_eq!(inbound.accept(&good[..67], addr(1), NOW), Err(Reject::BadTag));
        assert_eq!(inbound.accept(&good[..63], addr(1), NOW), Err(Reject::Malformed));
        assert_eq!(inbound.accept(&good[..3], addr(1), NOW), Err(Reject::BadMagic));
        assert_eq!(inbound.accept(&[], addr(1), NOW), Err(Reject::BadMagic));
        let stale = frame(&k, addr(1), NOW - MAX_SKEW_MS - 1, b"p");
        assert_eq!(inbound.accept(&stale, addr(1), NOW), Err(Reject::Stale));
        let future = frame(&k, addr(1), NOW + MAX_SKEW_MS + 1, b"p");
        assert_eq!(inbound.accept(&future, addr(1), NOW), Err(Reject::Stale));
        assert_eq!(inbound.accept(&good, addr(2), NOW), Err(Reject::SpoofedSender));
        let big = vec![0u8; MAX_DATAGRAM + 1];
        assert_eq!(inbound.accept(&big, addr(1), NOW), Err(Reject::Oversize));
        // None of the rejected frames entered the replay cache; the good one is accepted once.
        assert!(inbound.accept(&good, addr(1), NOW).unwrap().is_some());
        assert_eq!(inbound.accept(&good, addr(1), NOW + 1), Err(Reject::Replay));
        assert_eq!(inbound.accept(&good, addr(1), NOW + MAX_SKEW_MS), Err(Reject::Replay));
        // Once the frame is stale it is refused as such; the cache may forget it then.
        assert_eq!(inbound.accept(&good, addr(1), NOW + MAX_SKEW_MS + 1), Err(Reject::Stale));
    }

    #[test]
    fn authenticated_garbage_header_is_malformed() {
        let k = key(1);
        let mut out = Vec::new();
        let header = FrameHeader { sent_at_ms: NOW, sender: addr(1), receiver: ME, msg_id: 1, index: 3, count: 2 };
        encode_frame(&k, &header, b"x", &mut out);
        assert_eq!(inbound(k.clone(), MAX_DATAGRAM).accept(&out, addr(1), NOW), Err(Reject::Malformed));
        encode_frame(&k, &FrameHeader { index: 0, count: 9, ..header }, b"x", &mut out);
        assert_eq!(inbound(k.clone(), MAX_DATAGRAM).accept(&out, addr(1), NOW), Err(Reject::Malformed));
        // A receiver of an unknown family.
        encode_frame(&k, &FrameHeader { index: 0, count: 1, ..header }, b"x", &mut out);
        out[19] = 5;
        let body_len = out.len() - TAG_LEN;
        let mut tag = Vec::new();
        k.sign(&out[..body_len], &mut tag);
        out.truncate(body_len);
        out.extend_from_slice(&tag);
        assert_eq!(inbound(k, MAX_DATAGRAM).accept(&out, addr(1), NOW), Err(Reject::Malformed));
    }

    #[test]
    fn mapped_ipv6_source_matches_ipv4_sender() {
        let k = key(1);
        let f = frame(&k, addr(5), NOW, b"p");
        let mapped = SocketAddr::new(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), 5);
        assert!(inbound(k, MAX_DATAGRAM).accept(&f, mapped, NOW).unwrap().is_some());
    }

    #[test]
    fn replay_cache_expires_and_is_bounded() {
        let mut cache = ReplayCache::new(3);
        assert!(cache.insert(1, 0));
        assert!(!cache.insert(1, REPLAY_MEMORY_MS - 1));
        assert!(cache.insert(1, REPLAY_MEMORY_MS));
        assert_eq!(cache.len(), 1);
        assert!(cache.insert(2, REPLAY_MEMORY_MS));
        assert!(cache.insert(3, REPLAY_MEMORY_MS));
        assert!(cache.insert(4, REPLAY_MEMORY_MS));
        assert_eq!((cache.len(), cache.evicted()), (3, 1));
    }

    #[test]
    fn fragments_reassemble_in_any_order() {
        let k = key(1);
        let message: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Outbound::new(k.clone(), addr(1), 300, 42);
        let frames = out.encode(&message, ME, NOW).unwrap();
        assert_eq!(frames.len(), message.len().div_ceil(300 - MIN_HEADER_LEN - TAG_LEN));
        assert!(frames.iter().all(|f| f.len() <= 300));
        let mut inbound = inbound(k, 300);
        let mut got = None;
        for f in frames.iter().rev() {
            assert!(got.is_none());
            got = inbound.accept(f, addr(1), NOW).unwrap();
        }
        assert_eq!(got.unwrap().into_owned(), message);
        assert_eq!(inbound.reassembler().pending(), 0);
    }

    #[test]
    fn fragment_limits() {
        let k = key(1);
        let mut out = Outbound::new(k.clone(), addr(1), 200, 0);
        let cap = out.max_payload(ME) * usize::from(MAX_FRAGMENTS);
        assert_eq!(out.encode(&vec![1; cap], ME, NOW).unwrap().len(), usize::from(MAX_FRAGMENTS));
        assert_eq!(out.encode(&vec![1; cap + 1], ME, NOW), Err(Reject::Oversize));
        // To an IPv6 receiver, 12 bytes fewer fit in each frame.
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 9));
        assert_eq!(out.max_payload(v6), out.max_payload(ME) - 12);
        let cap6 = out.max_payload(v6) * usize::from(MAX_FRAGMENTS);
        assert!(out.encode(&vec![1; cap6], v6, NOW).unwrap().iter().all(|f| f.len() <= 200));
        assert_eq!(out.encode(&vec![1; cap], v6, NOW), Err(Reject::Oversize));

        // An incomplete message is dropped after the timeout and a late fragment starts over.
        let frames = out.encode(&vec![2; out.max_payload(ME) + 1], ME, NOW).unwrap();
        let mut inbound = inbound(k, 200);
        assert_eq!(inbound.accept(&frames[0], addr(1), NOW), Ok(None));
        let late = NOW + REASSEMBLY_TIMEOUT_MS + 1;
        assert_eq!(inbound.accept(&frames[1], addr(1), late), Ok(None));
        assert_eq!(inbound.reassembler().dropped(), 1);
        assert_eq!(inbound.reassembler().pending(), 1);
    }

    #[test]
    fn reassembly_is_bounded() {
        let k = key(1);
        let mut out = Outbound::new(k.clone(), addr(1), 200, 0);
        let mut inbound = inbound(k, 200);
        for _ in 0..MAX_PENDING_MESSAGES + 5 {
            let frames = out.encode(&[3; 300], ME, NOW).unwrap();
            assert_eq!(inbound.accept(&frames[0], addr(1), NOW), Ok(None));
        }
        assert_eq!(inbound.reassembler().pending(), MAX_PENDING_MESSAGES);
        assert_eq!(inbound.reassembler().dropped(), 5);
    }

    #[test]
    fn inconsistent_fragments_are_malformed() {
        let k = key(1);
        let mut inbound = inbound(k.clone(), MAX_DATAGRAM);
        let mut out = Vec::new();
        let h = FrameHeader { sent_at_ms: NOW, sender: addr(1), receiver: ME, msg_id: 5, index: 0, count: 2 };
        encode_frame(&k, &h, b"a", &mut out);
        assert_eq!(inbound.accept(&out, addr(1), NOW), Ok(None));
        encode_frame(&k, &FrameHeader { count: 3, ..h }, b"b", &mut out);
        assert_eq!(inbound.accept(&out, addr(1), NOW), Err(Reject::Malformed));
        encode_frame(&k, &h, b"c", &mut out);
        assert_eq!(inbound.accept(&out, addr(1), NOW), Ok(None));
        encode_frame(&k, &h, b"d", &mut out);
        assert_eq!(inbound.accept(&out, addr(1), NOW), Err(Reject::Malformed));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048), port in 0u16..4) {
            let mut inbound = inbound(key(1), 1024);
            let _ = inbound.accept(&bytes, addr(port), NOW);
        }

        #[test]
        fn random_bytes_after_magic_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut inbound = inbound(key(1), MAX_DATAGRAM);
            let mut datagram = MAGIC.to_vec();
            datagram.extend_from_slice(&bytes);
            let _ = inbound.accept(&datagram, addr(1), NOW);
        }

        #[test]
        fn signed_random_payload_round_trips(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..3000)) {
            let k = key(1);
            let mut out = Outbound::new(k.clone(), addr(1), 700, 0);
            let mut inbound = inbound(k, 700);
            let mut got = None;
            for f in out.encode(&payload, ME, NOW).unwrap() {
                got = inbound.accept(&f, addr(1), NOW).unwrap().map(Cow::into_owned);
            }
            proptest::prop_assert_eq!(got, Some(payload));
        }
    }
}
