//! The CFS bandwidth programs (affinity-ebpf/src/bandwidth.rs): the kernel
//! fields they read, found in the running kernel's BTF, and which attach
//! kind the kernel allows (fentry, else kprobe).
//!
//! Functions: `sched_cfs_period_timer`, `throttle_cfs_rq`,
//! `unthrottle_cfs_rq` (per period and CPU), and with task-based throttling
//! (6.18+: `task_struct.throttle_node`) `throttle_cfs_rq_work` (exit) and
//! `tg_unthrottle_up` (per held task). Figures: [`BwPeriod`] records and
//! per-thread [`BwThread`] held time; for the agent, per traced cgroup, the
//! [`BwGroup`] histogram of threads running when the quota ran out.

use affinity_common::{
    BW_MODE_GROUPS, BW_MODE_PROBES, BW_MODE_TRACEPOINT, BW_PERIODS, BwConfig, BwGroup, BwPeriod,
    BwState, BwThread,
};
use aya::{
    Btf, Ebpf,
    maps::{Array, HashMap, MapData},
    programs::{FEntry, FExit, KProbe, ProgramError},
};

use crate::kernel::{btf::BtfError, probe::ProbeError};

/// The programs, by (fentry/fexit name, kprobe name, kernel function,
/// is a return probe, needed for task-based throttling only).
pub const PROGRAMS: [(&str, &str, &str, bool, bool); 5] = [
    (
        "bw_fentry_period_timer",
        "bw_kprobe_period_timer",
        "sched_cfs_period_timer",
        false,
        false,
    ),
    (
        "bw_fentry_throttle",
        "bw_kprobe_throttle",
        "throttle_cfs_rq",
        false,
        false,
    ),
    (
        "bw_fentry_unthrottle",
        "bw_kprobe_unthrottle",
        "unthrottle_cfs_rq",
        false,
        false,
    ),
    (
        "bw_fexit_throttle_work",
        "bw_kretprobe_throttle_work",
        "throttle_cfs_rq_work",
        true,
        true,
    ),
    (
        "bw_fentry_unthrottle_up",
        "bw_kprobe_unthrottle_up",
        "tg_unthrottle_up",
        false,
        true,
    ),
];

/// How the bandwidth programs are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BwAttach {
    /// fentry/fexit (BTF trampolines).
    Fentry,
    /// kprobe/kretprobe.
    Kprobe,
    /// Neither is available (e.g. no CONFIG_KPROBES, fentry refused under
    /// lockdown): sched_switch (tp_btf/raw_tp) sees held tasks leave.
    Tracepoint,
}

impl BwAttach {
    /// "fentry" / "kprobe".
    pub fn name(self) -> &'static str {
        match self {
            BwAttach::Fentry => "fentry",
            BwAttach::Kprobe => "kprobe",
            BwAttach::Tracepoint => "sched_switch",
        }
    }
}

/// What one read of the bandwidth maps returns.
#[derive(Clone, Debug, Default)]
pub struct BwRead {
    /// Complete periods not read before, oldest first.
    pub periods: Vec<BwPeriod>,
    /// Periods overwritten in the ring before they were read.
    pub lost_periods: u64,
}

/// Per-thread held time at the end of the window.
pub type BwThreads = Vec<(u32, BwThread)>;

/// The offsets, once per process (a walk over the kernel BTF, ~10 ms):
/// `None` where the BTF lacks a field the programs need.
pub fn kernel_config() -> Option<BwConfig> {
    static CFG: std::sync::OnceLock<Option<BwConfig>> = std::sync::OnceLock::new();
    *CFG.get_or_init(|| {
        let data = std::fs::read(crate::kernel::btf::VMLINUX_BTF).ok()?;
        config_from(&data).ok()
    })
}

/// `task_struct.throttled` for the sched_switch path (0: off), when the
/// kernel has task-based throttling.
pub fn throttled_offset() -> u32 {
    kernel_config()
        .filter(task_based)
        .map_or(0, |c| c.task_throttled)
}

