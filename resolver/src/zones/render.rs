//! Record data and domain names, read with NLnet Labs' `domain` and written the way PowerDNS's
//! remote backend parses them.
//!
//! **Owns:** how each record type's data is read (parsed by `domain`, passed on as written, only
//! in RFC 3597 generic form, or refused as query-only) and whether PowerDNS knows it, both in one
//! table ([`TYPES`]); handing a record's data tokens to `domain`'s scanner and mapping its errors
//! back to a token; the wire-format round trip that rejects what the scanner lets through; the
//! `content` string per type (the table in the parent module's docs), with `TYPE<n>` and generic
//! content for types PowerDNS 4.7 does not know. And domain names: a name token relative to the
//! origin, a configured zone origin, and the text PowerDNS prints for a name (owner names and index
//! keys), with its parent for zone lookups.
//!
//! **Does not own:** splitting the file into tokens (`lexer`); owner, TTL, class and type of a
//! record, directives and zone-wide checks (the loader in the parent module).
//!
//! Every call into `domain` runs under [`guarded`]: a panic in the crate on odd input becomes an
//! error for that record instead of taking the resolver down.

use std::io::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::str::FromStr;

use bytes::Bytes;
use domain::base::iana::Rtype;
use domain::base::name::{Name, ParsedName, ToName};
use domain::base::rdata::{ComposeRecordData, ParseRecordData};
use domain::base::zonefile_fmt::{DisplayKind, ZonefileFmt};
use domain::dep::octseq::Parser;
use domain::rdata::ZoneRecordData;
use domain::zonefile::inplace::{Entry, Zonefile};

use super::Problem;
use super::lexer::{Tok, parse_ttl, tok_bytes};

/// The largest record data the wire format can carry.
const MAX_RDATA_LEN: usize = 0xffff;

//------------ Record data ------------------------------------------------------------------------

/// What geolb needs to know about a record type. [`TYPES`] holds one row per type that is not
/// [`Handling::Generic`] or that PowerDNS knows; every other type is `Generic` and unknown to it.
#[derive(Clone, Copy)]
struct TypeRow {
    rtype: Rtype,
    /// How its record data is read.
    handling: Handling,
    /// Whether PowerDNS 4.7 knows the type by name and parses its presentation format (its
    /// `QType::names`, less the meta types and its private ALIAS/LUA/ADDR). For other types it
    /// needs `TYPE<n>` and RFC 3597 content.
    pdns_knows: bool,
}

