//! Phase 4: start-up time, once cold (offsets cache deleted) then warm, from
//! affin-trace's own `--verbose` times and from outside, with peak RSS.

use super::parse::{median, min_max, verbose_ms};
use super::process::maxrss_kib;
use super::{ATTACH_TIMEOUT, Ctx, RUN_TIMEOUT};
use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use xtask::util::words;

const OFFSETS_CACHE: &str = "/run/affin-trace/btf-offsets";
pub const START_RUNS: usize = 10;

/// One start: affin-trace's `--verbose` times (ms from the start of its
/// session), the time to its `tracing at` line seen from outside, peak RSS.
#[derive(Serialize, Deserialize)]
pub struct StartRun {
    pub maxrss_kib: u64,
    pub offsets_ms: f64,
    pub attached_ms: f64,
    pub tracing_ms: f64,
    pub external_ms: f64,
}

#[derive(Serialize, Deserialize)]
pub struct Startup {
    pub cold: StartRun,
    pub warm: Vec<StartRun>,
}

fn start_once(ctx: &Ctx) -> Result<StartRun> {
    let args = format!("--pid {} --duration 0.2 --interval 0.2", ctx.unrelated);
    let out = ctx.file("start.json");
    let mut t = ctx.tracer("affin-trace (start-up)", &out, words(&args), &[])?;
    let external = t.wait_line(true, "tracing at", ATTACH_TIMEOUT)?;
    // It ends by itself after 0.2 s.
    let ru = t.wait_ok(RUN_TIMEOUT)?;
    let get = |what: &str| {
        verbose_ms(&t.stderr, what).with_context(|| format!("no {what:?} in: {}", t.output_tail()))
    };
    Ok(StartRun {
        maxrss_kib: maxrss_kib(&ru),
        offsets_ms: get("offsets resolved")?,
        attached_ms: get("programs attached")?,
        tracing_ms: get("tracing at")?,
        external_ms: external.as_secs_f64() * 1e3,
    })
}

pub fn phase(ctx: &Ctx) -> Result<Startup> {
    match std::fs::remove_file(OFFSETS_CACHE) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {OFFSETS_CACHE}")),
    }
    let cold = start_once(ctx)?;
    println!("bench: start-up cold: tracing at {:.1} ms", cold.tracing_ms);
    let mut warm = Vec::new();
    for _ in 0..START_RUNS {
        warm.push(start_once(ctx)?);
    }
    let v: Vec<f64> = warm.iter().map(|s| s.tracing_ms).collect();
    println!(
        "bench: start-up warm: median {:.1} ms, max {:.1} ms",
        median(&v),
        min_max(&v).1
    );
    Ok(Startup { cold, warm })
}
