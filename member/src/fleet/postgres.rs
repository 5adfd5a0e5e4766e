//! The `postgres` store: the fleet document's versions in one append-only table, for fleets
//! that want one linearizable writer. Plain SQL, so CockroachDB runs it too.
//!
//! ```sql
//! CREATE TABLE geolb_config_versions (version BIGINT PRIMARY KEY, hash TEXT, author TEXT,
//!                                     at_ms BIGINT, message TEXT, document TEXT)
//! ```
//!
//! - A write is one `INSERT … SELECT … WHERE max(version) = expected` of `expected + 1`: the
//!   insert is the compare-and-swap (a concurrent writer of the same number hits the primary
//!   key and is told the document is stale).
//! - Each member mirrors the table into a [`VersionStore`] in `state_dir/postgres/`: reads
//!   (`GET`, history, the head it applies) come from the mirror, so a member whose database is
//!   unreachable keeps serving and restarting on its last version.
//! - `LISTEN geolb_config` wakes the mirror at once after a write (the writer sends
//!   `pg_notify`); a poll every [`POLL`] is what makes it correct, since a notification lost in
//!   a reconnect is never replayed (and CockroachDB has no LISTEN at all).
//!
//! The connection is plain TCP (`NoTls`): put the database on loopback or a private network,
//! or behind a TLS tunnel.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio_postgres::{AsyncMessage, Client, NoTls};
use tokio_util::sync::CancellationToken;

use super::{ConfigSource, WriteError, lock};
use crate::versions::{Version, VersionStore};

/// How often the mirror reads the table when no notification came.
pub(crate) const POLL: Duration = Duration::from_secs(1);
/// Wait between connection attempts.
const RECONNECT: Duration = Duration::from_secs(1);
/// Longest a statement may take before the connection is judged broken.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Versions read per poll (a member far behind catches up over a few polls).
const BATCH: i64 = 64;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS geolb_config_versions (
    version BIGINT PRIMARY KEY,
    hash TEXT NOT NULL,
    author TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    message TEXT NOT NULL,
    document TEXT NOT NULL
)";

const INSERT: &str = "INSERT INTO geolb_config_versions (version, hash, author, at_ms, message, document)
    SELECT $1, $2, $3, $4, $5, $6
    WHERE COALESCE((SELECT MAX(version) FROM geolb_config_versions), 0) = $7";

const HEAD: &str =
    "SELECT version, hash, author, at_ms, message FROM geolb_config_versions ORDER BY version DESC LIMIT 1";

const SINCE: &str = "SELECT version, hash, author, at_ms, message, document FROM geolb_config_versions
    WHERE version > $1 ORDER BY version LIMIT $2";

/// The channel writers notify and members listen on.
const CHANNEL: &str = "geolb_config";

/// The database, as one member sees it.
#[derive(Debug)]
pub(crate) struct Database {
    conninfo: String,
    client: Mutex<Option<Arc<Client>>>,
    up: AtomicBool,
    /// Unix ms it went down (0 while up or never connected).
    down_since_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Whether the database is reachable, for the state API, `/readyz` and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DatabaseStatus {
    /// Connected, and its last statement worked.
    pub up: bool,
    /// Unix ms it has been unreachable since (when it is).
    pub down_since_ms: Option<u64>,
    /// Why, when it is down.
    pub error: Option<String>,
}

impl Database {
    pub(crate) fn new(conninfo: String) -> Database {
        Database {
            conninfo,
            client: Mutex::default(),
            up: AtomicBool::new(false),
            down_since_ms: AtomicU64::new(crate::unix_ms()),
            last_error: Mutex::new(Some("not connected yet".to_owned())),
        }
    }

    pub(crate) fn status(&self) -> DatabaseStatus {
        let up = self.up.load(Ordering::Relaxed);
        DatabaseStatus {
            up,
            down_since_ms: (!up).then(|| self.down_since_ms.load(Ordering::Relaxed)),
            error: if up { None } else { lock(&self.last_error).clone() },
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("config database connected");
        }
        *lock(&self.last_error) = None;
    }

