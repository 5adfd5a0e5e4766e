//! geolb-resolver: answers PowerDNS remote-backend lookups with the nearest healthy CDN node.
//!
//! # Layout
//! * [`server`]: the connectors PowerDNS calls, HTTP ([`server::http`]) and unix socket
//!   ([`server::unix`]), and the dispatch of each call ([`server::Backend`]).
//! * [`pdns`]: the remote-backend protocol, pure: [`pdns::parse`] a call, [`pdns::reply`].
//! * [`engine`]: one immutable snapshot of everything a lookup needs, and the lookup itself
//!   (place → select → render).
//! * [`select`]: pure selection (nearest PoP with a usable node, tie band, weighted stable pick).
//! * [`locate`]: client location (overrides, GeoIP, default). [`geoip`]: the GeoIP databases.
//! * [`zones`]: the BIND zone files whose records geolb answers beside its own; [`transfer`]:
//!   zones followed from their hidden primary (SOA polls, NOTIFY, IXFR/AXFR, TSIG).
//! * [`state`]: loading all of the above from the config, and reloading it.
//! * [`health`]: the health the resolver answers from, saved across restarts; [`observer`]:
//!   following the cluster's fold into it. [`metrics`]: the resolver's families.
//!
//! * [`handover`]: upgrades that hand the listeners and the live PowerDNS connections to the
//!   next process.
//!
//! [`run`] ties them together on pre-bound listeners, so tests bind port 0: [`prepare`] loads
//! everything, [`serve`] serves it (a new process of an upgrade takes the listeners over between
//! the two).

pub mod engine;
pub mod geoip;
pub mod handover;
pub mod health;
mod locate;
mod metrics;
mod observer;
pub mod pdns;
pub mod select;
pub mod server;
pub mod state;
pub mod transfer;
pub mod zones;

use std::sync::Arc;
use std::time::Duration;

use geolb_member::admin::{AdminState, serve_admin};
use geolb_member::cluster::{ClusterHealth, Follower};
use geolb_member::drains::Drains;
use geolb_member::fleet::ConfigSource;
use geolb_member::gossip::keys::Role;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::Shared;

/// Errors that stop the resolver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config could not be loaded.
    #[error(transparent)]
    Config(#[from] geolb_config::ConfigError),
    /// A task failed.
    #[error("resolver task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Joining the gossip failed.
    #[error(transparent)]
    Gossip(#[from] geolb_member::JoinError),
    /// The gossip task stopped while serving: exit non-zero so the service manager restarts us.
    #[error("gossip stopped: {0}")]
    GossipStopped(String),
}

/// How long a resolver that took over waits for the old one to leave the gossip port and the
/// state directory.
const JOIN_AFTER_TAKEOVER: Duration = Duration::from_secs(15);

/// Sockets the resolver serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// The HTTP remote-backend connector.
    pub http: TcpListener,
    /// The unix-socket remote-backend connector, when configured ([`server::unix::bind`]).
    pub unix: Option<server::unix::Bound>,
    /// The admin API (only with `[member]`: it shows and changes the cluster's state).
    pub admin: Option<TcpListener>,
    /// The NOTIFY listener (`[resolver] notify_listen`), for zones from a primary.
    pub notify: Option<tokio::net::UdpSocket>,
    /// Where a successor takes these listeners over at an upgrade ([`handover`]).
    pub handover: Option<handover::HandoverListener>,
    /// Set when they were taken over from a running resolver: the rest of that exchange (its
    /// live connections).
    pub takeover: Option<handover::Continuation>,
}

impl Listeners {
    /// Listeners bound by the caller, with no handover.
    pub fn bound(http: TcpListener, unix: Option<server::unix::Bound>) -> Listeners {
        Listeners { http, unix, admin: None, notify: None, handover: None, takeover: None }
    }

    /// Copies of the listening sockets, for a successor at an upgrade.
    fn offer(&self, handoff: &server::unix::Handoff) -> std::io::Result<handover::Offer> {
        use std::os::fd::AsFd;
        Ok(handover::Offer {
            http: self.http.as_fd().try_clone_to_owned()?,
            unix: match &self.unix {
                Some(u) => Some((u.share()?, u.path().to_path_buf(), u.owned())),
                None => None,
            },
            admin: self.admin.as_ref().map(|a| a.as_fd().try_clone_to_owned()).transpose()?,
            notify: self.notify.as_ref().map(|n| n.as_fd().try_clone_to_owned()).transpose()?,
            handoff: handoff.clone(),
        })
    }
}

