//! Both remote-backend connectors in process: `run()` on port 0 and a unix socket in a temporary
//! directory, spoken to the way PowerDNS speaks (HTTP: keep-alive, `text/javascript` bodies;
//! unix: one JSON object per line, `initialize` first), plus the refusals, the socket file's
//! life cycle and hot reload.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_util::sync::CancellationToken;

const ZONE: &str = "$ORIGIN example.net.
$TTL 300
@   IN SOA ns1.example.net. hostmaster.example.net. 1 3600 600 604800 300
@   IN NS  ns1.example.net.
cdn IN A   192.0.2.1
cdn IN MX  10 mail.example.net.
";

fn config_text(dir: &Path, extra: &str) -> String {
    config_text_with(dir, "", extra)
}

fn config_text_with(dir: &Path, zone_extra: &str, extra: &str) -> String {
    format!(
        r#"default_location = {{ pop = "fra" }}
[resolver]
max_request_bytes = 4096
[[zones]]
origin = "example.net."
file = "{}"
{zone_extra}
[[pops]]
id = "fra"
lat = 50.11
lon = 8.68
[[nodes]]
id = "fra-1"
pop = "fra"
ipv4 = "192.0.2.10"
[[services]]
name = "cdn.example.net."
types = ["A"]
{extra}
"#,
        dir.join("example.net.zone").display()
    )
}

struct Server {
    addr: std::net::SocketAddr,
    socket: PathBuf,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), geolb_resolver::Error>>,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(name: &str) -> Server {
    start_with(name, "").await
}

