//! Static records from the operator's BIND zone files.
//!
//! PowerDNS takes the first backend that returns records for a name and never asks the next one,
//! so when geolb answers a name it manages it must return *every* record of that name: the
//! geo-picked A/AAAA **and** the name's other records (MX, TXT, CAA, SRV, …), exactly as the hidden
//! primary serves them (DESIGN.md, "How PowerDNS uses us"). This module reads the same zone files
//! and keeps every record, indexed by lower-case owner name, already rendered in the PowerDNS
//! remote-backend `content` format.
//!
//! **Owns:** reading zone files (`$ORIGIN`, `$TTL`, `$INCLUDE`, `@`, blank owners, parentheses,
//! comments, TTL units such as `1h`), validating them the way the primary would (class IN only,
//! owners inside the zone, exactly one SOA at the apex, no CNAME beside other data, duplicate
//! records merged), rendering record data as PowerDNS parses it, and the lookup index
//! ([`ZoneSet::records`], [`ZoneSet::zone_of`]).
//!
//! **Does not own:** which names geolb manages or which of a name's records to replace (the caller
//! drops the static A/AAAA it overrides); reloading (the caller builds a new [`ZoneSet`] and swaps
//! it in, e.g. behind an `ArcSwap`); wildcard synthesis (every managed name must exist in the zone,
//! so a wildcard never applies to it; `*` owners are stored literally); DNSSEC (PowerDNS signs with
//! the next backend's keys).
//!
//! # How files are parsed
//! Record *data* is parsed by NLnet Labs' `domain` crate. Its zone file scanner, however, cannot go
//! on after the first error, has no TTL units, treats `@` in record data as a label and accepts
//! some malformed names (`a..b`). So this module splits each file into entries itself (a small
//! lexer that knows quotes, escapes, parentheses and comments), handles directives, owner, TTL,
//! class and type itself, and hands each record's data alone to `domain`. Every record is then
//! encoded to wire format and decoded again, which rejects what the scanner let through. Every
//! error carries `file:line:col`, and one load reports all of them (up to [`MAX_ERRORS`]).
//!
//! # Content format (what PowerDNS's remote backend parses in `content`)
//! | type | `content` |
//! |---|---|
//! | A, AAAA | `192.0.2.1`, canonical RFC 5952 text `2001:db8::1` |
//! | CNAME, NS, PTR, DNAME | absolute name with trailing dot: `cdn.example.net.` |
//! | MX (and AFSDB, KX, LP) | priority inside: `10 mail.example.net.` |
//! | SRV | `10 5 443 node.example.net.` |
//! | TXT, SPF | each character-string quoted, `"` and `\` escaped, other bytes outside 0x20–0x7e as `\DDD`: `"v=spf1 -all"`, `"a" "b"` |
//! | CAA | `0 issue "letsencrypt.org"` |
//! | SOA | `ns1.example.net. hostmaster.example.net. 2024010101 3600 600 604800 300` (seconds) |
//! | types PowerDNS 4.7 does not know | qtype `TYPE65280`, content `\# 3 0a0b0c` (RFC 3597, hex without spaces: PowerDNS wants exactly three fields) |
//!
//! Other types `domain` parses (DS, DNSKEY, TLSA, SSHFP, HTTPS, SVCB, NAPTR, …) use `domain`'s
//! presentation format; LOC, URI, CERT, DHCID, APL, CSYNC, EUI48/64, NID, L32/64 are passed on as
//! written (normalised whitespace), because `domain` cannot parse them and PowerDNS can.
//!
//! Owner names are rendered the way PowerDNS prints a `DNSName` (lower-case, `.` and `\` escaped,
//! bytes outside 0x21–0x7e as `\DDD`), so `records()` can be called with the `qname` PowerDNS sends,
//! lower-cased.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bytes::Bytes;
use domain::base::iana::Rtype;
use domain::base::name::{Name, ParsedName, ToName};
use domain::base::rdata::{ComposeRecordData, ParseRecordData};
use domain::base::zonefile_fmt::{DisplayKind, ZonefileFmt};
use domain::dep::octseq::Parser;
use domain::rdata::ZoneRecordData;
use domain::zonefile::inplace::{Entry, Zonefile};

/// At most this many errors are collected by one [`ZoneSet::load`]; the rest are only counted.
pub const MAX_ERRORS: usize = 100;

/// `$INCLUDE` nesting deeper than this is refused (it is almost certainly a loop).
const MAX_INCLUDE_DEPTH: usize = 16;

/// The largest TTL RFC 2181 allows.
const MAX_TTL: u32 = 0x7fff_ffff;

/// The largest record data the wire format can carry.
const MAX_RDATA_LEN: usize = 0xffff;

//------------ Public types ---------------------------------------------------------------------

/// One zone to load: its origin (absolute, e.g. `"example.net."`) and its zone file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneSource {
    /// The zone's apex. A missing trailing dot is added; case does not matter.
    pub origin: String,
    /// The BIND zone file, the same one the hidden primary serves. `$INCLUDE` paths inside it are
    /// resolved relative to the directory of the file that includes them.
    pub path: PathBuf,
}

/// A record in PowerDNS remote-backend terms: the four fields of one `lookup` result entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticRecord {
    /// Owner name: lower-case, absolute, with trailing dot, escaped as PowerDNS prints names.
    pub qname: Box<str>,
    /// Type mnemonic (`"MX"`, `"TXT"`, `"A"`, …); types PowerDNS 4.7 does not know are
    /// `"TYPE<n>"` with RFC 3597 content.
    pub qtype: Box<str>,
    /// Record data in the presentation format PowerDNS parses from `content` (see the module docs).
    pub content: Box<str>,
    /// TTL in seconds (one TTL per RRset, as the primary serves it).
    pub ttl: u32,
}

/// All records of all loaded zones, indexed by lower-case owner name. Immutable once built: share
/// it behind an `Arc` and replace it whole on reload.
#[derive(Clone, Debug, Default)]
pub struct ZoneSet {
    /// Owner name → its records, in zone file order.
    by_owner: HashMap<Box<str>, Box<[StaticRecord]>>,
    /// Zone apex → number of records indexed for it. Sorted so logs are stable.
    zones: BTreeMap<Box<str>, usize>,
}

/// Why zone files could not be loaded. Messages are lower-case and start with the file (and for
/// problems at a place in a file, `line:col`).
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// A zone file named by a [`ZoneSource`] could not be read.
    #[error("{}: cannot read zone file: {source}", path.display())]
    Read {
        /// The file as given.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A problem at a place in a zone file (or in a file it includes).
    #[error("{}:{line}:{col}: {message}", path.display())]
    Invalid {
        /// The file the problem is in.
        path: PathBuf,
        /// 1-based line.
        line: u32,
        /// 1-based column, in characters.
        col: u32,
        /// What is wrong, lower-case.
        message: String,
    },
    /// A problem with a zone as a whole (a missing SOA, a bad or repeated origin).
    #[error("{}: {message}", path.display())]
    Zone {
        /// The zone's file.
        path: PathBuf,
        /// What is wrong, lower-case.
        message: String,
    },
    /// More than one problem: all of them, in the order they were found.
    #[error("{}", DisplayMany { errors, omitted: *omitted })]
    Many {
        /// The problems (at most [`MAX_ERRORS`]).
        errors: Vec<ZoneError>,
        /// How many more problems were found but not kept.
        omitted: usize,
    },
}

impl ZoneError {
    /// The individual problems: the list for [`ZoneError::Many`], else just this one.
    pub fn errors(&self) -> &[ZoneError] {
        match self {
            ZoneError::Many { errors, .. } => errors,
            other => std::slice::from_ref(other),
        }
    }
}

/// Formats [`ZoneError::Many`]: a count, then one problem per line.
struct DisplayMany<'a> {
    errors: &'a [ZoneError],
    omitted: usize,
}

impl fmt::Display for DisplayMany<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} errors in zone files:", self.errors.len() + self.omitted)?;
        for error in self.errors {
            write!(f, "\n  {error}")?;
        }
        if self.omitted > 0 {
            write!(f, "\n  … and {} more", self.omitted)?;
        }
        Ok(())
    }
}

