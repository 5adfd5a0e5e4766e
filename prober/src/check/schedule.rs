//! From single checks to a verdict per target: the hysteresis state machine and the scheduler.
//!
//! * [`TargetState::observe`] is pure: a target becomes down after `fall` consecutive failures and
//!   up after `rise` consecutive successes. A new target has no verdict (`up == None`) until one of
//!   those runs happened, so a restart never reports "all up" before checking.
//! * [`spawn_scheduler`] runs one task per target. Each checks its target every `interval` ± jitter
//!   (the first check at a random point of the first interval, so thousands of targets loaded at
//!   once spread out), takes a permit from a semaphore sized `max_in_flight` first, and runs the
//!   check under its timeout. A check that cannot get a permit before it could no longer finish
//!   ahead of the next one is skipped and counted ([`SchedulerStats::skipped_total`]): each
//!   target waits for at most one permit, so nothing queues up.
//! * [`SchedulerHandle::update`] replaces the target set at runtime and keeps the state of targets
//!   whose check did not change.
//!
//! Not here: what a transition means (gossip, quorum, metrics): the caller's callbacks decide.
//! Transitions are logged here, once, at `info`.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{CheckOutcome, Checker, ConnSlot, Reason, Target, TargetId, Timing};

/// The shortest interval the scheduler runs, whatever a (not validated) target says.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// A target's verdict and the evidence behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetState {
    /// `Some(true)` up, `Some(false)` down, `None` not decided yet (fewer than `rise` successes or
    /// `fall` failures in a row since the target was added).
    pub up: Option<bool>,
    /// Successes in a row up to the last check.
    pub consecutive_ok: u32,
    /// Failures in a row up to the last check.
    pub consecutive_fail: u32,
    /// Unix milliseconds of the last transition, or of the target's creation while undecided.
    pub since_ms: u64,
    /// Unix milliseconds of the last completed check.
    pub last_check_ms: Option<u64>,
    /// Duration of the last completed check.
    pub last_rtt: Option<Duration>,
    /// Why the last check failed; `None` when it passed.
    pub last_reason: Option<Reason>,
}

/// A change of a target's verdict, returned by [`TargetState::observe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transition {
    /// The verdict before: `None` for a target's first verdict.
    pub from: Option<bool>,
    /// The new verdict: `true` up, `false` down.
    pub up: bool,
    /// Unix milliseconds of the check that caused it.
    pub at_ms: u64,
    /// For a transition to down, the last check's reason.
    pub reason: Option<Reason>,
}

impl TargetState {
    /// An undecided target, created at `now_ms`.
    pub(crate) fn new(now_ms: u64) -> Self {
        TargetState {
            up: None,
            consecutive_ok: 0,
            consecutive_fail: 0,
            since_ms: now_ms,
            last_check_ms: None,
            last_rtt: None,
            last_reason: None,
        }
    }

    /// Folds one check result in; returns the transition it caused, if any.
    ///
    /// Down after `fall` failures in a row, up after `rise` successes in a row, also for the first
    /// verdict. Thresholds of 0 count as 1.
    pub(crate) fn observe(&mut self, outcome: &CheckOutcome, rise: u32, fall: u32, now_ms: u64) -> Option<Transition> {
        self.last_check_ms = Some(now_ms);
        self.last_rtt = Some(outcome.rtt());
        self.last_reason = outcome.reason().cloned();
        let up = match outcome {
            CheckOutcome::Up { .. } => {
                self.consecutive_ok = self.consecutive_ok.saturating_add(1);
                self.consecutive_fail = 0;
                if self.up == Some(true) || self.consecutive_ok < rise.max(1) {
                    return None;
                }
                true
            }
            CheckOutcome::Down { .. } => {
                self.consecutive_fail = self.consecutive_fail.saturating_add(1);
                self.consecutive_ok = 0;
                if self.up == Some(false) || self.consecutive_fail < fall.max(1) {
                    return None;
                }
                false
            }
        };
        let from = self.up.replace(up);
        self.since_ms = now_ms;
        Some(Transition { from, up, at_ms: now_ms, reason: self.last_reason.clone() })
    }
}

