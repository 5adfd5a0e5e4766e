//! `geolb-bench-null`: the floor of `bench/dns-qps`. A PowerDNS remote backend that does nothing:
//! every `lookup` of `cdn.example.net.` gets one fixed A record, every other call `false`
//! (`initialize`: `true`). It speaks both connectors the way geolb-resolver does — one JSON
//! object per line on a unix socket, and `POST` on hyper HTTP/1.1 with keep-alive — so the
//! difference between the two programs behind the same PowerDNS is geolb's own work.
//!
//! Usage: `geolb-bench-null --unix PATH --http ADDR` (either or both).

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const RECORD: &[u8] = br#"{"result":[{"qtype":"A","qname":"cdn.example.net.","content":"192.0.2.1","ttl":30,"auth":true,"scopeMask":24}]}"#;
const TRUE: &[u8] = br#"{"result":true}"#;
const FALSE: &[u8] = br#"{"result":false}"#;

/// The fixed reply to one call; no JSON parsing, a substring test on the values (PowerDNS's
/// JSON writer puts a space after the colons on the unix connector, none over HTTP).
fn reply(request: &[u8]) -> &'static [u8] {
    let has = |needle: &[u8]| request.windows(needle.len()).any(|w| w == needle);
    if has(br#""lookup""#) && has(br#""cdn.example.net.""#) {
        RECORD
    } else if has(br#""initialize""#) {
        TRUE
    } else {
        FALSE
    }
}

/// A thread per PowerDNS connection: read a line, write a line.
fn serve_unix(listener: UnixListener) {
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || serve_line_connection(stream));
    }
}

fn serve_line_connection(stream: UnixStream) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(1024);
    let mut out = Vec::with_capacity(256);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        out.clear();
        out.extend_from_slice(reply(&line));
        out.push(b'\n');
        if writer.write_all(&out).is_err() {
            return;
        }
    }
}

async fn serve_http(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let mut response = hyper::Response::new(Full::new(Bytes::from_static(reply(&body))));
                response
                    .headers_mut()
                    .insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
                Ok::<_, Infallible>(response)
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .writev(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut unix = None;
    let mut http = None;
    for pair in args.chunks(2) {
        match pair {
            [flag, value] if flag == "--unix" => unix = Some(value.clone()),
            [flag, value] if flag == "--http" => http = Some(value.parse::<std::net::SocketAddr>()?),
            _ => return Err(format!("usage: geolb-bench-null --unix PATH --http ADDR (got {args:?})").into()),
        }
    }
    if let Some(path) = unix {
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        println!("listening on unix:{path}");
        std::thread::spawn(move || serve_unix(listener));
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        if let Some(addr) = http {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            println!("listening on http://{}/dns", listener.local_addr()?);
            serve_http(listener).await;
        } else {
            std::future::pending::<()>().await;
        }
        Ok::<_, std::io::Error>(())
    })?;
    Ok(())
}
