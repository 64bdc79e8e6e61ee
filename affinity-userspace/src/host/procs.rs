//! What /proc says about the targets, read with the `procfs` crate (which
//! parses /proc/<pid>/stat correctly when comm holds spaces or ')').
//!
//! Used to find a target's threads before tracing starts, to give them their
//! `sum_exec_runtime` base (/proc/<pid>/task/<tid>/schedstat), to add the
//! slice of a thread that is on a CPU when an interval is read, and for
//! process facts (RSS, start time) and system-wide per-CPU busy time
//! (/proc/stat). Every read is under a [`Root`] (`/` on the live system).

use std::collections::BTreeMap;

use procfs::{FromReadSI as _, process::Process};

use crate::host::root::Root;
use crate::model::snapshot::TaskNow;

/// The process `pid` under `root` (procfs's own `Process::new` reads `/proc`).
fn process(root: &Root, pid: u32) -> procfs::ProcResult<Process> {
    Process::new_with_root(root.proc_pid(pid))
}

/// A thread as /proc shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadInfo {
    /// Thread id.
    pub tid: u32,
    /// Thread name (raw bytes, NUL padded to 16).
    pub comm: [u8; 16],
    /// `se.sum_exec_runtime` (ns).
    pub sum_exec_ns: u64,
    /// `sched_info.run_delay` (ns): its run-queue waits so far.
    pub run_delay_ns: u64,
}

/// Why a target cannot be traced.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// No such process or thread.
    #[error("no such process: {0}")]
    NoSuchProcess(u32),
    /// No process has that name.
    #[error("no process named {} (comm, as in pgrep -x){}", shown(.0), long_name_hint(.0))]
    NoSuchComm(String),
    /// Not a cgroup directory.
    #[error(
        "{0} is not a cgroup directory (no cgroup.procs): give the cgroup's path under /sys/fs/cgroup"
    )]
    NoSuchCgroup(String),
    /// The cgroup is empty.
    #[error("cgroup {0} has no processes")]
    EmptyCgroup(String),
    /// No container of that pod on this node.
    #[error(
        "no container of pod {0} on this node: names come from the container runtime's OCI \
         bundles (/run/containerd, /run/containers/storage); without them, give the container \
         with --container ID or --cgroup PATH"
    )]
    NoSuchPod(String),
    /// No container with that id (prefix).
    #[error("no container {0} on this node (a kubepods cgroup whose id starts with it)")]
    NoSuchContainer(String),
    /// The prefix names several containers.
    #[error("container id prefix {given} matches {n} containers: give more of the id")]
    AmbiguousContainer { given: String, n: usize },
    /// It is a zombie: nothing left to trace.
    #[error("process {0} is a zombie (exited, not yet reaped): nothing to trace")]
    Zombie(u32),
}

/// Longest comm: TASK_COMM_LEN is 16 with the NUL.
pub const COMM_MAX: usize = 15;

/// A name as an error shows it: quoted, and cut short (a 100 KB argument
/// is not echoed back).
fn shown(name: &str) -> String {
    const MAX: usize = 64;
    if name.chars().count() <= MAX {
        format!("{name:?}")
    } else {
        let head: String = name.chars().take(MAX).collect();
        format!("{head:?}... ({} bytes)", name.len())
    }
}

fn long_name_hint(name: &str) -> String {
    if name.len() > COMM_MAX {
        format!(
            "; the kernel keeps only the first {COMM_MAX} bytes of a name, so a longer one matches a process whose name is those bytes and whose executable or argv[0] has the full name"
        )
    } else {
        String::new()
    }
}

/// True when `pid`'s comm `comm` answers to `name`: equal, or, for a name
/// longer than the kernel keeps, its first 15 bytes with the full name as
/// the basename of argv[0] or of the executable (what pkill/killall do).
fn comm_matches(pid: &Process, comm: &str, name: &str) -> bool {
    if comm == name {
        return true;
    }
    if name.len() <= COMM_MAX || !name.as_bytes().starts_with(comm.as_bytes()) {
        return false;
    }
    if comm.len() < COMM_MAX.min(name.len()) {
        return false;
    }
    let base = |p: &std::path::Path| {
        p.file_name()
            .is_some_and(|f| f.as_encoded_bytes() == name.as_bytes())
    };
    pid.cmdline()
        .ok()
        .and_then(|c| c.into_iter().next())
        .is_some_and(|a| base(std::path::Path::new(&a)))
        || pid.exe().is_ok_and(|e| base(&e))
}

