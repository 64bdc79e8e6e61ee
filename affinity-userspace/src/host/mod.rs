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

/// Writes `text` at `root/rel`, making the directories on the way: the
/// fixture trees of host/'s unit tests.
#[cfg(test)]
pub(crate) fn put(root: &std::path::Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}
