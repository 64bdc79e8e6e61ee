//! The report: a readable table and the JSON document (the stable contract
//! documented in README). Pure: values in, text out.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::{
    analyze::classify::TraceClassification,
    analyze::decision::Analysis,
    analyze::features::TraceFeatures,
    analyze::recommend::Recommendation,
    analyze::throttle::Throttling,
    model::topology::Topology,
    model::{MigrationPair, MigrationsByClass, RunqLatency, ThreadTrace, Trace},
};

/// Version of the JSON contract; bumped only on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Run-queue latency summary.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RunqJson {
    /// Median wakeup-to-run wait (ns), null without samples.
    pub p50: Option<u64>,
    /// 99th percentile (ns), null without samples.
    pub p99: Option<u64>,
    /// Longest wait (ns).
    pub max: u64,
    /// Number of waits.
    pub count: u64,
}

impl From<&RunqLatency> for RunqJson {
    fn from(r: &RunqLatency) -> Self {
        Self {
            p50: r.quantile(0.5),
            p99: r.quantile(0.99),
            max: r.max_ns,
            count: r.count,
        }
    }
}

/// One thread in the JSON report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ThreadJson {
    /// Thread id.
    pub tid: u32,
    /// Process id.
    pub tgid: u32,
    /// Thread name (U+FFFD where the kernel's bytes are not UTF-8).
    pub comm: String,
    /// The name's raw bytes as hex, only when they are not valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm_bytes: Option<String>,
    /// On-CPU ns in the window.
    pub cpu_time_ns: u64,
    /// On-CPU share of one CPU over the window, in percent.
    pub on_cpu_pct: f64,
    /// On-CPU ns per CPU, keyed by CPU number as a string.
    pub per_cpu_ns: BTreeMap<String, u64>,
    /// All migrations.
    pub migrations: u64,
    /// Migrations by distance class.
    pub migrations_by_class: MigrationsByClass,
    /// Voluntary switches.
    pub voluntary_switches: u64,
    /// Involuntary switches.
    pub involuntary_switches: u64,
    /// Wakeup-to-run latency.
    pub runq_latency_ns: RunqJson,
    /// Runnable-but-preempted wait (ns).
    pub preempted_wait_ns: u64,
    /// Exited during the window.
    pub exited: bool,
    /// Its lifetime in the window split into running, runnable, sleeping.
    pub wait_split: WaitSplitJson,
}

/// A lifetime split by what the thread did, each part from kernel events.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct WaitSplitJson {
    /// On a CPU (ns).
    pub running_ns: u64,
    /// Runnable, waiting for a CPU: woken and waiting, preempted and
    /// waiting (ns).
    pub runnable_ns: u64,
    /// Voluntarily off the CPU: sleep, I/O, locks (ns).
    pub sleeping_ns: u64,
    /// Held by CFS bandwidth throttling until the quota's refill, measured
    /// from the kernel's events (ns; 0 without them). Not in `runnable_ns`.
    pub throttled_ns: u64,
    /// On a CPU but not running the thread, the rest of the lifetime:
    /// hypervisor steal during its slices (its `sum_exec_runtime`, and so
    /// `running_ns`, leaves steal out; see the report's `host_steal_ns`),
    /// and interrupt time on kernels with IRQ_TIME_ACCOUNTING (ns).
    pub stolen_ns: u64,
    /// Traced lifetime in the window (ns); the five parts sum to it.
    pub lifetime_ns: u64,
    /// CPU demand: running + runnable + throttled (ns).
    pub cpu_demand_ns: u64,
}

impl WaitSplitJson {
    fn new(running: u64, runnable: u64, throttled: u64, sleeping: u64, lifetime: u64) -> Self {
        Self {
            running_ns: running,
            runnable_ns: runnable,
            sleeping_ns: sleeping,
            throttled_ns: throttled,
            stolen_ns: lifetime.saturating_sub(
                running
                    .saturating_add(runnable)
                    .saturating_add(throttled)
                    .saturating_add(sleeping),
            ),
            lifetime_ns: lifetime,
            cpu_demand_ns: running.saturating_add(runnable).saturating_add(throttled),
        }
    }
}

/// Process totals in the JSON report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProcessJson {
    /// Threads seen.
    pub threads: usize,
    /// On-CPU ns.
    pub cpu_time_ns: u64,
    /// On-CPU time / wall time: how many CPUs the targets kept busy.
    pub effective_parallelism: f64,
    /// On-CPU ns per CPU.
    pub per_cpu_ns: BTreeMap<String, u64>,
    /// All migrations.
    pub migrations: u64,
    /// Migrations by distance class.
    pub migrations_by_class: MigrationsByClass,
    /// Migrations per (source, destination) CPU pair, over every thread of
    /// the targets, sorted by (from, to).
    pub migration_pairs: Vec<MigrationPair>,
    /// Voluntary switches.
    pub voluntary_switches: u64,
    /// Involuntary switches.
    pub involuntary_switches: u64,
    /// Wakeup-to-run latency over all threads.
    pub runq_latency_ns: RunqJson,
    /// Runnable-but-preempted wait (ns).
    pub preempted_wait_ns: u64,
    /// The threads' lifetimes split into running, runnable, sleeping
    /// (summed over threads).
    pub wait_split: WaitSplitJson,
    /// CPU demand / wall time: the CPUs it would have kept busy had one
    /// been free whenever it was ready (`effective_parallelism` is usage).
    pub demand_parallelism: f64,
}

