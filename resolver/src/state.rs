//! Loading the resolver's inputs (config, GeoIP databases, zone files) into an [`Engine`], and
//! reloading them on SIGHUP or when a file changes.
//!
//! A reload builds the new engine beside the old one and swaps it in only when everything
//! loaded: an invalid config, a corrupt GeoIP file or a broken zone file is logged with every
//! problem and the old engine keeps answering. At start the resolver never refuses to serve over
//! a bad GeoIP database (clients go to the default location) or bad zone files (managed names
//! fall through to the next backend, so the zone keeps its static records): PowerDNS SERVFAILs
//! the whole zone while its remote backend is down, which is worse than either.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use geolb_config::Config;

use geolb_member::unix_ms;

use crate::engine::{Counters, Engine};
use crate::geoip::{GeoIp, GeoIpError};
use crate::health::ServedHealth;
use crate::zones::{ZoneError, ZoneSet, ZoneSource};
use geolb_config::ZoneFile;

/// A file's identity for change detection.
type Stamp = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

fn stamp(paths: &[PathBuf]) -> Stamp {
    paths
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
            (p.clone(), meta)
        })
        .collect()
}

/// What the current engine was built from.
struct Loaded {
    config: Arc<Config>,
    /// The health view the engine was built with.
    view: Arc<ServedHealth>,
    /// False when the zone files failed to load at start: managed names then fall through to
    /// the next backend until a reload succeeds (see the module docs).
    serve_services: bool,
    /// Zones from a primary with no copy yet: their managed names fall through.
    waiting_zones: Vec<String>,
    geoip: Option<Arc<GeoIp>>,
    geoip_stamp: Stamp,
    zones: Arc<ZoneSet>,
    zones_stamp: Stamp,
}

/// The resolver's shared state: the published engine and what it was built from.
pub struct Shared {
    /// The engine lookups read.
    pub engine: Arc<ArcSwap<Engine>>,
    /// Counters shared by every engine generation.
    pub counters: Arc<Counters>,
    /// Where the config comes from: the local file and the fleet document.
    pub source: Arc<geolb_member::fleet::ConfigSource>,
    loaded: Mutex<Loaded>,
    /// Serializes reloads.
    reloading: tokio::sync::Mutex<()>,
    /// Reloads applied and refused since start.
    pub reloads: geolb_member::metrics::Reloads,
    /// The zones followed from a primary: their transfer status.
    pub transfers: Arc<crate::transfer::Statuses>,
    /// NOTIFYs received, by outcome.
    pub notifies: crate::transfer::notify::NotifyCounters,
    /// The wakers of the zones' followers ([`crate::transfer`]), by origin.
    pub(crate) followers: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Notify>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("config", &self.source.path()).finish_non_exhaustive()
    }
}

/// The config the engine answers from: without the services while the zone files failed to
/// load at start, and without those of a zone from a primary that has no copy yet (managed
/// names then fall through; see the module docs). Copies only then.
fn serving<'a>(config: &'a Config, serve_services: bool, waiting_zones: &[String]) -> std::borrow::Cow<'a, Config> {
    let waiting = |name: &str| waiting_zones.iter().any(|origin| geolb_config::in_zone(name, origin));
    if serve_services && !config.services.iter().any(|s| waiting(&s.name)) {
        std::borrow::Cow::Borrowed(config)
    } else {
        let mut config = config.clone();
        config.services.retain(|s| serve_services && !waiting(&s.name));
        std::borrow::Cow::Owned(config)
    }
}

/// Where a gossip member keeps its last health view.
fn view_path(config: &Config) -> Option<PathBuf> {
    config.member.as_ref().map(|m| m.state_dir.join("view.json"))
}

/// The view saved at `path`, with what `config` no longer names left out; none (logged) when
/// there is no file or it cannot be used.
fn restore_view(path: &std::path::Path, config: &Config) -> ServedHealth {
    match ServedHealth::load(path, unix_ms()) {
        Ok(mut v) => {
            let dropped = v.retain_configured(config);
            tracing::info!(path = %path.display(), nodes = v.global.len(), dropped, "restored the last saved health view");
            v
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ServedHealth::default(),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot use the saved health view ({e}); starting without one");
            ServedHealth::default()
        }
    }
}