impl ZoneSet {
    /// Loads every zone and indexes its records.
    ///
    /// Reports all problems it can find (each with `file:line:col`), not just the first; any
    /// problem fails the whole load, so a reload can keep the previous set. Records of a zone that
    /// lie inside another loaded zone (delegation NS, glue) are left out: the child zone's records
    /// are the ones served for those names.
    pub fn load(sources: &[ZoneSource]) -> Result<ZoneSet, ZoneError> {
        let mut errors = Errors::default();
        let mut zones: Vec<(Box<str>, Vec<StaticRecord>)> = Vec::with_capacity(sources.len());
        let mut seen: HashMap<Box<str>, &Path> = HashMap::new();
        for source in sources {
            let Some(apex) = parse_origin(&source.origin) else {
                errors.push(ZoneError::Zone {
                    path: source.path.clone(),
                    message: format!("invalid zone origin `{}`", source.origin),
                });
                continue;
            };
            let apex_key = pdns_name(&apex);
            if let Some(other) = seen.get(&apex_key) {
                errors.push(ZoneError::Zone {
                    path: source.path.clone(),
                    message: format!("zone `{apex_key}` is listed twice (also with `{}`)", other.display()),
                });
                continue;
            }
            seen.insert(apex_key.clone(), &source.path);
            let mut loader = ZoneLoader::new(apex.clone(), apex_key.clone(), &mut errors);
            loader.load_file(&source.path, apex, None);
            let records = loader.finish(&source.path);
            zones.push((apex_key, records));
        }
        match errors.into_error() {
            Some(error) => Err(error),
            None => Ok(Self::index(zones)),
        }
    }

    /// A set without zones: every lookup finds nothing.
    pub fn empty() -> ZoneSet {
        ZoneSet::default()
    }

    /// All records owned by `qname_lower` (any type, zone file order); empty if there are none.
    ///
    /// `qname_lower` must be lower-case and absolute with its trailing dot, as PowerDNS sends
    /// `qname` (lower-cased by the caller). Does not allocate.
    pub fn records(&self, qname_lower: &str) -> &[StaticRecord] {
        self.by_owner.get(qname_lower).map_or(&[], |records| records)
    }

    /// The origin of the longest loaded zone that contains `qname_lower` (the name itself or one
    /// of its parents), or `None`. Same input rules as [`ZoneSet::records`]; does not allocate.
    pub fn zone_of(&self, qname_lower: &str) -> Option<&str> {
        let mut name = Some(qname_lower);
        while let Some(candidate) = name {
            if let Some((apex, _)) = self.zones.get_key_value(candidate) {
                return Some(apex);
            }
            name = parent_name(candidate);
        }
        None
    }

    /// Every loaded zone's origin and the number of records indexed for it (for logs).
    pub fn zones(&self) -> impl Iterator<Item = (&str, usize)> {
        self.zones.iter().map(|(apex, count)| (&**apex, *count))
    }

    /// Builds the index from validated zones: leaves out records that belong to a more specific
    /// loaded zone, merges duplicates and gives each RRset its first record's TTL (as BIND does).
    fn index(zones: Vec<(Box<str>, Vec<StaticRecord>)>) -> ZoneSet {
        let mut set = ZoneSet::default();
        for (apex, _) in &zones {
            set.zones.insert(apex.clone(), 0);
        }
        let mut by_owner: HashMap<Box<str>, Vec<StaticRecord>> = HashMap::new();
        let mut counts = Vec::with_capacity(zones.len());
        for (apex, records) in zones {
            let mut kept = 0;
            let mut occluded = 0;
            for mut record in records {
                if set.zone_of(&record.qname) != Some(&*apex) {
                    occluded += 1;
                    continue;
                }
                let list = by_owner.entry(record.qname.clone()).or_default();
                let mut duplicate = false;
                for other in list.iter().filter(|other| other.qtype == record.qtype) {
                    record.ttl = other.ttl;
                    duplicate |= other.content == record.content;
                }
                if !duplicate {
                    list.push(record);
                    kept += 1;
                }
            }
            if occluded > 0 {
                tracing::debug!(
                    zone = %apex,
                    records = occluded,
                    "zone records inside a loaded child zone left out"
                );
            }
            counts.push((apex, kept));
        }
        set.zones.extend(counts);
        set.by_owner = by_owner.into_iter().map(|(owner, records)| (owner, records.into_boxed_slice())).collect();
        set
    }
}

//------------ Errors collection ----------------------------------------------------------------

/// Collects problems during one load, keeping at most [`MAX_ERRORS`].
#[derive(Default)]
struct Errors {
    list: Vec<ZoneError>,
    omitted: usize,
}

impl Errors {
    fn push(&mut self, error: ZoneError) {
        if self.list.len() < MAX_ERRORS {
            self.list.push(error);
        } else {
            self.omitted += 1;
        }
    }

    fn into_error(mut self) -> Option<ZoneError> {
        if self.list.len() <= 1 && self.omitted == 0 {
            return self.list.pop();
        }
        Some(ZoneError::Many { errors: self.list, omitted: self.omitted })
    }
}

/// A problem at a place in the file being read; turned into [`ZoneError::Invalid`].
#[derive(Debug)]
struct Problem {
    line: u32,
    col: u32,
    message: String,
}

impl Problem {
    fn at(tok: &Tok, message: impl Into<String>) -> Self {
        Problem { line: tok.line, col: tok.col, message: message.into() }
    }
}

//------------ Loading one zone -----------------------------------------------------------------

/// A record as read, with what validation needs besides the [`StaticRecord`].
struct Loaded {
    owner: Name<Bytes>,
    rtype: Rtype,
    record: StaticRecord,
    file: usize,
    line: u32,
    col: u32,
}

/// Where a `$INCLUDE` was written, for errors about the included file.
#[derive(Clone, Copy)]
struct Site {
    file: usize,
    line: u32,
    col: u32,
}

/// Reads one zone: its file and everything it includes.
struct ZoneLoader<'e> {
    apex: Name<Bytes>,
    apex_key: Box<str>,
    /// Every file read, so records and errors can name theirs by index.
    files: Vec<PathBuf>,
    records: Vec<Loaded>,
    /// The last `$TTL` (for the whole zone, includes too, as in BIND).
    dollar_ttl: Option<u32>,
    /// The last TTL written on a record (used when there is no `$TTL`, RFC 1035).
    last_ttl: Option<u32>,
    /// Files being read, innermost last, to refuse `$INCLUDE` loops.
    include_stack: Vec<PathBuf>,
    errors: &'e mut Errors,
}

impl<'e> ZoneLoader<'e> {
    fn new(apex: Name<Bytes>, apex_key: Box<str>, errors: &'e mut Errors) -> Self {
        ZoneLoader {
            apex,
            apex_key,
            files: Vec::new(),
            records: Vec::new(),
            dollar_ttl: None,
            last_ttl: None,
            include_stack: Vec::new(),
            errors,
        }
    }

    fn error_at(&mut self, file: usize, problem: Problem) {
        let path = self.files.get(file).cloned().unwrap_or_default();
        self.errors.push(ZoneError::Invalid { path, line: problem.line, col: problem.col, message: problem.message });
    }

    /// Reads `path` with `origin` as its initial origin. `site` is the `$INCLUDE` that named it.
    fn load_file(&mut self, path: &Path, mut origin: Name<Bytes>, site: Option<Site>) {
        let fail = |this: &mut Self, message: String| match site {
            Some(site) => this.error_at(site.file, Problem { line: site.line, col: site.col, message }),
            None => this.errors.push(ZoneError::Zone { path: path.to_owned(), message }),
        };
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        if self.include_stack.contains(&canonical) {
            let message = format!("`$INCLUDE` loop: `{}` is already being read", path.display());
            return fail(self, message);
        }
        if self.include_stack.len() > MAX_INCLUDE_DEPTH {
            let message = format!("`$INCLUDE` nested more than {MAX_INCLUDE_DEPTH} deep");
            return fail(self, message);
        }
        let src = match std::fs::read(path) {
            Ok(src) => src,
            Err(source) => {
                return match site {
                    Some(_) => {
                        let message = format!("cannot read included file `{}`: {source}", path.display());
                        fail(self, message)
                    }
                    None => self.errors.push(ZoneError::Read { path: path.to_owned(), source }),
                };
            }
        };
        let file = self.files.len();
        self.files.push(path.to_owned());
        self.include_stack.push(canonical);
        let mut last_owner: Option<Name<Bytes>> = None;
        let mut lexer = Lexer::new(&src);
        while let Some(entry) = lexer.next_entry() {
            let result = entry.and_then(|entry| self.entry(file, path, &src, &entry, &mut origin, &mut last_owner));
            if let Err(problem) = result {
                self.error_at(file, problem);
            }
        }
        self.include_stack.pop();
    }

    /// Handles one entry: a directive or a record.
    fn entry(
        &mut self,
        file: usize,
        path: &Path,
        src: &[u8],
        entry: &RawEntry,
        origin: &mut Name<Bytes>,
        last_owner: &mut Option<Name<Bytes>>,
    ) -> Result<(), Problem> {
        let Some(first) = entry.toks.first() else {
            return Ok(());
        };
        if !entry.indented && !first.quoted && tok_bytes(src, first).starts_with(b"$") {
            return self.directive(file, path, src, entry, origin);
        }
        let record = self.record(file, src, entry, origin, last_owner)?;
        self.records.push(record);
        Ok(())
    }

