//! `[[zones]]`: a zone from a file or from its hidden primary, and what is refused.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::net::SocketAddr;
use std::path::Path;

use geolb_config::{Config, TsigSecret};

const BASE: &str = r#"
default_location = { pop = "fra" }
[[pops]]
id = "fra"
lat = 50.11
lon = 8.68
"#;

const MEMBER: &str = r#"
[cluster]
id = "t"
key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
[member]
id = "r1"
gossip_listen = "127.0.0.1:7947"
state_dir = "/var/lib/geolb-test"
"#;

fn parse(text: &str) -> Result<Config, String> {
    geolb_config::parse(&format!("{BASE}{text}"), Path::new("/etc/geolb")).map_err(|e| e.to_string())
}

#[test]
fn a_zone_from_a_primary_keeps_its_copy_in_state_dir_and_takes_notify_from_the_primaries() {
    let config = parse(&format!(
        "{MEMBER}[resolver]\nnotify_listen = \"127.0.0.1:5354\"\n[[zones]]\norigin = \"Example.NET\"\nprimary = [\"192.0.2.53\", \"[2001:db8::53]:5300\", \"192.0.2.53:5301\"]\ntsig = {{ name = \"geolb\", secret_file = \"tsig.key\" }}\nrefresh_ms = 2000\n"
    ))
    .unwrap();
    let zone = &config.zones[0];
    assert_eq!(zone.origin, "example.net.");
    assert_eq!(zone.file, Path::new("/var/lib/geolb-test/zones/example.net.zone"));
    let primary = zone.primary.as_ref().unwrap();
    let want: Vec<SocketAddr> =
        ["192.0.2.53:53", "[2001:db8::53]:5300", "192.0.2.53:5301"].iter().map(|a| a.parse().unwrap()).collect();
    assert_eq!(primary.primaries, want);
    assert_eq!(
        primary.allow_notify,
        vec!["192.0.2.53".parse::<std::net::IpAddr>().unwrap(), "2001:db8::53".parse().unwrap()]
    );
    assert_eq!(primary.refresh_ms, Some(2000));
    assert_eq!(primary.transfer_timeout_ms, 30_000);
    let key = primary.tsig.as_ref().unwrap();
    assert_eq!((key.name.as_str(), key.algorithm.as_str()), ("geolb.", "hmac-sha256"));
    assert_eq!(key.secret, TsigSecret::File("/etc/geolb/tsig.key".into()));
    assert!(!format!("{key:?}").contains("tsig.key"), "the secret stays out of Debug: {key:?}");
    assert_eq!(config.resolver.notify_listen, Some("127.0.0.1:5354".parse().unwrap()));
}

#[test]
fn a_zone_file_is_still_just_a_file() {
    let config = parse("[[zones]]\norigin = \"example.net.\"\nfile = \"example.net.zone\"\n").unwrap();
    assert_eq!(config.zones[0].file, Path::new("/etc/geolb/example.net.zone"));
    assert!(config.zones[0].primary.is_none());
}

#[test]
fn broken_zone_sources_are_refused_with_their_key() {
    let cases = [
        ("origin = \"example.net.\"\n", "zones[0]", "give the zone's `file`, or its hidden `primary`"),
        ("origin = \"example.net.\"\nprimary = [\"192.0.2.53\"]\n", "zones[0]", "set `file`, or add [member]"),
        ("origin = \"example.net.\"\nfile = \"z\"\nprimary = []\n", "zones[0].primary", "lists no address"),
        (
            "origin = \"example.net.\"\nfile = \"z\"\nprimary = [\"ns1.example.net\"]\n",
            "zones[0].primary[0]",
            "is not an IP address",
        ),
        (
            "origin = \"example.net.\"\nfile = \"z\"\ntsig = { name = \"k\", secret = \"YQ==\" }\n",
            "zones[0].tsig",
            "applies only to a zone with a `primary`",
        ),
        (
            "origin = \"example.net.\"\nfile = \"z\"\nrefresh_ms = 5\n",
            "zones[0].refresh_ms",
            "applies only to a zone with a `primary`",
        ),
        (
            "origin = \"example.net.\"\nfile = \"z\"\nprimary = [\"192.0.2.53\"]\ntsig = { name = \"k\", algorithm = \"hmac-md5\", secret = \"YQ==\" }\n",
            "zones[0].tsig.algorithm",
            "is not one of",
        ),
        (
            "origin = \"example.net.\"\nfile = \"z\"\nprimary = [\"192.0.2.53\"]\ntsig = { name = \"k\" }\n",
            "zones[0].tsig",
            "exactly one of `secret`",
        ),
        (
            "origin = \"example.net.\"\nfile = \"z\"\nprimary = [\"192.0.2.53\"]\ntsig = { name = \"k\", secret = \"YQ==\", secret_file = \"f\" }\n",
            "zones[0].tsig",
            "exactly one of `secret`",
        ),
        (
            "origin = \"example.net.\"\nfile = \"z\"\nprimary = [\"192.0.2.53\"]\nrefresh_ms = 0\n",
            "zones[0].refresh_ms",
            "above 0",
        ),
        (
            "origin = \"example.net.\"\nfile = \"z\"\nprimary = [\"192.0.2.53\"]\ntransfer_timeout_ms = 10\n",
            "zones[0].transfer_timeout_ms",
            "at least 100",
        ),
    ];
    let twice = "[[zones]]\norigin = \"example.net.\"\nfile = \"z\"\n[[zones]]\norigin = \"example.org.\"\nfile = \"z\"\nprimary = [\"192.0.2.53\"]\n";
    let error = parse(twice).expect_err("one file for two zones");
    assert!(error.contains("zones[1].file") && error.contains("is also the file of zone `example.net.`"), "{error}");
    for (zone, key, message) in cases {
        let error = parse(&format!("[[zones]]\n{zone}")).expect_err(zone);
        assert!(error.contains(key) && error.contains(message), "{zone}: want `{key}` and {message:?} in:\n{error}");
    }
}
