//! Zones followed from their hidden primary, the way a secondary follows it.
//!
//! For each `[[zones]]` with a `primary`, a follower task polls the primary's SOA serial (at the
//! zone's `refresh_ms`, else its SOA refresh; at its SOA retry after a failure) and checks at once
//! when a NOTIFY for the zone arrives ([`notify`]). When the primary's serial is newer than the
//! served one it transfers the zone: an IXFR from the copy it holds (read back at start from the
//! file it saved), an AXFR when it holds none or the primary answers the IXFR in full
//! ([`client`], [`copy`]).
//!
//! A transferred zone is written to a temporary file beside the zone's `file`, validated by the
//! same loader as an operator's zone file ([`crate::zones`]), and only then renamed over `file`
//! and reloaded: a failed, truncated, badly signed or invalid transfer never replaces the zone
//! being served. `file` is the last good copy, served at once at the next start, also while the
//! primary is down; without one the zone's managed names fall through to the next backend until
//! the first transfer (see [`crate::state`]).
//!
//! **Owns:** the follower loop, the NOTIFY listener, the zones' transfer status (the state API,
//! `/readyz`, metrics). **Does not own:** reading zone files and serving records
//! ([`crate::zones`], [`crate::state`]).

mod client;
pub(crate) mod copy;
pub mod notify;

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::base::{Name, Serial};
use domain::tsig::{Algorithm, Key, KeyName};
use geolb_config::{TsigKey, TsigSecret, ZoneFile};
use geolb_member::unix_ms;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use self::client::{Failure, Primary, SoaTimers};
use self::copy::{Saved, ZoneCopy};
use crate::state::Shared;
use crate::zones::{ZoneSet, ZoneSource};

/// The transfer status of one zone followed from its primary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ZoneStatus {
    /// The primaries, as configured.
    pub primary: Vec<String>,
    /// The serial served (`None`: no copy yet; managed names fall through).
    pub serial: Option<u32>,
    /// When the served copy was transferred (unix ms), if by this process.
    pub last_transfer_ms: Option<u64>,
    /// `axfr` or `ixfr`: how the last transfer was made.
    pub last_transfer: Option<&'static str>,
    /// When the primary last answered (unix ms). At start: when the saved copy was written.
    pub last_contact_ms: Option<u64>,
    /// When the last check or transfer was tried (unix ms).
    pub last_attempt_ms: Option<u64>,
    /// Why the last attempt failed (`None` when it succeeded).
    pub last_error: Option<String>,
    /// The SOA expire of the served copy, in seconds.
    pub expire_s: Option<u32>,
    /// The primary has not answered for longer than the SOA expire: the last good copy is
    /// still served.
    pub expired: bool,
    /// Serial checks (SOA queries) the primary answered since start.
    pub checks_ok: u64,
    /// Serial checks that did not reach the primary (connect, timeout) since start.
    pub checks_failed: u64,
    /// Serial checks the primary answered with an error or a bad TSIG signature since start.
    pub checks_refused: u64,
    /// Transfers applied since start.
    pub transfers_applied: u64,
    /// Transfers that failed to reach the primary since start.
    pub transfers_failed: u64,
    /// Transfers refused since start (error rcode, bad TSIG, truncated, invalid zone).
    pub transfers_refused: u64,
}

/// The status of every zone followed from a primary, by origin.
#[derive(Debug, Default)]
pub struct Statuses(Mutex<BTreeMap<String, ZoneStatus>>);

impl Statuses {
    /// A copy of every zone's status.
    pub fn snapshot(&self) -> BTreeMap<String, ZoneStatus> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn remove(&self, origin: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(origin);
    }

    fn update(&self, origin: &str, f: impl FnOnce(&mut ZoneStatus)) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(origin.to_owned()).or_default());
    }

    /// What `/readyz` says about the zones: `(fatal, why)`. A zone without any copy is fatal
    /// (its managed names fall through); one past its expire is not (its last copy is served).
    pub fn readiness(&self) -> Vec<(bool, String)> {
        self.snapshot()
            .into_iter()
            .filter_map(|(origin, s)| match (s.serial, s.expired) {
                (None, _) => Some((
                    true,
                    format!(
                        "zone {origin}: no copy from its primary yet, its managed names fall through to the next backend ({})",
                        s.last_error.as_deref().unwrap_or("not transferred yet")
                    ),
                )),
                (Some(serial), true) => Some((
                    false,
                    format!(
                        "zone {origin}: the primary has not answered for longer than the soa expire ({} s); serving serial {serial} ({})",
                        s.expire_s.unwrap_or_default(),
                        s.last_error.as_deref().unwrap_or("no error")
                    ),
                )),
                _ => None,
            })
            .collect()
    }
}