/// Runs the resolver until `shutdown` is cancelled.
///
/// The source's local file is watched (with every zone file but the copies from primaries, GeoIP database and
/// admin token file it names) and
/// reloaded on change, on a new fleet document, or on [`state::Shared::reload`]; an invalid new config is refused
/// and the old one kept.
pub async fn run(
    source: Arc<ConfigSource>,
    config: geolb_config::Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    serve(prepare(source, config).await, listeners, shutdown).await
}

/// A resolver loaded and ready to serve: GeoIP, zones and the saved view.
#[derive(Debug)]
pub struct Prepared {
    shared: Arc<Shared>,
    source: Arc<ConfigSource>,
}

impl Prepared {
    /// The config it was loaded with.
    pub fn config(&self) -> Arc<geolb_config::Config> {
        self.shared.config()
    }
}

/// Loads everything [`serve`] answers from.
pub async fn prepare(source: Arc<ConfigSource>, config: geolb_config::Config) -> Prepared {
    let shared = Arc::new(Shared::start(source.clone(), config).await);
    source.applied(&shared.config());
    Prepared { shared, source }
}

/// Serves a [`Prepared`] resolver on `listeners` until `shutdown` is cancelled, or until a
/// successor took everything over ([`handover`]).
pub async fn serve(prepared: Prepared, mut listeners: Listeners, shutdown: CancellationToken) -> Result<(), Error> {
    let Prepared { shared, source } = prepared;
    let taken_over = listeners.takeover.take();
    let taken_over_flag = taken_over.is_some();
    if taken_over.is_some() {
        // The old process kept folding the gossip while this one loaded.
        let refreshed = tokio::task::spawn_blocking({
            let shared = shared.clone();
            move || shared.refresh_view()
        })
        .await;
        if matches!(refreshed, Ok(true)) {
            tracing::info!("took over the health view the old resolver saved last");
        }
    }
    let handoff = server::unix::Handoff::default();
    let offer = match listeners.handover.take() {
        Some(listener) => match listeners.offer(&handoff) {
            Ok(offer) => Some((listener, offer)),
            Err(e) => {
                tracing::error!(error = %e, "cannot copy the listening sockets: upgrades will not hand them over");
                None
            }
        },
        None => None,
    };
    let registry = geolb_member::metrics::registry("resolver");
    let latency = metrics::latency_histogram(&registry);
    metrics::distance_histogram(&registry, &shared.counters);
    let http_connections = geolb_member::listener::ConnectionMetrics::register(&registry, "http");
    let admin_connections =
        listeners.admin.as_ref().map(|_| geolb_member::listener::ConnectionMetrics::register(&registry, "admin"));
    // The cluster's fold and gossip counters, once the resolver joins as a member.
    let member_state: Arc<std::sync::OnceLock<metrics::MemberState>> = Arc::default();
    let render: Arc<dyn Fn() -> String + Send + Sync> = {
        let (shared, member_state) = (shared.clone(), member_state.clone());
        Arc::new(move || metrics::render(&registry, &shared, member_state.get()))
    };
    let backend = server::Backend { engine: shared.engine.clone(), latency };
    let http_state = server::http::HttpState {
        backend: backend.clone(),
        max_body: shared.max_request_bytes(),
        metrics: Some(render.clone()),
        limits: shared.config().resolver.limits,
        connections: http_connections,
    };
    if let Ok(addr) = listeners.http.local_addr() {
        tracing::info!("listening on http://{addr}/dns");
    }
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(server::http::serve(listeners.http, http_state, shutdown.clone()));
    let (adopt, adopted) = tokio::sync::mpsc::unbounded_channel();
    if let Some(unix) = listeners.unix {
        tracing::info!("listening on unix:{}", unix.path().display());
        tasks.spawn(server::unix::serve(
            unix,
            backend,
            shared.max_request_bytes(),
            shutdown.clone(),
            handoff,
            Some(adopted),
        ));
    }
    if let Some((listener, offer)) = offer {
        tasks.spawn(handover::serve(listener, offer, shutdown.clone()));
    }
    if let Some(continuation) = taken_over {
        // systemd follows the new process from here (NotifyAccess=all in the unit).
        let _ = sd_notify::notify(&[sd_notify::NotifyState::MainPid(std::process::id())]);
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            continuation.serving(adopt).await;
            // Done taking over; a finished task would stop the resolver.
            shutdown.cancelled().await;
        });
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    // Before the watcher starts: it creates the directories the transferred copies go to.
    transfer::spawn(&shared, listeners.notify, &mut tasks, &shutdown);
    tasks.spawn(geolb_member::process::reload_on_change(
        shared.watched_files(),
        source.reload_wanted(),
        shutdown.clone(),
        {
            let shared = shared.clone();
            move || {
                let shared = shared.clone();
                async move {
                    let _ = shared.reload().await;
                    shared.watched_files()
                }
            }
        },
    ));
    let gossip_failure: Arc<std::sync::OnceLock<String>> = Arc::default();
    let taken_over_member = taken_over_flag;
    let member = shared.config().member.clone();
    if let Some(member) = member {
        // Join the gossip as an observer: the view follows the probers' quorum from now on.
        let config = shared.config();
        // After a takeover the old process still holds the gossip port and the state directory
        // for a moment: retry until it is gone (answers are served meanwhile).
        let deadline =
            tokio::time::Instant::now() + if taken_over_member { JOIN_AFTER_TAKEOVER } else { Duration::ZERO };
        let (drains, gossip) = loop {
            let joined = async {
                let drains = Arc::new(Drains::open(&member.state_dir).map_err(geolb_member::JoinError::from)?);
                let gossip = geolb_member::join(
                    &config,
                    Role::Observer,
                    &member.id,
                    member.gossip_listen,
                    member.gossip_advertise,
                    "-".to_owned(),
                    &drains,
                )
                .await?;
                Ok::<_, geolb_member::JoinError>((drains, gossip))
            };
            match joined.await {
                Ok(joined) => break joined,
                Err(e) if tokio::time::Instant::now() < deadline && !shutdown.is_cancelled() => {
                    tracing::debug!(error = %e, "the old resolver still holds the gossip; retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let config = Arc::new(arc_swap::ArcSwap::new(config));
        let health = Arc::new(std::sync::Mutex::new(ClusterHealth::default()));
        let _ = member_state.set(metrics::MemberState { gossip: gossip.clone(), health: health.clone() });
        let follower = Follower::new(gossip.clone(), health.clone(), Duration::ZERO, observer::REFOLD);
        tasks.spawn(observer::observe(shared.clone(), follower, config.clone(), shutdown.clone()));
        let mut admin_addr = None;
        if let Some(admin) = listeners.admin {
            let advertise = member.gossip_advertise.unwrap_or(member.gossip_listen);
            admin_addr = admin.local_addr().ok().map(|a| geolb_member::fleet::advertised(a, advertise));
            let state = AdminState {
                gossip: gossip.clone(),
                config: config.clone(),
                health,
                drains,
                drain_lock: Arc::default(),
                metrics: render.clone(),
                source: source.clone(),
                extension: Some(Arc::new(transfer::AdminZones(shared.transfers.clone()))),
            };
            tasks.spawn(serve_admin(admin, state, admin_connections.unwrap_or_default(), shutdown.clone()));
        }
        tasks.spawn(geolb_member::fleet::follow(source.clone(), gossip.clone(), config, admin_addr, shutdown.clone()));
        let termination = gossip.termination();
        let shutdown = shutdown.clone();
        let gossip_failure = gossip_failure.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                res = termination => {
                    // The gossip task died: stop with an error, so the service manager restarts us.
                    tracing::error!(result = ?res, "gossip stopped");
                    let why = match res {
                        Ok(()) => "ended".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    let _ = gossip_failure.set(why);
                    shutdown.cancel();
                }
            }
        });
    }
    while let Some(res) = tasks.join_next().await {
        res?;
        // Any task ending means shutdown (they only end when cancelled).
        shutdown.cancel();
    }
    match gossip_failure.get() {
        Some(why) => Err(Error::GossipStopped(why.clone())),
        None => Ok(()),
    }
}