/// How the record data of a type is read.
#[derive(Clone, Copy)]
enum Handling {
    /// Parsed by `domain` as this type; the record data fields at these indexes are domain names,
    /// where `@` means the origin.
    Domain(&'static [usize]),
    /// Parsed by `domain` as that type, which has the same syntax (and a `Domain` row of its own).
    DomainAs(Rtype),
    /// `domain` cannot parse it, PowerDNS can, and it holds no domain names: passed on as written.
    Verbatim,
    /// Only the RFC 3597 generic form (`\# len hex`) is accepted.
    Generic,
    /// Query-only types that cannot be in a zone.
    Meta,
}

const fn row(rtype: Rtype, handling: Handling, pdns_knows: bool) -> TypeRow {
    TypeRow { rtype, handling, pdns_knows }
}

/// Each record type that is not read in generic form only, or that PowerDNS knows: its row, once,
/// in type code order (the tests check both; [`type_row`] does a binary search). The lists in the
/// parent module's docs (types passed on as written, types read as MX or TXT) come from here; the
/// tests check that too.
static TYPES: &[TypeRow] = {
    use Handling::{Domain, DomainAs, Generic, Meta, Verbatim};
    &[
        row(Rtype::A, Domain(&[]), true),                // 1
        row(Rtype::NS, Domain(&[0]), true),              // 2
        row(Rtype::MD, Domain(&[0]), false),             // 3
        row(Rtype::MF, Domain(&[0]), false),             // 4
        row(Rtype::CNAME, Domain(&[0]), true),           // 5
        row(Rtype::SOA, Domain(&[0, 1]), true),          // 6
        row(Rtype::MB, Domain(&[0]), true),              // 7
        row(Rtype::MG, Domain(&[0]), true),              // 8
        row(Rtype::MR, Domain(&[0]), true),              // 9
        row(Rtype::PTR, Domain(&[0]), true),             // 12
        row(Rtype::HINFO, Domain(&[]), true),            // 13
        row(Rtype::MINFO, Domain(&[0, 1]), true),        // 14
        row(Rtype::MX, Domain(&[1]), true),              // 15
        row(Rtype::TXT, Domain(&[]), true),              // 16
        row(Rtype::RP, Domain(&[0, 1]), true),           // 17
        row(Rtype::AFSDB, DomainAs(Rtype::MX), true),    // 18
        row(Rtype::SIG, Generic, true),                  // 24
        row(Rtype::KEY, DomainAs(Rtype::DNSKEY), true),  // 25
        row(Rtype::AAAA, Domain(&[]), true),             // 28
        row(Rtype::LOC, Verbatim, true),                 // 29
        row(Rtype::SRV, Domain(&[3]), true),             // 33
        row(Rtype::NAPTR, Domain(&[5]), true),           // 35
        row(Rtype::KX, DomainAs(Rtype::MX), true),       // 36
        row(Rtype::CERT, Verbatim, true),                // 37
        row(Rtype::A6, Generic, true),                   // 38
        row(Rtype::DNAME, Domain(&[0]), true),           // 39
        row(Rtype::OPT, Meta, false),                    // 41
        row(Rtype::APL, Verbatim, true),                 // 42
        row(Rtype::DS, Domain(&[]), true),               // 43
        row(Rtype::SSHFP, Domain(&[]), true),            // 44
        row(Rtype::IPSECKEY, Domain(&[]), true),         // 45
        row(Rtype::RRSIG, Domain(&[7]), true),           // 46
        row(Rtype::NSEC, Domain(&[0]), true),            // 47
        row(Rtype::DNSKEY, Domain(&[]), true),           // 48
        row(Rtype::DHCID, Verbatim, true),               // 49
        row(Rtype::NSEC3, Domain(&[]), true),            // 50
        row(Rtype::NSEC3PARAM, Domain(&[]), true),       // 51
        row(Rtype::TLSA, Domain(&[]), true),             // 52
        row(Rtype::SMIMEA, DomainAs(Rtype::TLSA), true), // 53
        row(Rtype::RKEY, DomainAs(Rtype::DNSKEY), true), // 57
        row(Rtype::CDS, Domain(&[]), true),              // 59
        row(Rtype::CDNSKEY, Domain(&[]), true),          // 60
        row(Rtype::OPENPGPKEY, Domain(&[]), true),       // 61
        row(Rtype::CSYNC, Verbatim, true),               // 62
        row(Rtype::ZONEMD, Domain(&[]), true),           // 63
        row(Rtype::SVCB, Domain(&[1]), true),            // 64
        row(Rtype::HTTPS, Domain(&[1]), true),           // 65
        row(Rtype::SPF, DomainAs(Rtype::TXT), true),     // 99
        row(Rtype::NID, Verbatim, true),                 // 104
        row(Rtype::L32, Verbatim, true),                 // 105
        row(Rtype::L64, Verbatim, true),                 // 106
        row(Rtype::LP, DomainAs(Rtype::MX), true),       // 107
        row(Rtype::EUI48, Verbatim, true),               // 108
        row(Rtype::EUI64, Verbatim, true),               // 109
        row(Rtype::TKEY, Meta, false),                   // 249
        row(Rtype::TSIG, Meta, false),                   // 250
        row(Rtype::IXFR, Meta, false),                   // 251
        row(Rtype::AXFR, Meta, false),                   // 252
        row(Rtype::MAILB, Meta, false),                  // 253
        row(Rtype::MAILA, Meta, false),                  // 254
        row(Rtype::ANY, Meta, false),                    // 255
        row(Rtype::URI, Verbatim, true),                 // 256
        row(Rtype::CAA, Domain(&[]), true),              // 257
        row(Rtype::DLV, DomainAs(Rtype::DS), true),      // 32769
    ]
};

/// The row of `rtype`: from [`TYPES`], else generic form only and unknown to PowerDNS.
fn type_row(rtype: Rtype) -> TypeRow {
    match TYPES.binary_search_by_key(&rtype, |row| row.rtype) {
        Ok(at) => TYPES[at],
        Err(_) => row(rtype, Handling::Generic, false),
    }
}

/// Whether records of `rtype` must be written in their text form: PowerDNS knows the type but
/// not its RFC 3597 generic form, and `domain` cannot parse the text (LOC, URI, CERT, …).
pub(crate) fn generic_form_refused(rtype: Rtype) -> bool {
    matches!(type_row(rtype).handling, Handling::Verbatim)
}

/// Indexes of the record data fields of `rtype` that are domain names, where `@` means the origin
/// (none for a type `domain` does not parse).
fn name_fields(rtype: Rtype) -> &'static [usize] {
    match type_row(rtype).handling {
        Handling::Domain(names) => names,
        Handling::DomainAs(as_type) => name_fields(as_type),
        Handling::Verbatim | Handling::Generic | Handling::Meta => &[],
    }
}

