//! Restarts and upgrades of `geolb-resolver` under a steady query load through real PowerDNS
//! over the unix socket, done the documented ways (docs/operations.md, "Upgrades"):
//!
//! - **upgrades**: SIGUSR2 to the running resolver, which starts its binary again with
//!   `--takeover`; the new process takes the listeners and the live PowerDNS connections over;
//! - **kill -9**: the process dies; as under systemd with `geolb-resolver.socket` and
//!   `Restart=always`, a [`Supervisor`] holding the listening sockets starts it again after the
//!   unit's `RestartSec=` with the sockets passed as `LISTEN_FDS`.
//!
//! Shared by `tests/tests/upgrade.rs` (a few of each, asserted) and `bench/restart` (many,
//! printed).

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use command_fds::{CommandFdExt, FdMapping};
use tokio::time::{Instant, sleep};

use crate::load::{Asked, Load, Outcome, failures};
use crate::stack::{self, Connector};
use crate::{KillOnDrop, Launch, Pdns, QueryOptions, TestDir, workspace_bin, workspace_root};

/// Questions of the load: a geo-balanced name (from a London client network) and a static one
/// (only in the zone files; PowerDNS still asks geolb first, so it fails too while geolb is
/// unreachable).
pub fn questions() -> Result<Vec<QueryOptions>> {
    Ok(vec![
        QueryOptions::new("cdn.example.net.", "A").ecs(Some("81.2.69.0/24".parse()?)),
        QueryOptions::new("www.example.net.", "A"),
    ])
}

/// PowerDNS settings of the runs: no packet or query cache, so every question reaches geolb.
pub const UNCACHED: &[(&str, &str)] = &[("cache-ttl", "0"), ("query-cache-ttl", "0"), ("negquery-cache-ttl", "0")];

/// What happened around each restart.
#[derive(Debug, Clone)]
pub struct Restart {
    /// Questions asked from its signal to the next restart's (or the end of the load).
    pub asked: usize,
    /// Of those, the failed ones (SERVFAIL, another error, no answer).
    pub failed: Vec<Asked>,
    /// From the signal until the new process served.
    pub took: Duration,
    /// From the signal to the last failed question (zero without one).
    pub window: Duration,
}

/// Whether `pid` still runs (a zombie does not).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Sends `signal` (`USR2`, `KILL`, …) to `pid`.
pub fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill").args(["-s", signal, &pid.to_string()]).status().context("run kill")?;
    ensure!(status.success(), "kill -s {signal} {pid} failed");
    Ok(())
}

/// Kills a process that is not a child of this one (an upgraded resolver) when dropped.
#[derive(Debug)]
pub struct PidGuard(pub u32);

impl Drop for PidGuard {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = signal(self.0, "KILL");
        }
    }
}

/// Upgrades the resolver running as `pid` (logging to `log`'s file) by SIGUSR2; returns the new
/// process's pid once the old one has exited.
pub async fn upgrade(log: &KillOnDrop, pid: u32, timeout: Duration) -> Result<u32> {
    let offset = log.log_len();
    signal(pid, "USR2")?;
    // Not `wait_for_log_line_after`: the first process, whose log this is, has exited.
    let line = wait_for_line(log.log_path(), offset, "handing over to the new resolver", timeout).await?;
    let successor: u32 = line
        .split("successor=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .with_context(|| format!("no successor pid in {line:?}"))?;
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        ensure!(Instant::now() < deadline, "the old resolver {pid} still runs {timeout:?} after handing over");
        sleep(Duration::from_millis(5)).await;
    }
    Ok(successor)
}

/// Waits for a line containing `pattern` written to `log` after `offset`.
pub async fn wait_for_line(log: &Path, offset: u64, pattern: &str, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read(log).unwrap_or_default();
        let after = String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default()).into_owned();
        if let Some(line) = after.lines().find(|l| l.contains(pattern)) {
            return Ok(line.to_owned());
        }
        if Instant::now() > deadline {
            bail!("no line with {pattern:?} in {} within {timeout:?}:\n{after}", log.display());
        }
        sleep(Duration::from_millis(2)).await;
    }
}

/// PowerDNS and a resolver started as a plain process, for upgrades.
pub struct UpgradeStack {
    /// PowerDNS, asking the resolver over its unix socket.
    pub pdns: Pdns,
    /// The first resolver process (its log is every later one's: they inherit it).
    pub resolver: stack::Resolver,
    /// The resolver serving now, once upgraded (killed with the stack).
    current: std::sync::Mutex<Option<PidGuard>>,
}

