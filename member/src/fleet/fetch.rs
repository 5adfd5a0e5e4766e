//! Fetching one version of the fleet document from a peer's admin API.
//!
//! A plain HTTP/1.1 GET on a fresh connection with hyper's client connection, bounded in time
//! and size. Not `reqwest`: one request per new version, to an address the gossip gave, needs
//! no pool, proxy or TLS stack (the admin API is plain HTTP on the cluster's own network).

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;

use super::{MAX_DOCUMENT_BYTES, VersionBody};
use crate::gossip::keys::ConfigVersion;
use crate::versions::Version;

/// Time a whole fetch may take, connection to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// GETs `version` from the admin API at `addr`; the version's metadata and canonical bytes.
pub(super) async fn version(
    addr: SocketAddr,
    version: &ConfigVersion,
    secret: &str,
) -> Result<(Version, Vec<u8>), String> {
    tokio::time::timeout(FETCH_TIMEOUT, get(addr, version, secret))
        .await
        .map_err(|_| format!("no answer within {FETCH_TIMEOUT:?}"))?
}

async fn get(addr: SocketAddr, version: &ConfigVersion, secret: &str) -> Result<(Version, Vec<u8>), String> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let request = hyper::Request::get(format!("/api/v1/config/versions/{}?hash={}", version.version, version.hash))
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {secret}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES * 2)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    conn.abort();
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)]).trim()));
    }
    let parsed: VersionBody = serde_json::from_slice(&body).map_err(|e| format!("not a version: {e}"))?;
    Ok((parsed.meta, parsed.document.into_bytes()))
}