/// What was traced.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TargetJson {
    /// Target processes.
    pub pids: Vec<u32>,
    /// Threads selected with --tid (empty: all).
    pub tids: Vec<u32>,
    /// The command started, when run as `-- <command>`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Targets that exited during the window.
    pub exited_pids: Vec<u32>,
}

/// What `--timeline` wrote.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TimelineJson {
    /// The trace file (Chrome JSON trace format).
    pub file: String,
    /// Events received from the kernel.
    pub events: u64,
    /// Events the kernel could not write because the ring buffer was full:
    /// the timeline misses them (the counters do not).
    pub lost_events: u64,
    /// Size of the kernel ring buffer (bytes).
    pub ring_buffer_bytes: u64,
    /// Events received but not kept past `--timeline-max-events` (Chrome
    /// JSON only): the file stops at the first of them.
    pub truncated_events: u64,
    /// Migration arrows in the file.
    pub migration_flows: u64,
    /// On-CPU slices in the file (one per CPU track entry; Chrome JSON).
    pub cpu_slices: u64,
    /// Counter tracks of preempting neighbours in the file: per process
    /// that took a CPU from a runnable target thread, how many target
    /// threads it held back over time (both formats).
    pub neighbour_tracks: u64,
    /// `perfetto` (protobuf, streamed) or `chrome` (JSON).
    pub format: &'static str,
    /// What the Perfetto file holds (`perfetto` format only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perfetto: Option<PerfettoCounts>,
    /// Exact wakeup-to-run and preempted-wait distributions from the
    /// recorded events, per thread and for the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<crate::report::latency::LatencyJson>,
}

/// Records in a Perfetto timeline file.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct PerfettoCounts {
    /// `sched_switch` records.
    pub sched_switch: u64,
    /// `sched_wakeup` and `sched_wakeup_new` records.
    pub sched_wakeup: u64,
    /// `sched_migrate_task` records.
    pub sched_migrate_task: u64,
    /// `sched_process_exit` records.
    pub sched_process_exit: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// The whole JSON document.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Contract version.
    pub schema_version: u32,
    /// affin-trace version.
    pub tool_version: String,
    /// What was traced.
    pub target: TargetJson,
    /// Window length (s).
    pub duration_s: f64,
    /// Map read interval (s).
    pub interval_s: f64,
    /// tp_btf or raw_tp.
    pub attach_mode: crate::model::AttachMode,
    /// Process totals.
    pub process: ProcessJson,
    /// Per-thread results, sorted by tid.
    pub threads: Vec<ThreadJson>,
    /// Events the kernel side could not record.
    pub dropped_events: u64,
    /// Hypervisor steal over the window, summed over the machine's CPUs
    /// (ns, /proc/stat in 10 ms ticks); 0 on bare metal.
    pub host_steal_ns: u64,
    /// That steal as a share of the window's CPU time (wall x CPUs).
    pub host_steal_share: f64,
    /// Rare conditions the kernel side logged (`--verbose` prints each).
    pub kernel_warnings: u64,
    /// Per-interval series (the seed's monitor action's lists).
    pub series: crate::report::series::Series,
    /// The event timeline, with `--timeline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<TimelineJson>,
    /// The command's exit status (command mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_exit_status: Option<i32>,
    /// The machine's CPU topology.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
    /// Features (seed key names plus exact extras), process and threads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<TraceFeatures>,
    /// Classes with reasons, process and threads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<TraceClassification>,
    /// Recommended CPU set, command and rationale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recommendation: Option<Recommendation>,
    /// CPU-quota throttling: the quota in force, the throttling over the
    /// window, the threads it hit and the fix. Says so when there is no quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttling: Option<Throttling>,
    /// What --apply changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<crate::report::applied::AppliedJson>,
    /// Before/after comparison of --verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<crate::analyze::verify::Verification>,
    /// Why --apply changed nothing: nothing to change, or cancelled by a
    /// signal before it started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_applied: Option<crate::report::applied::NotApplied>,
    /// Who held the CPUs while the targets waited, PSI, followed processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contention: Option<crate::analyze::contention::Contention>,
}

