#!/usr/bin/env bash
# The paper's cold-start sweep (Fig. 7, issue 7): cold starts per second against end-to-end
# latency, with emulated sandboxes or real containers (crun).
#
# For each rate R: a FRESH cluster (dirigent-cp, dirigent-dp, one dirigent-worker, ephemeral
# ports on 127.0.0.1; restarted for every step so that no step inherits the previous one's
# thousands of functions or its scale-downs), then
#   dirigent load rps --cold --keep --cooldown 10 --rate R --duration STEP --csv ... (--keep: the
#   cluster is thrown away after the step anyway)
# which registers ceil(R x 10) functions (cold_start_sweep profile: upper bound 1, 6 s stable
# window) and invokes each once per 10 s, open loop, so every call finds its function at zero.
# The first WARMUP seconds of each step are not counted (rows by start_ms): the measured part
# comes after the first functions' scale-downs begin (~4-5 s), so scale-downs and scale-ups
# overlap in it as in a long run. Each step's statistics come from its per-invocation CSV.
# The rate rises until p99 > the bound or an error (then one more step) and the script prints
# the highest rate with p99 <= bound and no errors (every lower rate passing too).
#
#   bench/coldstart_sweep.sh [--runtime emulated|oci] [--quick] [--build DIR] [--out DIR]
#                            [--bound-ms 50] [--rates "R1 R2 ..."] [--step S] [--warmup S]
#                            [--nodes N] [--wait-idle S] [--one-cluster [--hold S]] [--dataplanes N]
#                            [--hold-rate R] [--check-leftovers]
# --one-cluster (issue 16): ONE cluster for every step (functions, sandboxes and lists
# accumulate as in a long run: each step's functions stay registered), then a hold of --hold S
# (60; --quick 10) at the best rate on that same cluster (a row with phase "hold"). Its files
# are named _onecluster, so they sit next to a fresh-cluster sweep's.
# --hold-rate R (issue 16, bench/oci_floor.sh): no sweep, only the hold, at R/s (implies
# --one-cluster). --check-leftovers (oci): after the one cluster's clean stop and before this
# script's own clean-up, count what the worker left: containers under its crun root, mounts
# under its directories, namespace files, veths and cgroups named from its instance (RESULT
# left_*=N; the run fails when any is left).
# --dataplanes N: N data planes, the load generator spreading its functions over them
#      (`load --dp A,B,...`, no HAProxy in between).
# emulated: one worker as --nodes (20) emulated nodes, 0 ms create delay.
# --wait-idle S: before each step wait up to S s for the machine to be idle (< 15% of one CPU
# busy in each of 3 s in a row). Every step records other_cpu_pct: the CPU that processes not
# started by this script used during it (this machine is shared).
# oci: root and crun; image oci:BUILD/images/dirigent-fn:latest; bridge dgsw0, sandboxes on
#      100.118.0.0/20; leaves the CP's cold_start_trace.csv (all steps) in OUT.
# Writes OUT/coldstart_sweep_RUNTIME.csv (one row per step), the per-step per-invocation CSVs
# gzipped and the daemons' warnings in OUT/raw/, and with oci OUT/cold_start_trace.csv (OUT:
# bench/results; --quick writes to a scratch directory (mktemp, printed) unless --out is given,
# never to bench/results, and adds _quick to every name).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."
RUNTIME=emulated
BUILD=build
OUT=""
BOUND=50
ONE=0 HOLD="" HOLD_RATE="" LEFT=0 LEFT_RES="" LEFT_N=0
QUICK=0
RATES="" STEP="" WARM="" NODES=20 WAIT_IDLE=0 NDP=1
usage() { echo "usage: $0 [--runtime emulated|oci] [--quick] [--build DIR] [--out DIR] [--bound-ms MS] [--rates LIST] [--step S] [--warmup S] [--nodes N] [--wait-idle S] [--one-cluster [--hold S]] [--dataplanes N] [--hold-rate R] [--check-leftovers]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --runtime) RUNTIME=$2; shift;;
    --quick) QUICK=1;;
    --build) BUILD=$2; shift;;
    --out) OUT=$2; shift;;
    --bound-ms) BOUND=$2; shift;;
    --rates) RATES=$2; shift;;
    --step) STEP=$2; shift;;
    --warmup) WARM=$2; shift;;
    --nodes) NODES=$2; shift;;
    --wait-idle) WAIT_IDLE=$2; shift;;
    --one-cluster) ONE=1;;
    --hold) HOLD=$2; shift;;
    --dataplanes) NDP=$2; shift;;
    --hold-rate) HOLD_RATE=$2; ONE=1; shift;;
    --check-leftovers) LEFT=1;;
    *) usage;;
  esac
  shift
