//! The prober process: checks every node, gossips its verdicts and whether it is impaired,
//! serves the admin API, and follows config reloads.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use geolb_config::Config;
use geolb_member::admin::{AdminState, serve_admin};
use geolb_member::cluster::{ClusterHealth, Follower};
use geolb_member::drains::Drains;
use geolb_member::fleet::{ConfigSource, advertised};
use geolb_member::gossip::GossipHandle;
use geolb_member::gossip::keys::Role;
use geolb_member::metrics::{Families, Reloads};
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::check::{HttpChecker, NetChecker, SchedulerHandle, TcpChecker, Transition, spawn_scheduler};
use crate::targets::{CANARY_PREFIX, failing, impaired, peer_down_share, targets, verdict};

/// Why the prober stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config has no `[prober]`.
    #[error("the config has no [prober] table: a prober needs [prober] and [cluster]")]
    NotAProber,
    /// Joining the cluster failed.
    #[error(transparent)]
    Join(#[from] geolb_member::JoinError),
    /// The gossip task died.
    #[error(transparent)]
    Gossip(#[from] geolb_member::gossip::GossipError),
    /// The checks could not be set up.
    #[error(transparent)]
    Check(#[from] crate::check::CheckError),
}

/// Sockets bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// The admin API.
    pub admin: TcpListener,
}

/// Time between impairment checks.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Longest time between two folds of the cluster view in a prober when the gossip is quiet.
/// Copying and folding every verdict of every prober is the follower's whole cost: a prober
/// folds at most once per [`HEARTBEAT`], and else every `FOLD_EVERY` (for staleness and grace).
const FOLD_EVERY: Duration = Duration::from_secs(5);

/// The median share of Down verdicts among the other probers (f64 bits), for impairment.
#[derive(Debug, Default)]
struct PeerShare(AtomicU64);

impl PeerShare {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, share: f64) {
        self.0.store(share.to_bits(), Ordering::Relaxed);
    }
}

/// Runs the prober until `shutdown`.
pub async fn run(
    source: Arc<ConfigSource>,
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let prober = config.prober.clone().ok_or(Error::NotAProber)?;
    let region = config.pop(&prober.pop).and_then(|p| p.region.clone()).unwrap_or_else(|| prober.pop.clone());
    let drains = Arc::new(Drains::open(&prober.state_dir).map_err(geolb_member::JoinError::from)?);
    let gossip = geolb_member::join(
        &config,
        Role::Prober,
        &prober.id,
        prober.gossip_listen,
        prober.gossip_advertise,
        region,
        &drains,
    )
    .await?;
    let config = Arc::new(ArcSwap::from_pointee(config));

    // Metrics recorded as checks complete; the rest is read at scrape time.
    let registry = geolb_member::metrics::registry("prober");
    let check_metrics = CheckMetrics::register(&registry);
    let reloads = Arc::new(Reloads::default());
    let initial = targets(&config.load());
    if let Some(m) = &check_metrics {
        m.track(&initial);
    }

    // Checks: transitions go to the gossip (one key write per transition), in order.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let checker = Arc::new(NetChecker::new(HttpChecker::new()?, TcpChecker::new()));
    let recorder = check_metrics.clone();
    let (scheduler, scheduler_task) = spawn_scheduler(
        initial,
        checker,
        prober.max_in_flight,
        move |id, t| {
            // The receiver lives as long as the process; a send can only fail at shutdown.
            let _ = tx.send((id, t));
        },
        move |id, outcome| {
            if let Some(m) = &recorder {
                m.record(&id, outcome);
            }
        },
        shutdown.clone(),
    );
    let share = prober.impaired_share;
    let peer_share = Arc::new(PeerShare::default());
    let health = Arc::new(Mutex::new(ClusterHealth::default()));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(publish_verdicts(rx, gossip.clone(), scheduler.clone(), share, peer_share.clone(), shutdown.clone()));
    let follower = Follower::new(gossip.clone(), health.clone(), HEARTBEAT, FOLD_EVERY);
    tasks.spawn(follow_cluster(follower, config.clone(), peer_share.clone(), prober.id.clone(), shutdown.clone()));
    tasks.spawn(watch_impairment(
        gossip.clone(),
        scheduler.clone(),
        config.clone(),
        share,
        peer_share,
        shutdown.clone(),
    ));
    // Admin API.
    let connections = geolb_member::listener::ConnectionMetrics::register(&registry, "admin");
    let metrics = {
        let (gossip, scheduler, health, me) = (gossip.clone(), scheduler.clone(), health.clone(), prober.id.clone());
        let (reloads, source) = (reloads.clone(), source.clone());
        Arc::new(move || {
            let mut f = Families::default();
            prober_families(&mut f, &scheduler, &me);
            f.reloads(&reloads);
            f.fleet(&source);
            f.cluster(&health.lock().unwrap_or_else(|p| p.into_inner()));
            f.gossip(&gossip.stats().snapshot());
            f.render(&registry)
        })
    };
    let admin = AdminState {
        gossip: gossip.clone(),
        config: config.clone(),
        health,
        drains,
        drain_lock: Arc::default(),
        metrics,
        source: source.clone(),
        extension: None,
    };
    let admin_addr = listeners
        .admin
        .local_addr()
        .ok()
        .map(|a| advertised(a, prober.gossip_advertise.unwrap_or(prober.gossip_listen)));
    tasks.spawn(serve_admin(listeners.admin, admin, connections, shutdown.clone()));
    tasks.spawn(geolb_member::fleet::follow(
        source.clone(),
        gossip.clone(),
        config.clone(),
        admin_addr,
        shutdown.clone(),
    ));
    source.applied(&config.load());
    let wake = source.reload_wanted();
    let reloader =
        Reloader { source, config, scheduler: scheduler.clone(), gossip: gossip.clone(), check_metrics, reloads };
    let files = reloader.watched(&reloader.config.load());
    tasks.spawn(geolb_member::process::reload_on_change(files, wake, shutdown.clone(), move || {
        let reloader = reloader.clone();
        async move { reloader.reload().await }
    }));
    let termination = gossip.termination();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        res = termination => {
            // The gossip task died: exit so the service manager restarts us.
            shutdown.cancel();
            res?;
        }
    }
    // Every task ends on `shutdown`; don't let a stuck one keep the process alive.
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
        let _ = scheduler_task.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("tasks still running after the shutdown grace; stopping anyway");
    }
    Ok(())
}

