//! The authenticated gossip transport: chitchat's [`Transport`]/[`Socket`] over signed datagrams.
//!
//! chitchat 0.11.2's sockets carry `ChitchatMessage` values, not bytes, so authentication cannot
//! wrap another chitchat `Transport`. Instead [`AuthSocket`] serializes each message with
//! chitchat's `Serializable`, compresses it with zstd, frames and signs it ([`super::frame`] documents the frame byte by
//! byte), and sends the frames through a [`DatagramSocket`]: real UDP ([`UdpDatagrams`]) in
//! production, [`super::memnet::MemNetwork`] in simulations, so tests exercise the same framing.
//!
//! Receiving never fails the socket because of what arrives: every rejected datagram is dropped
//! and counted in [`AuthStats`] by reason, and the loop reads the next one. Only a broken socket
//! (an I/O error that is not transient) ends `recv` with an error, which stops chitchat's loop;
//! [`super::GossipHandle::termination`] reports that.
//!
//! This module owns the I/O; the pure checks live in [`super::frame`], the gossip state in
//! chitchat, and the key schema in [`super::keys`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use tracing::{debug, warn};

use super::frame::{FrameKey, Inbound, KeyTooShort, MAX_DATAGRAM, MAX_FRAGMENTS, MIN_DATAGRAM, Outbound, Reject};

/// One bound datagram endpoint (a UDP socket, or a port of the in-memory network).
#[async_trait]
pub trait DatagramSocket: Send + Sync + 'static {
    /// The address the socket is bound to.
    fn local_addr(&self) -> SocketAddr;

    /// Sends one datagram.
    async fn send_to(&mut self, datagram: &[u8], to: SocketAddr) -> io::Result<()>;

    /// Receives one datagram into `buf`, truncating it if `buf` is too short (like UDP).
    /// Must be cancel-safe: chitchat calls it inside `select!`.
    async fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
}

/// Something that binds [`DatagramSocket`]s.
#[async_trait]
pub trait DatagramTransport: Send + Sync + 'static {
    /// Binds `addr` (port 0 picks a free port; read it back with `local_addr`).
    async fn bind(&self, addr: SocketAddr) -> io::Result<Box<dyn DatagramSocket>>;
}

/// Real UDP through tokio: the production [`DatagramTransport`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UdpDatagrams;

struct UdpDatagramSocket {
    socket: tokio::net::UdpSocket,
    local: SocketAddr,
}

#[async_trait]
impl DatagramTransport for UdpDatagrams {
    async fn bind(&self, addr: SocketAddr) -> io::Result<Box<dyn DatagramSocket>> {
        let socket = tokio::net::UdpSocket::bind(addr).await?;
        let local = socket.local_addr()?;
        Ok(Box::new(UdpDatagramSocket { socket, local }))
    }
}

#[async_trait]
impl DatagramSocket for UdpDatagramSocket {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    async fn send_to(&mut self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.socket.send_to(datagram, to).await.map(|_| ())
    }

    async fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buf).await
    }
}

/// Errors that say nothing about the socket's health (ICMP echoes, memory pressure).
fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::OutOfMemory
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::TimedOut
    )
}

/// Counters of one member's gossip traffic, shared with metrics (`Arc<AuthStats>`).
#[derive(Debug, Default)]
pub struct AuthStats {
    accepted: AtomicU64,
    bad_magic: AtomicU64,
    bad_tag: AtomicU64,
    stale: AtomicU64,
    replay: AtomicU64,
    spoofed_sender: AtomicU64,
    wrong_receiver: AtomicU64,
    old_format: AtomicU64,
    malformed: AtomicU64,
    oversize: AtomicU64,
    unsendable: AtomicU64,
    send_errors: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    datagrams_sent: AtomicU64,
    datagrams_received: AtomicU64,
    fragmented_sent: AtomicU64,
    fragments_held: AtomicU64,
    reassembly_dropped: AtomicU64,
    replay_evicted: AtomicU64,
    largest_message: AtomicU64,
}

