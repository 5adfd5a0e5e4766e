//! DNSSEC validation of an authoritative server's answers with BIND's `delv` (Debian bookworm's
//! 9.18): [`delv`] asks one question with the zone's own key as the trust anchor, and
//! [`Validated`] is what it proved.
//!
//! It owns the trust-anchor file and the parsing of `delv`'s output; the key comes from the
//! server under test (e.g. [`crate::Pdns::trust_anchor`]).
//!
//! How `delv` is run: `delv @<ip> -p <port> -a <file> +root=<zone> +nosplit -t <type> -q <name>`
//! where the file holds `trust-anchors { "<zone>" static-key 257 3 13 "<key>"; };`. `+root=`
//! makes the zone, not the root, the trust point, so `delv` needs nothing but the zone's server:
//! it sends its questions (with RD, which PowerDNS ignores) there, fetches the zone's DNSKEY
//! from it and validates against the anchor. `delv` exits 0 even when validation fails, so the
//! verdict is read from its output: `; fully validated` (positive) or `; negative response,
//! fully validated` (NXDOMAIN, `;-$NXDOMAIN`, or NODATA, `;-$NXRRSET`) first on stdout; anything
//! else — `; unsigned answer`, `resolution failed: broken trust chain` on stderr (a wrong
//! anchor), no answer — is an error quoting the whole output.

use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::process::{TestDir, find_program, run_tool};

/// How a validated negative answer denies the question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// The name exists but has no records of the type (NODATA).
    NoData,
}

/// A DNSSEC-validated answer from [`delv`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    /// Whether it is a validated negative answer (`; negative response, fully validated`).
    pub negative: bool,
    /// For a negative answer, whether `delv` said NXDOMAIN or NODATA.
    pub denial: Option<Denial>,
    /// The records `delv` printed, one per line as `name ttl IN type data` (fields separated by
    /// single spaces): the answer and its RRSIGs, or for a negative answer the proof (NSEC or
    /// NSEC3, SOA; `delv` abbreviates the RRSIGs there to `name RRSIG type ...`).
    pub records: Vec<String>,
    /// `delv`'s whole stdout and stderr, for assertion messages.
    pub output: String,
}

impl Validated {
    /// The data of the records of type `rtype` (e.g. `A` gives `["192.0.2.1"]`).
    pub fn data(&self, rtype: &str) -> Vec<String> {
        self.records
            .iter()
            .filter_map(|record| {
                // `name [ttl] [class] type data…` (the proof lines of a negative answer have
                // neither TTL nor class).
                let fields: Vec<&str> = record.split_whitespace().collect();
                let mut at = 1;
                if fields.get(at).is_some_and(|f| f.parse::<u32>().is_ok()) {
                    at += 1;
                }
                if fields.get(at).is_some_and(|f| ["IN", "CH", "HS", "ANY"].contains(f)) {
                    at += 1;
                }
                (fields.get(at)?.eq_ignore_ascii_case(rtype) && at + 1 < fields.len())
                    .then(|| fields[at + 1..].join(" "))
            })
            .collect()
    }
}

impl fmt::Display for Validated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.output)
    }
}

/// Asks `server` (an authoritative server for `zone`) `qname`/`qtype` with `delv`, trusting only
/// `anchor` for `zone`, and returns the answer if `delv` fully validated it.
///
/// `anchor` is one or more DNSKEY records, one per line, as [`crate::Pdns::trust_anchor`] gives
/// them (`example.net. IN DNSKEY 257 3 13 <base64>`; the owner, class and `DNSKEY` may be left
/// out). Fails, quoting `delv`'s output, unless the answer is `fully validated`.
pub async fn delv(server: SocketAddr, zone: &str, anchor: &str, qname: &str, qtype: &str) -> Result<Validated> {
    let delv = find_program("delv", "bind9-dnsutils")?;
    let zone = if zone.ends_with('.') { zone.to_owned() } else { format!("{zone}.") };
    ensure!(!zone.contains(|c: char| c.is_whitespace() || "\"';{}".contains(c)), "bad zone name {zone:?}");
    let dir = TestDir::new("delv")?;
    let anchor_path = dir.join("trust-anchors.conf");
    fs::write(&anchor_path, trust_anchors(&zone, anchor)?)
        .with_context(|| format!("failed to write {}", anchor_path.display()))?;
    let mut command = Command::new(&delv);
    command
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .arg("-a")
        .arg(&anchor_path)
        .arg(format!("+root={zone}"))
        .args(["+nosplit", "-t", qtype, "-q", qname]);
    let stdout = run_tool("delv", &mut command, dir.path()).await?;
    // run_tool keeps stderr in a file of the directory, the only one of this fresh directory.
    let stderr = file_ending_with(&dir, ".stderr").unwrap_or_default();
    parse_delv(&stdout, &stderr).with_context(|| format!("delv @{server} {qname} {qtype} (trust anchor for {zone})"))
}

/// The `trust-anchors` clause for `zone` with every DNSKEY in `anchor`.
fn trust_anchors(zone: &str, anchor: &str) -> Result<String> {
    let mut keys = String::new();
    for line in anchor.lines() {
        let line = line.split(';').next().unwrap_or_default();
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let rdata = match fields.iter().position(|f| f.eq_ignore_ascii_case("DNSKEY")) {
            Some(at) => {
                if at > 0 && !fields[0].eq_ignore_ascii_case("IN") {
                    let owner = fields[0].trim_end_matches('.');
                    ensure!(
                        owner.eq_ignore_ascii_case(zone.trim_end_matches('.')),
                        "trust anchor {line:?} is for {owner}, not {zone}"
                    );
                }
                &fields[at + 1..]
            }
            None => &fields[..],
        };
        ensure!(
            rdata.len() >= 4 && rdata[..3].iter().all(|f| f.parse::<u16>().is_ok()),
            "not a DNSKEY record in the trust anchor: {line:?}"
        );
        let key = rdata[3..].concat();
        ensure!(!key.contains(['"', '\\']), "bad key in the trust anchor: {line:?}");
        keys.push_str(&format!("    \"{zone}\" static-key {} {} {} \"{key}\";\n", rdata[0], rdata[1], rdata[2]));
    }
    ensure!(!keys.is_empty(), "the trust anchor for {zone} holds no DNSKEY: {anchor:?}");
    Ok(format!("trust-anchors {{\n{keys}}};\n"))
}