/// The zones' part of the admin API: `zones` in `/api/v1/state`, and their `/readyz` lines.
pub(crate) struct AdminZones(pub(crate) Arc<Statuses>);

impl geolb_member::admin::AdminExtension for AdminZones {
    fn state(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut map = serde_json::Map::new();
        if let Ok(zones) = serde_json::to_value(self.0.snapshot()) {
            map.insert("zones".to_owned(), zones);
        }
        map
    }

    fn readiness(&self) -> Vec<(bool, String)> {
        self.0.readiness()
    }
}

/// The zone name as `domain` wants it.
fn zone_name(origin: &str) -> Result<Name<Vec<u8>>, String> {
    Name::from_str(origin).map_err(|e| format!("zone `{origin}`: {e}"))
}

/// A printed name (`domain` leaves out the trailing dot) as an origin: lower-case, absolute.
pub(crate) fn origin_of(name: impl std::fmt::Display) -> String {
    let name = name.to_string().to_ascii_lowercase();
    if name.ends_with('.') { name } else { format!("{name}.") }
}

/// Builds the `domain` key of a configured TSIG key (reading its secret file).
pub fn tsig_key(key: &TsigKey) -> Result<Arc<Key>, String> {
    let secret = match &key.secret {
        TsigSecret::Inline(secret) => secret.clone(),
        TsigSecret::File(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("tsig key `{}`: cannot read {}: {e}", key.name, path.display()))?
            .trim()
            .to_owned(),
    };
    let bytes: Vec<u8> = domain::utils::base64::decode(&secret)
        .map_err(|e| format!("tsig key `{}`: the secret is not base64: {e}", key.name))?;
    if bytes.is_empty() {
        return Err(format!("tsig key `{}`: the secret is empty", key.name));
    }
    let algorithm = Algorithm::from_str(&key.algorithm).map_err(|_| format!("tsig algorithm `{}`", key.algorithm))?;
    let name = KeyName::from_str(&key.name).map_err(|e| format!("tsig key name `{}`: {e}", key.name))?;
    Key::new(algorithm, &bytes, name, None, None).map(Arc::new).map_err(|e| format!("tsig key `{}`: {e}", key.name))
}

/// What the zones' primaries need that config validation cannot check: their TSIG secrets. Each
/// problem names its key path.
pub fn check(zones: &[ZoneFile]) -> Vec<String> {
    zones
        .iter()
        .enumerate()
        .filter_map(|(i, z)| Some((i, z.primary.as_ref()?.tsig.as_ref()?)))
        .filter_map(|(i, key)| Some(format!("zones[{i}].tsig: {}", tsig_key(key).err()?)))
        .collect()
}

/// Starts a follower for every zone with a primary, and the NOTIFY listener on `notify`.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    notify: Option<UdpSocket>,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: &CancellationToken,
) {
    let config = shared.config();
    for zone in config.zones.iter().filter(|z| z.primary.is_some()) {
        // The copy's directory must exist for the file watcher to watch it.
        if let Some(dir) = zone.file.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::error!(zone = %zone.origin, dir = %dir.display(), error = %e, "cannot create the directory for the zone's copy");
        }
        let wake = Arc::new(tokio::sync::Notify::new());
        shared.followers.lock().unwrap_or_else(|p| p.into_inner()).insert(zone.origin.clone(), wake.clone());
        tasks.spawn(follow(zone.origin.clone(), shared.clone(), wake, shutdown.clone()));
    }
    if let Some(socket) = notify {
        tasks.spawn(notify::serve(socket, shared.clone(), shutdown.clone()));
    }
}

/// The SOA of the copy being served (from the loaded zone set), if there is one.
fn served_soa(shared: &Shared, origin: &str) -> Option<SoaTimers> {
    let engine = shared.engine.load();
    let soa = engine.zones().records(origin).iter().find(|r| &*r.qtype == "SOA")?;
    // `mname rname serial refresh retry expire minimum`
    let fields: Vec<u32> = soa.content.split_whitespace().skip(2).filter_map(|f| f.parse().ok()).collect();
    match fields[..] {
        [serial, refresh_s, retry_s, expire_s, _] => Some(SoaTimers { serial, refresh_s, retry_s, expire_s }),
        _ => None,
    }
}

/// When `path` was last written (unix ms).
fn written_ms(path: &Path) -> Option<u64> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(modified.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64)
}

/// NOTIFYs make at most one check per zone in this time (a flood from the primary's address
/// must not become a flood of SOA queries to the primary).
const NOTIFY_MIN_GAP: Duration = Duration::from_secs(1);

