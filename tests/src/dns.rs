//! The DNS client of the tests: one question ([`QueryOptions`]) sent over UDP or TCP with
//! [`query`] / [`query_with`], encoded and decoded with NLnet Labs' `domain` crate, and the answer
//! as plain strings ([`DnsResponse`], [`Rr`]) that are easy to assert on.
//!
//! It knows no server: `pdns.rs` points it at PowerDNS.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use domain::base::iana::Rtype;
use domain::base::message::RecordSection;
use domain::base::name::ToName;
use domain::base::zonefile_fmt::{DisplayKind, ZonefileFmt};
use domain::base::{Message, MessageBuilder, Name, ParsedName};
use domain::rdata::AllRecordData;
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::time::{Instant, sleep, timeout_at};

use crate::process::POLL_INTERVAL;

/// The EDNS UDP payload size our queries advertise (the DNS flag day 2020 value, as PowerDNS).
const EDNS_UDP_PAYLOAD_SIZE: u16 = 1232;

/// One resource record of a response, in presentation format.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rr {
    /// Owner name, lower-case, with the trailing dot (`cdn.example.net.`).
    pub name: String,
    /// Record type mnemonic (`A`, `MX`, `TYPE65534` for unknown types).
    pub rtype: String,
    /// Time to live in seconds.
    pub ttl: u32,
    /// Record data as in a zone file or `dig` (`10 mail.example.net.`, `"v=spf1 mx -all"`,
    /// `0 issue "letsencrypt.org"`). Names inside it keep their trailing dot and the case they
    /// have on the wire: PowerDNS compresses them against the question, so asking for
    /// `WWW.Example.Net` returns the CNAME target as `cdn.Example.Net.`.
    pub data: String,
}

impl fmt::Display for Rr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} IN {} {}", self.name, self.ttl, self.rtype, self.data)
    }
}

/// A parsed DNS response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsResponse {
    /// Response code including EDNS extended bits: `NOERROR`, `NXDOMAIN`, `SERVFAIL`,
    /// `REFUSED`, `FORMERR`, `NOTIMP`, `BADVERS`, … (a number when it has no mnemonic).
    pub rcode: String,
    /// The answer section.
    pub answers: Vec<Rr>,
    /// The authority section (the SOA of a negative answer, NS of a referral).
    pub authority: Vec<Rr>,
    /// The additional section without the OPT pseudo-record.
    pub additional: Vec<Rr>,
    /// The scope prefix length of the EDNS Client Subnet option in the response, if it has one.
    pub ecs_scope: Option<u8>,
    /// The source prefix length echoed in the response's EDNS Client Subnet option.
    pub ecs_source: Option<u8>,
    /// Whether the Authoritative Answer flag is set.
    pub aa: bool,
    /// Whether the answer came over TCP (asked for, or after a truncated UDP answer).
    pub tcp: bool,
}

impl DnsResponse {
    /// The addresses of the A and AAAA records in the answer section, in order.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.answers
            .iter()
            .filter(|rr| rr.rtype == "A" || rr.rtype == "AAAA")
            .filter_map(|rr| rr.data.parse().ok())
            .collect()
    }

    /// The answer records of type `rtype` (e.g. `"MX"`).
    pub fn answers_of(&self, rtype: &str) -> Vec<&Rr> {
        self.answers.iter().filter(|rr| rr.rtype.eq_ignore_ascii_case(rtype)).collect()
    }
}

impl fmt::Display for DnsResponse {
    /// A `dig`-like rendering for assertion messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ";; {}{}", self.rcode, if self.aa { " aa" } else { "" })?;
        if let (Some(source), Some(scope)) = (self.ecs_source, self.ecs_scope) {
            write!(f, " ecs {source}/{scope}")?;
        }
        if self.tcp {
            f.write_str(" tcp")?;
        }
        for (section, records) in
            [("answer", &self.answers), ("authority", &self.authority), ("additional", &self.additional)]
        {
            if !records.is_empty() {
                write!(f, "\n;; {section}")?;
                for rr in records {
                    write!(f, "\n{rr}")?;
                }
            }
        }
        Ok(())
    }
}

