//! The NOTIFY listener (RFC 1996): one UDP socket for every zone followed from a primary.
//!
//! A NOTIFY is taken only for a followed zone, from one of its `allow_notify` addresses, and,
//! when the zone has a TSIG key, signed with it; it is then answered (header and question
//! echoed, signed with the same key) and wakes the zone's follower, which checks the serial at
//! once. Anything else is counted and dropped without an answer. Waking is a
//! [`tokio::sync::Notify`] permit: a flood of NOTIFYs leaves at most one check queued, and the
//! follower runs one check or transfer at a time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use domain::base::iana::{Opcode, Rcode};
use domain::base::{Message, MessageBuilder};
use domain::rdata::tsig::Time48;
use domain::tsig::ServerTransaction;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::state::Shared;

/// What became of the NOTIFYs received, by outcome (the `result` label of
/// `geolb_zone_notifies_total`).
pub const NOTIFY_OUTCOMES: [&str; 5] = ["accepted", "unknown_source", "unknown_zone", "bad_tsig", "malformed"];

/// Counters per [`NOTIFY_OUTCOMES`] entry.
#[derive(Debug, Default)]
pub struct NotifyCounters(pub [AtomicU64; NOTIFY_OUTCOMES.len()]);

impl NotifyCounters {
    fn count(&self, outcome: &str) {
        if let Some(i) = NOTIFY_OUTCOMES.iter().position(|o| *o == outcome) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Serves NOTIFY on `socket` until `shutdown`, waking the followers in [`Shared`].
pub(crate) async fn serve(socket: UdpSocket, shared: Arc<Shared>, shutdown: CancellationToken) {
    if let Ok(addr) = socket.local_addr() {
        tracing::info!("notify listening on udp {addr}");
    }
    // The largest UDP DNS message; a NOTIFY is far smaller.
    let mut buf = vec![0u8; 65_535];
    loop {
        let (len, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(e) => {
                    tracing::debug!(error = %e, "notify socket receive failed");
                    continue;
                }
            },
        };
        let datagram = buf.get(..len).unwrap_or_default().to_vec();
        let (outcome, reply) = handle(datagram, peer, &shared);
        shared.notifies.count(outcome);
        if let Some(reply) = reply
            && let Err(e) = socket.send_to(&reply, peer).await
        {
            tracing::debug!(peer = %peer, error = %e, "cannot answer a notify");
        }
    }
}

/// Decides about one datagram: its outcome and the answer to send, if any.
fn handle(datagram: Vec<u8>, peer: SocketAddr, shared: &Shared) -> (&'static str, Option<Vec<u8>>) {
    let Ok(mut message) = Message::from_octets(datagram) else {
        return ("malformed", None);
    };
    let header = message.header();
    if header.qr() || header.opcode() != Opcode::NOTIFY {
        return ("malformed", None);
    }
    let Ok(question) = message.sole_question() else {
        return ("malformed", None);
    };
    let origin = super::origin_of(question.qname());
    let config = shared.config();
    let zone = config.zones.iter().find(|z| z.origin == origin);
    let Some((zone, primary)) = zone.and_then(|z| Some((z, z.primary.as_ref()?))) else {
        tracing::debug!(peer = %peer, zone = %origin, "notify for a zone not followed from a primary");
        return ("unknown_zone", None);
    };
    if !primary.allow_notify.contains(&peer.ip()) {
        tracing::debug!(peer = %peer, zone = %origin, "notify from an address that is not the zone's primary; ignored");
        return ("unknown_source", None);
    }
    let signer = match &primary.tsig {
        None => None,
        Some(key) => {
            let key = match super::tsig_key(key) {
                Ok(key) => key,
                Err(e) => {
                    tracing::warn!(zone = %origin, error = %e, "notify: the zone's tsig key is unusable");
                    return ("bad_tsig", None);
                }
            };
            match ServerTransaction::request(&key, &mut message, Time48::now()) {
                Ok(Some(transaction)) => Some(transaction),
                Ok(None) => {
                    tracing::debug!(peer = %peer, zone = %origin, "unsigned notify for a zone with a tsig key; ignored");
                    return ("bad_tsig", None);
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, zone = %origin, "notify with a bad tsig signature; ignored");
                    return ("bad_tsig", None);
                }
            }
        }
    };
    shared.wake_followers(std::slice::from_ref(&zone.origin));
    let Ok(answer) = MessageBuilder::new_vec().start_answer(&message, Rcode::NOERROR) else {
        return ("accepted", None);
    };
    let mut answer = answer.additional();
    answer.header_mut().set_aa(true);
    if let Some(transaction) = signer
        && transaction.answer(&mut answer, Time48::now()).is_err()
    {
        return ("accepted", None);
    }
    ("accepted", Some(answer.finish()))
}