/// Publishes each verdict transition of the checks into the gossip, in order. A Down is preceded
/// by this prober's impairment, so that peers read the two in the order that explains them.
async fn publish_verdicts(
    mut rx: UnboundedReceiver<(Arc<str>, Transition)>,
    gossip: Arc<GossipHandle>,
    scheduler: SchedulerHandle,
    share: f64,
    peer_share: Arc<PeerShare>,
    shutdown: CancellationToken,
) {
    loop {
        // The scheduler holds the sender: end on shutdown, not on a closed channel.
        let (id, t) = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = rx.recv() => match next {
                Some(next) => next,
                None => return,
            },
        };
        if id.starts_with(CANARY_PREFIX) {
            continue;
        }
        if !t.up {
            // Say we are impaired *before* the Down it would explain: peers apply one
            // member's keys in the order they were written.
            gossip.set_impaired(is_impaired(&scheduler, share, peer_share.get())).await;
        }
        let rtt =
            scheduler.state(&id).and_then(|s| s.last_rtt).map_or(0, |d| d.as_micros().min(u128::from(u32::MAX)) as u32);
        let encoded = verdict(&t, rtt).encode();
        if let Err(e) = gossip.set_verdict(&id, &encoded).await {
            tracing::warn!(node = %id, error = %e, "cannot publish a verdict");
        }
    }
}

/// Folds the cluster for this member's `/api/v1/state` and metrics, and keeps the other
/// probers' share of Down verdicts for impairment.
async fn follow_cluster(
    mut follower: Follower,
    config: Arc<ArcSwap<Config>>,
    peer_share: Arc<PeerShare>,
    me: String,
    shutdown: CancellationToken,
) {
    while let Some((snapshot, health)) = follower.next(|| config.load_full(), &shutdown).await {
        peer_share.set(peer_down_share(&snapshot, &me));
        follower.publish(health);
    }
}

