//! Upgrades without a failed query: the running resolver hands its listening sockets and its live
//! PowerDNS connections to the resolver that replaces it.
//!
//! PowerDNS answers SERVFAIL for the whole zone while its remote backend is unreachable, and it
//! finds a dead connection only by using it: the first query on each connection of a restarted
//! backend fails, even when the restart took no time. So neither socket activation (the listener
//! outlives the process) nor a quick restart is enough; the connections themselves must move.
//!
//! The way HAProxy and Envoy hot-restart, over a unix `SOCK_SEQPACKET` socket (the *handover
//! socket*, `[resolver] handover_socket`), with the file descriptors passed as `SCM_RIGHTS`:
//!
//! 1. The new process loads everything first (config, zones, GeoIP, the saved view), then
//!    connects and says [`Message::Hello`].
//! 2. The old one sends [`Message::Listeners`] with copies of its listening sockets. The new one
//!    starts accepting on them (both accept for a moment: the same kernel sockets, no connection
//!    refused), tells systemd `MAINPID=`/`READY=1`, and answers [`Message::Serving`].
//! 3. Only then does the old process stop. Each unix-connector connection stops at its next
//!    request boundary (after writing a reply, or while waiting for the next call) and is sent
//!    as a [`Message::Connection`] with the bytes already read from it; the new process serves it
//!    from there. HTTP connections are closed gracefully (PowerDNS's HTTP connector reconnects
//!    without failing a query). Then [`Message::Done`].
//!
//! If the new process dies or stalls before step 3, the old one never stopped: it keeps serving
//! and logs why the upgrade failed. Only a process of the same user may take over (the peer's
//! credentials are checked).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::server::unix::{Handed, Handoff};

/// The protocol's version: a new process speaking another one is refused, and the old keeps
/// serving.
const PROTOCOL: u32 = 1;
/// Largest message (bytes already read from a connection travel in one).
const MAX_MESSAGE: usize = 128 * 1024;
/// Most descriptors passed in one message.
const MAX_FDS: usize = 8;
/// How long each side waits for the other's next message during the listener exchange.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the new process waits for the old one to hand over its connections.
const CONNECTIONS_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a handover failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The system refused.
    #[error("handover socket {path}: cannot {what}: {source}")]
    Io {
        /// What was tried.
        what: &'static str,
        /// The handover socket.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// Something other than a socket has the path.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// A resolver already listens on the handover socket.
    #[error(
        "{0} is in use: a resolver with this config is running; start this one with --takeover to replace it without dropping a query"
    )]
    InUse(PathBuf),
    /// The other side broke the protocol or went away.
    #[error("handover with the running resolver failed: {0}")]
    Protocol(String),
}

/// The messages of the handover, as JSON in one `SOCK_SEQPACKET` datagram each.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "message", rename_all = "snake_case")]
enum Message {
    /// New → old: ready to take over.
    Hello { protocol: u32, pid: u32 },
    /// Old → new: the listening sockets, passed in this order.
    Listeners { sockets: Vec<SocketKind> },
    /// New → old: accepting on them; stop now.
    Serving,
    /// Old → new: one unix-connector connection, at a request boundary, and what was already
    /// read from it.
    Connection { buffered: Vec<u8> },
    /// Old → new: every connection has been handed over (or closed).
    Done { connections: usize },
}

/// What a passed listening socket is for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum SocketKind {
    /// The HTTP connector.
    Http,
    /// The unix-socket connector at `path`; `owned` when a resolver bound it (and removes the
    /// file at its final stop), not when systemd's socket unit did.
    Unix { path: PathBuf, owned: bool },
    /// The admin API.
    Admin,
    /// The NOTIFY listener.
    Notify,
}

/// One end of the handover socket.
#[derive(Debug)]
struct Channel {
    fd: AsyncFd<OwnedFd>,
}

