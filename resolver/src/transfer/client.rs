//! Talking to a hidden primary over TCP with NLnet Labs' `domain`: the SOA query that polls the
//! serial, and the IXFR/AXFR that fetches the zone (`net::client::stream` for the exchange,
//! `net::client::tsig` to sign and verify, `net::xfr` to read the response stream). No DNS
//! message is built or parsed by hand here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use domain::base::iana::{Rcode, Rtype};
use domain::base::{MessageBuilder, Name, ParsedName, Serial, ToName, Ttl};
use domain::net::client::request::{
    GetResponse, GetResponseMulti, RequestMessage, RequestMessageMulti, SendRequest, SendRequestMulti,
};
use domain::net::client::{stream, tsig};
use domain::net::xfr::protocol::XfrResponseInterpreter;
use domain::rdata::Soa;
use domain::tsig::Key;
use tokio::net::TcpStream;

use super::copy::{Applier, Kind, ZoneCopy};

type Plain = stream::Connection<RequestMessage<Vec<u8>>, RequestMessageMulti<Vec<u8>>>;
type SignedStream = stream::Connection<
    tsig::RequestMessage<RequestMessage<Vec<u8>>, Arc<Key>>,
    tsig::RequestMessage<RequestMessageMulti<Vec<u8>>, Arc<Key>>,
>;
type Signed = tsig::Connection<SignedStream, Arc<Key>>;

/// One TCP connection to a primary, signed with the zone's key when it has one.
enum Connection {
    Plain(Plain),
    Signed(Signed),
}

/// Why an exchange with the primary failed: it could not be had, or what came was refused.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No answer: connect, timeout, or the connection broke.
    Unreachable(String),
    /// An answer that is refused: an error rcode, a bad signature, a truncated or invalid zone.
    Refused(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(why) | Failure::Refused(why) => f.write_str(why),
        }
    }
}

/// A primary of one zone.
pub(crate) struct Primary {
    pub(crate) addr: SocketAddr,
    pub(crate) zone: Name<Vec<u8>>,
    pub(crate) key: Option<Arc<Key>>,
    /// For connecting, one SOA query (at most 19 s: `domain`'s stream client has no setting
    /// for single answers), and each message of a transfer.
    pub(crate) timeout: Duration,
    /// A whole transfer may take this many `timeout`s.
    pub(crate) timeouts: u32,
}

fn request_error(addr: SocketAddr, e: domain::net::client::request::Error) -> Failure {
    use domain::net::client::request::Error as E;
    match e {
        E::Authentication(_) => Failure::Refused(format!("{addr}: tsig: {e}")),
        other => Failure::Unreachable(format!("{addr}: {other}")),
    }
}

impl Primary {
    async fn connect(&self) -> Result<Connection, Failure> {
        let tcp = tokio::time::timeout(self.timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| Failure::Unreachable(format!("{}: connect timed out", self.addr)))?
            .map_err(|e| Failure::Unreachable(format!("{}: connect: {e}", self.addr)))?;
        let _ = tcp.set_nodelay(true);
        let mut config = stream::Config::new();
        config.set_response_timeout(self.timeout);
        config.set_streaming_response_timeout(self.timeout);
        Ok(match &self.key {
            None => {
                let (conn, transport) = Plain::with_config(tcp, config);
                tokio::spawn(transport.run());
                Connection::Plain(conn)
            }
            Some(key) => {
                let (conn, transport) = SignedStream::with_config(tcp, config);
                tokio::spawn(transport.run());
                Connection::Signed(tsig::Connection::new(key.clone(), conn))
            }
        })
    }