    /// `$ORIGIN`, `$TTL` and `$INCLUDE`.
    fn directive(
        &mut self,
        file: usize,
        path: &Path,
        src: &[u8],
        entry: &RawEntry,
        origin: &mut Name<Bytes>,
    ) -> Result<(), Problem> {
        let (first, args) = match entry.toks.split_first() {
            Some(split) => split,
            None => return Ok(()),
        };
        let name = String::from_utf8_lossy(tok_bytes(src, first));
        let directive = name.to_ascii_uppercase();
        match directive.as_str() {
            "$ORIGIN" => {
                let [arg] = args else {
                    return Err(Problem::at(first, "`$ORIGIN` takes exactly one domain name"));
                };
                *origin = scan_name(tok_bytes(src, arg), origin).map_err(|message| Problem::at(arg, message))?;
            }
            "$TTL" => {
                let [arg] = args else {
                    return Err(Problem::at(first, "`$TTL` takes exactly one ttl"));
                };
                self.dollar_ttl = Some(record_ttl(src, arg)?);
            }
            "$INCLUDE" => {
                let (file_tok, origin_tok) = match args {
                    [file_tok] => (file_tok, None),
                    [file_tok, origin_tok] => (file_tok, Some(origin_tok)),
                    _ => {
                        return Err(Problem::at(first, "`$INCLUDE` takes a file name and an optional origin"));
                    }
                };
                let included = include_path(src, file_tok)?;
                let included = match path.parent() {
                    Some(dir) => dir.join(included),
                    None => included,
                };
                let include_origin = match origin_tok {
                    Some(tok) => scan_name(tok_bytes(src, tok), origin).map_err(|message| Problem::at(tok, message))?,
                    None => origin.clone(),
                };
                let site = Site { file, line: first.line, col: first.col };
                // The included file starts with its own origin and owner; neither leaks back.
                self.load_file(&included, include_origin, Some(site));
            }
            "$GENERATE" => {
                return Err(Problem::at(first, "`$GENERATE` is not supported; write the records out"));
            }
            _ => return Err(Problem::at(first, format!("unknown directive `{name}`"))),
        }
        Ok(())
    }

    /// Parses a record entry: owner, TTL and class in either order, type, data.
    fn record(
        &mut self,
        file: usize,
        src: &[u8],
        entry: &RawEntry,
        origin: &Name<Bytes>,
        last_owner: &mut Option<Name<Bytes>>,
    ) -> Result<Loaded, Problem> {
        let toks = &entry.toks[..];
        let Some(first) = toks.first() else {
            return Err(Problem { line: entry.line, col: 1, message: "empty record".into() });
        };
        let mut rest = toks;
        let owner = if entry.indented {
            last_owner.clone().ok_or_else(|| Problem::at(first, "indented record without a previous owner name"))?
        } else {
            rest = &toks[1..];
            let owner = scan_name(tok_bytes(src, first), origin).map_err(|message| Problem::at(first, message))?;
            *last_owner = Some(owner.clone());
            owner
        };

        let mut ttl = None;
        let mut class_seen = false;
        let (rtype, type_tok, rdata) = loop {
            let Some((tok, after)) = rest.split_first() else {
                let last = toks.last().unwrap_or(first);
                return Err(Problem::at(last, "missing record type"));
            };
            rest = after;
            let text = tok_bytes(src, tok);
            let shown = String::from_utf8_lossy(text);
            if tok.quoted {
                return Err(Problem::at(tok, format!("expected a ttl, class or record type, found {shown}")));
            }
            if text.first().is_some_and(u8::is_ascii_digit) {
                if ttl.is_some() {
                    return Err(Problem::at(tok, format!("second ttl `{shown}`")));
                }
                ttl = Some(record_ttl(src, tok)?);
            } else if let Some(is_in) = class_of(text) {
                if class_seen {
                    return Err(Problem::at(tok, format!("second class `{shown}`")));
                }
                if !is_in {
                    return Err(Problem::at(tok, format!("class `{shown}` is not supported; only IN is")));
                }
                class_seen = true;
            } else {
                let rtype = std::str::from_utf8(text)
                    .ok()
                    .and_then(|text| Rtype::from_str(text).ok())
                    .ok_or_else(|| Problem::at(tok, format!("unknown record type `{shown}`")))?;
                break (rtype, tok, rest);
            }
        };

        let rendered = render(src, rtype, type_tok, rdata, origin)?;
        let ttl = match ttl {
            Some(ttl) => {
                self.last_ttl = Some(ttl);
                ttl
            }
            None => match (self.dollar_ttl.or(self.last_ttl), rendered.soa_minimum) {
                (Some(ttl), _) => ttl,
                // BIND: without any TTL, the SOA takes its MINIMUM and later records inherit it.
                (None, Some(minimum)) => {
                    let minimum = minimum.min(MAX_TTL);
                    self.last_ttl = Some(minimum);
                    minimum
                }
                (None, None) => {
                    return Err(Problem::at(type_tok, "record without a ttl, and no `$TTL` or earlier ttl to use"));
                }
            },
        };
        let (line, col) = (first.line, first.col);
        Ok(Loaded {
            record: StaticRecord { qname: pdns_name(&owner), qtype: rendered.qtype, content: rendered.content, ttl },
            owner,
            rtype,
            file,
            line,
            col,
        })
    }

    /// Checks the zone as a whole and hands out its records.
    fn finish(self, zone_path: &Path) -> Vec<StaticRecord> {
        let ZoneLoader { apex, apex_key, files, records, errors, .. } = self;
        let mut problems: Vec<(usize, Problem)> = Vec::new();
        let mut out = Vec::with_capacity(records.len());
        let mut soa: Option<(usize, u32)> = None;
        // Per owner: index (into `out`) of the first CNAME, whether other data was seen, and
        // whether the conflict was reported already.
        let mut cnames: HashMap<Box<str>, (Option<usize>, bool, bool)> = HashMap::new();
        for loaded in records {
            let problem = |message: String| Problem { line: loaded.line, col: loaded.col, message };
            let qname = &loaded.record.qname;
            if !loaded.owner.ends_with(&apex) {
                let message = format!("owner `{qname}` is outside the zone `{apex_key}`");
                problems.push((loaded.file, problem(message)));
                continue;
            }
            if loaded.rtype == Rtype::SOA {
                if *qname != apex_key {
                    let message = format!("soa record `{qname}` is not at the zone apex");
                    problems.push((loaded.file, problem(message)));
                    continue;
                }
                if let Some((file, line)) = soa {
                    let first = files.get(file).map(|p| p.display().to_string());
                    let message = format!(
                        "second soa record for `{apex_key}` (the first is at {}:{line})",
                        first.unwrap_or_default()
                    );
                    problems.push((loaded.file, problem(message)));
                    continue;
                }
                soa = Some((loaded.file, loaded.line));
            }
            let state = cnames.entry(qname.clone()).or_default();
            let (first_cname, other, reported) = state;
            if loaded.rtype == Rtype::CNAME {
                if let Some(index) = *first_cname {
                    let same = out.get(index).is_some_and(|r: &StaticRecord| r.content == loaded.record.content);
                    if !same {
                        let message = format!("`{qname}` has more than one cname");
                        problems.push((loaded.file, problem(message)));
                        continue;
                    }
                } else {
                    *first_cname = Some(out.len());
                }
            } else if !matches!(loaded.rtype, Rtype::RRSIG | Rtype::NSEC) {
                *other = true;
            }
            if first_cname.is_some() && *other && !*reported {
                *reported = true;
                let message = format!("`{qname}` has a cname and other data");
                problems.push((loaded.file, problem(message)));
                continue;
            }
            out.push(loaded.record);
        }
        for (file, problem) in problems {
            errors.push(ZoneError::Invalid {
                path: files.get(file).cloned().unwrap_or_default(),
                line: problem.line,
                col: problem.col,
                message: problem.message,
            });
        }
        if soa.is_none() && !files.is_empty() {
            errors.push(ZoneError::Zone {
                path: zone_path.to_owned(),
                message: format!("zone `{apex_key}` has no soa record"),
            });
        }
        out
    }
}

/// Reads a record TTL token (BIND syntax, units allowed) and checks the RFC 2181 range.
fn record_ttl(src: &[u8], tok: &Tok) -> Result<u32, Problem> {
    let text = tok_bytes(src, tok);
    let shown = String::from_utf8_lossy(text);
    match parse_ttl(text) {
        Some(ttl) if ttl <= MAX_TTL => Ok(ttl),
        Some(_) => Err(Problem::at(tok, format!("ttl `{shown}` is larger than {MAX_TTL}"))),
        None => Err(Problem::at(tok, format!("invalid ttl `{shown}`"))),
    }
}

