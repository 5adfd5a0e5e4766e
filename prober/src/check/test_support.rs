//! Test servers on 127.0.0.1 for the check tests: HTTP (hyper) and HTTPS (tokio-rustls with an
//! rcgen self-signed certificate), whose behaviour can be changed while they run, and which record
//! what they saw (Host, SNI, path, connections, requests in flight).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HOST, USER_AGENT};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::Scheme;

/// How the server answers; replace it at runtime with [`TestServer::set`].
#[derive(Debug, Clone)]
pub(crate) struct Behaviour {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

impl Behaviour {
    pub(super) fn status(status: u16) -> Self {
        Behaviour { status, body: "ok".into(), delay: Duration::ZERO }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub path: String,
    pub sni: Option<String>,
}

#[derive(Debug)]
struct State {
    behaviour: Mutex<Behaviour>,
    seen: Mutex<Vec<Seen>>,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Cancelled by [`TestServer::close_connections`]: ends the connections open at that moment.
    kick: Mutex<CancellationToken>,
}

/// A running server; stops when dropped.
pub(crate) struct TestServer {
    pub addr: SocketAddr,
    pub scheme: Scheme,
    state: Arc<State>,
    _stop: DropGuard,
}

impl TestServer {
    pub(super) async fn http(behaviour: Behaviour) -> Self {
        Self::start(behaviour, None).await
    }

    /// An HTTPS server with a self-signed certificate for `name`; also returns the certificate.
    pub(super) async fn https(name: &str, behaviour: Behaviour) -> (Self, CertificateDer<'static>) {
        let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("certificate");
        let cert = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server config");
        let server = Self::start(behaviour, Some(TlsAcceptor::from(Arc::new(config)))).await;
        (server, cert)
    }

    async fn start(behaviour: Behaviour, tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            behaviour: Mutex::new(behaviour),
            seen: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            kick: Mutex::new(CancellationToken::new()),
        });
        let stop = CancellationToken::new();
        let scheme = if tls.is_some() { Scheme::Https } else { Scheme::Http };
        let (task_state, task_stop) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = task_stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                task_state.connections.fetch_add(1, Ordering::SeqCst);
                let kick = task_state.kick.lock().expect("lock").clone();
                let stop = CancellationToken::new();
                let (state, tls) = (task_state.clone(), tls.clone());
                let ended = stop.clone();
                let server_stop = task_stop.clone();
                // A connection ends when the server stops or its connections are closed.
                tokio::spawn(async move {
                    tokio::select! {
                        _ = server_stop.cancelled() => {}
                        _ = kick.cancelled() => {}
                    }
                    ended.cancel();
                });
                tokio::spawn(async move {
                    match tls {
                        None => serve(stream, None, state, stop).await,
                        Some(acceptor) => {
                            // A failed handshake (client rejected our certificate) just ends here.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let sni = stream.get_ref().1.server_name().map(str::to_owned);
                                serve(stream, sni, state, stop).await;
                            }
                        }
                    }
                });
            }
        });
        TestServer { addr, scheme, state, _stop: stop.drop_guard() }
    }

    pub(super) fn set(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().expect("lock") = behaviour;
    }

    pub(super) fn requests(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("lock").clone()
    }

    /// Closes every connection open now, without a word (as a node's idle timeout does).
    pub(super) fn close_connections(&self) {
        let mut kick = self.state.kick.lock().expect("lock");
        kick.cancel();
        *kick = CancellationToken::new();
    }

    pub(super) fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// The most requests the server was handling at once.
    pub(super) fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

async fn serve<S>(stream: S, sni: Option<String>, state: Arc<State>, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let (state, sni) = (state.clone(), sni.clone());
        async move {
            let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            state.max_in_flight.fetch_max(now, Ordering::SeqCst);
            // Decrements also when hyper drops this future because the client went away.
            let _in_flight = InFlight(state.clone());
            let header = |name| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
                    .map(str::to_owned)
            };
            state.seen.lock().expect("lock").push(Seen {
                host: header(HOST),
                user_agent: header(USER_AGENT),
                path: request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                sni,
            });
            let behaviour = state.behaviour.lock().expect("lock").clone();
            tokio::time::sleep(behaviour.delay).await;
            let response = Response::builder()
                .status(behaviour.status)
                .body(Full::new(Bytes::from(behaviour.body)))
                .expect("response");
            Ok::<_, Infallible>(response)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = connection => {}
    }
}

struct InFlight(Arc<State>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An address on 127.0.0.1 where nothing listens (bound, read, then closed).
pub(crate) async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}
