//! Phase 8: the node agent's own cost at fleet scale (issue 15, "Overhead
//! and soak"). SERVE_CGROUPS kubepods-shaped cgroups, each with a 0.1-CPU
//! quota and one `bench-threads` helper of SERVE_THREADS_PER threads that
//! wake once a second (2,000 threads in all), traced by `affin-trace serve
//! --interval 15` while /metrics is scraped every 15 s; at every scrape one
//! container goes away (its process stopped, its cgroup removed) and a new
//! one comes. After a warm-up of two scrapes, the measured part lasts
//! `--serve-secs` (600 by default: the 10-minute soak): the agent's
//! CPU time (/proc/<pid>/stat), its VmRSS at the start and the end of it
//! (growth), and with `kernel.bpf_stats_enabled` on for the phase the
//! in-kernel ns per event of each of its programs.

use super::Ctx;
use super::parse::Prog;
use super::process::{Proc, Sysctl, check_interrupted, cpu_s};
use super::programs::programs_of;
use anyhow::{Context as _, Result, bail};
use procfs::process::Process;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xtask::util::words;

pub const SERVE_CGROUPS: usize = 100;
pub const SERVE_THREADS_PER: usize = 20;
/// The agent's interval and the scrape interval.
pub const SERVE_INTERVAL_S: u64 = 15;
/// Each helper thread's sleep per loop.
const SERVE_PERIOD_MS: u64 = 1_000;
/// Quota of each container (us per 100 ms period): 0.1 CPU.
const QUOTA_US: u64 = 10_000;
const PERIOD_US: u64 = 100_000;
/// Scrapes before the measured part (start-up and the first scans).
const WARMUP_SCRAPES: u32 = 2;
const PORT: u16 = 19_465;

/// What the phase measured.
#[derive(Serialize, Deserialize)]
pub struct ServeRun {
    pub cgroups: usize,
    pub threads_per: usize,
    pub interval_s: u64,
    /// The measured part (after the warm-up), s.
    pub secs: f64,
    /// Agent CPU (utime + stime) over the measured part, s.
    pub cpu_s: f64,
    /// VmRSS at the start and the end of the measured part, VmHWM at the end (KiB).
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    pub hwm_kib: u64,
    /// Containers stopped and started during the whole run.
    pub churned: usize,
    /// From the last scrape.
    pub tracked_cgroups: f64,
    pub tracked_threads: f64,
    pub events: f64,
    pub dropped: f64,
    pub samples: usize,
    /// Each scrape's time (ms), wall, from connect to the last byte.
    pub scrape_ms: Vec<f64>,
    /// Every program the agent held at the end, with bpf_stats.
    pub progs: Vec<Prog>,
    /// Agent stderr lines that mention an error.
    pub errors: Vec<String>,
}

/// The cpu controller's hierarchy: (mount point, is cgroup v1).
fn cpu_hierarchy() -> Result<(PathBuf, bool)> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "cpu") {
            return Ok((PathBuf::from(f[1]), true));
        }
    }
    let v2 = PathBuf::from("/sys/fs/cgroup");
    let ctl = std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
    if !ctl.split_whitespace().any(|c| c == "cpu") {
        bail!("no cpu controller: neither a v1 cpu mount nor cpu in /sys/fs/cgroup");
    }
    Ok((v2, false))
}

/// One container: its cgroup (and its pod's) and its helper process.
struct Container {
    dirs: [PathBuf; 2],
    helper: Proc,
}

/// The containers, stopped and removed on every path.
struct Fleet {
    top: PathBuf,
    v1: bool,
    helper: PathBuf,
    live: VecDeque<Container>,
    next: usize,
}

