//! An in-memory datagram network for gossip simulations (STYLE.md, testing pyramid item 4).
//!
//! [`MemNetwork`] is a [`DatagramTransport`]: members bind addresses on it and exchange byte
//! datagrams through bounded queues, so simulations run the real framing and authentication of
//! [`super::transport`]. It can cut links (partitions), lose datagrams with a seeded
//! pseudo-random generator, enforce an MTU, count bytes per member, show every datagram to a tap
//! (to capture frames and replay them), inject datagrams with any source address (forgeries), and
//! close a member's socket (to kill its gossip task).
//!
//! It owns no gossip logic. Locks are `std::sync::Mutex`, never held across an await.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::frame::MAX_DATAGRAM;
use super::transport::{DatagramSocket, DatagramTransport};

/// Datagrams queued per socket; when a queue is full, new datagrams are dropped (and counted),
/// like a full UDP receive buffer.
pub(super) const MEMNET_QUEUE: usize = 1024;

/// First port handed out for binds of port 0.
const FIRST_EPHEMERAL_PORT: u16 = 40_000;

/// Traffic counters of one address (or the sum over all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NetCounters {
    /// Datagrams handed to the network by this address.
    pub sent_datagrams: u64,
    /// Bytes of those datagrams.
    pub sent_bytes: u64,
    /// Datagrams queued for this address.
    pub delivered_datagrams: u64,
    /// Bytes of those datagrams.
    pub delivered_bytes: u64,
    /// Datagrams from this address that were lost: cut link, random loss, full queue, nobody bound.
    pub dropped_datagrams: u64,
}

impl NetCounters {
    fn add(&mut self, other: &NetCounters) {
        self.sent_datagrams += other.sent_datagrams;
        self.sent_bytes += other.sent_bytes;
        self.delivered_datagrams += other.delivered_datagrams;
        self.delivered_bytes += other.delivered_bytes;
        self.dropped_datagrams += other.dropped_datagrams;
    }
}

/// A datagram as seen by [`MemNetwork::tap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Datagram {
    /// Source address.
    pub from: SocketAddr,
    /// Destination address.
    pub to: SocketAddr,
    /// The bytes.
    pub bytes: Vec<u8>,
}

type Queue = mpsc::Sender<(SocketAddr, Vec<u8>)>;

struct NetState {
    sockets: HashMap<SocketAddr, (u64, Queue)>,
    next_binding: u64,
    next_port: u16,
    cut: HashSet<(SocketAddr, SocketAddr)>,
    loss: f64,
    rng: u64,
    mtu: usize,
    counters: HashMap<SocketAddr, NetCounters>,
    tap: Option<mpsc::UnboundedSender<Datagram>>,
}

