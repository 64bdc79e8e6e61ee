//! `affin-trace serve`: the node agent. One long-lived process on one
//! current-thread tokio runtime that traces, in the kernel, the tasks of a
//! changing set of cgroups (by default every cgroup with a CPU quota) and
//! serves what it finds over HTTP.
//!
//! ```text
//! interval timer ─> agent::Agent::tick ─> targets (cgroupfs, OCI bundles)
//!                      │                  kernel::probe (threads, JOINED)
//!                      │                  aggregate (per-cgroup counters)
//!                      │                  findings (analyze::throttle)
//!                      └─> metrics::Snapshot + findings JSON ─> http (GET)
//! SIGTERM / SIGINT ─> loop ends, the probe is dropped: nothing attached
//! ```
//!
//! It changes no affinity (nothing here reaches `apply/`).

pub mod agent;
pub mod aggregate;
pub mod findings;
pub mod http;
pub mod metrics;
pub mod targets;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use thiserror::Error;

use crate::cli::{EXIT_FAILURE, EXIT_USAGE, ServeArgs};
use crate::host::cgroup::{cpu_hierarchy, locate, unified_dir};
use crate::host::oci::Bundles;
use crate::host::root::Root;
use crate::host::{preflight, topology::Topology};
use crate::kernel::btf;
use crate::kernel::probe::{Probe, ProbeConfig};

/// Why the agent could not start or stopped.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("{0}")]
    Preflight(#[from] preflight::PreflightError),
    #[error("cannot find the cpu controller's hierarchy: {0}")]
    Hierarchy(String),
    #[error(
        "--cgroup {given}: no such cgroup in the cpu controller's hierarchy (mounted at {mount}); \
         give its directory there or its path as /NAME"
    )]
    NoCgroup { given: String, mount: String },
    #[error(
        "cannot listen on {addr}: {source}; is another agent running there? pick another --listen"
    )]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Load(String),
    #[error("tokio runtime: {0}")]
    Runtime(std::io::Error),
}

impl ServeError {
    /// Bad input exits 2, failures 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::NoCgroup { .. } | Self::Listen { .. } => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT; the exit code.
pub fn run(args: &ServeArgs) -> i32 {
    match run_inner(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("affin-trace serve: {e}");
            e.exit_code()
        }
    }
}

fn run_inner(args: &ServeArgs) -> Result<(), ServeError> {
    let root = Root::host();
    preflight::check(&root, false)?;
    let (version, mount) =
        cpu_hierarchy(&root).map_err(|e| ServeError::Hierarchy(e.to_string()))?;
    let mut only: Vec<PathBuf> = Vec::new();
    for given in &args.cgroup {
        let bad = || ServeError::NoCgroup {
            given: given.display().to_string(),
            mount: mount.display().to_string(),
        };
        let dir = locate(&root, given).ok_or_else(bad)?;
        let dir = dir.canonicalize().map_err(|_| bad())?;
        if !dir.starts_with(&mount) {
            return Err(bad());
        }
        only.push(dir);
    }
    let bundles = if args.bundle_dir.is_empty() {
        Bundles::defaults(&root)
    } else {
        Bundles::at(args.bundle_dir.clone())
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    rt.block_on(async {
        // Bind before loading: a taken port fails with nothing attached.
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|source| ServeError::Listen {
                addr: args.listen,
                source,
            })?;
        let topology = Topology::read(&root).map_err(|e| ServeError::Load(e.to_string()))?;
        let offsets = btf::task_offsets_cached(
            std::path::Path::new(btf::VMLINUX_BTF),
            std::path::Path::new(btf::CACHE_DIR),
        )
        .map_err(|e| ServeError::Load(e.to_string()))?;
        let cfg = ProbeConfig {
            max_threads: args.max_threads,
            attach: args.attach,
            offsets,
            pid_max: crate::collect::session::pid_max(&root),
            timeline_bytes: None,
            log_to_stderr: false,
            // Not the children of targets wherever they go: the programs
            // mark processes forked in, or moved into, a traced cgroup.
            follow: false,
            join_cgroup: 0,
            cgroup_set: true,
            // The sched_switch path of the throttle events, per traced
            // cgroup (attach_bandwidth_groups).
            bandwidth: true,
        };
        let mut probe =
            Probe::load(&cfg, &topology).map_err(|e| ServeError::Load(e.to_string()))?;
        // Optional: without it only affin_trace_cgroup_running_threads is missing.
        if let Err(e) = probe.attach_bandwidth_groups() {
            eprintln!(
                "affin-trace serve: {e}; continuing without affin_trace_cgroup_running_threads"
            );
        }
        let targets = targets::Targets::new(
            version,
            mount.clone(),
            unified_dir(&root).filter(|u| u != &mount),
            only,
            args.max_cgroups as usize,
            bundles,
        );
        let cpus = topology.cpus.len();
        let mut agent =
            agent::Agent::new(probe, targets, version, args.interval, args.window, cpus);
        eprintln!(
            "affin-trace serve: listening on http://{} (/metrics, /findings, /healthz), \
             interval {} s, programs attached ({:?})",
            args.listen,
            args.interval,
            agent.probe.mode()
        );
        let r = serve_loop(&mut agent, listener, args.interval).await;
        drop(agent); // the probe: the programs detach
        eprintln!("affin-trace serve: stopped; programs detached");
        r
    })
}

async fn serve_loop(
    agent: &mut agent::Agent,
    listener: tokio::net::TcpListener,
    interval_s: f64,
) -> Result<(), ServeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Runtime)?;
    let state = http::State::default();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(http::MAX_CONNECTIONS));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(interval_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let (snapshot, doc) = agent.tick();
                state.metrics.set(snapshot);
                let json = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into());
                *state.findings.lock().unwrap_or_else(|e| e.into_inner()) = json;
                state.ready.store(true, Ordering::Release);
            }
            conn = listener.accept() => match conn {
                // Past MAX_CONNECTIONS the socket is closed at once.
                Ok((sock, _)) => {
                    if let Ok(permit) = slots.clone().try_acquire_owned() {
                        let st = state.clone();
                        tokio::spawn(async move {
                            http::serve(sock, st).await;
                            drop(permit);
                        });
                    }
                }
                // EMFILE and the like persist: do not spin on them.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    Ok(())
}