impl Fleet {
    /// Starts container `i` (pod uid and container id derived from it).
    fn start(&mut self) -> Result<()> {
        let i = self.next;
        self.next += 1;
        let uid = format!("{i:08x}-0000-4000-8000-{i:012x}");
        let pod = self.top.join(format!("kubepods/burstable/pod{uid}"));
        let leaf = pod.join(format!("{i:064x}"));
        std::fs::create_dir_all(&leaf).with_context(|| format!("mkdir {}", leaf.display()))?;
        if self.v1 {
            std::fs::write(leaf.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
            std::fs::write(leaf.join("cpu.cfs_quota_us"), QUOTA_US.to_string())?;
        } else {
            // v2: the cpu controller on every level down to the leaf.
            let mount = self.top.parent().unwrap_or(&self.top).to_path_buf();
            let mut up: Vec<&Path> = leaf.ancestors().skip(1).collect();
            up.retain(|p| p.starts_with(&mount));
            for p in up.iter().rev() {
                let _ = std::fs::write(p.join("cgroup.subtree_control"), "+cpu");
            }
            std::fs::write(leaf.join("cpu.max"), format!("{QUOTA_US} {PERIOD_US}"))?;
        }
        let args = words(&format!(
            "bench-threads {SERVE_THREADS_PER} 36000 {SERVE_PERIOD_MS}"
        ));
        let mut helper = Proc::spawn("bench-threads", &self.helper, &args, &[])?;
        std::fs::write(leaf.join("cgroup.procs"), helper.pid().to_string())
            .with_context(|| format!("moving the helper into {}", leaf.display()))?;
        helper.wait_line(false, "threads running", Duration::from_secs(60))?;
        self.live.push_back(Container {
            dirs: [leaf, pod],
            helper,
        });
        Ok(())
    }

    /// Stops the oldest container and removes its cgroups.
    fn stop_oldest(&mut self) -> Result<()> {
        if let Some(mut c) = self.live.pop_front() {
            c.helper.stop()?;
            for d in &c.dirs {
                rmdir(d);
            }
        }
        Ok(())
    }
}

/// rmdir, retried while the kernel still frees the cgroup.
fn rmdir(d: &Path) {
    for _ in 0..50 {
        if std::fs::remove_dir(d).is_ok() || !d.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        while let Some(mut c) = self.live.pop_front() {
            let _ = c.helper.stop();
            for d in &c.dirs {
                rmdir(d);
            }
        }
        for d in ["kubepods/burstable", "kubepods", ""] {
            rmdir(&self.top.join(d));
        }
    }
}

/// GET /path on the agent: the body, and how long it took (ms).
fn get(path: &str) -> Result<(String, f64)> {
    let t = Instant::now();
    let addr: SocketAddr = ([127, 0, 0, 1], PORT).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let (head, body) = raw.split_once("\r\n\r\n").context("no HTTP header")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok((body.to_string(), ms))
}

/// A sample without labels, e.g. `affin_trace_agent_tracked_threads 2000`.
fn plain(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let st = Process::new(pid as i32)?.status()?;
    Ok((st.vmrss.unwrap_or(0), st.vmhwm.unwrap_or(0)))
}

pub fn phase(ctx: &Ctx, secs: u64) -> Result<ServeRun> {
    let (mount, v1) = cpu_hierarchy()?;
    let mut stats = Sysctl::new(super::BPF_STATS)?;
    stats.set("1")?;
    let mut fleet = Fleet {
        top: mount.join(format!("affin-bench-{}", std::process::id())),
        v1,
        helper: ctx.helper.clone(),
        live: VecDeque::new(),
        next: 1,
    };
    for _ in 0..SERVE_CGROUPS {
        fleet.start()?;
    }
    println!(
        "bench: serve: {SERVE_CGROUPS} containers of {SERVE_THREADS_PER} threads started in {}",
        fleet.top.display()
    );
    let args = words(&format!(
        "serve --listen 127.0.0.1:{PORT} --interval {SERVE_INTERVAL_S}"
    ));
    let mut agent = Proc::spawn("affin-trace serve", &ctx.bin, &args, &[])?;
    let pid = agent.pid();
    agent.wait_line(true, "listening on", Duration::from_secs(60))?;
    let ready = Instant::now() + Duration::from_secs(30);
    while get("/healthz").is_err() {
        check_interrupted()?;
        if Instant::now() > ready {
            bail!(
                "the agent was not healthy within 30 s: {}",
                agent.output_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let step = Duration::from_secs(SERVE_INTERVAL_S);
    let mut churned = 0;
    let mut scrape_ms = Vec::new();
    let mut body = String::new();
    // One step: wait, scrape, one container out and one in.
    let mut step_once = |fleet: &mut Fleet| -> Result<()> {
        let end = Instant::now() + step;
        while Instant::now() < end {
            check_interrupted()?;
            std::thread::sleep(Duration::from_millis(200));
        }
        let (b, ms) = get("/metrics")?;
        body = b;
        scrape_ms.push(ms);
        fleet.stop_oldest()?;
        fleet.start()?;
        churned += 1;
        Ok(())
    };
    for _ in 0..WARMUP_SCRAPES {
        step_once(&mut fleet)?;
    }
    let (c0, t0) = (cpu_s(pid)?, Instant::now());
    let (rss_start_kib, _) = rss_kib(pid)?;
    println!(
        "bench: serve: measuring for {secs} s (agent at {} MiB)",
        rss_start_kib / 1024
    );
    let steps = secs.div_ceil(SERVE_INTERVAL_S).max(1);
    for _ in 0..steps {
        step_once(&mut fleet)?;
    }
    let (c1, t1) = (cpu_s(pid)?, Instant::now());
    let (rss_end_kib, hwm_kib) = rss_kib(pid)?;
    let progs = programs_of(&ctx.bpftool, pid)?;
    agent.stop_ok()?;
    drop(fleet);
    stats.restore()?;
    let errors = (agent.stderr.iter())
        .filter(|l| l.to_lowercase().contains("error"))
        .cloned()
        .collect();
    let run = ServeRun {
        cgroups: SERVE_CGROUPS,
        threads_per: SERVE_THREADS_PER,
        interval_s: SERVE_INTERVAL_S,
        secs: (t1 - t0).as_secs_f64(),
        cpu_s: c1 - c0,
        rss_start_kib,
        rss_end_kib,
        hwm_kib,
        churned,
        tracked_cgroups: plain(&body, "affin_trace_agent_tracked_cgroups"),
        tracked_threads: plain(&body, "affin_trace_agent_tracked_threads"),
        events: plain(&body, "affin_trace_agent_events_total"),
        dropped: plain(&body, "affin_trace_agent_dropped_events_total"),
        samples: body.lines().filter(|l| !l.starts_with('#')).count(),
        scrape_ms,
        progs,
        errors,
    };
    println!(
        "bench: serve: {:.3}% of one CPU over {:.0} s; VmRSS {:.1} -> {:.1} MiB; \
         {} cgroups, {} threads tracked",
        run.cpu_s / run.secs * 100.0,
        run.secs,
        run.rss_start_kib as f64 / 1024.0,
        run.rss_end_kib as f64 / 1024.0,
        run.tracked_cgroups,
        run.tracked_threads
    );
    Ok(run)
}

/// The agent's case on the pipe benchmark, for section 3 (issue 17's
/// agent config): `affin-trace serve --cgroup <dir>` traces every task of
/// one cgroup (the cgroup-keyed filter), and the benchmark runs in it, so
/// its events are the same as (d)'s. Returns the agent's programs with
/// their bpf_stats, read just before it stops (the caller has the stats
/// on). The cgroup is removed on every path.
pub fn agent_on_pipe(ctx: &Ctx) -> Result<Vec<Prog>> {
    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            rmdir(&self.0);
        }
    }
    let (mount, _) = cpu_hierarchy()?;
    let dir = Dir(mount.join(format!("affin-bench-agent-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
    let args = words(&format!(
        "serve --listen 127.0.0.1:{} --interval 1 --cgroup {}",
        PORT + 1,
        dir.0.display()
    ));
    let mut agent = Proc::spawn("affin-trace serve --cgroup", &ctx.bin, &args, &[])?;
    agent.wait_line(true, "listening on", Duration::from_secs(60))?;
    // The benchmark joins the cgroup before it execs: traced from its start.
    let procs = dir.0.join("cgroup.procs");
    let mut sh = vec![
        "-c".to_string(),
        "echo $$ > \"$1\" && shift && exec \"$@\"".into(),
        "sh".into(),
        procs.display().to_string(),
    ];
    sh.extend(ctx.pipe_cmd(ctx.loops));
    let mut bench = Proc::spawn(
        "perf bench in the agent's cgroup",
        Path::new("/bin/sh"),
        &sh,
        &[],
    )?;
    bench.wait_ok(Duration::from_secs(120))?;
    let progs = programs_of(&ctx.bpftool, agent.pid())?;
    agent.stop_ok()?;
    Ok(progs)
}
