//! The fleet configuration: one document for every member, and where each member gets it.
//!
//! A member's [`ConfigSource`] composes its local file with the fleet document
//! ([`geolb_config::LocalFile::compose`]). With `[fleet] store = "file"` the document is the
//! local file's own fleet tables, as it always was. With `store = "embedded"` the versions live
//! in the member's `state_dir` ([`crate::versions`]):
//!
//! - A write over the admin API ([`api`]) is validated whole by the same validator as the file,
//!   against this member's local file, then appended compare-and-swap on the version.
//! - Every member gossips only `version:hash` of the newest document it holds and of the one it
//!   has applied ([`crate::gossip::keys::ConfigVersion`]), never the document: [`follow`] sees a
//!   peer holding a version that beats its own, fetches the document from that peer's admin API
//!   (authenticated with a secret derived from the cluster key), checks the hash, stores it and
//!   asks the program to reload.
//! - A member that cannot apply a version (its local file does not fit it: a `[prober] pop` the
//!   document removed, say) keeps serving the last one it applied and says why in
//!   `/api/v1/state`; the others apply it.
//! - At start the newest stored version that applies is served at once, before gossip forms. A
//!   new member with an empty store seeds version 1 from the fleet tables of its local file, if
//!   it has any, and otherwise waits for a peer (`pending`: no PoPs, no names).

pub(crate) mod api;
mod fetch;
mod postgres;

pub use postgres::DatabaseStatus;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use geolb_config::{Config, ConfigError, Fleet, FleetDocument, FleetStore, LocalFile};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::gossip::GossipHandle;
use crate::gossip::keys::ConfigVersion;
use crate::versions::{StoreError, Version, VersionStore};

/// Largest fleet document accepted, in bytes (a 10,000-name document is about 1 MB).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// How often [`follow`] looks at the peers' versions when the gossip is quiet.
const FOLLOW_TICK: Duration = Duration::from_secs(1);

/// Why a member could not start on its config.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The local file (or the fleet tables it seeds from) is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The version store could not be opened or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state directory could not be made.
    #[error("cannot create state_dir {}: {source}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Why a write of the fleet document was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// This member's document comes from its local file.
    #[error("this member's fleet document comes from its local file ([fleet] store = \"file\"): edit the file")]
    FileStore,
    /// The document (or this member's local file with it) does not validate.
    #[error("{0}")]
    Invalid(ConfigError),
    /// Someone else wrote first.
    #[error("the document is at version {}, not {expected}", head.as_ref().map_or(0, |h| h.version))]
    Stale {
        /// The version the writer started from.
        expected: u64,
        /// The newest version, when there is one.
        head: Option<Version>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// The database is unreachable.
    #[error("{0}")]
    Unavailable(String),
}

/// A version this member could not apply, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// The version.
    pub version: u64,
    /// Its hash.
    pub hash: String,
    /// Why it was refused.
    pub error: String,
    /// When, unix ms.
    pub at_ms: u64,
}

/// Counters of the fleet document's travels.
#[derive(Debug, Default)]
pub struct FleetCounters {
    /// Documents fetched from peers and stored.
    pub fetched: AtomicU64,
    /// Fetches that failed (peer unreachable, bad answer).
    pub fetch_failures: AtomicU64,
    /// Documents from peers whose hash did not match the announced one.
    pub hash_mismatches: AtomicU64,
    /// Versions this member could not apply.
    pub refused: AtomicU64,
}

/// Where this member's config comes from: its local file, composed with the fleet document.
#[derive(Debug)]
pub struct ConfigSource {
    path: PathBuf,
    store: FleetStore,
    versions: Option<Mutex<VersionStore>>,
    /// The `postgres` store's database (the versions are mirrored into `versions`).
    database: Option<Arc<postgres::Database>>,
    /// The local file's fleet tables, written as version 1 into an empty database.
    seed: Option<Arc<FleetDocument>>,
    applied: Mutex<Option<ConfigVersion>>,
    refused: Mutex<Option<Refusal>>,
    reload: Arc<Notify>,
    /// Wakes [`follow`] to publish: a version stored, applied or refused here.
    changed: Notify,
    /// A version was written here and not yet published: [`follow`] pushes it to the peers.
    written: std::sync::atomic::AtomicBool,
    /// Counters for metrics and the state API.
    pub counters: FleetCounters,
}

