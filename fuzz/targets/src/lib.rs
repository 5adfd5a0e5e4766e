//! geolb's fuzz targets, one plain function per target: `fuzz/fuzz_targets/<name>.rs` hands
//! libFuzzer's bytes to it, and `tests/corpus.rs` replays every file of `fuzz/corpus/<name>/`
//! through it under `cargo test`, so an input that once failed fails CI if it fails again.
//!
//! Each target drives the code path the program runs on such bytes, not a copy of it, and
//! checks what must hold beyond "no panic":
//!
//! | target | bytes | drives | checks |
//! |---|---|---|---|
//! | [`remote_backend_unix`] | what PowerDNS writes on the unix socket | the unix connector (`server::unix::serve`) on a real socket, over an engine built from `config/examples/world.toml` and its zone | one reply line per request line, each the one [`geolb_resolver::server::Backend::call`] gives for that line; an over-long line is refused and ends the connection |
//! | [`remote_backend_http`] | what PowerDNS writes on the HTTP connection | the HTTP connector (`server::http::serve`, hyper) on a real TCP socket, same engine | the answer is a sequence of HTTP/1.x responses; every body is empty or one JSON object; a lone well-formed `POST /dns` that hyper hands on is answered what `Backend::call` answers its body |
//! | [`config_toml`] | a config file, or a fleet document (JSON) | `geolb_config::parse`, `FleetDocument::from_json`, `LocalFile::compose` | a valid config's references hold and its numbers are finite; its fleet tables, handed back as a fleet document, validate again; documents round-trip through their canonical bytes |
//! | [`gossip_frame`] | datagrams, each optionally signed with the cluster key | the gossip transport's receive path (`geolb_member::fuzz::GossipEndpoint`: frame checks, replay cache, reassembly, zstd, chitchat decoding) | a datagram taken unsigned carried the key's HMAC; every datagram is counted once; an accepted message goes through the real sender and back unchanged |
//! | [`zone_file`] | a zone file of `example.net.` | `geolb_resolver::zones::ZoneSet::load` | a loaded zone keeps the module's promises: owners inside the zone and lower-case, one SOA at the apex, no CNAME beside other data, one TTL per RRset, no duplicates, records render as JSON |
//! | [`admin_bodies`] | one admin API request: `METHOD /path`, header lines, a blank line, the body | the admin `Router` (`geolb_member::admin::router`) over an embedded fleet store, in process | every answer is JSON (or the documented text), no 5xx; documents are validated as a real write is, then refused as stale, so no execution changes the store |
//!
//! Inputs may be any bytes: a target never panics on what it is given, only on a broken
//! invariant, which is then a finding.

mod admin;
mod config;
mod fixture;
pub mod gossip;
mod http;
mod resolver;
mod unix;
mod zone;

pub use admin::admin_bodies;
pub use config::config_toml;
pub use gossip::gossip_frame;
pub use http::remote_backend_http;
pub use unix::remote_backend_unix;
pub use zone::zone_file;

/// A target: any bytes in, a panic only for a broken invariant.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory and of its cargo-fuzz target.
pub const TARGETS: &[(&str, Target)] = &[
    ("remote_backend_unix", remote_backend_unix),
    ("remote_backend_http", remote_backend_http),
    ("config_toml", config_toml),
    ("gossip_frame", gossip_frame),
    ("zone_file", zone_file),
    ("admin_bodies", admin_bodies),
];
