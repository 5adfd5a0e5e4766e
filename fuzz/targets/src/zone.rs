//! `zone_file`: a BIND zone file for `example.net.`, through `geolb_resolver::zones`.
//!
//! The input is written to a file in the scratch directory beside `inc.zone` (a few records
//! without an SOA), which an input may `$INCLUDE`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use geolb_resolver::zones::{StaticRecord, ZoneSet, ZoneSource};

use crate::fixture::{json_object, must, scratch_subdir};

/// The zone every input is loaded as.
pub(crate) const ORIGIN: &str = "example.net.";
/// The file an input may `$INCLUDE`.
const INCLUDED: &str = "; included by the fuzzed zone file\nedge IN A 192.0.2.99\nedge IN TXT \"included\"\n";

fn input_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = scratch_subdir("zone");
        must(std::fs::write(dir.join("inc.zone"), INCLUDED), "write inc.zone");
        dir.join("fuzzed.zone")
    })
}

/// The target: load `data` as the zone file of [`ORIGIN`].
pub fn zone_file(data: &[u8]) {
    let path = input_path();
    must(std::fs::write(path, data), "write the input");
    let source = ZoneSource { origin: ORIGIN.to_owned(), path: path.clone() };
    match ZoneSet::load(std::slice::from_ref(&source)) {
        Ok(set) => check(&set, &String::from_utf8_lossy(data)),
        Err(e) => {
            let errors = e.errors();
            assert!(!errors.is_empty() && errors.len() <= geolb_resolver::zones::MAX_ERRORS, "{} errors", errors.len());
            for error in errors {
                assert!(!error.to_string().is_empty());
            }
        }
    }
}

/// The owner names `text` may give records: each word, absolute or under the origin.
fn candidate_owners(text: &str) -> Vec<Box<str>> {
    let mut owners: Vec<Box<str>> = vec![ORIGIN.into()];
    for word in text.split(|c: char| c.is_ascii_whitespace() || c == '(' || c == ')' || c == ';') {
        if word.is_empty() || word.len() > 255 {
            continue;
        }
        let word = word.to_ascii_lowercase();
        if word.ends_with('.') {
            owners.push(word.into());
        } else {
            owners.push(format!("{word}.{ORIGIN}").into());
        }
    }
    owners
}

/// What the module promises of a zone it loaded.
fn check(set: &ZoneSet, text: &str) {
    let zones: Vec<(&str, usize)> = set.zones().collect();
    assert_eq!(zones.len(), 1, "one zone loaded, {zones:?} indexed");
    let (apex, count) = zones[0];
    assert_eq!(apex, ORIGIN);
    // The index cannot be listed: look up every name the input and the records mention.
    let soa = set.records(apex).iter().filter(|r| &*r.qtype == "SOA").count();
    assert_eq!(soa, 1, "the apex holds {soa} SOA records");
    let mut seen = 0;
    let mut owners = candidate_owners(text);
    owners.extend(candidate_owners(INCLUDED));
    let mut visited = HashSet::new();
    while let Some(owner) = owners.pop() {
        if !visited.insert(owner.clone()) {
            continue;
        }
        let records = set.records(&owner);
        seen += records.len();
        check_owner(set, &owner, records);
        for r in records {
            for word in r.content.split_ascii_whitespace() {
                if word.ends_with('.') && word.len() > 1 {
                    owners.push(word.to_ascii_lowercase().into());
                }
            }
        }
    }
    assert!(seen <= count, "{seen} records reached, {count} indexed");
}

fn check_owner(set: &ZoneSet, owner: &str, records: &[StaticRecord]) {
    if records.is_empty() {
        return;
    }
    assert!(geolb_config::in_zone(owner, ORIGIN), "owner {owner} outside the zone");
    assert_eq!(set.zone_of(owner), Some(ORIGIN), "zone_of({owner})");
    let mut ttls: HashMap<&str, u32> = HashMap::new();
    let mut unique = HashSet::new();
    for r in records {
        assert_eq!(&*r.qname, owner, "a record of {} indexed under {owner}", r.qname);
        assert!(!owner.bytes().any(|b| b.is_ascii_uppercase()), "owner {owner} is not lower-case");
        assert!(
            !r.qtype.is_empty() && r.qtype.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
            "qtype {:?}",
            r.qtype
        );
        assert!(r.ttl <= 0x7fff_ffff, "{owner} {}: ttl {}", r.qtype, r.ttl);
        assert_eq!(*ttls.entry(&r.qtype).or_insert(r.ttl), r.ttl, "{owner} {}: one RRset, two TTLs", r.qtype);
        assert!(unique.insert((&r.qtype, &r.content)), "{owner} {} {}: duplicate record", r.qtype, r.content);
        if &*r.qtype == "SOA" {
            assert_eq!(owner, ORIGIN, "an SOA at {owner}");
            assert_eq!(r.content.split_ascii_whitespace().count(), 7, "SOA content {:?}", r.content);
        }
        let rendered = geolb_resolver::pdns::reply::static_record(&r.qname, &r.qtype, &r.content, r.ttl);
        let object = json_object(&rendered).unwrap_or_else(|e| panic!("{owner} {}: {e}", r.qtype));
        assert_eq!(object.get("content").and_then(|c| c.as_str()), Some(&*r.content));
    }
    if records.iter().any(|r| &*r.qtype == "CNAME") {
        let beside = |t: &str| t == "CNAME" || t == "RRSIG" || t == "NSEC";
        assert!(records.iter().all(|r| beside(&r.qtype)), "{owner}: a CNAME beside other data");
        assert_eq!(records.iter().filter(|r| &*r.qtype == "CNAME").count(), 1, "{owner}: more than one CNAME");
    }
}
