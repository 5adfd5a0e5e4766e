//! geolb-prober: health-checks CDN nodes and gossips verdicts.
//!
//! # Layout
//! * [`check`]: HTTP(S) and TCP checks, and the scheduler with rise/fall hysteresis.
//! * [`targets`]: what to check (the config's nodes and canaries), impairment.
//! * [`gossip`]: chitchat with every datagram authenticated by the cluster key.
//! * [`cluster`]: folding the gossip into one quorum view (shared with the resolver).
//! * [`admin`]: `/api/v1/state`, drain and undrain; [`drains`]: their persistence.
//! * [`metrics`]: Prometheus names and rendering (shared with the resolver).
//! * [`run`](mod@run): the prober process.

pub mod admin;
pub mod check;
pub mod cluster;
pub mod drains;
pub mod gossip;
pub mod metrics;
pub mod run;
pub mod signals;
pub mod targets;
