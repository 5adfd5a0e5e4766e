//! The unix-socket connector: PowerDNS's `remote-connection-string=unix:path=…`.
//!
//! PowerDNS (`modules/remotebackend/unixconnector.cc`) opens one connection per backend instance
//! (receiver plus each distributor thread), sends `initialize` on it, then one call at a time:
//! the JSON object and a newline. It reads the reply in 1,500-byte chunks until what it has
//! parses as JSON, so each reply is one write of the object and a newline. There is no HTTP
//! parsing and no Nagle on a unix socket: per call this connector costs a read, a write and the
//! call itself, which is why it is the fast path (see `docs/operations.md`).
//!
//! Framing is tokio-util's delimiter codec with a maximum length: a line over
//! `max_request_bytes` is never buffered; it is answered with an error and the connection is
//! closed. Bytes that are not a call (not JSON, not UTF-8) get the protocol's error reply and
//! the connection goes on.
//!
//! The socket file: [`bind`] replaces a stale one (a socket nobody listens on) and refuses to
//! touch a live one or anything that is not a socket; [`serve`] removes it at shutdown if it is
//! still the one it bound, not when systemd's socket unit made it ([`Bound::adopt`]) or the
//! process handed it to its successor ([`Handoff`], see `crate::handover`).

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::server::Backend;

/// How long the rest of a refused over-long line is read and dropped before the connection
/// closes.
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Something else than a socket has the path.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// Another process accepts connections on the socket.
    #[error(
        "{0} is in use: another process accepts connections on it (to replace a running resolver without failing a query, start this one with --takeover)"
    )]
    InUse(PathBuf),
    /// The system refused.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was tried.
        what: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
}

/// A bound unix socket and the identity of its file, to remove only our own at shutdown.
#[derive(Debug)]
pub struct Bound {
    listener: UnixListener,
    path: PathBuf,
    inode: (u64, u64),
    owned: bool,
}

impl Bound {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this process (or the one it took over from) bound the socket and removes its
    /// file at the final stop; not for one systemd's socket unit made.
    pub fn owned(&self) -> bool {
        self.owned
    }

    /// A listening socket bound elsewhere: by systemd (`owned` false) or by the resolver this
    /// one took over from. Must run inside a tokio runtime.
    pub fn adopt(listener: std::os::unix::net::UnixListener, owned: bool) -> Result<Bound, BindError> {
        let path = listener.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf)).unwrap_or_default();
        let io_error = |what, source| BindError::Io { what, path: path.clone(), source };
        listener.set_nonblocking(true).map_err(|e| io_error("set non-blocking", e))?;
        let inode = std::fs::metadata(&path).map(|m| (m.dev(), m.ino())).unwrap_or_default();
        let listener = UnixListener::from_std(listener).map_err(|e| io_error("register", e))?;
        Ok(Bound { listener, path, inode, owned })
    }

    /// A copy of the listening socket, for the successor at an upgrade.
    pub(crate) fn share(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.listener.as_fd().try_clone_to_owned()
    }
}

/// A connection handed from one resolver to the next at a request boundary: the stream and the
/// bytes already read from it (the start of the next call, if any).
#[derive(Debug)]
pub struct Handed {
    /// The PowerDNS connection.
    pub stream: std::os::unix::net::UnixStream,
    /// Read but not yet answered.
    pub buffered: Vec<u8>,
}

/// Where the connections go at a handover, and the connector's task tracker (done once every
/// connection was handed over or ended). Inactive, a stop closes the connections as usual.
#[derive(Debug, Clone)]
pub struct Handoff(Arc<HandoffInner>);

#[derive(Debug)]
struct HandoffInner {
    active: AtomicBool,
    to: mpsc::UnboundedSender<Handed>,
    from: Mutex<Option<mpsc::UnboundedReceiver<Handed>>>,
    tracker: TaskTracker,
}

impl Default for Handoff {
    fn default() -> Handoff {
        let (to, from) = mpsc::unbounded_channel();
        Handoff(Arc::new(HandoffInner {
            active: AtomicBool::new(false),
            to,
            from: Mutex::new(Some(from)),
            tracker: TaskTracker::new(),
        }))
    }
}

impl Handoff {
    /// From now on a stop hands the connections over instead of closing them.
    pub(crate) fn activate(&self) {
        self.0.active.store(true, Ordering::SeqCst);
    }

    /// Back to closing them (the successor failed).
    pub(crate) fn deactivate(&self) {
        self.0.active.store(false, Ordering::SeqCst);
    }

    fn active(&self) -> bool {
        self.0.active.load(Ordering::SeqCst)
    }