impl ConfigSource {
    /// Reads the local file at `path` and, for an embedded store, opens the versions in its
    /// `state_dir` and composes the newest version that applies. Returns the source and the
    /// config to start on.
    pub fn open(path: &Path) -> Result<(Arc<ConfigSource>, Config), OpenError> {
        let local = LocalFile::read(path)?;
        // The local tables alone: where the document comes from, and where state lives.
        let boot = local.compose(Fleet::Pending)?;
        let source = |versions| ConfigSource {
            path: path.to_path_buf(),
            store: boot.fleet.store,
            versions,
            database: None,
            seed: None,
            applied: Mutex::default(),
            refused: Mutex::default(),
            reload: Arc::default(),
            changed: Notify::new(),
            written: std::sync::atomic::AtomicBool::new(false),
            counters: FleetCounters::default(),
        };
        match boot.fleet.store {
            FleetStore::File => {
                let source = Arc::new(source(None));
                let config = source.compose_file(&local)?;
                Ok((source, config))
            }
            FleetStore::Embedded => {
                let dir = state_dir(&boot).unwrap_or_else(|| PathBuf::from("."));
                std::fs::create_dir_all(&dir).map_err(|source| OpenError::StateDir { path: dir.clone(), source })?;
                let opened = VersionStore::open(&dir)?;
                for problem in &opened.problems {
                    tracing::error!(store = %dir.display(), "{problem}; a peer has the version");
                }
                let source = Arc::new(source(Some(Mutex::new(opened.store))));
                let config = source.start_embedded(&local)?;
                Ok((source, config))
            }
            FleetStore::Postgres => {
                let dir = state_dir(&boot).unwrap_or_else(|| PathBuf::from("."));
                let opened = postgres::open_mirror(&dir)?;
                for problem in &opened.problems {
                    tracing::error!(store = %dir.display(), "{problem}; it is read from the database again");
                }
                let conninfo = boot.fleet.postgres.as_ref().map(|s| s.0.clone()).unwrap_or_default();
                let seed = local.compose(Fleet::File).ok().map(|c| c.fleet.document).filter(|d| !d.is_empty());
                let source = ConfigSource {
                    database: Some(Arc::new(postgres::Database::new(conninfo))),
                    seed,
                    ..source(Some(Mutex::new(opened.store)))
                };
                let source = Arc::new(source);
                let config = source.start_embedded(&local)?;
                Ok((source, config))
            }
        }
    }

