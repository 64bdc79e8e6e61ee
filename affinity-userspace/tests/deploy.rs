//! deploy/ checked without a cluster: the DaemonSet and Service against the
//! Kubernetes schemas (kubernetes-validate, offline, installed by `cargo
//! xtask setup`), the PodMonitor against the schema kept in
//! deploy/kubernetes/schema, the systemd unit with `systemd-analyze
//! verify`, the agent's arguments in both through the real argument
//! parser, and every metric the Grafana dashboard queries against what
//! `/metrics` exposes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use affinity::serve::metrics::{
    AgentRow, CgroupRow, Shared, Snapshot, running_buckets, runq_buckets,
};
use clap::Parser as _;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn venv_bin(name: &str) -> PathBuf {
    let p = repo().join("target/venv-k8s/bin").join(name);
    assert!(
        p.exists(),
        "{} missing: `cargo xtask setup` installs kubernetes-validate into target/venv-k8s",
        p.display()
    );
    p
}

fn run(cmd: &mut Command) -> (bool, String) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn daemonset_and_service_pass_the_kubernetes_schemas_strictly() {
    let k8s = repo().join("deploy/kubernetes");
    let (ok, out) = run(Command::new(venv_bin("kubernetes-validate"))
        .arg("--strict")
        .arg(k8s.join("daemonset.yaml"))
        .arg(k8s.join("service.yaml")));
    assert!(ok, "{out}");
    for kind in [
        "namespace/affin-trace",
        "daemonset/affin-trace",
        "service/affin-trace",
    ] {
        assert!(
            out.contains(&format!("passed for resource {kind}")),
            "{out}"
        );
    }
    // The validator does reject: a misspelt field fails.
    let bad = std::env::temp_dir().join(format!("affin-bad-ds-{}.yaml", std::process::id()));
    let text = std::fs::read_to_string(k8s.join("daemonset.yaml")).unwrap();
    std::fs::write(&bad, text.replace("hostPID: true", "hostPid: true")).unwrap();
    let (ok, out) = run(Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "--quiet"])
        .arg(&bad));
    let _ = std::fs::remove_file(&bad);
    assert!(!ok && out.contains("hostPid"), "{out}");
}

#[test]
fn podmonitor_passes_its_schema_and_a_typo_does_not() {
    let k8s = repo().join("deploy/kubernetes");
    let script = r#"
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
doc = yaml.safe_load(open(sys.argv[2]))
jsonschema.validate(doc, schema)
doc["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
try:
    jsonschema.validate(doc, schema)
except jsonschema.ValidationError:
    print("typo rejected")
"#;
    let (ok, out) = run(Command::new(venv_bin("python"))
        .args(["-c", script])
        .arg(k8s.join("schema/podmonitor.schema.json"))
        .arg(k8s.join("podmonitor.yaml")));
    assert!(ok, "{out}");
    assert!(out.contains("typo rejected"), "{out}");
    let text = std::fs::read_to_string(k8s.join("podmonitor.yaml")).unwrap();
    assert!(
        text.contains("port: metrics"),
        "scrapes the DaemonSet's named port"
    );
}

/// The `affin-trace` arguments of a manifest line list, as clap parses them.
fn parses(args: &[&str]) {
    let argv: Vec<&str> = std::iter::once("affin-trace")
        .chain(args.iter().copied())
        .collect();
    let cli = affinity::cli::Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("{argv:?} does not parse: {e}"));
    assert!(
        matches!(cli.command, Some(affinity::cli::Command::Serve(_))),
        "{argv:?}"
    );
}

#[test]
fn the_manifests_run_the_agent_with_arguments_it_accepts() {
    let ds = std::fs::read_to_string(repo().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    let args: Vec<String> = ds
        .split("args:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| l.trim_start().starts_with("- "))
        .map(|l| {
            l.trim()
                .trim_start_matches("- ")
                .trim_matches('"')
                .to_string()
        })
        .map(|a| a.replace("$(POD_IP)", "10.1.2.3"))
        .collect();
    assert_eq!(args[0], "serve", "{args:?}");
    parses(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let unit = std::fs::read_to_string(repo().join("deploy/systemd/affin-trace.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/affin-trace"));
    let args: Vec<&str> = words.collect();
    parses(&args);
    assert!(
        exec.contains("127.0.0.1:"),
        "the unit listens on this host only"
    );

    // systemd's own check, on a copy pointing at the binary just built.
    let copy = std::env::temp_dir().join(format!("affin-trace-{}.service", std::process::id()));
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/affin-trace",
            env!("CARGO_BIN_EXE_affin-trace"),
        ),
    )
    .unwrap();
    let (ok, out) = run(Command::new("systemd-analyze").arg("verify").arg(&copy));
    let _ = std::fs::remove_file(&copy);
    assert!(ok, "systemd-analyze verify: {out}");
}

/// Every sample name `/metrics` can carry, from an exposition with every
/// optional figure present.
fn exposed_names() -> BTreeSet<String> {
    let s = Shared::default();
    s.set(Snapshot {
        cgroups: vec![CgroupRow {
            labels: vec![("cgroup", "/x".into())],
            quota_cores: Some(1.0),
            periods: Some(1),
            throttled_periods: Some(1),
            throttled_seconds: Some(1.0),
            running_threads: Some(running_buckets(&[0, 1, 2], 2)),
            pressure_some_seconds: Some(1.0),
            runq: runq_buckets(&[1], 1),
            ..CgroupRow::default()
        }],
        agent: AgentRow {
            bpf_run_seconds: Some(vec![("btf_sched_switch".into(), 1.0)]),
            ..AgentRow::default()
        },
    });
    s.encode()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(String::from)
        .collect()
}

#[test]
fn every_dashboard_query_names_an_exposed_metric() {
    let exposed = exposed_names();
    let text = std::fs::read_to_string(repo().join("deploy/grafana/affin-trace.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"].as_str() {
            exprs.push(q.to_string());
        }
    }
    let mut used = BTreeSet::new();
    for e in &exprs {
        for (i, _) in e.match_indices("affin_trace_") {
            let name: String = e[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                exposed.contains(&name),
                "{name} (in {e}) is not exposed: {exposed:?}"
            );
            used.insert(name);
        }
    }
    for must in [
        "affin_trace_cgroup_throttled_seconds_total",
        "affin_trace_cgroup_recommended_threads",
        "affin_trace_cgroup_running_threads_bucket",
    ] {
        assert!(used.contains(must), "the dashboard has a {must} panel");
    }
}
