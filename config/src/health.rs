//! The health side of the config: how nodes are checked (`[checks]`, per-node `check`), the
//! gossip cluster (`[cluster]`), the quorum (`[quorum]`), this machine's prober (`[prober]`) or
//! gossip membership as a resolver (`[member]`), and the admin API (`[admin]`).
//!
//! Durations are integers with an `_ms` suffix. Every default is a named constant below.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default check interval.
pub const DEFAULT_INTERVAL_MS: u64 = 1000;
/// Default check timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 800;
/// Default successes in a row to bring a node Up.
pub const DEFAULT_RISE: u32 = 2;
/// Default failures in a row to take a node Down.
pub const DEFAULT_FALL: u32 = 2;
/// Checks one HTTP(S) connection serves before a fresh one is opened.
pub const DEFAULT_CONNECTION_REUSE: u32 = 10;
/// Default gossip interval.
pub const DEFAULT_GOSSIP_INTERVAL_MS: u64 = 500;
/// The runtime threads `[prober] threads` and `[resolver] threads` accept.
pub const THREADS: std::ops::RangeInclusive<usize> = 1..=256;

/// Why a `threads` value is refused, if it is.
pub(crate) fn threads_problem(threads: usize) -> Option<String> {
    (!THREADS.contains(&threads))
        .then(|| format!("threads {threads} is outside {}..={}", THREADS.start(), THREADS.end()))
}
/// Default share of eligible voters (by weight) that must say Down.
pub const DEFAULT_DOWN_QUORUM: f64 = 0.5;
/// Default number of probers that must agree on Down.
pub const DEFAULT_MIN_DOWN_VOTERS: usize = 2;
/// Default age after which a prober's verdicts no longer count.
pub const DEFAULT_STALE_AFTER_MS: u64 = 10_000;
/// Default time a verdict is held when no prober can vote, before failing open.
pub const DEFAULT_GRACE_MS: u64 = 60_000;
/// Default bound on checks in flight per prober.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;
/// Default share of nodes failing at once that makes a prober doubt itself (impaired).
pub const DEFAULT_IMPAIRED_SHARE: f64 = 0.5;

/// How a node is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// HTTP GET.
    Http,
    /// HTTPS GET (rustls; SNI = `host`).
    Https,
    /// TCP connect.
    Tcp,
}

/// A node's health check, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    /// Protocol.
    pub kind: CheckKind,
    /// Port on the node's address.
    pub port: u16,
    /// HTTP(S) path.
    pub path: String,
    /// HTTP Host header and TLS server name; `None` sends the address.
    pub host: Option<String>,
    /// Statuses that count as healthy.
    pub expect_status: Vec<u16>,
    /// A string the body must contain (first 64 KiB).
    pub body_contains: Option<String>,
    /// Verify the HTTPS certificate against `host`.
    pub tls_verify: bool,
    /// Time between checks.
    pub interval: Duration,
    /// Time a check may take; below `interval`.
    pub timeout: Duration,
    /// Successes in a row to come Up.
    pub rise: u32,
    /// Failures in a row to go Down.
    pub fall: u32,
    /// Random spread added to each interval.
    pub jitter: Duration,
    /// HTTP(S): how many checks one connection serves (kept alive between them) before the next
    /// check opens a fresh one; 1 opens a fresh connection for every check. A failed check always
    /// closes its connection, so the check after a failure is on a fresh one.
    pub connection_reuse: u32,
}

impl Default for CheckConfig {
    /// The built-in defaults: TCP connect to port 80 every second.
    fn default() -> Self {
        RawCheck::default().resolve().0
    }
}

/// `[checks]` and a node's `check`: every field optional, the node's over the table's over the
/// built-in defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheck {
    kind: Option<CheckKind>,
    port: Option<u16>,
    path: Option<String>,
    host: Option<String>,
    expect_status: Option<Vec<u16>>,
    body_contains: Option<String>,
    tls_verify: Option<bool>,
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
    rise: Option<u32>,
    fall: Option<u32>,
    jitter_ms: Option<u64>,
    connection_reuse: Option<u32>,
}