impl UpgradeStack {
    /// Starts the world example's resolver and PowerDNS (`launch=remote,bind`, uncached).
    pub async fn start() -> Result<UpgradeStack> {
        let resolver = stack::start_resolver("").await?;
        let pdns = stack::start_pdns_with(&resolver, Launch::RemoteBind, false, Connector::Unix, UNCACHED).await?;
        Ok(UpgradeStack { pdns, resolver, current: Default::default() })
    }

    /// `count` upgrades under a load of `rate` questions per second, `pause` apart.
    pub async fn upgrades(&self, count: usize, rate: u32, pause: Duration) -> Result<Vec<Restart>> {
        let current = || self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        under_load(&self.pdns, count, rate, pause, || async {
            let pid = current().as_ref().map_or(self.resolver.process.id(), |g| g.0);
            let started = Instant::now();
            let next = upgrade(&self.resolver.process, pid, Duration::from_secs(20)).await?;
            // The old one is gone: its guard has nothing left to kill.
            *current() = Some(PidGuard(next));
            Ok(started.elapsed())
        })
        .await
    }
}

/// `count` restarts done by `restart` (which returns how long one took) under a load of `rate`
/// questions per second through `pdns`, `pause` apart.
async fn under_load<F, Fut>(
    pdns: &Pdns,
    count: usize,
    rate: u32,
    pause: Duration,
    mut restart: F,
) -> Result<Vec<Restart>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Duration>>,
{
    let load = Load::start(pdns.addr(), &questions()?, rate, Duration::from_secs(3)).await?;
    sleep(pause).await;
    let mut spans = Vec::new();
    for _ in 0..count {
        let from = load.elapsed();
        match restart().await {
            Ok(took) => spans.push((from, took)),
            Err(e) => {
                let _ = load.stop().await;
                return Err(e);
            }
        }
        sleep(pause).await;
    }
    let asked = load.stop().await?;
    Ok(restarts(&asked, &spans))
}

/// Each restart's questions: from its start to the start of the next one (the last: to the end).
fn restarts(asked: &[Asked], spans: &[(Duration, Duration)]) -> Vec<Restart> {
    spans
        .iter()
        .enumerate()
        .map(|(i, &(from, took))| {
            let until = spans.get(i + 1).map_or(Duration::MAX, |next| next.0);
            let these: Vec<Asked> = asked.iter().filter(|a| a.at >= from && a.at < until).copied().collect();
            let failed = failures(&these);
            let window = failed.iter().map(|a| a.at.saturating_sub(from)).max().unwrap_or_default();
            Restart { asked: these.len(), failed, took, window }
        })
        .collect()
}

/// Holds the resolver's listening sockets and starts it again whenever it exits, after
/// `restart_sec`, passing them as `LISTEN_FDS` (what systemd does with `geolb-resolver.socket`
/// and `Restart=always`).
pub struct Supervisor {
    /// The resolver's current pid.
    pub pid: Arc<std::sync::atomic::AtomicU32>,
    /// Its log (all its runs).
    pub log: PathBuf,
    /// The unix connector socket.
    pub socket: PathBuf,
    /// The HTTP connector URL.
    pub url: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: TestDir,
}

/// `RestartSec=` of `deploy/systemd/geolb-resolver.service`.
pub fn unit_restart_sec() -> Result<Duration> {
    let unit = std::fs::read_to_string(workspace_root().join("deploy/systemd/geolb-resolver.service"))?;
    let value = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("RestartSec="))
        .context("geolb-resolver.service has no RestartSec=")?
        .trim()
        .to_owned();
    let duration = if let Some(ms) = value.strip_suffix("ms") {
        Duration::from_millis(ms.parse()?)
    } else {
        Duration::from_secs_f64(value.trim_end_matches('s').parse()?)
    };
    Ok(duration)
}

