//! Client location: CIDR overrides, then GeoIP, then the configured default.
//!
//! Returns where the client is and the prefix length of the network that decided it, which
//! becomes the ECS scope of the answer: every client of that network would be placed the same.

use std::net::IpAddr;
use std::sync::Arc;

use geolb_common::GeoPoint;
use geolb_common::geo::UnitVector;
use geolb_config::{Config, DefaultLocation, OverrideTarget};
use ipnet::IpNet;

use crate::geoip::GeoIp;

/// What decided a client's location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A CIDR override.
    Override,
    /// The GeoIP database.
    GeoIp,
    /// Nothing placed the client: the configured default.
    Default,
}

/// Where a client is. Lookups use the vector and the prefix; the point and what decided are
/// what the tests assert placement by.
#[derive(Debug, Clone, Copy)]
#[allow(dead_code, reason = "point and source are read by the tests only")]
pub(crate) struct ClientLocation {
    /// Position.
    pub point: GeoPoint,
    /// Position as a unit vector, for selection.
    pub vector: UnitVector,
    /// Prefix length of the network that decided (in the address's own family).
    pub prefix_len: u8,
    /// What decided.
    pub source: Source,
}

/// Places clients; cheap to query, built once per config.
#[derive(Debug)]
pub(crate) struct Locator {
    /// Overrides, longest prefix first, so the first match is the most specific.
    overrides: Vec<(IpNet, GeoPoint, UnitVector)>,
    geoip: Option<Arc<GeoIp>>,
    default: (GeoPoint, UnitVector),
}

impl Locator {
    /// Builds a locator from the config's overrides and default, and an opened GeoIP set.
    pub(crate) fn new(config: &Config, geoip: Option<Arc<GeoIp>>) -> Locator {
        let pop_point = |id: &str| config.pop(id).map_or(GeoPoint::new(0.0, 0.0), |p| p.location);
        let mut overrides: Vec<(IpNet, GeoPoint, UnitVector)> = config
            .overrides
            .iter()
            .map(|o| {
                let point = match &o.target {
                    OverrideTarget::Pop(p) => pop_point(p.as_str()),
                    OverrideTarget::Point(p) => *p,
                };
                (o.net, point, point.unit_vector())
            })
            .collect();
        overrides.sort_by_key(|(net, ..)| std::cmp::Reverse(net.prefix_len()));
        let default = match &config.default_location {
            DefaultLocation::Pop(p) => pop_point(p.as_str()),
            DefaultLocation::Point(p) => *p,
        };
        Locator { overrides, geoip, default: (default, default.unit_vector()) }
    }

    /// The GeoIP set in use, if any.
    pub(crate) fn geoip(&self) -> Option<&Arc<GeoIp>> {
        self.geoip.as_ref()
    }

    /// Places `ip`. GeoIP errors (a corrupt record) place the client at the default and are
    /// reported through `on_error`, never as a failed lookup.
    pub(crate) fn locate(&self, ip: IpAddr, on_error: impl FnOnce(&crate::geoip::GeoIpError)) -> ClientLocation {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        for (net, point, vector) in &self.overrides {
            if net.contains(&ip) {
                return ClientLocation {
                    point: *point,
                    vector: *vector,
                    prefix_len: net.prefix_len(),
                    source: Source::Override,
                };
            }
        }
        let width: u8 = if ip.is_ipv4() { 32 } else { 128 };
        let mut prefix_len = width;
        if let Some(geoip) = &self.geoip {
            match geoip.lookup(ip) {
                Ok(hit) => {
                    prefix_len = self.narrow_past_overrides(ip, hit.prefix_len);
                    if let Some(point) = hit.point {
                        return ClientLocation {
                            point,
                            vector: point.unit_vector(),
                            prefix_len,
                            source: Source::GeoIp,
                        };
                    }
                }
                Err(e) => on_error(&e),
            }
        }
        ClientLocation { point: self.default.0, vector: self.default.1, prefix_len, source: Source::Default }
    }

    /// A GeoIP network that contains an override must not be the answer's scope: a cache would
    /// then hand this client's answer to the override's clients. Lengthen the prefix until the
    /// overrides inside it are excluded.
    fn narrow_past_overrides(&self, ip: IpAddr, prefix_len: u8) -> u8 {
        let Ok(network) = IpNet::new(ip, prefix_len) else {
            return prefix_len;
        };
        let network = network.trunc();
        self.overrides
            .iter()
            .filter(|(net, ..)| net.prefix_len() > prefix_len && network.contains(net))
            .map(|(net, ..)| net.prefix_len())
            .fold(prefix_len, u8::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_beat_the_default_and_longest_wins() {
        let mut config = Config::for_test();
        config.overrides = vec![
            geolb_config::Override {
                net: "198.51.100.0/24".parse().unwrap(),
                target: OverrideTarget::Pop("syd".into()),
            },
            geolb_config::Override {
                net: "198.51.100.128/25".parse().unwrap(),
                target: OverrideTarget::Point(GeoPoint::new(1.0, 2.0)),
            },
        ];
        let locator = Locator::new(&config, None);
        let l = locator.locate("198.51.100.7".parse().unwrap(), |_| {});
        assert_eq!((l.source, l.prefix_len, l.point), (Source::Override, 24, GeoPoint::new(-33.87, 151.21)));
        let l = locator.locate("198.51.100.200".parse().unwrap(), |_| {});
        assert_eq!((l.source, l.prefix_len, l.point), (Source::Override, 25, GeoPoint::new(1.0, 2.0)));
        // IPv4-mapped IPv6 is the IPv4 address.
        let l = locator.locate("::ffff:198.51.100.7".parse().unwrap(), |_| {});
        assert_eq!(l.source, Source::Override);
        // No GeoIP: the default (fra), scoped to the single address.
        let l = locator.locate("203.0.113.9".parse().unwrap(), |_| {});
        assert_eq!((l.source, l.prefix_len, l.point), (Source::Default, 32, GeoPoint::new(50.11, 8.68)));
    }

    #[test]
    fn a_geoip_network_holding_an_override_is_narrowed() {
        let mut config = Config::for_test();
        config.overrides = vec![geolb_config::Override {
            net: "10.1.2.0/24".parse().unwrap(),
            target: OverrideTarget::Pop("syd".into()),
        }];
        let locator = Locator::new(&config, None);
        assert_eq!(locator.narrow_past_overrides("10.1.9.9".parse().unwrap(), 16), 24);
        assert_eq!(locator.narrow_past_overrides("10.2.9.9".parse().unwrap(), 16), 16);
        assert_eq!(locator.narrow_past_overrides("10.1.9.9".parse().unwrap(), 28), 28);
    }
}