    fn mark_down(&self, error: &str) {
        *lock(&self.client) = None;
        if self.up.swap(false, Ordering::Relaxed) {
            self.down_since_ms.store(crate::unix_ms(), Ordering::Relaxed);
            tracing::error!(error, "config database unreachable: serving the last applied version, writes answer 503");
        }
        *lock(&self.last_error) = Some(error.to_owned());
    }

    /// Inserts `document` as the version after `expected`: the compare-and-swap.
    pub(crate) async fn write(
        &self,
        expected: u64,
        document: &[u8],
        author: &str,
        message: &str,
    ) -> Result<Version, WriteError> {
        let client = lock(&self.client).clone().ok_or_else(|| self.unavailable())?;
        let version = expected.checked_add(1).ok_or(WriteError::Stale { expected, head: None })?;
        let text = std::str::from_utf8(document).map_err(|_| WriteError::Unavailable("not text".to_owned()))?;
        let meta = Version {
            version,
            hash: crate::versions::hash(document),
            author: author.to_owned(),
            at_ms: crate::unix_ms(),
            message: message.to_owned(),
            superseded: false,
        };
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
            &to_i64(meta.version),
            &meta.hash,
            &meta.author,
            &to_i64(meta.at_ms),
            &meta.message,
            &text,
            &to_i64(expected),
        ];
        let inserted = timed(client.execute(INSERT, &params)).await;
        match inserted {
            Ok(1) => {}
            Ok(_) => return Err(WriteError::Stale { expected, head: self.head(&client).await }),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                return Err(WriteError::Stale { expected, head: self.head(&client).await });
            }
            Err(e) => {
                self.mark_down(&e.to_string());
                return Err(self.unavailable());
            }
        }
        // A wake-up for the other members; polling covers a database without NOTIFY.
        if let Err(e) = timed(client.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &meta.version.to_string()])).await
        {
            tracing::debug!(error = %e, "pg_notify failed; members hear of the version by polling");
        }
        Ok(meta)
    }

    fn unavailable(&self) -> WriteError {
        let why = lock(&self.last_error).clone().unwrap_or_else(|| "not connected".to_owned());
        WriteError::Unavailable(format!("the config database is unreachable ({why}): try again"))
    }

    async fn head(&self, client: &Client) -> Option<Version> {
        let row = timed(client.query_opt(HEAD, &[])).await.ok().flatten()?;
        Some(version_of(&row))
    }

    /// Keeps the connection (reconnecting) and the mirror in step until `shutdown`.
    pub(crate) async fn run(self: Arc<Self>, source: Arc<ConfigSource>, shutdown: CancellationToken) {
        loop {
            let reason = tokio::select! {
                _ = shutdown.cancelled() => return,
                reason = self.session(&source) => reason,
            };
            self.mark_down(&reason);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RECONNECT) => {}
            }
        }
    }

    /// One connection: connect, create the table, listen, then mirror on every notification
    /// and poll. Returns why it ended.
    async fn session(&self, source: &ConfigSource) -> String {
        let connected = tokio::time::timeout(STATEMENT_TIMEOUT, tokio_postgres::connect(&self.conninfo, NoTls)).await;
        let (client, mut connection) = match connected {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return e.to_string(),
            Err(_) => return format!("no connection within {STATEMENT_TIMEOUT:?}"),
        };
        // The connection is driven here, so its notifications can be read.
        let (wake_tx, mut wake) = tokio::sync::mpsc::unbounded_channel::<()>();
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(_))) => {
                        let _ = wake_tx.send(());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return e.to_string(),
                    None => return "the database closed the connection".to_owned(),
                }
            }
        });
        let client = Arc::new(client);
        let reason = async {
            timed(client.batch_execute(SCHEMA)).await.map_err(|e| e.to_string())?;
            if let Err(e) = timed(client.batch_execute(&format!("LISTEN {CHANNEL}"))).await {
                tracing::warn!(error = %e, "LISTEN refused (CockroachDB has none): new versions are heard by polling");
            }
            *lock(&self.client) = Some(client.clone());
            self.mark_up();
            if let Some(seed) = &source.seed
                && self.head(&client).await.is_none()
            {
                // Every member may try: the compare-and-swap lets one of them write version 1.
                let message = format!("seeded from {}", source.path.display());
                match self.write(0, seed.canonical(), "file", &message).await {
                    Ok(meta) => tracing::info!(
                        version = meta.version,
                        "fleet document seeded into the database from the local file"
                    ),
                    Err(WriteError::Stale { .. }) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot seed the database"),
                }
            }
            loop {
                self.mirror(&client, source).await?;
                tokio::select! {
                    _ = wake.recv() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        };
        let reason: Result<(), String> = tokio::select! {
            r = reason => r,
            ended = driver => Err(ended.unwrap_or_else(|e| e.to_string())),
        };
        reason.err().unwrap_or_default()
    }

    /// Copies the versions the mirror lacks; asks for a reload when the head moved.
    async fn mirror(&self, client: &Client, source: &ConfigSource) -> Result<(), String> {
        loop {
            let known = source.with_store(|s| s.history().map(|m| m.version).max().unwrap_or(0)).unwrap_or(0);
            let rows = timed(client.query(SINCE, &[&to_i64(known), &BATCH])).await.map_err(|e| e.to_string())?;
            self.mark_up();
            if rows.is_empty() {
                return Ok(());
            }
            let count = rows.len();
            for row in rows {
                let meta = version_of(&row);
                let document: String = row.get(5);
                let version = meta.version;
                match source.learn(meta, document.as_bytes()) {
                    Ok(_) => tracing::info!(version, "fleet document read from the database"),
                    // A row whose document fails its hash is corrupt: say so, and go on
                    // without it (the next version written replaces it as head).
                    Err(e) => {
                        tracing::error!(version, error = %e, "config database row rejected");
                        return Ok(());
                    }
                }
            }
            source.reload_wanted().notify_one();
            if i64::try_from(count).unwrap_or(i64::MAX) < BATCH {
                return Ok(());
            }
        }
    }
}

