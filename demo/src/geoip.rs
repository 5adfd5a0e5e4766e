//! The demo's GeoIP database: the documentation address ranges (RFC 5737, RFC 3849) mapped to a
//! few cities, so `dig +subnet=…` places a client anywhere without real client addresses.
//!
//! `demo/demo-city.mmdb` is this table written by [`mmdb_bytes`] (`geolb-demo --write-geoip
//! demo/demo-city.mmdb`); a test checks the shipped file is exactly what the generator writes.
//! The layout is MaxMind's GeoLite2-City (`ip_version` 6, IPv4 under `::/96` with the usual
//! aliases), the one a MaxMind subscriber would configure; geolb reads `location` and
//! `country.iso_code`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use ipnet::IpNet;
use mmdb_writer::{IpVersion, Writer};
use serde::Serialize;

/// A demo client population: a city and the networks placed there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct City {
    /// Its English name.
    pub name: &'static str,
    /// ISO 3166 country code.
    pub country: &'static str,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// The IPv4 network placed there (a half of a documentation /24).
    pub v4: &'static str,
    /// The IPv6 network placed there (inside 2001:db8::/32).
    pub v6: &'static str,
}

/// Every city of the database. Paris has no PoP of its own: its clients show "nearest".
pub(crate) const CITIES: [City; 5] = [
    City { name: "London", country: "GB", lat: 51.51, lon: -0.13, v4: "198.51.100.0/25", v6: "2001:db8:1::/48" },
    City { name: "Paris", country: "FR", lat: 48.86, lon: 2.35, v4: "198.51.100.128/25", v6: "2001:db8:2::/48" },
    City { name: "Frankfurt", country: "DE", lat: 50.11, lon: 8.68, v4: "192.0.2.0/25", v6: "2001:db8:3::/48" },
    City { name: "New York", country: "US", lat: 40.71, lon: -74.01, v4: "203.0.113.0/25", v6: "2001:db8:4::/48" },
    City { name: "Tokyo", country: "JP", lat: 35.68, lon: 139.69, v4: "203.0.113.128/25", v6: "2001:db8:5::/48" },
];

/// Build time written into the file, fixed so the same table always gives the same bytes.
const BUILD_EPOCH: u64 = 1_795_392_000;

#[derive(Serialize)]
struct Record<'a> {
    city: Names<'a>,
    country: Country<'a>,
    location: Location,
}

#[derive(Serialize)]
struct Names<'a> {
    names: BTreeMap<&'static str, &'a str>,
}

#[derive(Serialize)]
struct Country<'a> {
    iso_code: &'a str,
}

#[derive(Serialize)]
struct Location {
    accuracy_radius: u16,
    latitude: f64,
    longitude: f64,
}

/// The database's bytes.
pub(crate) fn mmdb_bytes() -> Result<Vec<u8>> {
    let mut writer = Writer::builder("GeoLite2-City")
        .languages(["en"])
        .description(&[("en", "geolb demo: documentation address ranges placed in five cities")])
        .ip_version(IpVersion::V6)
        .build_epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(BUILD_EPOCH))
        .build();
    for city in &CITIES {
        let record = Record {
            city: Names { names: [("en", city.name)].into() },
            country: Country { iso_code: city.country },
            location: Location { accuracy_radius: 20, latitude: city.lat, longitude: city.lon },
        };
        for net in [city.v4, city.v6] {
            let net: IpNet = net.parse().with_context(|| format!("network {net} of {}", city.name))?;
            writer.insert(net, &record).with_context(|| format!("cannot insert {net}"))?;
        }
    }
    writer.to_bytes().context("cannot write the demo GeoIP database")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file in the repository is the generator's output; regenerate with
    /// `cargo run -p geolb-demo -- --write-geoip demo/demo-city.mmdb`.
    #[test]
    fn the_shipped_database_is_what_the_generator_writes() {
        let shipped = include_bytes!("../demo-city.mmdb");
        assert!(mmdb_bytes().unwrap() == shipped, "demo/demo-city.mmdb is stale: regenerate it");
    }

    #[test]
    fn every_network_is_placed_at_its_city_by_a_real_mmdb_reader() {
        let reader = maxminddb::Reader::from_source(mmdb_bytes().unwrap()).unwrap();
        for city in &CITIES {
            for net in [city.v4, city.v6] {
                let net: IpNet = net.parse().unwrap();
                // The last address of the network, so the whole prefix is covered.
                let record: serde_json::Value = reader.lookup(net.broadcast()).unwrap().decode().unwrap().unwrap();
                assert_eq!(record["location"]["latitude"], city.lat, "{net}");
                assert_eq!(record["location"]["longitude"], city.lon, "{net}");
                assert_eq!(record["country"]["iso_code"], city.country, "{net}");
            }
        }
        let outside: std::net::IpAddr = "198.18.0.1".parse().unwrap();
        assert!(reader.lookup(outside).unwrap().decode::<serde_json::Value>().unwrap().is_none());
    }
}