    /// The newest stored version that applies, else a seed from the local file's fleet
    /// tables, else pending.
    fn start_embedded(&self, local: &LocalFile) -> Result<Config, OpenError> {
        let winners: Vec<Version> = self.with_store(|s| s.winners().into_iter().cloned().collect()).unwrap_or_default();
        for meta in &winners {
            let composed = self
                .stored(meta)
                .map_err(|e| e.to_string())
                .and_then(|doc| compose_version(local, meta, &doc).map_err(|e| e.to_string()));
            match composed {
                Ok(config) => {
                    tracing::info!(version = meta.version, hash = %meta.hash, "fleet document loaded from the store");
                    return Ok(config);
                }
                Err(e) => {
                    tracing::error!(version = meta.version, error = %e, "stored fleet document does not apply here; trying the one before");
                    self.refuse(meta.version, &meta.hash, e);
                }
            }
        }
        let seed = local.compose(Fleet::File);
        match seed {
            // The database seeds itself (once, compare-and-swap) when it is empty.
            Ok(_) if self.database.is_some() => {
                tracing::warn!("no fleet document mirrored yet: serving no names until the database is read");
                Ok(local.compose(Fleet::Pending)?)
            }
            Ok(config) if winners.is_empty() && !config.fleet.document.is_empty() => {
                let document = config.fleet.document.clone();
                let message = format!("seeded from {}", self.path.display());
                let meta = self
                    .with_store(|s| s.append(0, document.canonical(), "file", &message, crate::unix_ms()))
                    .unwrap_or(Err(StoreError::NoVersion))?;
                tracing::info!(version = meta.version, hash = %meta.hash, "fleet document seeded from the local file");
                Ok(compose_version(local, &meta, &document)?)
            }
            Ok(_) | Err(_) if !winners.is_empty() => {
                tracing::error!("no stored fleet document applies here: serving no names until one does");
                Ok(local.compose(Fleet::Pending)?)
            }
            Ok(_) => {
                tracing::warn!("no fleet document yet: serving no names until one arrives from a peer");
                Ok(local.compose(Fleet::Pending)?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The config from the local file as it is now and the newest fleet document: what a
    /// reload applies.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let local = LocalFile::read(&self.path)?;
        match self.store {
            FleetStore::File => self.compose_file(&local),
            FleetStore::Embedded | FleetStore::Postgres => match self.head() {
                Some((meta, document)) => {
                    let composed = compose_version(&local, &meta, &document);
                    if let Err(e) = &composed {
                        self.refuse(meta.version, &meta.hash, e.to_string());
                    }
                    composed
                }
                None => local.compose(Fleet::Pending),
            },
        }
    }

    fn compose_file(&self, local: &LocalFile) -> Result<Config, ConfigError> {
        let mut config = local.compose(Fleet::File)?;
        config.fleet.hash = crate::versions::hash(config.fleet.document.canonical());
        Ok(config)
    }

    /// Records that the program now runs on `config`.
    pub fn applied(&self, config: &Config) {
        let version = (config.fleet.version > 0)
            .then(|| ConfigVersion { version: config.fleet.version, hash: config.fleet.hash.clone() });
        let mut refused = lock(&self.refused);
        if refused.as_ref().is_some_and(|r| version.as_ref().is_some_and(|v| v.version >= r.version)) {
            *refused = None;
        }
        *lock(&self.applied) = version;
        self.changed.notify_one();
    }

    /// Records that a reload failed: the newest version, unless it is the one applied, is
    /// refused here for that reason.
    pub fn refused(&self, error: &str) {
        if let Some(head) = self.head_version()
            && self.applied_version().as_ref() != Some(&head)
        {
            self.refuse(head.version, &head.hash, error.to_owned());
        }
    }

    fn refuse(&self, version: u64, hash: &str, error: String) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        *lock(&self.refused) = Some(Refusal { version, hash: hash.to_owned(), error, at_ms: crate::unix_ms() });
        self.changed.notify_one();
    }

    /// Where the document comes from.
    pub fn store(&self) -> FleetStore {
        self.store
    }

    /// The local file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Notified when a new version is stored: the program reloads (see
    /// [`crate::process::reload_on_change`]).
    pub fn reload_wanted(&self) -> Arc<Notify> {
        self.reload.clone()
    }

    /// The version applied, when it came from the store.
    pub fn applied_version(&self) -> Option<ConfigVersion> {
        lock(&self.applied).clone()
    }

    /// The last version refused here, unless a newer one applied since.
    pub fn refusal(&self) -> Option<Refusal> {
        lock(&self.refused).clone()
    }

    /// The newest stored version and its document.
    pub fn head(&self) -> Option<(Version, Arc<FleetDocument>)> {
        let meta = self.with_store(|s| s.head().cloned()).flatten()?;
        match self.stored(&meta) {
            Ok(document) => Some((meta, document)),
            Err(e) => {
                tracing::error!(version = meta.version, error = %e, "cannot read the newest fleet document");
                None
            }
        }
    }

    /// The newest version's number and hash.
    pub fn head_version(&self) -> Option<ConfigVersion> {
        self.with_store(|s| s.head().map(|h| ConfigVersion { version: h.version, hash: h.hash.clone() })).flatten()
    }

    /// Every version stored, newest first.
    pub fn history(&self) -> Vec<Version> {
        let mut all: Vec<Version> = self.with_store(|s| s.history().cloned().collect()).unwrap_or_default();
        all.sort_by(|a, b| b.version.cmp(&a.version).then_with(|| a.hash.cmp(&b.hash)));
        all
    }

    /// The stored version `version` (under `hash`, or the winner under that number) and its
    /// canonical bytes.
    pub fn version(&self, version: u64, hash: Option<&str>) -> Option<(Version, Vec<u8>)> {
        self.with_store(|s| {
            // Under a number alone: its winner, else (all superseded) any document it had.
            let meta = match hash {
                Some(h) => s.history().find(|m| m.version == version && m.hash == h),
                None => s.winner(version).or_else(|| s.history().find(|m| m.version == version)),
            }?
            .clone();
            let bytes = s.document(meta.version, &meta.hash).ok().flatten()?;
            Some((meta, bytes))
        })
        .flatten()
    }

    /// Validates `document` against this member's local file and stores it as the version
    /// after `expected`; the program then reloads.
    pub async fn write(
        self: &Arc<Self>,
        expected: u64,
        document: FleetDocument,
        author: &str,
        message: &str,
    ) -> Result<Version, WriteError> {
        if self.store == FleetStore::File {
            return Err(WriteError::FileStore);
        }
        if let Some(database) = &self.database {
            return self.write_database(database, expected, document, author, message).await;
        }
        let this = self.clone();
        let (author, message) = (author.to_owned(), message.to_owned());
        let written = tokio::task::spawn_blocking(move || {
            let local = LocalFile::read(&this.path).map_err(WriteError::Invalid)?;
            let document = Arc::new(document);
            local.compose(Fleet::Document(&document)).map_err(WriteError::Invalid)?;
            this.with_store(|s| {
                s.append(expected, document.canonical(), &author, &message, crate::unix_ms()).map_err(|e| match e {
                    StoreError::Stale { expected, .. } => WriteError::Stale { expected, head: s.head().cloned() },
                    other => WriteError::Store(other),
                })
            })
            .unwrap_or(Err(WriteError::FileStore))
        })
        .await
        .map_err(|e| WriteError::Store(StoreError::Io { path: self.path.clone(), source: std::io::Error::other(e) }))?;
        if let Ok(meta) = &written {
            tracing::info!(version = meta.version, hash = %meta.hash, author = %meta.author, "fleet document written");
            self.announce_written();
        }
        written
    }

    /// A version was written here: reload, and push its number to the peers.
    fn announce_written(&self) {
        self.written.store(true, Ordering::Relaxed);
        self.reload.notify_one();
        self.changed.notify_one();
    }

    async fn write_database(
        self: &Arc<Self>,
        database: &postgres::Database,
        expected: u64,
        document: FleetDocument,
        author: &str,
        message: &str,
    ) -> Result<Version, WriteError> {
        let this = self.clone();
        let document = Arc::new(document);
        let checked = document.clone();
        tokio::task::spawn_blocking(move || {
            let local = LocalFile::read(&this.path).map_err(WriteError::Invalid)?;
            local.compose(Fleet::Document(&checked)).map_err(WriteError::Invalid).map(drop)
        })
        .await
        .map_err(|e| WriteError::Unavailable(e.to_string()))??;
        let meta = database.write(expected, document.canonical(), author, message).await?;
        tracing::info!(version = meta.version, hash = %meta.hash, author = %meta.author, "fleet document written to the database");
        if let Err(e) = self.learn(meta.clone(), document.canonical()) {
            tracing::warn!(error = %e, "cannot mirror the version just written; it is read back from the database");
        }
        self.announce_written();
        Ok(meta)
    }

    /// The database's state, for the `postgres` store.
    pub fn database(&self) -> Option<DatabaseStatus> {
        self.database.as_ref().map(|d| d.status())
    }

    /// Keeps a version a peer sent, once its bytes match the hash and form a fleet document.
    fn learn(&self, meta: Version, bytes: &[u8]) -> Result<bool, String> {
        let actual = crate::versions::hash(bytes);
        if actual != meta.hash {
            self.counters.hash_mismatches.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::HashMismatch { version: meta.version, announced: meta.hash, actual }.to_string());
        }
        FleetDocument::from_json(bytes).map_err(|e| format!("not a fleet document: {e}"))?;
        let stored = self.with_store(|s| s.insert(meta, bytes)).unwrap_or(Ok(false)).map_err(|e| e.to_string())?;
        if stored {
            self.changed.notify_one();
        }
        Ok(stored)
    }

    fn stored(&self, meta: &Version) -> Result<Arc<FleetDocument>, String> {
        let bytes = self
            .with_store(|s| s.document(meta.version, &meta.hash))
            .ok_or("no store")?
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("version {} is gone from the store", meta.version))?;
        FleetDocument::from_json(&bytes).map(Arc::new).map_err(|e| e.to_string())
    }