/// Whether a zone's file is to be loaded: always for a zone file (a missing one is an error),
/// for a copy from a primary only when it exists and is not cut short.
fn loadable(zone: &ZoneFile) -> bool {
    zone.primary.is_none() || crate::transfer::copy::looks_whole(&zone.file)
}

fn source(zone: &ZoneFile) -> ZoneSource {
    ZoneSource { origin: zone.origin.clone(), path: zone.file.clone() }
}

fn zone_paths(config: &Config) -> Vec<PathBuf> {
    config.zones.iter().map(|z| z.file.clone()).collect()
}

/// Opens the GeoIP databases of a config (`None` when it names none).
pub fn open_geoip(config: &Config) -> Result<Option<Arc<GeoIp>>, crate::geoip::GeoIpError> {
    if config.geoip.is_empty() {
        return Ok(None);
    }
    GeoIp::open(&config.geoip).map(|g| Some(Arc::new(g)))
}

/// The zones of a config, loaded.
#[derive(Debug)]
pub struct LoadedZones {
    /// Every zone that loaded.
    pub set: ZoneSet,
    /// Zones from a primary without a usable copy (none yet, cut short, or one that does not
    /// load): their managed names fall through until the next transfer.
    pub waiting: Vec<String>,
}

/// Loads the zone files of a config. A copy from a primary that is missing, cut short or does
/// not load is left out (and its zone is waiting for a transfer) rather than failing the rest;
/// any problem in an operator's zone file fails the whole load, as always.
pub fn load_zones(config: &Config) -> Result<LoadedZones, crate::zones::ZoneError> {
    let (sources, mut waiting): (Vec<&ZoneFile>, Vec<&ZoneFile>) = config.zones.iter().partition(|z| loadable(z));
    let all: Vec<ZoneSource> = sources.iter().map(|z| source(z)).collect();
    let set = match ZoneSet::load(&all) {
        Ok(set) => set,
        Err(e) => {
            let (bad, good): (Vec<&ZoneFile>, Vec<&ZoneFile>) =
                sources.iter().partition(|z| z.primary.is_some() && ZoneSet::load(&[source(z)]).is_err());
            if bad.is_empty() {
                return Err(e);
            }
            for zone in &bad {
                tracing::error!(zone = %zone.origin, file = %zone.file.display(), "the saved copy of the zone does not load; it is left out until the next transfer");
            }
            waiting.extend(bad);
            ZoneSet::load(&good.iter().map(|z| source(z)).collect::<Vec<_>>())?
        }
    };
    Ok(LoadedZones { set, waiting: waiting.into_iter().map(|z| z.origin.clone()).collect() })
}