/// Counters of a running scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SchedulerStats {
    /// Targets currently scheduled.
    pub targets: usize,
    /// Checks running right now.
    pub in_flight: usize,
    /// The cap on `in_flight`.
    pub max_in_flight: usize,
    /// Checks skipped since start because no permit was free in time (the prober is overloaded:
    /// raise `max_in_flight` or intervals).
    pub skipped_total: u64,
    /// Checks completed since start (any outcome): the prober publishes its heartbeat only while
    /// this grows, so a prober whose checks stalled goes stale to its peers.
    pub completed_total: u64,
}

/// What [`SchedulerHandle::update`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UpdateSummary {
    /// New ids, started undecided.
    pub added: usize,
    /// Same id and same check and timing: untouched.
    pub kept: usize,
    /// Same id and check, new timing: state kept, rescheduled.
    pub retimed: usize,
    /// Same id, different check: restarted undecided (the old verdict was about another check).
    pub replaced: usize,
    /// Ids no longer present: stopped, state dropped.
    pub removed: usize,
}

type TransitionFn = dyn Fn(TargetId, Transition) + Send + Sync;
type ResultFn = dyn Fn(TargetId, &CheckOutcome) + Send + Sync;

/// Controls a scheduler started by [`spawn_scheduler`]. Cheap to clone; the scheduler runs until
/// its shutdown token is cancelled, not until the handles are dropped.
#[derive(Clone)]
pub(crate) struct SchedulerHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SchedulerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerHandle").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

struct Shared {
    checker: Arc<dyn Checker>,
    permits: Semaphore,
    max_in_flight: usize,
    on_transition: Box<TransitionFn>,
    on_result: Box<ResultFn>,
    /// Never held across an `.await` or while calling the callbacks.
    slots: Mutex<HashMap<TargetId, Slot>>,
    next_generation: AtomicU64,
    skipped: AtomicU64,
    completed: AtomicU64,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    runtime: tokio::runtime::Handle,
}

struct Slot {
    target: Target,
    state: TargetState,
    /// Identifies the task that owns this slot; a replaced task's late result is dropped.
    generation: u64,
    stop: CancellationToken,
}

/// Starts checking `targets`; returns a handle to update and inspect them, and the scheduler's
/// task, which ends after `shutdown` is cancelled and every running check has stopped.
///
/// * `checker` runs the checks (usually a [`super::NetChecker`]).
/// * `max_in_flight` caps concurrent checks (at least 1).
/// * `on_transition` is called on every verdict change, including a target's first verdict.
/// * `on_result` is called after every completed check (for metrics), before `on_transition`.
///
/// Callbacks run on the target's task, outside any lock; they must be quick and must not panic
/// (a panic stops that target's checks). Targets should be [validated](Target::validate); the
/// scheduler clamps what it must (interval ≥ [`MIN_INTERVAL`], timeout ≤ interval). With
/// duplicate ids the last target wins. Must be called inside a tokio runtime.
pub(crate) fn spawn_scheduler<T, R>(
    targets: Vec<Target>,
    checker: Arc<dyn Checker>,
    max_in_flight: usize,
    on_transition: T,
    on_result: R,
    shutdown: CancellationToken,
) -> (SchedulerHandle, JoinHandle<()>)
where
    T: Fn(TargetId, Transition) + Send + Sync + 'static,
    R: Fn(TargetId, &CheckOutcome) + Send + Sync + 'static,
{
    let max_in_flight = max_in_flight.max(1);
    let shared = Arc::new(Shared {
        checker,
        permits: Semaphore::new(max_in_flight),
        max_in_flight,
        on_transition: Box::new(on_transition),
        on_result: Box::new(on_result),
        slots: Mutex::new(HashMap::new()),
        next_generation: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        tracker: TaskTracker::new(),
        shutdown: shutdown.clone(),
        runtime: tokio::runtime::Handle::current(),
    });
    let handle = SchedulerHandle { shared: shared.clone() };
    handle.update(targets);
    let join = tokio::spawn(async move {
        shutdown.cancelled().await;
        shared.tracker.close();
        shared.tracker.wait().await;
        tracing::debug!("check scheduler stopped");
    });
    (handle, join)
}

