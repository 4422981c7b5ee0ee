#!/usr/bin/env bash
# Overload (issue 16, DESIGN.md §10): what the cluster serves when more cold starts are offered
# than it can create. On ONE long-lived cluster (dirigent-cp, dirigent-dp with its default
# admission control, one dirigent-worker; ephemeral ports on 127.0.0.1):
#  1. the best sustainable rate R: the highest of --rates (ascending; the search stops at the
#     first failure) whose step has p99 <= --bound-ms and no error (a refusal counts as one),
#     or R given with --rate (then one step at R measures its goodput and p99);
#  2. 1.5 x R and 2 x R offered, one step each.
# Every step is `dirigent load rps --cold --cooldown 10 --rate X --duration STEP` (every call
# finds its function at zero; the functions it registers, 10 x X, are removed after the step:
# the 2x step registers 120,000 at 6,000/s while the previous steps' are deleted; register_s in
# the CSV is how long its registration took), its first WARMUP seconds not counted. Reported
# per step, from the per-invocation CSV:
#   goodput      successful (200) responses per second of the measured part, and its ratio to
#                R's goodput (the goal: >= 0.9 at 1.5x and 2x)
#   refusals     503 answers: how many, and how fast they came (p50/p99 of their response time;
#                the goal: within 100 ms of arrival)
#   admitted p99 the p99 of the successful responses, and its ratio to R's p99 (goal <= 2)
#   other errors anything not 200 or 503 (must be 0)
#
#   bench/overload.sh [--runtime emulated|oci] [--rate R] [--rates "R1 R2 ..."] [--quick]
#                     [--build DIR] [--out DIR] [--bound-ms 50] [--step S] [--warmup S]
#                     [--nodes N] [--dp-arg --key=value]...
# emulated (default): one worker as --nodes (20) emulated nodes, 0 ms create delay, the CP's
#   quotas off (as coldstart_sweep.sh). oci: root and crun; image oci:BUILD/images/dirigent-fn.
# --dp-arg passes a setting to the DP (e.g. --dp-arg --admissionMaxWait=100ms, or
#   --dp-arg --admissionControl=false to see the collapse admission control prevents).
# Writes OUT/overload_RUNTIME.csv (a row per step) and the per-step CSVs gzipped in OUT/raw/
# (OUT: bench/results). --quick: short steps at low rates, written to a scratch directory
# (mktemp; printed), never to bench/results.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."
RUNTIME=emulated BUILD=build OUT="" BOUND=50 QUICK=0 RATE="" RATES="" STEP="" WARM="" NODES=20
DP_ARGS=()
usage() { echo "usage: $0 [--runtime emulated|oci] [--rate R] [--rates LIST] [--quick] [--build DIR] [--out DIR] [--bound-ms MS] [--step S] [--warmup S] [--nodes N] [--dp-arg ARG]..." >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --runtime) RUNTIME=$2; shift;;
    --rate) RATE=$2; shift;;
    --rates) RATES=$2; shift;;
    --quick) QUICK=1;;
    --build) BUILD=$2; shift;;
    --out) OUT=$2; shift;;
    --bound-ms) BOUND=$2; shift;;
    --step) STEP=$2; shift;;
    --warmup) WARM=$2; shift;;
    --nodes) NODES=$2; shift;;
    --dp-arg) DP_ARGS+=("$2"); shift;;
    *) usage;;
  esac
  shift
done
case "$RUNTIME" in emulated|oci) ;; *) usage;; esac
if [ "$RUNTIME" = oci ] && { [ "$(id -u)" != 0 ] || ! command -v crun >/dev/null; }; then
  echo "overload: --runtime oci needs root and crun: skipped"; echo "RESULT overload runtime=oci skipped=1"; exit 0
fi
if [ "$QUICK" = 1 ]; then
  : "${STEP:=6}" "${WARM:=2}"
  [ "$RUNTIME" = emulated ] && : "${RATES:=300 600}"
  [ "$RUNTIME" = oci ] && : "${RATES:=5 10}"
  if [ -z "$OUT" ]; then OUT=$(mktemp -d /tmp/dg-overload-quick.XXXXXX); fi
