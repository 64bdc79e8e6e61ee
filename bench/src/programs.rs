//! Which of affin-trace's BPF programs are loaded, and by which process:
//! another affin-trace running (e.g. the root tests) would distort the
//! figures, and none may stay loaded after the bench.

use super::parse::{MapInfo, Prog, is_ours};
use super::process::check_interrupted;
use anyhow::{Context as _, Result, bail};
use procfs::process::{FDTarget, all_processes};
use serde::de::DeserializeOwned;
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// bpftool, pinned away from CPU 0 (the benchmark's CPU) when possible.
pub struct Bpftool {
    pub argv: Vec<PathBuf>,
}

impl Bpftool {
    /// `bpftool <object> show --json`, parsed.
    fn show<T: DeserializeOwned>(&self, object: &str) -> Result<Vec<T>> {
        let out = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .args([object, "show", "--json"])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("could not run bpftool")?;
        if !out.status.success() {
            bail!("bpftool {object} show failed ({})", out.status);
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("bpftool {object} show: expected a JSON array"))
    }

    /// Every map, with the kernel memory charged for it.
    pub fn maps(&self) -> Result<Vec<MapInfo>> {
        self.show("map")
    }

    /// affin-trace's programs (btf_sched_*, floor_*), whoever holds them.
    pub fn ours(&self) -> Result<Vec<Prog>> {
        let progs: Vec<Prog> = self.show("prog")?;
        Ok(progs.into_iter().filter(|p| is_ours(&p.name)).collect())
    }
}

/// Polls, every 200 ms until `stop`, the programs `pid` holds; the last
/// figures of each.
pub fn poll_stats(bpftool: &Bpftool, pid: u32, stop: &AtomicBool) -> Vec<Prog> {
    let mut last: Vec<Prog> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        for p in programs_of(bpftool, pid).unwrap_or_default() {
            last.retain(|q| q.id != p.id);
            last.push(p);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    last
}

/// Who holds BPF programs open: (pid, prog id) for every program or link fd
/// of every process (from /proc/<pid>/fdinfo).
pub fn prog_holders() -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    for p in all_processes().into_iter().flatten().flatten() {
        for fd in p.fd().into_iter().flatten().flatten() {
            if !matches!(&fd.target, FDTarget::AnonInode(k) if k.starts_with("bpf")) {
                continue;
            }
            let info = std::fs::read_to_string(format!("/proc/{}/fdinfo/{}", p.pid, fd.fd));
            let id = info.ok().and_then(|s| {
                let v = s.lines().find_map(|l| l.strip_prefix("prog_id:"))?;
                v.trim().parse().ok()
            });
            out.extend(id.map(|id| (p.pid as u32, id)));
        }
    }
    out
}

/// affin-trace's programs (by name) held by a live process other than
/// `except`: another affin-trace running, which distorts the figures.
pub fn foreign_programs(bpftool: &Bpftool, except: Option<u32>) -> Result<Vec<String>> {
    let ours = bpftool.ours()?;
    if ours.is_empty() {
        return Ok(Vec::new());
    }
    let mut found: Vec<String> = prog_holders()
        .into_iter()
        .filter(|(pid, _)| Some(*pid) != except)
        .filter_map(|(pid, id)| {
            let p = ours.iter().find(|p| p.id == id)?;
            let cmd = procfs::process::Process::new(pid as i32).and_then(|p| p.cmdline());
            let cmd = cmd.unwrap_or_default().join(" ");
            Some(format!("{} (id {id}) held by pid {pid} `{cmd}`", p.name))
        })
        .collect();
    found.sort();
    found.dedup();
    Ok(found)
}

/// The programs `pid` holds, with their current bpf_stats.
pub fn programs_of(bpftool: &Bpftool, pid: u32) -> Result<Vec<Prog>> {
    let ids: Vec<u64> = (prog_holders().into_iter())
        .filter_map(|(p, id)| (p == pid).then_some(id))
        .collect();
    let mut ours = bpftool.ours()?;
    ours.retain(|p| ids.contains(&p.id));
    for p in &mut ours {
        p.verified_insns = verified_insns(p.id);
    }
    Ok(ours)
}

/// The verifier's count of instructions processed to load program `id`
/// (`bpf_prog_info.verified_insns`, Linux 5.16+), which bpftool 7.1 does
/// not print: BPF_PROG_GET_FD_BY_ID, then BPF_OBJ_GET_INFO_BY_FD
/// (include/uapi/linux/bpf.h). None where the kernel refuses either.
pub fn verified_insns(id: u64) -> Option<u32> {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// bpf(2) with `attr`, the command's `union bpf_attr` (the rest zero).
    /// Safety: what pointers `attr` holds must be valid for the command.
    unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> libc::c_long {
        // SAFETY: the kernel reads at most size_of::<T>() bytes of `attr`.
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>()) }
    }
    /// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD (the rest zero).
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
        _rest: [u64; 14],
    }
    // `struct bpf_prog_info` is 232 bytes on 6.x; `verified_insns` is the
    // u32 at byte 216 (checked against /sys/kernel/btf/vmlinux).
    let mut info = [0u32; 58];
    // For BPF_PROG_GET_FD_BY_ID: prog_id, next_id, open_flags, the rest zero.
    let mut id_attr = [0u32; 32];
    id_attr[0] = u32::try_from(id).ok()?;
    // SAFETY: the attr holds no pointer.
    let fd = unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut id_attr) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
        _rest: [0; 14],
    };
    // SAFETY: the kernel writes at most info_len bytes to `info`.
    let r = unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) };
    (r == 0 && attr.info_len as usize >= 220).then_some(info[54])
}

/// Waits (up to a minute) until no other process holds affin-trace
/// programs: another affin-trace running would distort the figures.
pub fn wait_no_foreign(bpftool: &Bpftool) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(60);
    for round in 0.. {
        let foreign = foreign_programs(bpftool, None)?.join("; ");
        if foreign.is_empty() {
            break;
        }
        check_interrupted()?;
        if Instant::now() >= end {
            bail!(
                "another affin-trace kept its programs loaded for a minute: {foreign}; stop it \
                 (or its tests) and rerun"
            );
        }
        if round == 0 {
            println!("bench: waiting for another affin-trace to finish: {foreign}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Fails unless every btf_sched_*/floor_* program is gone, or held by a
/// live process that is not the bench's (all of the bench's are reaped by
/// now): such a one is another affin-trace, reported but not the bench's.
pub fn leftover_check(bpftool: &Bpftool) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let left = bpftool
            .ours()
            .context("could not check for leftover programs")?;
        let holders = prog_holders();
        let (foreign, orphan): (Vec<Prog>, Vec<Prog>) =
            (left.into_iter()).partition(|p| holders.iter().any(|(_, id)| *id == p.id));
        if orphan.is_empty() && foreign.is_empty() {
            println!("bench: no btf_sched_*/floor_* program left loaded");
            return Ok(());
        }
        if orphan.is_empty() {
            println!(
                "bench: WARNING: btf_sched_*/floor_* programs of another process are loaded \
                 (not the bench's): {}",
                foreign_programs(bpftool, None)?.join("; ")
            );
            return Ok(());
        }
        // Programs are freed a moment after their last fd closes.
        if Instant::now() >= end {
            let list: Vec<String> = orphan
                .iter()
                .map(|p| format!("{} (id {})", p.name, p.id))
                .collect();
            bail!(
                "BPF programs still loaded after the run and held by no process: {} \
                 (`bpftool prog list`; pinned or leaked)",
                list.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
