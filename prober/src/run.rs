//! The prober process: checks every node, gossips its verdicts and whether it is impaired,
//! serves the admin API, and follows config reloads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use geolb_config::Config;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::admin::{AdminState, serve_admin};
use crate::check::SchedulerHandle;
use crate::check::{HttpChecker, NetChecker, TcpChecker, spawn_scheduler};
use crate::cluster::{Folded, fold_cluster};
use crate::drains::Drains;
use crate::gossip::keys::Role;
use crate::gossip::transport::{UdpDatagrams, unix_now_ms};
use crate::gossip::{GossipConfig, GossipHandle, spawn_gossip};
use crate::targets::{CANARY_PREFIX, failing, impaired, peer_down_share, targets, verdict};

/// Why the prober stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config has no `[prober]` or `[cluster]`.
    #[error("the config has no [{0}] table: a prober needs [prober] and [cluster]")]
    NotAProber(&'static str),
    /// Gossip could not start or died.
    #[error(transparent)]
    Gossip(#[from] crate::gossip::GossipError),
    /// The checks could not be set up.
    #[error(transparent)]
    Check(#[from] crate::check::CheckError),
    /// The admin API failed.
    #[error("admin API failed: {0}")]
    Admin(std::io::Error),
    /// Another process uses the state directory.
    #[error(transparent)]
    StateDir(#[from] crate::drains::StateDirInUse),
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
const FOLD_EVERY: Duration = Duration::from_secs(5);

/// Joins the gossip cluster of `config` as `role`, publishing the member's saved drains again.
pub async fn join(
    config: &Config,
    role: Role,
    id: &str,
    listen: std::net::SocketAddr,
    advertise: Option<std::net::SocketAddr>,
    region: String,
    drains: &Drains,
) -> Result<Arc<GossipHandle>, Error> {
    let cluster = config.cluster.clone().ok_or(Error::NotAProber("cluster"))?;
    let mut gc = GossipConfig::new(id, listen, cluster.id, cluster.key, role, region);
    gc.advertise = advertise.unwrap_or(listen);
    gc.seeds = cluster.seeds;
    gc.gossip_interval = cluster.gossip_interval;
    let gossip = Arc::new(spawn_gossip(gc, UdpDatagrams).await?);
    for (node, (at_ms, drained)) in drains.entries() {
        if let Err(e) = gossip.set_drain(&node, drained, at_ms).await {
            tracing::warn!(node = %node, error = %e, "cannot republish a saved drain");
        }
    }
    tracing::info!(addr = %gossip.listen_addr(), "gossip listening on {}", gossip.listen_addr());
    Ok(gossip)
}

/// Runs the prober until `shutdown`.
pub async fn run(
    config_path: PathBuf,
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let prober = config.prober.clone().ok_or(Error::NotAProber("prober"))?;
    let region = config.pop(&prober.pop).and_then(|p| p.region.clone()).unwrap_or_else(|| prober.pop.clone());
    let drains = Arc::new(Drains::open(&prober.state_dir)?);
    let gossip =
        join(&config, Role::Prober, &prober.id, prober.gossip_listen, prober.gossip_advertise, region, &drains).await?;
    let config = Arc::new(ArcSwap::from_pointee(config));

    // Metrics recorded as checks complete; the rest is read at scrape time.
    let registry = crate::metrics::registry("prober");
    let check_metrics = CheckMetrics::register(&registry);
    let reloads = Arc::new(crate::metrics::Reloads::default());
    let initial = targets(&config.load());
    if let Some(m) = &check_metrics {
        m.track(&initial);
    }

    // Checks: transitions go to the gossip (one key write per transition), in order.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
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
    let mut tasks = tokio::task::JoinSet::new();
    let share = prober.impaired_share;
    // The median share of Down verdicts among the other probers (f64 bits), for impairment.
    let peer_share = Arc::new(AtomicU64::new(0f64.to_bits()));
    {
        let gossip = gossip.clone();
        let scheduler = scheduler.clone();
        let shutdown = shutdown.clone();
        let peer_share = peer_share.clone();
        tasks.spawn(async move {
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
                    let peers = f64::from_bits(peer_share.load(Ordering::Relaxed));
                    gossip.set_impaired(is_impaired(&scheduler, share, peers)).await;
                }
                let rtt = scheduler
                    .state(&id)
                    .and_then(|s| s.last_rtt)
                    .map_or(0, |d| d.as_micros().min(u128::from(u32::MAX)) as u32);
                let encoded = verdict(&t, rtt).encode();
                if let Err(e) = gossip.set_verdict(&id, &encoded).await {
                    tracing::warn!(node = %id, error = %e, "cannot publish a verdict");
                }
            }
        });
    }
    // Impairment every second, and this member's view of the quorum (for /api/v1/state).
    let folded = Arc::new(std::sync::Mutex::new(Folded::default()));
    {
        let gossip = gossip.clone();
        let scheduler = scheduler.clone();
        let shutdown = shutdown.clone();
        let config = config.clone();
        let folded = folded.clone();
        let me = prober.id.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            let mut changes = gossip.watch();
            let mut was_impaired = false;
            let mut last_fold: Option<Instant> = None;
            // Checks completed so far, and since when that count has stood still.
            let (mut completed_before, mut still_since) = (0, Instant::now());
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                // Copying and folding every verdict of every prober is this task's whole cost:
                // do it when the gossip changed, else every FOLD_EVERY (for staleness and grace).
                if changes.has_changed().unwrap_or(false) || last_fold.is_none_or(|at| at.elapsed() >= FOLD_EVERY) {
                    changes.borrow_and_update();
                    last_fold = Some(Instant::now());
                    let view = gossip.view().await;
                    peer_share.store(peer_down_share(&view, &me).to_bits(), Ordering::Relaxed);
                    let mut folded = folded.lock().unwrap_or_else(|p| p.into_inner());
                    let next = fold_cluster(&view, &config.load(), &folded, unix_now_ms());
                    *folded = next;
                }
                // A prober whose checks stopped completing has no current verdicts: it abstains
                // (its gossip heartbeat alone would keep it fresh to its peers).
                let stats = scheduler.stats();
                if stats.completed_total != completed_before {
                    (completed_before, still_since) = (stats.completed_total, Instant::now());
                }
                let stalled = stats.targets > 0 && still_since.elapsed() >= config.load().quorum.stale_after;
                let peers = f64::from_bits(peer_share.load(Ordering::Relaxed));
                let now_impaired = stalled || is_impaired(&scheduler, share, peers);
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
        });
    }
    // Admin API.
    let metrics = {
        let (gossip, scheduler, folded, me) = (gossip.clone(), scheduler.clone(), folded.clone(), prober.id.clone());
        let reloads = reloads.clone();
        Arc::new(move || {
            let mut f = crate::metrics::Families::default();
            prober_families(&mut f, &scheduler, &me);
            f.reloads(&reloads);
            f.cluster(&folded.lock().unwrap_or_else(|p| p.into_inner()));
            f.gossip(&gossip.stats().snapshot());
            f.render(&registry)
        })
    };
    let admin = AdminState {
        gossip: gossip.clone(),
        config: config.clone(),
        folded,
        drains,
        drain_lock: Arc::default(),
        metrics,
    };
    tasks.spawn(serve_admin(listeners.admin, admin, shutdown.clone()));
    // Reloads: new targets keep the state of unchanged ones.
    {
        let gossip = gossip.clone();
        let shutdown = shutdown.clone();
        let config = config.clone();
        let scheduler = scheduler.clone();
        tasks.spawn(async move {
            // The config and the admin token's file (a new token takes effect at once).
            let watched = |c: &Config| [config_path.clone()].into_iter().chain(c.admin.token_file.clone()).collect();
            let mut watcher = geolb_config::watch::ConfigWatcher::new(watched(&config.load()));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = watcher.next() => {}
                }
                match geolb_config::load(&config_path) {
                    Ok(new) => {
                        if let (Some(old), Some(now)) = (config.load().prober.as_ref(), new.prober.as_ref()) {
                            let waiting = old.changed_keys(now);
                            if !waiting.is_empty() {
                                tracing::warn!(keys = ?waiting, "changes to [prober] take effect at the next restart");
                            }
                        }
                        let next = targets(&new);
                        if let Some(m) = &check_metrics {
                            m.track(&next);
                        }
                        let summary = scheduler.update(next);
                        tracing::info!(?summary, "reloaded");
                        reloads.record(true);
                        // Withdraw the verdicts on nodes that left the config.
                        for gone in config.load().nodes.iter().filter(|n| new.node(n.id.as_str()).is_none()) {
                            gossip.remove_verdict(gone.id.as_str()).await;
                        }
                        watcher.set_files(watched(&new));
                        config.store(Arc::new(new));
                    }
                    Err(e) => {
                        reloads.record(false);
                        tracing::error!(error = %e, "reload refused, keeping the running config");
                    }
                }
            }
        });
    }
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
        use crate::metrics::names;
        let checks = prometheus::IntCounterVec::new(
            prometheus::Opts::new(names::PROBER_CHECKS_TOTAL, "Checks this prober completed, by node and result"),
            &["node", "result"],
        );
        let duration = crate::metrics::histogram(
            registry,
            names::PROBER_CHECK_DURATION_SECONDS,
            "Duration of this prober's checks (a timed-out check counts as its timeout)",
            vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
        )?;
        match checks {
            Ok(checks) => {
                crate::metrics::register(registry, checks.clone());
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
fn prober_families(f: &mut crate::metrics::Families, scheduler: &SchedulerHandle, me: &str) {
    use crate::metrics::names;
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
            .filter(|f| f.name() == crate::metrics::names::PROBER_CHECKS_TOTAL)
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
