//! The workspace's developer tasks, as a library: the `cargo xtask`
//! binary (src/main.rs) and the bench harness (bench/, which needs the same
//! setup, build and machine lock) both use it.
//!
//! Files by task: `setup` (what a fresh machine lacks), `binary` (build,
//! run, install, docs), `test` (unit, purity and root tests, the machine
//! lock), `fuzz`, `util` (paths, privileges, child processes).

pub mod binary;
pub mod fuzz;
pub mod setup;
pub mod test;
pub mod util;