/// A point-in-time copy of [`AuthStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuthCounters {
    /// Messages that passed every check and went to chitchat.
    pub accepted: u64,
    /// Datagrams without the geolb magic.
    pub bad_magic: u64,
    /// Datagrams whose tag did not verify (wrong key, altered bytes).
    pub bad_tag: u64,
    /// Frames whose timestamp was more than 30 s off.
    pub stale: u64,
    /// Frames already accepted once.
    pub replay: u64,
    /// Frames whose sender address was not their source address.
    pub spoofed_sender: u64,
    /// Frames sent to another member (or to an address of ours we do not advertise).
    pub wrong_receiver: u64,
    /// Authenticated frames of the previous format (`GLB2`): members of an older geolb.
    pub old_format: u64,
    /// Datagrams too short, or authenticated content that does not decode.
    pub malformed: u64,
    /// Received datagrams over the datagram bound.
    pub oversize: u64,
    /// Outgoing messages too large even for [`super::frame::MAX_FRAGMENTS`] frames (not sent).
    pub unsendable: u64,
    /// Datagrams the socket failed to send.
    pub send_errors: u64,
    /// Bytes of datagrams sent.
    pub bytes_sent: u64,
    /// Bytes of datagrams received, rejected ones included.
    pub bytes_received: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Datagrams received, rejected ones included.
    pub datagrams_received: u64,
    /// Messages sent as more than one frame.
    pub fragmented_sent: u64,
    /// Authenticated fragments stored to await the rest of their message.
    pub fragments_held: u64,
    /// Incomplete messages given up (timeout, crowding, inconsistency).
    pub reassembly_dropped: u64,
    /// Replay-cache entries forgotten early because the cache was full.
    pub replay_evicted: u64,
    /// Largest serialized chitchat message sent, in bytes.
    pub largest_message: u64,
}

impl AuthCounters {
    /// Datagrams dropped for `reason`.
    pub fn rejected(&self, reason: Reject) -> u64 {
        match reason {
            Reject::Oversize => self.oversize,
            Reject::BadMagic => self.bad_magic,
            Reject::Malformed => self.malformed,
            Reject::BadTag => self.bad_tag,
            Reject::Stale => self.stale,
            Reject::SpoofedSender => self.spoofed_sender,
            Reject::WrongReceiver => self.wrong_receiver,
            Reject::Replay => self.replay,
            Reject::OldFormat => self.old_format,
        }
    }

