#!/bin/bash
# The agent's overhead at fleet scale (issue 15, "Overhead and soak"): a
# benchmark, not a timed test. Root; takes the machine-wide root-test lock.
#
#   sudo tests/scripts/serve_overhead.sh [CGROUPS] [THREADS_PER] [SECONDS]
#
# CGROUPS kubepods-shaped cgroups (default 100), each with a 0.1-CPU quota
# and one process of THREADS_PER threads (default 20) that wake once a
# second; `affin-trace serve --interval 15` traces them all while curl
# scrapes /metrics every 15 s and, every 15 s, one container goes away and
# a new one comes (churn). Prints the agent's CPU (share of one CPU over
# the run after a 30 s warm-up), resident memory at start and end of the
# measured part, series count, and with kernel.bpf_stats_enabled the
# programs' ns per event.
set -euo pipefail
N=${1:-100}; T=${2:-20}; SECS=${3:-180}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${AFFIN_TRACE_BIN:-$HERE/target/release/affin-trace}
WL=$HERE/target/release/workload
[ -x "$WL" ] || WL=$HERE/target/debug/workload
exec 9>/run/affin-trace-root-tests.lock
flock 9
MNT=$(awk '$3=="cgroup" && $4 ~ /(^|,)cpu(,|$)/ {print $2; exit}' /proc/mounts)
[ -n "$MNT" ] || MNT=/sys/fs/cgroup
TOP=$MNT/affin-bench-$$
LIST=/tmp/affin-bench-$$.list
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${AGENT:-}" ] && kill -TERM "$AGENT" 2>/dev/null && wait "$AGENT" 2>/dev/null || true
  sleep 0.5
  find "$TOP" -depth -type d -exec rmdir {} + 2>/dev/null || true
  sysctl -q kernel.bpf_stats_enabled="${STATS_WAS:-0}" || true
}
trap cleanup EXIT
STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled)
sysctl -q kernel.bpf_stats_enabled=1
mk() { # $1: index -> starts one container
  local uid; uid=$(printf '%08x-0000-4000-8000-%012x' "$1" "$1")
  local d=$TOP/kubepods/burstable/pod$uid/$(printf '%064x' "$1")
  mkdir -p "$d"; echo 100000 > "$d/cpu.cfs_period_us"; echo 10000 > "$d/cpu.cfs_quota_us"
  "$WL" nap "$T" 1000 3600000 & local p=$!
  echo "$p" > "$d/cgroup.procs"; PIDS+=("$p"); echo "$d $p" >> "$LIST"
}
: > "$LIST"; mkdir -p "$TOP"
for i in $(seq 1 "$N"); do mk "$i"; done
"$BIN" serve --listen 127.0.0.1:19465 --interval 15 2>/tmp/affin-bench-agent.err & AGENT=$!
sleep 2
cpu() { awk '{print $14+$15}' "/proc/$AGENT/stat"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$AGENT/status"; }
scrape() { curl -s 127.0.0.1:19465/metrics > /tmp/affin-bench-metrics.txt; }
next=$((N + 1))
churn_and_scrape() { # $1 seconds, 15 s steps
  local left=$1
  while [ "$left" -gt 0 ]; do
    sleep 15; left=$((left - 15)); scrape
    local line; line=$(head -1 "$LIST"); sed -i 1d "$LIST"
    local d=${line% *} p=${line#* }
    kill "$p"; wait "$p" 2>/dev/null || true; rmdir "$d" "$(dirname "$d")" 2>/dev/null || true
    mk "$next"; next=$((next + 1))
  done
}
churn_and_scrape 30
c0=$(cpu); r0=$(rss); t0=$(date +%s.%N)
churn_and_scrape "$SECS"
c1=$(cpu); r1=$(rss); t1=$(date +%s.%N)
hz=$(getconf CLK_TCK)
series=$(grep -vc '^#' /tmp/affin-bench-metrics.txt)
threads=$(awk '/^affin_trace_agent_tracked_threads/ {print $2}' /tmp/affin-bench-metrics.txt)
cgroups=$(awk '/^affin_trace_agent_tracked_cgroups/ {print $2}' /tmp/affin-bench-metrics.txt)
echo "cgroups traced: $cgroups, threads tracked: $threads, samples on /metrics: $series"
awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v hz="$hz" \
  'BEGIN { printf "agent CPU: %.3f%% of one CPU over %.0f s (interval 15 s, scrape 15 s, churn 1 container / 15 s)\n", 100*(c1-c0)/hz/(t1-t0), t1-t0 }'
echo "agent RSS: ${r0} kB after warm-up, ${r1} kB at the end"
bpftool prog show --json | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    n = p.get("name", "")
    cnt, ns = p.get("run_cnt", 0), p.get("run_time_ns", 0)
    if n.startswith(("btf_sched", "raw_sched", "btf_cgroup", "raw_cgroup")) and cnt:
        print("%s: %.0f ns per event over %d events" % (n, ns / cnt, cnt))
'
grep -i error /tmp/affin-bench-agent.err || true