/// Writes `BW_CONFIG` for the cgroup with kernfs id `cgroup_id` and
/// attaches the programs on the throttle path: fentry/fexit, else kprobes,
/// else (with `tracepoint_ready`: the object was loaded with
/// `THROTTLED_OFF` set) the sched_switch path records. Returns the path
/// used and whether per-thread held time is measured. The links live as
/// long as `ebpf`.
pub fn attach(
    ebpf: &mut Ebpf,
    cgroup_id: u64,
    nr_cpus: u32,
    tracepoint_ready: bool,
) -> Result<(BwAttach, bool), ProbeError> {
    let load = |e: String| ProbeError::Load(format!("CFS bandwidth programs: {e}"));
    let mut cfg =
        kernel_config().ok_or_else(|| load("kernel BTF lacks the fields they read".into()))?;
    cfg.cgroup_id = cgroup_id;
    cfg.nr_cpus = nr_cpus;
    let per_thread = task_based(&cfg);
    let wanted: Vec<_> = PROGRAMS.iter().filter(|p| per_thread || !p.4).collect();
    let attached = match attach_fentry(ebpf, &wanted) {
        Ok(()) => Ok(BwAttach::Fentry),
        Err(fentry_err) => attach_kprobes(ebpf, &wanted)
            .map(|()| BwAttach::Kprobe)
            .map_err(|k| format!("fentry: {fentry_err}; kprobe: {k}")),
    };
    let attached = match attached {
        Ok(a) => a,
        Err(_) if tracepoint_ready && per_thread => BwAttach::Tracepoint,
        Err(e) => return Err(load(e)),
    };
    cfg.mode = match attached {
        BwAttach::Tracepoint => BW_MODE_TRACEPOINT,
        _ => BW_MODE_PROBES,
    };
    let map = ebpf
        .map_mut("BW_CONFIG")
        .ok_or_else(|| load("no BW_CONFIG map".into()))?;
    let mut a: Array<&mut MapData, BwConfig> =
        Array::try_from(map).map_err(|e| load(e.to_string()))?;
    a.set(0, cfg, 0).map_err(|e| load(e.to_string()))?;
    Ok((attached, per_thread))
}

/// The agent: switches on the sched_switch path for every cgroup with a
/// `BW_GROUPS` entry ([`add_group`]). Needs the object loaded with
/// `THROTTLED_OFF` set (`tracepoint_ready`) and task-based throttling;
/// attaches nothing new (the path lives in the sched_switch program).
pub fn attach_groups(
    ebpf: &mut Ebpf,
    nr_cpus: u32,
    tracepoint_ready: bool,
) -> Result<(), ProbeError> {
    let load = |e: String| ProbeError::Load(format!("CFS bandwidth per cgroup: {e}"));
    let mut cfg =
        kernel_config().ok_or_else(|| load("kernel BTF lacks the fields it reads".into()))?;
    if !task_based(&cfg) || !tracepoint_ready {
        return Err(load(
            "the kernel has no task-based throttling (task_struct.throttled, 6.18+)".into(),
        ));
    }
    cfg.nr_cpus = nr_cpus;
    cfg.mode = BW_MODE_GROUPS;
    let map = ebpf
        .map_mut("BW_CONFIG")
        .ok_or_else(|| load("no BW_CONFIG map".into()))?;
    let mut a: Array<&mut MapData, BwConfig> =
        Array::try_from(map).map_err(|e| load(e.to_string()))?;
    a.set(0, cfg, 0).map_err(|e| load(e.to_string()))
}

fn groups(ebpf: &mut Ebpf) -> Option<HashMap<&mut MapData, u64, BwGroup>> {
    HashMap::try_from(ebpf.map_mut("BW_GROUPS")?).ok()
}

