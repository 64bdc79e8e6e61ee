//! The host as affin-trace reads it: /proc, /sys and cgroupfs, behind one
//! root-path seam so fixtures can stand in for a real machine; the
//! preflight checks run before anything changes; and the command gate that
//! starts `-- COMMAND` held until tracing is ready. Readers here return the
//! plain values of `model/`.

pub mod cgroup;
pub mod command;
pub mod contention;
pub mod kube;
pub mod oci;
pub mod preflight;
pub mod procs;
pub mod quotas;
pub mod root;
pub mod runtime;
pub mod topology;

pub use root::Root;