/// One DNS question and how to ask it; see [`query_with`].
#[derive(Clone, Debug)]
pub struct QueryOptions {
    /// The name asked for (a trailing dot is optional).
    pub qname: String,
    /// The type asked for, a mnemonic such as `A`, `AAAA`, `ANY`, `SOA` or `TYPE65`.
    pub qtype: String,
    /// EDNS Client Subnet to send: the network's prefix length is the source prefix length.
    pub ecs: Option<IpNet>,
    /// Local address to send from (PowerDNS reports it as `remote`, and as `real-remote` `/32`
    /// without ECS). By default `127.0.0.1` / `::1` for loopback servers.
    pub source: Option<IpAddr>,
    /// Ask over TCP instead of UDP.
    pub tcp: bool,
    /// Set the DNSSEC OK bit (to get RRSIG/NSEC records back).
    pub dnssec_ok: bool,
    /// Time to wait for the answer to one attempt.
    pub timeout: Duration,
    /// How many times to send the question before giving up.
    pub attempts: u32,
}

impl QueryOptions {
    /// A UDP query without ECS; 1 s per attempt, 3 attempts.
    pub fn new(qname: &str, qtype: &str) -> QueryOptions {
        QueryOptions {
            qname: qname.to_owned(),
            qtype: qtype.to_owned(),
            ecs: None,
            source: None,
            tcp: false,
            dnssec_ok: false,
            timeout: Duration::from_secs(1),
            attempts: 3,
        }
    }

    /// Sets [`QueryOptions::ecs`].
    pub fn ecs(mut self, ecs: Option<IpNet>) -> QueryOptions {
        self.ecs = ecs;
        self
    }

    /// Sets [`QueryOptions::source`].
    pub fn source(mut self, source: IpAddr) -> QueryOptions {
        self.source = Some(source);
        self
    }

    /// Sets [`QueryOptions::tcp`].
    pub fn tcp(mut self, tcp: bool) -> QueryOptions {
        self.tcp = tcp;
        self
    }

    /// Sets [`QueryOptions::dnssec_ok`].
    pub fn dnssec_ok(mut self, dnssec_ok: bool) -> QueryOptions {
        self.dnssec_ok = dnssec_ok;
        self
    }

    /// Sets [`QueryOptions::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> QueryOptions {
        self.timeout = timeout;
        self
    }

    /// Sets [`QueryOptions::attempts`] (at least 1).
    pub fn attempts(mut self, attempts: u32) -> QueryOptions {
        self.attempts = attempts.max(1);
        self
    }
}

/// Asks `server` one question over UDP (1 s per attempt, 3 attempts, TCP if the answer is
/// truncated), with an EDNS OPT record and, if `ecs` is given, an EDNS Client Subnet option
/// (e.g. `81.2.69.0/24`). The RD flag is not set.
pub async fn query(server: SocketAddr, qname: &str, qtype: &str, ecs: Option<IpNet>) -> Result<DnsResponse> {
    query_with(server, &QueryOptions::new(qname, qtype).ecs(ecs)).await
}

/// Asks `server` the question described by `options`; see [`query`].
pub async fn query_with(server: SocketAddr, options: &QueryOptions) -> Result<DnsResponse> {
    let (id, message) = build_query(options)?;
    let what = || format!("{} {} to {server}", options.qname, options.qtype);
    let mut tcp = options.tcp;
    let mut bytes = if tcp {
        exchange_tcp(server, options, id, &message).await
    } else {
        exchange_udp(server, options, id, &message).await
    }
    .with_context(what)?;
    if !tcp && Message::from_octets(bytes.as_slice()).is_ok_and(|m| m.header().tc()) {
        tcp = true;
        bytes = exchange_tcp(server, options, id, &message)
            .await
            .with_context(|| format!("{} (retry over TCP after truncation)", what()))?;
    }
    let mut response = parse_response(bytes).with_context(what)?;
    response.tcp = tcp;
    Ok(response)
}