    /// Datagrams dropped for any reason.
    pub fn rejected_total(&self) -> u64 {
        Reject::ALL.iter().map(|r| self.rejected(*r)).sum()
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl AuthStats {
    /// Copies every counter.
    pub fn snapshot(&self) -> AuthCounters {
        AuthCounters {
            accepted: load(&self.accepted),
            bad_magic: load(&self.bad_magic),
            bad_tag: load(&self.bad_tag),
            stale: load(&self.stale),
            replay: load(&self.replay),
            spoofed_sender: load(&self.spoofed_sender),
            wrong_receiver: load(&self.wrong_receiver),
            old_format: load(&self.old_format),
            malformed: load(&self.malformed),
            oversize: load(&self.oversize),
            unsendable: load(&self.unsendable),
            send_errors: load(&self.send_errors),
            bytes_sent: load(&self.bytes_sent),
            bytes_received: load(&self.bytes_received),
            datagrams_sent: load(&self.datagrams_sent),
            datagrams_received: load(&self.datagrams_received),
            fragmented_sent: load(&self.fragmented_sent),
            fragments_held: load(&self.fragments_held),
            reassembly_dropped: load(&self.reassembly_dropped),
            replay_evicted: load(&self.replay_evicted),
            largest_message: load(&self.largest_message),
        }
    }

    /// Counts one datagram dropped for `reason`.
    pub fn record_reject(&self, reason: Reject) {
        let counter = match reason {
            Reject::Oversize => &self.oversize,
            Reject::BadMagic => &self.bad_magic,
            Reject::Malformed => &self.malformed,
            Reject::BadTag => &self.bad_tag,
            Reject::Stale => &self.stale,
            Reject::SpoofedSender => &self.spoofed_sender,
            Reject::WrongReceiver => &self.wrong_receiver,
            Reject::Replay => &self.replay,
            Reject::OldFormat => &self.old_format,
        };
        add(counter, 1);
    }
}

/// A chitchat [`Socket`] whose every datagram is framed and authenticated with the cluster key.
pub(crate) struct AuthSocket {
    inner: Box<dyn DatagramSocket>,
    outbound: Outbound,
    inbound: Inbound,
    stats: Arc<AuthStats>,
    message_buf: Vec<u8>,
    /// Kept between messages (a context costs more to set up than a small message to compress);
    /// `None` only if zstd could not allocate one.
    compressor: Option<zstd::bulk::Compressor<'static>>,
    recv_buf: Vec<u8>,
    seen_dropped: u64,
    seen_evicted: u64,
    /// When (unix ms) a frame of the previous format, and one sent to another receiver, were
    /// last logged: each is logged at most once a minute.
    warned_ms: [Option<u64>; 2],
}

/// How often each of the rejections worth an operator's attention is logged.
const WARN_EVERY_MS: u64 = 60_000;

/// zstd level of gossip messages: a syn (the digest of every member) shrinks to about half, in a
/// few microseconds.
const ZSTD_LEVEL: i32 = 3;

/// Largest message after decompression: what [`MAX_FRAGMENTS`] whole datagrams can carry. A
/// message that would decompress to more is malformed (only a key holder can send one at all).
const MAX_MESSAGE: usize = MAX_FRAGMENTS as usize * MAX_DATAGRAM;

impl AuthSocket {
    /// Wraps a bound socket. `sender` is the address written into every frame: the advertised
    /// gossip address, which must be the source address peers see.
    pub(crate) fn new(
        inner: Box<dyn DatagramSocket>,
        sender: SocketAddr,
        key: FrameKey,
        max_datagram: usize,
        stats: Arc<AuthStats>,
    ) -> AuthSocket {
        let max_datagram = max_datagram.clamp(MIN_DATAGRAM, MAX_DATAGRAM);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        // Message ids only need to differ between messages in flight; a clock-seeded counter also
        // keeps a restarted member from reusing its predecessor's ids.
        let first_msg_id = now.subsec_nanos() ^ (now.as_secs() as u32);
        AuthSocket {
            inner,
            outbound: Outbound::new(key.clone(), sender, max_datagram, first_msg_id),
            inbound: Inbound::new(key, sender, max_datagram),
            stats,
            message_buf: Vec::new(),
            compressor: zstd::bulk::Compressor::new(ZSTD_LEVEL)
                .inspect_err(|err| warn!(error = %err, "cannot set up zstd: gossip will not be sent"))
                .ok(),
            // One byte more than the bound, so an over-long datagram shows as such instead of
            // being silently truncated to a length that passes.
            recv_buf: vec![0; max_datagram + 1],
            seen_dropped: 0,
            seen_evicted: 0,
            warned_ms: [None; 2],
        }
    }

    /// The address the underlying socket is bound to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    /// The sender address written into every frame.
    pub(crate) fn sender(&self) -> SocketAddr {
        self.outbound.sender()
    }

    /// The counters this socket updates.
    #[cfg(test)]
    pub(crate) fn stats(&self) -> Arc<AuthStats> {
        Arc::clone(&self.stats)
    }

    async fn send_message(&mut self, to: SocketAddr, message: &ChitchatMessage) {
        self.message_buf.clear();
        message.serialize(&mut self.message_buf);
        self.stats.largest_message.fetch_max(self.message_buf.len() as u64, Ordering::Relaxed);
        let compressed = match self.compressor.as_mut().map(|c| c.compress(&self.message_buf)) {
            Some(Ok(compressed)) => compressed,
            Some(Err(err)) => {
                add(&self.stats.unsendable, 1);
                warn!(to = %to, error = %err, "cannot compress a gossip message, dropped");
                return;
            }
            None => {
                add(&self.stats.unsendable, 1);
                warn!(to = %to, "no zstd compressor, gossip message dropped");
                return;
            }
        };
        let frames = match self.outbound.encode(&compressed, to, crate::unix_ms()) {
            Ok(frames) => frames,
            Err(_) => {
                add(&self.stats.unsendable, 1);
                warn!(to = %to, message_len = self.message_buf.len(), "gossip message too large to send, dropped");
                return;
            }
        };
        if frames.len() > 1 {
            add(&self.stats.fragmented_sent, 1);
        }
        for frame in frames {
            match self.inner.send_to(&frame, to).await {
                Ok(()) => {
                    add(&self.stats.datagrams_sent, 1);
                    add(&self.stats.bytes_sent, frame.len() as u64);
                }
                Err(err) => {
                    // Gossip tolerates loss; the next round retries. Report it, don't fail.
                    add(&self.stats.send_errors, 1);
                    debug!(to = %to, error = %err, "gossip send failed");
                    return;
                }
            }
        }
    }

    /// Reads datagrams until one completes a valid message. Cancel-safe: state changes happen
    /// only between awaits.
    async fn recv_message(&mut self) -> io::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (len, source) = match self.inner.recv_from(&mut self.recv_buf).await {
                Ok(received) => received,
                Err(err) if is_transient(&err) => {
                    debug!(error = %err, "transient gossip receive error");
                    continue;
                }
                Err(err) => return Err(err),
            };
            // Taken out for the synchronous check and put back before the next await.
            let buf = std::mem::take(&mut self.recv_buf);
            let message = self.receive_datagram(buf.get(..len).unwrap_or_default(), source, crate::unix_ms());
            self.recv_buf = buf;
            if let Some(message) = message {
                return Ok((source, message));
            }
        }
    }

