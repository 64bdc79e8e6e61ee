//! Real workloads reach the expected class on this machine (issue:
//! classification, root tests). Root only; one at a time.

use affinity_tests::*;

fn class_of(args: &[&str]) -> (String, serde_json::Value) {
    let w = workload();
    let mut cmd = vec![w.to_str().unwrap()];
    cmd.extend_from_slice(args);
    let run = trace_command(&["--interval", "0.5"], &cmd);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let class = run.json["classification"]["process"]["class"]
        .as_str()
        .unwrap_or_else(|| panic!("no class: {:#}", run.json))
        .to_string();
    (class, run.json)
}

#[test]
fn a_steady_busy_loop_is_cpu_intensive_steady() {
    require_root();
    let (class, json) = class_of(&["spin", "2000"]);
    assert_eq!(
        class, "cpu_intensive_steady",
        "{:#}",
        json["features"]["process"]
    );
    let r = &json["recommendation"];
    assert_eq!(r["cpus"].as_array().unwrap().len(), 1, "{r:#}");
    assert!(
        r["command"]
            .as_str()
            .unwrap()
            .starts_with("taskset -a -c -p")
    );
    let reasons = json["classification"]["process"]["reasons"].to_string();
    assert!(
        reasons.contains("> 80") && reasons.contains("< 100"),
        "{reasons}"
    );
}

#[test]
fn a_sleep_dominated_loop_is_io_bound() {
    require_root();
    let (class, json) = class_of(&["sleep", "1500"]);
    assert_eq!(class, "io_bound", "{:#}", json["features"]["process"]);
}

#[test]
fn a_thread_whose_affinity_is_flipped_is_migration_heavy() {
    require_root();
    let (class, json) = class_of(&["flip", "2000"]);
    assert_eq!(
        class, "migration_heavy",
        "{:#}",
        json["features"]["process"]
    );
    let flipped = json["classification"]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["comm"] == "flipped")
        .expect("flipped thread");
    assert_eq!(flipped["classification"]["class"], "migration_heavy");
    let rate = json["features"]["process"]["migration_rate"]
        .as_f64()
        .unwrap();
    assert!(rate > 100.0, "a flip every 5 ms: {rate}/s");
}