/// The process (thread group) a thread id belongs to.
///
/// Read from the raw bytes of /proc/<tid>/status, not procfs's `Status`:
/// that parser wants the whole file as UTF-8, and its `Name:` line holds
/// whatever bytes the thread named itself with (`prctl(PR_SET_NAME,
/// "\xff")`), which made such a process "no such process".
pub fn tgid_of(root: &Root, tid: u32) -> Result<u32, TargetError> {
    let status = std::fs::read(root.join(format!("proc/{tid}/status")))
        .map_err(|_| TargetError::NoSuchProcess(tid))?;
    parse_tgid(&status).ok_or(TargetError::NoSuchProcess(tid))
}

/// `pid`'s name (/proc/<pid>/comm, lossy UTF-8), if it still runs.
pub fn comm(root: &Root, pid: u32) -> Option<String> {
    let b = std::fs::read(root.join(format!("proc/{pid}/comm"))).ok()?;
    Some(String::from_utf8_lossy(b.strip_suffix(b"\n").unwrap_or(&b)).into_owned())
}

/// `Tgid:` of a /proc/<pid>/status text, whatever bytes the name holds.
pub fn parse_tgid(status: &[u8]) -> Option<u32> {
    status
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"Tgid:"))
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
}

/// Checks that `pid` is a live process and returns its tgid (a thread id
/// given as `--pid` resolves to its process).
pub fn check_target(root: &Root, pid: u32) -> Result<u32, TargetError> {
    let p = process(root, pid).map_err(|_| TargetError::NoSuchProcess(pid))?;
    let stat = p.stat().map_err(|_| TargetError::NoSuchProcess(pid))?;
    if stat.state == 'Z' {
        return Err(TargetError::Zombie(pid));
    }
    tgid_of(root, pid)
}

/// Start time of `pid` (clock ticks since boot, /proc/<pid>/stat field 22):
/// with the pid, it names one process for good.
pub fn start_time(root: &Root, pid: u32) -> Result<u64, TargetError> {
    process(root, pid)
        .and_then(|p| p.stat())
        .map(|s| s.starttime)
        .map_err(|_| TargetError::NoSuchProcess(pid))
}

/// True for kernel threads (PF_KTHREAD): they have no user affinity to own.
pub fn is_kernel_thread(root: &Root, pid: u32) -> bool {
    const PF_KTHREAD: u32 = 0x0020_0000;
    process(root, pid)
        .and_then(|p| p.stat())
        .map(|s| s.flags & PF_KTHREAD != 0)
        .unwrap_or(false)
}

/// Processes whose comm is exactly `name` (as `pgrep -x`), sorted.
pub fn pids_by_comm(root: &Root, name: &str) -> Vec<u32> {
    let Ok(all) = procfs::process::all_processes_with_root(root.proc()) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = all
        .filter_map(Result::ok)
        .filter(|p| {
            p.stat()
                .is_ok_and(|s| s.state != 'Z' && comm_matches(p, &s.comm, name))
        })
        .map(|p| p.pid as u32)
        .collect();
    pids.sort_unstable();
    pids
}

/// Processes in a cgroup directory (its `cgroup.procs`), sorted.
pub fn pids_in_cgroup(dir: &std::path::Path) -> Result<Vec<u32>, TargetError> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs"))
        .map_err(|_| TargetError::NoSuchCgroup(dir.display().to_string()))?;
    let mut pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// The inode number of a directory (a cgroup's kernfs id), 0 when it
/// cannot be read.
pub fn dir_inode(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(dir).map_or(0, |m| m.ino())
}

/// True while `pid` exists and is not a zombie.
pub fn alive(root: &Root, pid: u32) -> bool {
    process(root, pid)
        .and_then(|p| p.stat())
        .map(|s| s.state != 'Z' && s.state != 'X')
        .unwrap_or(false)
}

