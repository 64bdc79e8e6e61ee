//! The root-path seam: every read of /proc, /sys and cgroupfs in `host/`
//! goes through a [`Root`], so a fixture tree (or a fuzzed one) stands in
//! for the machine. `Root::default()` is `/`, the live system.

use std::path::{Path, PathBuf};

/// The directory that /proc, /sys and cgroupfs paths are read under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Root(PathBuf);

impl Default for Root {
    fn default() -> Self {
        Root(PathBuf::from("/"))
    }
}

impl Root {
    /// A root at `dir` (a fixture tree, or "/" for the live system).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Root(dir.into())
    }

    /// The live system's root, `/`.
    pub fn host() -> Self {
        Root::default()
    }

    /// The root directory itself.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `path` under the root. An absolute `path` (as the kernel names it,
    /// `/proc/1/stat`) is taken relative to the root: `Path::join` would
    /// replace the root with it.
    pub fn join(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        self.0.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// `<root>/proc`.
    pub fn proc(&self) -> PathBuf {
        self.0.join("proc")
    }

    /// `<root>/proc/<pid>`, the directory procfs's `Process::new_with_root`
    /// takes.
    pub fn proc_pid(&self, pid: u32) -> PathBuf {
        self.proc().join(pid.to_string())
    }
}

impl AsRef<Path> for Root {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl From<PathBuf> for Root {
    fn from(p: PathBuf) -> Self {
        Root(p)
    }
}

impl From<&Path> for Root {
    fn from(p: &Path) -> Self {
        Root(p.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_keeps_the_root_for_absolute_paths() {
        let r = Root::new("/tmp/fx");
        assert_eq!(r.join("/proc/1/stat"), Path::new("/tmp/fx/proc/1/stat"));
        assert_eq!(r.join("sys/devices"), Path::new("/tmp/fx/sys/devices"));
        assert_eq!(r.proc_pid(7), Path::new("/tmp/fx/proc/7"));
        assert_eq!(
            Root::default().join("/proc/meminfo"),
            Path::new("/proc/meminfo")
        );
    }
}
