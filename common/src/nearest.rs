//! A spatial index that narrows "which of these points is nearest to a client" down to a
//! handful of candidates, so selection stays flat from 8 to thousands of PoPs.
//!
//! The sphere is split into cells by projecting it onto a cube (6 faces × `n`×`n` squares; the
//! edges of a cell are great-circle arcs, so its farthest point from its centre is a corner).
//! For each cell the index keeps every point that could be the nearest one, or within the tie
//! band of the nearest one, for *some* location inside the cell: with `r` the cell's radius,
//! `d` a point's distance from the cell centre and `D` the smallest `d + r` over all points,
//! a point stays when `d − r ≤ D + band`. By the triangle inequality no point outside that list
//! can be nearest (or within the band) for any client in the cell. A lookup finds the cell with
//! a few comparisons and no trigonometry.
//!
//! The grid grows with the points (about four cells per point, `n` from 8 to 32), so a cell's
//! list stays a handful long whether there are 20 points or thousands. Building compares dot
//! products against one cosine per cell: no trigonometry per point either.

use crate::geo::{EARTH_RADIUS_KM, UnitVector};

/// Fewest and most cells per cube-face edge: 6 × 8 × 8 = 384 cells of about 11° each, up to
/// 6 × 32 × 32 = 6,144 cells of about 3°.
const MIN_N: usize = 8;
const MAX_N: usize = 32;

/// Candidate lists per cell; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct NearIndex {
    /// Cells per cube-face edge.
    n: usize,
    /// `starts[c]..starts[c + 1]` indexes `items` for cell `c`.
    starts: Vec<u32>,
    items: Vec<u32>,
}

/// Cells per face edge for `points` points: about four cells per point.
fn grid_for(points: usize) -> usize {
    (((points as f64 / 6.0).sqrt() * 2.0).ceil() as usize).clamp(MIN_N, MAX_N)
}

/// The cell holding a direction on a grid of `n` × `n` per face: the face of its largest
/// coordinate, then its position on that face.
fn cell_of(v: &UnitVector, n: usize) -> usize {
    let (ax, ay, az) = (v.x.abs(), v.y.abs(), v.z.abs());
    let (face, u, w, m) = if ax >= ay && ax >= az {
        (usize::from(v.x < 0.0), v.y, v.z, ax)
    } else if ay >= az {
        (2 + usize::from(v.y < 0.0), v.x, v.z, ay)
    } else {
        (4 + usize::from(v.z < 0.0), v.x, v.y, az)
    };
    // m > 0 for any unit vector; a zero vector (never built) lands in cell 0.
    let scale = |t: f64| {
        let i = ((t / m + 1.0) * 0.5 * n as f64) as usize;
        i.min(n - 1)
    };
    if m == 0.0 {
        return 0;
    }
    face * n * n + scale(u) * n + scale(w)
}

/// The direction through a point (u, w) ∈ [-1, 1]² of a face, normalised.
fn face_point(face: usize, u: f64, w: f64) -> UnitVector {
    let (x, y, z) = match face {
        0 => (1.0, u, w),
        1 => (-1.0, u, w),
        2 => (u, 1.0, w),
        3 => (u, -1.0, w),
        4 => (u, w, 1.0),
        _ => (u, w, -1.0),
    };
    let norm = (x * x + y * y + z * z).sqrt();
    UnitVector { x: x / norm, y: y / norm, z: z / norm }
}

fn angle(a: &UnitVector, b: &UnitVector) -> f64 {
    a.dot(b).clamp(-1.0, 1.0).acos()
}

impl NearIndex {
    /// Builds the index over `points` for a tie band of `band_km`.
    pub fn build(points: &[UnitVector], band_km: f64) -> NearIndex {
        let band = band_km.max(0.0) / EARTH_RADIUS_KM;
        let n = grid_for(points.len());
        let cells = 6 * n * n;
        let mut starts = Vec::with_capacity(cells + 1);
        let mut items = Vec::new();
        let mut dots = vec![0.0f64; points.len()];
        let step = 2.0 / n as f64;
        for cell in 0..cells {
            starts.push(items.len() as u32);
            let (face, iu, iw) = (cell / (n * n), (cell / n) % n, cell % n);
            let (u0, w0) = (-1.0 + iu as f64 * step, -1.0 + iw as f64 * step);
            let centre = face_point(face, u0 + step / 2.0, w0 + step / 2.0);
            // Cell radius, padded against rounding.
            let radius = [(u0, w0), (u0 + step, w0), (u0, w0 + step), (u0 + step, w0 + step)]
                .iter()
                .map(|&(u, w)| angle(&centre, &face_point(face, u, w)))
                .fold(0.0, f64::max)
                + 1e-9;
            let mut nearest = f64::NEG_INFINITY;
            for (d, p) in dots.iter_mut().zip(points) {
                *d = centre.dot(p);
                nearest = nearest.max(*d);
            }
            // Keep d ≤ D + r + band with D = (nearest d) + r; as a cosine, with a margin that
            // only ever keeps more: 1e-7 rad (under a metre) covers acos's rounding near 1,
            // which reaches about 1e-8.
            let reach = nearest.clamp(-1.0, 1.0).acos() + 2.0 * radius + band + 1e-7;
            let floor = if reach >= std::f64::consts::PI { f64::NEG_INFINITY } else { reach.cos() - 1e-12 };
            items.extend(dots.iter().enumerate().filter(|(_, d)| **d >= floor).map(|(i, _)| i as u32));
        }
        starts.push(items.len() as u32);
        NearIndex { n, starts, items }
    }