impl Shared {
    /// Loads GeoIP and zones for `config` and builds the first engine. Never fails: see the
    /// module docs for what a bad input does at start.
    pub async fn start(source: Arc<geolb_member::fleet::ConfigSource>, config: Config) -> Shared {
        let counters = Arc::new(Counters::default());
        // Stamp before loading: a file replaced while we load is then seen as changed.
        let geoip_stamp = stamp(&config.geoip);
        let zones_stamp = stamp(&zone_paths(&config));
        // Opening GeoIP copies ~130 MB and parsing zones can take a while: off the runtime.
        let loaded = tokio::task::spawn_blocking({
            let config = config.clone();
            move || (open_geoip(&config), load_zones(&config))
        })
        .await;
        let (geoip, zones) = match loaded {
            Ok(loaded) => loaded,
            // Only a panic inside a parser gets here; serve degraded rather than not at all.
            Err(e) => (Err(GeoIpError::Unavailable(e.to_string())), Err(ZoneError::Unavailable(e.to_string()))),
        };
        let geoip = geoip.unwrap_or_else(|e| {
            tracing::error!(error = %e, "GeoIP unavailable: every client is placed by overrides or the default location until a reload succeeds");
            None
        });
        for db in geoip.iter().flat_map(|g| g.describe()) {
            tracing::info!(database = %db, "GeoIP database loaded");
        }
        let (zones, waiting_zones, serve_services) = match zones {
            Ok(z) => (Arc::new(z.set), z.waiting, true),
            Err(e) => {
                tracing::error!(error = %e, "zone files unavailable: managed names fall through to the next backend until a reload succeeds");
                (Arc::new(ZoneSet::empty()), Vec::new(), false)
            }
        };
        for (origin, count) in zones.zones() {
            tracing::info!(zone = origin, records = count, "zone loaded");
        }
        // A resolver in a gossip cluster starts from the view it last saved: "all up" before
        // the first quorum would send clients to nodes that were down when it stopped. Read off
        // the runtime, as the file can be large.
        let view = Arc::new(match view_path(&config) {
            Some(path) => {
                let config = config.clone();
                tokio::task::spawn_blocking(move || restore_view(&path, &config)).await.unwrap_or_default()
            }
            None => ServedHealth::default(),
        });
        for origin in &waiting_zones {
            tracing::warn!(zone = %origin, "no copy of the zone from its primary yet: its managed names fall through to the next backend until the first transfer");
        }
        let engine = Engine::build(
            &serving(&config, serve_services, &waiting_zones),
            geoip.clone(),
            zones.clone(),
            &view,
            counters.clone(),
        );
        let loaded = Loaded {
            geoip_stamp,
            zones_stamp,
            config: Arc::new(config),
            view,
            serve_services,
            waiting_zones,
            geoip,
            zones,
        };
        Shared {
            engine: Arc::new(ArcSwap::from_pointee(engine)),
            counters,
            source,
            loaded: Mutex::new(loaded),
            reloading: tokio::sync::Mutex::new(()),
            reloads: Default::default(),
            transfers: Default::default(),
            notifies: Default::default(),
            followers: Default::default(),
        }
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The configured bound on request bodies.
    pub fn max_request_bytes(&self) -> usize {
        self.loaded().config.resolver.max_request_bytes
    }

    /// Publishes a new health view: rebuilds the engine with it (off the lookup path; lookups
    /// keep reading the old engine until the swap) and saves it for the next start.
    /// Blocks while it builds (tens of ms for thousands of nodes): call it off the runtime.
    pub fn set_view(&self, view: ServedHealth) {
        let view = Arc::new(view);
        let path = {
            // Build and publish under the lock; see `build_reload`.
            let mut loaded = self.loaded();
            loaded.view = view.clone();
            let config = serving(&loaded.config, loaded.serve_services, &loaded.waiting_zones);
            let engine =
                Engine::build(&config, loaded.geoip.clone(), loaded.zones.clone(), &view, self.counters.clone());
            self.engine.store(Arc::new(engine));
            view_path(&loaded.config)
        };
        if let Some(path) = path
            && let Err(e) = view.save(&path)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the health view");
        }
    }

    /// Serves the saved view instead when it is newer than the current one (restored as at
    /// start: grace periods restarted, cut to the configured nodes); whether it was. Blocks on
    /// the file: call it off the runtime.
    pub fn refresh_view(&self) -> bool {
        let config = self.config();
        let Some(path) = view_path(&config) else { return false };
        let saved = restore_view(&path, &config);
        let newer = saved.computed_ms > self.view().computed_ms;
        if newer {
            self.set_view(saved);
        }
        newer
    }

    /// The current health view.
    pub fn view(&self) -> Arc<ServedHealth> {
        self.loaded().view.clone()
    }

    /// The current config.
    pub fn config(&self) -> Arc<Config> {
        self.loaded().config.clone()
    }

