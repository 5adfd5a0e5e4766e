//! Static records from the operator's BIND zone files.
//!
//! PowerDNS takes the first backend that returns records for a name and never asks the next one,
//! so when geolb answers a name it manages it must return *every* record of that name: the
//! geo-picked A/AAAA **and** the name's other records (MX, TXT, CAA, SRV, …), exactly as the hidden
//! primary serves them (docs/architecture.md, "The PowerDNS contract"). This module reads the same zone files
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
//! presentation format; LOC, CERT, APL, DHCID, CSYNC, NID, L32, L64, EUI48, EUI64, URI are passed on
//! as written (normalised whitespace), because `domain` cannot parse them and PowerDNS can. (One
//! table in `render` says, per type, how its data is read and whether PowerDNS knows it; its tests
//! check these lists against it.)
//!
//! Owner names are rendered the way PowerDNS prints a `DNSName` (lower-case, `.` and `\` escaped,
//! bytes outside 0x21–0x7e as `\DDD`), so `records()` can be called with the `qname` PowerDNS sends,
//! lower-cased.
//!
//! # Layout
//! * this file: the public API ([`ZoneSet`], [`ZoneSource`], [`StaticRecord`], [`ZoneError`],
//!   [`MAX_ERRORS`]), error collection, and the loader: directives, owner, TTL, class and type of
//!   each record, zone-wide checks (apex, SOA, CNAME) and the lookup index.
//! * `lexer`: splitting a file into entries and tokens; reading TTL, class and `$INCLUDE` tokens.
//! * `render`: record data and domain names, via `domain`, in the form PowerDNS parses.

mod lexer;
mod render;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bytes::Bytes;
use domain::base::iana::Rtype;
use domain::base::name::Name;

use self::lexer::{Lexer, RawEntry, Tok, class_of, include_path, record_ttl, tok_bytes};
pub(crate) use self::render::{generic_content, generic_form_refused, pdns_name};
use self::render::{parent_name, parse_origin, render, scan_name};

/// At most this many errors are collected by one [`ZoneSet::load`]; the rest are only counted.
pub const MAX_ERRORS: usize = 100;

/// `$INCLUDE` nesting deeper than this is refused (it is almost certainly a loop).
const MAX_INCLUDE_DEPTH: usize = 16;

/// The largest TTL RFC 2181 allows.
const MAX_TTL: u32 = 0x7fff_ffff;

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
    /// Loading failed in an unexpected way (the loading task itself failed).
    #[error("zone files unavailable: {0}")]
    Unavailable(String),
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
