//! The HTTP connector in process: `run()` on port 0, spoken to over a real TCP socket the way
//! PowerDNS speaks (keep-alive, `text/javascript` bodies), plus the refusals and hot reload.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
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
    let config = geolb_config::load(&config_path).unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = http.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(geolb_resolver::run(
        config_path,
        config,
        geolb_resolver::Listeners { http, admin: None },
        shutdown.clone(),
    ));
    Server { addr, shutdown, task, dir }
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