    /// Indices (into the `points` given to [`NearIndex::build`]) of every point that can be the
    /// nearest to `v`, or within the tie band of the nearest.
    pub fn candidates(&self, v: &UnitVector) -> &[u32] {
        if self.n == 0 {
            return &[];
        }
        let c = cell_of(v, self.n);
        match (self.starts.get(c), self.starts.get(c + 1)) {
            (Some(&a), Some(&b)) => self.items.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Average candidates per cell (for logs and tuning).
    pub fn mean_candidates(&self) -> f64 {
        self.items.len() as f64 / (self.starts.len().saturating_sub(1)).max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GeoPoint;
    use proptest::prelude::*;

    fn point() -> impl Strategy<Value = GeoPoint> {
        (-90.0f64..=90.0, -180.0f64..=180.0).prop_map(|(lat, lon)| GeoPoint::new(lat, lon))
    }

    #[test]
    fn every_cell_is_reachable_and_cells_cover_the_sphere() {
        let n = grid_for(1000);
        let mut seen = vec![false; 6 * n * n];
        for lat in (-900..=900).step_by(5) {
            for lon in (-1800..1800).step_by(5) {
                let v = GeoPoint::new(f64::from(lat) / 10.0, f64::from(lon) / 10.0).unit_vector();
                seen[cell_of(&v, n)] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn narrows_a_thousand_points_to_a_few() {
        let points = |count: u32| -> Vec<UnitVector> {
            (0..count)
                .map(|i| {
                    let lat = (1.0 - 2.0 * (f64::from(i) + 0.5) / f64::from(count)).asin().to_degrees();
                    let lon = ((f64::from(i) * 137.507_764) % 360.0) - 180.0;
                    GeoPoint::new(lat, lon).unit_vector()
                })
                .collect()
        };
        // The grid grows with the points: a handful of candidates per cell at 1,000 and 5,000
        // points alike (on the fixed 8 × 8 grid, 1,000 points gave about 30).
        for count in [1000, 5000] {
            let index = NearIndex::build(&points(count), 50.0);
            assert!(index.mean_candidates() < 15.0, "{count} points: {}", index.mean_candidates());
        }
    }

    /// Every point within `band` of the nearest to each client is among its candidates.
    fn check_candidates(points: &[GeoPoint], clients: &[GeoPoint], band: f64) -> Result<(), TestCaseError> {
        let vectors: Vec<UnitVector> = points.iter().map(GeoPoint::unit_vector).collect();
        let index = NearIndex::build(&vectors, band);
        for &client in clients {
            check_client(&index, points, client, band)?;
        }
        Ok(())
    }

    fn check_client(index: &NearIndex, points: &[GeoPoint], client: GeoPoint, band: f64) -> Result<(), TestCaseError> {
        let candidates = index.candidates(&client.unit_vector());
        let dists: Vec<f64> = points.iter().map(|p| p.distance_km(&client)).collect();
        let nearest = dists.iter().copied().fold(f64::INFINITY, f64::min);
        for (i, d) in dists.iter().enumerate() {
            if *d <= nearest + band - 1e-6 {
                prop_assert!(
                    candidates.contains(&(i as u32)),
                    "point {i} at {d} km (nearest {nearest}, band {band}) missing"
                );
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// The same on the finer grids that many points get.
        #[test]
        fn candidates_hold_the_nearest_on_finer_grids(
            points in prop::collection::vec(point(), 300..3000),
            clients in prop::collection::vec(point(), 50),
            band in 0.0f64..500.0,
        ) {
            check_candidates(&points, &clients, band)?;
        }
    }

    proptest! {
        #[test]
        fn candidates_hold_the_nearest_and_the_tie_band(
            points in prop::collection::vec(point(), 1..60),
            client in point(),
            band in 0.0f64..500.0,
        ) {
            check_candidates(&points, &[client], band)?;
        }
    }
}
