//! From a trace to a decision, pure: features per thread and process
//! ([`features`]), the seed's six-way classification and its thresholds
//! ([`classify`], [`config`]), the topology-aware recommendation
//! ([`recommend`]), CFS throttling ([`throttle`]), the verify judge
//! ([`verify`]), and the whole chain in one call ([`decision`]). Values in,
//! values out: tested on fixtures and recorded traces, never on the system.

pub mod classify;
pub mod config;
pub mod contention;
pub mod decision;
pub mod features;
pub mod fix;
pub mod limit;
pub mod periods;
pub mod predict;
pub mod recommend;
pub mod throttle;
pub mod verify;
