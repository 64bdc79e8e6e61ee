//! `affin-trace serve` scraped by a real Prometheus (issue 15): kubepods-
//! shaped cgroups of both kubelet drivers with quotas, an over-threaded
//! spinner in one and an idle process in the other, names from fixture OCI
//! bundles; every assertion goes through Prometheus' HTTP query API or the
//! agent's own endpoints, all on 127.0.0.1. Root only; one at a time.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use affinity::host::{Root, cgroup::cpu_hierarchy};
use affinity_tests::*;
use serde_json::Value;

const BUSY_UID: &str = "5d2c7e1a-0b3f-4c6d-9e8a-7f1b2c3d4e5f";
const BUSY_ID: &str = "b0b0c0c0d0d0e0e0f0f0a1a1b2b2c3c3d4d4e5e5f6f6a7a7b8b8c9c9d0d0e1e1";
const IDLE_UID: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
const IDLE_ID: &str = "1d1e1f2a2b2c3d3e3f4a4b4c5d5e5f6a6b6c7d7e7f8a8b8c9d9e9f0a0b0c0d0e";

/// A tree of cgroups under one top directory of the cpu hierarchy; leaves
/// first on drop, their processes moved to the hierarchy's root.
struct Tree {
    mount: PathBuf,
    top: PathBuf,
    dirs: Vec<PathBuf>,
}

impl Tree {
    fn new(name: &str) -> Tree {
        let (_, mount) = cpu_hierarchy(&Root::host()).expect("cpu hierarchy");
        let top = mount.join(name);
        let t = Tree {
            mount,
            top: top.clone(),
            dirs: Vec::new(),
        };
        drop(Tree {
            mount: t.mount.clone(),
            top: top.clone(),
            dirs: walk(&top),
        }); // a leftover of a crashed run
        t
    }

    /// Makes `rel` (and its parents) under the top, with a quota on the leaf.
    fn leaf(&mut self, rel: &str, quota_us: u64) -> PathBuf {
        let mut d = self.top.clone();
        for c in std::iter::once("").chain(rel.split('/')) {
            if !c.is_empty() {
                d = d.join(c);
            }
            if !d.exists() {
                std::fs::create_dir(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
                self.dirs.push(d.clone());
            }
        }
        std::fs::write(d.join("cpu.cfs_period_us"), "100000").expect("period");
        std::fs::write(d.join("cpu.cfs_quota_us"), quota_us.to_string()).expect("quota");
        d
    }

    /// The largest CPU weight from the top down to `leaf`: against other
    /// work on the machine it then gets its CPUs about as if they were
    /// idle, so the truths that assume free CPUs hold on a busy one.
    fn favour(&self, leaf: &Path) {
        for d in leaf.ancestors().take_while(|d| d.starts_with(&self.top)) {
            std::fs::write(d.join("cpu.shares"), "262144").expect("cpu.shares");
        }
    }

    fn add(dir: &Path, pid: u32) {
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).expect("join cgroup");
    }
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if d.is_dir() {
        out.push(d.to_path_buf());
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk(&e.path()));
            }
        }
    }
    out
}

