//! Loading and attaching the BPF programs, and the maps they fill.
//!
//! Tracepoints: sched_switch, sched_migrate_task, sched_wakeup,
//! sched_wakeup_new, sched_process_exit (see affinity-ebpf). The tp_btf set is
//! preferred; the raw_tp set is the fallback where tp_btf cannot attach.
//!
//! Nothing is pinned: the programs live as long as the [`Probe`] (its `Drop`
//! closes the link fds), and the kernel detaches them when this process ends
//! by any path, a panic or SIGKILL included.

use affinity_common::{CpuTopo, DROP_KINDS, TaskOffsets, ThreadCpuKey, ThreadStats};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{BtfTracePoint, RawTracePoint},
};
use thiserror::Error;

use crate::{model::AttachMode, topology::Topology};

/// `BPF_NOEXIST` (include/uapi/linux/bpf.h): create only.
const BPF_NOEXIST: u64 = 1;

/// The BPF object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/affinity"));

/// The five tracepoints, in attach order.
pub const TRACEPOINTS: [&str; 5] = [
    "sched_switch",
    "sched_migrate_task",
    "sched_wakeup",
    "sched_wakeup_new",
    "sched_process_exit",
];

/// What to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachChoice {
    /// tp_btf, falling back to raw_tp.
    Auto,
    /// tp_btf only.
    TpBtf,
    /// raw_tp only.
    RawTp,
}

/// Sizes and choices for [`Probe::load`].
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// Capacity of the per-thread map; threads past it are counted as drops.
    pub max_threads: u32,
    /// Program set to attach.
    pub attach: AttachChoice,
    /// Kernel offsets (from [`crate::btf::task_offsets`]).
    pub offsets: TaskOffsets,
    /// /proc/sys/kernel/pid_max: sizes the target bitmap.
    pub pid_max: u32,
}

/// A load or attach failure.
#[derive(Debug, Error)]
pub enum ProbeError {
    /// The object or a map could not be loaded.
    #[error("loading the BPF programs failed: {0}")]
    Load(String),
    /// A program could not be attached.
    #[error("attaching {kind} program to {tracepoint} failed: {reason}")]
    Attach {
        /// tp_btf or raw_tp.
        kind: &'static str,
        /// Tracepoint name.
        tracepoint: &'static str,
        /// The kernel's or aya's words.
        reason: String,
    },
    /// A map operation failed.
    #[error("BPF map {map}: {reason}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What went wrong.
        reason: String,
    },
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> ProbeError {
    move |e| ProbeError::Map {
        map,
        reason: e.to_string(),
    }
}

/// Loaded and attached programs plus their maps.
pub struct Probe {
    // Field order matters for Drop only in that all of it goes; the links
    // are owned by `ebpf`'s programs.
    ebpf: Ebpf,
    targets: Array<MapData, u32>,
    threads: HashMap<MapData, u32, ThreadStats>,
    thread_cpu: HashMap<MapData, ThreadCpuKey, u64>,
    drops: PerCpuArray<MapData, u64>,
    mode: AttachMode,
    max_threads: u32,
}

impl Probe {
    /// Loads the object, fills the topology table and attaches the programs.
    /// No process is traced until [`Probe::add_target`].
    pub fn load(cfg: &ProbeConfig, topo: &Topology) -> Result<Probe, ProbeError> {
        let btf = Btf::from_sys_fs().map_err(|e| ProbeError::Load(format!("kernel BTF: {e}")))?;
        match cfg.attach {
            AttachChoice::TpBtf => Self::load_mode(cfg, topo, &btf, AttachMode::TpBtf),
            AttachChoice::RawTp => Self::load_mode(cfg, topo, &btf, AttachMode::RawTp),
            AttachChoice::Auto => {
                Self::load_mode(cfg, topo, &btf, AttachMode::TpBtf).or_else(|e| {
                    eprintln!("affin-trace: {e}; continuing with raw tracepoints");
                    Self::load_mode(cfg, topo, &btf, AttachMode::RawTp)
                })
            }
        }
    }

    fn load_mode(
        cfg: &ProbeConfig,
        topo: &Topology,
        btf: &Btf,
        mode: AttachMode,
    ) -> Result<Probe, ProbeError> {
        let nr_possible =
            aya::util::nr_cpus().map_err(|(p, e)| ProbeError::Load(format!("{p}: {e}")))?;
        let max_threads = cfg.max_threads.max(1);
        // A thread uses one (tid, cpu) entry per CPU it ran on; most use few.
        let thread_cpu_entries = max_threads
            .saturating_mul((nr_possible as u32).clamp(1, 16))
            .min(1 << 22);
        let mut ebpf = EbpfLoader::new()
            .btf(Some(btf))
            .override_global("OFFSETS", &cfg.offsets, true)
            .map_max_entries("TARGETS", cfg.pid_max.div_ceil(32).max(1))
            .map_max_entries("THREADS", max_threads)
            .map_max_entries("THREAD_CPU", thread_cpu_entries)
            .map_max_entries("CPU_TOPO", nr_possible as u32)
            .map_max_entries("DROPS", DROP_KINDS)
            .load(OBJECT)
            .map_err(|e| ProbeError::Load(e.to_string()))?;

        let mut cpu_topo: Array<MapData, CpuTopo> = take(&mut ebpf, "CPU_TOPO")?;
        for c in &topo.cpus {
            if (c.id as usize) < nr_possible {
                let v = CpuTopo {
                    core: c.core,
                    llc: c.llc,
                    node: c.node,
                    valid: 1,
                };
                cpu_topo.set(c.id, v, 0).map_err(map_err("CPU_TOPO"))?;
            }
        }

        for tp in TRACEPOINTS {
            match mode {
                AttachMode::TpBtf => attach_btf(&mut ebpf, btf, tp)?,
                AttachMode::RawTp => attach_raw(&mut ebpf, tp)?,
            }
        }
        Ok(Probe {
            targets: take(&mut ebpf, "TARGETS")?,
            threads: take(&mut ebpf, "THREADS")?,
            thread_cpu: take(&mut ebpf, "THREAD_CPU")?,
            drops: take(&mut ebpf, "DROPS")?,
            ebpf,
            mode,
            max_threads,
        })
    }