    fn with_store<T>(&self, f: impl FnOnce(&mut VersionStore) -> T) -> Option<T> {
        self.versions.as_ref().map(|m| f(&mut lock(m)))
    }
}

fn compose_version(local: &LocalFile, meta: &Version, document: &Arc<FleetDocument>) -> Result<Config, ConfigError> {
    let mut config = local.compose(Fleet::Document(document))?;
    config.fleet.version = meta.version;
    config.fleet.hash = meta.hash.clone();
    Ok(config)
}

fn state_dir(config: &Config) -> Option<PathBuf> {
    config.member.as_ref().map(|m| m.state_dir.clone()).or_else(|| config.prober.as_ref().map(|p| p.state_dir.clone()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The address peers reach an admin API bound to `admin` at: the gossip's advertised address
/// when the API listens on every address.
pub fn advertised(admin: std::net::SocketAddr, gossip: std::net::SocketAddr) -> std::net::SocketAddr {
    if admin.ip().is_unspecified() { std::net::SocketAddr::new(gossip.ip(), admin.port()) } else { admin }
}

/// The config `--check-config` validates: the local file with the fleet tables it holds, or
/// without any (an embedded store's member that seeds nothing). Opens no store.
pub fn check(path: &Path) -> Result<Config, ConfigError> {
    let local = LocalFile::read(path)?;
    let boot = local.compose(Fleet::Pending)?;
    if boot.fleet.store == FleetStore::File || !local.compose(Fleet::File).is_ok_and(|c| c.fleet.document.is_empty()) {
        local.compose(Fleet::File)
    } else {
        Ok(boot)
    }
}

/// The bearer secret members fetch documents from each other with: derived from the cluster
/// key, so every member knows it and nobody configures it. Read-only.
pub fn peer_secret(config: &Config) -> Option<String> {
    use hmac::{KeyInit, Mac};
    let key = &config.cluster.as_ref()?.key;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).ok()?;
    mac.update(b"geolb fleet peer fetch v1");
    Some(hex::encode(mac.finalize().into_bytes()))
}

/// Keeps this member's fleet document in step with its peers until `shutdown`: publishes the
/// versions it holds and has applied, and fetches a version that beats its own from a peer
/// that holds it.
pub async fn follow(
    source: Arc<ConfigSource>,
    gossip: Arc<GossipHandle>,
    config: Arc<arc_swap::ArcSwap<Config>>,
    admin_addr: Option<std::net::SocketAddr>,
    shutdown: CancellationToken,
) {
    if let Some(addr) = admin_addr
        && let Err(e) = gossip.set_admin_addr(addr).await
    {
        tracing::warn!(error = %e, "cannot publish the admin address");
    }
    if let Some(database) = source.database.clone() {
        tokio::spawn(database.run(source.clone(), shutdown.clone()));
    }
    let mut changes = gossip.watch();
    let mut tick = tokio::time::interval(FOLLOW_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let head = source.head_version();
        let push = source.written.swap(false, Ordering::Relaxed);
        if let Err(e) = gossip.set_config_versions(head.as_ref(), source.applied_version().as_ref(), push).await {
            tracing::warn!(error = %e, "cannot publish the fleet document version");
        }
        if source.store() == FleetStore::Embedded {
            let snapshot = gossip.view().await;
            let me = gossip.node_id().to_owned();
            let best = snapshot
                .members
                .iter()
                .filter(|m| m.id != me && m.live)
                .filter_map(|m| Some((m.config_head.clone()?, m.admin_addr?)))
                .filter(|(v, _)| head.as_ref().is_none_or(|h| v.beats(h)))
                .map(|(v, _)| v)
                .reduce(|a, b| if b.beats(&a) { b } else { a });
            if let Some(best) = best {
                let peers: Vec<_> = snapshot
                    .members
                    .iter()
                    .filter(|m| m.id != me && m.live && m.config_head.as_ref() == Some(&best))
                    .filter_map(|m| Some((m.id.clone(), m.admin_addr?)))
                    .collect();
                let secret = peer_secret(&config.load()).unwrap_or_default();
                if fetch_from(&source, &best, &peers, &secret).await {
                    source.reload.notify_one();
                    continue;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changes.changed() => {}
            _ = source.changed.notified() => {}
            _ = tick.tick() => {}
        }
    }
}

/// Fetches `version` from the first of `peers` that serves it right; whether it was stored.
async fn fetch_from(
    source: &ConfigSource,
    version: &ConfigVersion,
    peers: &[(String, std::net::SocketAddr)],
    secret: &str,
) -> bool {
    for (peer, addr) in peers {
        let c = &source.counters;
        match fetch::version(*addr, version, secret).await {
            Ok((meta, bytes)) if meta.version == version.version && meta.hash == version.hash => {
                match source.learn(meta, &bytes) {
                    Ok(_) => {
                        c.fetched.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(version = version.version, hash = %version.hash, peer = %peer, "fleet document fetched");
                        return true;
                    }
                    Err(e) => {
                        c.fetch_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(peer = %peer, error = %e, "rejected the fleet document a peer served");
                    }
                }
            }
            Ok((meta, _)) => {
                c.fetch_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %peer, version = meta.version, hash = %meta.hash, "peer served another version than asked");
            }
            Err(e) => {
                c.fetch_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %peer, addr = %addr, error = %e, "cannot fetch the fleet document");
            }
        }
    }
    false
}

/// A stored version as `GET /api/v1/config/versions/{n}` serves it: the document as the exact
/// canonical text its hash is over.
#[derive(Debug, Serialize, serde::Deserialize)]
pub(crate) struct VersionBody {
    #[serde(flatten)]
    pub(crate) meta: Version,
    pub(crate) document: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = r#"
default_location = { pop = "fra" }
[[pops]]
id = "fra"
lat = 50.11
lon = 8.68
[fleet]
store = "embedded"
[cluster]
id = "t"
key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
[member]
id = "m"
gossip_listen = "127.0.0.1:0"
state_dir = "state"
"#;

    fn open(dir: &tempfile::TempDir) -> (Arc<ConfigSource>, Config) {
        let path = dir.path().join("geolb.toml");
        std::fs::write(&path, LOCAL).unwrap();
        ConfigSource::open(&path).unwrap()
    }

    /// A peer that answers every request with `body`.
    async fn peer(body: String) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let reply =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        addr
    }

    #[test]
    fn a_new_member_seeds_version_1_from_its_file_and_restarts_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let (source, config) = open(&dir);
        assert_eq!((config.fleet.version, config.pops.len()), (1, 1));
        assert_eq!(source.history()[0].author, "file");
        drop(source);
        let (source, config) = open(&dir);
        assert_eq!(config.fleet.version, 1);
        assert_eq!(source.history().len(), 1, "a restart does not seed again");
    }

    #[tokio::test]
    async fn a_peer_serving_a_document_that_does_not_match_its_hash_is_rejected_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (source, _) = open(&dir);
        let (head, document) = source.head().unwrap();
        let mut value = document.to_value();
        value["pops"][0]["lat"] = serde_json::json!(51.0);
        let real = FleetDocument::from_value(value).unwrap();
        let announced = ConfigVersion { version: 2, hash: crate::versions::hash(real.canonical()) };
        let meta = Version {
            version: 2,
            hash: announced.hash.clone(),
            author: "x".into(),
            at_ms: 1,
            message: String::new(),
            superseded: false,
        };
        // The bytes differ from what the hash was announced for.
        let forged =
            VersionBody { meta: meta.clone(), document: String::from_utf8(document.canonical().to_vec()).unwrap() };
        let bad = peer(serde_json::to_string(&forged).unwrap()).await;
        assert!(!fetch_from(&source, &announced, &[("forger".into(), bad)], "secret").await);
        assert_eq!(source.counters.hash_mismatches.load(Ordering::Relaxed), 1);
        assert_eq!(source.head_version().unwrap().version, head.version, "nothing stored");
        // The right bytes from an honest peer are kept.
        let honest = VersionBody { meta, document: String::from_utf8(real.canonical().to_vec()).unwrap() };
        let good = peer(serde_json::to_string(&honest).unwrap()).await;
        assert!(fetch_from(&source, &announced, &[("forger".into(), bad), ("honest".into(), good)], "secret").await);
        assert_eq!(source.head_version(), Some(announced));
        assert_eq!(source.counters.fetched.load(Ordering::Relaxed), 1);
        assert_eq!(source.load().unwrap().pops[0].location.lat, 51.0);
    }
}