impl RawCheck {
    /// This over `base`, field by field.
    pub(crate) fn over(&self, base: &RawCheck) -> RawCheck {
        RawCheck {
            kind: self.kind.or(base.kind),
            port: self.port.or(base.port),
            path: self.path.clone().or_else(|| base.path.clone()),
            host: self.host.clone().or_else(|| base.host.clone()),
            expect_status: self.expect_status.clone().or_else(|| base.expect_status.clone()),
            body_contains: self.body_contains.clone().or_else(|| base.body_contains.clone()),
            tls_verify: self.tls_verify.or(base.tls_verify),
            interval_ms: self.interval_ms.or(base.interval_ms),
            timeout_ms: self.timeout_ms.or(base.timeout_ms),
            rise: self.rise.or(base.rise),
            fall: self.fall.or(base.fall),
            jitter_ms: self.jitter_ms.or(base.jitter_ms),
            connection_reuse: self.connection_reuse.or(base.connection_reuse),
        }
    }

    /// Applies the built-in defaults and checks ranges; problems are `(key, message)`.
    pub(crate) fn resolve(&self) -> (CheckConfig, Vec<(&'static str, String)>) {
        let kind = self.kind.unwrap_or(CheckKind::Tcp);
        let interval_ms = self.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS);
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS.min(interval_ms.saturating_sub(1).max(1)));
        let mut problems = Vec::new();
        if interval_ms < 100 {
            problems.push(("interval_ms", format!("interval_ms {interval_ms} is below 100")));
        }
        if timeout_ms == 0 || timeout_ms >= interval_ms {
            problems.push((
                "timeout_ms",
                format!("timeout_ms {timeout_ms} must be above 0 and below interval_ms {interval_ms}"),
            ));
        }
        let (rise, fall) = (self.rise.unwrap_or(DEFAULT_RISE), self.fall.unwrap_or(DEFAULT_FALL));
        if !(1..=100).contains(&rise) {
            problems.push(("rise", format!("rise {rise} is outside 1..=100")));
        }
        if !(1..=100).contains(&fall) {
            problems.push(("fall", format!("fall {fall} is outside 1..=100")));
        }
        let port = self.port.unwrap_or(match kind {
            CheckKind::Https => 443,
            _ => 80,
        });
        if port == 0 {
            problems.push(("port", "port 0 cannot be checked".to_owned()));
        }
        let path = self.path.clone().unwrap_or_else(|| "/".to_owned());
        if kind != CheckKind::Tcp && !path.starts_with('/') {
            problems.push(("path", format!("path `{path}` must start with `/`")));
        }
        let jitter_ms = self.jitter_ms.unwrap_or(interval_ms / 10);
        if jitter_ms >= interval_ms {
            problems.push(("jitter_ms", format!("jitter_ms {jitter_ms} must be below interval_ms {interval_ms}")));
        }
        let expect_status = self.expect_status.clone().unwrap_or_else(|| vec![200]);
        if kind != CheckKind::Tcp {
            if expect_status.is_empty() {
                problems.push(("expect_status", "expect_status is empty: no answer could count as healthy".into()));
            }
            if let Some(bad) = expect_status.iter().find(|s| !(100..=599).contains(*s)) {
                problems.push(("expect_status", format!("expect_status {bad} is not an HTTP status (100..=599)")));
            }
        }
        let connection_reuse = self.connection_reuse.unwrap_or(DEFAULT_CONNECTION_REUSE);
        if !(1..=10_000).contains(&connection_reuse) {
            problems.push(("connection_reuse", format!("connection_reuse {connection_reuse} is outside 1..=10000")));
        }
        let config = CheckConfig {
            kind,
            port,
            path,
            host: self.host.clone(),
            expect_status,
            body_contains: self.body_contains.clone(),
            tls_verify: self.tls_verify.unwrap_or(true),
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            rise,
            fall,
            jitter: Duration::from_millis(jitter_ms),
            connection_reuse,
        };
        (config, problems)
    }
}

