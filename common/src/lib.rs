//! Domain types and pure logic shared by the geolb prober and resolver.
//!
//! This crate owns geography ([`geo`]), identifiers ([`id`]) and node health as seen by a reader
//! ([`health`]). It opens no sockets and spawns no tasks: everything here is a value or a pure
//! function, so both programs and their tests can use it without a runtime.

pub mod geo;
pub mod health;
pub mod id;
pub mod nearest;
pub mod quorum;
pub mod verdict;

pub use geo::GeoPoint;
pub use health::{Health, HealthLookup};
pub use id::{NodeId, PopId};
