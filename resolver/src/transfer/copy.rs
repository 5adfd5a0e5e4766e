//! A transferred zone in memory, built from the [`ZoneUpdate`]s of an AXFR or IXFR, and its
//! zone-file form (what is validated, saved in the zone's `file` and served).
//!
//! Records are kept as `domain` prints them: owner, type and data in presentation format, so
//! an IXFR deletion finds its record by text, and the zone file written from them is read back
//! by [`crate::zones`] exactly as an operator's file would be (`$ORIGIN .` first, so every name
//! `domain` prints without its trailing dot is absolute).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

use domain::base::iana::{Class, Rtype};
use domain::base::rdata::ComposeRecordData;
use domain::net::xfr::protocol::ParsedRecord;
use domain::rdata::ZoneRecordData;
use domain::zonetree::types::ZoneUpdate;

#[cfg(test)]
use crate::zones::{ZoneSet, ZoneSource};

/// A transfer larger than this many records is refused (a runaway or hostile primary must not
/// take the resolver's memory).
pub(crate) const MAX_RECORDS: usize = 2_000_000;

/// The first line of a zone file written by [`ZoneCopy::zone_text`].
const SAVED_HEADER: &str = "; written by geolb-resolver from a zone transfer; replaced at the next one\n";

/// `(owner, type, data)`, as printed by `domain`; the owner lower-case.
type RecordKey = (Box<str>, Box<str>, Box<str>);

/// One version of a zone.
#[derive(Clone, Debug, Default)]
pub(crate) struct ZoneCopy {
    /// The SOA: its key and TTL.
    soa: Option<(RecordKey, u32)>,
    /// The SOA's serial.
    pub(crate) serial: u32,
    /// Every other record → its TTL.
    records: BTreeMap<RecordKey, u32>,
}

/// How a transfer changed the zone: a whole new copy, or diffs applied to ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The whole zone (an AXFR, or an IXFR the primary answered in full).
    Full,
    /// Incremental: difference sequences applied to the copy we had.
    Incremental,
}

impl Kind {
    /// `"axfr"` or `"ixfr"`, for logs and the state API.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Full => "axfr",
            Kind::Incremental => "ixfr",
        }
    }
}

fn key_of(record: &ParsedRecord) -> Result<(RecordKey, u32), String> {
    if record.class() != Class::IN {
        return Err(format!("record `{}` has class {}; only IN is served", record.owner(), record.class()));
    }
    let owner = record.owner().to_string().to_ascii_lowercase();
    let mut data = record.data().to_string();
    if needs_generic(record.rtype(), &data) {
        let mut wire = Vec::new();
        record.data().compose_rdata(&mut wire).map_err(|_| format!("record `{}` cannot be encoded", record.owner()))?;
        data = crate::zones::generic_content(&wire);
    }
    let key = (owner.into(), record.rtype().to_string().into(), data.into());
    Ok((key, record.ttl().as_secs()))
}

/// Whether record data as `domain` prints it would not read back the same from a zone file: a
/// name in it holds a character the zone file syntax takes for itself (`;` starts a comment,
/// `(` `)` group lines, `"` quotes) or an escaped space. Such data is written in RFC 3597
/// generic form, which the zone loader decodes exactly. Not for the types whose text is only
/// quoted strings (their specials are inside the quotes), the SOA (its serial is read from the
/// text), nor those PowerDNS takes only in text form.
fn needs_generic(rtype: Rtype, data: &str) -> bool {
    !matches!(rtype, Rtype::TXT | Rtype::SPF | Rtype::CAA | Rtype::HINFO | Rtype::SOA)
        && !crate::zones::generic_form_refused(rtype)
        && (data.contains([';', '(', ')', '"']) || data.contains("\\ "))
}

fn soa_serial(record: &ParsedRecord) -> Option<u32> {
    match record.data() {
        ZoneRecordData::Soa(soa) => Some(soa.serial().into_int()),
        _ => None,
    }
}

/// Applies one transfer's updates, in order, to a copy.
#[derive(Debug)]
pub(crate) struct Applier {
    /// The copy being built (ours, for an IXFR; empty once a full zone starts).
    copy: ZoneCopy,
    kind: Kind,
    /// Whether the primary is sending the whole zone (decided by the first update).
    started: bool,
    finished: bool,
}