async fn start_with(name: &str, zone_extra: &str) -> Server {
    let dir = std::env::temp_dir().join(format!("geolb-http-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("example.net.zone"), ZONE).unwrap();
    let config_path = dir.join("geolb.toml");
    std::fs::write(&config_path, config_text_with(&dir, zone_extra, "")).unwrap();
    let (source, config) = geolb_member::fleet::ConfigSource::open(&config_path).unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = http.local_addr().unwrap();
    let socket = dir.join("pdns.sock");
    let unix = Some(geolb_resolver::server::unix::bind(&socket, 0o660).unwrap());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(geolb_resolver::run(
        source,
        config,
        geolb_resolver::Listeners::bound(http, unix),
        shutdown.clone(),
    ));
    Server { addr, socket, shutdown, task, dir }
}

/// Sends one request on `stream` and reads one response: (status, headers, body).
async fn exchange(stream: &mut TcpStream, head: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    read_response(stream).await
}

async fn read_response(stream: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await.unwrap().unwrap();
                assert!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let status = head[9..12].parse().unwrap();
            return (status, head, buf[end + 4..end + 4 + len].to_vec());
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn post(body: &str) -> String {
    format!(
        "POST /dns HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/javascript; charset=utf-8\r\nAccept: application/json\r\nConnection: Keep-Alive\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
}

fn lookup(qname: &str, qtype: &str) -> String {
    format!(
        r#"{{"method":"lookup","parameters":{{"qtype":"{qtype}","qname":"{qname}","remote":"127.0.0.1","local":"127.0.0.1","real-remote":"203.0.113.0/24","zone-id":1}}}}"#
    )
}

async fn call(stream: &mut TcpStream, body: &str) -> (u16, serde_json::Value) {
    let (status, _, bytes) = exchange(stream, &post(body), body.as_bytes()).await;
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn keep_alive_calls_as_pdns_sends_them() {
    let server = start("keepalive").await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..3 {
        let (status, v) = call(&mut s, &lookup("cdn.example.net.", "ANY")).await;
        assert_eq!(status, 200);
        let recs = v["result"].as_array().unwrap();
        let types: Vec<&str> = recs.iter().map(|r| r["qtype"].as_str().unwrap()).collect();
        // The zone's placeholder A is replaced by geolb's; the MX is kept.
        assert_eq!(types, ["A", "MX"], "{v}");
        assert_eq!(recs[0]["content"], "192.0.2.10");
        assert_eq!(recs[0]["ttl"], 30);
        assert_eq!(recs[1]["content"], "10 mail.example.net.");
    }
    let (status, v) = call(&mut s, &lookup("example.net.", "SOA")).await;
    assert_eq!((status, v), (200, serde_json::json!({"result": false})));
    let (status, v) = call(&mut s, r#"{"method":"initialize","parameters":{}}"#).await;
    assert_eq!((status, v), (200, serde_json::json!({"result": true})));
    // The zone's metadata, as mirrored in the config (none here: an empty map, not `false`).
    let (status, v) = call(&mut s, r#"{"method":"getAllDomainMetadata","parameters":{"name":"example.net."}}"#).await;
    assert_eq!((status, v), (200, serde_json::json!({"result": {}})));
}

#[tokio::test]
async fn malformed_and_oversized_requests_are_refused() {
    let server = start("refusals").await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let (status, v) = call(&mut s, "{\"method\": ").await;
    assert_eq!(status, 400);
    assert!(v["log"][0].as_str().unwrap().contains("malformed"), "{v}");
    // The connection survives a bad request.
    let (status, _) = call(&mut s, &lookup("cdn.example.net.", "A")).await;
    assert_eq!(status, 200);

    // Declared too large: refused before reading, and the connection is closed.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let head = "POST /dns HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let (status, headers, _) = read_response(&mut s).await;
    assert_eq!(status, 413);
    assert!(headers.to_ascii_lowercase().contains("connection: close"), "{headers}");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert_eq!(n, 0, "connection must be closed after a refused body");

    // Chunked and too large: refused once the bound is crossed.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let head = "POST /dns HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 3000, "a".repeat(3000));
    s.write_all(chunk.as_bytes()).await.unwrap();
    s.write_all(chunk.as_bytes()).await.unwrap();
    let (status, _, _) = read_response(&mut s).await;
    assert_eq!(status, 413);

    // Not POST.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let (status, _, body) = exchange(&mut s, "GET /dns/lookup/x./ANY HTTP/1.1\r\nHost: x\r\n\r\n", b"").await;
    assert_eq!(status, 405);
    assert!(String::from_utf8_lossy(&body).contains("post_json=1"));
    let (status, _, _) = exchange(&mut s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn calls_are_taken_on_the_dns_path_only_and_every_other_path_is_404() {
    let server = start("paths").await;
    let body = lookup("cdn.example.net.", "A");
    for path in ["/", "/other", "/dnsx", "/api/v1/state", "/healthz/x", "/DNS"] {
        for method in ["POST", "GET", "PUT", "DELETE", "PATCH"] {
            // A connection each: the refused body is left unread.
            let mut s = TcpStream::connect(server.addr).await.unwrap();
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/javascript\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let (status, _, reply) = exchange(&mut s, &head, body.as_bytes()).await;
            assert_eq!(status, 404, "{method} {path}: {}", String::from_utf8_lossy(&reply));
            let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
            assert!(reply["log"][0].as_str().unwrap().contains("PowerDNS calls go to /dns"), "{reply}");
        }
    }
    // The call path, also with a trailing slash and a query, answers; other methods on it are 405.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    for path in ["/dns", "/dns/", "/dns?x=1"] {
        let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len());
        let (status, _, reply) = exchange(&mut s, &head, body.as_bytes()).await;
        let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!((status, &reply["result"][0]["content"]), (200, &serde_json::json!("192.0.2.10")), "{path}");
    }
    let (status, _, _) = exchange(&mut s, "PUT /dns HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"").await;
    assert_eq!(status, 405);
    let (status, _, _) = exchange(&mut s, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"").await;
    assert_eq!(status, 405);
    let (status, _, _) = exchange(&mut s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn zone_changes_are_picked_up_and_a_broken_config_is_refused() {
    let server = start("reload").await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    // Give the watcher a moment to be in place.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A TXT record appears in the zone file: geolb answers it without a restart.
    std::fs::write(server.dir.join("example.net.zone"), format!("{ZONE}cdn IN TXT \"hello\"\n")).unwrap();
    let mut seen = false;
    for _ in 0..100 {
        let (_, v) = call(&mut s, &lookup("cdn.example.net.", "TXT")).await;
        if v["result"][0]["content"] == "\"hello\"" {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the zone change was not picked up within 5 s");
    // A broken config is refused: the running one keeps answering.
    std::fs::write(server.dir.join("geolb.toml"), config_text(&server.dir, "bogus = 1")).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (status, v) = call(&mut s, &lookup("cdn.example.net.", "A")).await;
    assert_eq!((status, &v["result"][0]["content"]), (200, &serde_json::json!("192.0.2.10")));
    // A valid change applies.
    std::fs::write(server.dir.join("geolb.toml"), config_text(&server.dir, "ttl = 45")).unwrap();
    let mut ttl = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, v) = call(&mut s, &lookup("cdn.example.net.", "A")).await;
        ttl = v["result"][0]["ttl"].clone();
        if ttl == 45 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ttl, 45, "the new config was not applied within 5 s");
}

#[tokio::test]
async fn shutdown_stops_run() {
    let mut server = start("shutdown").await;
    server.shutdown.cancel();
    let task = &mut server.task;
    let res = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert!(matches!(res, Ok(Ok(Ok(())))), "run() did not return cleanly after shutdown: {res:?}");
}

#[tokio::test]
async fn zone_metadata_is_answered_from_the_config() {
    let server =
        start_with("metadata", r#"metadata = { NSEC3PARAM = ["1 0 0 -"], SOA-EDIT = ["INCEPTION-INCREMENT"] }"#).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let (_, v) = call(&mut s, r#"{"method":"getAllDomainMetadata","parameters":{"name":"Example.NET."}}"#).await;
    assert_eq!(v, serde_json::json!({"result": {"NSEC3PARAM": ["1 0 0 -"], "SOA-EDIT": ["INCEPTION-INCREMENT"]}}));
    let (_, v) =
        call(&mut s, r#"{"method":"getDomainMetadata","parameters":{"name":"example.net.","kind":"NSEC3PARAM"}}"#)
            .await;
    assert_eq!(v, serde_json::json!({"result": ["1 0 0 -"]}));
    let (_, v) =
        call(&mut s, r#"{"method":"getDomainMetadata","parameters":{"name":"example.net.","kind":"PRESIGNED"}}"#).await;
    assert_eq!(v, serde_json::json!({"result": []}));
    let (_, v) = call(&mut s, r#"{"method":"getAllDomainMetadata","parameters":{"name":"other.org."}}"#).await;
    assert_eq!(v, serde_json::json!({"result": {}}));
}

#[tokio::test]
async fn a_stuck_client_does_not_hold_shutdown() {
    let mut server = start("stuck").await;
    // Half a request, never finished.
    let mut stuck = TcpStream::connect(server.addr).await.unwrap();
    stuck.write_all(b"POST /dns HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown.cancel();
    // The listener closes at once: PowerDNS gets "connection refused", not a hang.
    let mut refused = false;
    for _ in 0..50 {
        if TcpStream::connect(server.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "still accepting connections after shutdown");
    // And run() returns after the shutdown grace (5 s), despite the stuck connection.
    let res = tokio::time::timeout(Duration::from_secs(8), &mut server.task).await;
    assert!(matches!(res, Ok(Ok(Ok(())))), "run() hung on a stuck connection: {res:?}");
}

// ---------------------------------------------------------------------------------------------
// The unix-socket connector

/// A PowerDNS-like unix-socket client: writes a line, reads a line.
struct LineClient {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl LineClient {
    async fn connect(path: &Path) -> LineClient {
        let (read, writer) = UnixStream::connect(path).await.unwrap().into_split();
        LineClient { reader: BufReader::new(read), writer }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
    }

    /// The next reply line as JSON; `None` at end of stream.
    async fn reply(&mut self) -> Option<serde_json::Value> {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(5), self.reader.read_line(&mut line)).await.unwrap().unwrap();
        if n == 0 {
            return None;
        }
        assert!(line.ends_with('\n'), "a reply is one line: {line:?}");
        Some(serde_json::from_str(&line).unwrap())
    }

    async fn call(&mut self, request: &str) -> serde_json::Value {
        self.send(format!("{request}\n").as_bytes()).await;
        self.reply().await.expect("a reply")
    }
}

#[tokio::test]
async fn unix_socket_calls_are_one_json_object_per_line_as_pdns_sends_them() {
    let server = start("unix-calls").await;
    let mut pdns = LineClient::connect(&server.socket).await;
    // What PowerDNS sends first on every connection: the connection string's options.
    let v = pdns.call(r#"{"method":"initialize","parameters":{"path":"/run/geolb/pdns.sock","timeout":"2000"}}"#).await;
    assert_eq!(v, serde_json::json!({"result": true}));
    let v = pdns.call(&lookup("cdn.example.net.", "ANY")).await;
    let types: Vec<&str> = v["result"].as_array().unwrap().iter().map(|r| r["qtype"].as_str().unwrap()).collect();
    assert_eq!(types, ["A", "MX"], "{v}");
    assert_eq!(v["result"][0]["content"], "192.0.2.10");
    let v = pdns.call(&lookup("example.net.", "SOA")).await;
    assert_eq!(v, serde_json::json!({"result": false}));

    // Two calls in one write, and a blank line between: two replies, in order.
    pdns.send(format!("{}\n\n{}\n", lookup("cdn.example.net.", "A"), lookup("www.example.net.", "A")).as_bytes()).await;
    assert_eq!(pdns.reply().await.unwrap()["result"][0]["content"], "192.0.2.10");
    assert_eq!(pdns.reply().await.unwrap(), serde_json::json!({"result": false}));

    // A call split over several writes is one call.
    let call = lookup("cdn.example.net.", "A");
    let (a, b) = call.split_at(call.len() / 2);
    pdns.send(a.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    pdns.send(format!("{b}\r\n").as_bytes()).await;
    assert_eq!(pdns.reply().await.unwrap()["result"][0]["content"], "192.0.2.10");
}

#[tokio::test]
async fn unix_socket_serves_many_pdns_connections_at_once() {
    let server = start("unix-many").await;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..24 {
        let path = server.socket.clone();
        clients.spawn(async move {
            let mut pdns = LineClient::connect(&path).await;
            let mut answered = 0;
            for _ in 0..50 {
                let v = pdns.call(&lookup("cdn.example.net.", "A")).await;
                answered += usize::from(v["result"][0]["content"] == "192.0.2.10");
            }
            answered
        });
    }
    // All 24 connections are open at once before any finishes its 50 calls.
    let total: usize = clients.join_all().await.into_iter().sum();
    assert_eq!(total, 24 * 50);
}

#[tokio::test]
async fn unix_socket_refuses_bad_lines_and_closes_on_an_over_long_one() {
    let server = start("unix-refusals").await;
    let mut pdns = LineClient::connect(&server.socket).await;
    // Not JSON, and not UTF-8: an error reply each, and the connection goes on.
    let v = pdns.call("{\"method\": ").await;
    assert_eq!(v["result"], false);
    assert!(v["log"][0].as_str().unwrap().contains("malformed"), "{v}");
    pdns.send(b"\xff\xfe{}\n").await;
    assert_eq!(pdns.reply().await.unwrap()["result"], false);
    let v = pdns.call(&lookup("cdn.example.net.", "A")).await;
    assert_eq!(v["result"][0]["content"], "192.0.2.10");

    // Over max_request_bytes (4096) without a newline: refused before the line ends, then closed.
    pdns.send(&vec![b'a'; 10_000]).await;
    let v = pdns.reply().await.expect("an error reply before the close");
    assert!(v["log"][0].as_str().unwrap().contains("4096"), "{v}");
    assert_eq!(pdns.reply().await, None, "the connection must be closed");

    // The connector itself goes on.
    let mut again = LineClient::connect(&server.socket).await;
    assert_eq!(again.call(&lookup("cdn.example.net.", "A")).await["result"][0]["content"], "192.0.2.10");
}

#[tokio::test]
async fn the_socket_file_is_replaced_when_stale_kept_when_live_and_removed_at_shutdown() {
    use geolb_resolver::server::unix::{BindError, bind};
    use std::os::unix::fs::PermissionsExt;

    let dir = std::env::temp_dir().join(format!("geolb-unix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pdns.sock");

    // A socket file left by a crashed resolver: nobody listens, so it is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let bound = bind(&path, 0o600).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    // While it is served, a second resolver must not steal it.
    assert!(matches!(bind(&path, 0o660), Err(BindError::InUse(_))));
    drop(bound);

    // Anything that is not a socket is never deleted.
    let file = dir.join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    assert!(matches!(bind(&file, 0o660), Err(BindError::NotASocket(_))));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    let _ = std::fs::remove_dir_all(&dir);

    // The server's socket has the default mode and is removed when it stops.
    let mut server = start("unix-lifecycle").await;
    assert_eq!(std::fs::metadata(&server.socket).unwrap().permissions().mode() & 0o777, 0o660);
    server.shutdown.cancel();
    let res = tokio::time::timeout(Duration::from_secs(8), &mut server.task).await;
    assert!(matches!(res, Ok(Ok(Ok(())))), "{res:?}");
    assert!(!server.socket.exists(), "the socket file must be removed at shutdown");
}
