//! Trust under attack (issue 18): the revert record, files root writes,
//! pid namespaces, hostile thread names. Root only; one at a time.

use std::{
    collections::BTreeMap,
    io::BufRead as _,
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Command, Stdio},
};

use affinity_tests::*;
use nix::{sched::CpuSet, unistd::Pid};

/// Cpus_allowed_list of every thread of `pid`, by tid.
fn masks(pid: u32) -> BTreeMap<u32, String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read(e.path().join("status")).ok()?;
            let status = String::from_utf8_lossy(&status);
            let list = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
                .trim()
                .to_string();
            Some((tid, list))
        })
        .collect()
}

fn pin(tid: u32, cpus: &[usize]) {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c).unwrap();
    }
    nix::sched::sched_setaffinity(Pid::from_raw(tid as i32), &set).unwrap();
}

/// A workload started outside affin-trace, past its `ready` line; killed on
/// drop.
struct Work(std::process::Child);

impl Work {
    fn start(args: &[&str]) -> Work {
        let mut c = Command::new(workload())
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(c.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Work(c)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A workload with `n` sleeping threads, all of them started.
fn idle(n: u32) -> Work {
    let w = Work::start(&["idle", &n.to_string(), "20000"]);
    for _ in 0..100 {
        if masks(w.pid()).len() as u32 == n + 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    w
}

fn apply(pid: u32, cpus: &str) -> Run {
    run(&[
        "--pid",
        &pid.to_string(),
        "--duration",
        "0.3",
        "--apply",
        "--cpus",
        cpus,
        "--yes",
    ])
}

fn revert(pid: u32) -> std::process::Output {
    Command::new(affin_trace())
        .args(["revert", "--pid", &pid.to_string()])
        .output()
        .unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// 1. The revert record is kept from the first apply.
#[test]
fn a_second_apply_keeps_the_masks_from_before_the_first() {
    require_root();
    let w = idle(3);
    let pid = w.pid();
    let tids: Vec<u32> = masks(pid).into_keys().collect();
    pin(tids[1], &[0]);
    let before = masks(pid);
    let first = apply(pid, "1");
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(masks(pid).values().all(|m| m == "1"));
    let second = apply(pid, "0");
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(masks(pid).values().all(|m| m == "0"));
    let out = revert(pid);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(masks(pid), before, "revert went back to the first apply's CPUs");
}