/// The verdict in `delv`'s output; see the module documentation.
fn parse_delv(stdout: &str, stderr: &str) -> Result<Validated> {
    let output = format!("{}\n{}", stdout.trim_end(), stderr.trim_end()).trim().to_owned();
    let fail = |why: &str| format!("{why}; delv printed:\n{output}");
    let status = stdout.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
    let negative = match status {
        "; fully validated" => false,
        "; negative response, fully validated" => true,
        "" => bail!(fail("no answer")),
        other => bail!(fail(&format!("not validated ({other:?})"))),
    };
    for line in stdout.lines().map(str::trim) {
        let verdict = line.starts_with("; ") && !line.contains(" IN ") && !line.contains(" RRSIG ");
        if verdict && (line.contains("unsigned") || line.contains("insecure") || line.contains("bogus")) {
            bail!(fail(&format!("part of the answer is not validated ({line:?})")));
        }
    }
    let nxdomain = stdout.contains(";-$NXDOMAIN") || stderr.contains("ncache nxdomain");
    let nodata = stdout.contains(";-$NXRRSET") || stderr.contains("ncache nxrrset");
    for line in stderr.lines().map(str::trim).filter(|l| l.contains("resolution failed")) {
        if !(negative && (line.ends_with("ncache nxdomain") || line.ends_with("ncache nxrrset"))) {
            bail!(fail(&format!("resolution failed ({line:?})")));
        }
    }
    let denial = match (negative, nxdomain, nodata) {
        (false, _, _) => None,
        (true, true, false) => Some(Denial::NxDomain),
        (true, false, true) => Some(Denial::NoData),
        (true, _, _) => None,
    };
    let records: Vec<String> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != status)
        .filter_map(|l| match (negative, l.strip_prefix(';')) {
            (false, None) => Some(l.to_owned()),
            // The negative pseudo-record `name ttl IN \-TYPE ;-$NXDOMAIN` is not a record.
            (true, Some(rest)) if !l.contains(";-$") => Some(rest.trim().to_owned()),
            _ => None,
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    ensure!(negative || !records.is_empty(), fail("a validated answer without records"));
    Ok(Validated { negative, denial, records, output })
}

/// The contents of the (first) file in `dir` whose name ends with `suffix`.
fn file_ending_with(dir: &TestDir, suffix: &str) -> Option<String> {
    let entry = fs::read_dir(dir.path())
        .ok()?
        .filter_map(|entry| entry.ok())
        .find(|entry| entry.file_name().to_string_lossy().ends_with(suffix))?;
    fs::read_to_string(entry.path()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_trust_anchors_from_dnskey_records() {
        let anchor = "example.net. IN DNSKEY 257 3 13 lTQ2qsGe OskmOo== ; ( ECDSAP256SHA256 )\n257 3 13 AAAA";
        let conf = trust_anchors("example.net.", anchor).expect("anchor");
        assert_eq!(
            conf,
            "trust-anchors {\n    \"example.net.\" static-key 257 3 13 \"lTQ2qsGeOskmOo==\";\n    \
             \"example.net.\" static-key 257 3 13 \"AAAA\";\n};\n"
        );
        assert!(trust_anchors("example.net.", "other.test. IN DNSKEY 257 3 13 AAAA").is_err());
        assert!(trust_anchors("example.net.", "").is_err());
    }

    #[test]
    fn reads_delv_verdicts() {
        let positive = "; fully validated\nnew.example.net.\t300\tIN\tA\t192.0.2.99\n\
                        new.example.net.\t300\tIN\tRRSIG\tA 13 3 300 20261217000000 20261126000000 37487 example.net. sig==\n";
        let v = parse_delv(positive, "").expect("validated");
        assert!(!v.negative && v.denial.is_none());
        assert_eq!(v.data("A"), ["192.0.2.99"]);
        assert_eq!(v.records.len(), 2);

        let nodata = "; negative response, fully validated\n; cdn.example.net.\t300\tIN\t\\-SSHFP\t;-$NXRRSET\n\
                      ; cdn.example.net. RRSIG NSEC ...\n; cdn.example.net. NSEC www.example.net. A RRSIG NSEC\n";
        let v = parse_delv(nodata, ";; resolution failed: ncache nxrrset\n").expect("validated");
        assert!(v.negative);
        assert_eq!(v.denial, Some(Denial::NoData));
        assert_eq!(v.data("NSEC"), ["www.example.net. A RRSIG NSEC"]);

        let nxdomain = "; negative response, fully validated\n; nope.example.net.\t300\tIN\t\\-ANY\t;-$NXDOMAIN\n";
        let v = parse_delv(nxdomain, ";; resolution failed: ncache nxdomain\n").expect("validated");
        assert_eq!(v.denial, Some(Denial::NxDomain));

        assert!(parse_delv("; unsigned answer\nx.example.net. 300 IN A 192.0.2.1\n", "").is_err());
        assert!(parse_delv("", ";; resolution failed: broken trust chain\n").is_err());
        assert!(parse_delv("; negative response, unsigned answer\n", "").is_err());
    }
}