done
case "$RUNTIME" in emulated|oci) ;; *) usage;; esac
if [ "$RUNTIME" = oci ] && { [ "$(id -u)" != 0 ] || ! command -v crun >/dev/null; }; then
  echo "coldstart_sweep: --runtime oci needs root and crun: skipped"; exit 0
fi
# defaults: full 15 s steps, the first 8 s not counted; quick: two 9 s steps (5 s not counted)
if [ "$QUICK" = 1 ]; then
  : "${STEP:=9}" "${WARM:=5}"
  [ "$RUNTIME" = emulated ] && : "${RATES:=800 3200}"
  [ "$RUNTIME" = oci ] && : "${RATES:=5 20}"
  : "${HOLD:=10}"
  if [ -z "$OUT" ]; then OUT=$(mktemp -d /tmp/dg-sweep-quick.XXXXXX); fi
else
  : "${STEP:=15}" "${WARM:=8}"
  [ "$RUNTIME" = emulated ] && : "${RATES:=200 400 800 1200 1600 2000 2400 3200 4000 5000 6000 8000 10000}"
  [ "$RUNTIME" = oci ] && : "${RATES:=2 5 10 20 40 60 80 100 150 200}"
  : "${HOLD:=60}" "${OUT:=bench/results}"
fi
[ -n "$HOLD_RATE" ] && RATES="" # only the hold
SUFFIX=$RUNTIME$([ "$ONE" = 1 ] && echo _onecluster || true)$([ "$QUICK" = 1 ] && echo _quick || true)
B=$(cd "$BUILD" && pwd)
mkdir -p "$OUT/raw"
OUT=$(cd "$OUT" && pwd)
if [ "$QUICK" = 1 ] && [ "$OUT" = "$(pwd)/bench/results" ]; then
  echo "coldstart_sweep: --quick never writes to bench/results (the committed figures)" >&2; exit 2
fi
IMG=$B/images/dirigent-fn
IMAGE_ARGS=()
if [ "$RUNTIME" = oci ]; then
  [ -f "$IMG/index.json" ] || { echo "coldstart_sweep: no image at $IMG (make image)" >&2; exit 1; }
  IMAGE_ARGS=(--image "oci:$IMG:latest")
fi
TMP=$(mktemp -d /tmp/dg-sweep.XXXXXX)
BR=dgsw0
WNAME=sweep-$$
PIDS=()