/// The qtype and content of one record, plus the SOA MINIMUM for the TTL fallback.
pub(super) struct Rendered {
    pub(super) qtype: Box<str>,
    pub(super) content: Box<str>,
    pub(super) soa_minimum: Option<u32>,
}

/// Reads the record data tokens of `rtype` and renders them for PowerDNS.
pub(super) fn render(
    src: &[u8],
    rtype: Rtype,
    type_tok: &Tok,
    toks: &[Tok],
    origin: &Name<Bytes>,
) -> Result<Rendered, Problem> {
    let generic = toks.first().is_some_and(|tok| !tok.quoted && tok_bytes(src, tok) == b"\\#");
    let anchor = toks.first().unwrap_or(type_tok);
    let TypeRow { handling, pdns_knows, .. } = type_row(rtype);
    match handling {
        Handling::Meta => Err(Problem::at(type_tok, format!("record type `{rtype}` cannot appear in a zone file"))),
        Handling::Verbatim if generic => Err(Problem::at(
            anchor,
            format!("`{rtype}` in generic (`\\#`) form cannot be passed to PowerDNS; write its text form"),
        )),
        Handling::Verbatim => {
            if toks.is_empty() {
                return Err(Problem::at(type_tok, format!("missing {rtype} record data")));
            }
            let mut text = Vec::new();
            for (i, tok) in toks.iter().enumerate() {
                if i > 0 {
                    text.push(b' ');
                }
                push_escaped(&mut text, tok_bytes(src, tok));
            }
            let content = String::from_utf8(text)
                .map_err(|_| Problem::at(anchor, format!("{rtype} record data is not valid UTF-8")))?;
            Ok(Rendered { qtype: rtype.to_string().into(), content: content.into(), soa_minimum: None })
        }
        Handling::Generic if !generic || pdns_knows => {
            let message = if pdns_knows {
                format!("record type `{rtype}` is not supported")
            } else {
                format!(
                    "record type `{rtype}` is only supported in RFC 3597 generic form \
                     (`\\# <length> <hex>`)"
                )
            };
            Err(Problem::at(type_tok, message))
        }
        Handling::Generic => {
            let scanned = scan_rdata(src, rtype, rtype, type_tok, toks, origin)?;
            Ok(Rendered {
                qtype: format!("TYPE{}", rtype.to_int()).into(),
                content: generic_content(&scanned.wire).into(),
                soa_minimum: None,
            })
        }
        Handling::Domain(_) | Handling::DomainAs(_) => {
            let as_type = if let Handling::DomainAs(as_type) = handling { as_type } else { rtype };
            let scanned = scan_rdata(src, rtype, as_type, type_tok, toks, origin)?;
            let invalid = |message: String| Problem::at(anchor, format!("invalid {rtype} record data: {message}"));
            let data = decode(as_type, &scanned.wire).map_err(invalid)?;
            let content = data.display_zonefile(DisplayKind::Simple).to_string();
            if scanned.display.as_ref().is_some_and(|shown| *shown != content) {
                // The scanner built something that does not survive the wire format, e.g. a
                // name with an empty label (`a..b`).
                return Err(invalid("invalid domain name".into()));
            }
            let content = spaces_as_ddd(content);
            let soa_minimum = match &data {
                ZoneRecordData::Soa(soa) => Some(soa.minimum().as_secs()),
                _ => None,
            };
            let (qtype, content) = if pdns_knows {
                (rtype.to_string(), content)
            } else {
                (format!("TYPE{}", rtype.to_int()), generic_content(&scanned.wire))
            };
            Ok(Rendered { qtype: qtype.into(), content: content.into(), soa_minimum })
        }
    }
}

