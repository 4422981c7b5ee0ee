#!/usr/bin/env bash
# Trace replay through a real cluster next to the simulator (issue 7, benchmark 4): InVitro's
# example trace (tests/data/invitro-example, Azure 2019 format, 4 functions) through
#   real  dirigent-cp + dirigent-dp + dirigent-worker (ephemeral ports on 127.0.0.1), driven by
#         dirigent load trace TRACE --minutes M --warmup-minutes W [--speed X] --csv ...
#   sim   dirigent-sim TRACE --minutes M --warmupMinutes W --csv ... with the same seed and
#         arrival mode (the same loader, so the same invocations), the same cluster (20 workers
#         x 10000m/64 GiB), the creation latency measured in the real run (p50 of the worker's
#         total from the CP's cold_start_trace.csv), and with --speed X the decider's windows
#         times X (the real run compresses the trace's arrivals X times, not the autoscaler's
#         60 s/6 s windows: in trace time they are X times longer)
# and both summarized the same way from their per-invocation CSVs (measured minutes only):
# slowdown (response / execution time) geometric mean, scheduling latency (response - execution)
# p50/p90/p99/mean, cold starts.
#   bench/trace_replay.sh [--quick] [--runtime emulated|oci] [--build DIR] [--out DIR]
#                         [--minutes M] [--warmup-minutes W] [--speed X] [--skip-minutes K]
#                         [--trace DIR]
# full: 20 minutes with 5 of warm-up in real time (20 minutes); --quick: minutes 6-8 of the
# trace (--skip-minutes 5: in the first 5 minutes only one of the 4 functions runs), no warm-up,
# at 8x speed (~23 s). emulated (default): 20 emulated nodes, 20 ms create delay;
# oci: root and crun, the dirigent-fn image, bridge dgtr0, sandboxes on 100.119.0.0/22.
# Writes OUT/trace_replay_RUNTIME[_quick]_{real,sim,summary}.csv (OUT: bench/results).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."
RUNTIME=emulated
BUILD=build
OUT=bench/results
TRACE=tests/data/invitro-example
QUICK=0 MINUTES="" WARMUP="" SPEED="" SKIP=""
usage() { echo "usage: $0 [--quick] [--runtime emulated|oci] [--build DIR] [--out DIR] [--minutes M] [--warmup-minutes W] [--speed X] [--skip-minutes K] [--trace DIR]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1;;
    --runtime) RUNTIME=$2; shift;;
    --build) BUILD=$2; shift;;
    --out) OUT=$2; shift;;
    --minutes) MINUTES=$2; shift;;
    --warmup-minutes) WARMUP=$2; shift;;
    --speed) SPEED=$2; shift;;
    --trace) TRACE=$2; shift;;
    --skip-minutes) SKIP=$2; shift;;
    *) usage;;
  esac
  shift
done
case "$RUNTIME" in emulated|oci) ;; *) usage;; esac
if [ "$RUNTIME" = oci ] && { [ "$(id -u)" != 0 ] || ! command -v crun >/dev/null; }; then
  echo "trace_replay: --runtime oci needs root and crun: skipped"; exit 0