fn keyed(m: &BTreeMap<u32, u64>) -> BTreeMap<String, u64> {
    m.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn pct(ns: u64, wall_ns: u64) -> f64 {
    if wall_ns == 0 {
        0.0
    } else {
        ns as f64 * 100.0 / wall_ns as f64
    }
}

fn thread_json(t: &ThreadTrace, wall_ns: u64) -> ThreadJson {
    ThreadJson {
        tid: t.tid,
        tgid: t.tgid,
        comm: t.comm.clone(),
        comm_bytes: t.comm_bytes.clone(),
        cpu_time_ns: t.cpu_time_ns,
        on_cpu_pct: pct(t.cpu_time_ns, wall_ns),
        per_cpu_ns: keyed(&t.per_cpu_ns),
        migrations: t.migrations.total(),
        migrations_by_class: t.migrations,
        voluntary_switches: t.voluntary_switches,
        involuntary_switches: t.involuntary_switches,
        runq_latency_ns: (&t.runq).into(),
        preempted_wait_ns: t.preempted_wait_ns,
        exited: t.exited,
        wait_split: WaitSplitJson::new(
            t.cpu_time_ns,
            t.runnable_ns,
            t.throttled_ns,
            t.sleep_ns,
            t.lifetime_ns,
        ),
    }
}

impl Report {
    /// Builds the report of a trace; `command` is the argv in command mode.
    pub fn new(trace: &Trace, command: &[String], exit_status: Option<i32>) -> Self {
        let tot = trace.totals();
        let wall = trace.duration_ns;
        let steal: u64 = trace.system_steal_ns.values().sum();
        Report {
            schema_version: SCHEMA_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").into(),
            target: TargetJson {
                pids: trace.pids.clone(),
                tids: trace.tids.clone(),
                command: command.to_vec(),
                exited_pids: trace.exited_pids.clone(),
            },
            duration_s: wall as f64 / 1e9,
            interval_s: trace.interval_ns as f64 / 1e9,
            attach_mode: trace.attach_mode,
            process: ProcessJson {
                threads: tot.threads,
                cpu_time_ns: tot.cpu_time_ns,
                effective_parallelism: if wall == 0 {
                    0.0
                } else {
                    tot.cpu_time_ns as f64 / wall as f64
                },
                per_cpu_ns: keyed(&tot.per_cpu_ns),
                migrations: tot.migrations.total(),
                migrations_by_class: tot.migrations,
                migration_pairs: trace.migration_pairs.clone(),
                voluntary_switches: tot.voluntary_switches,
                involuntary_switches: tot.involuntary_switches,
                runq_latency_ns: (&tot.runq).into(),
                preempted_wait_ns: tot.preempted_wait_ns,
                wait_split: WaitSplitJson::new(
                    tot.cpu_time_ns,
                    tot.runnable_ns,
                    tot.throttled_ns,
                    tot.sleep_ns,
                    tot.lifetime_ns,
                ),
                demand_parallelism: {
                    // Over the window or the longest thread lifetime, as
                    // in features (a command starts before the window).
                    let span = trace
                        .selected_threads()
                        .map(|t| t.lifetime_ns)
                        .max()
                        .unwrap_or(0)
                        .max(wall);
                    if span == 0 {
                        0.0
                    } else {
                        (tot.cpu_time_ns)
                            .saturating_add(tot.runnable_ns)
                            .saturating_add(tot.throttled_ns) as f64
                            / span as f64
                    }
                },
            },
            threads: trace
                .selected_threads()
                .map(|t| thread_json(t, wall))
                .collect(),
            dropped_events: trace.dropped_events,
            host_steal_ns: steal,
            host_steal_share: {
                let cpu_ns = wall as f64 * f64::from(trace.nr_cpus.max(1));
                if cpu_ns > 0.0 {
                    steal as f64 / cpu_ns
                } else {
                    0.0
                }
            },
            kernel_warnings: trace.kernel_warnings,
            series: trace.into(),
            timeline: None,
            command_exit_status: exit_status,
            topology: None,
            features: None,
            classification: None,
            recommendation: None,
            throttling: None,
            applied: None,
            verification: None,
            not_applied: None,
            contention: None,
        }
    }

    /// Adds the throttling finding.
    pub fn with_throttling(mut self, t: Throttling) -> Self {
        self.throttling = Some(t);
        self
    }

    /// Adds the topology and the analysis.
    pub fn with_analysis(mut self, topology: &Topology, a: &Analysis) -> Self {
        self.topology = Some(topology.clone());
        self.features = Some(a.features.clone());
        self.classification = Some(a.classification.clone());
        self.recommendation = Some(a.recommendation.clone());
        self.contention = Some(a.contention.clone());
        self
    }

    /// The JSON document, pretty-printed.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The readable table: one section after another, each a function below
    /// that appends its lines (an absent or quiet section appends nothing).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        self.text_header(&mut s);
        // The quota as the cause leads: a taskset line below is not the fix.
        let leads = self.throttling_leads();
        if leads {
            self.text_throttling(&mut s);
        }
        self.text_threads(&mut s);
        self.text_process(&mut s);
        s.push_str(&self.wait_text());
        self.text_classification(&mut s);
        self.text_recommendation(&mut s);
        if !leads {
            self.text_throttling(&mut s);
        }
        self.text_applied(&mut s);
        self.text_verification(&mut s);
        self.text_timeline(&mut s);
        self.text_dropped(&mut s);
        s
    }

    /// The first line (targets, window, threads, attach mode) and exited targets.
    fn text_header(&self, s: &mut String) {
        let targets = self
            .target
            .pids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let _ = writeln!(
            s,
            "affin-trace: pid {targets}, {:.2} s window, {} thread(s), {}",
            self.duration_s,
            self.process.threads,
            match self.attach_mode {
                crate::model::AttachMode::TpBtf => "tp_btf",
                crate::model::AttachMode::RawTp => "raw_tp",
            }
        );
        if !self.target.exited_pids.is_empty() {
            let _ = writeln!(
                s,
                "note: target(s) exited during the window: {:?}",
                self.target.exited_pids
            );
        }
    }

    /// The per-thread table, after a blank line.
    fn text_threads(&self, s: &mut String) {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:>8} {:<16} {:>7} {:<22} {:>6} {:>17} {:>7} {:>7} {:>9} {:>9}",
            "TID",
            "COMM",
            "ON-CPU",
            "TIME PER CPU (ms)",
            "MIGR",
            "SMT/LLC/XLLC/XNUMA",
            "VOL",
            "INVOL",
            "RUNQ p50",
            "RUNQ p99"
        );
        for t in &self.threads {
            let per_cpu = t
                .per_cpu_ns
                .iter()
                .filter(|(_, ns)| **ns > 0)
                .map(|(c, ns)| format!("{c}:{:.0}", *ns as f64 / 1e6))
                .collect::<Vec<_>>()
                .join(" ");
            let m = &t.migrations_by_class;
            let _ = writeln!(
                s,
                "{:>8} {:<16} {:>6.1}% {:<22} {:>6} {:>17} {:>7} {:>7} {:>9} {:>9}{}",
                t.tid,
                crate::report::escape::text(&truncate(&t.comm, 16)),
                t.on_cpu_pct,
                truncate(&per_cpu, 22),
                t.migrations,
                format!("{}/{}/{}/{}", m.smt, m.llc, m.cross_llc, m.cross_numa),
                t.voluntary_switches,
                t.involuntary_switches,
                fmt_ns(t.runq_latency_ns.p50),
                fmt_ns(t.runq_latency_ns.p99),
                if t.exited { "  (exited)" } else { "" }
            );
        }
    }

    /// The process totals and the migrations by CPU pair, after a blank line.
    fn text_process(&self, s: &mut String) {
        let p = &self.process;
        let m = &p.migrations_by_class;
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "process: on-CPU {:.1} ms ({:.2} CPUs), {} migrations (smt {}, llc {}, cross-llc {}, cross-numa {}), {} voluntary / {} involuntary switches, run-queue p50 {} p99 {} max {}, preempted wait {:.1} ms",
            p.cpu_time_ns as f64 / 1e6,
            p.effective_parallelism,
            p.migrations,
            m.smt,
            m.llc,
            m.cross_llc,
            m.cross_numa,
            p.voluntary_switches,
            p.involuntary_switches,
            fmt_ns(p.runq_latency_ns.p50),
            fmt_ns(p.runq_latency_ns.p99),
            fmt_ns(Some(p.runq_latency_ns.max)),
            p.preempted_wait_ns as f64 / 1e6,
        );
        if !p.migration_pairs.is_empty() {
            let pairs: Vec<String> = p
                .migration_pairs
                .iter()
                .map(|m| format!("{}->{} {}", m.from, m.to, m.count))
                .collect();
            let _ = writeln!(s, "migrations by CPU pair: {}", pairs.join(", "));
        }
    }

    /// The process class and the threads of another class, after a blank line.
    fn text_classification(&self, s: &mut String) {
        let Some(c) = &self.classification else {
            return;
        };
        let _ = writeln!(s);
        // The contention finding comes first: it explains the class.
        s.push_str(&self.contention_text());
        let _ = writeln!(s, "class: {} ({})", c.process.class, c.process.summary());
        if let Some(b) = &c.process.borderline {
            let _ = writeln!(s, "{}", b.summary());
        }
        let mixed: Vec<String> = c
            .threads
            .iter()
            .filter(|t| t.classification.class != c.process.class)
            .map(|t| {
                let comm = crate::report::escape::text(&t.comm);
                format!("{} {comm}: {}", t.tid, t.classification.class)
            })
            .collect();
        if !mixed.is_empty() {
            let _ = writeln!(s, "threads of another class: {}", mixed.join(", "));
        }
    }

    /// The recommended CPUs, the command to pin them, and the rationale.
    fn text_recommendation(&self, s: &mut String) {
        let Some(r) = &self.recommendation else {
            return;
        };
        let _ = writeln!(
            s,
            "recommendation: CPUs {}{}",
            if r.cpulist.is_empty() {
                "(none)"
            } else {
                &r.cpulist
            },
            r.command
                .as_deref()
                .map(|c| format!("  ->  {c}"))
                .unwrap_or_default()
        );
        for line in &r.rationale {
            // A rationale may name a neighbour process: escaped.
            let _ = writeln!(s, "  - {}", crate::report::escape::text(line));
        }
    }

    /// The quota throttled the target and is what held it back.
    fn throttling_leads(&self) -> bool {
        self.throttling.as_ref().is_some_and(|t| {
            !t.is_quiet() && t.limit.cause == Some(crate::analyze::limit::Cause::Quota)
        })
    }

    /// The CFS bandwidth section, after a blank line, only when not quiet.
    fn text_throttling(&self, s: &mut String) {
        let Some(t) = self.throttling.as_ref().filter(|t| !t.is_quiet()) else {
            return;
        };
        let _ = writeln!(s);
        let _ = write!(s, "{}", crate::analyze::throttle::render_text(t));
        if !s.ends_with('\n') {
            s.push('\n');
        }
        if let Some(p) = &t.prediction {
            s.push_str(&p.render_text());
        }
    }

    /// What `--apply` changed and how to undo it, or why it changed
    /// nothing. Each line says what `revert` will find.
    fn text_applied(&self, s: &mut String) {
        if let Some(n) = &self.not_applied {
            let _ = writeln!(s, "{}", n.message);
        }
        let Some(a) = &self.applied else {
            return;
        };
        if a.active {
            let pids = self
                .target
                .pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let _ = writeln!(
                s,
                "applied: CPUs {} on {} thread(s); undo with `affin-trace revert --pid {pids}` (state: {})",
                a.cpulist,
                a.threads_changed,
                a.state_files.join(", ")
            );
        } else {
            let _ = writeln!(
                s,
                "applied: CPUs {} on {} thread(s), then reverted by --verify: the previous masks are back, nothing is left to revert",
                a.cpulist, a.threads_changed
            );
        }
    }

    /// The before/after table of `--verify`.
    fn text_verification(&self, s: &mut String) {
        if let Some(v) = &self.verification {
            let _ = writeln!(s, "{}", verification_table(v));
        }
    }

    /// Where the timeline was written, and a warning when its ring lost events.
    fn text_timeline(&self, s: &mut String) {
        let Some(t) = &self.timeline else {
            return;
        };
        let _ = writeln!(
            s,
            "timeline: {} ({} events, {} migration arrows; open in https://ui.perfetto.dev)",
            t.file, t.events, t.migration_flows
        );
        if t.lost_events > 0 {
            let _ = writeln!(
                s,
                "warning: the timeline lost {} events (its {} KiB ring buffer was full): \
                 it has gaps the counters above do not; raise --timeline-buffer",
                t.lost_events,
                t.ring_buffer_bytes / 1024
            );
        }
        if t.truncated_events > 0 {
            let _ = writeln!(
                s,
                "warning: the timeline stops early: {} later events were not kept \
                 (--timeline-max-events); a .pftrace file streams them all",
                t.truncated_events
            );
        }
    }

    /// A warning when kernel maps dropped events.
    fn text_dropped(&self, s: &mut String) {
        if self.dropped_events > 0 {
            let _ = writeln!(
                s,
                "warning: {} events were not recorded (a kernel map full: threads, per-CPU time or CPU pairs; or an unreadable task): raise --max-threads",
                self.dropped_events
            );
        }
        if self.kernel_warnings > 0 {
            let _ = writeln!(
                s,
                "warning: the kernel side logged {} warning(s) (a full thread table, an unreadable task or a switch-in without its switch-out): run with --verbose to see them",
                self.kernel_warnings
            );
        }
    }
}