/// The gossip cluster every prober and resolver joins.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Cluster name; members of another cluster are ignored.
    pub id: String,
    /// The shared key every gossip packet is authenticated with (≥ 32 bytes).
    pub key: Vec<u8>,
    /// Addresses (`host:port`) of members to join through.
    pub seeds: Vec<String>,
    /// Time between gossip rounds.
    pub gossip_interval: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    id: String,
    key: Option<String>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    seeds: Vec<String>,
    gossip_interval_ms: Option<u64>,
}

impl RawCluster {
    pub(crate) fn resolve(&self, base: &Path) -> (ClusterConfig, Vec<(&'static str, String)>) {
        let mut problems = Vec::new();
        let key_text = match (&self.key, &self.key_file) {
            (Some(k), None) => Some(k.trim().to_owned()),
            (None, Some(f)) => {
                let path = if f.is_absolute() { f.clone() } else { base.join(f) };
                match std::fs::read_to_string(&path) {
                    Ok(t) => Some(t.trim().to_owned()),
                    Err(e) => {
                        problems.push(("key_file", format!("cannot read cluster key {}: {e}", path.display())));
                        None
                    }
                }
            }
            _ => {
                problems
                    .push(("key", "give exactly one of `key` (hex) or `key_file` (a file holding the hex key)".into()));
                None
            }
        };
        let key = key_text.and_then(|t| match hex::decode(&t).ok() {
            Some(k) if k.len() >= 32 => Some(k),
            Some(k) => {
                problems
                    .push(("key", format!("cluster key is {} bytes; use at least 32 (openssl rand -hex 32)", k.len())));
                None
            }
            None => {
                problems.push(("key", "cluster key is not hex (openssl rand -hex 32)".into()));
                None
            }
        });
        if self.id.is_empty() {
            problems.push(("id", "cluster id is empty".into()));
        }
        let interval = self.gossip_interval_ms.unwrap_or(DEFAULT_GOSSIP_INTERVAL_MS);
        if !(50..=10_000).contains(&interval) {
            problems.push(("gossip_interval_ms", format!("gossip_interval_ms {interval} is outside 50..=10000")));
        }
        let config = ClusterConfig {
            id: self.id.clone(),
            key: key.unwrap_or_default(),
            seeds: self.seeds.clone(),
            gossip_interval: Duration::from_millis(interval),
        };
        (config, problems)
    }
}

/// How verdicts are folded into one view.
#[derive(Debug, Clone, PartialEq)]
pub struct QuorumConfig {
    /// Share of the eligible voters' weight that must say Down.
    pub down_quorum: f64,
    /// Probers that must say Down.
    pub min_down_voters: usize,
    /// A prober whose heartbeat is older than this does not vote.
    pub stale_after: Duration,
    /// How long a verdict is held when no prober can vote, before failing open.
    pub grace: Duration,
    /// Each prober's weight in the quorum, by prober id; a prober not named weighs 1.
    pub weights: BTreeMap<String, f64>,
}

impl QuorumConfig {
    /// The weight of prober `id` in the quorum.
    pub fn weight(&self, id: &str) -> f64 {
        self.weights.get(id).copied().unwrap_or(1.0)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQuorum {
    down_quorum: Option<f64>,
    min_down_voters: Option<usize>,
    stale_after_ms: Option<u64>,
    grace_ms: Option<u64>,
    #[serde(default)]
    weights: BTreeMap<String, f64>,
}

impl RawQuorum {
    pub(crate) fn resolve(&self) -> (QuorumConfig, Vec<(&'static str, String)>) {
        let mut problems = Vec::new();
        let down_quorum = self.down_quorum.unwrap_or(DEFAULT_DOWN_QUORUM);
        if !(down_quorum > 0.0 && down_quorum <= 1.0) {
            problems.push(("down_quorum", format!("down_quorum {down_quorum} is outside (0, 1]")));
        }
        let min_down_voters = self.min_down_voters.unwrap_or(DEFAULT_MIN_DOWN_VOTERS);
        if min_down_voters == 0 {
            problems.push(("min_down_voters", "min_down_voters must be at least 1".into()));
        }
        let stale_after_ms = self.stale_after_ms.unwrap_or(DEFAULT_STALE_AFTER_MS);
        if stale_after_ms == 0 {
            problems.push(("stale_after_ms", "stale_after_ms must be above 0: at 0 no prober could ever vote".into()));
        }
        for (prober, weight) in &self.weights {
            if !(weight.is_finite() && *weight > 0.0) {
                problems.push((
                    "weights",
                    format!("prober `{prober}` has weight {weight}: a weight is a number above 0 (a prober that should not vote: leave it out of the cluster)"),
                ));
            }
        }
        let config = QuorumConfig {
            down_quorum,
            min_down_voters,
            stale_after: Duration::from_millis(stale_after_ms),
            grace: Duration::from_millis(self.grace_ms.unwrap_or(DEFAULT_GRACE_MS)),
            weights: self.weights.clone(),
        };
        (config, problems)
    }
}

/// This machine as a prober.
#[derive(Debug, Clone, PartialEq)]
pub struct ProberConfig {
    /// Unique prober id (one per machine).
    pub id: String,
    /// The PoP it stands in (its region is the PoP's).
    pub pop: String,
    /// Gossip UDP address.
    pub gossip_listen: SocketAddr,
    /// Address other members reach it at (default: `gossip_listen`).
    pub gossip_advertise: Option<SocketAddr>,
    /// Admin HTTP (`/metrics`, `/api/v1/…`); loopback by default.
    pub admin_listen: SocketAddr,
    /// Addresses (TCP) that are always up: when they fail, the prober's own network is sick.
    pub canaries: Vec<SocketAddr>,
    /// Share of nodes failing at once that makes the prober doubt itself and abstain.
    pub impaired_share: f64,
    /// Checks in flight at most.
    pub max_in_flight: usize,
    /// Threads running checks and gossip: 1 (the default) runs everything on one thread, which
    /// costs the least CPU per check; more spread the handshakes of many HTTPS checks over cores.
    pub threads: usize,
    /// Where persisted state lives.
    pub state_dir: PathBuf,
}

impl ProberConfig {
    /// The keys read at start only whose value differs in `other`, for a reload to say which
    /// changes wait for the next restart. `canaries` follow reloads; `gossip_listen` and
    /// `admin_listen` are left out because the command line may override them.
    pub fn changed_keys(&self, other: &ProberConfig) -> Vec<&'static str> {
        let ProberConfig {
            id,
            pop,
            gossip_listen: _,
            gossip_advertise,
            admin_listen: _,
            canaries: _,
            impaired_share,
            max_in_flight,
            threads,
            state_dir,
        } = self;
        crate::model::changed([
            ("id", *id != other.id),
            ("pop", *pop != other.pop),
            ("gossip_advertise", *gossip_advertise != other.gossip_advertise),
            ("impaired_share", *impaired_share != other.impaired_share),
            ("max_in_flight", *max_in_flight != other.max_in_flight),
            ("threads", *threads != other.threads),
            ("state_dir", *state_dir != other.state_dir),
        ])
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProber {
    id: String,
    pop: String,
    gossip_listen: SocketAddr,
    gossip_advertise: Option<SocketAddr>,
    #[serde(default = "default_prober_admin")]
    admin_listen: SocketAddr,
    #[serde(default)]
    canaries: Vec<SocketAddr>,
    impaired_share: Option<f64>,
    max_in_flight: Option<usize>,
    threads: Option<usize>,
    state_dir: Option<PathBuf>,
}

fn default_prober_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9100))
}

impl RawProber {
    pub(crate) fn resolve(&self, base: &Path) -> (ProberConfig, Vec<(&'static str, String)>) {
        let mut problems = Vec::new();
        let impaired_share = self.impaired_share.unwrap_or(DEFAULT_IMPAIRED_SHARE);
        if !(impaired_share > 0.0 && impaired_share <= 1.0) {
            problems.push(("impaired_share", format!("impaired_share {impaired_share} is outside (0, 1]")));
        }
        let max_in_flight = self.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
        if max_in_flight == 0 {
            problems.push(("max_in_flight", "max_in_flight must be at least 1".into()));
        }
        let threads = self.threads.unwrap_or(1);
        if let Some(problem) = threads_problem(threads) {
            problems.push(("threads", problem));
        }
        if self.id.is_empty() {
            problems.push(("id", "prober id is empty".into()));
        }
        let state_dir = self.state_dir.clone().unwrap_or_else(|| PathBuf::from("/var/lib/geolb"));
        let config = ProberConfig {
            id: self.id.clone(),
            pop: self.pop.clone(),
            gossip_listen: self.gossip_listen,
            gossip_advertise: self.gossip_advertise,
            admin_listen: self.admin_listen,
            canaries: self.canaries.clone(),
            impaired_share,
            max_in_flight,
            threads,
            state_dir: if state_dir.is_absolute() { state_dir } else { base.join(state_dir) },
        };
        (config, problems)
    }
}

/// This machine as a gossip member that only observes (the resolver).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberConfig {
    /// Unique member id.
    pub id: String,
    /// Gossip UDP address.
    pub gossip_listen: SocketAddr,
    /// Address other members reach it at (default: `gossip_listen`).
    pub gossip_advertise: Option<SocketAddr>,
    /// Admin HTTP; loopback by default.
    pub admin_listen: SocketAddr,
    /// Where persisted state (the last view) lives.
    pub state_dir: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMember {
    id: String,
    gossip_listen: SocketAddr,
    gossip_advertise: Option<SocketAddr>,
    #[serde(default = "default_member_admin")]
    admin_listen: SocketAddr,
    state_dir: Option<PathBuf>,
}

fn default_member_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9101))
}

