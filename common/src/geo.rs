//! Points on the Earth and the great-circle distance between them.
//!
//! Distances use the haversine formula on a sphere of the mean Earth radius: accurate to about
//! 0.5 % against the ellipsoid, which is far below the spacing of any two PoPs worth telling
//! apart. Hot paths that only need to *compare* distances use [`UnitVector`] dot products, which
//! order points exactly as the great-circle distance does and cost three multiplications.

use serde::{Deserialize, Serialize};

/// Mean Earth radius in kilometres (IUGG).
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A latitude/longitude pair in degrees (WGS 84).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    /// Latitude in degrees, −90 to 90.
    pub lat: f64,
    /// Longitude in degrees, −180 to 180.
    pub lon: f64,
}

impl GeoPoint {
    /// A point; no range check (see [`GeoPoint::is_valid`]).
    pub const fn new(lat: f64, lon: f64) -> Self {
        Self { lat, lon }
    }

    /// Whether latitude and longitude are finite and within range.
    pub fn is_valid(&self) -> bool {
        self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
    }

    /// Great-circle distance to `other` in kilometres (haversine).
    pub fn distance_km(&self, other: &GeoPoint) -> f64 {
        let (phi1, phi2) = (self.lat.to_radians(), other.lat.to_radians());
        let dphi = phi2 - phi1;
        let dlambda = (other.lon - self.lon).to_radians();
        let a = (dphi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (dlambda / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }

    /// The point as a unit vector from the Earth's centre.
    pub fn unit_vector(&self) -> UnitVector {
        let (phi, lambda) = (self.lat.to_radians(), self.lon.to_radians());
        UnitVector { x: phi.cos() * lambda.cos(), y: phi.cos() * lambda.sin(), z: phi.sin() }
    }
}

/// A point as a unit vector: the dot product of two of them is the cosine of the central angle.
///
/// A larger dot product means a shorter great-circle distance, so nearest-neighbour searches
/// compare dot products and never call a trigonometric function per candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitVector {
    /// Towards latitude 0, longitude 0.
    pub x: f64,
    /// Towards latitude 0, longitude 90° E.
    pub y: f64,
    /// Towards the North Pole.
    pub z: f64,
}

impl UnitVector {
    /// Cosine of the central angle between two points.
    pub fn dot(&self, other: &UnitVector) -> f64 {
        self.x * other.x + self.y * other.y + self.z * other.z
    }

    /// Great-circle distance in kilometres for a cosine of the central angle.
    pub fn dot_to_km(dot: f64) -> f64 {
        dot.clamp(-1.0, 1.0).acos() * EARTH_RADIUS_KM
    }

    /// The cosine of the central angle for a distance in kilometres (the inverse of
    /// [`UnitVector::dot_to_km`]); distances past the antipode give −1.
    pub fn km_to_dot(km: f64) -> f64 {
        if km >= std::f64::consts::PI * EARTH_RADIUS_KM { -1.0 } else { (km / EARTH_RADIUS_KM).cos() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LHR: GeoPoint = GeoPoint::new(51.51, -0.13);
    const FRA: GeoPoint = GeoPoint::new(50.11, 8.68);
    const SYD: GeoPoint = GeoPoint::new(-33.87, 151.21);

    #[test]
    fn known_distances() {
        // London–Frankfurt is about 638 km, London–Sydney about 16,990 km.
        assert!((LHR.distance_km(&FRA) - 638.0).abs() < 10.0, "{}", LHR.distance_km(&FRA));
        assert!((LHR.distance_km(&SYD) - 16_990.0).abs() < 60.0, "{}", LHR.distance_km(&SYD));
    }

    #[test]
    fn antimeridian_is_short() {
        // Two points 2° of longitude apart across the antimeridian are ~222 km apart, not ~39,800.
        let a = GeoPoint::new(0.0, 179.0);
        let b = GeoPoint::new(0.0, -179.0);
        assert!((a.distance_km(&b) - 222.4).abs() < 1.0, "{}", a.distance_km(&b));
    }

    #[test]
    fn validity() {
        assert!(LHR.is_valid());
        assert!(!GeoPoint::new(91.0, 0.0).is_valid());
        assert!(!GeoPoint::new(0.0, -180.5).is_valid());
        assert!(!GeoPoint::new(f64::NAN, 0.0).is_valid());
    }

    fn point() -> impl Strategy<Value = GeoPoint> {
        (-90.0f64..=90.0, -180.0f64..=180.0).prop_map(|(lat, lon)| GeoPoint::new(lat, lon))
    }

    proptest! {
        #[test]
        fn distance_is_a_metric(a in point(), b in point(), c in point()) {
            let ab = a.distance_km(&b);
            prop_assert!(ab >= 0.0);
            prop_assert!(ab <= std::f64::consts::PI * EARTH_RADIUS_KM + 1e-6);
            prop_assert!((ab - b.distance_km(&a)).abs() < 1e-6);
            prop_assert!(a.distance_km(&a) < 1e-6);
            prop_assert!(a.distance_km(&c) <= ab + b.distance_km(&c) + 1e-6);
        }

        #[test]
        fn dot_orders_like_distance(a in point(), b in point(), c in point()) {
            let (ua, ub, uc) = (a.unit_vector(), b.unit_vector(), c.unit_vector());
            let (dab, dac) = (a.distance_km(&b), a.distance_km(&c));
            // Equal within a metre either way; otherwise the orders agree.
            if (dab - dac).abs() > 1e-3 {
                prop_assert_eq!(dab < dac, ua.dot(&ub) > ua.dot(&uc));
            }
            prop_assert!((UnitVector::dot_to_km(ua.dot(&ub)) - dab).abs() < 1.0);
        }

        #[test]
        fn km_to_dot_inverts(km in 0.0f64..20_000.0) {
            prop_assert!((UnitVector::dot_to_km(UnitVector::km_to_dot(km)) - km).abs() < 1e-3 * km.max(1.0));
        }
    }
}