impl SchedulerHandle {
    /// Replaces the set of targets (config reload). A target with the same id and the same spec
    /// keeps its state (and, with the same timing, its schedule); see [`UpdateSummary`].
    pub(crate) fn update(&self, targets: Vec<Target>) -> UpdateSummary {
        let shared = &self.shared;
        let now_ms = unix_ms();
        let mut summary = UpdateSummary::default();
        let mut slots = lock(&shared.slots);
        let mut old = std::mem::take(&mut *slots);
        // With duplicate ids the last target wins.
        let wanted: HashMap<TargetId, Target> = targets.into_iter().map(|t| (t.id.clone(), t)).collect();
        for (id, target) in wanted {
            let previous = old.remove(&id);
            let state = match previous {
                Some(slot) if slot.target == target => {
                    summary.kept += 1;
                    slots.insert(id, slot);
                    continue;
                }
                Some(slot) => {
                    slot.stop.cancel();
                    if slot.target.spec == target.spec {
                        summary.retimed += 1;
                        slot.state
                    } else {
                        summary.replaced += 1;
                        TargetState::new(now_ms)
                    }
                }
                None => {
                    summary.added += 1;
                    TargetState::new(now_ms)
                }
            };
            let generation = shared.next_generation.fetch_add(1, Ordering::Relaxed);
            let stop = shared.shutdown.child_token();
            shared
                .tracker
                .spawn_on(run_target(shared.clone(), target.clone(), generation, stop.clone()), &shared.runtime);
            slots.insert(id, Slot { target, state, generation, stop });
        }
        for (_, slot) in old.drain() {
            slot.stop.cancel();
            summary.removed += 1;
        }
        drop(slots);
        tracing::debug!(?summary, "check targets updated");
        summary
    }

    /// Every target's current state, sorted by id.
    pub(crate) fn snapshot(&self) -> Vec<(TargetId, TargetState)> {
        let mut all: Vec<_> =
            lock(&self.shared.slots).iter().map(|(id, slot)| (id.clone(), slot.state.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// One target's current state.
    pub(crate) fn state(&self, id: &str) -> Option<TargetState> {
        lock(&self.shared.slots).get(id).map(|slot| slot.state.clone())
    }

    /// Current counters.
    pub(crate) fn stats(&self) -> SchedulerStats {
        let shared = &self.shared;
        SchedulerStats {
            targets: lock(&shared.slots).len(),
            in_flight: shared.max_in_flight.saturating_sub(shared.permits.available_permits()),
            max_in_flight: shared.max_in_flight,
            skipped_total: shared.skipped.load(Ordering::Relaxed),
            completed_total: shared.completed.load(Ordering::Relaxed),
        }
    }
}

/// One target's loop: wait for the next slot, get a permit, check, record, report.
async fn run_target(shared: Arc<Shared>, target: Target, generation: u64, stop: CancellationToken) {
    let timing = effective(target.timing);
    let mut next = Instant::now() + random_below(timing.interval);
    // The target's kept connection (HTTP(S)); closed when this task ends.
    let mut slot = ConnSlot::default();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let scheduled = next;
        next = scheduled + next_gap(&timing);
        // Start no later than this, so that the check ends before the next one is due.
        let start_by = next - timing.timeout;
        let permit = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            permit = tokio::time::timeout_at(start_by, shared.permits.acquire()) => permit,
        };
        let permit = match permit {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed.
            Ok(Err(_closed)) => return,
            Err(_elapsed) => {
                shared.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(target_id = %target.id, "check skipped: no permit in time");
                continue;
            }
        };
        let check = tokio::time::timeout(timing.timeout, shared.checker.check(&target.spec, timing.timeout, &mut slot));
        let outcome = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            outcome = check => outcome.unwrap_or(CheckOutcome::Down { rtt: timing.timeout, reason: Reason::Timeout }),
        };
        drop(permit);
        shared.completed.fetch_add(1, Ordering::Relaxed);

        let now_ms = unix_ms();
        let transition = {
            let mut slots = lock(&shared.slots);
            match slots.get_mut(&target.id) {
                Some(slot) if slot.generation == generation => {
                    slot.state.observe(&outcome, timing.rise, timing.fall, now_ms)
                }
                // Replaced or removed while the check ran.
                _ => return,
            }
        };
        (shared.on_result)(target.id.clone(), &outcome);
        if let Some(transition) = transition {
            match &transition.reason {
                Some(reason) => tracing::info!(target_id = %target.id, %reason, "target down"),
                None => tracing::info!(target_id = %target.id, rtt = ?outcome.rtt(), "target up"),
            }
            (shared.on_transition)(target.id.clone(), transition);
        }
        // Only after a stall of the runtime itself: do not fire a burst to catch up.
        next = next.max(Instant::now());
    }
}