    /// Runs every check on one received datagram and counts the outcome; returns the message
    /// if the datagram completed a valid one. Synchronous, so tests can feed it bytes directly.
    pub(crate) fn receive_datagram(
        &mut self,
        datagram: &[u8],
        source: SocketAddr,
        now_ms: u64,
    ) -> Option<ChitchatMessage> {
        add(&self.stats.datagrams_received, 1);
        add(&self.stats.bytes_received, datagram.len() as u64);
        let outcome = match self.inbound.accept(datagram, source, now_ms) {
            Ok(Some(bytes)) => decode_message(&bytes).map(Some),
            Ok(None) => {
                add(&self.stats.fragments_held, 1);
                Ok(None)
            }
            Err(reason) => Err(reason),
        };
        self.sync_inbound_counters();
        match outcome {
            Ok(Some(message)) => {
                add(&self.stats.accepted, 1);
                Some(message)
            }
            Ok(None) => None,
            Err(reason) => {
                self.stats.record_reject(reason);
                debug!(from = %source, len = datagram.len(), reason = %reason, "gossip datagram dropped");
                self.warn_about(reason, source, now_ms);
                None
            }
        }
    }

    /// Logs (at most once a minute each) the rejections an operator should hear of: they are
    /// authenticated, so they come from a member of the cluster.
    fn warn_about(&mut self, reason: Reject, source: SocketAddr, now_ms: u64) {
        let slot = match reason {
            Reject::OldFormat => 0,
            Reject::WrongReceiver => 1,
            _ => return,
        };
        let Some(last) = self.warned_ms.get_mut(slot) else { return };
        if last.is_some_and(|at| now_ms.saturating_sub(at) < WARN_EVERY_MS) {
            return;
        }
        *last = Some(now_ms);
        let me = self.outbound.sender();
        if reason == Reject::OldFormat {
            warn!(from = %source, "gossip from {source} uses the previous frame format (GLB2, an older geolb): members of the two versions do not hear each other until all are upgraded (counted as rejected, reason old_format)");
        } else {
            warn!(from = %source, me = %me, "gossip from {source} was sent to another member, or to an address of this one other than {me} that it advertises: a replayed frame, or a seed not given as the member's advertised address (counted as rejected, reason wrong_receiver)");
        }
    }

    fn sync_inbound_counters(&mut self) {
        let dropped = self.inbound.reassembler().dropped();
        add(&self.stats.reassembly_dropped, dropped - self.seen_dropped);
        self.seen_dropped = dropped;
        let evicted = self.inbound.replay_cache().evicted();
        add(&self.stats.replay_evicted, evicted - self.seen_evicted);
        self.seen_evicted = evicted;
    }
}

