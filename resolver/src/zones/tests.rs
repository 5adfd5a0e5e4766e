//! Tests of [`ZoneSet::load`] on whole zone files: every record type's `content`, directives and
//! TTL rules, `$INCLUDE`, the index and [`ZoneSet::zone_of`], every kind of error with its
//! `file:line:col`, and property tests that no input makes loading panic.
//!
//! Unit tests of single helpers sit at the bottom of their own files (`lexer`, `render`).

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
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
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
    assert_content(r#"TXT "hello \"geo\" world" "second string""#, "TXT", r#""hello \"geo\" world" "second string""#);
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
        ("a WALLET 1", "3:3: record type `WALLET` is only supported in RFC 3597 generic form (`\\# <length> <hex>`)"),
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
    assert!(error.errors()[0].to_string().ends_with(":1:3: indented record without a previous owner name"), "{error}");
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