/// The mirror of the table in `state_dir/postgres/`.
pub(crate) fn open_mirror(state_dir: &std::path::Path) -> Result<crate::versions::Opened, super::OpenError> {
    let dir = state_dir.join("postgres");
    std::fs::create_dir_all(&dir).map_err(|source| super::OpenError::StateDir { path: dir.clone(), source })?;
    Ok(VersionStore::open(&dir)?)
}

async fn timed<T>(f: impl Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T, TimedError> {
    match tokio::time::timeout(STATEMENT_TIMEOUT, f).await {
        Ok(r) => r.map_err(TimedError::Db),
        Err(_) => Err(TimedError::Timeout),
    }
}

/// A statement that failed, or took too long.
#[derive(Debug)]
enum TimedError {
    Db(tokio_postgres::Error),
    Timeout,
}

impl TimedError {
    fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            TimedError::Db(e) => e.code(),
            TimedError::Timeout => None,
        }
    }
}

impl std::fmt::Display for TimedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimedError::Db(e) => match e.as_db_error() {
                Some(db) => write!(f, "{}: {}", db.code().code(), db.message()),
                None => write!(f, "{e}"),
            },
            TimedError::Timeout => write!(f, "no answer within {STATEMENT_TIMEOUT:?}"),
        }
    }
}

/// A version's columns, in the order `HEAD` and `SINCE` select them.
fn version_of(row: &tokio_postgres::Row) -> Version {
    Version {
        version: from_i64(row.get(0)),
        hash: row.get(1),
        author: row.get(2),
        at_ms: from_i64(row.get(3)),
        message: row.get(4),
        superseded: false,
    }
}

/// Versions and times are BIGINT: i64 on the wire.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_i64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
