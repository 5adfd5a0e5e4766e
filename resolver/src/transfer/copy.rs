//! A transferred zone in memory, built from the [`ZoneUpdate`]s of an AXFR or IXFR, and its
//! zone-file form (what is validated, saved in the zone's `file` and served).
//!
//! Records are kept as `domain` prints them: owner, type and data in presentation format, so
//! an IXFR deletion finds its record by text, and the zone file written from them is read back
//! by [`crate::zones`] exactly as an operator's file would be (`$ORIGIN .` first, so every name
//! `domain` prints without its trailing dot is absolute).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use domain::base::iana::{Class, Rtype};
use domain::net::xfr::protocol::ParsedRecord;
use domain::rdata::ZoneRecordData;
use domain::zonetree::types::ZoneUpdate;

/// A transfer larger than this many records is refused (a runaway or hostile primary must not
/// take the resolver's memory).
pub(crate) const MAX_RECORDS: usize = 2_000_000;

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
    let key = (owner.into(), record.rtype().to_string().into(), record.data().to_string().into());
    Ok((key, record.ttl().as_secs()))
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
    /// Starts from `base` (the copy an IXFR's diffs apply to), or from nothing.
    pub(crate) fn new(base: Option<&ZoneCopy>) -> Applier {
        Applier { copy: base.cloned().unwrap_or_default(), kind: Kind::Incremental, started: false, finished: false }
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

    /// The zone as a BIND zone file: `$ORIGIN .`, the SOA, then every record.
    pub(crate) fn zone_text(&self) -> String {
        let mut out = String::with_capacity(64 * self.len() + 64);
        out.push_str("; written by geolb-resolver from a zone transfer; replaced at the next one\n$ORIGIN .\n");
        for ((owner, rtype, data), ttl) in self.soa.iter().map(|(k, t)| (k, t)).chain(self.records.iter()) {
            let _ = writeln!(out, "{owner} {ttl} IN {rtype} {data}");
        }
        out
    }
}