impl Report {
    /// The process's wait split and demand, one line.
    fn wait_text(&self) -> String {
        let w = &self.process.wait_split;
        if w.lifetime_ns == 0 {
            return String::new();
        }
        let share = |ns: u64| ns as f64 * 100.0 / w.lifetime_ns as f64;
        let throttled = if w.throttled_ns == 0 {
            String::new()
        } else {
            format!(
                ", throttled {:.2} s ({:.0}%)",
                w.throttled_ns as f64 / 1e9,
                share(w.throttled_ns)
            )
        };
        // Below 1% of the lifetime the rest is clock edges, not steal.
        let stolen = if w.stolen_ns * 100 < w.lifetime_ns {
            String::new()
        } else {
            format!(
                ", stolen {:.2} s ({:.0}%)",
                w.stolen_ns as f64 / 1e9,
                share(w.stolen_ns)
            )
        };
        let host = if self.host_steal_share < 0.01 {
            String::new()
        } else {
            format!(
                "hypervisor steal: {:.1}% of this machine's CPU time in the window went to other \
                 guests of its host (no affinity, thread count or quota here changes that)\n",
                self.host_steal_share * 100.0
            )
        };
        format!(
            "wait split: running {:.2} s ({:.0}%), runnable {:.2} s ({:.0}%){throttled}, sleeping \
             {:.2} s ({:.0}%){stolen} of {:.2} s thread lifetime; CPU demand {:.2} CPUs, usage \
             {:.2}\n{host}",
            w.running_ns as f64 / 1e9,
            share(w.running_ns),
            w.runnable_ns as f64 / 1e9,
            share(w.runnable_ns),
            w.sleeping_ns as f64 / 1e9,
            share(w.sleeping_ns),
            w.lifetime_ns as f64 / 1e9,
            self.process.demand_parallelism,
            self.process.effective_parallelism
        )
    }

