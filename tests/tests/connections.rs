//! Nothing that can connect wears the resolver down: a real `geolb-resolver`, run with a small
//! file descriptor limit (`ulimit -Sn`), is flooded over loopback with idle and half-sent
//! connections to its admin port and its HTTP connector. The unix connector, PowerDNS's kept
//! connection and (after the timeouts) new requests keep working, the floods are closed at
//! their timeouts, and every refusal is counted in `/metrics`. And a removed admin token file
//! revokes its token. A prober whose admin port is flooded the same way goes on checking.
//!
//! Before the connection limits, 1,100 idle admin connections under a soft limit of 1024 left
//! no descriptor: the unix connector, the HTTP connector and the admin API all stopped
//! answering, for as long as the connections stayed open.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use geolb_tests::cluster::{NodeServer, http, http_with_body, metric, metrics};
use geolb_tests::{KillOnDrop, TestDir, unique_loopback, workspace_bin, workspace_root};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

/// Both listeners' limits in the test, shortened.
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
const IDLE_TIMEOUT: Duration = Duration::from_secs(6);
const ADMIN_CAP: usize = 200;
const HTTP_CAP: usize = 300;
/// Idle connections opened to each listener.
const FLOOD: usize = 600;
/// Of them, this many send half a request head first.
const HALF_SENT: usize = 50;
/// The resolver's soft descriptor limit: below both floods together, above both caps.
const OPEN_FILES: u64 = 800;
/// Slack for the machine's load on top of a timeout.
const SLACK: Duration = Duration::from_secs(4);

const TOKEN: &str = "0123456789abcdef-connections";

/// A `geolb-resolver` with `[member]` (so an admin API) and `extra` local TOML.
struct Resolver {
    process: KillOnDrop,
    http: SocketAddr,
    admin: SocketAddr,
    socket: PathBuf,
    token_file: PathBuf,
    _dir: TestDir,
}

async fn start(extra_resolver: &str, extra_admin: &str) -> Result<Resolver> {
    let dir = TestDir::new("geolb-connections")?;
    let key = workspace_root().join("config/examples/cluster.key");
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, TOKEN)?;
    let ip = unique_loopback();
    let config = format!(
        r#"default_location = {{ pop = "fra" }}
[[pops]]
id = "fra"
lat = 50.11
lon = 8.68
[[nodes]]
id = "fra-1"
pop = "fra"
ipv4 = "192.0.2.1"
[[services]]
name = "cdn.example.net."
types = ["A"]
[resolver]
{extra_resolver}
[admin]
token_file = {token_file:?}
{extra_admin}
[cluster]
id = "connections"
key_file = {key:?}
seeds = []
[member]
id = "dns-1"
gossip_listen = "{ip}:0"
admin_listen = "{ip}:0"
state_dir = {:?}
"#,
        dir.join("state")
    );
    let config_path = dir.join("geolb.toml");
    std::fs::write(&config_path, config)?;
    let socket = dir.join("pdns.sock");
    let bin = workspace_bin("geolb-resolver")?;
    // The soft limit only: the resolver could raise it again, and does not.
    let mut command = Command::new("bash");
    command
        .args(["-c", &format!("ulimit -Sn {OPEN_FILES} && exec \"$0\" \"$@\"")])
        .arg(bin)
        .arg("--config")
        .arg(&config_path)
        .args(["--listen", &format!("{ip}:0"), "--socket"])
        .arg(&socket);
    let process = KillOnDrop::spawn("geolb-resolver", &mut command, dir.path())?;
    let http = process.wait_for_socket_addr(r"listening on http://\S+/dns", Duration::from_secs(15)).await?;
    let admin = process.wait_for_socket_addr("admin listening on http://", Duration::from_secs(15)).await?;
    process.wait_for_log_line("listening on unix:", Duration::from_secs(15)).await?;
    Ok(Resolver { process, http, admin, socket, token_file, _dir: dir })
}