    /// The primary's SOA serial for the zone (and the SOA's refresh, retry and expire).
    pub(crate) async fn soa(&self) -> Result<SoaTimers, Failure> {
        let conn = self.connect().await?;
        let mut builder = MessageBuilder::new_vec().question();
        builder.push((&self.zone, Rtype::SOA)).map_err(|e| Failure::Refused(e.to_string()))?;
        let request = RequestMessage::new(builder.into_message()).map_err(|e| Failure::Refused(e.to_string()))?;
        let mut pending: Box<dyn GetResponse + Send + Sync> = match &conn {
            Connection::Plain(c) => SendRequest::send_request(c, request),
            Connection::Signed(c) => SendRequest::send_request(c, request),
        };
        let response = tokio::time::timeout(self.timeout, pending.get_response())
            .await
            .map_err(|_| Failure::Unreachable(format!("{}: soa query timed out", self.addr)))?
            .map_err(|e| request_error(self.addr, e))?;
        let rcode = response.header().rcode();
        if rcode != Rcode::NOERROR {
            return Err(Failure::Refused(format!("{}: soa query answered {rcode}", self.addr)));
        }
        let answer = response.answer().map_err(|e| Failure::Refused(format!("{}: {e}", self.addr)))?;
        for record in answer.limit_to::<Soa<ParsedName<Bytes>>>() {
            let record = record.map_err(|e| Failure::Refused(format!("{}: {e}", self.addr)))?;
            if record.owner().name_eq(&self.zone) {
                let soa = record.data();
                return Ok(SoaTimers {
                    serial: soa.serial().into_int(),
                    refresh_s: soa.refresh().as_secs(),
                    retry_s: soa.retry().as_secs(),
                    expire_s: soa.expire().as_secs(),
                });
            }
        }
        Err(Failure::Refused(format!("{}: no soa for the zone in the answer (is it the zone's primary?)", self.addr)))
    }

    /// Transfers the zone: an IXFR from `base`'s serial when we have a copy, else an AXFR. The
    /// primary may answer an IXFR with the whole zone. The result is complete or an error.
    pub(crate) async fn transfer(&self, base: Option<ZoneCopy>) -> Result<(ZoneCopy, Kind), Failure> {
        let conn = self.connect().await?;
        let mut builder = MessageBuilder::new_vec().question();
        let qtype = if base.is_some() { Rtype::IXFR } else { Rtype::AXFR };
        builder.push((&self.zone, qtype)).map_err(|e| Failure::Refused(e.to_string()))?;
        let message = match &base {
            Some(base) => {
                // RFC 1995: the client's SOA, with its serial, in the authority section.
                let mut authority = builder.authority();
                let ttl = Ttl::from_secs(0);
                let root = Name::root_vec();
                let soa = Soa::new(root.clone(), root, Serial(base.serial), ttl, ttl, ttl, ttl);
                authority.push((&self.zone, 0, soa)).map_err(|e| Failure::Refused(e.to_string()))?;
                authority.into_message()
            }
            None => builder.into_message(),
        };
        let request = RequestMessageMulti::new(message).map_err(|e| Failure::Refused(e.to_string()))?;
        let mut pending: Box<dyn GetResponseMulti + Send + Sync> = match &conn {
            Connection::Plain(c) => SendRequestMulti::send_request(c, request),
            Connection::Signed(c) => SendRequestMulti::send_request(c, request),
        };
        let mut interpreter = XfrResponseInterpreter::new();
        let mut applier = Applier::new(base);
        let addr = self.addr;
        let refused = |why: String| Failure::Refused(format!("{addr}: {} refused: {why}", qtype));
        let mut responses = 0usize;
        let limit = self.timeout.saturating_mul(self.timeouts);
        let deadline = tokio::time::Instant::now() + limit;
        while !applier.finished() {
            let wait = self.timeout.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            let next = tokio::time::timeout(wait, pending.get_response()).await.map_err(|_| {
                if tokio::time::Instant::now() >= deadline {
                    Failure::Unreachable(format!("{addr}: {qtype} did not finish within {limit:?}"))
                } else {
                    Failure::Unreachable(format!("{addr}: {qtype} timed out"))
                }
            })?;
            let response = match next {
                Ok(Some(response)) => response,
                Ok(None) => break,
                Err(e) => {
                    return Err(match request_error(addr, e) {
                        // A stream broken off mid-transfer is a truncated transfer.
                        Failure::Unreachable(why) if responses > 0 => refused(format!("truncated ({why})")),
                        other => other,
                    });
                }
            };
            responses += 1;
            let rcode = response.header().rcode();
            if rcode != Rcode::NOERROR {
                return Err(refused(format!("the primary answered {rcode}")));
            }
            let updates = interpreter.interpret_response(response).map_err(|e| refused(format!("{e:?}")))?;
            for update in updates {
                let update = update.map_err(|e| refused(format!("{e:?}")))?;
                applier.apply(update).map_err(&refused)?;
            }
        }
        applier.into_copy().map_err(refused)
    }
}

/// The serial and timers of a primary's SOA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SoaTimers {
    pub(crate) serial: u32,
    pub(crate) refresh_s: u32,
    pub(crate) retry_s: u32,
    pub(crate) expire_s: u32,
}
