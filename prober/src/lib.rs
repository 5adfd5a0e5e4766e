//! geolb-prober: health-checks CDN nodes and gossips verdicts.
//!
//! # Layout
//! * [`check`]: HTTP(S) and TCP checks, and the scheduler with rise/fall hysteresis.
//! * [`targets`]: what to check (the config's nodes and canaries), impairment.
//! * [`run`](mod@run): the prober process: checks, verdicts into the gossip, impairment,
//!   reloads. The gossip, the cluster fold, drains, the admin API and metrics are
//!   [`geolb_member`]'s.

mod check;
pub mod run;
mod targets;