/// Decodes an authenticated payload: one zstd frame of exactly one chitchat message of at most
/// [`MAX_MESSAGE`] bytes; anything else is malformed.
fn decode_message(bytes: &[u8]) -> Result<ChitchatMessage, Reject> {
    let message = zstd::bulk::decompress(bytes, MAX_MESSAGE).map_err(|_| Reject::Malformed)?;
    let mut cursor = message.as_slice();
    match ChitchatMessage::deserialize(&mut cursor) {
        Ok(message) if cursor.is_empty() => Ok(message),
        _ => Err(Reject::Malformed),
    }
}

#[async_trait]
impl Socket for AuthSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> anyhow::Result<()> {
        self.send_message(to, &message).await;
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        let local = self.local_addr();
        // chitchat keeps only `to_string()` of this error, so the cause goes into the message.
        self.recv_message().await.map_err(|err| anyhow::anyhow!("gossip socket {local} failed: {err}"))
    }
}

/// A chitchat [`Transport`] whose sockets authenticate every datagram with the cluster key.
pub(crate) struct AuthTransport<D> {
    datagrams: D,
    key: FrameKey,
    advertise: Option<SocketAddr>,
    max_datagram: usize,
    stats: Arc<AuthStats>,
}

impl<D: DatagramTransport> AuthTransport<D> {
    /// Sockets from `datagrams`, signed with `key` (≥ 32 bytes).
    pub(crate) fn new(datagrams: D, key: &[u8]) -> Result<AuthTransport<D>, KeyTooShort> {
        Ok(AuthTransport {
            datagrams,
            key: FrameKey::new(key)?,
            advertise: None,
            max_datagram: MAX_DATAGRAM,
            stats: Arc::default(),
        })
    }

    /// Writes `advertise` as the sender instead of the bound address (a port of 0 takes the
    /// bound port). Needed when binding a wildcard address.
    pub(crate) fn with_advertise(mut self, advertise: SocketAddr) -> AuthTransport<D> {
        self.advertise = Some(advertise);
        self
    }

    /// Lowers the datagram bound (tests: forces fragmentation). Clamped to 128..=65,507.
    pub(crate) fn with_max_datagram(mut self, max_datagram: usize) -> AuthTransport<D> {
        self.max_datagram = max_datagram.clamp(MIN_DATAGRAM, MAX_DATAGRAM);
        self
    }

    /// Counters shared by every socket this transport opens.
    pub(crate) fn stats(&self) -> Arc<AuthStats> {
        Arc::clone(&self.stats)
    }

    /// Binds `listen` and wraps it.
    pub(crate) async fn bind(&self, listen: SocketAddr) -> io::Result<AuthSocket> {
        let inner = self.datagrams.bind(listen).await?;
        let local = inner.local_addr();
        let sender = match self.advertise {
            Some(advertise) if advertise.port() == 0 => SocketAddr::new(advertise.ip(), local.port()),
            Some(advertise) => advertise,
            None => local,
        };
        Ok(AuthSocket::new(inner, sender, self.key.clone(), self.max_datagram, self.stats()))
    }
}

#[async_trait]
impl<D: DatagramTransport> Transport for AuthTransport<D> {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = self.bind(listen_addr).await.with_context(|| format!("failed to bind {listen_addr}"))?;
        Ok(Box::new(socket))
    }
}

/// Hands chitchat a socket bound beforehand, so bind errors surface as typed errors with their
/// address and port 0 resolves before chitchat learns its own address.
pub(super) struct PreBound(Mutex<Option<AuthSocket>>);

impl PreBound {
    pub(super) fn new(socket: AuthSocket) -> PreBound {
        PreBound(Mutex::new(Some(socket)))
    }
}