/// A whole transfer may take at most this many times `transfer_timeout_ms` (each message must
/// come within it, and the stream must end).
const TRANSFER_TIMEOUTS: u32 = 10;

/// Follows one zone until `shutdown`.
async fn follow(origin: String, shared: Arc<Shared>, wake: Arc<tokio::sync::Notify>, shutdown: CancellationToken) {
    let statuses = shared.transfers.clone();
    let mut failures = 0u32;
    let served = served_soa(&shared, &origin);
    let file = shared.config().zones.iter().find(|z| z.origin == origin).map(|z| z.file.clone());
    // The expire of a saved copy counts from when it was written.
    let mut last_contact = served.and(file.as_deref().and_then(written_ms));
    // The saved copy, if this resolver wrote it, is the base of the next IXFR; one it wrote but
    // that is cut short or edited is replaced at once by an AXFR.
    let (mut copy, mut force) = match read_saved(file.clone().filter(|_| served.is_some())).await {
        Some(Saved::Ours(copy)) => (served.is_some_and(|s| s.serial == copy.serial).then_some(copy), false),
        Some(Saved::Corrupt) => {
            tracing::warn!(zone = %origin, "the saved copy of the zone is damaged; it is transferred again in full");
            (None, true)
        }
        Some(Saved::Foreign) | None => (None, false),
    };
    statuses.update(&origin, |s| {
        s.serial = served.map(|t| t.serial);
        s.expire_s = served.map(|t| t.expire_s);
        s.last_contact_ms = last_contact;
    });
    if let Some(t) = served {
        tracing::info!(zone = %origin, serial = t.serial, "serving the saved copy of the zone until the primary is reached");
    }
    loop {
        let config = shared.config();
        let Some(zone) = config.zones.iter().find(|z| z.origin == origin && z.primary.is_some()).cloned() else {
            tracing::warn!(zone = %origin, "zone no longer followed from a primary; its follower stops (restart to follow new zones)");
            statuses.remove(&origin);
            // A task of `run` that ends stops the resolver: wait for the shutdown instead.
            shutdown.cancelled().await;
            return;
        };
        let Some(primary) = zone.primary.clone() else { return };
        // What is served now (a copy removed by hand, or left out at a reload, is none).
        let served = served_soa(&shared, &origin);
        let started = tokio::time::Instant::now();
        let attempt = check_once(&zone, &shared, served, &mut copy, force).await;
        let now = unix_ms();
        let ok = attempt.is_ok();
        let served = match attempt {
            Ok(outcome) => {
                failures = 0;
                force = false;
                last_contact = Some(now);
                statuses.update(&origin, |s| {
                    s.checks_ok += 1;
                    s.last_error = None;
                });
                match outcome {
                    Some(done) => {
                        tracing::info!(zone = %origin, serial = done.timers.serial, records = done.copy.len(), kind = done.kind.as_str(), "zone transferred from its primary");
                        statuses.update(&origin, |s| {
                            s.last_transfer_ms = Some(now);
                            s.last_transfer = Some(done.kind.as_str());
                            s.transfers_applied += 1;
                        });
                        copy = Some(done.copy);
                        Some(done.timers)
                    }
                    None => served,
                }
            }
            Err(failed) => {
                failures = failures.saturating_add(1);
                if copy.is_none() && served.is_some() {
                    // The transfer took the copy: the saved one is the base of the next IXFR.
                    copy = read_saved(file.clone()).await.and_then(|saved| match saved {
                        Saved::Ours(c) => served.is_some_and(|s| s.serial == c.serial).then_some(c),
                        Saved::Corrupt | Saved::Foreign => None,
                    });
                }
                if failed.stage.contacted() {
                    last_contact = Some(now);
                }
                if served.is_some() {
                    tracing::warn!(zone = %origin, error = %failed.why, "zone check or transfer failed; the served copy stays");
                } else {
                    tracing::warn!(zone = %origin, error = %failed.why, "zone check or transfer failed; there is no copy yet, its managed names fall through");
                }
                statuses.update(&origin, |s| {
                    match failed.stage {
                        Stage::Setup => {}
                        Stage::CheckFailed => s.checks_failed += 1,
                        Stage::CheckRefused => s.checks_refused += 1,
                        Stage::TransferFailed => {
                            s.checks_ok += 1;
                            s.transfers_failed += 1;
                        }
                        Stage::TransferRefused => {
                            s.checks_ok += 1;
                            s.transfers_refused += 1;
                        }
                    }
                    s.last_error = Some(failed.why.clone());
                });
                served
            }
        };
        let expired = match (served, last_contact) {
            (Some(t), Some(contact)) => now.saturating_sub(contact) > u64::from(t.expire_s) * 1000,
            _ => false,
        };
        statuses.update(&origin, |s| {
            if expired && !s.expired {
                tracing::error!(zone = %origin, expire_s = served.map(|t| t.expire_s), "the zone's primary has not answered for longer than its soa expire; the last good copy is still served");
            }
            s.expired = expired;
            s.serial = served.map(|t| t.serial);
            s.expire_s = served.map(|t| t.expire_s);
            s.last_attempt_ms = Some(now);
            s.last_contact_ms = last_contact;
            s.primary = primary.primaries.iter().map(ToString::to_string).collect();
        });
        let delay = next_check(ok, served, primary.refresh_ms, failures);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {
                tracing::debug!(zone = %origin, "notify: checking the primary's serial");
                let gap = NOTIFY_MIN_GAP.saturating_sub(started.elapsed());
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(gap) => {}
                }
            }
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// The zone's `file` read back as a copy (off the runtime: it can be large; a regular file only).
async fn read_saved(file: Option<std::path::PathBuf>) -> Option<Saved> {
    let read = move || {
        let bytes = geolb_member::statefile::read(&file?, u64::MAX).ok()?;
        Some(ZoneCopy::from_saved(&String::from_utf8(bytes).ok()?))
    };
    tokio::task::spawn_blocking(read).await.ok().flatten()
}

/// How long until the next check: the refresh after a success, the retry after a failure
/// (a second doubling up to 30 s while there is no copy at all).
fn next_check(ok: bool, served: Option<SoaTimers>, refresh_ms: Option<u64>, failures: u32) -> Duration {
    const MIN_MS: u64 = 1_000;
    const MAX_MS: u64 = 86_400_000;
    let refresh = refresh_ms.or(served.map(|t| u64::from(t.refresh_s) * 1000)).unwrap_or(MIN_MS);
    let ms = match (ok, served) {
        (true, _) => refresh,
        (false, Some(t)) => (u64::from(t.retry_s) * 1000).min(refresh),
        (false, None) => MIN_MS.saturating_mul(1 << (failures.clamp(1, 6) - 1)).min(30_000),
    };
    Duration::from_millis(ms.clamp(MIN_MS, MAX_MS))
}

/// Where a check of the primary failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Before asking: the zone's TSIG key is unusable.
    Setup,
    /// The SOA query reached no primary.
    CheckFailed,
    /// The primary answered the SOA query with an error or a bad signature.
    CheckRefused,
    /// The primary answered the SOA query; the transfer did not get through.
    TransferFailed,
    /// The primary answered the SOA query; what it transferred was refused.
    TransferRefused,
}