/// The file name of a `$INCLUDE`, unquoted and unescaped.
fn include_path(src: &[u8], tok: &Tok) -> Result<PathBuf, Problem> {
    let raw = tok_bytes(src, tok);
    let raw = if tok.quoted { raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default() } else { raw };
    let mut bytes = Vec::with_capacity(raw.len());
    let mut iter = raw.iter();
    while let Some(&b) = iter.next() {
        bytes.push(if b == b'\\' { iter.next().copied().unwrap_or(b) } else { b });
    }
    match String::from_utf8(bytes) {
        Ok(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(Problem::at(tok, "invalid `$INCLUDE` file name")),
    }
}

//------------ Record data ------------------------------------------------------------------------

/// How the record data of a type is read.
enum Handling {
    /// Parsed by `domain` as this type (the same, or one with identical syntax).
    Domain(Rtype),
    /// `domain` cannot parse it, PowerDNS can, and it holds no domain names: passed on as written.
    Verbatim,
    /// Only the RFC 3597 generic form (`\# len hex`) is accepted.
    Generic,
    /// Query-only types that cannot be in a zone.
    Meta,
}

fn handling(rtype: Rtype) -> Handling {
    match rtype {
        Rtype::A
        | Rtype::NS
        | Rtype::MD
        | Rtype::MF
        | Rtype::CNAME
        | Rtype::SOA
        | Rtype::MB
        | Rtype::MG
        | Rtype::MR
        | Rtype::PTR
        | Rtype::HINFO
        | Rtype::MINFO
        | Rtype::MX
        | Rtype::TXT
        | Rtype::RP
        | Rtype::AAAA
        | Rtype::SRV
        | Rtype::NAPTR
        | Rtype::DNAME
        | Rtype::DS
        | Rtype::SSHFP
        | Rtype::IPSECKEY
        | Rtype::RRSIG
        | Rtype::NSEC
        | Rtype::DNSKEY
        | Rtype::NSEC3
        | Rtype::NSEC3PARAM
        | Rtype::TLSA
        | Rtype::CDS
        | Rtype::CDNSKEY
        | Rtype::OPENPGPKEY
        | Rtype::ZONEMD
        | Rtype::SVCB
        | Rtype::HTTPS
        | Rtype::CAA => Handling::Domain(rtype),
        Rtype::SPF => Handling::Domain(Rtype::TXT),
        Rtype::AFSDB | Rtype::KX | Rtype::LP => Handling::Domain(Rtype::MX),
        Rtype::DLV => Handling::Domain(Rtype::DS),
        Rtype::KEY | Rtype::RKEY => Handling::Domain(Rtype::DNSKEY),
        Rtype::SMIMEA => Handling::Domain(Rtype::TLSA),
        Rtype::LOC
        | Rtype::URI
        | Rtype::CERT
        | Rtype::DHCID
        | Rtype::APL
        | Rtype::CSYNC
        | Rtype::EUI48
        | Rtype::EUI64
        | Rtype::NID
        | Rtype::L32
        | Rtype::L64 => Handling::Verbatim,
        Rtype::OPT
        | Rtype::TKEY
        | Rtype::TSIG
        | Rtype::IXFR
        | Rtype::AXFR
        | Rtype::MAILB
        | Rtype::MAILA
        | Rtype::ANY => Handling::Meta,
        _ => Handling::Generic,
    }
}

/// Whether PowerDNS 4.7 knows the type by name and parses its presentation format (its
/// `QType::names`, less the meta types and its private ALIAS/LUA/ADDR). For other types it needs
/// `TYPE<n>` and RFC 3597 content.
fn pdns_knows(rtype: Rtype) -> bool {
    matches!(
        rtype,
        Rtype::A
            | Rtype::NS
            | Rtype::CNAME
            | Rtype::SOA
            | Rtype::MB
            | Rtype::MG
            | Rtype::MR
            | Rtype::PTR
            | Rtype::HINFO
            | Rtype::MINFO
            | Rtype::MX
            | Rtype::TXT
            | Rtype::RP
            | Rtype::AFSDB
            | Rtype::SIG
            | Rtype::KEY
            | Rtype::AAAA
            | Rtype::LOC
            | Rtype::SRV
            | Rtype::NAPTR
            | Rtype::KX
            | Rtype::CERT
            | Rtype::A6
            | Rtype::DNAME
            | Rtype::APL
            | Rtype::DS
            | Rtype::SSHFP
            | Rtype::IPSECKEY
            | Rtype::RRSIG
            | Rtype::NSEC
            | Rtype::DNSKEY
            | Rtype::DHCID
            | Rtype::NSEC3
            | Rtype::NSEC3PARAM
            | Rtype::TLSA
            | Rtype::SMIMEA
            | Rtype::RKEY
            | Rtype::CDS
            | Rtype::CDNSKEY
            | Rtype::OPENPGPKEY
            | Rtype::CSYNC
            | Rtype::ZONEMD
            | Rtype::SVCB
            | Rtype::HTTPS
            | Rtype::SPF
            | Rtype::NID
            | Rtype::L32
            | Rtype::L64
            | Rtype::LP
            | Rtype::EUI48
            | Rtype::EUI64
            | Rtype::URI
            | Rtype::CAA
            | Rtype::DLV
    )
}

/// Indexes of the record data fields that are domain names, where `@` means the origin.
fn name_fields(rtype: Rtype) -> &'static [usize] {
    match rtype {
        Rtype::NS
        | Rtype::CNAME
        | Rtype::PTR
        | Rtype::DNAME
        | Rtype::MB
        | Rtype::MD
        | Rtype::MF
        | Rtype::MG
        | Rtype::MR
        | Rtype::NSEC => &[0],
        Rtype::MX | Rtype::SVCB | Rtype::HTTPS => &[1],
        Rtype::SOA | Rtype::RP | Rtype::MINFO => &[0, 1],
        Rtype::SRV => &[3],
        Rtype::NAPTR => &[5],
        Rtype::RRSIG => &[7],
        _ => &[],
    }
}

/// The qtype and content of one record, plus the SOA MINIMUM for the TTL fallback.
struct Rendered {
    qtype: Box<str>,
    content: Box<str>,
    soa_minimum: Option<u32>,
}