impl Channel {
    async fn send(&self, message: &Message, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
        if bytes.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "handover message too large"));
        }
        loop {
            let mut guard = self.fd.writable().await?;
            let sent = guard.try_io(|fd| {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
                    return Err(io::Error::other("no room for the descriptors"));
                }
                rustix::net::sendmsg(fd.get_ref(), &[IoSlice::new(&bytes)], &mut control, SendFlags::NOSIGNAL)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(result) => return result.map(drop),
                Err(_would_block) => continue,
            }
        }
    }

    async fn recv(&self) -> io::Result<(Message, Vec<OwnedFd>)> {
        let mut bytes = vec![0u8; MAX_MESSAGE];
        loop {
            let mut guard = self.fd.readable().await?;
            let received = guard.try_io(|fd| {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let got = rustix::net::recvmsg(
                    fd.get_ref(),
                    &mut [IoSliceMut::new(&mut bytes)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )
                .map_err(io::Error::from)?;
                let mut fds = Vec::new();
                for message in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(passed) = message {
                        fds.extend(passed);
                    }
                }
                if got.flags.intersects(rustix::net::ReturnFlags::TRUNC | rustix::net::ReturnFlags::CTRUNC) {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated handover message"));
                }
                Ok((got.bytes, fds))
            });
            match received {
                Ok(Ok((0, _))) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(Ok((n, fds))) => {
                    let message = serde_json::from_slice(&bytes[..n])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    return Ok((message, fds));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    async fn recv_within(&self, timeout: Duration) -> Result<(Message, Vec<OwnedFd>), String> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Ok(Ok(got)) => Ok(got),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no message within {timeout:?}")),
        }
    }
}

/// Registers a descriptor this process owns with the runtime.
#[expect(unsafe_code, reason = "tokio's AsyncFd::register is unsafe for descriptors it does not own")]
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same until the
    // AsyncFd is dropped.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

fn seqpacket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?)
}

/// The handover socket a running resolver listens on for its successor.
#[derive(Debug)]
pub struct HandoverListener {
    fd: AsyncFd<OwnedFd>,
    path: PathBuf,
    inode: (u64, u64),
}

impl HandoverListener {
    /// Binds `path` (mode 0600): a stale socket file is replaced; a live one means a resolver
    /// with this config runs ([`HandoverError::InUse`]) unless `replace`, which the new process
    /// of a handover sets (the old one keeps its now-unnamed socket to the end).
    pub fn bind(path: &Path, replace: bool) -> Result<HandoverListener, HandoverError> {
        let io_error = |what, source| HandoverError::Io { what, path: path.to_path_buf(), source };
        // The default in state_dir may come before anything else created it.
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_error("create the directory of", e))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => return Err(HandoverError::NotASocket(path.to_path_buf())),
            Ok(_) => {
                if !replace && connect(path).is_ok() {
                    return Err(HandoverError::InUse(path.to_path_buf()));
                }
                std::fs::remove_file(path).map_err(|e| io_error("remove the old socket", e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("inspect", e)),
        }
        let fd = seqpacket().map_err(|e| io_error("create", e))?;
        let addr = SocketAddrUnix::new(path).map_err(|e| io_error("name", e.into()))?;
        rustix::net::bind(&fd, &addr).map_err(|e| io_error("bind", e.into()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_error("set the permissions of", e))?;
        rustix::net::listen(&fd, 4).map_err(|e| io_error("listen on", e.into()))?;
        let meta = std::fs::metadata(path).map_err(|e| io_error("inspect", e))?;
        let fd = register(fd).map_err(|e| io_error("register", e))?;
        Ok(HandoverListener { fd, path: path.to_path_buf(), inode: (meta.dev(), meta.ino()) })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn accept(&self) -> io::Result<Channel> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| {
                rustix::net::accept_with(fd.get_ref(), SocketFlags::CLOEXEC | SocketFlags::NONBLOCK)
                    .map_err(io::Error::from)
            }) {
                Ok(accepted) => return Ok(Channel { fd: register(accepted?)? }),
                Err(_would_block) => continue,
            }
        }
    }
}

