//! `remote_backend_unix`: bytes PowerDNS would write on the unix socket, through the real
//! connector (`server::unix::bind` + `serve`) on a socket in the scratch directory.

use std::sync::OnceLock;
use std::time::Duration;

use geolb_resolver::server::Backend;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use crate::fixture::{must, runtime, scratch_subdir, send_and_read};
use crate::resolver::{MAX_REQUEST_BYTES, backend};

/// Longest an execution may take before it counts as a hang.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

struct Fixture {
    runtime: tokio::runtime::Runtime,
    socket: std::path::PathBuf,
    backend: Backend,
    /// Kept so the connector is never cancelled.
    _shutdown: CancellationToken,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = runtime();
        let backend = backend();
        let socket = scratch_subdir("unix").join("pdns.sock");
        let shutdown = CancellationToken::new();
        let bound = runtime.block_on(async { geolb_resolver::server::unix::bind(&socket, 0o600) });
        let bound = must(bound, "bind the unix connector");
        // Never handed over, and no connections adopted: a connector as a first start runs it.
        let serve = geolb_resolver::server::unix::serve(
            bound,
            backend.clone(),
            MAX_REQUEST_BYTES,
            shutdown.clone(),
            geolb_resolver::server::unix::Handoff::default(),
            None,
        );
        runtime.spawn(serve);
        Fixture { runtime, socket, backend, _shutdown: shutdown }
    })
}

/// What the connector must answer `data` with: per request line (the bytes up to a newline, or
/// up to the end), nothing for a blank line, else `Backend::call`'s reply and a newline; a line
/// over the bound gets the refusal and nothing after it is read.
fn expected(backend: &Backend, data: &[u8]) -> Vec<u8> {
    let mut want = Vec::new();
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (line, after) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        rest = after;
        if line.len() > MAX_REQUEST_BYTES {
            geolb_resolver::pdns::reply::error(
                &mut out,
                &format!("request line over {MAX_REQUEST_BYTES} bytes refused"),
            );
            want.extend_from_slice(&out);
            want.push(b'\n');
            break;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        backend.call(line, &mut out);
        want.extend_from_slice(&out);
        want.push(b'\n');
    }
    want
}

/// The target: one connection carrying `data`, read to its end.
pub fn remote_backend_unix(data: &[u8]) {
    let fx = fixture();
    let exchange = async {
        let stream = must(UnixStream::connect(&fx.socket).await, "connect to the unix connector");
        let (read, write) = stream.into_split();
        send_and_read(read, write, data).await
    };
    let got = fx.runtime.block_on(async { tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await });
    let Ok(got) = got else {
        panic!("the unix connector did not finish answering {} bytes within {EXCHANGE_TIMEOUT:?}", data.len());
    };
    for line in got.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if let Err(e) = crate::fixture::json_object(line) {
            panic!("a reply line is not one JSON object: {e}");
        }
    }
    let want = expected(&fx.backend, data);
    assert!(
        got == want,
        "the connector's replies differ from one Backend::call per line\n got: {}\nwant: {}",
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
}