/// Decides every [`HEARTBEAT`] whether this prober is impaired, and says so in the gossip.
async fn watch_impairment(
    gossip: Arc<GossipHandle>,
    scheduler: SchedulerHandle,
    config: Arc<ArcSwap<Config>>,
    share: f64,
    peer_share: Arc<PeerShare>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut was_impaired = false;
    // Checks completed so far, and since when that count has stood still.
    let (mut completed_before, mut still_since) = (0, Instant::now());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A prober whose checks stopped completing has no current verdicts: it abstains
        // (its gossip heartbeat alone would keep it fresh to its peers).
        let stats = scheduler.stats();
        if stats.completed_total != completed_before {
            (completed_before, still_since) = (stats.completed_total, Instant::now());
        }
        let stalled = stats.targets > 0 && still_since.elapsed() >= config.load().quorum.stale_after;
        let now_impaired = stalled || is_impaired(&scheduler, share, peer_share.get());
        if now_impaired != was_impaired {
            tracing::warn!(
                impaired = now_impaired,
                checks_stalled = stalled,
                "prober impairment changed: an impaired prober abstains from voting"
            );
            was_impaired = now_impaired;
        }
        gossip.set_impaired(now_impaired).await;
    }
}

/// What a reload changes: the config, the checks (new targets keep the state of unchanged ones),
/// the verdicts of nodes that left, and the check series.
#[derive(Clone)]
struct Reloader {
    source: Arc<ConfigSource>,
    config: Arc<ArcSwap<Config>>,
    scheduler: SchedulerHandle,
    gossip: Arc<GossipHandle>,
    check_metrics: Option<CheckMetrics>,
    reloads: Arc<Reloads>,
}

impl Reloader {
    /// The config and the admin token's file (a new token takes effect at once).
    fn watched(&self, config: &Config) -> Vec<PathBuf> {
        [self.source.path().to_path_buf()].into_iter().chain(config.admin.token_files().cloned()).collect()
    }

    /// Loads the config again and applies it; a config that does not load is refused and the
    /// running one kept. Returns the files to watch next.
    async fn reload(&self) -> Vec<PathBuf> {
        let new = match self.source.load() {
            Ok(new) => new,
            Err(e) => {
                self.reloads.record(false);
                tracing::error!(error = %e, "reload refused, keeping the running config");
                self.source.refused(&e.to_string());
                return self.watched(&self.config.load());
            }
        };
        let old = self.config.load_full();
        if let (Some(old), Some(now)) = (old.prober.as_ref(), new.prober.as_ref()) {
            let waiting = old.changed_keys(now);
            if !waiting.is_empty() {
                tracing::warn!(keys = ?waiting, "changes to [prober] take effect at the next restart");
            }
        }
        let next = targets(&new);
        if let Some(m) = &self.check_metrics {
            m.track(&next);
        }
        let summary = self.scheduler.update(next);
        tracing::info!(?summary, "reloaded");
        for revoked in new.admin.revoked_warnings() {
            tracing::warn!("{revoked}");
        }
        self.reloads.record(true);
        // Withdraw the verdicts on nodes that left the config.
        for gone in old.nodes.iter().filter(|n| new.node(n.id.as_str()).is_none()) {
            self.gossip.remove_verdict(gone.id.as_str()).await;
        }
        let files = self.watched(&new);
        self.source.applied(&new);
        self.config.store(Arc::new(new));
        files
    }
}

/// Time tasks get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn is_impaired(scheduler: &SchedulerHandle, share: f64, peer_share: f64) -> bool {
    let states: Vec<_> = scheduler.snapshot().into_iter().map(|(id, s)| (id, failing(&s))).collect();
    impaired(&states, share, peer_share)
}

/// The metrics a prober records as each check completes.
#[derive(Clone)]
struct CheckMetrics {
    checks: prometheus::IntCounterVec,
    duration: prometheus::Histogram,
}

impl CheckMetrics {
    fn register(registry: &prometheus::Registry) -> Option<CheckMetrics> {
        use geolb_member::metrics::names;
        let checks = prometheus::IntCounterVec::new(
            prometheus::Opts::new(names::PROBER_CHECKS_TOTAL, "Checks this prober completed, by node and result"),
            &["node", "result"],
        );
        let duration = geolb_member::metrics::histogram(
            registry,
            names::PROBER_CHECK_DURATION_SECONDS,
            "Duration of this prober's checks (a timed-out check counts as its timeout)",
            vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
        )?;
        match checks {
            Ok(checks) => {
                geolb_member::metrics::register(registry, checks.clone());
                Some(CheckMetrics { checks, duration })
            }
            // Only an invalid name fails, which the tests rule out.
            Err(e) => {
                tracing::error!(error = %e, "cannot create the check counters");
                None
            }
        }
    }