# leftovers WORKERLOG: what the stopped worker left on the host (--check-leftovers); the
# veth prefix and the cgroup are the ones its log names ("instance ...: ... veths P<N>, ...,
# cgroup C (from ...)"); -1 when the log does not name them
leftovers() {
  local vp cg c m ns v=-1 g=-1
  vp=$(sed -n 's/.*, veths \([^ ]*\)<N>,.*/\1/p' "$1" | head -1)
  cg=$(sed -n 's/.*, cgroup \([^ ]*\) (from .*/\1/p' "$1" | head -1)
  c=$(crun --root "$TMP/run/crun" list -q 2>/dev/null | grep -c . || true)
  m=$(grep -c " $TMP/" /proc/self/mountinfo || true)
  ns=$({ find "$TMP/run/netns" -mindepth 1 2>/dev/null || true; } | wc -l)
  [ -n "$vp" ] && v=$(ls /sys/class/net | grep -c "^$vp" || true)
  [ -n "$cg" ] && g=$({ find /sys/fs/cgroup/*/"$cg" -type d 2>/dev/null || true; } | wc -l)
  LEFT_RES=" left_containers=$c left_mounts=$m left_netns=$ns left_veths=$v left_cgroups=$g"
  LEFT_N=$((c + m + ns + (v < 0 ? 1 : v) + (g < 0 ? 1 : g)))
  echo "left over after the worker's stop: $c containers (crun root $TMP/run/crun), $m mounts under $TMP, $ns namespace files, $v veths ${vp:-?}*, $g cgroups ${cg:-?}"
}

stop_cluster() {
  # SIGTERM first: the oci worker deletes its containers, namespaces and cgroups on the way out
  stop_pids 30
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
  if [ "$LEFT" = 1 ] && [ "$RUNTIME" = oci ] && [ -z "$LEFT_RES" ] && [ -f "$CL/wk.log" ]; then
    LEFT=0; leftovers "$CL/wk.log"
  fi
  if [ "$RUNTIME" = oci ]; then # whatever a killed worker left
    for id in $(crun --root "$TMP/run/crun" list -q 2>/dev/null); do crun --root "$TMP/run/crun" delete -f "$id" >/dev/null 2>&1 || true; done
    { grep -o " $TMP/[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done; } || true
    for l in /sys/class/net/"${BR:0:5}"v*; do [ -e "$l" ] || continue; ip link del "${l##*/}" 2>/dev/null || true; done
    rmdir /sys/fs/cgroup/*/dirigent/"$WNAME"/* /sys/fs/cgroup/*/dirigent/"$WNAME" 2>/dev/null || true
    rm -rf "$TMP/run"
  fi
}
cleanup() {
  stop_cluster
  if [ "$RUNTIME" = oci ]; then
    ip link del "$BR" 2>/dev/null || true
    rmdir /sys/fs/cgroup/*/dirigent 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# start_cluster DIR: CP, DP, worker with fresh state in DIR; sets REG and DP
start_cluster() {
  local d=$1 trace="" wargs=() want_workers
  mkdir -p "$d"
  [ "$RUNTIME" = oci ] && trace=$d/trace
  # emulated nodes cost nothing: the quotas, sized for real hosts, would cap the sweep
  # (ceil(R x 10) functions, thousands of sandboxes per node); docs/security.md
  local quotas=()
  [ "$RUNTIME" = emulated ] && quotas=(--maxFunctions 0 --maxSandboxesPerFunction 0 --maxSandboxesPerWorker 0 --maxSandboxes 0 --maxCreatesPerWorkerPerSecond 0)
  "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --heartbeatInterval 1s --dataDir "$d/cp" \
    --traceOutputFolder "$trace" --logLevel warn "${quotas[@]}" >"$d/cp.log" 2>&1 &
  PIDS+=($!)
  wait_log "$d/cp.log" 'registration on'
  local cpi
  cpi=127.0.0.1:$(port_of "$d/cp.log" 'internal api on')
  REG=127.0.0.1:$(port_of "$d/cp.log" 'registration on')
  local k
  for ((k = 0; k < NDP; k++)); do # dp.log, then dp1.log ...
    "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --controlPlaneAddress "$cpi" --heartbeatInterval 1s \
      --traceOutputFolder "" --coldStartTimeout 30s --logLevel warn >"$d/dp${k#0}.log" 2>&1 &
    PIDS+=($!)
  done
  if [ "$RUNTIME" = emulated ]; then
    wargs=(--runtime emulated --emulatedCreateDelayMs 0 --emulatedNodes "$NODES" --name emu)
    want_workers=$NODES
  else
    wargs=(--runtime oci --name "$WNAME" --runDir "$TMP/run" --dataDir "$TMP/data" --bridge "$BR"
           --sandboxSubnet 100.118.0.0/20 --netnsPool 64 --killGrace 200ms
           --cpuMilli 1000000 --memoryMiB 1000000 --prefetchImages "oci:$IMG:latest")
    want_workers=1
  fi
  "$B/dirigent-worker" --port 0 --controlPlaneAddress "$cpi" --heartbeatInterval 1s --logLevel warn \
    "${wargs[@]}" ${DG_WORKER_ARGS:-} >"$d/wk.log" 2>&1 & # DG_WORKER_ARGS: extra worker options (issue 16: --logLevel debug for the delete timeline)
  PIDS+=($!)
  DP=""
  for ((k = 0; k < NDP; k++)); do
    wait_log "$d/dp${k#0}.log" 'proxy on'
    DP=$DP${DP:+,}127.0.0.1:$(port_of "$d/dp${k#0}.log" 'proxy on')
  done
  wait_log "$d/wk.log" 'listening on'
  local i=0
  until [ "$(curl -s "http://$REG/v1/status" | /usr/bin/python3 -c 'import json,sys; s=json.load(sys.stdin); print(len(s["workers"]), len(s["dataplanes"]))' 2>/dev/null)" = "$want_workers $NDP" ]; do
    i=$((i + 1)); [ $i -lt 200 ] || { echo "cluster did not register" >&2; return 1; }; sleep 0.05
  done
  [ "$RUNTIME" = oci ] && sleep 1 # the prefetch and the namespace pool fill
  return 0
}

# CPU of every process that is not ours (this script's descendants; kernel threads left out),
# from two snapshots of /proc/PID/stat: what else ran on the machine during a step
cpu_snap() {
  /usr/bin/python3 - >"$1" <<'EOF'
import os
for p in os.listdir("/proc"):
    if not p.isdigit(): continue
    try: s = open(f"/proc/{p}/stat").read()
    except OSError: continue
    f = s[s.rfind(")") + 2:].split()
    print(p, f[1], int(f[11]) + int(f[12]))
EOF
}
other_cpu() { # SNAP0 SNAP1 SECONDS: % of one CPU used by others during the step
  /usr/bin/python3 - "$1" "$2" "$3" "$$" <<'EOF'
import os, sys
def load(p):
    return {int(a): (int(b), int(c)) for a, b, c in (l.split() for l in open(p))}
s0, s1, secs, me = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
ours = {me}
changed = True
while changed:
    changed = False
    for pid, (pp, _) in s1.items():
        if pp in ours and pid not in ours:
            ours.add(pid); changed = True
other = sum(t - s0.get(pid, (0, 0))[1] for pid, (pp, t) in s1.items()
            if pid not in ours and pid != 2 and pp != 2)
print(f"{100 * other / os.sysconf('SC_CLK_TCK') / secs:.0f}")
EOF
}

# wait up to WAIT_IDLE s until the machine (nothing of ours runs between steps) is idle
wait_idle() {
  [ "$WAIT_IDLE" -gt 0 ] || return 0
  /usr/bin/python3 - "$WAIT_IDLE" <<'EOF'
import sys, time
def busy():
    v = list(map(int, open("/proc/stat").readline().split()[1:]))
    return sum(v) - v[3] - v[4], sum(v)
end = time.time() + float(sys.argv[1])
ncpu = len([l for l in open("/proc/stat") if l.startswith("cpu") and l[3].isdigit()])
quiet = 0
while quiet < 3:  # 3 quiet seconds in a row
    b0, t0 = busy(); time.sleep(1); b1, t1 = busy()
    pct = 100 * (b1 - b0) / max(1, t1 - t0) * ncpu
    quiet = quiet + 1 if pct < 15 else 0
    if quiet < 3 and time.time() > end:
        print(f"  (machine still busy: {pct:.0f}% of one CPU; measuring anyway)", file=sys.stderr)
        break
EOF
}

# step statistics from a per-invocation CSV: rows started at or after WARM s only
stats() {
  /usr/bin/python3 - "$@" <<'EOF'
import csv, sys
path, warm, step, rate = sys.argv[1], float(sys.argv[2]) * 1000, float(sys.argv[3]), sys.argv[4]
rows = [r for r in csv.DictReader(open(path)) if float(r["start_ms"]) >= warm]
ok = [r for r in rows if r["status"] == "200"]
lat = sorted(float(r["response_ms"]) for r in ok)
def pct(p): return lat[int((len(lat) - 1) * p)] if lat else float("nan")
win = (step * 1000 - warm) / 1000
cold = sum(1 for r in ok if r["cold"] == "cold")
warmc = sum(1 for r in ok if r["cold"] == "warm")
print(rate, f"{len(rows) / win:.1f}", len(rows), len(ok), len(rows) - len(ok), cold, warmc,
      f"{cold / win:.1f}", f"{pct(.5):.3f}", f"{pct(.9):.3f}", f"{pct(.99):.3f}",
      f"{lat[-1] if lat else float('nan'):.3f}")
EOF
}

SUM=$OUT/coldstart_sweep_$SUFFIX.csv
echo "runtime,rate_target,rate_achieved,sent,ok,errors,cold,warm,cold_per_s,p50_ms,p90_ms,p99_ms,max_ms,functions,step_s,warmup_s,load_wall_s,nodes,other_cpu_pct,date,cluster,phase" >"$SUM"
echo "# coldstart_sweep: runtime $RUNTIME, $([ "$RUNTIME" = emulated ] && echo "$NODES emulated nodes, 0 ms create delay" || echo "crun, image oci:$IMG:latest"), ${STEP} s steps (first ${WARM} s not counted), cooldown 10 s, $([ "$ONE" = 1 ] && echo "one cluster for all steps, then a ${HOLD} s hold at the best rate" || echo "fresh cluster per step"), bound p99 <= $BOUND ms"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -r), build $BUILD"
printf '%8s %9s %7s %7s %6s %7s %9s %9s %9s %9s %7s\n' rate achieved sent ok errors cold p50_ms p90_ms p99_ms max_ms other%
best=0 failed_at="" T0=$(date +%s)
CL=$TMP/cluster # --one-cluster: the one cluster's directory
if [ "$ONE" = 1 ]; then
  wait_idle
  start_cluster "$CL" || { echo "cluster failed to start" >&2; exit 1; }
fi
NFNS=0 # --one-cluster: functions registered so far (every step's stay)
# one_step RATE DURATION PHASE: a load step (on a fresh cluster unless --one-cluster); appends
# its row and sets ach sent ok errs cold warmc cps p50 p90 p99 mx; 1 when the load failed
one_step() {
  local r=$1 dur=$2 phase=$3 d=$TMP/step-$1-$3
  mkdir -p "$d"
  if [ "$ONE" = 0 ]; then
    wait_idle
    start_cluster "$d" || { echo "cluster failed to start at $r/s" >&2; exit 1; }
  fi
  csv=$d/load.csv
  cpu_snap "$d/cpu0"; t_load=$(date +%s%N)
  out=$(timeout $((dur + 600)) "$B/dirigent" --json --cp "$REG" --dp "$DP" load rps --cold --keep --cooldown 10 --rate "$r" \
        --duration "$dur" --timeout 40 "${IMAGE_ARGS[@]}" --csv "$csv" 2>"$d/load.err" || true)
  cpu_snap "$d/cpu1"
  other=$(other_cpu "$d/cpu0" "$d/cpu1" "$(( ($(date +%s%N) - t_load) / 1000000 ))e-3")
  if [ "$ONE" = 0 ]; then
    stop_cluster
    for f in cp dp wk; do # keep the daemons' warnings per step (small: --logLevel warn)
      if [ -s "$d/$f.log" ]; then cp "$d/$f.log" "$OUT/raw/coldstart_${SUFFIX}_${r}_$f.log"; fi
    done
  fi
  if [ ! -s "$csv" ]; then
    echo "load failed at $r/s: $(head -c 300 "$d/load.err")" >&2
    return 1
  fi
  read -r _ ach sent ok errs cold warmc cps p50 p90 p99 mx < <(stats "$csv" "$WARM" "$dur" "$r")
  nf=$(/usr/bin/python3 -c 'import math,sys; print(math.ceil(float(sys.argv[1]) * 10))' "$r")
  if [ "$ONE" = 1 ]; then NFNS=$((NFNS + nf)); nf=$NFNS; fi # what the cluster holds
  wall=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["wall_s"])' "$out" 2>/dev/null || echo "")
  echo "$RUNTIME,$r,$ach,$sent,$ok,$errs,$cold,$warmc,$cps,$p50,$p90,$p99,$mx,$nf,$dur,$WARM,$wall,$([ "$RUNTIME" = emulated ] && echo "$NODES" || echo 1),$other,$(date -u +%Y-%m-%dT%H:%M:%SZ),$([ "$ONE" = 1 ] && echo one || echo fresh),$phase" >>"$SUM"
  gzip -c "$csv" >"$OUT/raw/coldstart_${SUFFIX}_${r}$([ "$phase" = hold ] && echo _hold || true).csv.gz"
  if [ "$RUNTIME" = oci ] && [ "$ONE" = 0 ] && [ -f "$d/trace/cold_start_trace.csv" ]; then # all steps' creates
    if [ -f "$TMP/cold_start_trace.csv" ]; then tail -n +2 "$d/trace/cold_start_trace.csv" >>"$TMP/cold_start_trace.csv"
    else cp "$d/trace/cold_start_trace.csv" "$TMP/cold_start_trace.csv"; fi
  fi
  rm -rf "$d"
  return 0
}
for r in $RATES; do
  one_step "$r" "$STEP" step || { failed_at=$r; break; }
  printf '%8s %9s %7s %7s %6s %7s %9.2f %9.2f %9.2f %9.2f %7s\n' "$r" "$ach" "$sent" "$ok" "$errs" "$cold" "$p50" "$p90" "$p99" "$mx" "$other"
  if [ -n "$failed_at" ]; then break; fi # the one step after the first failure is done
  if [ "$errs" = 0 ] && [ "$ok" -gt 0 ] && /usr/bin/python3 -c "import sys; sys.exit(0 if $p99 <= $BOUND else 1)"; then
    best=$r
  else
    failed_at=$r
  fi
done
HOLD_RES=""
[ -n "$HOLD_RATE" ] && best=$HOLD_RATE
if [ "$ONE" = 1 ]; then
  if [ "$best" != 0 ]; then # the hold: the best rate for HOLD s on the same cluster
    if one_step "$best" "$HOLD" hold; then
      printf '%8s %9s %7s %7s %6s %7s %9.2f %9.2f %9.2f %9.2f %7s  (hold %s s)\n' "$best" "$ach" "$sent" "$ok" "$errs" "$cold" "$p50" "$p90" "$p99" "$mx" "$other" "$HOLD"
      HOLD_RES=" hold_s=$HOLD hold_rate=$best hold_achieved=$ach hold_sent=$sent hold_ok=$ok hold_p50_ms=$p50 hold_p99_ms=$p99 hold_errors=$errs hold_functions=$NFNS hold_other_cpu_pct=$other"
    else
      HOLD_RES=" hold_s=$HOLD hold_failed=1"
    fi
  fi
  [ "$RUNTIME" = oci ] && [ -f "$CL/trace/cold_start_trace.csv" ] && cp "$CL/trace/cold_start_trace.csv" "$TMP/cold_start_trace.csv"
  for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || echo "coldstart_sweep: a daemon (pid $p) died during the run" >&2; done
  stop_cluster
  for f in cp dp wk; do
    if [ -s "$CL/$f.log" ]; then cp "$CL/$f.log" "$OUT/raw/coldstart_${SUFFIX}_$f.log"; fi
  done
fi
if [ -f "$TMP/cold_start_trace.csv" ]; then
  CST=$OUT/cold_start_trace$([ "$ONE" = 1 ] && echo _onecluster || true)$([ "$QUICK" = 1 ] && echo _quick || true).csv
  cp "$TMP/cold_start_trace.csv" "$CST"
  echo "the CP's cold_start_trace.csv of all steps: $CST"
fi
echo "highest rate with p99 <= $BOUND ms and no errors: $best cold starts/s ($RUNTIME, $([ "$RUNTIME" = emulated ] && echo "$NODES emulated nodes" || echo "1 worker, crun") on $(nproc) CPUs; paper: 2,500/s on 100 nodes)"
echo "sweep took $(( $(date +%s) - T0 )) s; summary: $SUM"
echo "RESULT coldstart_sweep_runtime=$RUNTIME best_rate=$best bound_ms=$BOUND step_s=$STEP warmup_s=$WARM one_cluster=$ONE$HOLD_RES$LEFT_RES"
[ "$LEFT_N" = 0 ] || { echo "coldstart_sweep: the worker left containers, mounts, namespaces, veths or cgroups behind (above)" >&2; exit 1; }