impl Applier {
    /// Starts from `base` (the copy an IXFR's diffs apply to, taken: a large zone is not
    /// copied for each transfer), or from nothing.
    pub(crate) fn new(base: Option<ZoneCopy>) -> Applier {
        Applier { copy: base.unwrap_or_default(), kind: Kind::Incremental, started: false, finished: false }
    }

    /// Whether the closing SOA was seen.
    pub(crate) fn finished(&self) -> bool {
        self.finished
    }

    /// Applies one update. An error ends the transfer: the copy is then thrown away.
    pub(crate) fn apply(&mut self, update: ZoneUpdate<ParsedRecord>) -> Result<(), String> {
        if self.finished {
            return Err("records after the closing soa".into());
        }
        if !self.started {
            self.started = true;
            if !matches!(update, ZoneUpdate::BeginBatchDelete(_)) {
                // Not a difference sequence: the whole zone follows.
                self.kind = Kind::Full;
                self.copy = ZoneCopy::default();
            }
        }
        match update {
            ZoneUpdate::DeleteAllRecords => {
                self.kind = Kind::Full;
                self.copy = ZoneCopy::default();
            }
            ZoneUpdate::AddRecord(record) => {
                let (key, ttl) = key_of(&record)?;
                if record.rtype() == Rtype::SOA {
                    return Err("a second soa inside the zone".into());
                }
                self.copy.records.insert(key, ttl);
                if self.copy.records.len() > MAX_RECORDS {
                    return Err(format!("more than {MAX_RECORDS} records"));
                }
            }
            ZoneUpdate::DeleteRecord(record) => {
                let (key, _) = key_of(&record)?;
                if self.copy.records.remove(&key).is_none() {
                    return Err(format!("ixfr deletes `{} {} {}`, which our copy does not hold", key.0, key.1, key.2));
                }
            }
            ZoneUpdate::BeginBatchDelete(record) => {
                let serial = soa_serial(&record).ok_or("ixfr difference without its soa")?;
                if serial != self.copy.serial || self.copy.soa.is_none() {
                    return Err(format!(
                        "ixfr difference starts at serial {serial}, but our copy is at {}",
                        self.copy.serial
                    ));
                }
            }
            ZoneUpdate::BeginBatchAdd(record) => self.set_soa(&record)?,
            ZoneUpdate::Finished(record) => {
                self.set_soa(&record)?;
                self.finished = true;
            }
            other => return Err(format!("unexpected transfer update {other}")),
        }
        Ok(())
    }

    fn set_soa(&mut self, record: &ParsedRecord) -> Result<(), String> {
        let serial = soa_serial(record).ok_or("expected a soa record")?;
        self.copy.soa = Some(key_of(record)?);
        self.copy.serial = serial;
        Ok(())
    }

    /// The finished copy and how it was made.
    pub(crate) fn into_copy(self) -> Result<(ZoneCopy, Kind), String> {
        if !self.finished {
            return Err("the transfer ended before its closing soa (truncated)".into());
        }
        Ok((self.copy, self.kind))
    }
}

impl ZoneCopy {
    /// The number of records, SOA included.
    pub(crate) fn len(&self) -> usize {
        self.records.len() + usize::from(self.soa.is_some())
    }

    /// The zone as a BIND zone file: `$ORIGIN .`, the SOA, then every record, then a trailer
    /// with the count (a copy cut short is known by its missing trailer).
    ///
    /// A record PowerDNS could not take from geolb — of a type `domain` prints only in RFC 3597
    /// generic form (`\# …`) while PowerDNS wants its text form (LOC, URI, CERT, DHCID, …) — is
    /// written as a `;- ` comment: not served in the managed names' answers (the next backend
    /// still serves every other name's), but kept for the next IXFR. Their number is the second
    /// value returned.
    pub(crate) fn zone_text(&self) -> (String, usize) {
        let mut out = String::with_capacity(64 * self.len() + 64);
        out.push_str(SAVED_HEADER);
        out.push_str("$ORIGIN .\n");
        let mut left_out = 0;
        for ((owner, rtype, data), ttl) in self.soa.iter().map(|(k, t)| (k, t)).chain(self.records.iter()) {
            if not_servable(rtype, data) {
                left_out += 1;
                out.push_str(LEFT_OUT);
            }
            let _ = writeln!(out, "{} {ttl} IN {rtype} {data}", escape_owner(owner));
        }
        let _ = writeln!(out, "{TRAILER}{} records", self.len());
        (out, left_out)
    }