impl Drop for Tree {
    fn drop(&mut self) {
        let mut dirs = walk(&self.top);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for pid in text.split_whitespace() {
                    let _ = std::fs::write(self.mount.join("cgroup.procs"), pid);
                }
            }
            for _ in 0..50 {
                if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A child killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// GET http://127.0.0.1:port/path: (status code, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus instant query: the result vector.
fn query(port: u16, q: &str) -> Vec<Value> {
    let Some((200, body)) = get(port, &format!("/api/v1/query?query={}", encode(q))) else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Polls `q` until `ok` holds for its single result, or panics after 60 s.
fn wait_for(port: u16, q: &str, ok: impl Fn(f64) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = query(port, q);
        if r.len() == 1 && ok(value(&r[0])) {
            return r[0].clone();
        }
        assert!(Instant::now() < deadline, "{q}: last result {r:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The busy container's `affin_trace_cgroup_running_threads`, from the
/// kernel's count at each throttled period: four spinners on this 2-CPU
/// machine in a 0.5-CPU quota, pinned two to a CPU (`spread`: unpinned,
/// the scheduler may keep a throttled group's threads on one CPU for whole
/// periods, and CI once read 1 in 35 of 68 periods), run it out with both
/// CPUs on the group's threads (tests/tests/bandwidth.rs: the one-shot's
/// p50 is 2; here 1-10% of periods read 1: another task held the other CPU
/// for microseconds just then, its spinner queued there, README), so the
/// median bucket is le=2 and nothing is above the CPUs; one observation
/// per period cpu.stat counts as throttled.
fn running_threads_when_the_quota_ran_out(prom_port: u16) {
    let sel = "{pod=\"encoder-0\"}";
    let first = value(&wait_for(
        prom_port,
        &format!("affin_trace_cgroup_running_threads_count{sel}"),
        |v| v >= 10.0,
    ));
    wait_for(
        prom_port,
        &format!("affin_trace_cgroup_running_threads_count{sel}"),
        |v| v >= first + 10.0,
    );
    let buckets = query(
        prom_port,
        &format!("affin_trace_cgroup_running_threads_bucket{sel}"),
    );
    let mut cum: Vec<(f64, f64)> = buckets
        .iter()
        .map(|b| {
            let le = b["metric"]["le"].as_str().unwrap_or("?");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            (le, value(b))
        })
        .collect();
    cum.sort_by(|a, b| a.0.total_cmp(&b.0));
    let les: Vec<f64> = cum.iter().map(|c| c.0).collect();
    assert_eq!(
        les,
        [1.0, 2.0, f64::INFINITY],
        "1..=CPUs, +Inf: {buckets:?}"
    );
    eprintln!("running threads at exhaustion, cumulative by le: {cum:?}");
    let total = cum[2].1;
    assert_eq!(cum[1].1, total, "none above the 2 CPUs: {cum:?}");
    let median = cum.iter().find(|c| c.1 >= total / 2.0).map(|c| c.0);
    assert_eq!(median, Some(2.0), "both CPUs ran the spinners: {cum:?}");
    // One observation per throttled period (a 10 s rate, within 25%),
    // once the window holds only throttled periods (4 spinners in 0.5 CPU:
    // every one of the 10 a second).
    wait_for(
        prom_port,
        &format!("rate(affin_trace_cgroup_throttled_periods_total{sel}[10s])"),
        |v| v >= 8.0,
    );
    let seen = query(
        prom_port,
        &format!("rate(affin_trace_cgroup_running_threads_count{sel}[10s])"),
    );
    let throttled = query(
        prom_port,
        &format!("rate(affin_trace_cgroup_throttled_periods_total{sel}[10s])"),
    );
    let (seen, throttled) = (value(&seen[0]), value(&throttled[0]));
    assert!(
        throttled >= 8.0 && (seen / throttled - 1.0).abs() <= 0.25,
        "{seen} observations/s for {throttled} throttled periods/s"
    );
}

fn bundle(dir: &Path, id: &str, ns: &str, pod: &str, uid: &str, container: &str) {
    let d = dir.join(id);
    std::fs::create_dir_all(&d).unwrap();
    let spec = serde_json::json!({
        "ociVersion": "1.1.0",
        "annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-namespace": ns,
            "io.kubernetes.cri.sandbox-name": pod,
            "io.kubernetes.cri.sandbox-uid": uid,
            "io.kubernetes.cri.container-name": container,
        }
    });
    std::fs::write(d.join("config.json"), spec.to_string()).unwrap();
}

#[test]
fn prometheus_sees_the_throttled_over_threaded_container_and_not_the_idle_one() {
    require_root();
    let prom = Path::new("/usr/bin/prometheus");
    assert!(
        prom.exists(),
        "prometheus missing: cargo xtask setup installs it"
    );
    let me = std::process::id();
    let mut tree = Tree::new(&format!("affin-serve-{me}"));
    // The cgroupfs driver's shape for the busy pod, the systemd driver's
    // (UID escaped with '_') for the idle one; under a top directory of our
    // own, as a nested kubelet's prefix.
    let busy = tree.leaf(
        &format!("kubepods/burstable/pod{BUSY_UID}/{BUSY_ID}"),
        50_000,
    );
    tree.favour(&busy);
    let idle = tree.leaf(
        &format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/\
             cri-containerd-{IDLE_ID}.scope",
            IDLE_UID.replace('-', "_")
        ),
        100_000,
    );
    let scratch_dir = scratch("serve");
    let bundles = scratch_dir.join("bundles");
    bundle(&bundles, BUSY_ID, "shop", "encoder-0", BUSY_UID, "ffmpeg");
    bundle(&bundles, IDLE_ID, "shop", "idle-0", IDLE_UID, "sleeper");

    // The idle process is there before the agent (found by the scan).
    let sleeper = Killed(Command::new("sleep").arg("600").spawn().expect("sleep"));
    Tree::add(&idle, sleeper.0.id());

    let agent_port = free_port();
    let err_path = scratch_dir.join("agent.err");
    let mut agent = Killed(
        Command::new(affin_trace())
            .args(["serve", "--listen", &format!("127.0.0.1:{agent_port}")])
            .args(["--interval", "1", "--window", "5", "--bundle-dir"])
            .arg(&bundles)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("spawn affin-trace serve"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(agent_port, "/healthz").map(|r| r.0) != Some(200) {
        assert!(
            agent.0.try_wait().unwrap().is_none(),
            "agent exited: {}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "agent not healthy in 20 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !our_programs().is_empty(),
        "the agent's programs are attached"
    );

    // The spinner joins its cgroup while the agent runs (the programs mark
    // it at cgroup_attach_task): 4 threads in a 0.5-CPU quota.
    let mut spinner = Gated::start(&["spinners", "4", "120000", "spread"]);
    Tree::add(&busy, spinner.pid());
    spinner.go();

    let prom_port = free_port();
    let cfg = scratch_dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: affin-trace\n    static_configs:\n      \
             - targets: ['127.0.0.1:{agent_port}']\n"
        ),
    )
    .unwrap();
    let _prom = Killed(
        Command::new(prom)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                scratch_dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(scratch_dir.join("prometheus.err")).unwrap())
            .spawn()
            .expect("spawn prometheus"),
    );
    wait_for(prom_port, "up{job=\"affin-trace\"}", |v| v == 1.0);

    // The busy container: throttled, told to run one thread, names on it.
    let s = wait_for(
        prom_port,
        "rate(affin_trace_cgroup_throttled_seconds_total{pod=\"encoder-0\"}[10s])",
        |v| v > 0.0,
    );
    let m = &s["metric"];
    assert_eq!(m["namespace"], "shop", "{m}");
    assert_eq!(m["container"], "ffmpeg", "{m}");
    assert_eq!(m["pod_uid"], BUSY_UID, "{m}");
    assert_eq!(m["container_id"], BUSY_ID, "{m}");
    assert_eq!(
        m["cgroup"],
        format!("/affin-serve-{me}/kubepods/burstable/pod{BUSY_UID}/{BUSY_ID}"),
        "{m}"
    );
    wait_for(
        prom_port,
        "affin_trace_cgroup_recommended_threads{pod=\"encoder-0\"}",
        |v| v == 1.0,
    );
    running_threads_when_the_quota_ran_out(prom_port);
    let q = wait_for(
        prom_port,
        "affin_trace_cgroup_cpu_quota_cores{pod=\"encoder-0\"}",
        |v| v == 0.5,
    );
    assert_eq!(q["metric"]["container"], "ffmpeg");
    // Its threads' on-CPU time, from sched_switch, is what the quota lets
    // through: 0.5 CPU (a 10 s rate over whole periods, within 20%).
    std::thread::sleep(Duration::from_secs(10));
    let r = query(
        prom_port,
        "rate(affin_trace_cgroup_cpu_seconds_total{pod=\"encoder-0\"}[10s])",
    );
    assert_eq!(r.len(), 1, "{r:?}");
    let cores = value(&r[0]);
    assert!(
        (0.4..=0.6).contains(&cores),
        "on-CPU rate {cores} for a 0.5-CPU quota"
    );
    let r = query(
        prom_port,
        "rate(affin_trace_cgroup_runnable_seconds_total{pod=\"encoder-0\"}[10s])",
    );
    // Four spinners that get 0.5 CPU wait about 3.5 CPUs' worth.
    assert!(value(&r[0]) > 2.0, "runnable rate {r:?}");

    // The idle one: traced, named, nothing to change, never throttled.
    let i = wait_for(
        prom_port,
        "affin_trace_cgroup_recommended_threads{pod=\"idle-0\"}",
        |v| v == 0.0,
    );
    assert_eq!(i["metric"]["container"], "sleeper", "{i}");
    assert_eq!(
        i["metric"]["pod_uid"], IDLE_UID,
        "systemd's _ escaping undone: {i}"
    );
    assert_eq!(i["metric"]["container_id"], IDLE_ID, "{i}");
    let r = query(
        prom_port,
        "rate(affin_trace_cgroup_throttled_seconds_total{pod=\"idle-0\"}[10s])",
    );
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(value(&r[0]), 0.0, "{r:?}");
    // Never throttled: its running-threads series is there, with nothing in it.
    let r = query(
        prom_port,
        "affin_trace_cgroup_running_threads_count{pod=\"idle-0\"}",
    );
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(value(&r[0]), 0.0, "{r:?}");

    // /findings says the same, with the fix.
    let (code, body) = get(agent_port, "/findings").expect("/findings");
    assert_eq!(code, 200);
    let doc: Value = serde_json::from_str(&body).expect("findings JSON");
    let first = &doc["cgroups"][0];
    assert_eq!(first["labels"]["pod"], "encoder-0", "{doc:#}");
    assert_eq!(
        first["findings"][0]["kind"], "throttled_over_threaded",
        "{doc:#}"
    );
    assert_eq!(first["recommended_threads"], 1);
    assert_eq!(first["throttling"]["quota_cores"], 0.5);

    // The one-shot tool finds the same container by an id prefix.
    let one = run(&["--container", &BUSY_ID[..12], "--duration", "2"]);
    assert_eq!(one.code, 0, "{}", one.stderr);
    let spinners = one.json["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .filter(|t| {
            t["comm"]
                .as_str()
                .is_some_and(|c| c.starts_with("spinner-"))
        })
        .count();
    assert_eq!(spinners, 4, "{:#}", one.json["threads"]);
    assert_eq!(one.json["throttling"]["quota_cores"], 0.5);
    let miss = run(&["--container", "ffffffffffff", "--duration", "1"]);
    assert_eq!(miss.code, 2, "{}", miss.stderr);
    assert!(
        miss.stderr.contains("no container ffffffffffff"),
        "{}",
        miss.stderr
    );

    // The idle container goes away while the agent runs: its series go,
    // none are added, the agent carries on without an error.
    let samples = |body: &str| body.lines().filter(|l| !l.starts_with('#')).count();
    let (_, before) = get(agent_port, "/metrics").expect("/metrics");
    assert!(before.contains(IDLE_ID));
    drop(sleeper);
    for _ in 0..50 {
        if std::fs::remove_dir(&idle).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!idle.exists(), "idle cgroup removed");
    std::thread::sleep(Duration::from_secs(3));
    let (_, after) = get(agent_port, "/metrics").expect("/metrics after removal");
    assert!(!after.contains(IDLE_ID), "no series of a removed cgroup");
    assert!(
        samples(&after) < samples(&before),
        "series shrank: {} -> {}",
        samples(&before),
        samples(&after)
    );
    assert!(agent.0.try_wait().unwrap().is_none(), "agent still running");
    wait_for(prom_port, "up{job=\"affin-trace\"}", |v| v == 1.0);

    // SIGTERM: exit 0, nothing left attached.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = agent.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "agent did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.to_lowercase().contains("error"), "{err}");
    assert_eq!(
        programs_left(),
        Vec::<String>::new(),
        "programs left attached"
    );
    drop(spinner);
    let _ = std::fs::remove_dir_all(&scratch_dir);
}