/// `domain` prints a space inside a name as `\ `; PowerDNS splits `content` at spaces and cannot
/// read that (the whole name then answers SERVFAIL), but reads `\032`. Escapes other than `\ `
/// are kept as they are.
fn spaces_as_ddd(content: String) -> String {
    if !content.contains("\\ ") {
        return content;
    }
    let mut out = String::with_capacity(content.len() + 8);
    let mut chars = content.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(' ') => out.push_str("\\032"),
            Some(next) => {
                out.push('\\');
                out.push(next);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Record data as `domain`'s scanner produced it.
struct Scanned {
    /// Wire format.
    wire: Vec<u8>,
    /// The scanner's presentation format, unless the data came in generic form.
    display: Option<String>,
}

/// Hands the record data tokens to `domain`'s scanner as a one-record zone file.
///
/// The tokens are re-joined on one line (their original spacing kept where it matters, raw line
/// breaks inside tokens escaped), `@` in name fields replaced by the origin and TTL units in SOA
/// timers converted, so the scanner's line:col maps back to a token.
fn scan_rdata(
    src: &[u8],
    rtype: Rtype,
    as_type: Rtype,
    type_tok: &Tok,
    toks: &[Tok],
    origin: &Name<Bytes>,
) -> Result<Scanned, Problem> {
    let mut text = Vec::with_capacity(32 + toks.iter().map(|t| t.end - t.start + 1).sum::<usize>());
    // Writing to a Vec cannot fail.
    let _ = write!(text, "@ IN TYPE{} ", as_type.to_int());
    let prefix = text.len();
    let mut starts = Vec::with_capacity(toks.len());
    let names = name_fields(as_type);
    let generic = toks.first().is_some_and(|tok| !tok.quoted && tok_bytes(src, tok) == b"\\#");
    for (i, tok) in toks.iter().enumerate() {
        if i > 0 && tok.spaced {
            text.push(b' ');
        }
        starts.push(text.len());
        let raw = tok_bytes(src, tok);
        let name_field = !generic && !tok.quoted && names.contains(&i);
        if name_field && has_empty_label(raw) {
            // `domain`'s scanner would accept this and build a broken name.
            let shown = truncate(&String::from_utf8_lossy(raw), 60);
            return Err(Problem::at(tok, format!("invalid domain name `{shown}`: empty label")));
        }
        if name_field && raw == b"@" {
            let _ = write!(text, "{}", origin.fmt_with_dot());
        } else if as_type == Rtype::SOA
            && (3..=6).contains(&i)
            && !tok.quoted
            && raw.iter().any(u8::is_ascii_alphabetic)
        {
            let seconds = parse_ttl(raw)
                .ok_or_else(|| Problem::at(tok, format!("invalid SOA timer `{}`", String::from_utf8_lossy(raw))))?;
            let _ = write!(text, "{seconds}");
        } else {
            push_escaped(&mut text, raw);
        }
    }
    text.push(b'\n');

    let result = guarded(|| {
        let mut zonefile = Zonefile::from(&text[..]);
        zonefile.set_origin(origin.clone());
        let record = match zonefile.next_entry() {
            Ok(Some(Entry::Record(record))) => record,
            Ok(_) => return Err("1:1: unexpected end of entry".to_owned()),
            Err(error) => return Err(error.to_string()),
        };
        match record.into_data() {
            ZoneRecordData::Unknown(unknown) => Ok(Scanned { wire: unknown.data().to_vec(), display: None }),
            data => {
                let mut wire = Vec::new();
                data.compose_rdata(&mut wire).map_err(|_| "1:1: cannot encode record data".to_owned())?;
                let display = data.display_zonefile(DisplayKind::Simple).to_string();
                Ok(Scanned { wire, display: Some(display) })
            }
        }
    });
    let scanned = result.map_err(|error| scanner_problem(&error, prefix, &starts, src, toks, type_tok, rtype))?;
    if scanned.wire.len() > MAX_RDATA_LEN {
        return Err(Problem::at(
            toks.first().unwrap_or(type_tok),
            format!("{rtype} record data longer than {MAX_RDATA_LEN} bytes"),
        ));
    }
    Ok(scanned)
}

/// Turns a `domain` scanner error (`"line:col: message"` in the synthetic one-line file) into a
/// problem at the token it points at.
fn scanner_problem(
    error: &str,
    prefix: usize,
    starts: &[usize],
    src: &[u8],
    toks: &[Tok],
    type_tok: &Tok,
    rtype: Rtype,
) -> Problem {
    let mut parts = error.splitn(3, ':');
    let line = parts.next().and_then(|s| s.trim().parse::<usize>().ok());
    let col = parts.next().and_then(|s| s.trim().parse::<usize>().ok());
    let message = parts.next().map_or(error, str::trim);
    if message == "unexpected end of entry" || message == "short buffer" {
        let last = toks.last().unwrap_or(type_tok);
        return Problem::at(last, format!("incomplete {rtype} record data"));
    }
    let offset = col.unwrap_or(1).saturating_sub(1);
    let tok = if line != Some(1) {
        // The scanner had already moved past the end of the line: the last token is the culprit.
        toks.last()
    } else if offset < prefix {
        None
    } else {
        starts.iter().rposition(|&start| start <= offset).and_then(|i| toks.get(i))
    };
    let Some(tok) = tok else {
        return Problem::at(type_tok, format!("invalid {rtype} record data: {}", friendly(message)));
    };
    let shown = String::from_utf8_lossy(tok_bytes(src, tok));
    let shown = truncate(&shown, 60);
    let message = if message == "trailing tokens" {
        format!("too many fields in {rtype} record data, starting at `{shown}`")
    } else {
        format!("invalid {rtype} record data at `{shown}`: {}", friendly(message))
    };
    Problem::at(tok, message)
}

/// Lower-case, more telling versions of `domain`'s messages.
fn friendly(message: &str) -> String {
    match message {
        "bad name" => "invalid domain name".into(),
        "bad charstr" => "character string longer than 255 bytes".into(),
        "bad symbol" => "invalid character or escape".into(),
        "bad UTF-8" => "invalid UTF-8".into(),
        other => other.to_owned(),
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Decodes wire-format record data as `rtype`, requiring a full, exact round trip: all octets
/// used, and encoding the result again gives the same octets (no compression pointers).
fn decode(rtype: Rtype, wire: &[u8]) -> Result<ZoneRecordData<&[u8], ParsedName<&[u8]>>, String> {
    guarded(|| {
        let mut parser = Parser::from_ref(wire);
        let data = match ZoneRecordData::parse_rdata(rtype, &mut parser) {
            Ok(Some(ZoneRecordData::Unknown(_)) | None) => {
                return Err("cannot decode it".to_owned());
            }
            Ok(Some(data)) => data,
            Err(error) => return Err(error.to_string()),
        };
        if parser.remaining() != 0 {
            return Err(format!("{} bytes too many", parser.remaining()));
        }
        let mut again = Vec::with_capacity(wire.len());
        if data.compose_rdata(&mut again).is_err() || again != wire {
            return Err("compressed or malformed domain name".to_owned());
        }
        Ok(data)
    })
}

/// RFC 3597 generic content the way PowerDNS parses it: `\# <len> <hex>` (one hex field).
pub(crate) fn generic_content(wire: &[u8]) -> String {
    let mut out = format!("\\# {}", wire.len());
    if !wire.is_empty() {
        out.push(' ');
        for byte in wire {
            out.push_str(&format!("{byte:02x}"));
        }
    }
    out
}

/// Runs a call into `domain`, turning a panic (a bug in the crate on odd input) into an error:
/// one odd record must not take the resolver, and with it the zone in PowerDNS, down.
fn guarded<T>(call: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(call))
        .unwrap_or_else(|_| Err("internal error in the zone file parser on this record".to_owned()))
}

//------------ Names ------------------------------------------------------------------------------

/// Parses a name token relative to `origin` (`@` is the origin) with `domain`'s scanner.
pub(super) fn scan_name(raw: &[u8], origin: &Name<Bytes>) -> Result<Name<Bytes>, String> {
    if raw == b"@" {
        return Ok(origin.clone());
    }
    let shown = || truncate(&String::from_utf8_lossy(raw), 60);
    if has_empty_label(raw) {
        return Err(format!("invalid domain name `{}`: empty label", shown()));
    }
    let mut text = Vec::with_capacity(raw.len() + 10);
    text.extend_from_slice(b"$ORIGIN ");
    push_escaped(&mut text, raw);
    text.push(b'\n');
    let name = guarded(|| {
        let mut zonefile = Zonefile::from(&text[..]);
        zonefile.set_origin(origin.clone());
        match zonefile.next_entry() {
            Ok(None) => zonefile.origin().map_err(|error| error.to_string()),
            Ok(Some(_)) => Err("bad name".to_owned()),
            Err(error) => Err(error.to_string()),
        }
    })
    .map_err(|error| {
        let message = error.rsplit(": ").next().unwrap_or(&error);
        format!("invalid domain name `{}`: {}", shown(), friendly(message))
    })?;
    if !well_formed(name.as_slice()) {
        return Err(format!("invalid domain name `{}`: empty label", shown()));
    }
    Ok(name)
}

/// Whether a name token in presentation format has an empty label (`a..b`, `.a`); `.` alone is
/// the root and fine.
fn has_empty_label(raw: &[u8]) -> bool {
    if raw == b"." {
        return false;
    }
    let mut label_len = 0usize;
    let mut iter = raw.iter();
    while let Some(&byte) = iter.next() {
        match byte {
            b'.' if label_len == 0 => return true,
            b'.' => label_len = 0,
            b'\\' => {
                iter.next();
                label_len += 1;
            }
            _ => label_len += 1,
        }
    }
    false
}

/// Whether wire-format name octets are a sequence of non-empty labels ending in the root label.
fn well_formed(wire: &[u8]) -> bool {
    let mut at = 0;
    loop {
        match wire.get(at) {
            Some(0) => return at + 1 == wire.len(),
            Some(&len) if len <= 63 => at += 1 + usize::from(len),
            _ => return false,
        }
    }
}

/// A [`ZoneSource`](super::ZoneSource) origin as a name; a missing trailing dot is added.
pub(super) fn parse_origin(origin: &str) -> Option<Name<Bytes>> {
    let origin = origin.trim();
    if origin.is_empty() {
        return None;
    }
    let name = if origin.ends_with('.') {
        Name::<Bytes>::from_str(origin)
    } else {
        Name::<Bytes>::from_str(&format!("{origin}."))
    };
    name.ok().filter(|name| well_formed(name.as_slice()))
}

/// A name the way PowerDNS prints a `DNSName` (`DNSName::toString`), lower-cased: labels joined
/// by `.` with a trailing dot; `.` and `\` escaped with `\`; bytes outside 0x21–0x7e as `\DDD`.
pub(crate) fn pdns_name(name: &impl ToName) -> Box<str> {
    let mut out = String::new();
    for label in name.iter_labels() {
        if label.is_root() {
            continue;
        }
        for &byte in label.as_slice() {
            match byte.to_ascii_lowercase() {
                b'.' => out.push_str("\\."),
                b'\\' => out.push_str("\\\\"),
                byte @ 0x21..=0x7e => out.push(char::from(byte)),
                byte => out.push_str(&format!("\\{byte:03}")),
            }
        }
        out.push('.');
    }
    if out.is_empty() {
        out.push('.');
    }
    out.into()
}

/// The parent of a name in [`pdns_name`] form (`"b.c."` for `"a.b.c."`, `"."` for `"c."`).
pub(super) fn parent_name(name: &str) -> Option<&str> {
    let bytes = name.as_bytes();
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'\\' => at += 2,
            b'.' => {
                return match name.get(at + 1..) {
                    Some("") => (name != ".").then_some("."),
                    rest => rest,
                };
            }
            _ => at += 1,
        }
    }
    None
}

//------------ Escaping ---------------------------------------------------------------------------

/// Copies token octets for `domain`'s scanner. Octets its scanner refuses raw but BIND takes as
/// they are (control characters such as a tab or a line break inside quotes, non-ASCII) are
/// written as `\DDD`, which means the same octet; this also keeps the synthetic file on one line.
fn push_escaped(out: &mut Vec<u8>, raw: &[u8]) {
    let plain = |byte: u8| (0x20..0x7f).contains(&byte);
    let mut iter = raw.iter();
    while let Some(&byte) = iter.next() {
        if byte == b'\\' {
            out.push(b'\\');
            match iter.next() {
                Some(&next) if plain(next) => out.push(next),
                Some(&next) => out.extend_from_slice(format!("{next:03}").as_bytes()),
                None => {}
            }
        } else if plain(byte) {
            out.push(byte);
        } else {
            out.extend_from_slice(format!("\\{byte:03}").as_bytes());
        }
    }
}

//------------ Tests ------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    #[test]
    fn escaped_spaces_in_names_become_ddd_for_powerdns() {
        assert_eq!(spaces_as_ddd("40 sp\\ ace.example.net.".into()), "40 sp\\032ace.example.net.");
        // An escaped backslash before a field separator stays as it was.
        assert_eq!(spaces_as_ddd("10 a\\\\ b.".into()), "10 a\\\\ b.");
        assert_eq!(spaces_as_ddd("10 plain.example.net.".into()), "10 plain.example.net.");
    }

    use super::*;

    #[test]
    fn parent_name_walks_up() {
        assert_eq!(parent_name("a.b.c."), Some("b.c."));
        assert_eq!(parent_name("c."), Some("."));
        assert_eq!(parent_name("."), None);
        assert_eq!(parent_name("a\\.b.c."), Some("c."));
        assert_eq!(parent_name("noroot"), None);
        assert_eq!(parent_name(""), None);
    }

    #[test]
    fn type_table_is_in_code_order_without_repeats() {
        for pair in TYPES.windows(2) {
            assert!(pair[0].rtype < pair[1].rtype, "{} listed before {}", pair[0].rtype, pair[1].rtype);
        }
    }

    #[test]
    fn type_table_rows_are_consistent() {
        for row in TYPES {
            match row.handling {
                Handling::DomainAs(as_type) => {
                    assert!(
                        matches!(type_row(as_type).handling, Handling::Domain(_)),
                        "{} read as {as_type}",
                        row.rtype
                    );
                }
                // Passed on as written, so PowerDNS must parse it.
                Handling::Verbatim => assert!(row.pdns_knows, "{}", row.rtype),
                // Otherwise the row would say no more than the default.
                Handling::Generic => assert!(row.pdns_knows, "{}", row.rtype),
                Handling::Domain(_) | Handling::Meta => {}
            }
        }
    }

    /// The lists in the parent module's docs, rebuilt from the table.
    #[test]
    fn parent_docs_agree_with_the_type_table() {
        let docs: Vec<&str> = include_str!("mod.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("//!"))
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect();
        let docs = docs.join(" ");
        let names = |pick: &dyn Fn(&TypeRow) -> bool| {
            TYPES.iter().filter(|row| pick(row)).map(|row| row.rtype.to_string()).collect::<Vec<_>>().join(", ")
        };
        let read_as = |target: Rtype| names(&|row| matches!(row.handling, Handling::DomainAs(t) if t == target));
        let verbatim = names(&|row| matches!(row.handling, Handling::Verbatim));
        for documented in [
            format!("| MX (and {}) |", read_as(Rtype::MX)),
            format!("| TXT, {} |", read_as(Rtype::TXT)),
            format!("; {verbatim} are passed on as written"),
        ] {
            assert!(docs.contains(&documented), "the parent module's docs should say `{documented}`");
        }
        let parsed = docs
            .split_once("Other types `domain` parses (")
            .and_then(|(_, rest)| rest.split_once(", …)"))
            .map(|(list, _)| list)
            .expect("the parent module's docs name examples of other types `domain` parses");
        for name in parsed.split(", ") {
            let rtype = Rtype::from_str(name).expect("a type name");
            assert!(matches!(type_row(rtype).handling, Handling::Domain(_)), "{name} is not parsed by `domain`");
        }
    }
}