/// Reads the record data tokens of `rtype` and renders them for PowerDNS.
fn render(src: &[u8], rtype: Rtype, type_tok: &Tok, toks: &[Tok], origin: &Name<Bytes>) -> Result<Rendered, Problem> {
    let generic = toks.first().is_some_and(|tok| !tok.quoted && tok_bytes(src, tok) == b"\\#");
    let anchor = toks.first().unwrap_or(type_tok);
    match handling(rtype) {
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
        Handling::Generic if !generic || pdns_knows(rtype) => {
            let message = if pdns_knows(rtype) {
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
        Handling::Domain(as_type) => {
            let scanned = scan_rdata(src, rtype, as_type, type_tok, toks, origin)?;
            let invalid = |message: String| Problem::at(anchor, format!("invalid {rtype} record data: {message}"));
            let data = decode(as_type, &scanned.wire).map_err(invalid)?;
            let content = data.display_zonefile(DisplayKind::Simple).to_string();
            if scanned.display.as_ref().is_some_and(|shown| *shown != content) {
                // The scanner built something that does not survive the wire format, e.g. a
                // name with an empty label (`a..b`).
                return Err(invalid("invalid domain name".into()));
            }
            let soa_minimum = match &data {
                ZoneRecordData::Soa(soa) => Some(soa.minimum().as_secs()),
                _ => None,
            };
            let (qtype, content) = if pdns_knows(rtype) {
                (rtype.to_string(), content)
            } else {
                (format!("TYPE{}", rtype.to_int()), generic_content(&scanned.wire))
            };
            Ok(Rendered { qtype: qtype.into(), content: content.into(), soa_minimum })
        }
    }
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
fn generic_content(wire: &[u8]) -> String {
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

//------------ Names, TTLs, classes ---------------------------------------------------------------

/// Parses a name token relative to `origin` (`@` is the origin) with `domain`'s scanner.
fn scan_name(raw: &[u8], origin: &Name<Bytes>) -> Result<Name<Bytes>, String> {
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

/// A [`ZoneSource`] origin as a name; a missing trailing dot is added.
fn parse_origin(origin: &str) -> Option<Name<Bytes>> {
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
fn pdns_name(name: &impl ToName) -> Box<str> {
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
fn parent_name(name: &str) -> Option<&str> {
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

/// A TTL in BIND syntax: seconds, or numbers with units `w`, `d`, `h`, `m`, `s` (`1h30m`).
fn parse_ttl(raw: &[u8]) -> Option<u32> {
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for &byte in raw {
        if byte.is_ascii_digit() {
            let so_far = number.unwrap_or(0);
            number = Some(so_far.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?);
            continue;
        }
        let unit = match byte.to_ascii_lowercase() {
            b'w' => 604_800,
            b'd' => 86_400,
            b'h' => 3_600,
            b'm' => 60,
            b's' => 1,
            _ => return None,
        };
        total = total.checked_add(number.take()?.checked_mul(unit)?)?;
    }
    if raw.is_empty() {
        return None;
    }
    if let Some(number) = number {
        total = total.checked_add(number)?;
    }
    u32::try_from(total).ok()
}

/// `Some(true)` for class IN, `Some(false)` for another class, `None` if the token is no class.
fn class_of(raw: &[u8]) -> Option<bool> {
    const OTHERS: [&[u8]; 7] = [b"CH", b"CHAOS", b"HS", b"HESIOD", b"CS", b"NONE", b"ANY"];
    if raw.eq_ignore_ascii_case(b"IN") {
        return Some(true);
    }
    if OTHERS.iter().any(|other| raw.eq_ignore_ascii_case(other)) {
        return Some(false);
    }
    let digits = raw.get(..5).filter(|prefix| prefix.eq_ignore_ascii_case(b"CLASS")).and_then(|_| raw.get(5..))?;
    let number: u16 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(number == 1)
}

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

//------------ Lexer ------------------------------------------------------------------------------

/// One token of an entry. `start..end` includes the quotes of a quoted token.
#[derive(Clone, Copy, Debug)]
struct Tok {
    start: usize,
    end: usize,
    line: u32,
    col: u32,
    quoted: bool,
    /// Whether white space (or a parenthesis, or a line break) comes right before the token.
    spaced: bool,
}

/// One logical entry: its tokens, up to a line break outside parentheses.
#[derive(Debug)]
struct RawEntry {
    toks: Vec<Tok>,
    /// The entry's line starts with white space: the owner is the previous one.
    indented: bool,
    line: u32,
}

fn tok_bytes<'a>(src: &'a [u8], tok: &Tok) -> &'a [u8] {
    src.get(tok.start..tok.end).unwrap_or_default()
}

/// Splits a zone file into entries the way BIND's lexer does: white space separates tokens,
/// `"…"` quotes, `\` escapes the next octet, `;` comments to the end of the line, and line breaks
/// inside `( … )` do not end the entry.
struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    line: u32,
    /// Where the current line starts, and a column cache on it (`col` is called in order).
    line_start: usize,
    col_pos: usize,
    col: u32,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a [u8]) -> Self {
        Lexer { src, pos: 0, line: 1, line_start: 0, col_pos: 0, col: 1 }
    }

    /// The 1-based column (in characters) of `at`, which must be on the current line and not
    /// before the last position asked for.
    fn col(&mut self, at: usize) -> u32 {
        if at < self.col_pos {
            self.col_pos = self.line_start;
            self.col = 1;
        }
        let chars =
            self.src.get(self.col_pos..at).unwrap_or_default().iter().filter(|&&byte| byte & 0xc0 != 0x80).count();
        self.col = self.col.saturating_add(u32::try_from(chars).unwrap_or(u32::MAX));
        self.col_pos = at;
        self.col
    }

    fn newline(&mut self) {
        self.line = self.line.saturating_add(1);
        self.line_start = self.pos;
        self.col_pos = self.pos;
        self.col = 1;
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    /// Advances over an escape (`\` and the octet after it).
    fn skip_escape(&mut self) {
        self.pos += 1;
        if let Some(next) = self.peek() {
            self.pos += 1;
            if next == b'\n' {
                self.newline();
            }
        }
    }

    /// The next entry with at least one token; `Err` for an entry with a lexical problem (it is
    /// skipped as a whole). `None` at the end of the file.
    fn next_entry(&mut self) -> Option<Result<RawEntry, Problem>> {
        loop {
            if self.pos >= self.src.len() {
                return None;
            }
            let line = self.line;
            let indented = matches!(self.peek(), Some(b' ' | b'\t'));
            let mut toks = Vec::new();
            let mut problem: Option<Problem> = None;
            let mut depth = 0usize;
            let mut open_paren = (0, 0);
            let mut spaced = true;
            loop {
                let Some(byte) = self.peek() else {
                    if depth > 0 && problem.is_none() {
                        problem = Some(Problem {
                            line: open_paren.0,
                            col: open_paren.1,
                            message: "`(` is never closed".into(),
                        });
                    }
                    break;
                };
                match byte {
                    b' ' | b'\t' | b'\r' => {
                        self.pos += 1;
                        spaced = true;
                    }
                    b'(' => {
                        if depth == 0 {
                            open_paren = (self.line, self.col(self.pos));
                        }
                        depth += 1;
                        self.pos += 1;
                        spaced = true;
                    }
                    b')' => {
                        if depth == 0 {
                            if problem.is_none() {
                                problem = Some(Problem {
                                    line: self.line,
                                    col: self.col(self.pos),
                                    message: "`)` without `(`".into(),
                                });
                            }
                        } else {
                            depth -= 1;
                        }
                        self.pos += 1;
                        spaced = true;
                    }
                    b';' => {
                        while self.peek().is_some_and(|byte| byte != b'\n') {
                            self.pos += 1;
                        }
                    }
                    b'\n' => {
                        self.pos += 1;
                        self.newline();
                        if depth == 0 {
                            break;
                        }
                        spaced = true;
                    }
                    b'"' => {
                        let start = self.pos;
                        let (line, col) = (self.line, self.col(start));
                        self.pos += 1;
                        let mut closed = false;
                        while let Some(byte) = self.peek() {
                            match byte {
                                b'\\' => self.skip_escape(),
                                b'"' => {
                                    self.pos += 1;
                                    closed = true;
                                    break;
                                }
                                b'\n' => {
                                    self.pos += 1;
                                    self.newline();
                                }
                                _ => self.pos += 1,
                            }
                        }
                        if !closed {
                            problem.get_or_insert(Problem {
                                line,
                                col,
                                message: "quoted string is never closed".into(),
                            });
                        }
                        toks.push(Tok { start, end: self.pos, line, col, quoted: true, spaced });
                        spaced = false;
                    }
                    _ => {
                        let start = self.pos;
                        let (line, col) = (self.line, self.col(start));
                        while let Some(byte) = self.peek() {
                            match byte {
                                b' ' | b'\t' | b'\r' | b'\n' | b'(' | b')' | b';' | b'"' => break,
                                b'\\' => self.skip_escape(),
                                _ => self.pos += 1,
                            }
                        }
                        toks.push(Tok { start, end: self.pos, line, col, quoted: false, spaced });
                        spaced = false;
                    }
                }
            }
            if let Some(problem) = problem {
                return Some(Err(problem));
            }
            if !toks.is_empty() {
                return Some(Ok(RawEntry { toks, indented, line }));
            }
        }
    }
}

//------------ Tests ------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The project's example zone.
    const EXAMPLE: &str = r#"$ORIGIN example.net.
$TTL 300
@        IN SOA ns1.example.net. hostmaster.example.net. 2026112301 3600 600 604800 300
@        IN NS  ns1.example.net.
@        IN NS  ns2.example.net.
ns1      IN A   192.0.2.53
ns2      IN A   192.0.2.54
cdn      IN A   192.0.2.1            ; placeholder: geolb answers cdn's A/AAAA
cdn      IN AAAA 2001:db8::1
cdn      IN MX  10 mail.example.net.
cdn      IN TXT "v=spf1 mx -all"
cdn      IN CAA 0 issue "letsencrypt.org"
www      IN CNAME cdn.example.net.
mail     IN A   192.0.2.25
static   IN A   192.0.2.80
_https._tcp.cdn IN SRV 10 5 443 cdn.example.net.
"#;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir().join(format!(
                "geolb-zones-test-{}-{}-{nanos}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, content).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn source(origin: &str, path: PathBuf) -> ZoneSource {
        ZoneSource { origin: origin.into(), path }
    }

    fn load_one(origin: &str, zone: &str) -> Result<ZoneSet, ZoneError> {
        let dir = TempDir::new();
        let path = dir.write("zone", zone);
        ZoneSet::load(&[source(origin, path)])
    }

    /// Loads `record` (one line, relative to example.net.) after a SOA and returns its content.
    fn content(record: &str) -> (String, String) {
        let zone = format!("$ORIGIN example.net.\n$TTL 60\n@ SOA ns1 hm 1 2 3 4 5\nt {record}\n");
        let set = load_one("example.net.", &zone).unwrap_or_else(|e| panic!("{record}: {e}"));
        let records = set.records("t.example.net.");
        assert_eq!(records.len(), 1, "{record}: {records:?}");
        (records[0].qtype.to_string(), records[0].content.to_string())
    }

    fn assert_content(record: &str, qtype: &str, expected: &str) {
        assert_eq!(content(record), (qtype.to_owned(), expected.to_owned()), "{record}");
    }

    fn load_error(zone: &str) -> ZoneError {
        match load_one("example.net.", zone) {
            Ok(set) => panic!("loaded: {set:?}"),
            Err(error) => error,
        }
    }

    fn rec(qname: &str, qtype: &str, content: &str, ttl: u32) -> StaticRecord {
        StaticRecord { qname: qname.into(), qtype: qtype.into(), content: content.into(), ttl }
    }

    #[test]
    fn example_zone_loads_every_record() {
        let set = load_one("example.net.", EXAMPLE).unwrap();
        let apex = "example.net.";
        assert_eq!(
            set.records(apex),
            [
                rec(apex, "SOA", "ns1.example.net. hostmaster.example.net. 2026112301 3600 600 604800 300", 300),
                rec(apex, "NS", "ns1.example.net.", 300),
                rec(apex, "NS", "ns2.example.net.", 300),
            ]
        );
        let cdn = "cdn.example.net.";
        assert_eq!(
            set.records(cdn),
            [
                rec(cdn, "A", "192.0.2.1", 300),
                rec(cdn, "AAAA", "2001:db8::1", 300),
                rec(cdn, "MX", "10 mail.example.net.", 300),
                rec(cdn, "TXT", "\"v=spf1 mx -all\"", 300),
                rec(cdn, "CAA", "0 issue \"letsencrypt.org\"", 300),
            ]
        );
        let single = [
            ("ns1.example.net.", "A", "192.0.2.53"),
            ("ns2.example.net.", "A", "192.0.2.54"),
            ("www.example.net.", "CNAME", "cdn.example.net."),
            ("mail.example.net.", "A", "192.0.2.25"),
            ("static.example.net.", "A", "192.0.2.80"),
            ("_https._tcp.cdn.example.net.", "SRV", "10 5 443 cdn.example.net."),
        ];
        for (qname, qtype, content) in single {
            assert_eq!(set.records(qname), [rec(qname, qtype, content, 300)]);
        }
        assert!(set.records("nope.example.net.").is_empty());
        assert_eq!(set.zones().collect::<Vec<_>>(), [("example.net.", 14)]);
        assert_eq!(set.zone_of(cdn), Some("example.net."));
    }

    #[test]
    fn content_per_type() {
        assert_content("A 192.0.2.1", "A", "192.0.2.1");
        assert_content("AAAA 2001:DB8:0:0:0:0:0:1", "AAAA", "2001:db8::1");
        assert_content("AAAA ::ffff:192.0.2.1", "AAAA", "::ffff:192.0.2.1");
        assert_content("MX 10 mail", "MX", "10 mail.example.net.");
        assert_content("MX 0 .", "MX", "0 .");
        assert_content("SRV 10 5 443 node", "SRV", "10 5 443 node.example.net.");
        assert_content("CNAME cdn.example.net.", "CNAME", "cdn.example.net.");
        assert_content("CNAME cdn", "CNAME", "cdn.example.net.");
        assert_content("NS ns1.example.org.", "NS", "ns1.example.org.");
        assert_content("PTR host", "PTR", "host.example.net.");
        assert_content("DNAME other.org.", "DNAME", "other.org.");
        assert_content("TXT \"v=spf1 -all\"", "TXT", "\"v=spf1 -all\"");
        assert_content("TXT \"a\" \"b\"", "TXT", "\"a\" \"b\"");
        assert_content("TXT unquoted", "TXT", "\"unquoted\"");
        assert_content("TXT \"say \\\"hi\\\" to a\\\\b\" \"\\255\"", "TXT", "\"say \\\"hi\\\" to a\\\\b\" \"\\255\"");
        assert_content("SPF \"v=spf1 -all\"", "SPF", "\"v=spf1 -all\"");
        assert_content("CAA 0 issue \"letsencrypt.org\"", "CAA", "0 issue \"letsencrypt.org\"");
        assert_content("CAA 128 iodef \"mailto:a@b.c\"", "CAA", "128 iodef \"mailto:a@b.c\"");
        assert_content("HINFO \"PC\" \"Linux\"", "HINFO", "\"PC\" \"Linux\"");
        assert_content("AFSDB 1 afs", "AFSDB", "1 afs.example.net.");
        assert_content("DS 5414 15 2 deadbeef", "DS", "5414 15 2 DEADBEEF");
        assert_content(
            "NAPTR 100 10 \"U\" \"E2U+sip\" \"!^.*$!sip:info@example.net!\" .",
            "NAPTR",
            "100 10 \"U\" \"E2U+sip\" \"!^.*$!sip:info@example.net!\" .",
        );
        assert_content("HTTPS 1 . alpn=h2,h3", "HTTPS", "1 . alpn=h2,h3");
        assert_content("HTTPS 1 . alpn=\"h2,h3\" port=443", "HTTPS", "1 . alpn=h2,h3 port=443");
        assert_content("SSHFP 1 1 deadbeef", "SSHFP", "1 1 DEADBEEF");
        assert_content(
            "LOC 52 22 23.000 N 4 53 32.000 E -2.00m ( 0.00m 10000m 10m )",
            "LOC",
            "52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m",
        );
        assert_content("URI 10 1 \"https://example.net/\"", "URI", "10 1 \"https://example.net/\"");
        assert_content("KX 10 kx", "KX", "10 kx.example.net.");
        assert_content("KEY 256 3 13 AQID", "KEY", "256 3 13 AQID");
        assert_content("DLV 5414 15 2 deadbeef", "DLV", "5414 15 2 DEADBEEF");
        assert_content("SMIMEA 3 1 1 deadbeef", "SMIMEA", "3 1 1 DEADBEEF");
        assert_content("TLSA 3 1 1 deadbeef", "TLSA", "3 1 1 DEADBEEF");
        assert_content("RP mbox txt", "RP", "mbox.example.net. txt.example.net.");
        assert_content(
            "SVCB 1 svc port=8443 ipv6hint=2001:db8::1",
            "SVCB",
            "1 svc.example.net. port=8443 ipv6hint=2001:db8::1",
        );
        assert_content("TXT \"tab\there\" \"caf\u{e9}\"", "TXT", "\"tab\\009here\" \"caf\\195\\169\"");
        // Types PowerDNS does not know: generic form, one hex field.
        assert_content("TYPE65280 \\# 3 0A0b0c", "TYPE65280", "\\# 3 0a0b0c");
        assert_content("TYPE65280 \\# 0", "TYPE65280", "\\# 0");
        assert_content("MD mail", "TYPE3", "\\# 18 046d61696c076578616d706c65036e657400");
        // Generic form of a type PowerDNS knows: its text form.
        assert_content("A \\# 4 c0000201", "A", "192.0.2.1");
        assert_content("TYPE15 10 mail", "MX", "10 mail.example.net.");
    }

    #[test]
    fn soa_content() {
        let zone = "$ORIGIN example.net.\n$TTL 60\n\
                    @ SOA ns1 hostmaster.example.net. 2024010101 3600 600 604800 300\n";
        let set = load_one("example.net.", zone).unwrap();
        assert_eq!(
            set.records("example.net."),
            [rec("example.net.", "SOA", "ns1.example.net. hostmaster.example.net. 2024010101 3600 600 604800 300", 60)]
        );
    }

    #[test]
    fn at_sign_in_name_fields_is_the_origin() {
        assert_content("MX 10 @", "MX", "10 example.net.");
        assert_content("CNAME @", "CNAME", "example.net.");
        assert_content("TXT @", "TXT", "\"@\"");
    }

    #[test]
    fn txt_with_spaces_and_quote_keeps_its_quoting() {
        assert_content(
            r#"TXT "hello \"geo\" world" "second string""#,
            "TXT",
            r#""hello \"geo\" world" "second string""#,
        );
    }

    #[test]
    fn names_are_case_insensitive() {
        let zone = "$ORIGIN Example.NET.\n$TTL 60\n@ IN SOA ns1 hm 1 2 3 4 5\n\
                    CDN.Example.NET. IN A 192.0.2.1\nWWW IN CNAME CDN\n";
        let set = load_one("EXAMPLE.net", zone).unwrap();
        assert_eq!(set.records("cdn.example.net."), [rec("cdn.example.net.", "A", "192.0.2.1", 60)]);
        // Content keeps the case as written (PowerDNS compares names case-insensitively).
        assert_eq!(&*set.records("www.example.net.")[0].content, "CDN.Example.NET.");
        assert_eq!(set.zone_of("cdn.example.net."), Some("example.net."));
    }

    #[test]
    fn zone_of_picks_the_longest_origin() {
        let dir = TempDir::new();
        let parent = dir.write(
            "parent",
            "$TTL 60\n@ SOA ns1 hm 1 2 3 4 5\nsub NS ns1.sub\nns1.sub A 192.0.2.9\n\
             cdn A 192.0.2.1\n",
        );
        let child = dir.write("child", "$TTL 30\n@ SOA ns1 hm 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.9\nwww A 192.0.2.2\n");
        let set = ZoneSet::load(&[source("example.net.", parent), source("sub.example.net.", child)]).unwrap();
        assert_eq!(set.zone_of("www.sub.example.net."), Some("sub.example.net."));
        assert_eq!(set.zone_of("sub.example.net."), Some("sub.example.net."));
        assert_eq!(set.zone_of("cdn.example.net."), Some("example.net."));
        assert_eq!(set.zone_of("a.b.cdn.example.net."), Some("example.net."));
        assert_eq!(set.zone_of("example.net."), Some("example.net."));
        assert_eq!(set.zone_of("example.org."), None);
        assert_eq!(set.zone_of("net."), None);
        assert_eq!(set.zone_of("."), None);
        // The parent's delegation and glue give way to the child's records.
        let types: Vec<_> = set.records("sub.example.net.").iter().map(|r| (&*r.qtype, r.ttl)).collect();
        assert_eq!(types, [("SOA", 30), ("NS", 30)]);
        assert_eq!(set.records("ns1.sub.example.net.")[0].ttl, 30);
        assert_eq!(set.zones().collect::<Vec<_>>(), [("example.net.", 2), ("sub.example.net.", 4)]);
    }

    #[test]
    fn root_zone_contains_everything() {
        let set = load_one(".", "$TTL 1\n. SOA a. b. 1 2 3 4 5\nfoo.bar. A 192.0.2.1\n").unwrap();
        assert_eq!(set.zone_of("foo.bar."), Some("."));
        assert_eq!(set.records("foo.bar.").len(), 1);
    }

    #[test]
    fn directives_blank_owners_parentheses_and_ttls() {
        let zone = r#"
; a comment line
$TTL 1h
@ IN SOA ns1 hostmaster (
        2024010101 ; serial
        1h 15m 1w 5m )
  IN NS ns1
ns1 3600 IN A 192.0.2.53
    IN AAAA 2001:db8::53  ; blank owner: ns1
$ORIGIN sub.example.net.
host 30 A 192.0.2.7
     IN 40 TXT ( "multi"
                 "line" )
$TTL 2d
late A 192.0.2.8
"#;
        let set = load_one("example.net.", zone).unwrap();
        assert_eq!(
            set.records("example.net.")[0],
            rec("example.net.", "SOA", "ns1.example.net. hostmaster.example.net. 2024010101 3600 900 604800 300", 3600)
        );
        assert_eq!(
            set.records("ns1.example.net."),
            [rec("ns1.example.net.", "A", "192.0.2.53", 3600), rec("ns1.example.net.", "AAAA", "2001:db8::53", 3600),]
        );
        assert_eq!(
            set.records("host.sub.example.net."),
            [
                rec("host.sub.example.net.", "A", "192.0.2.7", 30),
                rec("host.sub.example.net.", "TXT", "\"multi\" \"line\"", 40),
            ]
        );
        assert_eq!(set.records("late.sub.example.net.")[0].ttl, 172_800);
    }

    #[test]
    fn ttl_without_dollar_ttl_follows_bind() {
        // No $TTL: the SOA takes its MINIMUM, then the last explicit TTL carries on.
        let zone = "@ IN SOA ns1 hm 1 2 3 4 77\na A 192.0.2.1\nb 5 A 192.0.2.2\nc A 192.0.2.3\n";
        let set = load_one("example.net.", zone).unwrap();
        let ttl = |name: &str| set.records(name)[0].ttl;
        assert_eq!(ttl("example.net."), 77);
        assert_eq!(ttl("a.example.net."), 77);
        assert_eq!(ttl("b.example.net."), 5);
        assert_eq!(ttl("c.example.net."), 5);
    }

    #[test]
    fn rrsets_share_a_ttl_and_duplicates_merge() {
        let zone = "$TTL 60\n@ SOA ns1 hm 1 2 3 4 5\na 10 A 192.0.2.1\na 20 A 192.0.2.2\n\
                    a A 192.0.2.1\na 30 TXT x\n";
        let set = load_one("example.net.", zone).unwrap();
        assert_eq!(
            set.records("a.example.net."),
            [
                rec("a.example.net.", "A", "192.0.2.1", 10),
                rec("a.example.net.", "A", "192.0.2.2", 10),
                rec("a.example.net.", "TXT", "\"x\"", 30),
            ]
        );
    }

    #[test]
    fn include_is_relative_to_the_including_file() {
        let dir = TempDir::new();
        std::fs::create_dir_all(dir.0.join("sub")).unwrap();
        dir.write("sub/mail.inc", "$ORIGIN changed.example.\nmx1 A 192.0.2.25\n");
        dir.write("sub/more.inc", "@ A 192.0.2.26\n");
        let main = dir.write(
            "main.zone",
            "$TTL 60\n@ SOA ns1 hm 1 2 3 4 5\n$INCLUDE \"sub/mail.inc\"\nafter A 192.0.2.1\n\
             $INCLUDE sub/more.inc mail\n",
        );
        let set = ZoneSet::load(&[source("example.net.", main.clone())]);
        // mx1.changed.example. is outside the zone: the included $ORIGIN is the error.
        let error = set.unwrap_err();
        let message = error.to_string();
        assert!(message.contains("mail.inc:2:1: owner `mx1.changed.example.` is outside the zone"), "{message}");
        dir.write("sub/mail.inc", "$ORIGIN example.net.\nmx1 A 192.0.2.25\n");
        let set = ZoneSet::load(&[source("example.net.", main)]).unwrap();
        assert_eq!(set.records("mx1.example.net.").len(), 1);
        // The including file's origin is unaffected by the included $ORIGIN.
        assert_eq!(set.records("after.example.net.").len(), 1);
        // `$INCLUDE file origin` sets the included file's origin.
        assert_eq!(set.records("mail.example.net.")[0].content.as_ref(), "192.0.2.26");
    }

    #[test]
    fn include_problems_are_reported_where_they_are_written() {
        let dir = TempDir::new();
        dir.write("loop.inc", "$INCLUDE loop.inc\n");
        let main = dir.write("main.zone", "$TTL 60\n@ SOA ns1 hm 1 2 3 4 5\n$INCLUDE missing.inc\n$INCLUDE loop.inc\n");
        let error = ZoneSet::load(&[source("example.net.", main)]).unwrap_err();
        let messages: Vec<String> = error.errors().iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].contains("main.zone:3:1: cannot read included file"), "{messages:?}");
        assert!(messages[0].contains("missing.inc"), "{messages:?}");
        assert!(messages[1].contains("loop.inc:1:1: `$INCLUDE` loop"), "{messages:?}");
    }

    #[test]
    fn errors_carry_file_line_and_column() {
        let zone = "$TTL 60\n@ SOA ns1 hm 1 2 3 4 5\ncdn IN MXX 10 mail\n";
        let error = load_error(zone);
        let message = error.to_string();
        assert!(message.ends_with("/zone:3:8: unknown record type `MXX`"), "{message}");
        assert!(matches!(error, ZoneError::Invalid { line: 3, col: 8, .. }));
    }

    #[test]
    fn all_errors_in_a_file_are_reported() {
        let zone = "$TTL 60\n\
                    @ SOA ns1 hm 1 2 3 4 5\n\
                    a IN MXX 10 mail\n\
                    ok A 192.0.2.1\n\
                    b A 192.0.2.300\n\
                    c CH A 192.0.2.1\n\
                    d MX 10x mail\n\
                    e.example.org. A 192.0.2.1\n\
                    f MX 10 mail extra\n\
                    g MX 10\n\
                    h TXT \"open\n\
                    ";
        let error = load_error(zone);
        let messages: Vec<String> = error.errors().iter().map(ToString::to_string).collect();
        let tails: Vec<&str> =
            messages.iter().map(|m| m.split_once("/zone:").map_or(m.as_str(), |(_, tail)| tail)).collect();
        assert_eq!(
            tails,
            [
                "3:6: unknown record type `MXX`",
                "5:5: invalid A record data at `192.0.2.300`: expected IPv4 address",
                "6:3: class `CH` is not supported; only IN is",
                "7:6: invalid MX record data at `10x`: expected decimal number",
                "9:14: too many fields in MX record data, starting at `extra`",
                "10:6: incomplete MX record data",
                "11:7: quoted string is never closed",
                "8:1: owner `e.example.org.` is outside the zone `example.net.`",
            ]
        );
        assert!(error.to_string().starts_with("8 errors in zone files:\n  "));
    }

    #[test]
    fn zone_level_problems() {
        let error = load_error("$TTL 60\na A 192.0.2.1\n");
        assert!(error.to_string().ends_with("zone `example.net.` has no soa record"), "{error}");

        let error = load_error("$TTL 60\n@ SOA a b 1 2 3 4 5\n@ SOA a b 2 2 3 4 5\nx SOA a b 1 2 3 4 5\n");
        let messages: Vec<String> = error.errors().iter().map(ToString::to_string).collect();
        assert!(messages[0].contains(":3:1: second soa record for `example.net.`"), "{messages:?}");
        assert!(messages[1].contains(":4:1: soa record `x.example.net.` is not at the zone apex"));

        let error = load_error("$TTL 60\n@ SOA a b 1 2 3 4 5\nw CNAME a\nw A 192.0.2.1\nv CNAME a\nv CNAME b\n");
        let messages: Vec<String> = error.errors().iter().map(ToString::to_string).collect();
        assert!(messages[0].contains(":4:1: `w.example.net.` has a cname and other data"));
        assert!(messages[1].contains(":6:1: `v.example.net.` has more than one cname"));

        let error = load_one("", "").unwrap_err();
        assert!(error.to_string().ends_with("invalid zone origin ``"), "{error}");

        let dir = TempDir::new();
        let path = dir.write("z", "$TTL 1\n@ SOA a b 1 2 3 4 5\n");
        let error = ZoneSet::load(&[source("example.net", path.clone()), source("Example.NET.", path)]).unwrap_err();
        assert!(error.to_string().contains("zone `example.net.` is listed twice"), "{error}");
    }

    #[test]
    fn more_errors() {
        let cases = [
            ("a A", "3:3: incomplete A record data"),
            ("a", "3:1: missing record type"),
            ("a 99999999999 A 192.0.2.1", "3:3: invalid ttl `99999999999`"),
            ("a 3000000000 A 192.0.2.1", "3:3: ttl `3000000000` is larger than 2147483647"),
            ("a 1 2 A 192.0.2.1", "3:5: second ttl `2`"),
            ("a..b A 192.0.2.1", "3:1: invalid domain name `a..b`: empty label"),
            ("a MX 10 b..c", "3:9: invalid domain name `b..c`: empty label"),
            ("a SOA .a b 1 2 3 4 5", "3:7: invalid domain name `.a`: empty label"),
            ("a AXFR 1", "3:3: record type `AXFR` cannot appear in a zone file"),
            ("a ANY A 1.2.3.4", "3:3: class `ANY` is not supported; only IN is"),
            ("a SIG 1", "3:3: record type `SIG` is not supported"),
            (
                "a WALLET 1",
                "3:3: record type `WALLET` is only supported in RFC 3597 generic form (`\\# <length> <hex>`)",
            ),
            ("a LOC \\# 1 00", "3:7: `LOC` in generic (`\\#`) form cannot be passed to PowerDNS; write its text form"),
            ("a TYPE65280 \\# 2 00", "3:18: invalid TYPE65280 record data at `00`: generic data has incorrect length"),
            ("$GENERATE 1-2 a$ A 192.0.2.$", "3:1: `$GENERATE` is not supported; write the records out"),
            ("$FOO", "3:1: unknown directive `$FOO`"),
            ("$TTL", "3:1: `$TTL` takes exactly one ttl"),
            ("$TTL 1x", "3:6: invalid ttl `1x`"),
            ("  A 192.0.2.1 )", "3:15: `)` without `(`"),
            ("a TXT ( \"x\"", "3:7: `(` is never closed"),
            ("a \"A\" x", "3:3: expected a ttl, class or record type, found \"A\""),
        ];
        for (line, expected) in cases {
            let zone = format!("$TTL 60\n@ SOA a b 1 2 3 4 5\n{line}\n");
            let message = load_error(&zone).to_string();
            let tail = message.split_once("/zone:").map_or(message.as_str(), |(_, t)| t);
            assert_eq!(tail, expected, "{line}");
        }
    }

    #[test]
    fn indented_first_record_has_no_owner() {
        let error = load_error("  IN A 192.0.2.1\n");
        assert!(
            error.errors()[0].to_string().ends_with(":1:3: indented record without a previous owner name"),
            "{error}"
        );
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let path = std::env::temp_dir().join("geolb-zones-test-does-not-exist.zone");
        let error = ZoneSet::load(&[source("example.net.", path.clone())]).unwrap_err();
        assert!(matches!(error, ZoneError::Read { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.starts_with(&format!("{}: cannot read zone file: ", path.display())), "{message}");
    }

    #[test]
    fn too_many_errors_are_counted() {
        let mut zone = String::from("$TTL 60\n@ SOA a b 1 2 3 4 5\n");
        for _ in 0..(MAX_ERRORS + 5) {
            zone.push_str("a MXX 1\n");
        }
        let error = load_error(&zone);
        assert_eq!(error.errors().len(), MAX_ERRORS);
        assert!(error.to_string().ends_with("… and 5 more"), "{error}");
    }

    #[test]
    fn empty_set_finds_nothing() {
        let set = ZoneSet::empty();
        assert!(set.records("example.net.").is_empty());
        assert_eq!(set.zone_of("example.net."), None);
        assert_eq!(set.zones().count(), 0);
    }

    #[test]
    fn odd_owner_names_are_escaped_like_powerdns() {
        let zone = "$TTL 60\n@ SOA a b 1 2 3 4 5\na\\.b A 192.0.2.1\nsp\\032ace A 192.0.2.2\n\
                    *.wild A 192.0.2.3\n";
        let set = load_one("example.net.", zone).unwrap();
        assert_eq!(set.records("a\\.b.example.net.").len(), 1);
        assert_eq!(set.records("sp\\032ace.example.net.").len(), 1);
        assert_eq!(set.records("*.wild.example.net.").len(), 1);
        assert_eq!(set.zone_of("a\\.b.example.net."), Some("example.net."));
    }

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
    fn ttl_syntax() {
        assert_eq!(parse_ttl(b"300"), Some(300));
        assert_eq!(parse_ttl(b"1h30m"), Some(5400));
        assert_eq!(parse_ttl(b"1W2D"), Some(777_600));
        assert_eq!(parse_ttl(b"1h30"), Some(3630));
        assert_eq!(parse_ttl(b""), None);
        assert_eq!(parse_ttl(b"h"), None);
        assert_eq!(parse_ttl(b"1x"), None);
        assert_eq!(parse_ttl(b"99999999999999999999999"), None);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn parse_bytes(bytes: &[u8]) {
            let dir = TempDir::new();
            let path = dir.write("zone", bytes);
            let _ = ZoneSet::load(&[source("example.net.", path)]);
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                parse_bytes(&bytes);
            }

            #[test]
            fn random_text_never_panics(text in "[ -~\t\n]{0,400}") {
                parse_bytes(text.as_bytes());
            }

            #[test]
            fn mutated_example_never_panics(
                edits in proptest::collection::vec(
                    (any::<proptest::sample::Index>(), 0u8..3, any::<u8>()), 1..8),
            ) {
                let mut bytes = EXAMPLE.as_bytes().to_vec();
                for (index, kind, byte) in edits {
                    let at = index.index(bytes.len() + 1);
                    match kind {
                        0 => bytes.insert(at, byte),
                        1 if at < bytes.len() => { bytes.remove(at); }
                        _ if at < bytes.len() => bytes[at] = byte,
                        _ => {}
                    }
                }
                parse_bytes(&bytes);
            }

            #[test]
            fn random_record_data_never_panics(
                rtype in proptest::sample::select(&[
                    "A", "AAAA", "NS", "CNAME", "SOA", "MX", "TXT", "SRV", "CAA", "PTR", "HINFO",
                    "NAPTR", "DS", "DNSKEY", "RRSIG", "NSEC", "NSEC3", "NSEC3PARAM", "TLSA",
                    "SSHFP", "SVCB", "HTTPS", "IPSECKEY", "ZONEMD", "OPENPGPKEY", "CDS", "RP",
                    "MINFO", "LOC", "SPF", "AFSDB", "KEY", "TYPE65280", "WALLET", "CSYNC",
                ][..]),
                fields in proptest::collection::vec(
                    proptest::sample::select(&[
                        "0", "1", "10", "65535", "65536", "-1", "4294967296", ".", "@", "a", "a.",
                        "a..b", "\\#", "\\# 0", "\\# 2 0a0b", "00", "ff", "\"\"", "\"x y\"",
                        "\\000", "\\", "(", ")", "192.0.2.1", "::1", "issue", "alpn=h2",
                        "alpn=\"h2,h3\"", "mandatory=alpn", "key65535=x", "port=99999",
                        "ipv6hint=::1", "ech=AAAA", "dohpath=/q{?dns}", "ipv4hint=1.2.3.4,5.6.7.8",
                        "A", "MX", "TYPE1234", "20240101000000", "AwEAAa==", "=", "-", "N", "E",
                        "1.5m", "2ab", "\\.", "*", "xn--x", "0x10", "1e5", ";", "\n", "\"",
                    ][..]),
                    0..10),
            ) {
                let zone = format!(
                    "$TTL 60\n@ SOA a b 1 2 3 4 5\nt {rtype} {}\n",
                    fields.join(" ")
                );
                parse_bytes(zone.as_bytes());
            }

            #[test]
            fn mutated_example_tokens_never_panic(
                line in 2usize..16,
                token in "[-a-zA-Z0-9.\\\\\"();@#$ ]{0,12}",
            ) {
                let mut lines: Vec<String> = EXAMPLE.lines().map(String::from).collect();
                let target = &mut lines[line];
                let cut = target.len() / 2;
                let cut = (0..=cut).rev().find(|&i| target.is_char_boundary(i)).unwrap_or(0);
                target.insert_str(cut, &token);
                parse_bytes(lines.join("\n").as_bytes());
            }
        }
    }
}
