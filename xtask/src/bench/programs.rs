//! Which of affin-trace's BPF programs are loaded, and by which process:
//! another affin-trace running (e.g. the root tests) would distort the
//! figures, and none may stay loaded after the bench.

use super::parse::{MapInfo, Prog, is_ours, parse_maps, parse_progs};
use super::sys::check_interrupted;
use anyhow::{Context as _, Result, bail};
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// bpftool, pinned away from CPU 0 (the benchmark's CPU) when possible.
#[derive(Clone)]
pub struct Bpftool {
    pub argv: Vec<PathBuf>,
}

impl Bpftool {
    /// `bpftool <object> show --json`'s output.
    fn show(&self, object: &str) -> Result<String> {
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
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn progs(&self) -> Result<Vec<Prog>> {
        parse_progs(&self.show("prog")?)
    }

    /// Every map, with the kernel memory charged for it.
    pub fn maps(&self) -> Result<Vec<MapInfo>> {
        parse_maps(&self.show("map")?)
    }

    pub fn ours(&self) -> Result<Vec<Prog>> {
        Ok(self
            .progs()?
            .into_iter()
            .filter(|p| is_ours(&p.name))
            .collect())
    }
}

/// Polls bpftool while a run goes on; keeps the last figures per program.
pub struct StatsPoller {
    stop: Arc<AtomicBool>,
    last: Arc<Mutex<Vec<Prog>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl StatsPoller {
    /// Polls the programs that process `pid` holds.
    pub fn start(bpftool: &Bpftool, pid: u32) -> StatsPoller {
        let stop = Arc::new(AtomicBool::new(false));
        let last: Arc<Mutex<Vec<Prog>>> = Arc::default();
        let (s, l, b) = (stop.clone(), last.clone(), bpftool.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Ok(progs) = programs_of(&b, pid) {
                    let mut l = l.lock().unwrap_or_else(|e| e.into_inner());
                    for p in progs {
                        l.retain(|q| q.id != p.id);
                        l.push(p);
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        StatsPoller {
            stop,
            last,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> Vec<Prog> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for StatsPoller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Who holds BPF programs open: (pid, prog id) for every program or link fd
/// of every process (from /proc/<pid>/fdinfo).
pub fn prog_holders() -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let is_bpf = std::fs::read_link(fd.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("anon_inode:bpf"));
            if !is_bpf {
                continue;
            }
            let info = p.path().join("fdinfo").join(fd.file_name());
            let id = std::fs::read_to_string(info).ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("prog_id:"))
                    .and_then(|v| v.trim().parse().ok())
            });
            if let Some(id) = id {
                out.push((pid, id));
            }
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
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .trim()
                        .to_string()
                })
                .unwrap_or_default();
            Some(format!("{} (id {id}) held by pid {pid} `{cmd}`", p.name))
        })
        .collect();
    found.sort();
    found.dedup();
    Ok(found)
}

/// The programs `pid` holds, with their current bpf_stats.
pub fn programs_of(bpftool: &Bpftool, pid: u32) -> Result<Vec<Prog>> {
    let ids: Vec<u64> = prog_holders()
        .into_iter()
        .filter(|(p, _)| *p == pid)
        .map(|(_, id)| id)
        .collect();
    Ok(bpftool
        .ours()?
        .into_iter()
        .filter(|p| ids.contains(&p.id))
        .map(|mut p| {
            p.verified_insns = verified_insns(p.id);
            p
        })
        .collect())
}

/// The verifier's count of instructions processed to load program `id`
/// (`bpf_prog_info.verified_insns`, Linux 5.16+), which bpftool 7.1 does
/// not print: BPF_PROG_GET_FD_BY_ID, then BPF_OBJ_GET_INFO_BY_FD
/// (include/uapi/linux/bpf.h). None where the kernel refuses either.
pub fn verified_insns(id: u64) -> Option<u32> {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// `union bpf_attr` for BPF_PROG_GET_FD_BY_ID (the rest zero).
    #[repr(C)]
    struct IdAttr {
        prog_id: u32,
        next_id: u32,
        open_flags: u32,
        _rest: [u32; 29],
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
    let mut id_attr = IdAttr {
        prog_id: u32::try_from(id).ok()?,
        next_id: 0,
        open_flags: 0,
        _rest: [0; 29],
    };
    // SAFETY: bpf(2) with a zeroed attr of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            &raw mut id_attr,
            size_of::<IdAttr>(),
        )
    };
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
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            size_of::<InfoAttr>(),
        )
    };
    (r == 0 && attr.info_len as usize >= 220).then_some(info[54])
}

/// Waits (up to a minute) until no other process holds affin-trace
/// programs: another affin-trace running would distort the figures.
pub fn wait_no_foreign(bpftool: &Bpftool) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(60);
    let mut said = false;
    loop {
        let foreign = foreign_programs(bpftool, None)?;
        if foreign.is_empty() {
            return Ok(());
        }
        check_interrupted()?;
        if Instant::now() >= end {
            bail!(
                "another affin-trace kept its programs loaded for a minute: {}; stop it (or \
                 its tests) and rerun",
                foreign.join("; ")
            );
        }
        if !said {
            println!(
                "bench: waiting for another affin-trace to finish: {}",
                foreign.join("; ")
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
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
        let (foreign, orphan): (Vec<Prog>, Vec<Prog>) = left
            .into_iter()
            .partition(|p| holders.iter().any(|(_, id)| *id == p.id));
        if orphan.is_empty() {
            if foreign.is_empty() {
                println!("bench: no btf_sched_*/floor_* program left loaded");
            } else {
                println!(
                    "bench: WARNING: btf_sched_*/floor_* programs of another process are \
                     loaded (not the bench's): {}",
                    foreign_programs(bpftool, None)?.join("; ")
                );
            }
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
