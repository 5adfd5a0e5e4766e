//! geolb-prober: health-checks CDN nodes and gossips verdicts.
//!
//! # Layout
//! * [`check`]: HTTP(S) and TCP checks, and the scheduler with rise/fall hysteresis.

pub mod check;
