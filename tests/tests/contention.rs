//! Advice that holds (issue 13, kernel-backed items): the wait split and
//! demand of a starved spinner, the neighbour that took its CPU, and the
//! processes a target starts or that join its cgroup. Root only; one at a
//! time.

use std::process::{Command, Stdio};

use affinity_tests::cgroup::TestCgroup;
use affinity_tests::*;
use serde_json::Value;

const MS: u64 = 1_000_000;

/// A hog pinned to CPU 1 next to a target spinner pinned there too: the
/// target waits runnable about as long as the hog holds the CPU, is
/// CPU-intensive on demand, the contention finding names the hog, and the
/// recommendation does not shrink it.
#[test]
fn a_pinned_hog_next_to_a_spinner_is_named_and_the_target_is_not_shrunk() {
    require_root();
    let w = workload();
    let hog = Hog::start(1, 20_000);
    let hog_pid = hog.pid().to_string();
    let steal_before = steal_ns();
    let run = trace_command(
        &["--interval", "0.5"],
        &[w.to_str().unwrap(), "pinspin", "1", "1500", &hog_pid],
    );
    drop(hog);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let j = &run.json;
    let hog_ns = printed(&run.stdout, "hog_ns");
    let tid = printed(&run.stdout, "tid");
    let t = thread_by_tid(j, tid);
    let split = &t["wait_split"];
    assert_split_adds_up(split, steal_ns() - steal_before);
    let (running, runnable) = (u(&split["running_ns"]), u(&split["runnable_ns"]));
    // It spun 1.5 s of CPU; the hog held CPU 1 for about as long.
    assert!((1500 * MS..1600 * MS).contains(&running), "{split:#}");
    assert!(hog_ns > 1000 * MS, "the hog barely ran: {hog_ns}");
    // Every wait is a CPU held by someone else: mostly the hog, plus what
    // other processes on this shared machine ran on CPU 1 meanwhile.
    assert!(
        runnable as f64 >= 0.9 * hog_ns as f64,
        "runnable {runnable} vs hog {hog_ns}: {split:#}"
    );
    let c = &j["contention"];
    // On a quiet machine the hog is the top neighbour; on a shared one it
    // is among the top ones, charged what it really ran.
    let hog = c["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["tgid"].as_u64() == hog_pid.parse().ok())
        .unwrap_or_else(|| panic!("the hog is not among the neighbours: {c:#}"));
    assert_eq!(hog["comm"], "workload", "{c:#}");
    assert!(hog["cgroup"].as_str().unwrap().starts_with('/'), "{c:#}");
    let charged = u(&hog["wait_ns"]);
    assert!(
        (charged as f64 - hog_ns as f64).abs() <= 0.1 * hog_ns as f64,
        "charged {charged} vs hog {hog_ns}"
    );
    let share = hog["wait_share"].as_f64().unwrap();
    assert!(
        (share - charged as f64 / runnable as f64).abs() < 1e-6,
        "{c:#}"
    );
    let finding = c["finding"].as_str().expect("a finding");
    assert!(finding.contains("waited"), "{finding}");
    if c["neighbours"][0]["tgid"].as_u64() == hog_pid.parse().ok() {
        assert!(
            finding.contains(&format!("workload pid {hog_pid}")),
            "{finding}"
        );
    }
    let class = j["classification"]["process"]["class"].as_str().unwrap();
    assert!(
        class.starts_with("cpu_intensive"),
        "{class}: {:#}",
        j["classification"]
    );
    let r = &j["recommendation"];
    assert!(!r["cpus"].as_array().unwrap().is_empty(), "{r:#}");
    let rationale = r["rationale"].to_string();
    assert!(
        rationale.contains("contention: move workload"),
        "{rationale}"
    );
    assert!(rationale.contains("own cores"), "{rationale}");
    // Demand, not usage, sized it.
    let f = &j["features"]["process"];
    assert!(f["demand_parallelism"].as_f64().unwrap() > 0.9, "{f:#}");
}

/// `-- sh -c 'spinner & spinner & wait'`: both children are traced from
/// their first instruction and their CPU time is reported.
#[test]
fn children_of_a_command_are_followed_from_their_first_instruction() {
    require_root();
    let w = workload();
    let script = format!("{0} spin 1500 & {0} spin 1500 & wait", w.display());
    let run = trace_command(&["--interval", "0.5"], &["sh", "-c", &script]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let j = &run.json;
    let spun: u64 = j["threads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["comm"] == "workload")
        .map(|t| u(&t["cpu_time_ns"]))
        .sum();
    // Each spins 1.5 s of its own CPU time, plus its start-up.
    assert!(
        (3000 * MS..3100 * MS).contains(&spun),
        "children's CPU time {spun}: {j:#}"
    );
    let followed = &j["contention"]["followed"];
    assert!(u(&followed["followed"]) >= 2, "{followed:#}");
    assert_eq!(u(&followed["missed"]), 0, "{followed:#}");
    let total = u(&j["process"]["cpu_time_ns"]);
    assert!(total >= spun, "{total} < {spun}");
}

/// With `--pid` and no `--follow`, children are not traced, and the report
/// says how many were missed.
#[test]
fn children_missed_without_follow_are_counted() {
    require_root();
    let w = workload();
    let script = format!("read go; {0} spin 200 & {0} spin 200 & wait", w.display());
    let mut sh = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .spawn()
        .expect("sh");
    let pid = sh.id().to_string();
    let tracer = Tracer::start(&["--pid", &pid, "--duration", "30", "--interval", "0.5"]);
    {
        use std::io::Write as _;
        sh.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }
    assert!(sh.wait().unwrap().success());
    let (code, j) = tracer.finish();
    assert_eq!(code, 0);
    let followed = &j["contention"]["followed"];
    assert_eq!(u(&followed["followed"]), 0, "{followed:#}");
    assert!(u(&followed["missed"]) >= 2, "{followed:#}");
}

fn sum_by_tgid(j: &Value, pid: u64) -> u64 {
    j["threads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| u(&t["tgid"]) == pid)
        .map(|t| u(&t["cpu_time_ns"]))
        .sum()
}

/// `--cgroup`: processes started into the cgroup during the window are
/// covered within 2% of the CPU time they used (their own schedstat).
#[test]
fn processes_joining_the_cgroup_during_the_window_are_covered() {
    require_root();
    let name = format!("affin-join-{}", std::process::id());
    // No real limit (8 CPUs of quota): only membership matters here.
    let cg = TestCgroup::create_v1_cpu(&name, 800_000, 100_000).expect("test cgroup");
    let mut resident = Command::new("sleep").arg("60").spawn().expect("sleep");
    cg.add(resident.id()).expect("add");
    let dir = cg.path().display().to_string();
    let tracer = Tracer::start(&["--cgroup", &dir, "--duration", "6", "--interval", "0.5"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let w = workload();
    let joiners: Vec<_> = (0..2)
        .map(|_| {
            let script = format!(
                "echo $$ > {dir}/cgroup.procs && exec {} spinstat 500",
                w.display()
            );
            Command::new("sh")
                .args(["-c", &script])
                .stdout(Stdio::piped())
                .spawn()
                .expect("joiner")
        })
        .collect();
    let outs: Vec<String> = joiners
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().expect("joiner");
            assert!(o.status.success());
            String::from_utf8_lossy(&o.stdout).into_owned()
        })
        .collect();
    let (code, j) = tracer.finish();
    let _ = resident.kill();
    let _ = resident.wait();
    assert_eq!(code, 0);
    let mut truth = 0;
    let mut seen = 0;
    for out in &outs {
        let pid = printed(out, "pid");
        truth += printed(out, "schedstat");
        seen += sum_by_tgid(&j, pid);
    }
    assert!(truth >= 1000 * MS, "{truth}");
    let err = (seen as f64 - truth as f64).abs() / truth as f64;
    assert!(
        err <= 0.02,
        "covered {seen} of {truth} ns ({:.1}%)",
        err * 100.0
    );
    assert!(
        u(&j["contention"]["followed"]["joined"]) >= 2,
        "{:#}",
        j["contention"]
    );
}