#[async_trait]
impl Transport for PreBound {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        match socket {
            Some(socket) => Ok(Box::new(socket)),
            None => anyhow::bail!("the gossip socket was already handed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::frame::{FrameHeader, TAG_LEN, encode_frame};
    use super::super::memnet::MemNetwork;
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 7946))
    }

    /// A frame to `addr(2)`.
    fn signed(key: &[u8], sender: SocketAddr, sent_at_ms: u64, msg_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let header = FrameHeader { sent_at_ms, sender, receiver: addr(2), msg_id, index: 0, count: 1 };
        encode_frame(&FrameKey::new(key).unwrap(), &header, payload, &mut out);
        out
    }

    /// A payload as [`AuthSocket`] sends it: zstd-compressed.
    fn compressed(message: &[u8]) -> Vec<u8> {
        zstd::bulk::compress(message, ZSTD_LEVEL).unwrap()
    }

    fn bad_cluster() -> Vec<u8> {
        compressed(&ChitchatMessage::BadCluster.serialize_to_vec())
    }

    async fn recv(socket: &mut AuthSocket) -> (SocketAddr, ChitchatMessage) {
        tokio::time::timeout(Duration::from_secs(5), Socket::recv(socket)).await.expect("no message").unwrap()
    }

    #[tokio::test]
    async fn messages_round_trip_through_the_frame() {
        let net = MemNetwork::new(1);
        let transport = AuthTransport::new(net.clone(), &KEY).unwrap();
        let mut a = transport.bind(addr(1)).await.unwrap();
        let mut b = transport.bind(addr(2)).await.unwrap();
        let mut tap = net.tap();
        Socket::send(&mut a, addr(2), ChitchatMessage::BadCluster).await.unwrap();
        assert_eq!(recv(&mut b).await, (addr(1), ChitchatMessage::BadCluster));
        let seen = tap.recv().await.unwrap();
        assert_eq!(&seen.bytes[..4], b"GLB3");
        assert_eq!(seen.bytes.len(), 32 + bad_cluster().len() + TAG_LEN);
        let c = transport.stats().snapshot();
        assert_eq!((c.accepted, c.datagrams_sent, c.bytes_sent), (1, 1, seen.bytes.len() as u64));
        assert_eq!(c.bytes_received, c.bytes_sent);
        assert_eq!(c.rejected_total(), 0);
    }

    /// Every rejection reason is dropped and counted, and the socket keeps delivering.
    #[tokio::test]
    async fn every_rejection_is_counted_and_the_loop_goes_on() {
        let net = MemNetwork::new(1);
        let transport = AuthTransport::new(net.clone(), &KEY).unwrap();
        let mut a = transport.bind(addr(1)).await.unwrap();
        let mut b = transport.bind(addr(2)).await.unwrap();
        let stats = b.stats();
        let mut tap = net.tap();
        Socket::send(&mut a, addr(2), ChitchatMessage::BadCluster).await.unwrap();
        recv(&mut b).await;
        let captured = tap.recv().await.unwrap().bytes;
        let now = crate::unix_ms();
        let payload = bad_cluster();

        let mut tampered = captured.clone();
        let last = tampered.len() - TAG_LEN - 1;
        tampered[last] ^= 0x40;
        let oversize = {
            let mut big = signed(&KEY, addr(1), now, 1, &vec![0; MAX_DATAGRAM]);
            big.truncate(MAX_DATAGRAM + 1);
            big
        };
        let cases: Vec<(&str, SocketAddr, Vec<u8>, Reject)> = vec![
            ("tampered byte", addr(1), tampered, Reject::BadTag),
            ("wrong key", addr(1), signed(&[8; 32], addr(1), now, 2, &payload), Reject::BadTag),
            ("stale", addr(1), signed(&KEY, addr(1), now - 31_000, 3, &payload), Reject::Stale),
            ("from the future", addr(1), signed(&KEY, addr(1), now + 31_000, 4, &payload), Reject::Stale),
            ("replay", addr(1), captured.clone(), Reject::Replay),
            ("sender is not source", addr(3), signed(&KEY, addr(1), now, 5, &payload), Reject::SpoofedSender),
            (
                "sent to another member",
                addr(1),
                {
                    let mut out = Vec::new();
                    let header = FrameHeader {
                        sent_at_ms: now,
                        sender: addr(1),
                        receiver: addr(3),
                        msg_id: 10,
                        index: 0,
                        count: 1,
                    };
                    encode_frame(&FrameKey::new(&KEY).unwrap(), &header, &payload, &mut out);
                    out
                },
                Reject::WrongReceiver,
            ),
            (
                "previous format",
                addr(1),
                {
                    let mut old = b"GLB2".to_vec();
                    old.extend_from_slice(&now.to_be_bytes());
                    old.extend_from_slice(&[4, 10, 0, 0, 1, 0x1f, 0x0a, 0, 0, 0, 11, 0, 1]);
                    old.extend_from_slice(&payload);
                    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(&KEY).unwrap();
                    hmac::Mac::update(&mut mac, &old);
                    old.extend_from_slice(&hmac::Mac::finalize(mac).into_bytes());
                    old
                },
                Reject::OldFormat,
            ),
            ("truncated", addr(1), captured[..20].to_vec(), Reject::Malformed),
            ("truncated after the header", addr(1), captured[..captured.len() - 1].to_vec(), Reject::BadTag),
            ("oversize", addr(1), oversize, Reject::Oversize),
            ("not ours", addr(1), payload.clone(), Reject::BadMagic),
            ("signed garbage", addr(1), signed(&KEY, addr(1), now, 6, b"garbage"), Reject::Malformed),
            (
                "signed message with trailing bytes",
                addr(1),
                signed(
                    &KEY,
                    addr(1),
                    now,
                    7,
                    &compressed(&[&ChitchatMessage::BadCluster.serialize_to_vec()[..], b"x"].concat()),
                ),
                Reject::Malformed,
            ),
            (
                "signed uncompressed message",
                addr(1),
                signed(&KEY, addr(1), now, 8, &ChitchatMessage::BadCluster.serialize_to_vec()),
                Reject::Malformed,
            ),
            (
                "signed message that decompresses beyond the bound",
                addr(1),
                signed(&KEY, addr(1), now, 9, &compressed(&vec![0; MAX_MESSAGE + 1])),
                Reject::Malformed,
            ),
        ];
        for (name, from, bytes, reason) in cases {
            let before = stats.snapshot();
            assert!(net.inject(from, addr(2), bytes), "{name}");
            Socket::send(&mut a, addr(2), ChitchatMessage::BadCluster).await.unwrap();
            assert_eq!(recv(&mut b).await, (addr(1), ChitchatMessage::BadCluster), "{name}: the loop must go on");
            let after = stats.snapshot();
            assert_eq!(after.rejected(reason), before.rejected(reason) + 1, "{name}: {reason}");
            assert_eq!(after.rejected_total(), before.rejected_total() + 1, "{name}: only {reason}");
            assert_eq!(after.accepted, before.accepted + 1, "{name}");
        }
    }

    /// A frame captured on its way to one member and replayed from its real source to another
    /// is refused there: the tag covers the receiver.
    #[tokio::test]
    async fn a_frame_for_one_member_is_refused_by_another() {
        let net = MemNetwork::new(1);
        let transport = AuthTransport::new(net.clone(), &KEY).unwrap();
        let mut a = transport.bind(addr(1)).await.unwrap();
        let mut b = transport.bind(addr(2)).await.unwrap();
        let c_transport = AuthTransport::new(net.clone(), &KEY).unwrap();
        let mut c = c_transport.bind(addr(3)).await.unwrap();
        let c_stats = c.stats();
        let mut tap = net.tap();
        Socket::send(&mut a, addr(2), ChitchatMessage::BadCluster).await.unwrap();
        recv(&mut b).await;
        let captured = tap.recv().await.unwrap().bytes;
        // Replayed at once, from the real sender's address, to a member that never saw it.
        assert!(net.inject(addr(1), addr(3), captured));
        Socket::send(&mut a, addr(3), ChitchatMessage::BadCluster).await.unwrap();
        assert_eq!(recv(&mut c).await, (addr(1), ChitchatMessage::BadCluster));
        let after = c_stats.snapshot();
        assert_eq!(after.accepted, 1, "only the frame sent to c is accepted: {after:?}");
        assert_eq!(after.rejected_total(), 1, "{after:?}");
    }

    #[tokio::test]
    async fn large_messages_are_fragmented_and_reassembled() {
        let net = MemNetwork::new(1);
        net.set_mtu(1_000);
        let transport = AuthTransport::new(net.clone(), &KEY).unwrap().with_max_datagram(1_000);
        let mut a = transport.bind(addr(1)).await.unwrap();
        let mut b = transport.bind(addr(2)).await.unwrap();
        // A real message large enough to need several frames even compressed: a SYN naming a
        // long cluster id of pseudo-random letters.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let cluster_id: String = (0..2_500)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect();
        let syn = capture_syn(&cluster_id).await;
        let len = compressed(&syn.serialize_to_vec()).len();
        assert!(len > 1_500, "{len}");
        Socket::send(&mut a, addr(2), clone_message(&syn)).await.unwrap();
        assert_eq!(recv(&mut b).await, (addr(1), syn));
        let c = transport.stats().snapshot();
        assert_eq!(c.fragmented_sent, 1);
        assert_eq!(c.datagrams_sent, len.div_ceil(1_000 - 32 - TAG_LEN) as u64);
        assert_eq!(c.fragments_held, c.datagrams_sent - 1);
        assert_eq!(c.accepted, 1);
    }

    fn clone_message(message: &ChitchatMessage) -> ChitchatMessage {
        ChitchatMessage::deserialize(&mut &message.serialize_to_vec()[..]).unwrap()
    }

    /// A real SYN message, as chitchat builds it (its `Digest` type cannot be named outside
    /// chitchat): a member of `cluster_id` gossips to a seed we listen on.
    async fn capture_syn(cluster_id: &str) -> ChitchatMessage {
        let net = MemNetwork::new(2);
        let transport = AuthTransport::new(net.clone(), &KEY).unwrap();
        let mut seed = transport.bind(addr(9)).await.unwrap();
        let mut config = super::super::GossipConfig::new(
            "member",
            addr(8),
            cluster_id,
            KEY.to_vec(),
            super::super::Role::Observer,
            "r",
        );
        config.seeds = vec![addr(9).to_string()];
        let member = super::super::spawn_gossip(config, net).await.unwrap();
        let (_, syn) = recv(&mut seed).await;
        member.shutdown().await.unwrap();
        syn
    }

    #[tokio::test]
    async fn a_broken_socket_ends_recv_with_an_error() {
        let net = MemNetwork::new(1);
        let transport = AuthTransport::new(net.clone(), &KEY).unwrap();
        let mut b = transport.bind(addr(2)).await.unwrap();
        net.close(addr(2));
        let err = Socket::recv(&mut b).await.unwrap_err();
        assert!(format!("{err:#}").contains("10.0.0.2:7946"), "{err:#}");
    }

    fn test_socket() -> AuthSocket {
        struct Nowhere;
        #[async_trait]
        impl DatagramSocket for Nowhere {
            fn local_addr(&self) -> SocketAddr {
                addr(2)
            }
            async fn send_to(&mut self, _: &[u8], _: SocketAddr) -> io::Result<()> {
                Ok(())
            }
            async fn recv_from(&mut self, _: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
                std::future::pending().await
            }
        }
        AuthSocket::new(Box::new(Nowhere), addr(2), FrameKey::new(&KEY).unwrap(), MAX_DATAGRAM, Arc::default())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Unauthenticated noise of any shape is dropped without a panic.
        #[test]
        fn random_datagrams_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
            let mut socket = test_socket();
            proptest::prop_assert!(socket.receive_datagram(&bytes, addr(1), crate::unix_ms()).is_none());
            proptest::prop_assert_eq!(socket.stats().snapshot().rejected_total(), 1);
        }

        /// Authenticated random payloads reach chitchat's decoder, which must not panic either;
        /// the payloads start with chitchat's magic and version so the decoder goes deep.
        #[test]
        fn signed_random_payloads_never_panic(
            kind in 0u8..5,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
        ) {
            let mut payload = vec![0x53, 0xb0, 0, kind];
            payload.extend_from_slice(&body);
            let mut socket = test_socket();
            let frame = signed(&KEY, addr(1), crate::unix_ms(), 1, &compressed(&payload));
            let _ = socket.receive_datagram(&frame, addr(1), crate::unix_ms());
            let c = socket.stats().snapshot();
            proptest::prop_assert_eq!(c.accepted + c.malformed, 1);
        }
    }
}
