//! The resolver's server side: the two connectors PowerDNS calls, and the dispatch of each call.
//!
//! One way through: a connector ([`unix`] or [`http`]) frames a call → [`Backend::call`] →
//! [`dispatch`] → [`pdns::parse`] → the [`Engine`] (a lookup, or zone metadata) → a
//! [`pdns::reply`] written into the connector's buffer. The connectors own framing, limits,
//! timeouts and draining connections at shutdown; the dispatch owns which method gets which
//! answer and the lookup counters; the engine knows no protocol method.

pub mod http;
pub mod unix;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::engine::{CountedQtype, Engine, LookupOutcome};
use crate::pdns::{self, Call, reply};

/// How a call was answered, for the connector's status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Records answered.
    Answered,
    /// `false`: not ours, or nothing of that type; PowerDNS asks the next backend.
    FellThrough,
    /// Another call answered (`initialize`, `getAllDomains`, …).
    Other,
    /// The request was malformed; the reply says why.
    BadRequest,
}

/// Answers one remote-backend call from `engine`: `request` is one JSON object, the reply is
/// appended to `out`, without a trailing newline.
pub fn dispatch(engine: &Engine, request: &[u8], out: &mut Vec<u8>) -> Handled {
    let call = match pdns::parse(request) {
        Ok(call) => call,
        Err(e) => {
            reply::error(out, &e.to_string());
            engine.counters().count_lookup(CountedQtype::OTHER, LookupOutcome::Error);
            return Handled::BadRequest;
        }
    };
    let (fixed, found) = match call {
        Call::Lookup(lookup) => {
            let outcome = engine.lookup(&lookup, out);
            engine.counters().count_lookup(CountedQtype::of(&lookup.qtype), outcome);
            return match outcome {
                LookupOutcome::Answered => Handled::Answered,
                _ => Handled::FellThrough,
            };
        }
        Call::Initialize => (reply::TRUE, None),
        // geolb owns no zone.
        Call::GetAllDomains => (reply::EMPTY, None),
        Call::GetAllDomainMetadata { name } => (reply::EMPTY_OBJECT, engine.all_metadata(&name)),
        Call::GetDomainMetadata { name, kind } => (reply::EMPTY, engine.metadata(&name, &kind)),
        Call::Other(_) => (reply::FALSE, None),
    };
    out.extend_from_slice(found.unwrap_or(fixed));
    Handled::Other
}

/// What both connectors answer with: the current engine snapshot and the latency histogram.
#[derive(Clone)]
pub struct Backend {
    /// The current engine snapshot, swapped on reload.
    pub engine: Arc<ArcSwap<Engine>>,
    /// Time to answer a call (request bytes to reply built); `None` when metrics are off.
    pub latency: Option<prometheus::Histogram>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").finish_non_exhaustive()
    }
}

impl Backend {
    /// Answers one call with the current engine: the reply goes to `out` (cleared first),
    /// without a trailing newline.
    pub fn call(&self, request: &[u8], out: &mut Vec<u8>) -> Handled {
        out.clear();
        let engine = self.engine.load();
        let timer = self.latency.as_ref().map(prometheus::Histogram::start_timer);
        let handled = dispatch(&engine, request, out);
        drop(timer);
        tracing::trace!(request = %String::from_utf8_lossy(request), reply = %String::from_utf8_lossy(out), "remote-backend call");
        handled
    }
}

/// Time a connector's connections get at shutdown to finish their current call.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Waits, for at most [`SHUTDOWN_GRACE`], for the connections of a connector that stopped
/// accepting; the rest are dropped with the tracker's tasks.
async fn finish_connections(tracker: tokio_util::task::TaskTracker) {
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        tracing::warn!(connections = tracker.len(), "connections still open after the shutdown grace; dropping them");
    }
}
