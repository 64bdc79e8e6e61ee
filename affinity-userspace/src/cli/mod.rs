//! The binary's edge: clap arguments ([`args`]), the flows from parsed
//! arguments to an exit code ([`run`], [`actions`]), the demo and the docs
//! generator. The only place that opens output files or prompts the user;
//! everything it needs from the system it asks of `host/`, `collect/` and
//! `apply/`, and everything it prints comes from `report/`.

pub mod actions;
pub mod args;
pub mod demo;
pub mod docs;
pub mod output;
pub mod run;

pub use args::*;