impl Stage {
    /// Whether the primary answered (the SOA expire counts from its last answer).
    fn contacted(self) -> bool {
        matches!(self, Stage::TransferFailed | Stage::TransferRefused)
    }
}

/// Why a check failed, and where.
struct Failed {
    why: String,
    stage: Stage,
}

impl Failed {
    fn at(stage: Stage, why: impl Into<String>) -> Failed {
        Failed { why: why.into(), stage }
    }
}

/// A transfer that was applied.
struct Done {
    copy: ZoneCopy,
    kind: copy::Kind,
    timers: SoaTimers,
}

/// Asks the primaries for the serial, in order, and transfers the zone when theirs is newer
/// (or when `force`d: the saved copy is damaged).
async fn check_once(
    zone: &ZoneFile,
    shared: &Arc<Shared>,
    served: Option<SoaTimers>,
    copy: &mut Option<ZoneCopy>,
    force: bool,
) -> Result<Option<Done>, Failed> {
    let Some(source) = &zone.primary else { return Ok(None) };
    let key = match &source.tsig {
        Some(key) => Some(tsig_key(key).map_err(|e| Failed::at(Stage::Setup, e))?),
        None => None,
    };
    let name = zone_name(&zone.origin).map_err(|e| Failed::at(Stage::Setup, e))?;
    let timeout = Duration::from_millis(source.transfer_timeout_ms);
    let mut errors = Vec::new();
    let mut refused = false;
    for addr in &source.primaries {
        let primary =
            Primary { addr: *addr, zone: name.clone(), key: key.clone(), timeout, timeouts: TRANSFER_TIMEOUTS };
        let timers = match primary.soa().await {
            Ok(timers) => timers,
            Err(e) => {
                refused |= matches!(e, Failure::Refused(_));
                if source.primaries.len() > 1 {
                    tracing::debug!(zone = %zone.origin, error = %e, "a primary did not answer the serial check; trying the next");
                }
                errors.push(e.to_string());
                continue;
            }
        };
        let newer = force || served.is_none_or(|s| Serial(timers.serial) > Serial(s.serial));
        if !newer {
            if let Some(s) = served.filter(|s| Serial(timers.serial) < Serial(s.serial)) {
                // RFC 1982: nothing to fetch. A primary restored from a backup, or a copy edited.
                tracing::warn!(zone = %zone.origin, primary = %addr, primary_serial = timers.serial, served_serial = s.serial, "the primary's serial is behind the served one; nothing is transferred until it passes it");
            }
            return Ok(None);
        }
        // An IXFR only from the copy being served; an IXFR refused (a primary that cannot
        // serve one, or diffs that do not fit our copy) is followed by an AXFR.
        // The copy is handed over (a transfer that fails leaves none; see `follow`).
        let base = copy.take().filter(|c| !force && served.is_some_and(|s| s.serial == c.serial));
        let incremental = base.is_some();
        let mut result = primary.transfer(base).await;
        if incremental && let Err(Failure::Refused(why)) = &result {
            tracing::info!(zone = %zone.origin, error = %why, "ixfr refused; trying an axfr");
            result = primary.transfer(None).await;
        }
        let (new_copy, kind) = match result {
            Ok(done) => done,
            Err(Failure::Unreachable(why)) => return Err(Failed::at(Stage::TransferFailed, why)),
            Err(Failure::Refused(why)) => return Err(Failed::at(Stage::TransferRefused, why)),
        };
        // Written and validated off the runtime: a large zone takes a while, and lookups go on.
        let (origin, file) = (zone.origin.clone(), zone.file.clone());
        let saved = tokio::task::spawn_blocking(move || {
            let (text, left_out) = new_copy.zone_text();
            (save(&origin, &file, &text), left_out, new_copy)
        })
        .await;
        let new_copy = match saved {
            Ok((Ok(()), left_out, new_copy)) => {
                if left_out > 0 {
                    tracing::warn!(zone = %zone.origin, records = left_out, "records of types geolb cannot hand to PowerDNS (LOC, URI, CERT, DHCID, …: only their generic form is known here) are left out of the managed names' answers; the next backend serves them for every other name");
                }
                new_copy
            }
            Ok((Err(why), ..)) => {
                return Err(Failed::at(Stage::TransferRefused, format!("{addr}: transfer refused: {why}")));
            }
            Err(e) => return Err(Failed::at(Stage::TransferRefused, e.to_string())),
        };
        if let Err(e) = shared.reload().await {
            // The copy is saved and is served at the next successful reload.
            tracing::warn!(zone = %zone.origin, error = %e, "the transferred zone is saved but the reload was refused");
        }
        let timers = served_soa(shared, &zone.origin).unwrap_or(SoaTimers { serial: new_copy.serial, ..timers });
        return Ok(Some(Done { copy: new_copy, kind, timers }));
    }
    let stage = if refused { Stage::CheckRefused } else { Stage::CheckFailed };
    Err(Failed::at(stage, errors.join("; ")))
}