impl NetState {
    /// splitmix64: tiny, seeded, good enough to decide losses.
    fn next_unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A simulated datagram network (cheap to clone; clones share the network).
#[derive(Clone)]
pub(crate) struct MemNetwork {
    state: Arc<Mutex<NetState>>,
}

impl MemNetwork {
    /// An empty, lossless network with a 65,507-byte MTU; `seed` drives random loss.
    pub(crate) fn new(seed: u64) -> MemNetwork {
        MemNetwork {
            state: Arc::new(Mutex::new(NetState {
                sockets: HashMap::new(),
                next_binding: 0,
                next_port: FIRST_EPHEMERAL_PORT,
                cut: HashSet::new(),
                loss: 0.0,
                rng: seed,
                mtu: MAX_DATAGRAM,
                counters: HashMap::new(),
                tap: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sending a larger datagram fails like `EMSGSIZE`.
    pub(crate) fn set_mtu(&self, mtu: usize) {
        self.lock().mtu = mtu;
    }

    /// Share of datagrams lost at random, `0.0..=1.0`.
    pub(crate) fn set_loss(&self, loss: f64) {
        self.lock().loss = loss.clamp(0.0, 1.0);
    }

    /// Drops every datagram between `a` and `b`, both ways.
    pub(crate) fn cut(&self, a: SocketAddr, b: SocketAddr) {
        let mut state = self.lock();
        state.cut.insert((a, b));
        state.cut.insert((b, a));
    }

    /// Undoes [`MemNetwork::cut`].
    pub(crate) fn repair(&self, a: SocketAddr, b: SocketAddr) {
        let mut state = self.lock();
        state.cut.remove(&(a, b));
        state.cut.remove(&(b, a));
    }

    /// Cuts every link between the two groups.
    pub(crate) fn partition(&self, left: &[SocketAddr], right: &[SocketAddr]) {
        for a in left {
            for b in right {
                self.cut(*a, *b);
            }
        }
    }

    /// Repairs every cut link.
    pub(crate) fn heal(&self) {
        self.lock().cut.clear();
    }

    /// Counters of `addr`.
    pub(crate) fn counters(&self, addr: SocketAddr) -> NetCounters {
        self.lock().counters.get(&addr).copied().unwrap_or_default()
    }

    /// Counters summed over every address.
    pub(crate) fn total(&self) -> NetCounters {
        let state = self.lock();
        let mut total = NetCounters::default();
        for counters in state.counters.values() {
            total.add(counters);
        }
        total
    }

    /// Every datagram the network carries from now on (delivered or not) is copied here.
    pub(crate) fn tap(&self) -> mpsc::UnboundedReceiver<Datagram> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().tap = Some(tx);
        rx
    }

    /// Delivers `bytes` to `to` as if sent from `from` (any address, bound or not), ignoring MTU,
    /// loss and cuts. Returns whether it was queued.
    pub(crate) fn inject(&self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) -> bool {
        let state = self.lock();
        state.sockets.get(&to).is_some_and(|(_, queue)| queue.try_send((from, bytes)).is_ok())
    }

    /// Closes `addr`'s socket from the network side: its next receive fails once its queue is
    /// drained, which ends the owning gossip task.
    pub(crate) fn close(&self, addr: SocketAddr) {
        self.lock().sockets.remove(&addr);
    }

    fn send(&self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        if bytes.len() > state.mtu {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "datagram larger than the network mtu"));
        }
        let sender = state.counters.entry(from).or_default();
        sender.sent_datagrams += 1;
        sender.sent_bytes += bytes.len() as u64;
        if let Some(tap) = &state.tap {
            let _ = tap.send(Datagram { from, to, bytes: bytes.to_vec() });
        }
        let lost = state.cut.contains(&(from, to)) || (state.loss > 0.0 && state.next_unit() < state.loss);
        let queued =
            !lost && state.sockets.get(&to).is_some_and(|(_, queue)| queue.try_send((from, bytes.to_vec())).is_ok());
        if queued {
            let receiver = state.counters.entry(to).or_default();
            receiver.delivered_datagrams += 1;
            receiver.delivered_bytes += bytes.len() as u64;
        } else {
            state.counters.entry(from).or_default().dropped_datagrams += 1;
        }
        Ok(())
    }

    fn unbind(&self, addr: SocketAddr, binding: u64) {
        let mut state = self.lock();
        if state.sockets.get(&addr).is_some_and(|(id, _)| *id == binding) {
            state.sockets.remove(&addr);
        }
    }
}

#[async_trait]
impl DatagramTransport for MemNetwork {
    async fn bind(&self, addr: SocketAddr) -> io::Result<Box<dyn DatagramSocket>> {
        let mut state = self.lock();
        let mut local = addr;
        if local.port() == 0 {
            loop {
                let port = state.next_port;
                state.next_port = state.next_port.checked_add(1).unwrap_or(FIRST_EPHEMERAL_PORT);
                local.set_port(port);
                if !state.sockets.contains_key(&local) {
                    break;
                }
            }
        }
        if state.sockets.contains_key(&local) {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("{local} is already bound")));
        }
        let (tx, rx) = mpsc::channel(MEMNET_QUEUE);
        let binding = state.next_binding;
        state.next_binding += 1;
        state.sockets.insert(local, (binding, tx));
        Ok(Box::new(MemSocket { network: self.clone(), local, binding, rx }))
    }
}

struct MemSocket {
    network: MemNetwork,
    local: SocketAddr,
    binding: u64,
    rx: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
}

#[async_trait]
impl DatagramSocket for MemSocket {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    async fn send_to(&mut self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.network.send(self.local, to, datagram)
    }

    async fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (from, bytes) =
            self.rx.recv().await.ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "in-memory socket closed"))?;
        let len = bytes.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..len), bytes.get(..len)) {
            dst.copy_from_slice(src);
        }
        Ok((len, from))
    }
}

impl Drop for MemSocket {
    fn drop(&mut self) {
        self.network.unbind(self.local, self.binding);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[tokio::test]
    async fn delivers_cuts_and_counts() {
        let net = MemNetwork::new(1);
        let mut a = net.bind(addr(1)).await.unwrap();
        let mut b = net.bind(addr(2)).await.unwrap();
        assert_eq!(net.bind(addr(1)).await.err().map(|e| e.kind()), Some(io::ErrorKind::AddrInUse));
        a.send_to(b"hi", addr(2)).await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(b.recv_from(&mut buf).await.unwrap(), (2, addr(1)));
        net.cut(addr(1), addr(2));
        a.send_to(b"lost", addr(2)).await.unwrap();
        net.repair(addr(1), addr(2));
        a.send_to(b"back", addr(2)).await.unwrap();
        assert_eq!(b.recv_from(&mut buf).await.unwrap(), (4, addr(1)));
        assert_eq!(&buf[..4], b"back");
        let c = net.counters(addr(1));
        assert_eq!((c.sent_datagrams, c.sent_bytes, c.dropped_datagrams), (3, 10, 1));
        assert_eq!(net.counters(addr(2)).delivered_bytes, 6);
        net.set_mtu(3);
        assert!(a.send_to(b"four", addr(2)).await.is_err());
        drop(b);
        assert!(net.bind(addr(2)).await.is_ok());
    }

    #[tokio::test]
    async fn port_zero_and_loss_are_deterministic() {
        let losses = |seed| async move {
            let net = MemNetwork::new(seed);
            net.set_loss(0.5);
            let mut a = net.bind(addr(0)).await.unwrap();
            let b = net.bind(addr(0)).await.unwrap();
            assert_ne!(a.local_addr(), b.local_addr());
            for _ in 0..200 {
                a.send_to(b"x", b.local_addr()).await.unwrap();
            }
            net.counters(a.local_addr()).dropped_datagrams
        };
        let first = losses(7).await;
        assert_eq!(first, losses(7).await);
        assert!((60..140).contains(&first), "{first}");
    }
}