fi
if [ "$QUICK" = 1 ]; then : "${MINUTES:=3}" "${WARMUP:=0}" "${SPEED:=8}" "${SKIP:=5}"
else : "${MINUTES:=20}" "${WARMUP:=5}" "${SPEED:=1}" "${SKIP:=0}"; fi
SUFFIX=$RUNTIME$([ "$QUICK" = 1 ] && echo _quick || true)
B=$(cd "$BUILD" && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
IMG=$B/images/dirigent-fn
TMP=$(mktemp -d /tmp/dg-trace.XXXXXX)
BR=dgtr0
WNAME=trace-$$
PIDS=()
cleanup() {
  stop_pids
  if [ "$RUNTIME" = oci ]; then
    for id in $(crun --root "$TMP/run/crun" list -q 2>/dev/null); do crun --root "$TMP/run/crun" delete -f "$id" >/dev/null 2>&1 || true; done
    { grep -o " $TMP/[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done; } || true
    for l in /sys/class/net/"${BR:0:5}"v*; do [ -e "$l" ] || continue; ip link del "${l##*/}" 2>/dev/null || true; done
    ip link del "$BR" 2>/dev/null || true
    rmdir /sys/fs/cgroup/*/dirigent/"$WNAME"/* /sys/fs/cgroup/*/dirigent/"$WNAME" /sys/fs/cgroup/*/dirigent 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

T0=$(date +%s)
if [ "$SKIP" != 0 ]; then # the trace from minute SKIP+1 on (same format; the other files as they are)
  mkdir -p "$TMP/trace-in"
  for f in "$TRACE"/*; do [ -f "$f" ] && cp "$f" "$TMP/trace-in/"; done
  /usr/bin/python3 - "$TRACE/invocations.csv" "$TMP/trace-in/invocations.csv" "$SKIP" <<'EOF'
import csv, sys
src, dst, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = list(csv.reader(open(src)))
with open(dst, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(rows[0][:4] + [str(i + 1) for i in range(len(rows[0]) - 4 - k)])
    for r in rows[1:]:
        w.writerow(r[:4] + r[4 + k:])
EOF
  TRACE_NAME="$TRACE from minute $((SKIP + 1))"
  TRACE=$TMP/trace-in
else
  TRACE_NAME=$TRACE
fi
echo "# trace_replay: $TRACE_NAME, $MINUTES minutes ($WARMUP warm-up), speed ${SPEED}x, runtime $RUNTIME"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -r), build $BUILD"

# ---- the real cluster ------------------------------------------------------------------------
# emulated nodes: no quotas (sized for real hosts; docs/security.md)
"$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --heartbeatInterval 1s --dataDir "$TMP/cp" \
  --traceOutputFolder "$TMP/trace" --logLevel warn --maxFunctions 0 --maxSandboxesPerFunction 0 --maxSandboxesPerWorker 0 --maxSandboxes 0 --maxCreatesPerWorkerPerSecond 0 >"$TMP/cp.log" 2>&1 &
PIDS+=($!)
wait_log "$TMP/cp.log" 'registration on'
CPI=127.0.0.1:$(port_of "$TMP/cp.log" 'internal api on')
REG=127.0.0.1:$(port_of "$TMP/cp.log" 'registration on')
"$B/dirigent-dp" --portProxy 0 --portGRPC 0 --controlPlaneAddress "$CPI" --heartbeatInterval 1s \
  --traceOutputFolder "" --logLevel warn >"$TMP/dp.log" 2>&1 &
PIDS+=($!)
if [ "$RUNTIME" = emulated ]; then
  WARGS=(--runtime emulated --emulatedCreateDelayMs 20 --emulatedNodes 20 --name emu)
  NW=20 IMAGE_ARGS=()
else
  [ -f "$IMG/index.json" ] || { echo "trace_replay: no image at $IMG (make image)" >&2; exit 1; }
  WARGS=(--runtime oci --name "$WNAME" --runDir "$TMP/run" --dataDir "$TMP/data" --bridge "$BR"
         --sandboxSubnet 100.119.0.0/22 --netnsPool 16 --killGrace 200ms --prefetchImages "oci:$IMG:latest")
  NW=1 IMAGE_ARGS=(--image "oci:$IMG:latest")
fi
# accounting as the simulator does it: each sandbox reserves its request, no overcommit (the
# trace's memory requests are above the worker's 32 MiB floor anyway)
"$B/dirigent-worker" --port 0 --controlPlaneAddress "$CPI" --heartbeatInterval 1s --logLevel warn \
  --cpuMilli 10000 --memoryMiB 65536 --cpuOvercommit 1 --sandboxMinCpuMilli 1 "${WARGS[@]}" >"$TMP/wk.log" 2>&1 &
PIDS+=($!)
wait_log "$TMP/dp.log" 'proxy on'
wait_log "$TMP/wk.log" 'listening on'
DP=127.0.0.1:$(port_of "$TMP/dp.log" 'proxy on')
i=0; until [ "$(curl -s "http://$REG/v1/status" | /usr/bin/python3 -c 'import json,sys; s=json.load(sys.stdin); print(len(s["workers"]), len(s["dataplanes"]))' 2>/dev/null)" = "$NW 1" ]; do
  i=$((i + 1)); [ $i -lt 200 ] || { echo "cluster did not register" >&2; exit 1; }; sleep 0.05; done
[ "$RUNTIME" = oci ] && sleep 1

busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
REAL=$OUT/trace_replay_${SUFFIX}_real.csv
SIM=$OUT/trace_replay_${SUFFIX}_sim.csv
echo "== real cluster: dirigent load trace $TRACE_NAME --minutes $MINUTES --warmup-minutes $WARMUP --speed $SPEED"
read -r BUSY0 ALL0 < <(busy_ticks)
"$B/dirigent" --cp "$REG" --dp "$DP" load trace "$TRACE" --minutes "$MINUTES" --warmup-minutes "$WARMUP" \
  --speed "$SPEED" --seed 1 --iat exponential --timeout 120 "${IMAGE_ARGS[@]}" --csv "$REAL" || true
read -r BUSY1 ALL1 < <(busy_ticks)
echo "machine busy during the replay (everything, this cluster included): $(( 100 * $(nproc) * (BUSY1 - BUSY0) / (ALL1 - ALL0 + 1) ))% of one CPU"
[ -s "$REAL" ] || { echo "trace_replay: the load run wrote no CSV" >&2; tail -20 "$TMP"/*.log >&2; exit 1; }
sleep 0.5
CREATE_MS=$(/usr/bin/python3 - "$TMP/trace/cold_start_trace.csv" <<'EOF'
import csv, sys
try:
    rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["success"] == "true"]
except OSError:
    rows = []
k = ("image_fetch", "sandbox_create", "sandbox_start", "network_setup", "readiness_probe", "other_worker_node")
t = sorted(sum(int(r[c]) for c in k) / 1000 for r in rows)
print(max(1, round(t[(len(t) - 1) // 2])) if t else 20)
EOF
)
[ "$RUNTIME" = oci ] && cp "$TMP/trace/cold_start_trace.csv" "$OUT/trace_replay_${SUFFIX}_cold_start_trace.csv" 2>/dev/null || true
grep -hE ' (warn|error) ' "$TMP"/*.log | head -20 | sed 's/^/  daemon: /' || true

# ---- the simulator -----------------------------------------------------------------------------
SW=$(/usr/bin/python3 -c 'import sys; s=float(sys.argv[1]); print(f"{60*s:g}s {6*s:g}s")' "$SPEED")
read -r STABLE PANIC <<<"$SW"
echo "== simulator: dirigent-sim $TRACE_NAME --minutes $MINUTES --warmupMinutes $WARMUP --createLatency ${CREATE_MS}ms (measured) --stableWindow $STABLE --panicWindow $PANIC"
"$B/dirigent-sim" "$TRACE" --minutes "$MINUTES" --warmupMinutes "$WARMUP" --seed 1 --iat exponential \
  --workers 20 --workerCpuMilli 10000 --workerMemoryMiB 65536 --createLatency "${CREATE_MS}ms" \
  --stableWindow "$STABLE" --panicWindow "$PANIC" --csv "$SIM" >"$TMP/sim.txt" 2>&1
tail -n +2 "$TMP/sim.txt" | head -7 | sed 's/^/  /'

echo "trace_replay took $(( $(date +%s) - T0 )) s; CSVs: $REAL, $SIM"
# ---- side by side --------------------------------------------------------------------------------
/usr/bin/python3 - "$REAL" "$SIM" "$OUT/trace_replay_${SUFFIX}_summary.csv" "$RUNTIME" "$MINUTES" "$WARMUP" "$SPEED" "$CREATE_MS" <<'EOF'
import csv, math, sys
real_p, sim_p, out_p, runtime, minutes, warmup, speed, create = sys.argv[1:]
def pct(v, p):
    v = sorted(v); return v[int((len(v) - 1) * p)] if v else float("nan")
def summary(rows):
    # rows: (function, ok, cold, response_ms, execution_ms)
    ok = [r for r in rows if r[1]]
    sched = [max(0.0, r[3] - r[4]) for r in ok]
    sl = [math.log(max(r[3], 1e-3) / max(r[4], 1.0)) for r in ok]
    per_fn = {}
    for r, l in zip(ok, sl): per_fn.setdefault(r[0], []).append(l)
    fn_gm = [sum(v) / len(v) for v in per_fn.values()]
    return dict(invocations=len(rows), ok=len(ok), failed=len(rows) - len(ok),
                cold=sum(1 for r in ok if r[2]),
                cold_pct=100 * sum(1 for r in ok if r[2]) / len(ok) if ok else float("nan"),
                slowdown_geomean=math.exp(sum(sl) / len(sl)) if sl else float("nan"),
                slowdown_fn_geomean=math.exp(sum(fn_gm) / len(fn_gm)) if fn_gm else float("nan"),
                sched_p50_ms=pct(sched, .5), sched_p90_ms=pct(sched, .9), sched_p99_ms=pct(sched, .99),
                sched_mean_ms=sum(sched) / len(sched) if sched else float("nan"))
real = []
for r in csv.DictReader(open(real_p)):
    if r["phase"] != "measure": continue
    ex = float(r["execution_ms"]) if r["execution_ms"] else float(r["requested_ms"])
    real.append((r["function"].split("-")[1], r["status"] == "200", r["cold"] == "cold", float(r["response_ms"]), ex))
sim = []
for r in csv.DictReader(open(sim_p)):
    ok = r["status"] == "ok"
    resp = float(r["end_ms"]) - float(r["arrival_ms"]) if ok else 0.0
    sim.append((r["function"], ok, r["cold"] == "cold", resp, float(r["duration_ms"])))
S = {"real": summary(real), "sim": summary(sim)}
keys = list(S["real"])
with open(out_p, "w") as f:
    w = csv.writer(f)
    w.writerow(["source", "runtime", "minutes", "warmup_minutes", "speed", "create_ms"] + keys)
    for src in ("real", "sim"):
        w.writerow([src, runtime, minutes, warmup, speed, create] + [f"{S[src][k]:.4f}" if isinstance(S[src][k], float) else S[src][k] for k in keys])
print()
print(f"{'':22} {'real cluster':>14} {'dirigent-sim':>14} {'sim/real':>9}")
for k in keys:
    a, b = S["real"][k], S["sim"][k]
    ratio = f"{b / a:9.2f}" if isinstance(a, (int, float)) and a and not (isinstance(a, float) and math.isnan(a)) else f"{'':9}"
    fa = f"{a:14.3f}" if isinstance(a, float) else f"{a:14d}"
    fb = f"{b:14.3f}" if isinstance(b, float) else f"{b:14d}"
    print(f"{k:22} {fa} {fb} {ratio}")
r, s = S["real"], S["sim"]
if float(speed) != 1:
    print(f"note: at {speed}x the real run's arrivals come {speed}x closer but each request still works its "
          "full duration, so with the trace's upper bound of 1 sandbox requests queue behind the one "
          "sandbox; the simulator replays at 1x (its decider windows scaled instead): cold starts "
          "compare, scheduling latency and slowdown do not (use the full mode)")
print(f"RESULT trace_replay_runtime={runtime} real_slowdown={r['slowdown_geomean']:.3f} sim_slowdown={s['slowdown_geomean']:.3f} "
      f"real_sched_p99_ms={r['sched_p99_ms']:.1f} sim_sched_p99_ms={s['sched_p99_ms']:.1f} real_cold={r['cold']} sim_cold={s['cold']}")
EOF