/// Starts counting for the cgroup with kernfs id `id` (from zero).
pub fn add_group(ebpf: &mut Ebpf, id: u64) -> Result<(), ProbeError> {
    let mut m = groups(ebpf).ok_or_else(|| ProbeError::Load("no BW_GROUPS map".into()))?;
    m.insert(id, BwGroup::default(), 0)
        .map_err(|e| ProbeError::Load(format!("BW_GROUPS: {e}")))
}

/// Stops counting for `id`; its entry goes.
pub fn remove_group(ebpf: &mut Ebpf, id: u64) {
    if let Some(mut m) = groups(ebpf) {
        let _ = m.remove(&id);
    }
}

/// Periods by threads running at exhaustion for `id` so far (cumulative).
pub fn read_group(ebpf: &Ebpf, id: u64) -> Option<BwGroup> {
    let m: HashMap<&MapData, u64, BwGroup> = HashMap::try_from(ebpf.map("BW_GROUPS")?).ok()?;
    m.get(&id, 0).ok()
}

fn attach_fentry(ebpf: &mut Ebpf, progs: &[&(&str, &str, &str, bool, bool)]) -> Result<(), String> {
    // The whole kernel BTF: fentry needs the target function's type id.
    let btf = Btf::from_sys_fs().map_err(|e| e.to_string())?;
    for &&(fentry, _, func, ret, _) in progs {
        let prog = ebpf
            .program_mut(fentry)
            .ok_or_else(|| format!("{fentry} not in the object"))?;
        let r = if ret {
            let p: &mut FExit = prog.try_into().map_err(|e: ProgramError| e.to_string())?;
            p.load(func, &btf).and_then(|()| p.attach().map(drop))
        } else {
            let p: &mut FEntry = prog.try_into().map_err(|e: ProgramError| e.to_string())?;
            p.load(func, &btf).and_then(|()| p.attach().map(drop))
        };
        r.map_err(|e| format!("{func}: {e}"))?;
    }
    Ok(())
}

fn attach_kprobes(
    ebpf: &mut Ebpf,
    progs: &[&(&str, &str, &str, bool, bool)],
) -> Result<(), String> {
    for &&(fentry, kprobe, func, ret, _) in progs {
        // A half-attached fentry set is detached first, so nothing counts twice.
        if let Some(p) = ebpf.program_mut(fentry) {
            if ret {
                if let Ok(p) = <&mut FExit>::try_from(p) {
                    let _ = p.unload();
                }
            } else if let Ok(p) = <&mut FEntry>::try_from(p) {
                let _ = p.unload();
            }
        }
        let prog: &mut KProbe = ebpf
            .program_mut(kprobe)
            .ok_or_else(|| format!("{kprobe} not in the object"))?
            .try_into()
            .map_err(|e: ProgramError| e.to_string())?;
        prog.load()
            .and_then(|()| prog.attach(func, 0).map(drop))
            .map_err(|e| format!("{func}: {e}"))?;
    }
    Ok(())
}

/// Complete periods after `*last` (updated), and those lost to the ring.
pub fn read_periods(ebpf: &Ebpf, last: &mut u64) -> BwRead {
    let mut out = BwRead::default();
    let state: Option<Array<&MapData, BwState>> =
        ebpf.map("BW_STATE").and_then(|m| Array::try_from(m).ok());
    let Some(seq) = state.and_then(|s| s.get(&0, 0).ok()).map(|s| s.seq) else {
        return out;
    };
    // The current period is still open; its unthrottles come with the next.
    let upto = seq.saturating_sub(1);
    let ring: Option<Array<&MapData, BwPeriod>> = ebpf
        .map("BW_PERIODS_RING")
        .and_then(|m| Array::try_from(m).ok());
    let Some(ring) = ring else { return out };
    let n = u64::from(BW_PERIODS);
    // One slot of slack: the timer may be writing the next record now.
    let lo = *last + 1;
    let first = lo.max(upto.saturating_sub(n - 2)).max(1);
    out.lost_periods = first.saturating_sub(lo);
    for k in first..=upto {
        match ring.get(&((k % n) as u32), 0) {
            Ok(p) if p.seq == k => out.periods.push(p),
            _ => out.lost_periods += 1,
        }
    }
    *last = (*last).max(upto);
    out
}