impl RawMember {
    /// `state_dir`, absolute (`/var/lib/geolb` when not given).
    pub(crate) fn state_dir(&self, base: &Path) -> PathBuf {
        let state_dir = self.state_dir.clone().unwrap_or_else(|| PathBuf::from("/var/lib/geolb"));
        if state_dir.is_absolute() { state_dir } else { base.join(state_dir) }
    }

    pub(crate) fn resolve(&self, base: &Path) -> (MemberConfig, Vec<(&'static str, String)>) {
        let mut problems = Vec::new();
        if self.id.is_empty() {
            problems.push(("id", "member id is empty".into()));
        }
        let config = MemberConfig {
            id: self.id.clone(),
            gossip_listen: self.gossip_listen,
            gossip_advertise: self.gossip_advertise,
            admin_listen: self.admin_listen,
            state_dir: self.state_dir(base),
        };
        (config, problems)
    }
}

/// The admin API's access (named bearer tokens, each read-only or read-write) and what its
/// listener allows a connection.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Every token, `token_file`'s first (named `admin`).
    pub tokens: Vec<AdminToken>,
    /// Tokens whose file is gone or empty, `(name, file)`: revoked, no request can use them,
    /// until the file holds a secret again.
    pub revoked: Vec<(String, PathBuf)>,
    /// What the admin API's listener allows a connection (`header_timeout_ms`,
    /// `idle_timeout_ms`, `max_connections`).
    pub limits: crate::ConnectionLimits,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { tokens: Vec::new(), revoked: Vec::new(), limits: crate::ConnectionLimits::ADMIN }
    }
}

