//! `remote_backend_http`: bytes PowerDNS would write on its HTTP connection
//! (`remote-connection-string=http:url=…,post=1,post_json=1`), through the real connector
//! (`server::http::serve`: hyper, keep-alive, body bounds) on a TCP socket on loopback.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use geolb_resolver::server::Backend;
use geolb_resolver::server::http::HttpState;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::fixture::{json_object, must, runtime, send_and_read};
use crate::resolver::{MAX_REQUEST_BYTES, backend};

/// Longest an execution may take before it counts as a hang.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// What `GET /metrics` answers here.
const METRICS: &str = "geolb_fuzz_metrics 1\n";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    backend: Backend,
    _shutdown: CancellationToken,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = runtime();
        let backend = backend();
        let listener = must(runtime.block_on(TcpListener::bind("127.0.0.1:0")), "bind the HTTP connector");
        let addr = must(listener.local_addr(), "read the HTTP connector's address");
        let state = HttpState {
            backend: backend.clone(),
            max_body: MAX_REQUEST_BYTES,
            metrics: Some(Arc::new(|| METRICS.to_owned())),
            limits: geolb_config::ConnectionLimits::HTTP,
            connections: Default::default(),
        };
        let shutdown = CancellationToken::new();
        runtime.spawn(geolb_resolver::server::http::serve(listener, state, shutdown.clone()));
        Fixture { runtime, addr, backend, _shutdown: shutdown }
    })
}

/// One response of the answer stream.
struct Answer {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// Splits the bytes the connector sent into responses; `Err` when they are not a sequence of
/// HTTP/1.x responses framed by `Content-Length`.
fn responses(mut got: &[u8]) -> Result<Vec<Answer>, String> {
    let mut answers = Vec::new();
    while !got.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(got) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Err("a response head is cut short".into()),
            Err(e) => return Err(format!("not an HTTP response head: {e}")),
        };
        let status = response.code.unwrap_or(0);
        // HTTP/1.0 is answered in kind.
        if !matches!(response.version, Some(0 | 1)) {
            return Err(format!("response version {:?}, not HTTP/1.x", response.version));
        }
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let content_type = header("content-type");
        got = &got[head..];
        if (100..200).contains(&status) {
            continue;
        }
        let length: usize = match header("content-length") {
            Some(v) => v.trim().parse().map_err(|_| format!("content-length {v:?}"))?,
            None => return Err(format!("a {status} response without content-length")),
        };
        if got.len() < length {
            return Err(format!("a {status} response body is cut short: {} of {length} bytes", got.len()));
        }
        answers.push(Answer { status, content_type, body: got[..length].to_vec() });
        got = &got[length..];
    }
    Ok(answers)
}

/// The body of `data` when it is exactly one complete, plainly framed `POST` to `/dns` (one
/// `Content-Length` within the bound, no `Transfer-Encoding`, no `Expect`, nothing after it).
fn lone_post(data: &[u8]) -> Option<&[u8]> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head) = request.parse(data).ok()? else { return None };
    if request.method != Some("POST") || request.version != Some(1) {
        return None;
    }
    // Calls go to /dns (or below it); other paths are answered 404.
    let path = request.path?.split('?').next().unwrap_or_default();
    if !(path == "/dns" || path.starts_with("/dns/")) {
        return None;
    }
    let named = |name: &'static str| request.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name));
    if named("transfer-encoding").next().is_some() || named("expect").next().is_some() {
        return None;
    }
    let mut lengths = named("content-length");
    let length = std::str::from_utf8(lengths.next()?.value).ok()?;
    if lengths.next().is_some() || !length.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let length: usize = length.parse().ok()?;
    (length <= MAX_REQUEST_BYTES && data.len() == head + length).then(|| &data[head..])
}

/// The target: one connection carrying `data`, then closed for writing, read to its end.
pub fn remote_backend_http(data: &[u8]) {
    let fx = fixture();
    let exchange = async {
        let stream = must(TcpStream::connect(fx.addr).await, "connect to the HTTP connector");
        let _ = stream.set_nodelay(true);
        let (mut read, mut write) = stream.into_split();
        let got = send_and_read(&mut read, &mut write, data).await;
        // A reset instead of TIME_WAIT: millions of executions would use up loopback ports.
        if let Ok(stream) = read.reunite(write) {
            let _ = stream.set_zero_linger();
        }
        got
    };
    let got = fx.runtime.block_on(async { tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await });
    let Ok(got) = got else {
        panic!("the HTTP connector did not finish answering {} bytes within {EXCHANGE_TIMEOUT:?}", data.len());
    };
    // A HEAD answer carries a Content-Length but no body: its framing cannot be followed here.
    if data.windows(4).any(|w| w == b"HEAD") {
        return;
    }
    let answers = match responses(&got) {
        Ok(answers) => answers,
        Err(e) => panic!("{e}; the connector sent: {}", String::from_utf8_lossy(&got)),
    };
    for answer in &answers {
        if answer.body.is_empty() {
            continue;
        }
        if answer.body == METRICS.as_bytes() {
            assert!(answer.content_type.as_deref().is_some_and(|t| t.starts_with("text/plain")));
            continue;
        }
        if let Err(e) = json_object(&answer.body) {
            panic!("a {} response body is not one JSON object: {e}", answer.status);
        }
        assert_eq!(answer.content_type.as_deref(), Some("application/json"), "status {}", answer.status);
        assert!(
            [200, 400, 404, 405, 408, 413].contains(&answer.status),
            "the connector answered {} with a body: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    // hyper refuses what it cannot parse itself (an answer without a body); what reaches the
    // connector's handler must be answered as the dispatch answers it.
    if let (Some(body), Some(answer)) = (lone_post(data), answers.first())
        && !answer.body.is_empty()
    {
        let mut want = Vec::new();
        let handled = fx.backend.call(body, &mut want);
        let want_status = if handled == geolb_resolver::server::Handled::BadRequest { 400 } else { 200 };
        assert_eq!(
            (answer.status, answer.body.as_slice()),
            (want_status, want.as_slice()),
            "a POST is not answered what Backend::call answers its body: got {}, want {}",
            String::from_utf8_lossy(&answer.body),
            String::from_utf8_lossy(&want)
        );
    }
}