/// Encodes the query; returns its id and wire format (without TCP length prefix).
pub(crate) fn build_query(options: &QueryOptions) -> Result<(u16, Vec<u8>)> {
    let qname =
        Name::<Vec<u8>>::from_str(&options.qname).map_err(|e| anyhow!("bad query name {:?}: {e}", options.qname))?;
    let qtype = Rtype::from_str(&options.qtype.to_ascii_uppercase())
        .map_err(|e| anyhow!("bad query type {:?}: {e}", options.qtype))?;
    let mut builder = MessageBuilder::new_vec();
    builder.header_mut().set_random_id();
    builder.header_mut().set_rd(false);
    let id = builder.header().id();
    let mut question = builder.question();
    question.push((&qname, qtype)).map_err(|e| anyhow!("failed to encode the question: {e}"))?;
    let mut additional = question.additional();
    additional
        .opt(|opt| {
            opt.set_udp_payload_size(EDNS_UDP_PAYLOAD_SIZE);
            opt.set_dnssec_ok(options.dnssec_ok);
            if let Some(net) = options.ecs {
                opt.client_subnet(net.prefix_len(), 0, net.network())?;
            }
            Ok(())
        })
        .map_err(|e| anyhow!("failed to encode the OPT record: {e}"))?;
    Ok((id, additional.finish()))
}

/// The local address to send from.
fn source_for(server: SocketAddr, options: &QueryOptions) -> IpAddr {
    options.source.unwrap_or(match server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(ip) if ip.is_loopback() => Ipv6Addr::LOCALHOST.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    })
}

/// Whether `bytes` is the response to query `id`.
fn is_response_to(bytes: &[u8], id: u16) -> bool {
    Message::from_octets(bytes).is_ok_and(|m| m.header().qr() && m.header().id() == id)
}

async fn exchange_udp(server: SocketAddr, options: &QueryOptions, id: u16, message: &[u8]) -> Result<Vec<u8>> {
    let source = source_for(server, options);
    let socket = UdpSocket::bind(SocketAddr::new(source, 0))
        .await
        .with_context(|| format!("failed to bind a UDP socket on {source}"))?;
    // Connected: only the server's datagrams arrive, and ICMP errors are reported.
    socket.connect(server).await.with_context(|| format!("failed to connect a UDP socket to {server}"))?;
    let mut last_error = String::from("no answer");
    let mut buf = vec![0; 65535];
    for _ in 0..options.attempts.max(1) {
        let deadline = Instant::now() + options.timeout;
        if let Err(e) = socket.send(message).await {
            last_error = format!("send failed: {e}");
            sleep(POLL_INTERVAL).await;
            continue;
        }
        loop {
            match timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    // ECONNREFUSED: nothing listens (yet). Wait out the attempt's time.
                    last_error = format!("receive failed: {e}");
                    sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now()))).await;
                    break;
                }
                Ok(Ok(n)) if is_response_to(&buf[..n], id) => return Ok(buf[..n].to_vec()),
                // A late answer to an earlier attempt or garbage: keep listening.
                Ok(Ok(_)) => {}
            }
        }
    }
    bail!("no DNS answer over UDP after {} attempt(s) of {:?} ({last_error})", options.attempts.max(1), options.timeout)
}