/// A remote-backend call over the unix connector, as PowerDNS makes it.
async fn unix_call(socket: &std::path::Path) -> Result<String> {
    let call = async {
        let mut stream = UnixStream::connect(socket).await.context("connect the unix connector")?;
        stream.write_all(b"{\"method\":\"initialize\",\"parameters\":{}}\n").await?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await?;
        anyhow::Ok(line)
    };
    tokio::time::timeout(Duration::from_secs(5), call).await.context("the unix connector did not answer in 5 s")?
}

fn lookup_body() -> String {
    r#"{"method":"lookup","parameters":{"qtype":"A","qname":"cdn.example.net.","remote":"127.0.0.1","local":"127.0.0.1","real-remote":"203.0.113.0/24","zone-id":1}}"#
        .to_owned()
}

/// One keep-alive request on `stream`, as PowerDNS's HTTP connector sends it: (status, body).
async fn keep_alive(stream: &mut TcpStream, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/javascript; charset=utf-8\r\nConnection: Keep-Alive\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .context("no Content-Length")?
                    .parse()?;
                if buf.len() >= end + 4 + len {
                    let status = head.get(9..12).context("no status")?.parse()?;
                    return anyhow::Ok((status, String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string()));
                }
            }
            let n = stream.read(&mut chunk).await?;
            ensure!(n > 0, "connection closed before a whole response");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.context("no response in 5 s")?
}

