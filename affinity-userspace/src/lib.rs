//! affin-trace: per-thread scheduler facts from eBPF, turned into a CPU
//! affinity decision.
//!
//! Data flows one way, one module per step:
//! kernel maps -> [`probe`] (load, attach) -> [`collector`] (per-interval map
//! reads) -> [`model::Trace`] -> [`features`] -> [`classify`] -> [`recommend`]
//! -> [`report`]. Only `probe`, `collector`, `procs` and `command` touch the
//! kernel; everything after the collector is pure and tested on fixtures.

pub mod actions;
pub mod analysis;
pub mod apply;
pub mod btf;
pub mod cgroup;
pub mod classify;
pub mod cli;
pub mod collector;
pub mod command;
pub mod config;
pub mod cpulist;
pub mod demo;
pub mod docs;
pub mod features;
pub mod model;
pub mod plot;
pub mod preflight;
pub mod probe;
pub mod procs;
pub mod recommend;
pub mod report;
pub mod run;
pub mod session;
pub mod state;
pub mod throttle;
pub mod timeline;
pub mod topology;
pub mod verify;
pub mod wake;
pub mod watch;
