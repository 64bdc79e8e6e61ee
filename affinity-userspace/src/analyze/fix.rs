//! The fix that fits the program: which knob sizes its threads and to what
//! value, from the [`RuntimeFacts`] `host::runtime` read. Pure.
//!
//! Runtimes that size their pools from the host's CPU count rather than
//! the cgroup quota: Go before 1.25 (GOMAXPROCS; 1.25+ reads the quota,
//! rounding it up, but never below 2: runtime/cgroup_linux.go), the JVM (`-XX:ActiveProcessorCount`; JDK 10+ reads the
//! quota), ffmpeg and its libx264/x265 (`-threads`), OpenMP and BLAS,
//! .NET, libuv, rayon and tokio, and multi-process programs such as
//! stress-ng (their own worker count).

use serde::Serialize;

use crate::model::runtime::RuntimeFacts;

/// How to run the program with `value` threads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fix {
    /// What the program is ("go1.19.8", "ffmpeg", "jvm", "openmp", ...;
    /// "unknown" when nothing matched).
    pub runtime: String,
    /// The knob: an environment variable, an option, or "threads".
    pub knob: String,
    /// The thread (or worker) count to set.
    pub value: u32,
    /// How to set it, one line ("GOMAXPROCS=1 ./prog").
    pub how: String,
}

/// A command line with the fix applied: its arguments and the variables
/// to set for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rerun {
    /// argv, argv[0] first.
    pub argv: Vec<String>,
    /// Set over the environment.
    pub env: Vec<(String, String)>,
}