    /// The handed connections, once.
    pub(crate) fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Handed>> {
        self.0.from.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Resolves once the connector stopped and every connection task ended.
    pub(crate) async fn finished(&self) {
        self.0.tracker.wait().await;
    }
}

/// Binds `path` with permissions `mode`, replacing a stale socket file. Must run inside a tokio
/// runtime.
pub fn bind(path: &Path, mode: u32) -> Result<Bound, BindError> {
    let io_error = |what, source| BindError::Io { what, path: path.to_path_buf(), source };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => return Err(BindError::NotASocket(path.to_path_buf())),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse(path.to_path_buf())),
            Err(_) => {
                tracing::info!(path = %path.display(), "replacing a stale socket file");
                std::fs::remove_file(path).map_err(|e| io_error("remove the stale socket", e))?;
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("inspect", e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| io_error("bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_error("set the permissions of", e))?;
    let meta = std::fs::metadata(path).map_err(|e| io_error("inspect", e))?;
    Ok(Bound { listener, path: path.to_path_buf(), inode: (meta.dev(), meta.ino()), owned: true })
}

/// Serves the connector until `shutdown`, with the connections `adopted` from the resolver this
/// one took over from; then stops accepting, lets connections finish their current call for up
/// to [`SHUTDOWN_GRACE`](crate::server::SHUTDOWN_GRACE) (or hands them to `handoff` at their
/// next request boundary when it is active), and removes the socket file if it is still ours.
pub async fn serve(
    bound: Bound,
    backend: Backend,
    max_line: usize,
    shutdown: CancellationToken,
    handoff: Handoff,
    mut adopted: Option<mpsc::UnboundedReceiver<Handed>>,
) {
    let Bound { listener, path, inode, owned } = bound;
    let tracker = handoff.0.tracker.clone();
    loop {
        let (stream, buffered) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => (stream, Vec::new()),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(handed) = async { adopted.as_mut()?.recv().await }, if adopted.is_some() => {
                match handed.stream.set_nonblocking(true).and_then(|()| UnixStream::from_std(handed.stream)) {
                    Ok(stream) => (stream, handed.buffered),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot adopt a handed-over connection");
                        continue;
                    }
                }
            }
        };
        let connection =
            Connection { backend: backend.clone(), max_line, shutdown: shutdown.clone(), handoff: handoff.clone() };
        tracker.spawn(connection.serve(stream, buffered));
    }
    drop(listener);
    let ours = owned && !handoff.active() && std::fs::metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == inode);
    if ours && let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove the socket file");
    }
    crate::server::finish_connections(tracker).await;
}

/// What each connection task needs.
struct Connection {
    backend: Backend,
    max_line: usize,
    shutdown: CancellationToken,
    handoff: Handoff,
}

impl Connection {
    /// One PowerDNS connection: a call per line, a reply per call, in order. `buffered` is what
    /// the previous resolver had already read from it.
    async fn serve(self, stream: UnixStream, buffered: Vec<u8>) {
        let Connection { backend, max_line, shutdown, handoff } = self;
        let (read, mut write) = stream.into_split();
        let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), max_line);
        let mut lines = FramedRead::with_capacity(read, codec, 4096);
        lines.read_buffer_mut().extend_from_slice(&buffered);
        let mut out = Vec::with_capacity(1024);
        loop {
            let line = tokio::select! {
                // Between calls: nothing is lost by stopping here, or by handing the connection
                // over with what was read of the next call.
                _ = shutdown.cancelled() => {
                    if handoff.active() {
                        let buffered = lines.read_buffer().to_vec();
                        let handed = lines.into_inner().reunite(write).map_err(|e| io::Error::other(e.to_string())).and_then(UnixStream::into_std);
                        match handed {
                            Ok(stream) => {
                                let _ = handoff.0.to.send(Handed { stream, buffered });
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot hand over a connection"),
                        }
                    }
                    return;
                }
                line = lines.next() => line,
            };
            let request = match line {
                None => return,
                Some(Ok(request)) => request,
                Some(Err(AnyDelimiterCodecError::MaxChunkLengthExceeded)) => {
                    tracing::warn!(max_line, "request line over the bound; closing the connection");
                    crate::pdns::reply::error(&mut out, &format!("request line over {max_line} bytes refused"));
                    out.push(b'\n');
                    let _ = write.write_all(&out).await;
                    let _ = write.shutdown().await;
                    // Closing with the rest of the line unread would reset the connection and lose
                    // the reply: read and drop what the peer still sends, for a moment.
                    let mut read = lines.into_inner();
                    let mut sink = [0u8; 4096];
                    let _ = tokio::time::timeout(DRAIN_TIME, async {
                        while matches!(read.read(&mut sink).await, Ok(n) if n > 0) {}
                    })
                    .await;
                    return;
                }
                Some(Err(AnyDelimiterCodecError::Io(e))) => {
                    tracing::debug!(error = %e, "connection ended with an error");
                    return;
                }
            };
            if request.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            backend.call(&request, &mut out);
            out.push(b'\n');
            if write.write_all(&out).await.is_err() {
                return;
            }
        }
    }
}