    /// The copy back from a file [`ZoneCopy::zone_text`] wrote (so an IXFR can follow a restart).
    /// Each line is `owner ttl IN type data`, with owner and type free of spaces (`domain`
    /// escapes them), so splitting at the first four spaces gives back the very key the transfer
    /// made.
    pub(crate) fn from_saved(text: &str) -> Saved {
        let Some(body) = text.strip_prefix(SAVED_HEADER) else { return Saved::Foreign };
        Self::read_saved(body).map_or(Saved::Corrupt, Saved::Ours)
    }

    fn read_saved(body: &str) -> Option<ZoneCopy> {
        let mut copy = ZoneCopy::default();
        let mut lines = body.strip_prefix("$ORIGIN .\n")?.lines();
        let count = loop {
            let line = lines.next()?;
            if let Some(count) = line.strip_prefix(TRAILER) {
                break count.strip_suffix(" records")?.parse::<usize>().ok()?;
            }
            let line = line.strip_prefix(LEFT_OUT.trim_end_matches('\n')).unwrap_or(line);
            let mut fields = line.splitn(5, ' ');
            let (owner, ttl, class, rtype, data) =
                (fields.next()?, fields.next()?, fields.next()?, fields.next()?, fields.next()?);
            let ttl: u32 = ttl.parse().ok()?;
            if class != "IN" {
                return None;
            }
            let key: RecordKey = (unescape_owner(owner).into(), rtype.into(), data.into());
            if rtype == "SOA" {
                copy.serial = data.split(' ').nth(2)?.parse().ok()?;
                copy.soa = Some((key, ttl));
            } else {
                copy.records.insert(key, ttl);
            }
        };
        (lines.next().is_none() && copy.soa.is_some() && copy.len() == count).then_some(copy)
    }
}

/// What a zone's `file` holds, for a zone from a primary.
#[derive(Debug)]
pub(crate) enum Saved {
    /// A whole copy this resolver wrote.
    Ours(ZoneCopy),
    /// A copy this resolver wrote, cut short or edited: not to be trusted.
    Corrupt,
    /// A zone file from somewhere else (e.g. the file the zone was served from before it had a
    /// `primary`): served as any zone file, and replaced by the next transfer.
    Foreign,
}

/// Whether the file at `path` is whole, or not a copy of ours at all (then the zone loader
/// judges it); reads only its first and last bytes. Something other than a regular file (a
/// FIFO would block the loader for good) is not whole.
pub(crate) fn looks_whole(path: &std::path::Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let check = || -> std::io::Result<bool> {
        let mut file = geolb_member::statefile::open_regular(path, std::fs::OpenOptions::new().read(true))?;
        let mut head = vec![0u8; SAVED_HEADER.len()];
        if file.read_exact(&mut head).is_err() || head != SAVED_HEADER.as_bytes() {
            return Ok(true);
        }
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(64)))?;
        let mut tail = String::new();
        file.read_to_string(&mut tail)?;
        let last = tail.trim_end_matches('\n').rsplit('\n').next().unwrap_or_default();
        Ok(tail.ends_with(" records\n") && last.starts_with(TRAILER))
    };
    check().unwrap_or(false)
}

/// The last line of a copy: `; end of copy: N records`.
const TRAILER: &str = "; end of copy: ";

/// Marks a record left out of the served zone (see [`ZoneCopy::zone_text`]).
const LEFT_OUT: &str = ";- ";

/// Whether geolb cannot hand this record to PowerDNS (see [`ZoneCopy::zone_text`]).
fn not_servable(rtype: &str, data: &str) -> bool {
    data.starts_with("\\# ") && Rtype::from_str(rtype).is_ok_and(crate::zones::generic_form_refused)
}

/// Characters `domain` leaves bare in a name that a zone file reads as syntax.
const ZONE_SPECIALS: &[char] = &['$', '(', ')', '"', ';', '@'];

