//! What geolb's fuzz targets (`fuzz/` in the repository) drive of the gossip transport, which is
//! otherwise private to this crate. Only built with the `fuzz` feature.
//!
//! [`GossipEndpoint`] is one member's authenticated gossip socket, [`AuthSocket`] itself, over a
//! datagram socket that receives nothing and keeps what it is asked to send: datagrams are
//! handed to [`GossipEndpoint::receive`] (every check of `gossip::frame`, reassembly, zstd,
//! chitchat's decoding) and [`GossipEndpoint::send`] returns the frames the real sender writes.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chitchat::ChitchatMessage;
use chitchat::transport::Socket;

use crate::gossip::frame::FrameKey;
pub use crate::gossip::frame::{KeyTooShort, Reject};
pub use crate::gossip::transport::AuthCounters;
use crate::gossip::transport::{AuthSocket, AuthStats, DatagramSocket};

/// Largest datagram the transport sends or accepts.
pub const MAX_DATAGRAM: usize = crate::gossip::frame::MAX_DATAGRAM;
/// Length of the HMAC-SHA256 tag that ends every frame.
pub const TAG_LEN: usize = crate::gossip::frame::TAG_LEN;
/// Shortest accepted cluster key.
pub const MIN_KEY_LEN: usize = crate::gossip::frame::MIN_KEY_LEN;

type Sent = Arc<Mutex<Vec<Vec<u8>>>>;

/// A datagram socket that never receives and records every datagram sent through it.
struct Recorder {
    local: SocketAddr,
    sent: Sent,
}

#[async_trait]
impl DatagramSocket for Recorder {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    async fn send_to(&mut self, datagram: &[u8], _to: SocketAddr) -> io::Result<()> {
        self.sent.lock().unwrap_or_else(PoisonError::into_inner).push(datagram.to_vec());
        Ok(())
    }

    async fn recv_from(&mut self, _buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        std::future::pending().await
    }
}

/// One member's authenticated gossip socket, fed and drained by the caller.
pub struct GossipEndpoint {
    socket: AuthSocket,
    stats: Arc<AuthStats>,
    sent: Sent,
}

impl std::fmt::Debug for GossipEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipEndpoint").field("sender", &self.socket.sender()).finish_non_exhaustive()
    }
}

impl GossipEndpoint {
    /// An endpoint that signs and verifies with the cluster key `key` and writes `advertise` as
    /// the sender of its frames; datagrams over `max_datagram` bytes are refused (clamped to
    /// 128..=[`MAX_DATAGRAM`], as the transport does).
    pub fn new(key: &[u8], advertise: SocketAddr, max_datagram: usize) -> Result<GossipEndpoint, KeyTooShort> {
        let key = FrameKey::new(key)?;
        let stats = Arc::new(AuthStats::default());
        let sent = Sent::default();
        let inner = Box::new(Recorder { local: advertise, sent: sent.clone() });
        let socket = AuthSocket::new(inner, advertise, key, max_datagram, stats.clone());
        Ok(GossipEndpoint { socket, stats, sent })
    }

    /// Runs every receive check on one datagram from `source` at the receiver's clock `now_ms`;
    /// the message, if the datagram completed a valid one.
    pub fn receive(&mut self, datagram: &[u8], source: SocketAddr, now_ms: u64) -> Option<ChitchatMessage> {
        self.socket.receive_datagram(datagram, source, now_ms)
    }

    /// The frames the transport sends for `message` (serialized, compressed, framed and signed
    /// at the system clock), in order.
    pub async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> Vec<Vec<u8>> {
        // The recorder never fails, and the transport drops (and counts) what it cannot send.
        let _ = Socket::send(&mut self.socket, to, message).await;
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The endpoint's counters so far.
    pub fn counters(&self) -> AuthCounters {
        self.stats.snapshot()
    }
}