    /// The contention finding (before the class: it explains it), the
    /// neighbours, PSI and the followed processes.
    fn contention_text(&self) -> String {
        let Some(c) = &self.contention else {
            return String::new();
        };
        let mut s = String::new();
        if let Some(f) = &c.finding {
            // Thread names and cgroup paths are the traced side's: escaped.
            let _ = writeln!(s, "contention: {}", crate::report::escape::text(f));
            for n in &c.neighbours {
                let _ = writeln!(
                    s,
                    "  {:>5.1}%  pid {:<7} {:<16} {}",
                    n.wait_share * 100.0,
                    n.tgid,
                    crate::report::escape::text(&truncate(&n.comm, 16)),
                    if n.cgroup.is_empty() {
                        "-".into()
                    } else {
                        crate::report::escape::text(&n.cgroup)
                    }
                );
            }
        }
        let psi = |p: &Option<crate::model::PressureDelta>| match p {
            Some(d) => format!("some {:.2} s", d.some_us as f64 / 1e6),
            None => "n/a".to_string(),
        };
        if c.finding.is_some() || c.pressure.host.is_some_and(|p| p.some_us > 0) {
            let _ = writeln!(
                s,
                "cpu pressure (PSI) over the window: machine {}, target cgroup {}",
                psi(&c.pressure.host),
                psi(&c.pressure.cgroup)
            );
        }
        if let Some(l) = crate::analyze::contention::followed_line(&c.followed) {
            let _ = writeln!(s, "{l}");
        }
        s
    }
}

