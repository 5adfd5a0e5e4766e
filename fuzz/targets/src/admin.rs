//! `admin_bodies`: requests to the admin API (drains, overrides, the fleet document's
//! `PUT`/`PATCH`, and every read), through the real `Router` in process.
//!
//! # Input
//! `METHOD /path` on the first line, then header lines `Name: value` up to a blank line, then
//! the body (`\r\n` or `\n` line ends). The admin token is sent unless the input names an
//! `Authorization` header; `If-Match` is always `"0"`.
//!
//! # The fixture
//! A member of `config/examples/resolver-member.toml`'s fleet with an embedded store (version 1
//! seeded from the file's tables) in the scratch directory, its gossip on a loopback port with no
//! peers, drains kept in memory. Every write of the document names version 0 while the store is
//! at 1: it is validated against the local file exactly as a real write, then refused as stale,
//! so no execution changes what the next one sees.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use geolb_member::admin::AdminState;
use geolb_member::cluster::ClusterHealth;
use geolb_member::drains::Drains;
use geolb_member::fleet::ConfigSource;
use geolb_member::gossip::GossipHandle;
use geolb_member::gossip::keys::Role;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::fixture::{example, json_object, must, runtime, scratch_subdir};

/// The read-write token the fixture's config names (`admin`).
const ADMIN_TOKEN: &str = "geolb-fuzz-admin-token-0123456789";
/// A read-only token the fixture's config names `viewer`.
const VIEWER_TOKEN: &str = "geolb-fuzz-viewer-token-0123456789";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: Router,
    gossip: Arc<GossipHandle>,
    source: Arc<ConfigSource>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = scratch_subdir("admin");
        let _ = std::fs::remove_dir_all(dir.join("state"));
        for name in ["cluster.key", "tsig-xfr.key"] {
            must(std::fs::copy(crate::fixture::examples_dir().join(name), dir.join(name)), "copy an example file");
        }
        must(std::fs::write(dir.join("admin.token"), ADMIN_TOKEN), "write admin.token");
        must(std::fs::write(dir.join("viewer.token"), VIEWER_TOKEN), "write viewer.token");
        let text = format!(
            "{}\n[[admin.tokens]]\nname = \"viewer\"\nfile = \"viewer.token\"\naccess = \"read-only\"\n\n[fleet]\nstore = \"embedded\"\n",
            example("resolver-member.toml").replace(r#"state_dir = "/var/lib/geolb""#, r#"state_dir = "state""#)
        );
        assert!(text.contains(r#"state_dir = "state""#));
        let path = dir.join("member.toml");
        must(std::fs::write(&path, text), "write member.toml");
        let runtime = runtime();
        let (source, config) = must(ConfigSource::open(&path), "open the fleet store");
        assert_eq!(source.head_version().map(|v| v.version), Some(1), "the store is seeded with version 1");
        let drains = Arc::new(Drains::load(None));
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let joined = runtime.block_on(geolb_member::join(&config, Role::Observer, "fuzz-admin", listen, None, "-".to_owned(), &drains));
        let gossip = must(joined, "join the gossip");
        let state = AdminState {
            gossip: gossip.clone(),
            config: Arc::new(arc_swap::ArcSwap::from_pointee(config)),
            health: Arc::new(std::sync::Mutex::new(ClusterHealth::default())),
            drains,
            drain_lock: Arc::default(),
            metrics: Arc::new(|| "geolb_fuzz_metrics 1\n".to_owned()),
            source: source.clone(),
            extension: None,
        };
        Fixture { runtime, router: geolb_member::admin::router(state), gossip, source }
    })
}

/// The request an input describes, or `None` when its first line is not `METHOD /path`.
fn request(data: &[u8]) -> Option<Request<Body>> {
    let (head, body) = match data.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) if !data[..i].windows(2).any(|w| w == b"\n\n") => (&data[..i], &data[i + 4..]),
        _ => match data.windows(2).position(|w| w == b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (data, &[][..]),
        },
    };
    let mut lines = head.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = std::str::from_utf8(lines.next()?).ok()?;
    let (method, path) = first.split_once(' ')?;
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    if !path.starts_with('/') {
        return None;
    }
    let mut builder = Request::builder().method(method).uri(path);
    let mut authorized = false;
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(line[colon + 1..].trim_ascii()))
        else {
            continue;
        };
        if name == http::header::IF_MATCH {
            continue;
        }
        authorized |= name == http::header::AUTHORIZATION;
        builder = builder.header(name, value);
    }
    if !authorized {
        builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"));
    }
    builder.header(http::header::IF_MATCH, "\"0\"").body(Body::from(body.to_vec())).ok()
}

/// The target: one request to the admin API.
pub fn admin_bodies(data: &[u8]) {
    let Some(request) = request(data) else { return };
    let fx = fixture();
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let (status, content_type, body) = fx.runtime.block_on(async {
        let response = match fx.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status().as_u16();
        let content_type = response.headers().get(http::header::CONTENT_TYPE).map(|v| v.as_bytes().to_vec());
        let body = must(response.into_body().collect().await, "read the answer").to_bytes();
        (status, content_type, body)
    });
    let shown = || format!("{method} {path} → {status} {}", String::from_utf8_lossy(&body));
    // `/readyz` answers 503 by design: no prober can vote in the fixture's cluster of one.
    let not_ready = status == 503 && path == "/readyz";
    assert!(status < 500 || not_ready, "the admin API failed: {}", shown());
    let json = content_type.as_deref() == Some(b"application/json");
    if json {
        let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&body);
        assert!(parsed.is_ok(), "a JSON answer that is not JSON: {}", shown());
    }
    let writes_document = path == "/api/v1/config" && (method == Method::PUT || method == Method::PATCH);
    if writes_document || (path == "/api/v1/overrides" && method == Method::POST) {
        assert!(json, "a write answered without JSON: {}", shown());
        let object = json_object(&body).unwrap_or_else(|e| panic!("{e}: {}", shown()));
        if status != 200 {
            assert!(object.get("error").is_some_and(|e| e.is_string()), "a refusal without an error: {}", shown());
        }
    }
    if writes_document {
        assert_ne!(status, 200, "a write naming a stale version was stored: {}", shown());
        assert_eq!(fx.source.head_version().map(|v| v.version), Some(1), "the store moved: {}", shown());
    }
    if status == 200 && method == Method::POST {
        check_published(fx, &path, &body);
    }
}

/// An accepted drain or override is in the gossip view as the answer says.
fn check_published(fx: &Fixture, path: &str, body: &[u8]) {
    let view = fx.runtime.block_on(fx.gossip.view());
    let answer = json_object(body).unwrap_or_else(|e| panic!("{path}: {e}"));
    if path == "/api/v1/overrides" {
        let published = view
            .overrides
            .values()
            .map(|o| serde_json::to_value(o).unwrap_or_default())
            .find(|o| o.get("target") == answer.get("target"));
        assert_eq!(
            published,
            Some(serde_json::Value::Object(answer)),
            "the gossip holds another override than answered"
        );
    } else if let Some(node) = answer.get("node").and_then(|n| n.as_str()) {
        let drained = answer.get("drained").and_then(|d| d.as_bool());
        assert_eq!(
            view.drains.get(node).map(|d| d.1),
            drained,
            "the gossip holds another drain of {node} than answered"
        );
    }
}