    /// The attached program set.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Capacity of the per-thread map.
    pub fn max_threads(&self) -> u32 {
        self.max_threads
    }

    /// Starts tracing every thread of `tgid`, present and future.
    pub fn add_target(&mut self, tgid: u32) -> Result<(), ProbeError> {
        let word = tgid / 32;
        if word >= self.targets.len() {
            return Err(ProbeError::Map {
                map: "TARGETS",
                reason: format!("pid {tgid} is above pid_max"),
            });
        }
        let cur = self.targets.get(&word, 0).map_err(map_err("TARGETS"))?;
        self.targets
            .set(word, cur | (1 << (tgid % 32)), 0)
            .map_err(map_err("TARGETS"))
    }

    /// Gives an existing thread its `sum_exec_runtime` base, unless the
    /// programs already created its entry (they have the exact one then).
    pub fn seed_thread(&mut self, tid: u32, tgid: u32, comm: [u8; 16], sum_exec_ns: u64) {
        let v = ThreadStats {
            tgid,
            comm,
            last_sum_exec_ns: sum_exec_ns,
            ..ThreadStats::default()
        };
        // BPF_NOEXIST: an EEXIST failure means the kernel side was first.
        let _ = self.threads.insert(tid, v, BPF_NOEXIST);
    }

    /// All per-thread entries.
    pub fn threads(&self) -> Vec<(u32, ThreadStats)> {
        self.threads.iter().filter_map(Result::ok).collect()
    }

    /// All per-(thread, CPU) on-CPU times.
    pub fn thread_cpu(&self) -> Vec<(ThreadCpuKey, u64)> {
        self.thread_cpu.iter().filter_map(Result::ok).collect()
    }

    /// Forgets a thread that exited and whose final values were read.
    pub fn forget_thread(&mut self, tid: u32, cpus: impl Iterator<Item = u32>) {
        let _ = self.threads.remove(&tid);
        for cpu in cpus {
            let _ = self.thread_cpu.remove(&ThreadCpuKey { tid, cpu });
        }
    }

    /// Events dropped so far, all reasons, all CPUs.
    pub fn dropped(&self) -> u64 {
        (0..DROP_KINDS)
            .filter_map(|k| self.drops.get(&k, 0).ok())
            .map(|v| v.iter().sum::<u64>())
            .sum()
    }

    /// Names of the attached programs (for diagnostics).
    pub fn program_names(&self) -> Vec<String> {
        self.ebpf.programs().map(|(n, _)| n.to_string()).collect()
    }
}

/// Attaches only the empty sched_switch program (`floor_sched_switch`) and
/// returns the object that keeps it attached: the baseline cost of any
/// sched_switch tracer, for benchmarks.
pub fn attach_floor() -> Result<Ebpf, ProbeError> {
    let btf = Btf::from_sys_fs().map_err(|e| ProbeError::Load(format!("kernel BTF: {e}")))?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .load(OBJECT)
        .map_err(|e| ProbeError::Load(e.to_string()))?;
    let err = |reason: String| ProbeError::Attach {
        kind: "tp_btf",
        tracepoint: "sched_switch",
        reason,
    };
    let prog: &mut BtfTracePoint = ebpf
        .program_mut("floor_sched_switch")
        .ok_or_else(|| err("not in the object".into()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| err(e.to_string()))?;
    prog.load("sched_switch", &btf)
        .map_err(|e| err(e.to_string()))?;
    prog.attach().map_err(|e| err(e.to_string()))?;
    Ok(ebpf)
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, ProbeError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(ProbeError::Map {
        map: name,
        reason: "not in the object".into(),
    })?;
    T::try_from(map).map_err(map_err(name))
}

fn attach_btf(ebpf: &mut Ebpf, btf: &Btf, tp: &'static str) -> Result<(), ProbeError> {
    let err = |reason: String| ProbeError::Attach {
        kind: "tp_btf",
        tracepoint: tp,
        reason,
    };
    let name = format!("btf_{tp}");
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(&name)
        .ok_or_else(|| err("not in the object".into()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| err(e.to_string()))?;
    prog.load(tp, btf).map_err(|e| err(e.to_string()))?;
    prog.attach().map_err(|e| err(e.to_string()))?;
    Ok(())
}

fn attach_raw(ebpf: &mut Ebpf, tp: &'static str) -> Result<(), ProbeError> {
    let err = |reason: String| ProbeError::Attach {
        kind: "raw_tp",
        tracepoint: tp,
        reason,
    };
    let name = format!("raw_{tp}");
    let prog: &mut RawTracePoint = ebpf
        .program_mut(&name)
        .ok_or_else(|| err("not in the object".into()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| err(e.to_string()))?;
    prog.load().map_err(|e| err(e.to_string()))?;
    prog.attach(tp).map_err(|e| err(e.to_string()))?;
    Ok(())
}