impl Rerun {
    /// As a shell would show it ("GOMAXPROCS=1 ./spin 250").
    pub fn display(&self) -> String {
        self.env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain(self.argv.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Fix {
    /// `argv` with this fix applied, `None` where it is not something a
    /// rerun can set (a thread count the program has no knob for).
    pub fn rerun(&self, argv: &[String]) -> Option<Rerun> {
        let n = self.value.to_string();
        let mut out = Rerun {
            argv: argv.to_vec(),
            env: Vec::new(),
        };
        let set_option = |argv: &mut Vec<String>, opt: &str, at_end: bool| {
            if let Some(i) = argv.iter().rposition(|a| a == opt)
                && i + 1 < argv.len()
            {
                argv[i + 1] = n.clone();
            } else if at_end && argv.len() > 1 {
                // ffmpeg: an output option goes before the output file.
                let at = argv.len() - 1;
                argv.splice(at..at, [opt.to_string(), n.clone()]);
            } else {
                argv.splice(1..1, [opt.to_string(), n.clone()]);
            }
        };
        match self.knob.as_str() {
            "threads" | "processes" => return None,
            "-threads" => set_option(&mut out.argv, "-threads", true),
            "--threads" => set_option(&mut out.argv, "--threads", false),
            "-XX:ActiveProcessorCount" => {
                out.argv
                    .retain(|a| !a.starts_with("-XX:ActiveProcessorCount="));
                out.argv.insert(
                    1.min(out.argv.len()),
                    format!("-XX:ActiveProcessorCount={n}"),
                );
            }
            "-j" => {
                out.argv.retain(|a| !a.starts_with("-j"));
                out.argv.insert(1.min(out.argv.len()), format!("-j{n}"));
            }
            opt if opt.starts_with("--") => {
                // stress-ng's worker option: its value must be there.
                let i = out.argv.iter().position(|a| a == opt)?;
                *out.argv.get_mut(i + 1)? = n;
            }
            var => out.env.push((var.to_string(), n)),
        }
        Some(out)
    }
}

/// The x264/x265 encoder an ffmpeg runs: the one its arguments name
/// (Debian's libavcodec maps both libraries into every ffmpeg), else the
/// one mapped alone.
fn ffmpeg_encoder(f: &RuntimeFacts) -> Option<&'static str> {
    let named = |e: &str| f.args.iter().any(|a| a == e);
    match (named("libx264"), named("libx265")) {
        (true, false) => Some("libx264"),
        (false, true) => Some("libx265"),
        (true, true) => None,
        (false, false) => match (has_lib(f, "libx264"), has_lib(f, "libx265")) {
            (true, false) => Some("libx264"),
            (false, true) => Some("libx265"),
            _ => None,
        },
    }
}

/// Go minor version from "go1.19.8" (None if unparsable).
fn go_minor(v: &str) -> Option<u32> {
    let rest = v.strip_prefix("go1.")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn has_lib(f: &RuntimeFacts, prefix: &str) -> bool {
    f.libs.iter().any(|l| l.starts_with(prefix))
}

fn env_fix(runtime: &str, var: &str, n: u32, f: &RuntimeFacts) -> Fix {
    Fix {
        runtime: runtime.into(),
        knob: var.into(),
        value: n,
        how: format!("{var}={n} {}", f.exe),
    }
}

/// The worker-count option of a multi-process program such as stress-ng:
/// the first `--name N` pair of its arguments ("--cpu 4").
fn worker_option(args: &[String]) -> Option<&str> {
    args.windows(2)
        .find(|w| w[0].starts_with("--") && w[1].parse::<u32>().is_ok())
        .map(|w| w[0].as_str())
}

/// The fix for `facts` (or, without them, the main thread's name `comm`)
/// running `n` threads. The first runtime that matches names the knob, in
/// this order: Go, a program with its own option, worker processes, make,
/// then the runtimes sized by an environment variable.
pub fn fix_for(facts: Option<&RuntimeFacts>, comm: &str, n: u32) -> Fix {
    let Some(f) = facts else {
        return unknown(comm, n);
    };
    go_fix(f, n)
        .or_else(|| option_fix(f, n))
        .or_else(|| workers_fix(f, n))
        .or_else(|| {
            (f.exe == "make").then(|| Fix {
                runtime: "make".into(),
                knob: "-j".into(),
                value: n,
                how: format!("make -j{n}"),
            })
        })
        .or_else(|| env_runtime(f).map(|(runtime, var)| env_fix(runtime, var, n, f)))
        .unwrap_or_else(|| unknown(&f.exe, n))
}

/// "run NAME with N threads": no knob known.
fn unknown(name: &str, n: u32) -> Fix {
    Fix {
        runtime: "unknown".into(),
        knob: "threads".into(),
        value: n,
        how: format!(
            "run {} with {n} thread{}",
            if name.is_empty() { "it" } else { name },
            if n == 1 { "" } else { "s" }
        ),
    }
}

/// GOMAXPROCS, with what the binary's Go version does by itself.
fn go_fix(f: &RuntimeFacts, n: u32) -> Option<Fix> {
    let v = f.go_version.as_ref()?;
    let how = if go_minor(v).is_some_and(|m| m >= 25) {
        format!(
            "GOMAXPROCS={n} {} ({v} sizes GOMAXPROCS from the quota rounded up, and at least 2: \
             set it to the whole CPUs the quota grants)",
            f.exe
        )
    } else {
        format!(
            "GOMAXPROCS={n} {} ({v} sizes GOMAXPROCS from the host's CPUs, not the quota)",
            f.exe
        )
    };
    Some(Fix {
        runtime: v.clone(),
        knob: "GOMAXPROCS".into(),
        value: n,
        how,
    })
}

/// Programs with a thread-count option of their own: the JVM, ffmpeg,
/// x264 and x265.
fn option_fix(f: &RuntimeFacts, n: u32) -> Option<Fix> {
    let (runtime, knob, how) = if has_lib(f, "libjvm") || f.exe == "java" {
        (
            "jvm".to_string(),
            "-XX:ActiveProcessorCount",
            format!("java -XX:ActiveProcessorCount={n} ..."),
        )
    } else if f.exe == "ffmpeg" || f.exe == "ffprobe" {
        (
            match ffmpeg_encoder(f) {
                Some(e) => format!("ffmpeg ({e})"),
                None => "ffmpeg".into(),
            },
            "-threads",
            format!("ffmpeg -threads {n} ... (as an output option, before the output file)"),
        )
    } else if f.exe == "x264" || f.exe == "x265" {
        (
            f.exe.clone(),
            "--threads",
            format!("{} --threads {n} ...", f.exe),
        )
    } else {
        return None;
    };
    Some(Fix {
        runtime,
        knob: knob.into(),
        value: n,
        how,
    })
}

/// Multi-process programs: stress-ng's worker option, or as many worker
/// processes of a program that forks copies of itself.
fn workers_fix(f: &RuntimeFacts, n: u32) -> Option<Fix> {
    if f.exe == "stress-ng" {
        let opt = worker_option(&f.args).unwrap_or("--<stressor>");
        return Some(Fix {
            runtime: "stress-ng (processes)".into(),
            knob: opt.to_string(),
            value: n,
            how: format!("stress-ng {opt} {n} ... (one worker process per CPU of the quota)"),
        });
    }
    (f.same_exe_children > 0).then(|| Fix {
        runtime: format!("{} (processes)", f.exe),
        knob: "processes".into(),
        value: n,
        how: format!(
            "run {n} worker process{} of {}",
            if n == 1 { "" } else { "es" },
            f.exe
        ),
    })
}

/// The runtimes sized by an environment variable, found by a library the
/// process maps, its executable or its threads' names: (runtime, variable).
fn env_runtime(f: &RuntimeFacts) -> Option<(&'static str, &'static str)> {
    let thread = |prefix: &str| f.thread_names.iter().any(|t| t.starts_with(prefix));
    if has_lib(f, "libcoreclr") || f.exe == "dotnet" {
        Some(("dotnet", "DOTNET_PROCESSOR_COUNT"))
    } else if has_lib(f, "libmkl") {
        Some(("mkl", "MKL_NUM_THREADS"))
    } else if has_lib(f, "libopenblas") {
        Some(("openblas", "OPENBLAS_NUM_THREADS"))
    } else if has_lib(f, "libgomp") || has_lib(f, "libomp") || has_lib(f, "libiomp") {
        Some(("openmp", "OMP_NUM_THREADS"))
    } else if has_lib(f, "libuv") || f.exe == "node" {
        Some(("libuv", "UV_THREADPOOL_SIZE"))
    } else if thread("tokio-runtime") {
        Some(("tokio", "TOKIO_WORKER_THREADS"))
    } else if thread("rayon") {
        Some(("rayon", "RAYON_NUM_THREADS"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(exe: &str) -> RuntimeFacts {
        RuntimeFacts {
            exe: exe.into(),
            args: vec![exe.into()],
            ..RuntimeFacts::default()
        }
    }

    #[test]
    fn go_names_gomaxprocs_and_whether_the_version_follows_the_quota() {
        let mut f = facts("server");
        f.go_version = Some("go1.19.8".into());
        let x = fix_for(Some(&f), "server", 1);
        assert_eq!((x.knob.as_str(), x.value), ("GOMAXPROCS", 1));
        assert!(x.how.starts_with("GOMAXPROCS=1 server"), "{}", x.how);
        assert!(x.how.contains("not the quota"), "{}", x.how);
        f.go_version = Some("go1.25.1".into());
        assert!(
            fix_for(Some(&f), "server", 2)
                .how
                .contains("from the quota")
        );
    }

    #[test]
    fn rerun_sets_the_variable_or_the_option() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut go = facts("spin");
        go.go_version = Some("go1.19.8".into());
        let r = fix_for(Some(&go), "spin", 1)
            .rerun(&argv(&["./spin", "250"]))
            .unwrap();
        assert_eq!(r.display(), "GOMAXPROCS=1 ./spin 250");
        let mut ff = facts("ffmpeg");
        ff.libs = vec!["libx264.so.164".into()];
        let x = fix_for(Some(&ff), "ffmpeg", 1);
        let r = x
            .rerun(&argv(&[
                "ffmpeg", "-y", "-i", "in", "-c:v", "libx264", "out.mp4",
            ]))
            .unwrap();
        assert_eq!(
            r.argv,
            argv(&[
                "ffmpeg", "-y", "-i", "in", "-c:v", "libx264", "-threads", "1", "out.mp4"
            ])
        );
        assert!(r.env.is_empty());
        let r = x
            .rerun(&argv(&[
                "ffmpeg", "-i", "in", "-threads", "0", "-f", "null", "-",
            ]))
            .unwrap();
        assert_eq!(
            r.argv,
            argv(&["ffmpeg", "-i", "in", "-threads", "1", "-f", "null", "-"])
        );
        let mut s = facts("stress-ng");
        s.args = argv(&["stress-ng", "--cpu", "4", "--timeout", "5"]);
        let r = fix_for(Some(&s), "stress-ng", 1).rerun(&s.args).unwrap();
        assert_eq!(r.argv, argv(&["stress-ng", "--cpu", "1", "--timeout", "5"]));
        assert_eq!(
            fix_for(Some(&facts("spin")), "spin", 1).rerun(&argv(&["spin"])),
            None
        );
        let mut m = facts("make");
        m.args = argv(&["make", "-j8", "all"]);
        assert_eq!(
            fix_for(Some(&m), "make", 2).rerun(&m.args).unwrap().argv,
            argv(&["make", "-j2", "all"])
        );
    }

    #[test]
    fn ffmpeg_stress_ng_openmp_and_unknown() {
        let mut f = facts("ffmpeg");
        f.libs = vec!["libx264.so.164".into()];
        let x = fix_for(Some(&f), "ffmpeg", 1);
        assert_eq!(x.knob, "-threads");
        assert_eq!(x.runtime, "ffmpeg (libx264)");
        // Debian's ffmpeg maps both encoders: the arguments say which runs.
        f.libs = vec!["libx264.so.164".into(), "libx265.so.199".into()];
        assert_eq!(fix_for(Some(&f), "ffmpeg", 1).runtime, "ffmpeg");
        f.args = ["ffmpeg", "-i", "in", "-c:v", "libx264", "out.mp4"]
            .map(String::from)
            .to_vec();
        assert_eq!(fix_for(Some(&f), "ffmpeg", 1).runtime, "ffmpeg (libx264)");
        let mut s = facts("stress-ng");
        s.args = ["stress-ng", "--cpu", "4", "--timeout", "5"]
            .map(String::from)
            .to_vec();
        let x = fix_for(Some(&s), "stress-ng", 1);
        assert_eq!(x.knob, "--cpu");
        assert!(x.how.starts_with("stress-ng --cpu 1"), "{}", x.how);
        let mut o = facts("solver");
        o.libs = vec!["libgomp.so.1".into()];
        assert_eq!(
            fix_for(Some(&o), "solver", 2).how,
            "OMP_NUM_THREADS=2 solver"
        );
        let u = fix_for(Some(&facts("spin")), "spin", 1);
        assert_eq!(
            (u.runtime.as_str(), u.how.as_str()),
            ("unknown", "run spin with 1 thread")
        );
        assert_eq!(fix_for(None, "", 3).how, "run it with 3 threads");
    }
}