/// Opens `n` connections to `addr` (the first `half` send `half_head` and stop), non-blocking.
/// In batches: the listen backlog (128) would otherwise fill faster than a debug build accepts,
/// and a dropped SYN costs a second.
async fn flood(addr: SocketAddr, n: usize, half: usize, half_head: &'static [u8]) -> Result<Vec<std::net::TcpStream>> {
    tokio::task::spawn_blocking(move || {
        let mut streams = Vec::with_capacity(n);
        for i in 0..n {
            let mut s = std::net::TcpStream::connect(addr).with_context(|| format!("connection {i} to {addr}"))?;
            if i < half {
                s.write_all(half_head)?;
            }
            s.set_nonblocking(true)?;
            streams.push(s);
            if i % 50 == 49 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        anyhow::Ok(streams)
    })
    .await?
}

/// Whether the server still holds `stream` open (what it sent before closing, a 503, is read).
fn held(mut stream: &std::net::TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

fn count_held(streams: &[std::net::TcpStream]) -> usize {
    streams.iter().filter(|s| held(s)).count()
}

/// Waits until the server closed every one of `streams`; how long that took from `since`.
async fn all_closed(streams: &[std::net::TcpStream], since: Instant, within: Duration) -> Result<Duration> {
    loop {
        let open = count_held(streams);
        if open == 0 {
            return Ok(since.elapsed());
        }
        if since.elapsed() > within {
            bail!("{open} connections still open {within:?} after the flood");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a connection over the cap gets: connecting and reading, without sending (a request
/// sent after the server closed would draw a reset instead).
async fn refused_at_once(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut answer))
        .await
        .context("a connection over the cap was not closed at once")??;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

fn soft_open_files(pid: u32) -> Result<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits.lines().find(|l| l.starts_with("Max open files")).context("no Max open files")?;
    Ok(line.trim_start_matches("Max open files").split_whitespace().next().context("no soft limit")?.parse()?)
}

fn refused(text: &str, listener: &str, reason: &str) -> f64 {
    metric(text, "geolb_connections_refused_total", &[("listener", listener), ("reason", reason)]).unwrap_or(-1.0)
}

fn open(text: &str, listener: &str) -> f64 {
    metric(text, "geolb_connections_open", &[("listener", listener)]).unwrap_or(-1.0)
}

#[tokio::test]
async fn idle_and_half_sent_connections_cannot_hold_the_resolver() -> Result<()> {
    let limits = |cap: usize| {
        format!(
            "header_timeout_ms = {}\nidle_timeout_ms = {}\nmax_connections = {cap}\n",
            HEADER_TIMEOUT.as_millis(),
            IDLE_TIMEOUT.as_millis()
        )
    };
    let r = start(&limits(HTTP_CAP), &limits(ADMIN_CAP)).await?;
    let pid = r.process.id();
    ensure!(soft_open_files(pid)? == OPEN_FILES, "the resolver does not run under the test's descriptor limit");
    // PowerDNS's kept-alive HTTP connection, opened before the flood.
    let mut pdns = TcpStream::connect(r.http).await?;
    let (status, body) = keep_alive(&mut pdns, "POST", "/dns", &lookup_body()).await?;
    ensure!(status == 200 && body.contains("192.0.2.1"), "{status} {body}");

    let started = Instant::now();
    let admin_flood = flood(r.admin, FLOOD, HALF_SENT, b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await?;
    let http_flood = flood(r.http, FLOOD, HALF_SENT, b"POST /dns HTTP/1.1\r\nContent-Length: 10\r\n").await?;
    let flooded = started.elapsed();
    ensure!(flooded < HEADER_TIMEOUT / 3, "opening the floods took {flooded:?}: too slow to test the timeouts");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // (a) While the floods are held: the caps hold them, and everything else still works.
    let admin_held = count_held(&admin_flood);
    let http_held = count_held(&http_flood);
    ensure!(admin_held == ADMIN_CAP, "admin: {admin_held} of {FLOOD} idle connections held, cap {ADMIN_CAP}");
    // PowerDNS's connection takes one of the HTTP connector's slots.
    ensure!(http_held == HTTP_CAP - 1, "http: {http_held} of {FLOOD} idle connections held, cap {HTTP_CAP}");
    let fds = open_fds(pid)?;
    ensure!(
        fds < OPEN_FILES as usize - 100,
        "{fds} descriptors open under a limit of {OPEN_FILES}: the caps do not bound them"
    );
    eprintln!(
        "flood of {FLOOD} + {FLOOD} opened in {flooded:?}: held admin {admin_held}, http {http_held}; {fds} descriptors open"
    );
    let initialized = unix_call(&r.socket).await?;
    ensure!(initialized.contains("\"result\":true"), "unix connector: {initialized}");
    let (status, body) = keep_alive(&mut pdns, "POST", "/dns", &lookup_body()).await?;
    ensure!(status == 200 && body.contains("192.0.2.1"), "PowerDNS's kept connection: {status} {body}");
    let answer = refused_at_once(r.admin).await?;
    ensure!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("too many connections"),
        "admin over the cap: {answer:?}"
    );
    let answer = refused_at_once(r.http).await?;
    ensure!(answer.starts_with("HTTP/1.1 503"), "http over the cap: {answer:?}");
    // The metrics, read over PowerDNS's connection while the admin port is full.
    let (status, text) = keep_alive(&mut pdns, "GET", "/metrics", "").await?;
    ensure!(status == 200, "{status}");
    ensure!(open(&text, "admin") == ADMIN_CAP as f64, "admin open:\n{text}");
    ensure!(open(&text, "http") == HTTP_CAP as f64, "http open:\n{text}");
    ensure!(refused(&text, "admin", "limit") == (FLOOD - ADMIN_CAP + 1) as f64, "admin limit:\n{text}");
    ensure!(refused(&text, "http", "limit") == (FLOOD - HTTP_CAP + 1 + 1) as f64, "http limit:\n{text}");
    ensure!(started.elapsed() < HEADER_TIMEOUT, "the checks while held took too long: {:?}", started.elapsed());

    // (b) The idle and half-sent connections are closed at the header timeout, not before.
    let admin_closed = all_closed(&admin_flood, started, HEADER_TIMEOUT + SLACK).await?;
    let http_closed = all_closed(&http_flood, started, HEADER_TIMEOUT + SLACK).await?;
    for (listener, closed) in [("admin", admin_closed), ("http", http_closed)] {
        ensure!(
            closed >= HEADER_TIMEOUT,
            "{listener}: the flood was closed after {closed:?}, before the header timeout"
        );
    }
    eprintln!("floods closed after: admin {admin_closed:?}, http {http_closed:?}");
    // PowerDNS's kept connection outlives them (it is idle, not new), and goes at the idle timeout.
    let (status, _) = keep_alive(&mut pdns, "POST", "/dns", &lookup_body()).await?;
    ensure!(status == 200, "PowerDNS's kept connection after the flood: {status}");
    let last_call = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(IDLE_TIMEOUT + SLACK, pdns.read_to_end(&mut rest))
        .await
        .context("PowerDNS's idle connection was not closed at the idle timeout")??;
    let idle = last_call.elapsed();
    ensure!(idle + Duration::from_millis(200) >= IDLE_TIMEOUT, "the idle connection was closed after {idle:?}");

    // A body that stops halfway is answered 408 at the header timeout, on both listeners.
    let half_body = |addr: SocketAddr, head: String| async move {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(head.as_bytes()).await?;
        let mut answer = Vec::new();
        tokio::time::timeout(HEADER_TIMEOUT + SLACK, s.read_to_end(&mut answer)).await??;
        anyhow::Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    let admin_head = format!(
        "POST /api/v1/overrides HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{\"target\":"
    );
    let http_head = "POST /dns HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"method\":".to_owned();
    let (admin_answer, http_answer) = tokio::join!(half_body(r.admin, admin_head), half_body(r.http, http_head));
    let (admin_answer, http_answer) = (admin_answer?, http_answer?);
    ensure!(admin_answer.starts_with("HTTP/1.1 408"), "admin, half a body: {admin_answer:?}");
    ensure!(http_answer.starts_with("HTTP/1.1 408"), "http, half a body: {http_answer:?}");

    // (c) New requests are served again, and every refusal is counted.
    let (status, body) = http(r.admin, "GET", "/healthz", None).await?;
    ensure!(status == 200, "admin after the flood: {status} {body}");
    let (status, body) = http_with_body(r.http, "POST", "/dns", None, &lookup_body()).await?;
    ensure!(status == 200 && body.contains("192.0.2.1"), "http after the flood: {status} {body}");
    let text = metrics(r.admin).await?;
    ensure!(refused(&text, "admin", "limit") == (FLOOD - ADMIN_CAP + 1) as f64, "admin limit:\n{text}");
    ensure!(refused(&text, "admin", "header_timeout") == ADMIN_CAP as f64, "admin header_timeout:\n{text}");
    ensure!(refused(&text, "admin", "body_timeout") == 1.0, "admin body_timeout:\n{text}");
    ensure!(refused(&text, "http", "limit") == (FLOOD - HTTP_CAP + 2) as f64, "http limit:\n{text}");
    ensure!(refused(&text, "http", "header_timeout") == (HTTP_CAP - 1) as f64, "http header_timeout:\n{text}");
    ensure!(refused(&text, "http", "idle_timeout") == 1.0, "http idle_timeout:\n{text}");
    ensure!(refused(&text, "http", "body_timeout") == 1.0, "http body_timeout:\n{text}");
    // This scrape's own connection.
    ensure!(open(&text, "admin") == 1.0, "admin open:\n{text}");
    ensure!(unix_call(&r.socket).await?.contains("\"result\":true"));
    let log = r.process.log();
    ensure!(!log.contains("accept failed"), "the resolver ran out of descriptors:\n{log}");
    ensure!(log.contains("connection limit reached"), "the refusals were not logged:\n{log}");
    Ok(())
}

#[tokio::test]
async fn removing_the_admin_token_file_revokes_the_token() -> Result<()> {
    let r = start("", "").await?;
    let drain = |token: &'static str| http(r.admin, "POST", "/api/v1/nodes/fra-1/drain", Some(token));
    let (status, body) = drain(TOKEN).await?;
    ensure!(status == 200, "drain with the token: {status} {body}");

    std::fs::remove_file(&r.token_file)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        let (status, body) = drain(TOKEN).await?;
        if status != 200 || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(status == 403 && body.contains("revoked"), "the removed token still works: {status} {body}");
    r.process.wait_for_log_line("admin token `admin` is revoked", Duration::from_secs(5)).await?;

    // A new secret in the file: it works, the old one still does not.
    const NEW: &str = "fedcba9876543210-connections";
    std::fs::write(&r.token_file, NEW)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = drain(NEW).await?;
        if status == 200 {
            break;
        }
        ensure!(Instant::now() < deadline, "the new token does not work: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = drain(TOKEN).await?;
    ensure!(status == 401, "the old token works again: {status} {body}");
    Ok(())
}

#[tokio::test]
async fn a_prober_whose_admin_port_is_flooded_goes_on_checking() -> Result<()> {
    /// The prober's own descriptors are few: a flood without the cap would take them all.
    const PROBER_OPEN_FILES: u64 = 500;
    let node = NodeServer::start().await?;
    let dir = TestDir::new("geolb-connections-prober")?;
    let key = workspace_root().join("config/examples/cluster.key");
    let ip = unique_loopback();
    // A TCP check opens a connection (a descriptor) every 200 ms.
    let config = format!(
        r#"default_location = {{ pop = "fra" }}
[checks]
kind = "tcp"
interval_ms = 200
timeout_ms = 150
rise = 1
fall = 1
[[pops]]
id = "fra"
lat = 50.11
lon = 8.68
[[nodes]]
id = "fra-1"
pop = "fra"
ipv4 = "{}"
check = {{ port = {} }}
[[services]]
name = "cdn.example.net."
types = ["A"]
[admin]
header_timeout_ms = {}
idle_timeout_ms = {}
max_connections = {ADMIN_CAP}
[cluster]
id = "connections"
key_file = {key:?}
seeds = []
[prober]
id = "prober-1"
pop = "fra"
gossip_listen = "{ip}:0"
admin_listen = "{ip}:0"
state_dir = {:?}
"#,
        node.addr.ip(),
        node.addr.port(),
        HEADER_TIMEOUT.as_millis(),
        IDLE_TIMEOUT.as_millis(),
        dir.join("state")
    );
    let config_path = dir.join("geolb.toml");
    std::fs::write(&config_path, config)?;
    let mut command = Command::new("bash");
    command
        .args(["-c", &format!("ulimit -Sn {PROBER_OPEN_FILES} && exec \"$0\" \"$@\"")])
        .arg(workspace_bin("geolb-prober")?)
        .arg("--config")
        .arg(&config_path);
    let process = KillOnDrop::spawn("geolb-prober", &mut command, dir.path())?;
    let admin = process.wait_for_socket_addr("admin listening on http://", Duration::from_secs(15)).await?;
    let checks = |text: &str, result: &str| {
        metric(text, "geolb_prober_checks_total", &[("node", "fra-1"), ("result", result)]).unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let text = metrics(admin).await?;
        if checks(&text, "up") >= 2.0 {
            break text;
        }
        ensure!(Instant::now() < deadline, "the prober's checks did not pass:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let started = Instant::now();
    let flood = flood(admin, FLOOD, HALF_SENT, b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = count_held(&flood);
    ensure!(held == ADMIN_CAP, "{held} of {FLOOD} idle connections held, cap {ADMIN_CAP}");
    let fds = open_fds(process.id())?;
    ensure!(fds < PROBER_OPEN_FILES as usize - 100, "{fds} descriptors open under a limit of {PROBER_OPEN_FILES}");
    let closed = all_closed(&flood, started, HEADER_TIMEOUT + SLACK).await?;
    ensure!(closed >= HEADER_TIMEOUT, "the flood was closed after {closed:?}, before the header timeout");

    let text = metrics(admin).await?;
    let ups = checks(&text, "up") - checks(&before, "up");
    // About one a 200 ms for the 3 s the flood was held; allow for a loaded machine.
    ensure!(ups >= 5.0, "only {ups} checks passed while the admin port was flooded:\n{text}");
    ensure!(checks(&text, "down") == 0.0, "checks failed while the admin port was flooded:\n{text}");
    ensure!(
        metric(&text, "geolb_cluster_prober_impaired", &[("prober", "prober-1")]) == Some(0.0),
        "the prober calls itself impaired:\n{text}"
    );
    ensure!(refused(&text, "admin", "limit") == (FLOOD - ADMIN_CAP) as f64, "limit:\n{text}");
    ensure!(refused(&text, "admin", "header_timeout") == ADMIN_CAP as f64, "header_timeout:\n{text}");
    let log = process.log();
    ensure!(!log.contains("Too many open files"), "the prober ran out of descriptors:\n{log}");
    Ok(())
}
