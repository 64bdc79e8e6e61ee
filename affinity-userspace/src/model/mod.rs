//! Plain data, no system access: the trace a window produces ([`trace`]),
//! CPU lists, the topology and cgroup value types, the live view's
//! snapshots. Every other step passes
//! these values along; nothing here reads a file or calls the kernel.

pub mod bandwidth;
pub mod cgroup;
pub mod cpulist;
pub mod kube;
pub mod runtime;
pub mod snapshot;
pub mod topology;
pub mod trace;

pub use trace::*;
