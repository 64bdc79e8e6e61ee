//! affin-trace: per-thread scheduler facts from eBPF, turned into a CPU
//! affinity decision.
//!
//! The folders follow the data, one step each:
//!
//! ```text
//! cli/ ──> host/ (/proc, /sys, cgroupfs)      kernel/ (BTF, load, attach, maps)
//!             └──────────────┬──────────────────┘
//!                         collect/ (session, collector) ──> model::Trace
//!                                                              │
//!                         analyze/ (features, classify, recommend, throttle)
//!                                                              │
//!                         apply/ (plan, transaction, state)    │
//!                                                              ▼
//!                         report/ (JSON, text, SVG, timeline, live view)
//! ```
//!
//! `cli`, `host`, `kernel`, `collect` and `apply` may touch the system;
//! `model`, `analyze` and `report` are pure (values in, values out), and
//! `cargo xtask test` checks that they stay so.

pub mod analyze;
pub mod apply;
pub mod cli;
pub mod collect;
pub mod host;
pub mod kernel;
pub mod model;
pub mod report;
pub mod serve;