impl Drop for HandoverListener {
    fn drop(&mut self) {
        // Only our own file: after a handover the path is the successor's socket.
        if std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn connect(path: &Path) -> io::Result<OwnedFd> {
    // Non-blocking: a unix connect completes at once or fails (EAGAIN when the backlog is full).
    let fd = seqpacket()?;
    rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
    Ok(fd)
}

/// Copies of the running resolver's listening sockets, offered to its successor.
#[derive(Debug)]
pub(crate) struct Offer {
    pub(crate) http: OwnedFd,
    pub(crate) unix: Option<(OwnedFd, PathBuf, bool)>,
    pub(crate) admin: Option<OwnedFd>,
    pub(crate) notify: Option<OwnedFd>,
    /// Where the unix connector's connections go at a handover.
    pub(crate) handoff: Handoff,
}

/// Waits for a successor on `listener` until `shutdown`, and hands everything over to the first
/// one that completes the exchange; then cancels `shutdown` (this process stops) and passes the
/// connections as they reach a request boundary.
pub(crate) async fn serve(listener: HandoverListener, offer: Offer, shutdown: CancellationToken) {
    tracing::info!(path = %listener.path().display(), "upgrades: a new resolver started with --takeover takes over here");
    loop {
        let channel = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(channel) => channel,
                Err(e) => {
                    tracing::warn!(error = %e, "handover socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        match offer_listeners(&channel, &offer).await {
            Ok(pid) => {
                tracing::info!(successor = pid, "handing over to the new resolver; stopping");
                shutdown.cancel();
                hand_connections(&channel, &offer.handoff).await;
                return;
            }
            Err(e) => tracing::error!(error = %e, "an upgrade failed: this resolver keeps serving"),
        }
    }
}

async fn offer_listeners(channel: &Channel, offer: &Offer) -> Result<u32, String> {
    let ucred = rustix::net::sockopt::socket_peercred(channel.fd.get_ref()).map_err(|e| e.to_string())?;
    if ucred.uid != rustix::process::geteuid() {
        return Err(format!("refused a takeover by uid {} (this resolver runs as another user)", ucred.uid.as_raw()));
    }
    let pid = match channel.recv_within(STEP_TIMEOUT).await? {
        (Message::Hello { protocol: PROTOCOL, pid }, _) => pid,
        (Message::Hello { protocol, .. }, _) => {
            return Err(format!("the new resolver speaks handover protocol {protocol}, this one {PROTOCOL}"));
        }
        (other, _) => return Err(format!("unexpected {other:?} instead of hello")),
    };
    let mut sockets = vec![SocketKind::Http];
    let mut fds = vec![offer.http.as_fd()];
    if let Some((fd, path, owned)) = &offer.unix {
        sockets.push(SocketKind::Unix { path: path.clone(), owned: *owned });
        fds.push(fd.as_fd());
    }
    for (kind, fd) in [(SocketKind::Admin, &offer.admin), (SocketKind::Notify, &offer.notify)] {
        if let Some(fd) = fd {
            sockets.push(kind);
            fds.push(fd.as_fd());
        }
    }
    channel.send(&Message::Listeners { sockets }, &fds).await.map_err(|e| e.to_string())?;
    // From here on both processes accept; this one stops only once the new one serves.
    offer.handoff.activate();
    match channel.recv_within(STEP_TIMEOUT).await {
        Ok((Message::Serving, _)) => Ok(pid),
        Ok((other, _)) => {
            offer.handoff.deactivate();
            Err(format!("unexpected {other:?} instead of serving"))
        }
        Err(e) => {
            offer.handoff.deactivate();
            Err(format!("the new resolver (pid {pid}) did not start serving: {e}"))
        }
    }
}

/// Passes each unix-connector connection as it reaches a request boundary, until the connector
/// has none left.
async fn hand_connections(channel: &Channel, handoff: &Handoff) {
    let Some(mut handed) = handoff.take_receiver() else { return };
    let mut passed = 0;
    loop {
        tokio::select! {
            biased;
            Some(h) = handed.recv() => passed += usize::from(pass(channel, h).await),
            // Closed and empty once every connection task ended (handed over or finished).
            _ = handoff.finished() => {
                while let Ok(h) = handed.try_recv() {
                    passed += usize::from(pass(channel, h).await);
                }
                break;
            }
        }
    }
    if let Err(e) = channel.send(&Message::Done { connections: passed }, &[]).await {
        tracing::warn!(error = %e, "handover: the new resolver went away before the end");
    }
    tracing::info!(connections = passed, "handed over the PowerDNS connections");
}

async fn pass(channel: &Channel, handed: Handed) -> bool {
    let fd: OwnedFd = handed.stream.into();
    match channel.send(&Message::Connection { buffered: handed.buffered }, &[fd.as_fd()]).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot hand over a connection; it is closed");
            false
        }
    }
}

/// What a new resolver took over from the running one.
#[derive(Debug)]
pub struct Taken {
    /// The HTTP connector's listener.
    pub http: std::net::TcpListener,
    /// The unix connector's listener, its path, and whether a resolver bound it.
    pub unix: Option<(std::os::unix::net::UnixListener, PathBuf, bool)>,
    /// The admin listener.
    pub admin: Option<std::net::TcpListener>,
    /// The NOTIFY socket.
    pub notify: Option<std::net::UdpSocket>,
    /// The exchange, to go on once the new process accepts on them.
    pub continuation: Continuation,
}

/// The rest of a takeover: [`Continuation::serving`] once the listeners are served.
#[derive(Debug)]
pub struct Continuation {
    channel: Channel,
}

/// Connects to the resolver on the handover socket `path` and takes its listening sockets.
/// `Ok(None)` when no resolver listens there (nothing to take over: start normally).
pub async fn take_over(path: &Path) -> Result<Option<Taken>, HandoverError> {
    let fd = match connect(path) {
        Ok(fd) => fd,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => return Ok(None),
        Err(e) => return Err(HandoverError::Io { what: "connect to", path: path.to_path_buf(), source: e }),
    };
    let channel = Channel {
        fd: register(fd).map_err(|e| HandoverError::Io { what: "register", path: path.to_path_buf(), source: e })?,
    };
    let protocol = |e: String| HandoverError::Protocol(e);
    channel
        .send(&Message::Hello { protocol: PROTOCOL, pid: std::process::id() }, &[])
        .await
        .map_err(|e| protocol(e.to_string()))?;
    let (sockets, fds) = match channel.recv_within(STEP_TIMEOUT).await.map_err(protocol)? {
        (Message::Listeners { sockets }, fds) if sockets.len() == fds.len() => (sockets, fds),
        (other, fds) => return Err(protocol(format!("unexpected {other:?} with {} descriptors", fds.len()))),
    };
    let mut http = None;
    let (mut unix, mut admin, mut notify) = (None, None, None);
    for (kind, fd) in sockets.into_iter().zip(fds) {
        match kind {
            SocketKind::Http => http = Some(std::net::TcpListener::from(fd)),
            SocketKind::Unix { path, owned } => unix = Some((std::os::unix::net::UnixListener::from(fd), path, owned)),
            SocketKind::Admin => admin = Some(std::net::TcpListener::from(fd)),
            SocketKind::Notify => notify = Some(std::net::UdpSocket::from(fd)),
        }
    }
    let http = http.ok_or_else(|| protocol("no HTTP connector listener passed".to_owned()))?;
    Ok(Some(Taken { http, unix, admin, notify, continuation: Continuation { channel } }))
}

impl Continuation {
    /// Tells the old resolver this one serves, then adopts its connections into `adopt` as
    /// they arrive, until it is done.
    pub async fn serving(self, adopt: mpsc::UnboundedSender<Handed>) {
        if let Err(e) = self.channel.send(&Message::Serving, &[]).await {
            tracing::error!(error = %e, "handover: cannot tell the old resolver to stop");
            return;
        }
        let deadline = tokio::time::Instant::now() + CONNECTIONS_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.channel.recv_within(left).await {
                Ok((Message::Connection { buffered }, mut fds)) if fds.len() == 1 => {
                    let Some(fd) = fds.pop() else { continue };
                    let stream = std::os::unix::net::UnixStream::from(fd);
                    if adopt.send(Handed { stream, buffered }).is_err() {
                        return;
                    }
                }
                Ok((Message::Done { connections }, _)) => {
                    tracing::info!(connections, "took over the PowerDNS connections");
                    return;
                }
                Ok((other, _)) => {
                    tracing::warn!(message = ?other, "handover: unexpected message; stopping the takeover of connections");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "handover: the old resolver stopped before handing over every connection");
                    return;
                }
            }
        }
    }
}
