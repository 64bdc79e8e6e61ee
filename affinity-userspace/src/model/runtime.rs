//! What the traced program is, as far as its thread count goes: the facts
//! `host::runtime` reads from /proc/<pid>/{exe,cmdline,environ,maps} and
//! the binary itself, for `analyze::fix` to name the knob that sizes it.

use serde::Serialize;

/// Facts about the target's program.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuntimeFacts {
    /// Basename of its executable.
    pub exe: String,
    /// Its arguments, argv[0] first.
    pub args: Vec<String>,
    /// The environment variables that size thread pools, where set.
    pub env: Vec<(String, String)>,
    /// Basenames of the shared objects it maps (e.g. "libgomp.so.1").
    pub libs: Vec<String>,
    /// The Go toolchain that built it ("go1.19.8"), from its build info.
    pub go_version: Option<String>,
    /// Child processes running the same executable (forked workers).
    pub same_exe_children: u32,
    /// Thread names of the process.
    pub thread_names: Vec<String>,
    /// CPUs it may run on (affinity within its cpuset): what a runtime
    /// that sizes itself from the host sees, and the most CPUs a raised
    /// limit can use.
    pub allowed_cpus: Option<u32>,
}

/// Environment variables that size a runtime's threads.
pub const THREAD_ENV: [&str; 10] = [
    "GOMAXPROCS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "DOTNET_PROCESSOR_COUNT",
    "UV_THREADPOOL_SIZE",
    "RAYON_NUM_THREADS",
    "TOKIO_WORKER_THREADS",
    "JAVA_TOOL_OPTIONS",
    "GOGC",
];