    /// Files whose change triggers a reload.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let loaded = self.loaded();
        let mut files = vec![self.source.path().to_path_buf()];
        // A copy from a primary is written by this resolver, which reloads after each transfer.
        files.extend(loaded.config.zones.iter().filter(|z| z.primary.is_none()).map(|z| z.file.clone()));
        files.extend(loaded.config.geoip.iter().cloned());
        files.extend(loaded.config.admin.token_files().cloned());
        files
    }

    /// Reloads config, GeoIP and zones; swaps the engine in only when all of them load.
    pub async fn reload(self: &Arc<Self>) -> Result<(), String> {
        let _guard = self.reloading.lock().await;
        let this = self.clone();
        let built = tokio::task::spawn_blocking(move || this.build_reload()).await.map_err(|e| e.to_string())?;
        self.reloads.record(built.is_ok());
        match built {
            Ok(()) => {
                let config = self.config();
                self.source.applied(&config);
                tracing::info!(config = %self.source.path().display(), fleet_version = config.fleet.version, "reloaded");
                for revoked in config.admin.revoked_warnings() {
                    tracing::warn!("{revoked}");
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(config = %self.source.path().display(), error = %e, "reload refused, keeping the running config");
                self.source.refused(&e);
                Err(e)
            }
        }
    }

    /// Makes the followers of `zones` check their primary at once.
    pub(crate) fn wake_followers(&self, zones: &[String]) {
        let followers = self.followers.lock().unwrap_or_else(|p| p.into_inner());
        for origin in zones {
            if let Some(waker) = followers.get(origin) {
                waker.notify_one();
            }
        }
    }

    fn build_reload(&self) -> Result<(), String> {
        let config = self.source.load().map_err(|e| e.to_string())?;
        let (old_geoip, old_geoip_stamp, old_zones, old_zones_stamp, old_resolver) = {
            let l = self.loaded();
            (l.geoip.clone(), l.geoip_stamp.clone(), l.zones.clone(), l.zones_stamp.clone(), l.config.resolver.clone())
        };
        let geoip_stamp = stamp(&config.geoip);
        let same_paths = geoip_stamp.iter().map(|(p, _)| p).eq(old_geoip_stamp.iter().map(|(p, _)| p));
        let geoip = if geoip_stamp == old_geoip_stamp {
            old_geoip
        } else {
            match open_geoip(&config) {
                Ok(g) => g,
                // The same databases, now unreadable (mid-copy, say): keep what we have and let
                // the rest of the reload through; new paths that fail refuse the reload.
                Err(e) if same_paths => {
                    tracing::warn!(error = %e, "GeoIP databases changed but do not open; keeping the loaded ones");
                    old_geoip
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        let zones_stamp = stamp(&zone_paths(&config));
        // Unchanged files and every zone loaded: nothing is waiting.
        let (zones, waiting_zones) = if zones_stamp == old_zones_stamp
            && old_zones.zones().count() == config.zones.len()
            && config.zones.iter().all(|z| old_zones.zones().any(|(o, _)| o == z.origin))
        {
            (old_zones, Vec::new())
        } else {
            let loaded = load_zones(&config).map_err(|e| e.to_string())?;
            (Arc::new(loaded.set), loaded.waiting)
        };

        let followed = self.followers.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect::<Vec<_>>();
        for zone in config.zones.iter().filter(|z| z.primary.is_some() && !followed.contains(&z.origin)) {
            tracing::warn!(zone = %zone.origin, "the zone now comes from a primary: it is followed from the next restart");
        }
        // Woken once the new config is in place: a zone that lost its copy is transferred again
        // now, not at its next refresh, and the follower of a zone no longer from a primary stops.
        let mut wake: Vec<String> = followed
            .into_iter()
            .filter(|origin| !config.zones.iter().any(|z| z.primary.is_some() && z.origin == *origin))
            .collect();
        wake.extend(waiting_zones.iter().cloned());
        let waiting = old_resolver.changed_keys(&config.resolver);
        if !waiting.is_empty() {
            tracing::warn!(keys = ?waiting, "changes to [resolver] take effect at the next restart");
        }
        // Build and publish under the lock: a concurrent `set_view` must not publish an engine
        // of the old config after this one (nor this one drop its view).
        let mut loaded = self.loaded();
        let view = loaded.view.clone();
        let engine = Engine::build(
            &serving(&config, true, &waiting_zones),
            geoip.clone(),
            zones.clone(),
            &view,
            self.counters.clone(),
        );
        self.engine.store(Arc::new(engine));
        *loaded = Loaded {
            config: Arc::new(config),
            view,
            serve_services: true,
            waiting_zones,
            geoip,
            geoip_stamp,
            zones,
            zones_stamp,
        };
        drop(loaded);
        self.wake_followers(&wake);
        Ok(())
    }
}
