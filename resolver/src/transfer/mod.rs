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

use std::collections::{BTreeMap, HashMap};
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
use self::copy::ZoneCopy;
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

/// Checks what the zones' primaries need that config validation cannot: their TSIG secrets.
pub fn check(zones: &[ZoneFile]) -> Result<(), String> {
    let problems: Vec<String> =
        zones.iter().filter_map(|z| z.primary.as_ref()?.tsig.as_ref()).filter_map(|key| tsig_key(key).err()).collect();
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

/// Starts a follower for every zone with a primary, and the NOTIFY listener on `notify`.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    notify: Option<UdpSocket>,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: &CancellationToken,
) {
    let config = shared.config();
    let mut wakers = HashMap::new();
    for zone in config.zones.iter().filter(|z| z.primary.is_some()) {
        // The copy's directory must exist for the file watcher to watch it.
        if let Some(dir) = zone.file.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::error!(zone = %zone.origin, dir = %dir.display(), error = %e, "cannot create the directory for the zone's copy");
        }
        let wake = Arc::new(tokio::sync::Notify::new());
        wakers.insert(zone.origin.clone(), wake.clone());
        tasks.spawn(follow(zone.origin.clone(), shared.clone(), wake, shutdown.clone()));
    }
    if let Some(socket) = notify {
        tasks.spawn(notify::serve(socket, shared.clone(), wakers, shutdown.clone()));
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

/// Follows one zone until `shutdown`.
async fn follow(origin: String, shared: Arc<Shared>, wake: Arc<tokio::sync::Notify>, shutdown: CancellationToken) {
    let statuses = shared.transfers.clone();
    // What is served: the saved copy at start, then each transfer; the in-memory copy of it is
    // what an IXFR applies to.
    let mut served = served_soa(&shared, &origin);
    let mut failures = 0u32;
    // The expire of a saved copy counts from when it was written.
    let file = shared.config().zones.iter().find(|z| z.origin == origin).map(|z| z.file.clone());
    // The saved copy, if this resolver wrote it, is the base of the next IXFR.
    let saved = file.clone().filter(|_| served.is_some());
    let read = move || ZoneCopy::from_saved(&std::fs::read_to_string(saved?).ok()?);
    let mut copy =
        tokio::task::spawn_blocking(read).await.ok().flatten().filter(|c| served.is_some_and(|s| s.serial == c.serial));
    let mut last_contact = served.and(file.as_deref().and_then(written_ms));
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
            shutdown.cancelled().await;
            return;
        };
        let Some(primary) = zone.primary.clone() else { return };
        let attempt = check_once(&zone, &shared, served, copy.as_ref()).await;
        let now = unix_ms();
        let ok = attempt.is_ok();
        match attempt {
            Ok(outcome) => {
                failures = 0;
                last_contact = Some(now);
                if let Some((new_copy, kind, timers)) = outcome {
                    tracing::info!(zone = %origin, serial = timers.serial, records = new_copy.len(), kind = kind.as_str(), "zone transferred from its primary");
                    served = Some(timers);
                    copy = Some(new_copy);
                    statuses.update(&origin, |s| {
                        s.last_transfer_ms = Some(now);
                        s.last_transfer = Some(kind.as_str());
                        s.transfers_applied += 1;
                    });
                }
                statuses.update(&origin, |s| s.last_error = None);
            }
            Err((error, counted)) => {
                failures = failures.saturating_add(1);
                if counted.is_some() {
                    // A transfer was tried: the primary answered the SOA query first.
                    last_contact = Some(now);
                }
                tracing::warn!(zone = %origin, error = %error, "zone check or transfer failed; the served copy stays");
                statuses.update(&origin, |s| {
                    match counted {
                        Some(Counted::Failed) => s.transfers_failed += 1,
                        Some(Counted::Refused) => s.transfers_refused += 1,
                        None => {}
                    }
                    s.last_error = Some(error.clone());
                });
            }
        }
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
            _ = wake.notified() => tracing::debug!(zone = %origin, "notify: checking the primary's serial"),
            _ = tokio::time::sleep(delay) => {}
        }
    }
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
        (false, None) => MIN_MS.saturating_mul(1 << failures.min(5).saturating_sub(1)).min(30_000),
    };
    Duration::from_millis(ms.clamp(MIN_MS, MAX_MS))
}

/// Which transfer counter an error goes to (`None`: the SOA check failed, nothing transferred;
/// `Some`: the primary answered the SOA query, then the transfer failed).
enum Counted {
    Failed,
    Refused,
}

type CheckResult = Result<Option<(ZoneCopy, copy::Kind, SoaTimers)>, (String, Option<Counted>)>;

/// Asks the primaries for the serial, in order, and transfers the zone when theirs is newer.
async fn check_once(
    zone: &ZoneFile,
    shared: &Arc<Shared>,
    served: Option<SoaTimers>,
    copy: Option<&ZoneCopy>,
) -> CheckResult {
    let Some(source) = &zone.primary else { return Ok(None) };
    let key = match &source.tsig {
        Some(key) => Some(tsig_key(key).map_err(|e| (e, None))?),
        None => None,
    };
    let name = zone_name(&zone.origin).map_err(|e| (e, None))?;
    let timeout = Duration::from_millis(source.transfer_timeout_ms);
    let mut errors = Vec::new();
    for addr in &source.primaries {
        let primary = Primary { addr: *addr, zone: name.clone(), key: key.clone(), timeout };
        let timers = match primary.soa().await {
            Ok(timers) => timers,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        let newer = served.is_none_or(|s| Serial(timers.serial) > Serial(s.serial));
        if !newer {
            return Ok(None);
        }
        // An IXFR only from the copy being served.
        let base = copy.filter(|c| served.is_some_and(|s| s.serial == c.serial));
        let (new_copy, kind) = match primary.transfer(base).await {
            Ok(done) => done,
            Err(Failure::Unreachable(why)) => return Err((why, Some(Counted::Failed))),
            Err(Failure::Refused(why)) => return Err((why, Some(Counted::Refused))),
        };
        let text = new_copy.zone_text();
        let (origin, file) = (zone.origin.clone(), zone.file.clone());
        let saved = tokio::task::spawn_blocking(move || save(&origin, &file, &text)).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err((format!("{addr}: transfer refused: {why}"), Some(Counted::Refused))),
            Err(e) => return Err((e.to_string(), Some(Counted::Refused))),
        }
        if let Err(e) = shared.reload().await {
            // The copy is saved and is served at the next successful reload.
            tracing::warn!(zone = %zone.origin, error = %e, "the transferred zone is saved but the reload was refused");
        }
        let timers = served_soa(shared, &zone.origin).unwrap_or(SoaTimers { serial: new_copy.serial, ..timers });
        return Ok(Some((new_copy, kind, timers)));
    }
    Err((errors.join("; "), None))
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
        let backoff: Vec<u64> = (1..=7).map(|n| next_check(false, None, None, n).as_secs()).collect();
        assert_eq!(backoff, [1, 2, 4, 8, 16, 16, 16]);
    }

    #[test]
    fn origins_are_absolute_and_lower_case() {
        assert_eq!(origin_of("Example.NET"), "example.net.");
        assert_eq!(origin_of("."), ".");
    }
}
