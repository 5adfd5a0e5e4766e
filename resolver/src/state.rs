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

/// Zones from a primary whose copy (`file`) does not exist yet.
fn waiting_zones(config: &Config) -> Vec<String> {
    config.zones.iter().filter(|z| z.primary.is_some() && !z.file.exists()).map(|z| z.origin.clone()).collect()
}

/// Where a gossip member keeps its last health view.
fn view_path(config: &Config) -> Option<PathBuf> {
    config.member.as_ref().map(|m| m.state_dir.join("view.json"))
}

/// The zone files to load: every zone's, except a zone from a primary that has no copy yet.
fn zone_sources(config: &Config) -> Vec<ZoneSource> {
    config
        .zones
        .iter()
        .filter(|z| z.primary.is_none() || z.file.exists())
        .map(|z| ZoneSource { origin: z.origin.clone(), path: z.file.clone() })
        .collect()
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

/// Loads the zone files of a config.
pub fn load_zones(config: &Config) -> Result<ZoneSet, crate::zones::ZoneError> {
    ZoneSet::load(&zone_sources(config))
}

impl Shared {
    /// Loads GeoIP and zones for `config` and builds the first engine. Never fails: see the
    /// module docs for what a bad input does at start.
    pub async fn start(source: Arc<geolb_member::fleet::ConfigSource>, config: Config) -> Shared {
        let counters = Arc::new(Counters::default());
        // Stamp before loading: a file replaced while we load is then seen as changed.
        let geoip_stamp = stamp(&config.geoip);
        let zones_stamp = stamp(&zone_paths(&config));
        let waiting_zones = waiting_zones(&config);
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
        let (zones, serve_services) = match zones {
            Ok(z) => (Arc::new(z), true),
            Err(e) => {
                tracing::error!(error = %e, "zone files unavailable: managed names fall through to the next backend until a reload succeeds");
                (Arc::new(ZoneSet::empty()), false)
            }
        };
        for (origin, count) in zones.zones() {
            tracing::info!(zone = origin, records = count, "zone loaded");
        }
        // A resolver in a gossip cluster starts from the view it last saved: "all up" before
        // the first quorum would send clients to nodes that were down when it stopped.
        let view = Arc::new(match view_path(&config) {
            Some(path) => match ServedHealth::load(&path, unix_ms()) {
                Ok(v) => {
                    tracing::info!(path = %path.display(), nodes = v.global.len(), "restored the last saved health view");
                    v
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => ServedHealth::default(),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the saved health view; starting without one");
                    ServedHealth::default()
                }
            },
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
        files.extend(zone_paths(&loaded.config));
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
                Ok(())
            }
            Err(e) => {
                tracing::error!(config = %self.source.path().display(), error = %e, "reload refused, keeping the running config");
                self.source.refused(&e);
                Err(e)
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
        let waiting_zones = waiting_zones(&config);
        let zones = if zones_stamp == old_zones_stamp
            && old_zones.zones().count() == config.zones.len()
            && config.zones.iter().all(|z| old_zones.zones().any(|(o, _)| o == z.origin))
        {
            old_zones
        } else {
            Arc::new(load_zones(&config).map_err(|e| e.to_string())?)
        };
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
        Ok(())
    }
}