impl AdminConfig {
    /// The files the tokens are read from, revoked ones too: watched, so a new token takes
    /// effect at once, and a token whose file is removed stops working at once.
    pub fn token_files(&self) -> impl Iterator<Item = &PathBuf> {
        self.tokens.iter().map(|t| &t.file).chain(self.revoked.iter().map(|(_, file)| file))
    }

    /// One line per revoked token, for the log and `--check-config`.
    pub fn revoked_warnings(&self) -> Vec<String> {
        self.revoked
            .iter()
            .map(|(name, file)| {
                format!(
                    "admin token `{name}` is revoked: {} is missing or empty (write a secret into it to use the token again)",
                    file.display()
                )
            })
            .collect()
    }

    /// The token a bearer secret names, compared in constant time with every token (the
    /// secrets are not to be guessed by timing).
    pub fn token(&self, secret: &str) -> Option<&AdminToken> {
        let mut found = None;
        for t in &self.tokens {
            if same_secret(&t.secret, secret) && found.is_none() {
                found = Some(t);
            }
        }
        found
    }
}

/// Whether two secrets are equal, compared in constant time for a given length.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One admin API token.
#[derive(Clone, PartialEq)]
pub struct AdminToken {
    /// Its name: recorded as the author of every change made with it.
    pub name: String,
    /// The bearer secret.
    pub secret: String,
    /// Whether it may change things (configuration, drains); otherwise it only reads.
    pub write: bool,
    /// The file the secret is read from (absolute).
    pub file: PathBuf,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("name", &self.name)
            .field("write", &self.write)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// What a named token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Access {
    ReadOnly,
    ReadWrite,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    file: PathBuf,
    access: Access,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    token_file: Option<PathBuf>,
    #[serde(default)]
    tokens: Vec<RawToken>,
    header_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
}

