//! The PowerDNS remote-backend protocol: requests in, replies out. Pure: no I/O, no runtime.
//!
//! PowerDNS sends one JSON object per call, `{"method": …, "parameters": {…}}`, over HTTP
//! (`post_json`) or a unix socket (one object per line); the connectors in
//! [`server`](crate::server) are only framing. [`parse`] turns a call into a [`Call`] borrowing
//! from the request bytes, and the [`reply`] helpers write the answer. What PowerDNS does with
//! replies is in `docs/architecture.md` ("The PowerDNS contract"):
//! `{"result": false}` lets the next backend answer, and records carry `qtype`, `qname`,
//! `content`, numeric `ttl` and `scopeMask`.

pub mod reply;

use std::borrow::Cow;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Why a request could not be understood. Rendered to the caller, so it names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not JSON, or not an object with a string `method`.
    #[error("malformed remote-backend request: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A `lookup` without the parameters it needs, or with unusable ones.
    #[error("bad lookup parameters: {0}")]
    BadLookup(String),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(borrow, default)]
    parameters: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MetadataParams<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct LookupParams<'a> {
    #[serde(borrow)]
    qtype: Cow<'a, str>,
    #[serde(borrow)]
    qname: Cow<'a, str>,
    #[serde(borrow, default)]
    remote: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "real-remote")]
    real_remote: Option<Cow<'a, str>>,
    #[serde(default, rename = "zone-id")]
    zone_id: Option<i64>,
}

/// The query type PowerDNS asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType<'a> {
    /// `ANY`: every record of the name (what PowerDNS normally asks).
    Any,
    /// `A`.
    A,
    /// `AAAA`.
    Aaaa,
    /// Any other type, by mnemonic as sent.
    Other(&'a str),
}

/// A `lookup` call.
#[derive(Debug, Clone)]
pub struct Lookup<'a> {
    /// The name asked, as sent (any case, normally absolute).
    pub qname: Cow<'a, str>,
    /// The type asked.
    pub qtype: QType<'a>,
    /// The client: the ECS address when PowerDNS got one, else the querier's address.
    pub client: IpAddr,
    /// Prefix length the client address is known to (ECS source prefix; 32/128 without ECS).
    pub source_prefix: u8,
    /// PowerDNS's zone id, echoed for logs.
    pub zone_id: Option<i64>,
}

/// One remote-backend call.
#[derive(Debug)]
pub enum Call<'a> {
    /// `initialize` (pipe and unix connectors): answered `true`.
    Initialize,
    /// `lookup`.
    Lookup(Lookup<'a>),
    /// `getAllDomains`: geolb owns no zone, so an empty list.
    GetAllDomains,
    /// `getAllDomainMetadata`: every metadata kind of a zone.
    GetAllDomainMetadata {
        /// The zone, as sent.
        name: Cow<'a, str>,
    },
    /// `getDomainMetadata`: one metadata kind of a zone.
    GetDomainMetadata {
        /// The zone, as sent.
        name: Cow<'a, str>,
        /// The kind, e.g. `NSEC3PARAM`.
        kind: Cow<'a, str>,
    },
    /// Any other method: answered `false` (nothing here; PowerDNS asks the next backend).
    Other(Cow<'a, str>),
}

/// Parses one request. Never panics, whatever the bytes.
pub fn parse(body: &[u8]) -> Result<Call<'_>, Error> {
    let envelope: Envelope<'_> = serde_json::from_slice(body)?;
    Ok(match envelope.method.as_ref() {
        "initialize" => Call::Initialize,
        "getAllDomains" => Call::GetAllDomains,
        "lookup" => {
            let raw = envelope.parameters.ok_or_else(|| Error::BadLookup("no parameters".into()))?;
            let p: LookupParams<'_> = serde_json::from_str(raw.get())?;
            Call::Lookup(lookup_from(p)?)
        }
        "getAllDomainMetadata" | "getDomainMetadata" => {
            let raw = envelope.parameters.ok_or_else(|| Error::BadLookup("no parameters".into()))?;
            let p: MetadataParams<'_> = serde_json::from_str(raw.get())?;
            match (envelope.method.as_ref(), p.kind) {
                ("getDomainMetadata", Some(kind)) => Call::GetDomainMetadata { name: p.name, kind },
                ("getDomainMetadata", None) => return Err(Error::BadLookup("getDomainMetadata without kind".into())),
                _ => Call::GetAllDomainMetadata { name: p.name },
            }
        }
        _ => Call::Other(envelope.method),
    })
}