/// Per-thread held time now, with holds still open counted up to `now_ns`.
pub fn read_threads(ebpf: &Ebpf, now_ns: u64) -> BwThreads {
    let map: Option<HashMap<&MapData, u32, BwThread>> = ebpf
        .map("BW_THREADS")
        .and_then(|m| HashMap::try_from(m).ok());
    let Some(map) = map else { return Vec::new() };
    let mut v: BwThreads = map
        .iter()
        .filter_map(Result::ok)
        .map(|(tid, mut t)| {
            if t.since_ns != 0 {
                // The hold in progress, to now or to the refill that ends
                // it (the sched_switch path knows when that is).
                let end = if t.until_ns != 0 {
                    now_ns.min(t.until_ns)
                } else {
                    now_ns
                };
                t.since_ns = end.saturating_sub(t.since_ns);
            }
            (tid, t)
        })
        .collect();
    v.sort_by_key(|x| x.0);
    v
}

/// Byte offsets of the struct members the programs read, from raw BTF.
/// `cgroup_id` and `nr_cpus` are left 0 for the caller.
pub fn config_from(data: &[u8]) -> Result<BwConfig, BtfError> {
    let want: &[(&str, &[&str])] = &[
        (
            "cfs_rq",
            &[
                "tg",
                "rq",
                "curr",
                "h_nr_queued",
                "h_nr_running",
                "throttle_count",
                "throttled_limbo_list",
            ],
        ),
        ("task_group", &["css", "cfs_rq", "cfs_bandwidth", "parent"]),
        ("cfs_bandwidth", &["period_timer", "period"]),
        ("hrtimer", &["node"]),
        ("timerqueue_node", &["expires"]),
        ("sched_entity", &["cfs_rq", "on_rq"]),
        ("cgroup_subsys_state", &["cgroup"]),
        ("cgroup", &["kn"]),
        ("kernfs_node", &["id"]),
        ("rq", &["cpu"]),
        (
            "task_struct",
            &["throttle_node", "throttled", "pid", "tgid", "se"],
        ),
    ];
    let found = member_offsets(data, want)?;
    let get = |s: &str, m: &str| found.iter().find(|f| f.0 == s && f.1 == m).map(|f| f.2);
    let need = |s: &str, m: &str| {
        get(s, m).ok_or_else(|| BtfError::Missing(format!("{s}.{m} (CFS bandwidth programs)")))
    };
    let pid = need("task_struct", "pid")?;
    if need("task_struct", "tgid")? != pid + 4 {
        return Err(BtfError::Missing("task_struct.tgid right after pid".into()));
    }
    // Task-based throttling (6.18+) has both; older kernels neither.
    let (limbo, node) = match (
        get("cfs_rq", "throttled_limbo_list"),
        get("task_struct", "throttle_node"),
    ) {
        (Some(l), Some(n)) => (l, n),
        _ => (0, 0),
    };
    Ok(BwConfig {
        cgroup_id: 0,
        nr_cpus: 0,
        cfs_rq_tg: need("cfs_rq", "tg")?,
        cfs_rq_rq: need("cfs_rq", "rq")?,
        cfs_rq_curr: need("cfs_rq", "curr")?,
        cfs_rq_h_nr_queued: get("cfs_rq", "h_nr_queued")
            .or_else(|| get("cfs_rq", "h_nr_running"))
            .ok_or_else(|| BtfError::Missing("cfs_rq.h_nr_queued".into()))?,
        cfs_rq_throttle_count: need("cfs_rq", "throttle_count")?,
        cfs_rq_limbo: limbo,
        tg_cfs_rq: need("task_group", "cfs_rq")?,
        tg_period_timer: need("task_group", "cfs_bandwidth")?
            + need("cfs_bandwidth", "period_timer")?,
        tg_cgroup: need("task_group", "css")? + need("cgroup_subsys_state", "cgroup")?,
        cgroup_kn: need("cgroup", "kn")?,
        kn_id: need("kernfs_node", "id")?,
        rq_cpu: need("rq", "cpu")?,
        task_throttle_node: node,
        task_throttled: if node == 0 {
            0
        } else {
            get("task_struct", "throttled").unwrap_or(0)
        },
        task_pid: pid,
        mode: 0,
        task_cfs_rq: need("task_struct", "se")? + need("sched_entity", "cfs_rq")?,
        tg_parent: need("task_group", "parent")?,
        tg_period: need("task_group", "cfs_bandwidth")? + need("cfs_bandwidth", "period")?,
        hrtimer_expires: need("hrtimer", "node")? + need("timerqueue_node", "expires")?,
        se_on_rq: need("sched_entity", "on_rq")?,
    })
}