/// The timing the scheduler actually runs: interval ≥ [`MIN_INTERVAL`], timeout ≤ interval,
/// jitter ≤ interval / 2.
fn effective(timing: Timing) -> Timing {
    let interval = timing.interval.max(MIN_INTERVAL);
    Timing { interval, timeout: timing.timeout.min(interval), jitter: timing.jitter.min(interval / 2), ..timing }
}

/// `interval` ± up to `jitter`, never shorter than the timeout (a check always fits in its slot).
fn next_gap(timing: &Timing) -> Duration {
    let spread = random_below(timing.jitter * 2 + Duration::from_nanos(1));
    (timing.interval.saturating_sub(timing.jitter) + spread).max(timing.timeout)
}

/// A uniformly spread duration in `[0, limit)` (zero for a zero limit).
fn random_below(limit: Duration) -> Duration {
    let nanos = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(random_u64() % nanos)
}

/// Random enough for spreading timers, without a dependency: SipHash with the process's random
/// keys over a counter.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The slots are consistent after any panic (each update is a single insert or assignment), so a
/// poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;

    use proptest::prelude::*;
    use tokio::sync::mpsc;

    use super::super::test_support::{Behaviour, TestServer};
    use super::super::{CheckFuture, CheckSpec, HttpChecker, HttpSpec, NetChecker, TcpChecker, TcpSpec};
    use super::*;

    fn up(ms: u64) -> CheckOutcome {
        CheckOutcome::Up { rtt: Duration::from_millis(ms) }
    }

    fn down() -> CheckOutcome {
        CheckOutcome::Down { rtt: Duration::from_millis(5), reason: Reason::Refused }
    }

    #[test]
    fn first_verdict_needs_rise_successes() {
        let mut state = TargetState::new(1);
        assert_eq!(state.observe(&up(3), 3, 2, 10), None);
        assert_eq!(state.observe(&up(3), 3, 2, 20), None);
        assert_eq!(state.up, None);
        let transition = state.observe(&up(4), 3, 2, 30).expect("third success decides");
        assert_eq!(transition, Transition { from: None, up: true, at_ms: 30, reason: None });
        assert_eq!((state.up, state.since_ms, state.last_rtt), (Some(true), 30, Some(Duration::from_millis(4))));
        assert_eq!(state.observe(&up(3), 3, 2, 40), None);
    }

    #[test]
    fn first_verdict_needs_fall_failures() {
        let mut state = TargetState::new(1);
        assert_eq!(state.observe(&down(), 3, 2, 10), None);
        assert_eq!(state.since_ms, 1);
        let transition = state.observe(&down(), 3, 2, 20).expect("second failure decides");
        assert_eq!(transition, Transition { from: None, up: false, at_ms: 20, reason: Some(Reason::Refused) });
        assert_eq!(state.last_reason, Some(Reason::Refused));
    }

    #[test]
    fn alternating_results_never_decide() {
        let mut state = TargetState::new(0);
        for i in 0..100 {
            let outcome = if i % 2 == 0 { up(1) } else { down() };
            assert_eq!(state.observe(&outcome, 2, 2, i), None);
        }
        assert_eq!(state.up, None);
    }

    #[test]
    fn zero_thresholds_count_as_one() {
        let mut state = TargetState::new(0);
        assert!(state.observe(&up(1), 0, 0, 1).is_some());
        assert!(state.observe(&down(), 0, 0, 2).is_some());
    }

    proptest! {
        /// Never flips without the required run, always flips once the run is there, and every
        /// transition starts from the previous verdict.
        #[test]
        fn hysteresis(results in proptest::collection::vec(any::<bool>(), 0..200), rise in 1u32..6, fall in 1u32..6) {
            let mut state = TargetState::new(0);
            let (mut ok_run, mut fail_run) = (0u32, 0u32);
            let mut verdict: Option<bool> = None;
            for (i, &ok) in results.iter().enumerate() {
                if ok { ok_run += 1; fail_run = 0 } else { fail_run += 1; ok_run = 0 }
                let now = i as u64 + 1;
                let transition = state.observe(&if ok { up(1) } else { down() }, rise, fall, now);
                if let Some(t) = &transition {
                    prop_assert_eq!(t.from, verdict);
                    prop_assert_eq!(t.up, ok);
                    if t.up { prop_assert_eq!(ok_run, rise) } else { prop_assert_eq!(fail_run, fall) }
                    verdict = Some(t.up);
                    prop_assert_eq!(state.since_ms, now);
                }
                prop_assert_eq!(state.up, verdict);
                prop_assert_eq!((state.consecutive_ok, state.consecutive_fail), (ok_run, fail_run));
                if ok_run >= rise { prop_assert_eq!(state.up, Some(true)) }
                if fail_run >= fall { prop_assert_eq!(state.up, Some(false)) }
            }
        }
    }

    #[test]
    fn gaps_stay_within_jitter_and_above_timeout() {
        let timing = Timing {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 1,
            jitter: Duration::from_millis(200),
        };
        let gaps: Vec<_> = (0..1000).map(|_| next_gap(&timing)).collect();
        assert!(gaps.iter().all(|g| *g >= Duration::from_millis(800) && *g <= Duration::from_millis(1200)));
        assert!(
            gaps.iter().any(|g| *g < Duration::from_millis(900))
                && gaps.iter().any(|g| *g > Duration::from_millis(1100))
        );
        let tight = Timing { jitter: Duration::from_millis(700), ..timing };
        assert!((0..1000).all(|_| next_gap(&effective(tight)) >= Duration::from_millis(500)));
        let offsets: HashSet<_> = (0..100).map(|_| random_below(Duration::from_secs(1))).collect();
        assert!(offsets.len() > 90 && offsets.iter().all(|o| *o < Duration::from_secs(1)));
    }

    /// A checker whose answer per address is set by the test; counts calls and concurrency.
    #[derive(Default)]
    struct FakeChecker {
        down: Mutex<HashSet<SocketAddr>>,
        delay: Mutex<Duration>,
        calls: AtomicUsize,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    impl FakeChecker {
        fn set_down(&self, addr: SocketAddr, is_down: bool) {
            let mut down = lock(&self.down);
            if is_down {
                down.insert(addr)
            } else {
                down.remove(&addr)
            };
        }
    }

    impl Checker for FakeChecker {
        fn check<'a>(&'a self, spec: &'a CheckSpec, _timeout: Duration, _slot: &'a mut ConnSlot) -> CheckFuture<'a> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_in_flight.fetch_max(now, Ordering::SeqCst);
                let delay = *lock(&self.delay);
                tokio::time::sleep(delay).await;
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                if lock(&self.down).contains(&spec.addr()) { down() } else { up(1) }
            })
        }
    }

    fn tcp_target(id: &str, port: u16, timing: Timing) -> Target {
        Target {
            id: id.into(),
            spec: CheckSpec::Tcp(TcpSpec { addr: SocketAddr::from(([192, 0, 2, 1], port)) }),
            timing,
        }
    }

    fn timing(interval_ms: u64, timeout_ms: u64, rise: u32, fall: u32) -> Timing {
        Timing {
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            rise,
            fall,
            jitter: Duration::ZERO,
        }
    }

    #[derive(Debug)]
    enum Event {
        Result(bool),
        Transition(Transition),
    }

    fn start(
        targets: Vec<Target>,
        checker: Arc<dyn Checker>,
        max_in_flight: usize,
    ) -> (SchedulerHandle, JoinHandle<()>, mpsc::UnboundedReceiver<Event>, CancellationToken) {
        let (tx, rx) = mpsc::unbounded_channel();
        let tx2 = tx.clone();
        let shutdown = CancellationToken::new();
        let (handle, join) = spawn_scheduler(
            targets,
            checker,
            max_in_flight,
            move |_id, t| drop(tx.send(Event::Transition(t))),
            move |_id, outcome: &CheckOutcome| drop(tx2.send(Event::Result(outcome.is_up()))),
            shutdown.clone(),
        );
        (handle, join, rx, shutdown)
    }

    /// Receives events until a transition; returns the results seen before it and the transition.
    async fn until_transition(rx: &mut mpsc::UnboundedReceiver<Event>) -> (Vec<bool>, Transition) {
        let mut results = Vec::new();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a transition in time")
                .expect("scheduler alive");
            match event {
                Event::Result(ok) => results.push(ok),
                Event::Transition(transition) => return (results, transition),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn flips_once_per_direction_after_the_required_runs() {
        let checker = Arc::new(FakeChecker::default());
        let target = tcp_target("a", 1, timing(1000, 500, 2, 3));
        let addr = target.spec.addr();
        let (handle, _join, mut rx, shutdown) = start(vec![target], checker.clone(), 4);

        let (results, first) = until_transition(&mut rx).await;
        assert_eq!((results, first.from, first.up), (vec![true, true], None, true));

        checker.set_down(addr, true);
        let (results, down) = until_transition(&mut rx).await;
        // The result that caused the transition is reported first, so it is in `results`.
        assert_eq!(results, vec![false; 3]);
        assert_eq!((down.from, down.up, down.reason), (Some(true), false, Some(Reason::Refused)));

        checker.set_down(addr, false);
        let (results, back) = until_transition(&mut rx).await;
        assert_eq!(results, vec![true; 2]);
        assert_eq!((back.from, back.up), (Some(false), true));

        let state = handle.state("a").expect("state");
        assert_eq!((state.up, state.consecutive_ok, state.since_ms), (Some(true), 2, back.at_ms));
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn checks_run_every_interval_and_first_checks_are_spread() {
        let checker = Arc::new(FakeChecker::default());
        let targets = (0..200).map(|i| tcp_target(&format!("t{i}"), i, timing(1000, 500, 1, 1))).collect();
        let start_at = Instant::now();
        let (handle, join, _rx, shutdown) = start(targets, checker.clone(), 1000);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let early = checker.calls.load(Ordering::SeqCst);
        // About 10% of the first checks fall in the first 100 ms of the interval.
        assert!((5..=50).contains(&early), "{early} first checks in 100 ms");
        tokio::time::sleep_until(start_at + Duration::from_millis(10_050)).await;
        let calls = checker.calls.load(Ordering::SeqCst);
        assert!((1800..=2200).contains(&calls), "{calls} checks in 10 intervals of 200 targets");
        assert_eq!(handle.stats().skipped_total, 0);
        shutdown.cancel();
        join.await.expect("scheduler task");
    }

    #[tokio::test(start_paused = true)]
    async fn max_in_flight_bounds_concurrency_and_skips_instead_of_queueing() {
        let checker = Arc::new(FakeChecker::default());
        *lock(&checker.delay) = Duration::from_millis(400);
        let targets = (0..20).map(|i| tcp_target(&format!("t{i}"), i, timing(1000, 500, 1, 1))).collect();
        let (handle, _join, _rx, shutdown) = start(targets, checker.clone(), 3);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(checker.max_in_flight.load(Ordering::SeqCst), 3);
        let stats = handle.stats();
        let calls = checker.calls.load(Ordering::SeqCst) as u64;
        // 3 slots of 400 ms cannot serve 20 checks per second: most are skipped, none piles up.
        assert!(stats.skipped_total > 50, "{stats:?}");
        assert!(calls <= 3 * 10 * 1000 / 400 + 3, "{calls} checks");
        assert!(stats.in_flight <= 3 && stats.max_in_flight == 3);
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn slow_checker_is_cut_at_the_timeout() {
        let checker = Arc::new(FakeChecker::default());
        *lock(&checker.delay) = Duration::from_secs(60);
        let (_handle, _join, mut rx, shutdown) = start(vec![tcp_target("a", 1, timing(1000, 300, 1, 1))], checker, 1);
        let (_, transition) = until_transition(&mut rx).await;
        assert_eq!(transition.reason, Some(Reason::Timeout));
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn update_keeps_state_of_unchanged_targets() {
        let checker = Arc::new(FakeChecker::default());
        let t = timing(1000, 500, 2, 2);
        let (a, b, c) = (tcp_target("a", 1, t), tcp_target("b", 2, t), tcp_target("c", 3, t));
        let (handle, _join, _rx, shutdown) = start(vec![a.clone(), b.clone(), c.clone()], checker.clone(), 10);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before: HashMap<_, _> = handle.snapshot().into_iter().collect();
        assert!(before.values().all(|s| s.up == Some(true)), "{before:?}");

        let b_new_spec = tcp_target("b", 22, t);
        let c_new_timing = Target { timing: timing(2000, 500, 2, 2), ..c.clone() };
        let d = tcp_target("d", 4, t);
        let summary = handle.update(vec![a.clone(), b_new_spec, c_new_timing, d]);
        assert_eq!(summary, UpdateSummary { added: 1, kept: 1, retimed: 1, replaced: 1, removed: 0 });
        let after: HashMap<_, _> = handle.snapshot().into_iter().collect();
        assert_eq!(after[&a.id], before[&a.id]);
        assert_eq!(after[&c.id], before[&c.id]);
        assert_eq!(after[&b.id].up, None);
        assert_eq!(after[&TargetId::from("d")].up, None);

        tokio::time::sleep(Duration::from_secs(5)).await;
        let later: HashMap<_, _> = handle.snapshot().into_iter().collect();
        assert!(later[&a.id].consecutive_ok > before[&a.id].consecutive_ok, "a keeps counting");
        assert!(later.values().all(|s| s.up == Some(true)), "{later:?}");

        let summary = handle.update(vec![a.clone()]);
        assert_eq!(summary, UpdateSummary { kept: 1, removed: 3, ..UpdateSummary::default() });
        assert_eq!(handle.snapshot().len(), 1);
        assert_eq!(handle.stats().targets, 1);
        let calls = checker.calls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let calls = checker.calls.load(Ordering::SeqCst) - calls;
        assert!((4..=6).contains(&calls), "only a is checked: {calls}");
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_ids_last_wins() {
        let checker = Arc::new(FakeChecker::default());
        let t = timing(1000, 500, 1, 1);
        let (handle, _join, _rx, shutdown) =
            start(vec![tcp_target("a", 1, t), tcp_target("a", 2, t)], checker.clone(), 10);
        let snapshot = handle.snapshot();
        assert_eq!(snapshot.len(), 1);
        checker.set_down(SocketAddr::from(([192, 0, 2, 1], 2)), true);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(handle.state("a").and_then(|s| s.up), Some(false));
        assert_eq!(checker.calls.load(Ordering::SeqCst), 3, "one task for the id");
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_running_checks() {
        let checker = Arc::new(FakeChecker::default());
        *lock(&checker.delay) = Duration::from_secs(3600);
        let (handle, join, _rx, shutdown) =
            start(vec![tcp_target("a", 1, timing(7_200_000, 3_600_000, 1, 1))], checker.clone(), 1);
        // The first check starts at a random point of the first interval and then runs for an hour.
        while checker.calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_eq!(handle.stats().in_flight, 1);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), join).await.expect("stops at once").expect("no panic");
        assert_eq!(handle.stats().in_flight, 0);
        // Updates after shutdown start nothing.
        handle.update(vec![tcp_target("b", 2, timing(1000, 500, 1, 1))]);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(checker.calls.load(Ordering::SeqCst), 1);
    }

    fn http_target(id: &str, server: &TestServer, timing: Timing) -> Target {
        Target { id: id.into(), spec: CheckSpec::Http(HttpSpec::new(server.scheme, server.addr)), timing }
    }

    fn net_checker() -> Arc<dyn Checker> {
        Arc::new(NetChecker::new(HttpChecker::new().expect("http checker"), TcpChecker::new()))
    }

    /// The length of the run of `value` at the end of `results`.
    fn trailing_run(results: &[bool], value: bool) -> usize {
        results.iter().rev().take_while(|ok| **ok == value).count()
    }

    /// Real sockets, real time: the server flips to 503 and back.
    #[tokio::test]
    async fn real_server_flip_down_and_up() {
        let server = TestServer::http(Behaviour::status(200)).await;
        let target = http_target("node", &server, timing(200, 150, 2, 3));
        let (handle, join, mut rx, shutdown) = start(vec![target], net_checker(), 4);

        // Each transition comes at exactly the `rise`-th success or `fall`-th failure in a row
        // (a check that timed out on a loaded machine only resets the run, it cannot add one).
        let (results, first) = until_transition(&mut rx).await;
        assert_eq!((trailing_run(&results, true), first.from, first.up), (2, None, true), "{results:?}");
        server.set(Behaviour::status(503));
        let (results, down) = until_transition(&mut rx).await;
        assert_eq!(trailing_run(&results, false), 3, "{results:?}");
        assert_eq!((down.from, down.up, down.reason), (Some(true), false, Some(Reason::Status(503))));
        server.set(Behaviour::status(200));
        let (results, back) = until_transition(&mut rx).await;
        assert_eq!(trailing_run(&results, true), 2, "{results:?}");
        assert_eq!((back.from, back.up), (Some(false), true));

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), join).await.expect("stops").expect("no panic");
        // Exactly three transitions: none pending.
        while let Ok(event) = rx.try_recv() {
            assert!(matches!(event, Event::Result(_)), "unexpected {event:?}");
        }
        assert_eq!(handle.state("node").and_then(|s| s.up), Some(true));
    }

    /// Real sockets: the server counts requests it handles at once.
    #[tokio::test]
    async fn real_server_sees_at_most_max_in_flight() {
        let server = TestServer::http(Behaviour { delay: Duration::from_millis(80), ..Behaviour::status(200) }).await;
        let targets = (0..12).map(|i| http_target(&format!("t{i}"), &server, timing(200, 150, 1, 1))).collect();
        let (handle, join, _rx, shutdown) = start(targets, net_checker(), 3);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), join).await.expect("stops").expect("no panic");
        let most = server.max_in_flight();
        assert!((2..=3).contains(&most), "server saw {most} requests at once");
        let stats = handle.stats();
        assert!(stats.skipped_total > 0, "{stats:?}");
        assert!(server.requests().len() >= 20, "{} requests", server.requests().len());
    }
}