/// Writes the zone to a temporary file beside `file`, validates it like any zone file, and only
/// then renames it over `file` (synced, so a crash leaves the old copy or the new one).
fn save(origin: &str, file: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    let dir = file.parent().ok_or_else(|| format!("{} has no directory", file.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut tmp_name = file.as_os_str().to_owned();
    tmp_name.push(".transfer");
    let tmp = std::path::PathBuf::from(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    };
    write().map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    if let Err(e) = ZoneSet::load(&[ZoneSource { origin: origin.to_owned(), path: tmp.clone() }]) {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("the transferred zone is invalid: {e}"));
    }
    std::fs::rename(&tmp, file).map_err(|e| format!("cannot replace {}: {e}", file.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_check_follows_refresh_retry_and_backs_off_without_a_copy() {
        let t = SoaTimers { serial: 1, refresh_s: 60, retry_s: 10, expire_s: 600 };
        assert_eq!(next_check(true, Some(t), None, 0), Duration::from_secs(60));
        assert_eq!(next_check(true, Some(t), Some(2_000), 0), Duration::from_secs(2));
        assert_eq!(next_check(false, Some(t), None, 1), Duration::from_secs(10));
        assert_eq!(next_check(false, Some(t), Some(2_000), 1), Duration::from_secs(2));
        let backoff: Vec<u64> = (1..=8).map(|n| next_check(false, None, None, n).as_secs()).collect();
        assert_eq!(backoff, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn origins_are_absolute_and_lower_case() {
        assert_eq!(origin_of("Example.NET"), "example.net.");
        assert_eq!(origin_of("."), ".");
    }
}