async fn exchange_tcp(server: SocketAddr, options: &QueryOptions, id: u16, message: &[u8]) -> Result<Vec<u8>> {
    let length = u16::try_from(message.len()).context("query too long for TCP")?;
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    let mut last_error = anyhow!("no attempt made");
    for _ in 0..options.attempts.max(1) {
        let deadline = Instant::now() + options.timeout;
        let attempt = async {
            let source = source_for(server, options);
            let socket = match server {
                SocketAddr::V4(_) => TcpSocket::new_v4(),
                SocketAddr::V6(_) => TcpSocket::new_v6(),
            }?;
            socket.bind(SocketAddr::new(source, 0))?;
            let mut stream = socket.connect(server).await?;
            stream.write_all(&framed).await?;
            loop {
                let length = stream.read_u16().await?;
                let mut response = vec![0; usize::from(length)];
                stream.read_exact(&mut response).await?;
                if is_response_to(&response, id) {
                    return Ok::<_, io::Error>(response);
                }
            }
        };
        match timeout_at(deadline, attempt).await {
            Ok(Ok(response)) => return Ok(response),
            Ok(Err(e)) => {
                last_error = anyhow!(e).context("TCP exchange failed");
                sleep(deadline.saturating_duration_since(Instant::now()).min(POLL_INTERVAL)).await;
            }
            Err(_) => last_error = anyhow!("no DNS answer over TCP within {:?}", options.timeout),
        }
    }
    Err(last_error)
}

fn parse_response(bytes: Vec<u8>) -> Result<DnsResponse> {
    let message = Message::from_octets(bytes).map_err(|e| anyhow!("malformed DNS response: {e}"))?;
    let header = message.header();
    let parse_error = |e| anyhow!("malformed DNS response: {e}");
    let answers = records(message.answer().map_err(parse_error)?)?;
    let authority = records(message.authority().map_err(parse_error)?)?;
    let additional = records(message.additional().map_err(parse_error)?)?;
    let subnet = message.opt().and_then(|opt| opt.opt().client_subnet());
    Ok(DnsResponse {
        rcode: message.opt_rcode().to_string(),
        answers,
        authority,
        additional,
        ecs_scope: subnet.map(|s| s.scope_prefix_len()),
        ecs_source: subnet.map(|s| s.source_prefix_len()),
        aa: header.aa(),
        tcp: false,
    })
}

/// The records of one section in presentation format, without OPT.
fn records(section: RecordSection<'_, Vec<u8>>) -> Result<Vec<Rr>> {
    let mut out = Vec::new();
    for record in section {
        let record = record.map_err(|e| anyhow!("malformed record: {e}"))?;
        if record.rtype() == Rtype::OPT {
            continue;
        }
        let record = record
            .to_any_record::<AllRecordData<&[u8], ParsedName<&[u8]>>>()
            .map_err(|e| anyhow!("malformed {} record: {e}", record.rtype()))?;
        out.push(Rr {
            name: record.owner().fmt_with_dot().to_string().to_ascii_lowercase(),
            rtype: record.rtype().to_string(),
            ttl: record.ttl().as_secs(),
            data: record.data().display_zonefile(DisplayKind::Simple).to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encoding_carries_ecs() {
        let options = QueryOptions::new("cdn.example.net", "a").ecs("81.2.69.7/24".parse().ok());
        let (id, wire) = build_query(&options).expect("encodes");
        let message = Message::from_octets(wire).expect("parses");
        assert_eq!(message.header().id(), id);
        assert!(!message.header().rd());
        let question = message.sole_question().expect("one question");
        assert_eq!(question.qtype(), Rtype::A);
        assert_eq!(question.qname().to_string(), "cdn.example.net");
        let opt = message.opt().expect("OPT record");
        assert_eq!(opt.udp_payload_size(), EDNS_UDP_PAYLOAD_SIZE);
        assert!(!opt.dnssec_ok());
        let subnet = opt.opt().client_subnet().expect("ECS option");
        assert_eq!(subnet.source_prefix_len(), 24);
        assert_eq!(subnet.scope_prefix_len(), 0);
        assert_eq!(subnet.addr(), IpAddr::from([81, 2, 69, 0]));

        let options = QueryOptions::new("example.net.", "SOA").dnssec_ok(true);
        let (_, wire) = build_query(&options).expect("encodes");
        let message = Message::from_octets(wire).expect("parses");
        let opt = message.opt().expect("OPT record");
        assert!(opt.dnssec_ok());
        assert!(opt.opt().client_subnet().is_none());
    }
}