/// An owner as `domain` prints it, with the zone-file specials escaped and an escaped space
/// (`\ `) as `\032`: no owner holds a bare space, so a line splits at its first spaces.
fn escape_owner(owner: &str) -> std::borrow::Cow<'_, str> {
    if !owner.contains(ZONE_SPECIALS) && !owner.contains("\\ ") {
        return owner.into();
    }
    let mut out = String::with_capacity(owner.len() + 8);
    let mut chars = owner.chars();
    while let Some(c) = chars.next() {
        match c {
            // An escape `domain` wrote (`\\`, `\.`, `\ `, `\DDD`): the character after it is
            // taken as it is.
            '\\' => match chars.next() {
                Some(' ') => out.push_str("\\032"),
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
                None => out.push('\\'),
            },
            c if ZONE_SPECIALS.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.into()
}

/// [`escape_owner`] undone: the key the transfer made.
fn unescape_owner(owner: &str) -> String {
    let mut out = String::with_capacity(owner.len());
    let mut chars = owner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(n) if ZONE_SPECIALS.contains(&n) => out.push(n),
            Some(d) if d.is_ascii_digit() => {
                let ddd: String = std::iter::once(d).chain(chars.by_ref().take(2)).collect();
                if ddd == "032" {
                    out.push_str("\\ ");
                } else {
                    out.push('\\');
                    out.push_str(&ddd);
                }
            }
            Some(n) => {
                out.push('\\');
                out.push(n);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::str::FromStr;

    use bytes::Bytes;
    use domain::base::{Message, MessageBuilder, Name, Serial, Ttl};
    use domain::net::xfr::protocol::XfrResponseInterpreter;
    use domain::rdata::{A, Mx, Soa, Txt};

    use super::*;

    fn name(text: &str) -> Name<Vec<u8>> {
        Name::from_str(text).unwrap()
    }

    fn soa(serial: u32) -> Soa<Name<Vec<u8>>> {
        let t = Ttl::from_secs(60);
        Soa::new(name("ns1.example.net."), name("hostmaster.example.net."), Serial(serial), t, t, t, t)
    }

    /// One response message to a transfer of `qtype`, its answer section built by `answer`.
    fn response(
        qtype: Rtype,
        answer: impl FnOnce(&mut domain::base::message_builder::AnswerBuilder<Vec<u8>>),
    ) -> Message<Bytes> {
        let mut builder = MessageBuilder::new_vec();
        builder.header_mut().set_qr(true);
        let mut builder = builder.question();
        builder.push((name("example.net."), qtype)).unwrap();
        let mut builder = builder.answer();
        answer(&mut builder);
        Message::from_octets(Bytes::from(builder.finish())).unwrap()
    }

    /// Runs the messages through `domain`'s interpreter and our applier, from `base`.
    fn transfer(base: Option<&ZoneCopy>, messages: Vec<Message<Bytes>>) -> Result<(ZoneCopy, Kind), String> {
        let base = base.cloned();
        let mut interpreter = XfrResponseInterpreter::new();
        let mut applier = Applier::new(base);
        for message in messages {
            for update in interpreter.interpret_response(message).map_err(|e| format!("{e:?}"))? {
                applier.apply(update.map_err(|e| format!("{e:?}"))?)?;
            }
        }
        applier.into_copy()
    }

    fn axfr_v1() -> ZoneCopy {
        let zone = name("example.net.");
        let messages = vec![
            response(Rtype::AXFR, |a| {
                a.push((&zone, 300, soa(1))).unwrap();
                a.push((&zone, 300, Mx::new(10, name("mail.example.net.")))).unwrap();
                a.push((name("cdn.example.net."), 300, A::from_octets(192, 0, 2, 1))).unwrap();
            }),
            // A second message: the stream goes on until the closing SOA.
            response(Rtype::AXFR, |a| {
                a.push((name("Cdn.Example.NET."), 300, Txt::<Vec<u8>>::build_from_slice(b"hello world").unwrap()))
                    .unwrap();
                a.push((&zone, 300, soa(1))).unwrap();
            }),
        ];
        let (copy, kind) = transfer(None, messages).unwrap();
        assert_eq!(kind, Kind::Full);
        copy
    }

    #[test]
    fn an_axfr_becomes_a_zone_file_the_loader_reads() {
        let copy = axfr_v1();
        assert_eq!((copy.serial, copy.len()), (1, 4));
        let (text, left_out) = copy.zone_text();
        assert_eq!(left_out, 0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("example.net.zone");
        std::fs::write(&path, &text).unwrap();
        let zones = ZoneSet::load(&[ZoneSource { origin: "example.net.".into(), path }]).unwrap();
        let cdn: Vec<_> = zones.records("cdn.example.net.").iter().map(|r| (&*r.qtype, &*r.content)).collect();
        assert_eq!(cdn, [("A", "192.0.2.1"), ("TXT", "\"hello world\"")], "{text}");
        let apex: Vec<_> = zones.records("example.net.").iter().map(|r| &*r.qtype).collect();
        assert_eq!(apex, ["SOA", "MX"], "{text}");
    }

    #[test]
    fn a_saved_copy_reads_back_as_the_same_copy() {
        let copy = axfr_v1();
        let Saved::Ours(again) = ZoneCopy::from_saved(&copy.zone_text().0) else { panic!("not read back") };
        assert_eq!((again.serial, &again.soa, &again.records), (copy.serial, &copy.soa, &copy.records));
        // An operator's zone file is not ours: the next transfer is an AXFR.
        assert!(matches!(ZoneCopy::from_saved("$TTL 300\n@ IN SOA a. b. 1 2 3 4 5\n"), Saved::Foreign));
        // Ours, but cut short, edited, or with a line lost: not trusted.
        let text = copy.zone_text().0;
        let cut = &text[..text.len() - 30];
        let lost: String = text.lines().filter(|l| !l.contains(" MX ")).map(|l| format!("{l}\n")).collect();
        for broken in [cut, &text.replace(" IN ", " CH "), &lost] {
            assert!(matches!(ZoneCopy::from_saved(broken), Saved::Corrupt), "{broken}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z");
        for (content, whole) in [(text.as_str(), true), (cut, false), ("$TTL 300\n", true), ("", true)] {
            std::fs::write(&path, content).unwrap();
            assert_eq!(looks_whole(&path), whole, "{content}");
        }
        // A FIFO where the copy should be is not whole, and does not block.
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(looks_whole(&fifo));
        });
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(3)), Ok(false), "a FIFO copy blocked");
    }

    #[test]
    fn names_and_types_a_zone_file_cannot_carry_as_domain_prints_them_still_round_trip() {
        let zone = name("example.net.");
        let odd = [
            "\\$dollar.example.net.",
            "\\(paren\\).example.net.",
            "q\\\"uote.example.net.",
            "semi\\;colon.example.net.",
            "back\\\\(.example.net.",
            "sp\\032ace.example.net.",
        ];
        let messages = vec![response(Rtype::AXFR, |a| {
            a.push((&zone, 300, soa(1))).unwrap();
            for owner in odd {
                a.push((name(owner), 300, A::from_octets(192, 0, 2, 1))).unwrap();
            }
            // Names in record data with the same characters.
            let cdn = name("cdn.example.net.");
            for target in ["m\\;x.example.net.", "m\\\"x.example.net.", "m\\(x.example.net.", "sp\\032ace.example.net."]
            {
                a.push((&cdn, 300, Mx::new(10, name(target)))).unwrap();
            }
            a.push((&cdn, 300, domain::rdata::Srv::new(1, 1, 443, name("t\\)x.example.net.")))).unwrap();
            // LOC: `domain` prints it only as `\# …`, which PowerDNS does not take.
            let loc = domain::base::rdata::UnknownRecordData::from_octets(Rtype::LOC, vec![0u8; 16]).unwrap();
            a.push((name("where.example.net."), 300, loc)).unwrap();
            a.push((&zone, 300, soa(1))).unwrap();
        })];
        let (copy, _) = transfer(None, messages).unwrap();
        let (text, left_out) = copy.zone_text();
        assert_eq!(left_out, 1, "{text}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("example.net.zone");
        std::fs::write(&path, &text).unwrap();
        let zones = ZoneSet::load(&[ZoneSource { origin: "example.net.".into(), path }]).unwrap();
        for owner in odd {
            let owner = name(owner);
            let pdns = crate::zones::pdns_name(&owner);
            assert_eq!(zones.records(&pdns).len(), 1, "{owner} as {pdns} in:\n{text}");
        }
        assert!(zones.records("where.example.net.").is_empty(), "{text}");
        // The names in the data arrive whole, and PowerDNS can read them (`\\032`, not `\\ `).
        let mut cdn: Vec<&str> = zones.records("cdn.example.net.").iter().map(|r| &*r.content).collect();
        cdn.sort_unstable();
        assert_eq!(
            cdn,
            [
                "1 1 443 t)x.example.net.",
                "10 m\"x.example.net.",
                "10 m(x.example.net.",
                "10 m;x.example.net.",
                "10 sp\\032ace.example.net.",
            ],
            "{text}"
        );
        let Saved::Ours(again) = ZoneCopy::from_saved(&text) else { panic!("not read back:\n{text}") };
        assert_eq!(again.records, copy.records);
    }

    #[test]
    fn an_ixfr_applies_its_differences_to_our_copy() {
        let v1 = axfr_v1();
        let zone = name("example.net.");
        let diff = response(Rtype::IXFR, |a| {
            a.push((&zone, 300, soa(3))).unwrap();
            // 1 → 2: the MX goes, a CAA-less TXT comes.
            a.push((&zone, 300, soa(1))).unwrap();
            a.push((&zone, 300, Mx::new(10, name("mail.example.net.")))).unwrap();
            a.push((&zone, 300, soa(2))).unwrap();
            a.push((&zone, 300, Txt::<Vec<u8>>::build_from_slice(b"v=spf1 -all").unwrap())).unwrap();
            // 2 → 3: only a new address.
            a.push((&zone, 300, soa(2))).unwrap();
            a.push((&zone, 300, soa(3))).unwrap();
            a.push((name("cdn.example.net."), 300, A::from_octets(192, 0, 2, 2))).unwrap();
            a.push((&zone, 300, soa(3))).unwrap();
        });
        let (v3, kind) = transfer(Some(&v1), vec![diff]).unwrap();
        assert_eq!((kind, v3.serial, v3.len()), (Kind::Incremental, 3, 5));
        let text = v3.zone_text().0;
        assert!(!text.contains(" MX ") && text.contains("\"v=spf1 -all\"") && text.contains("192.0.2.2"), "{text}");
        assert!(text.contains(" SOA ns1.example.net. hostmaster.example.net. 3 "), "{text}");
    }

    #[test]
    fn an_ixfr_answered_in_full_replaces_the_copy() {
        let v1 = axfr_v1();
        let zone = name("example.net.");
        let full = response(Rtype::IXFR, |a| {
            a.push((&zone, 300, soa(5))).unwrap();
            a.push((name("www.example.net."), 300, A::from_octets(192, 0, 2, 9))).unwrap();
            a.push((&zone, 300, soa(5))).unwrap();
        });
        let (v5, kind) = transfer(Some(&v1), vec![full]).unwrap();
        assert_eq!((kind, v5.serial, v5.len()), (Kind::Full, 5, 2));
    }

    #[test]
    fn broken_transfers_are_refused() {
        let v1 = axfr_v1();
        let zone = name("example.net.");
        // No closing SOA: truncated.
        let truncated = response(Rtype::AXFR, |a| {
            a.push((&zone, 300, soa(2))).unwrap();
            a.push((name("cdn.example.net."), 300, A::from_octets(192, 0, 2, 1))).unwrap();
        });
        let error = transfer(None, vec![truncated]).unwrap_err();
        assert!(error.contains("truncated"), "{error}");
        // A difference that starts at a serial we do not hold.
        let wrong_base = response(Rtype::IXFR, |a| {
            a.push((&zone, 300, soa(3))).unwrap();
            a.push((&zone, 300, soa(2))).unwrap();
            a.push((&zone, 300, soa(3))).unwrap();
            a.push((&zone, 300, soa(3))).unwrap();
        });
        let error = transfer(Some(&v1), vec![wrong_base]).unwrap_err();
        assert!(error.contains("starts at serial 2, but our copy is at 1"), "{error}");
        // Deleting a record we do not have: the primary's idea of our copy is wrong.
        let bad_delete = response(Rtype::IXFR, |a| {
            a.push((&zone, 300, soa(2))).unwrap();
            a.push((&zone, 300, soa(1))).unwrap();
            a.push((name("nope.example.net."), 300, A::from_octets(192, 0, 2, 7))).unwrap();
            a.push((&zone, 300, soa(2))).unwrap();
            a.push((&zone, 300, soa(2))).unwrap();
        });
        let error = transfer(Some(&v1), vec![bad_delete]).unwrap_err();
        assert!(error.contains("does not hold"), "{error}");
    }
}