impl Supervisor {
    /// Binds the sockets and starts the world example's resolver on them.
    pub async fn start(restart_sec: Duration) -> Result<Supervisor> {
        let dir = TestDir::new("geolb-supervised")?;
        let config = stack::world_config(&dir, "")?;
        let socket = dir.join("pdns.sock");
        let unix = std::os::unix::net::UnixListener::bind(&socket)?;
        let http = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = http.local_addr()?;
        let log = dir.join("geolb-resolver.log");
        let bin = workspace_bin("geolb-resolver")?;
        let stop = Arc::new(AtomicBool::new(false));
        let pid = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let unix: OwnedFd = unix.into();
        let http: OwnedFd = http.into();
        let spawn = {
            let (config, socket, log, bin) = (config.clone(), socket.clone(), log.clone(), bin.clone());
            move || -> Result<std::process::Child> { spawn_activated(&bin, &config, &socket, addr, &log, &unix, &http) }
        };
        let mut child = spawn()?;
        pid.store(child.id(), Ordering::SeqCst);
        let thread = std::thread::spawn({
            let (stop, pid) = (stop.clone(), pid.clone());
            move || {
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) => {
                            if stop.load(Ordering::SeqCst) {
                                return;
                            }
                            std::thread::sleep(restart_sec);
                            match spawn() {
                                Ok(next) => {
                                    pid.store(next.id(), Ordering::SeqCst);
                                    child = next;
                                }
                                Err(e) => {
                                    eprintln!("supervisor: cannot restart the resolver: {e:#}");
                                    return;
                                }
                            }
                        }
                        Ok(None) if stop.load(Ordering::SeqCst) => {
                            let _ = child.kill();
                            let _ = child.wait();
                            return;
                        }
                        Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                        Err(_) => return,
                    }
                }
            }
        });
        let supervisor =
            Supervisor { pid, log, socket, url: format!("http://{addr}/dns"), stop, thread: Some(thread), _dir: dir };
        supervisor.wait_serving(0, Duration::from_secs(20)).await?;
        Ok(supervisor)
    }

    /// Waits until the log has a "serving" line written after `offset`.
    async fn wait_serving(&self, offset: u64, timeout: Duration) -> Result<()> {
        wait_for_line(&self.log, offset, "listening on unix:", timeout).await.map(drop)
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    /// Ends the resolver with `signal` (`KILL`: a crash; `TERM`: `systemctl restart`); returns
    /// once the restarted one serves, and how long that took.
    pub async fn restart(&self, signal_name: &str) -> Result<Duration> {
        let offset = self.log_len();
        let pid = self.pid.load(Ordering::SeqCst);
        let started = Instant::now();
        signal(pid, signal_name)?;
        self.wait_serving(offset, Duration::from_secs(20)).await?;
        Ok(started.elapsed())
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Ok(log) = std::fs::read_to_string(&self.log)
            && std::thread::panicking()
        {
            eprintln!("--- supervised geolb-resolver log ---\n{log}");
        }
    }
}

/// Starts the resolver with `unix` as fd 3 and `http` as fd 4, `LISTEN_FDS=2` and `LISTEN_PID`
/// its own pid (set by the shell that execs it).
fn spawn_activated(
    bin: &Path,
    config: &Path,
    socket: &Path,
    http_addr: SocketAddr,
    log: &Path,
    unix: &OwnedFd,
    http: &OwnedFd,
) -> Result<std::process::Child> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut command = Command::new("sh");
    command
        .args(["-c", r#"LISTEN_PID=$$ exec "$0" "$@""#])
        .arg(bin)
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(http_addr.to_string())
        .arg("--socket")
        .arg(socket)
        .env("LISTEN_FDS", "2")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    command
        .fd_mappings(vec![
            FdMapping { parent_fd: unix.try_clone()?, child_fd: 3 },
            FdMapping { parent_fd: http.try_clone()?, child_fd: 4 },
        ])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(command.spawn()?)
}

/// PowerDNS in front of a [`Supervisor`]'s resolver.
pub struct KillStack {
    /// PowerDNS.
    pub pdns: Pdns,
    /// The supervised resolver.
    pub supervisor: Supervisor,
}

impl KillStack {
    /// Starts the supervised resolver (restarted after the unit's `RestartSec=`) and PowerDNS.
    pub async fn start() -> Result<KillStack> {
        let supervisor = Supervisor::start(unit_restart_sec()?).await?;
        let pdns =
            stack::start_pdns_at(&supervisor.socket, &supervisor.url, Launch::RemoteBind, Connector::Unix, UNCACHED)
                .await?;
        Ok(KillStack { pdns, supervisor })
    }

    /// `count` restarts by `signal_name` (`KILL`, `TERM`) under a load of `rate` questions per
    /// second, `pause` apart.
    pub async fn restarts(&self, signal_name: &str, count: usize, rate: u32, pause: Duration) -> Result<Vec<Restart>> {
        under_load(&self.pdns, count, rate, pause, || self.supervisor.restart(signal_name)).await
    }
}

/// How many of `asked` ended as `outcome`.
pub fn count(asked: &[Asked], outcome: Outcome) -> usize {
    asked.iter().filter(|a| a.outcome == outcome).count()
}