/// Shortest accepted token.
const MIN_TOKEN_LEN: usize = 16;

/// A token file as read.
enum TokenRead {
    /// The secret.
    Secret(String),
    /// The file is gone or holds only whitespace: the token is revoked. Removing the file is how
    /// an operator takes a token away; refusing the config instead would keep the old secret
    /// working.
    Revoked,
    /// Unreadable or too short: the config is refused.
    Problem(String),
}

/// Reads one token's secret from `file`.
fn read_token(base: &Path, file: &Path) -> (PathBuf, TokenRead) {
    let path = if file.is_absolute() { file.to_path_buf() } else { base.join(file) };
    let secret = match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= MIN_TOKEN_LEN => TokenRead::Secret(t.trim().to_owned()),
        Ok(t) if t.trim().is_empty() => TokenRead::Revoked,
        Ok(_) => {
            TokenRead::Problem(format!("admin token in {} is shorter than {MIN_TOKEN_LEN} characters", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => TokenRead::Revoked,
        Err(e) => TokenRead::Problem(format!("cannot read admin token {}: {e}", path.display())),
    };
    (path, secret)
}

impl RawAdmin {
    pub(crate) fn resolve(&self, base: &Path) -> (AdminConfig, Vec<(&'static str, String)>) {
        let mut problems = Vec::new();
        let mut tokens: Vec<AdminToken> = Vec::new();
        let mut revoked = Vec::new();
        let named = self.token_file.iter().map(|f| ("admin", f, true, "token_file"));
        let listed = self.tokens.iter().map(|t| (t.name.as_str(), &t.file, t.access == Access::ReadWrite, "tokens"));
        for (name, file, write, key) in named.chain(listed) {
            if name.is_empty()
                || name.len() > 64
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                problems.push((key, format!("token name `{name}` must be 1 to 64 letters, digits, `-`, `_` or `.`")));
                continue;
            }
            if tokens.iter().any(|t| t.name == name) {
                problems.push((key, format!("two tokens are named `{name}` (`token_file` is named `admin`)")));
                continue;
            }
            if revoked.iter().any(|(n, _)| n == name) {
                problems.push((key, format!("two tokens are named `{name}` (`token_file` is named `admin`)")));
                continue;
            }
            match read_token(base, file) {
                (file, TokenRead::Secret(secret)) => {
                    if tokens.iter().any(|t| t.secret == secret) {
                        problems.push((key, format!("token `{name}` has the same secret as another token")));
                    }
                    tokens.push(AdminToken { name: name.to_owned(), secret, write, file });
                }
                (file, TokenRead::Revoked) => revoked.push((name.to_owned(), file)),
                (_, TokenRead::Problem(problem)) => problems.push((key, problem)),
            }
        }
        let limits = crate::ConnectionLimits::resolve(
            self.header_timeout_ms,
            self.idle_timeout_ms,
            self.max_connections,
            crate::ConnectionLimits::ADMIN,
            &mut problems,
        );
        (AdminConfig { tokens, revoked, limits }, problems)
    }
}