/// Threads of `pid` with their names and on-CPU totals. Threads that vanish
/// while being read are skipped.
pub fn threads(root: &Root, pid: u32) -> Vec<ThreadInfo> {
    let Ok(p) = process(root, pid) else {
        return Vec::new();
    };
    let Ok(tasks) = p.tasks() else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| {
            let st = t.schedstat().ok()?;
            let (sum_exec_ns, run_delay_ns) = (st.sum_exec_runtime, st.run_delay);
            // The `comm` file, not `stat`: the kernel builds all of stat's
            // 52 fields for it, which for 1,000 threads is most of the seed.
            // Raw bytes: a name need not be UTF-8.
            let comm = std::fs::read(root.join(format!("proc/{pid}/task/{}/comm", t.tid)))
                .map(|b| {
                    let mut out = [0u8; 16];
                    for (o, c) in out
                        .iter_mut()
                        .zip(b.strip_suffix(b"\n").unwrap_or(&b))
                        .take(15)
                    {
                        *o = *c;
                    }
                    out
                })
                .unwrap_or_default();
            Some(ThreadInfo {
                tid: t.tid as u32,
                comm,
                sum_exec_ns,
                run_delay_ns,
            })
        })
        .collect()
}

/// The thread ids of `pid`: a bare listing of /proc/<pid>/task, read in one
/// go. Apply and revert list a process again and again while its threads
/// come and go; reading files per thread between the directory reads (as
/// [`threads`] does) stretches each listing, and the kernel lists a task
/// directory by position, so the longer a listing the more live threads it
/// misses (seen: ~50 of 1,000 long-lived threads missed by every one of 20
/// listings while ~20,000 threads a second came and went).
pub fn tids(root: &Root, pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(root.join(format!("proc/{pid}/task"))) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// `se.sum_exec_runtime` of one thread, if it still exists.
pub fn thread_sum_exec(root: &Root, pid: u32, tid: u32) -> Option<u64> {
    process(root, pid)
        .ok()?
        .task_from_tid(tid as i32)
        .ok()?
        .schedstat()
        .ok()
        .map(|s| s.sum_exec_runtime)
}

/// Current name of a thread.
pub fn thread_comm(root: &Root, pid: u32, tid: u32) -> Option<String> {
    let t = process(root, pid).ok()?.task_from_tid(tid as i32).ok()?;
    t.stat().ok().map(|s| s.comm)
}

/// The CPU thread `tid` of process `tgid` last ran on and its name, from
/// `<root>/proc/<tgid>/task/<tid>/stat` fields 39 and 2 (proc(5):
/// `processor`, `comm`); `None` when the thread is gone. The procfs crate
/// parses the line, so a name holding spaces or ')' does not shift the
/// fields.
pub fn task_now(root: &Root, tgid: u32, tid: u32) -> Option<TaskNow> {
    let stat = process(root, tgid)
        .ok()?
        .task_from_tid(i32::try_from(tid).ok()?)
        .ok()?
        .stat()
        .ok()?;
    Some(TaskNow {
        cpu: stat.processor.and_then(|p| u32::try_from(p).ok())?,
        comm: stat.comm,
    })
}

/// Resident set size in bytes (0 if gone).
pub fn rss_bytes(root: &Root, pid: u32) -> u64 {
    process(root, pid)
        .and_then(|p| p.stat())
        .map(|s| s.rss * procfs::page_size())
        .unwrap_or(0)
}

/// MemTotal in bytes (0 when unknown).
pub fn mem_total_bytes(root: &Root) -> u64 {
    std::fs::read_to_string(root.join("proc/meminfo"))
        .ok()
        .and_then(|t| parse_mem_total(&t))
        .unwrap_or(0)
}

/// `MemTotal:  24684084 kB` from /proc/meminfo, in bytes. Our own few
/// lines rather than `procfs::Meminfo`, which `cargo xtask fuzz` showed
/// panicking on a field name ending in a multi-byte character (it slices
/// `field[..len - 1]`) and on values whose unit multiplication overflows
/// (procfs-core 0.17, meminfo.rs).
pub fn parse_mem_total(text: &str) -> Option<u64> {
    let rest = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let mut it = rest.split_whitespace();
    let value: u64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// Busy (non-idle, non-iowait) ns per CPU since boot, from /proc/stat.
pub fn cpu_busy_ns(root: &Root) -> BTreeMap<u32, u64> {
    CpuTimes::read(root).busy
}

/// Per CPU, from one read of /proc/stat (ns since boot, or over a window
/// with [`CpuTimes::since`]); empty maps when it cannot be read.
#[derive(Clone, Debug, Default)]
pub struct CpuTimes {
    /// Busy: not idle, not iowait (steal included: the CPU was not free).
    pub busy: BTreeMap<u32, u64>,
    /// Hypervisor steal: time this VM's CPU wanted to run and its host ran
    /// something else.
    pub steal: BTreeMap<u32, u64>,
}

impl CpuTimes {
    /// Since boot.
    pub fn read(root: &Root) -> Self {
        let mut out = Self::default();
        let Ok(ks) =
            procfs::KernelStats::from_file(root.join("proc/stat"), procfs::current_system_info())
        else {
            return out;
        };
        let ns_per_tick = 1_000_000_000 / procfs::ticks_per_second().max(1);
        for (cpu, t) in ks.cpu_time.iter().enumerate() {
            let steal = t.steal.unwrap_or(0);
            let busy =
                t.user + t.nice + t.system + t.irq.unwrap_or(0) + t.softirq.unwrap_or(0) + steal;
            out.busy.insert(cpu as u32, busy * ns_per_tick);
            out.steal.insert(cpu as u32, steal * ns_per_tick);
        }
        out
    }

    /// From `self` (read before) to now.
    pub fn since(&self, root: &Root) -> Self {
        let now = Self::read(root);
        Self {
            busy: busy_delta(&self.busy, &now.busy),
            steal: busy_delta(&self.steal, &now.steal),
        }
    }
}

/// Element-wise `after - before`.
pub fn busy_delta(before: &BTreeMap<u32, u64>, after: &BTreeMap<u32, u64>) -> BTreeMap<u32, u64> {
    after
        .iter()
        .map(|(cpu, a)| (*cpu, a.saturating_sub(*before.get(cpu).unwrap_or(&0))))
        .collect()
}

/// A comm string as the kernel's NUL-padded 16 bytes.
pub fn comm_bytes(s: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(s.bytes().take(15)) {
        *o = b;
    }
    out
}

/// The raw bytes of a NUL-padded comm as hex when they are not valid
/// UTF-8 (JSON `comm_bytes`), else None.
pub fn comm_hex(b: &[u8; 16]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    std::str::from_utf8(&b[..end])
        .is_err()
        .then(|| b[..end].iter().map(|c| format!("{c:02x}")).collect())
}

/// The kernel's NUL-padded comm as a string.
pub fn comm_str(b: &[u8; 16]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_name_error_says_why_and_does_not_echo_it_all() {
        let e = TargetError::NoSuchComm("x".repeat(100_000)).to_string();
        assert!(e.len() < 500, "{} bytes", e.len());
        assert!(
            e.contains("first 15 bytes") && e.contains("100000 bytes"),
            "{e}"
        );
        let e = TargetError::NoSuchComm("short".into()).to_string();
        assert_eq!(e, "no process named \"short\" (comm, as in pgrep -x)");
    }

    #[test]
    fn a_name_longer_than_comm_matches_its_own_process() {
        // This test binary's name is longer than 15 bytes.
        let me = std::env::current_exe().unwrap();
        let full = me.file_name().unwrap().to_str().unwrap().to_string();
        assert!(full.len() > COMM_MAX, "{full}");
        let pids = pids_by_comm(&Root::default(), &full);
        assert!(pids.contains(&std::process::id()), "{pids:?}");
        assert!(pids_by_comm(&Root::default(), &format!("{full}-not")).is_empty());
    }

    #[test]
    fn tgid_is_read_whatever_bytes_the_name_holds() {
        let status =
            b"Name:\t\xff\xfe\nUmask:\t0022\nState:\tR (running)\nTgid:\t4242\nPid:\t4243\n";
        assert_eq!(parse_tgid(status), Some(4242));
        assert_eq!(parse_tgid(b"Name:\tx\n"), None);
        let mut raw = [0u8; 16];
        raw[0] = 0xff;
        assert_eq!(comm_hex(&raw).as_deref(), Some("ff"));
        assert_eq!(comm_hex(&comm_bytes("worker")), None);
    }

    /// The input of the proc_misc crash (`cargo xtask fuzz`), shortened: a
    /// field name ending in a multi-byte character broke procfs's Meminfo.
    #[test]
    fn mem_total_survives_what_broke_procfs_meminfo() {
        let text =
            "MemTotal:       24684084 kB\nMemFree\u{e9}:  1 kB\nBig: 18446744073709551615 GB\n";
        assert_eq!(parse_mem_total(text), Some(24684084 * 1024));
        assert_eq!(parse_mem_total("MemTotal: 18446744073709551615 kB\n"), None);
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: 12 MB\n"), None);
        let real = std::fs::read_to_string("/proc/meminfo").unwrap();
        assert!(parse_mem_total(&real).is_some_and(|b| b > 1 << 20));
    }

    /// A stat line as Linux 6.x writes it (52 fields), for a thread whose
    /// name holds a space and a ')', last run on CPU 3.
    fn stat_line(tid: u32) -> String {
        let mut f: Vec<String> = vec![tid.to_string(), "(we) ird)".into(), "R".into()];
        // Fields 4..=52; 39 (processor) is index 38.
        f.extend((4..=52).map(|i| if i == 39 { "3".into() } else { "0".into() }));
        f.join(" ") + "\n"
    }

    #[test]
    fn task_now_reads_cpu_and_name_from_the_task_stat() {
        let dir = tempfile::tempdir().expect("tempdir");
        let task = dir.path().join("proc/4242/task/4243");
        std::fs::create_dir_all(&task).expect("mkdir");
        std::fs::write(task.join("stat"), stat_line(4243)).expect("write");
        let root = Root::new(dir.path());
        let now = task_now(&root, 4242, 4243).expect("read");
        assert_eq!(now.cpu, 3);
        assert_eq!(now.comm, "we) ird");
        assert_eq!(task_now(&root, 4242, 4244), None, "an exited thread");
        assert_eq!(task_now(&root, 4241, 4243), None, "an exited process");
    }

    #[test]
    fn task_now_of_a_live_thread_is_an_online_cpu_and_its_name() {
        let now = std::thread::Builder::new()
            .name("watch-probe".into())
            .spawn(|| {
                let tid = nix::unistd::gettid().as_raw() as u32;
                task_now(&Root::host(), std::process::id(), tid)
            })
            .expect("spawn")
            .join()
            .expect("join")
            .expect("its stat");
        assert_eq!(now.comm, "watch-probe");
        let online = crate::model::cpulist::parse(
            &std::fs::read_to_string("/sys/devices/system/cpu/online").expect("online"),
        )
        .expect("cpu list");
        assert!(online.contains(&now.cpu), "{} not in {online:?}", now.cpu);
    }

    #[test]
    fn comm_round_trips_and_truncates_to_15_bytes() {
        assert_eq!(comm_str(&comm_bytes("a) (b")), "a) (b");
        assert_eq!(
            comm_str(&comm_bytes("0123456789abcdefXYZ")),
            "0123456789abcde"
        );
    }

    #[test]
    fn busy_delta_is_per_cpu_and_never_negative() {
        let a = BTreeMap::from([(0, 10), (1, 50)]);
        let b = BTreeMap::from([(0, 25), (1, 40)]);
        assert_eq!(busy_delta(&a, &b), BTreeMap::from([(0, 15), (1, 0)]));
    }

    #[test]
    fn this_process_is_found_with_its_threads() {
        let me = std::process::id();
        let h = Root::host();
        assert_eq!(check_target(&h, me).unwrap(), me);
        let ts = threads(&h, me);
        assert!(ts.iter().any(|t| t.tid == me), "{ts:?}");
        assert!(alive(&h, me));
    }

    #[test]
    fn own_start_time_is_stable_and_comm_finds_us() {
        let me = std::process::id();
        let h = Root::host();
        assert_eq!(start_time(&h, me).unwrap(), start_time(&h, me).unwrap());
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert!(pids_by_comm(&h, comm.trim()).contains(&me));
        assert!(pids_by_comm(&h, "no-such-comm-xyz").is_empty());
        assert!(!is_kernel_thread(&h, me));
    }

    #[test]
    fn a_missing_cgroup_is_an_error() {
        let e = pids_in_cgroup(std::path::Path::new("/nonexistent/cg")).unwrap_err();
        assert!(e.to_string().contains("not a cgroup directory"), "{e}");
    }

    #[test]
    fn a_missing_pid_is_no_such_process() {
        // pid_max is at most 2^22, so this pid cannot exist.
        let err = check_target(&Root::host(), 4_194_304 + 7).unwrap_err();
        assert_eq!(err.to_string(), "no such process: 4194311");
    }
}