else
  : "${STEP:=15}" "${WARM:=5}"
  [ "$RUNTIME" = emulated ] && : "${RATES:=1000 2000 3000 4000 5000 6000 7000 8000 10000}"
  [ "$RUNTIME" = oci ] && : "${RATES:=10 20 30 40 50 60 80 100}"
  : "${OUT:=bench/results}"
fi
mkdir -p "$OUT/raw"
OUT=$(cd "$OUT" && pwd)
if [ "$QUICK" = 1 ] && [ "$OUT" = "$(pwd)/bench/results" ]; then
  echo "overload: --quick never writes to bench/results (the committed figures)" >&2; exit 2
fi
B=$(cd "$BUILD" && pwd)
IMG=$B/images/dirigent-fn
IMAGE_ARGS=()
if [ "$RUNTIME" = oci ]; then
  [ -f "$IMG/index.json" ] || { echo "overload: no image at $IMG (make image)" >&2; exit 1; }
  IMAGE_ARGS=(--image "oci:$IMG:latest")
fi
TMP=$(mktemp -d /tmp/dg-overload.XXXXXX)
BR=dgov0
WNAME=overload-$$
PIDS=()
cleanup() {
  stop_pids 30
  if [ "$RUNTIME" = oci ]; then # whatever a killed worker left
    for id in $(crun --root "$TMP/run/crun" list -q 2>/dev/null); do crun --root "$TMP/run/crun" delete -f "$id" >/dev/null 2>&1 || true; done
    { grep -o " $TMP/[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done; } || true
    for l in /sys/class/net/"${BR:0:5}"v*; do [ -e "$l" ] || continue; ip link del "${l##*/}" 2>/dev/null || true; done
    rmdir /sys/fs/cgroup/*/dirigent/"$WNAME"/* /sys/fs/cgroup/*/dirigent/"$WNAME" 2>/dev/null || true
    ip link del "$BR" 2>/dev/null || true
    rmdir /sys/fs/cgroup/*/dirigent 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# the cluster, once
quotas=()
[ "$RUNTIME" = emulated ] && quotas=(--maxFunctions 0 --maxSandboxesPerFunction 0 --maxSandboxesPerWorker 0 --maxSandboxes 0 --maxCreatesPerWorkerPerSecond 0)
"$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --heartbeatInterval 1s --dataDir "$TMP/cp" \
  --traceOutputFolder "" --logLevel warn "${quotas[@]}" >"$TMP/cp.log" 2>&1 &
PIDS+=($!)
wait_log "$TMP/cp.log" 'registration on'
CPI=127.0.0.1:$(port_of "$TMP/cp.log" 'internal api on')
REG=127.0.0.1:$(port_of "$TMP/cp.log" 'registration on')
"$B/dirigent-dp" --portProxy 0 --portGRPC 0 --controlPlaneAddress "$CPI" --heartbeatInterval 1s \
  --traceOutputFolder "" --coldStartTimeout 30s --logLevel warn "${DP_ARGS[@]}" >"$TMP/dp.log" 2>&1 &
PIDS+=($!)
DP_PID=$!
if [ "$RUNTIME" = emulated ]; then
  wargs=(--runtime emulated --emulatedCreateDelayMs 0 --emulatedNodes "$NODES" --name emu)
  want=$NODES
else
  wargs=(--runtime oci --name "$WNAME" --runDir "$TMP/run" --dataDir "$TMP/data" --bridge "$BR"
         --sandboxSubnet 100.119.0.0/20 --netnsPool 64 --killGrace 200ms
         --cpuMilli 1000000 --memoryMiB 1000000 --prefetchImages "oci:$IMG:latest")
  want=1
fi
"$B/dirigent-worker" --port 0 --controlPlaneAddress "$CPI" --heartbeatInterval 1s --logLevel warn \
  "${wargs[@]}" >"$TMP/wk.log" 2>&1 &
PIDS+=($!)
wait_log "$TMP/dp.log" 'proxy on'
wait_log "$TMP/wk.log" 'listening on'
DP=127.0.0.1:$(port_of "$TMP/dp.log" 'proxy on')
DPAPI=127.0.0.1:$(port_of "$TMP/dp.log" 'api on')
i=0
until [ "$(curl -s "http://$REG/v1/status" | /usr/bin/python3 -c 'import json,sys; s=json.load(sys.stdin); print(len(s["workers"]), len(s["dataplanes"]))' 2>/dev/null)" = "$want 1" ]; do
  i=$((i + 1)); [ $i -lt 400 ] || { echo "overload: the cluster did not register" >&2; exit 1; }; sleep 0.05
done
[ "$RUNTIME" = oci ] && sleep 1 # the prefetch and the namespace pool fill

# stats CSV WARM STEP: one line of the step's figures from its per-invocation CSV
stats() {
  /usr/bin/python3 - "$@" <<'EOF'
import csv, sys
path, warm, step = sys.argv[1], float(sys.argv[2]) * 1000, float(sys.argv[3])
rows = [r for r in csv.DictReader(open(path)) if float(r["start_ms"]) >= warm]
win = step - warm / 1000
ok = sorted(float(r["response_ms"]) for r in rows if r["status"] == "200")
ref = sorted(float(r["response_ms"]) for r in rows if r["status"] == "503")
other = sum(1 for r in rows if r["status"] not in ("200", "503"))
def pct(v, p): return v[int((len(v) - 1) * p)] if v else float("nan")
print(f"{len(rows) / win:.1f}", len(rows), len(ok), len(ref), other, f"{len(ok) / win:.1f}",
      f"{pct(ok, .5):.3f}", f"{pct(ok, .99):.3f}", f"{pct(ref, .5):.3f}", f"{pct(ref, .99):.3f}",
      f"{max(ref) if ref else float('nan'):.3f}")
EOF
}
refused_total() { curl -s "http://$DPAPI/metrics" | awk '/^dg_dp_refused_total / {print $2; f=1} END {if (!f) print 0}'; }

SUM=$OUT/overload_$RUNTIME.csv
echo "runtime,phase,factor,rate_offered,rate_sent,sent,ok,refused_503,other_errors,goodput_per_s,goodput_ratio,p50_ms,p99_ms,p99_ratio,refusal_p50_ms,refusal_p99_ms,refusal_max_ms,dp_refused,dp_cpu_s,loadavg,step_s,warmup_s,date,register_s" >"$SUM"
echo "# overload: runtime $RUNTIME, $([ "$RUNTIME" = emulated ] && echo "$NODES emulated nodes, 0 ms create delay" || echo "crun, image oci:$IMG:latest"), one cluster, ${STEP} s steps (first ${WARM} s not counted), cooldown 10 s, bound p99 <= $BOUND ms${DP_ARGS[*]:+, DP ${DP_ARGS[*]}}"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), build $BUILD"
printf '%-9s %6s %8s %8s %7s %7s %6s %9s %6s %8s %7s %9s %9s\n' phase factor offered sent ok refused other goodput ratio p99_ms p99x ref_p50 ref_p99

BEST="" BEST_GOOD="" BEST_P99=""
# step PHASE FACTOR RATE: one load step; sets S_* from its statistics and appends a row
step() {
  local phase=$1 factor=$2 r=$3 csv=$TMP/load-$1-$3.csv t0 t1 r0 r1 la
  r0=$(refused_total); t0=$(proc_ticks "$DP_PID"); la=$(cut -d' ' -f1 /proc/loadavg)
  timeout $((STEP + 300)) "$B/dirigent" --json --cp "$REG" --dp "$DP" load rps --cold --cooldown 10 \
    --rate "$r" --duration "$STEP" --timeout 40 "${IMAGE_ARGS[@]}" --csv "$csv" >"$TMP/load.json" 2>"$TMP/load.err" || true
  r1=$(refused_total); t1=$(proc_ticks "$DP_PID")
  # its last lines: the error (the lines before are registration progress)
  if [ ! -s "$csv" ]; then echo "overload: load failed at $r/s: $(tail -n 2 "$TMP/load.err" | head -c 600)" >&2; return 1; fi
  local reg_s
  reg_s=$(sed -n 's/.*registered [0-9]* function(s) in \([0-9.]*\) s.*/\1/p' "$TMP/load.err" | head -1)
  read -r S_SENT_RATE S_SENT S_OK S_REF S_OTHER S_GOOD S_P50 S_P99 S_RP50 S_RP99 S_RMAX < <(stats "$csv" "$WARM" "$STEP")
  local gratio=nan pratio=nan
  if [ "$phase" = overload ]; then
    gratio=$(/usr/bin/python3 -c "print(f'{$S_GOOD / $BEST_GOOD:.3f}' if $BEST_GOOD > 0 else 'nan')")
    pratio=$(/usr/bin/python3 -c "import math; a, b = float('$S_P99'), float('$BEST_P99'); print(f'{a / b:.2f}' if b > 0 and not math.isnan(a) else 'nan')")
  fi
  local cpu
  cpu=$(/usr/bin/python3 -c "import os; print(f'{($t1 - $t0) / os.sysconf(\"SC_CLK_TCK\"):.2f}')")
  echo "$RUNTIME,$phase,$factor,$r,$S_SENT_RATE,$S_SENT,$S_OK,$S_REF,$S_OTHER,$S_GOOD,$gratio,$S_P50,$S_P99,$pratio,$S_RP50,$S_RP99,$S_RMAX,$(/usr/bin/python3 -c "print(int(float('$r1') - float('$r0')))"),$cpu,$la,$STEP,$WARM,$(date -u +%Y-%m-%dT%H:%M:%SZ),${reg_s:-nan}" >>"$SUM"
  gzip -c "$csv" >"$OUT/raw/overload_${RUNTIME}_${phase}_$r.csv.gz"
  printf '%-9s %6s %8s %8s %7s %7s %6s %9s %6s %8.2f %7s %9.2f %9.2f\n' "$phase" "$factor" "$r" "$S_SENT" "$S_OK" "$S_REF" "$S_OTHER" "$S_GOOD" "$gratio" "$S_P99" "$pratio" "$S_RP50" "$S_RP99"
  rm -f "$csv"
}
passes() { [ "$S_OTHER" = 0 ] && [ "$S_REF" = 0 ] && [ "$S_OK" -gt 0 ] && /usr/bin/python3 -c "import sys; sys.exit(0 if $S_P99 <= $BOUND else 1)"; }

T0=$(date +%s)
if [ -n "$RATE" ]; then
  step best 1 "$RATE"
  BEST=$RATE BEST_GOOD=$S_GOOD BEST_P99=$S_P99
  passes || echo "overload: the given rate $RATE/s does not pass (p99 <= $BOUND ms, no error): measuring anyway" >&2
else
  for r in $RATES; do
    step search 1 "$r" || break
    if passes; then BEST=$r BEST_GOOD=$S_GOOD BEST_P99=$S_P99; else break; fi
  done
  [ -n "$BEST" ] || { echo "overload: no rate of '$RATES' passed (p99 <= $BOUND ms, no error)" >&2; echo "RESULT overload runtime=$RUNTIME best_rate=0"; exit 1; }
  # the rows so far have no ratios: the best one is the reference
  /usr/bin/python3 - "$SUM" "$BEST" <<'EOF'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
for r in rows[1:]:
    if r[1] == "search" and r[3] == sys.argv[2]:
        r[1] = "best"
csv.writer(open(sys.argv[1], "w"), lineterminator="\n").writerows(rows)
EOF
fi
echo "best sustainable rate: $BEST/s (goodput $BEST_GOOD/s, p99 $BEST_P99 ms)"
RES=""
for f in 1.5 2; do
  r=$(/usr/bin/python3 -c "import math; print(int(math.ceil($BEST * $f)))")
  step overload "$f" "$r" || break
  k=${f/./_}
  RES="$RES goodput_ratio_${k}x=$(tail -1 "$SUM" | cut -d, -f11) refusal_p99_ms_${k}x=$S_RP99 admitted_p99_ms_${k}x=$S_P99 p99_ratio_${k}x=$(tail -1 "$SUM" | cut -d, -f14) other_errors_${k}x=$S_OTHER"
done
for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || echo "overload: a daemon (pid $p) died during the run" >&2; done
echo "took $(( $(date +%s) - T0 )) s; summary: $SUM"
echo "RESULT overload runtime=$RUNTIME best_rate=$BEST best_p99_ms=$BEST_P99$RES"