    /// Creates both result series of every node at 0, so that "failed checks" has data before
    /// the first failure, and drops the series of nodes that are no longer checked (a reload
    /// removed them).
    fn track(&self, targets: &[crate::check::Target]) {
        let checked: std::collections::HashSet<&str> =
            targets.iter().map(|t| &*t.id).filter(|id| !id.starts_with(crate::targets::CANARY_PREFIX)).collect();
        let gone: std::collections::BTreeSet<String> = prometheus::core::Collector::collect(&self.checks)
            .iter()
            .flat_map(|family| family.get_metric())
            .flat_map(|metric| metric.get_label())
            .filter(|label| label.name() == "node" && !checked.contains(label.value()))
            .map(|label| label.value().to_owned())
            .collect();
        for node in &gone {
            for result in ["up", "down"] {
                let _ = self.checks.remove_label_values(&[node, result]);
            }
        }
        for id in checked {
            for result in ["up", "down"] {
                let _ = self.checks.get_metric_with_label_values(&[id, result]);
            }
        }
    }

    fn record(&self, id: &str, outcome: &crate::check::CheckOutcome) {
        if id.starts_with(crate::targets::CANARY_PREFIX) {
            return;
        }
        let result = if outcome.is_up() { "up" } else { "down" };
        if let Ok(c) = self.checks.get_metric_with_label_values(&[id, result]) {
            c.inc();
        }
        self.duration.observe(outcome.rtt().as_secs_f64());
    }
}

/// The prober's own families read at scrape time: its verdicts and skipped checks.
fn prober_families(f: &mut Families, scheduler: &SchedulerHandle, me: &str) {
    use geolb_member::metrics::names;
    let mine: Vec<_> =
        scheduler.snapshot().into_iter().filter(|(id, _)| !id.starts_with(crate::targets::CANARY_PREFIX)).collect();
    f.gauge(
        names::PROBER_VERDICT_UP,
        "This prober's verdict per node: 1 up, 0 down (absent while undecided)",
        &["prober", "node"],
        mine.iter().filter_map(|(id, s)| Some((vec![me.to_owned(), id.to_string()], if s.up? { 1.0 } else { 0.0 }))),
    );
    f.gauge(
        names::PROBER_VERDICT_CHANGE_TIMESTAMP_SECONDS,
        "Unix time of the last change of this prober's verdict per node",
        &["prober", "node"],
        mine.iter().map(|(id, s)| (vec![me.to_owned(), id.to_string()], s.since_ms as f64 / 1000.0)),
    );
    f.counter(
        names::PROBER_CHECKS_SKIPPED_TOTAL,
        "Checks skipped because max_in_flight checks were running",
        &[],
        [(Vec::new(), scheduler.stats().skipped_total)],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node labels of `geolb_prober_checks_total`'s series.
    fn series(registry: &prometheus::Registry) -> Vec<String> {
        let mut nodes: Vec<String> = registry
            .gather()
            .iter()
            .filter(|f| f.name() == geolb_member::metrics::names::PROBER_CHECKS_TOTAL)
            .flat_map(|f| f.get_metric())
            .flat_map(|m| m.get_label())
            .filter(|l| l.name() == "node")
            .map(|l| l.value().to_owned())
            .collect();
        nodes.sort();
        nodes
    }

    #[test]
    fn check_series_follow_the_checked_nodes_across_reloads() {
        let registry = prometheus::Registry::new();
        let metrics = CheckMetrics::register(&registry).unwrap();
        let all = crate::targets::targets(&geolb_config::Config::for_test());
        assert!(all.len() >= 2, "the test config needs two nodes");
        metrics.track(&all);
        let mut want: Vec<String> = all.iter().flat_map(|t| [t.id.to_string(), t.id.to_string()]).collect();
        want.sort();
        assert_eq!(series(&registry), want, "both results of every node, before any check");

        // A reload that removes every node but the first drops the others' series.
        metrics.track(&all[..1]);
        assert_eq!(series(&registry), vec![all[0].id.to_string(); 2]);
    }
}