fn lookup_from(p: LookupParams<'_>) -> Result<Lookup<'_>, Error> {
    let qtype = match p.qtype.as_ref() {
        t if t.eq_ignore_ascii_case("ANY") => QType::Any,
        t if t.eq_ignore_ascii_case("A") => QType::A,
        t if t.eq_ignore_ascii_case("AAAA") => QType::Aaaa,
        _ => QType::Other(match &p.qtype {
            Cow::Borrowed(s) => s,
            // Escaped qtypes (never sent by PowerDNS) are not worth an allocation path.
            Cow::Owned(_) => {
                return Err(Error::BadLookup(format!("unsupported qtype {:?}", p.qtype)));
            }
        }),
    };
    // `real-remote` (the ECS subnet, or <ip>/32) first, then `remote`.
    let (client, source_prefix) = p
        .real_remote
        .as_deref()
        .and_then(parse_client)
        .or_else(|| p.remote.as_deref().and_then(parse_client))
        .ok_or_else(|| {
            Error::BadLookup(format!(
                "no usable client address in real-remote {:?} or remote {:?}",
                p.real_remote, p.remote
            ))
        })?;
    // No length check: PowerDNS escapes odd bytes as `\DDD`, so a valid name can be ~1000
    // characters long. Names geolb does not manage (all of those) fall through to `false`; an
    // HTTP error here would turn into SERVFAIL.
    if p.qname.is_empty() {
        return Err(Error::BadLookup(format!("qname {:?} is not a DNS name", p.qname)));
    }
    Ok(Lookup { qname: p.qname, qtype, client, source_prefix, zone_id: p.zone_id })
}

/// Parses `1.2.3.4`, `1.2.3.0/24`, `2001:db8::/56`; the prefix defaults to the full width and
/// may not exceed it.
fn parse_client(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let width = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p.parse::<u8>().ok().filter(|p| *p <= width)?,
        None => width,
    };
    Some((ip, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WIRE: &str = r#"{"method":"lookup","parameters":{"qtype":"ANY","qname":"cdn.example.net.","remote":"127.0.0.1","local":"127.0.0.1","real-remote":"81.2.69.0/24","zone-id":1}}"#;

    #[test]
    fn parses_a_lookup_as_pdns_sends_it() {
        let Call::Lookup(l) = parse(WIRE.as_bytes()).unwrap() else { panic!("not a lookup") };
        assert_eq!(l.qname, "cdn.example.net.");
        assert_eq!(l.qtype, QType::Any);
        assert_eq!(l.client, "81.2.69.0".parse::<IpAddr>().unwrap());
        assert_eq!(l.source_prefix, 24);
        assert_eq!(l.zone_id, Some(1));
        assert!(matches!(l.qname, Cow::Borrowed(_)), "qname is borrowed from the request");
    }

    #[test]
    fn falls_back_to_remote_and_full_width() {
        let body = r#"{"method":"lookup","parameters":{"qtype":"A","qname":"x.","remote":"2001:db8::7","zone-id":-1}}"#;
        let Call::Lookup(l) = parse(body.as_bytes()).unwrap() else { panic!() };
        assert_eq!((l.qtype, l.source_prefix), (QType::A, 128));
        let body = r#"{"method":"lookup","parameters":{"qtype":"MX","qname":"x.","remote":"192.0.2.1","real-remote":"garbage"}}"#;
        let Call::Lookup(l) = parse(body.as_bytes()).unwrap() else { panic!() };
        assert_eq!((l.qtype, l.source_prefix), (QType::Other("MX"), 32));
    }

    #[test]
    fn other_methods() {
        assert!(matches!(parse(br#"{"method":"initialize","parameters":{"path":"/x"}}"#).unwrap(), Call::Initialize));
        assert!(matches!(
            parse(br#"{"method":"getAllDomains","parameters":{"include_disabled":true}}"#).unwrap(),
            Call::GetAllDomains
        ));
        let all = parse(br#"{"method":"getAllDomainMetadata","parameters":{"name":"example.net."}}"#).unwrap();
        assert!(matches!(all, Call::GetAllDomainMetadata { name } if name == "example.net."));
        let one = parse(br#"{"method":"getDomainMetadata","parameters":{"name":"example.net.","kind":"PRESIGNED"}}"#);
        assert!(
            matches!(one.unwrap(), Call::GetDomainMetadata { name, kind } if name == "example.net." && kind == "PRESIGNED")
        );
        assert!(parse(br#"{"method":"getDomainMetadata","parameters":{"name":"example.net."}}"#).is_err());
        let keys = parse(br#"{"method":"getDomainKeys","parameters":{"name":"example.net."}}"#).unwrap();
        assert!(matches!(keys, Call::Other(m) if m == "getDomainKeys"));
    }

    #[test]
    fn malformed_requests_are_errors_with_reasons() {
        for (body, want) in [
            (&b"not json"[..], "malformed"),
            (b"{}", "missing field `method`"),
            (br#"{"method":"lookup"}"#, "no parameters"),
            (br#"{"method":"lookup","parameters":{"qname":"x."}}"#, "qtype"),
            (
                br#"{"method":"lookup","parameters":{"qtype":"A","qname":"x.","remote":"nope"}}"#,
                "no usable client address",
            ),
            (
                br#"{"method":"lookup","parameters":{"qtype":"A","qname":"x.","real-remote":"10.0.0.0/33"}}"#,
                "no usable client address",
            ),
            (br#"{"method":"lookup","parameters":{"qtype":"A","qname":"","remote":"10.0.0.1"}}"#, "not a DNS name"),
            (br#"{"method":7}"#, "invalid type"),
        ] {
            let err = parse(body).unwrap_err().to_string();
            assert!(err.contains(want), "{}: {err}", String::from_utf8_lossy(body));
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&body);
        }

        #[test]
        fn never_panics_on_mutated_requests(pos in 0usize..WIRE.len(), byte in any::<u8>()) {
            let mut body = WIRE.as_bytes().to_vec();
            body[pos] = byte;
            let _ = parse(&body);
        }
    }
}