/// Whether the kernel has task-based throttling (per-thread held time).
pub fn task_based(c: &BwConfig) -> bool {
    c.cfs_rq_limbo != 0 && c.task_throttle_node != 0 && c.task_throttled != 0
}

/// (struct, member, byte offset) for each wanted member of the first
/// struct of each name that has members, by a walk over the raw type
/// records (layout as in [`crate::kernel::btf::tracepoint_type_ids`]).
fn member_offsets(
    data: &[u8],
    want: &[(&str, &[&str])],
) -> Result<Vec<(String, String, u32)>, BtfError> {
    let bad = |what: &str| BtfError::Parse(format!("raw BTF: {what}"));
    let u32_at = |at: usize| crate::kernel::btf::raw_u32(data, at);
    let (types, strings) = crate::kernel::btf::raw_sections(data)?;
    let (start, end) = (types.start, types.end);
    let name = |off: u32| -> &[u8] {
        let s = strings.get(off as usize..).unwrap_or(&[]);
        &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())]
    };
    let mut out = Vec::new();
    let mut done: Vec<&str> = Vec::new();
    let mut at = start;
    while at < end {
        let (name_off, info) = match (u32_at(at), u32_at(at + 4)) {
            (Some(n), Some(i)) => (n, i),
            _ => return Err(bad("truncated type record")),
        };
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kflag = info >> 31 != 0;
        let extra = match kind {
            1 | 14 | 17 => 4,
            3 => 12,
            4 | 5 | 15 | 19 => 12 * vlen,
            6 | 13 => 8 * vlen,
            k if k <= 19 => 0,
            k => return Err(bad(&format!("unknown kind {k}"))),
        };
        if kind == 4 && vlen > 0 {
            let n = name(name_off);
            if let Some((s, members)) = want.iter().find(|(s, _)| s.as_bytes() == n)
                && !done.contains(s)
            {
                done.push(s);
                for i in 0..vlen {
                    let m = at + 12 + 12 * i;
                    let (Some(mn), Some(off)) = (u32_at(m), u32_at(m + 8)) else {
                        return Err(bad("truncated member"));
                    };
                    let bits = if kflag { off & 0xff_ffff } else { off };
                    let mname = name(mn);
                    if let Some(w) = members.iter().find(|w| w.as_bytes() == mname) {
                        out.push((s.to_string(), w.to_string(), bits / 8));
                    }
                }
            }
        }
        at += 12 + extra;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_kernel_has_the_bandwidth_fields() {
        let Ok(data) = std::fs::read(crate::kernel::btf::VMLINUX_BTF) else {
            eprintln!("no kernel BTF here: skipped");
            return;
        };
        let c = config_from(&data).expect("offsets");
        assert_eq!(c.tg_cgroup, 0, "css is task_group's first member");
        assert!(c.cfs_rq_tg > 0 && c.rq_cpu > 0 && c.kn_id > 0, "{c:?}");
        assert!(c.task_pid > 0);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(config_from(b"nope").is_err());
    }
}