fn verification_table(v: &crate::analyze::verify::Verification) -> String {
    let (b, a) = (&v.before, &v.after);
    let mut s = String::new();
    let _ = writeln!(s, "verification:           before      after");
    let _ = writeln!(
        s,
        "  migrations/s      {:>10.1} {:>10.1}",
        b.migration_rate, a.migration_rate
    );
    let _ = writeln!(
        s,
        "  cross-LLC share   {:>10.2} {:>10.2}",
        b.cross_llc_share, a.cross_llc_share
    );
    let _ = writeln!(
        s,
        "  run-queue p99     {:>10} {:>10}",
        fmt_ns(b.runq_p99_ns),
        fmt_ns(a.runq_p99_ns)
    );
    let _ = writeln!(
        s,
        "  on-CPU %          {:>10.1} {:>10.1}",
        b.on_cpu_pct, a.on_cpu_pct
    );
    let _ = writeln!(
        s,
        "  class             {:>10} {:>10}",
        b.class.as_str(),
        a.class.as_str()
    );
    let _ = write!(s, "  {}", v.verdict);
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(std::iter::once('~')).collect()
    }
}

/// Formats nanoseconds with a unit ("-" when absent).
pub fn fmt_ns(ns: Option<u64>) -> String {
    match ns {
        None => "-".into(),
        Some(v) if v < 1_000 => format!("{v}ns"),
        Some(v) if v < 1_000_000 => format!("{:.1}us", v as f64 / 1e3),
        Some(v) if v < 1_000_000_000 => format!("{:.1}ms", v as f64 / 1e6),
        Some(v) => format!("{:.2}s", v as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ThreadTrace;

    fn trace() -> Trace {
        let mut runq = RunqLatency {
            hist: vec![0; 32],
            count: 10,
            total_ns: 10_000,
            max_ns: 1_500,
        };
        runq.hist[10] = 10;
        Trace {
            pids: vec![42],
            duration_ns: 2_000_000_000,
            interval_ns: 1_000_000_000,
            threads: vec![ThreadTrace {
                tid: 43,
                tgid: 42,
                comm: "a) (b".into(),
                cpu_time_ns: 1_000_000_000,
                per_cpu_ns: BTreeMap::from([(0, 400_000_000), (1, 600_000_000)]),
                voluntary_switches: 5,
                involuntary_switches: 2,
                migrations: MigrationsByClass::from_array([0, 3, 0, 0]),
                runq,
                ..ThreadTrace::default()
            }],
            ..Trace::default()
        }
    }

    /// On a VM, a thread's on-CPU time (`sum_exec_runtime`) leaves out the
    /// steal of its slices: the split's fifth part is that rest, and the
    /// machine's steal over the window is reported beside it.
    #[test]
    fn the_rest_of_a_lifetime_is_stolen_and_host_steal_is_a_share() {
        let mut tr = trace();
        let t = &mut tr.threads[0];
        (t.runnable_ns, t.throttled_ns, t.sleep_ns) = (200_000_000, 300_000_000, 400_000_000);
        t.lifetime_ns = 2_000_000_000;
        tr.nr_cpus = 2;
        tr.system_steal_ns = BTreeMap::from([(0, 60_000_000), (1, 40_000_000)]);
        let v: serde_json::Value =
            serde_json::from_str(&Report::new(&tr, &[], None).to_json()).unwrap();
        let w = &v["threads"][0]["wait_split"];
        assert_eq!(w["stolen_ns"], 100_000_000u64, "{w:#}");
        assert_eq!(v["host_steal_ns"], 100_000_000u64);
        assert_eq!(v["host_steal_share"], 0.025);
        // Parts that overfill the lifetime (a clock edge): nothing stolen.
        tr.threads[0].sleep_ns = 600_000_000;
        let v: serde_json::Value =
            serde_json::from_str(&Report::new(&tr, &[], None).to_json()).unwrap();
        assert_eq!(v["threads"][0]["wait_split"]["stolen_ns"], 0);
        // The text names both once they reach 1%.
        tr.threads[0].sleep_ns = 400_000_000;
        let text = Report::new(&tr, &[], None).to_text();
        assert!(text.contains(", stolen 0.10 s (5%) of 2.00 s"), "{text}");
        assert!(
            text.contains("hypervisor steal: 2.5% of this machine's CPU"),
            "{text}"
        );
    }

    #[test]
    fn json_has_the_contract_keys() {
        let r = Report::new(&trace(), &[], None);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["target"]["pids"][0], 42);
        assert_eq!(v["duration_s"], 2.0);
        assert_eq!(v["process"]["cpu_time_ns"], 1_000_000_000u64);
        assert_eq!(v["process"]["migrations"], 3);
        assert_eq!(v["process"]["voluntary_switches"], 5);
        assert_eq!(v["process"]["involuntary_switches"], 2);
        assert_eq!(v["process"]["effective_parallelism"], 0.5);
        let t = &v["threads"][0];
        for key in [
            "tid",
            "comm",
            "cpu_time_ns",
            "per_cpu_ns",
            "migrations",
            "migrations_by_class",
            "voluntary_switches",
            "involuntary_switches",
            "runq_latency_ns",
        ] {
            assert!(!t[key].is_null(), "missing threads[].{key}");
        }
        assert_eq!(t["per_cpu_ns"]["1"], 600_000_000u64);
        assert_eq!(t["migrations_by_class"]["llc"], 3);
        for k in ["smt", "cross_llc", "cross_numa"] {
            assert_eq!(t["migrations_by_class"][k], 0);
        }
        assert_eq!(t["runq_latency_ns"]["max"], 1500);
        assert!(t["runq_latency_ns"]["p50"].as_u64().unwrap() >= 1024);
        assert_eq!(v["dropped_events"], 0);
    }

    #[test]
    fn text_shows_each_thread_and_the_totals() {
        let text = Report::new(&trace(), &[], None).to_text();
        assert!(text.contains("a) (b"), "{text}");
        assert!(text.contains("50.0%"), "{text}");
        assert!(text.contains("0:400 1:600"), "{text}");
        assert!(text.contains("3 migrations"), "{text}");
        assert!(!text.contains("warning"), "{text}");
    }

    /// A 0.5-CPU quota that throttled the thread for most of its wait: the
    /// quota section comes before the thread table (and anything after
    /// it); on a full node where the wait was mostly elsewhere it stays in
    /// its place.
    #[test]
    fn throttling_leads_the_text_when_the_quota_is_the_cause() {
        use crate::model::cgroup::{CgroupLimit, CgroupVersion, CpuQuota, CpuStatDelta};
        let limit = CgroupLimit {
            version: CgroupVersion::V1,
            cgroup: "/t".into(),
            dir: "/sys/fs/cgroup/cpu/t".into(),
            quota: CpuQuota {
                quota_us: 50_000,
                period_us: 100_000,
            },
            target_cgroup: "/t".into(),
            target_dir: "/sys/fs/cgroup/cpu/t".into(),
            pressure_dir: None,
            burst_us: None,
            cpuset_cpus: None,
        };
        let w = CpuStatDelta {
            nr_periods: 20,
            nr_throttled: 18,
            throttled_ns: 900_000_000,
            ..CpuStatDelta::default()
        };
        let mut tr = trace();
        tr.threads[0].preempted_wait_ns = 900_000_000;
        tr.threads[0].runnable_ns = 1_000_000_000;
        let t = crate::analyze::throttle::analyze(&tr, Some(&limit), Some(&w));
        assert_eq!(t.limit.cause, Some(crate::analyze::limit::Cause::Quota));
        let text = Report::new(&tr, &[], None).with_throttling(t).to_text();
        let quota = text.find("CPU quota:").expect("quota section");
        assert!(quota < text.find("TID").expect("table"), "{text}");
        assert_eq!(text.matches("CPU quota:").count(), 1, "{text}");
        assert!(
            text.contains("  cause: the quota: throttling held"),
            "{text}"
        );

        // The node was full and the wait mostly not throttling: in place.
        tr.threads[0].runnable_ns = 1_900_000_000;
        tr.system_busy_ns = BTreeMap::from([(0, 2_000_000_000)]);
        tr.nr_cpus = 1;
        let w = CpuStatDelta {
            throttled_ns: 100_000_000,
            ..w
        };
        tr.threads[0].preempted_wait_ns = 100_000_000;
        let t = crate::analyze::throttle::analyze(&tr, Some(&limit), Some(&w));
        assert_eq!(t.limit.cause, Some(crate::analyze::limit::Cause::Node));
        let text = Report::new(&tr, &[], None).with_throttling(t).to_text();
        let quota = text.find("CPU quota:").expect("quota section");
        assert!(quota > text.find("TID").expect("table"), "{text}");
        assert!(text.contains("  cause: a full node"), "{text}");
    }

    #[test]
    fn drops_are_reported_not_hidden() {
        let mut t = trace();
        t.dropped_events = 7;
        assert!(
            Report::new(&t, &[], None)
                .to_text()
                .contains("7 events were not recorded")
        );
    }

    #[test]
    fn kernel_warnings_are_counted_in_the_json_and_told_in_the_text() {
        let mut t = trace();
        let quiet = Report::new(&t, &[], None);
        let v: serde_json::Value = serde_json::from_str(&quiet.to_json()).unwrap();
        assert_eq!(v["kernel_warnings"], 0);
        assert!(!quiet.to_text().contains("logged"));
        t.kernel_warnings = 2;
        let r = Report::new(&t, &[], None);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["kernel_warnings"], 2);
        assert!(
            r.to_text().contains("logged 2 warning(s)"),
            "{}",
            r.to_text()
        );
    }

    #[test]
    fn migration_pairs_are_in_the_json_and_the_text() {
        let mut t = trace();
        t.migration_pairs = vec![
            MigrationPair {
                from: 0,
                to: 1,
                count: 2,
            },
            MigrationPair {
                from: 1,
                to: 0,
                count: 1,
            },
        ];
        let r = Report::new(&t, &[], None);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let pairs = &v["process"]["migration_pairs"];
        assert_eq!(pairs[0]["from"], 0);
        assert_eq!(pairs[0]["to"], 1);
        assert_eq!(pairs[0]["count"], 2);
        assert_eq!(pairs[1]["count"], 1);
        assert!(
            r.to_text()
                .contains("migrations by CPU pair: 0->1 2, 1->0 1")
        );
    }

    #[test]
    fn timeline_loss_is_reported_in_text_and_json() {
        let mut r = Report::new(&trace(), &[], None);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert!(v.get("timeline").is_none(), "no --timeline, no key");
        r.timeline = Some(TimelineJson {
            file: "/tmp/t.json".into(),
            events: 100,
            lost_events: 42,
            ring_buffer_bytes: 4096,
            truncated_events: 0,
            migration_flows: 3,
            cpu_slices: 50,
            neighbour_tracks: 1,
            format: "chrome",
            perfetto: None,
            latency: None,
        });
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["timeline"]["lost_events"], 42);
        assert_eq!(v["timeline"]["ring_buffer_bytes"], 4096);
        assert_eq!(v["timeline"]["file"], "/tmp/t.json");
        let text = r.to_text();
        assert!(text.contains("the timeline lost 42 events"), "{text}");
        assert!(text.contains("4 KiB ring buffer"), "{text}");
    }

    #[test]
    fn ns_formatting() {
        assert_eq!(fmt_ns(None), "-");
        assert_eq!(fmt_ns(Some(999)), "999ns");
        assert_eq!(fmt_ns(Some(1_500)), "1.5us");
        assert_eq!(fmt_ns(Some(2_500_000)), "2.5ms");
    }
}
