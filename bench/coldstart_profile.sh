#!/usr/bin/env bash
# CPU per cold start, per daemon (issue 16): one cluster (dirigent-cp, dirigent-dp x N, one
# dirigent-worker as --nodes emulated nodes, 0 ms create delay, ephemeral ports on 127.0.0.1),
# one `dirigent load rps --cold --rate R --duration S` against it, and for the measured window
# (from --warmup s after the first send to the end of sending) each process's user+system CPU
# (/proc/PID/stat) divided by the cold starts sent in the window: the CP, each DP, the worker,
# the worker's shared dirigent-fn, the load generator. Also the window's p50/p99/errors (from
# the load's CSV) and the CPU that other processes on this shared machine took.
# With --perf SECONDS, `perf record -F 4000 -g` on every process for SECONDS from the window's
# start; OUT/perf-NAME.txt is `perf report --no-children` (symbols over 0.5%).
#
#   bench/coldstart_profile.sh [--rate 6000] [--duration 20] [--warmup 8] [--nodes 20]
#                              [--dataplanes 1] [--perf S] [--build DIR] [--out DIR]
#                              [--cp-args "..."] [--dp-args "..."] [--load-args "..."]
# --dataplanes N > 1: N DPs registered with the CP; the load generator spreads its functions
#   over them by name (`load --dp A,B`).
# OUT (default: a new scratch dir under /tmp) gets summary.txt, the CSV, the daemons' logs.
# Never writes to bench/results/.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."
RATE=6000 DUR=20 WARM=8 NODES=20 NDP=1 PERF=0 BUILD=build OUT="" CPA="" DPA="" LDA=""
usage() { echo "usage: $0 [--rate R] [--duration S] [--warmup S] [--nodes N] [--dataplanes N] [--perf S] [--build DIR] [--out DIR] [--cp-args A] [--dp-args A] [--load-args A]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) RATE=$2; shift;;
    --duration) DUR=$2; shift;;
    --warmup) WARM=$2; shift;;
    --nodes) NODES=$2; shift;;
    --dataplanes) NDP=$2; shift;;
    --perf) PERF=$2; shift;;
    --build) BUILD=$2; shift;;
    --out) OUT=$2; shift;;
    --cp-args) CPA=$2; shift;;
    --dp-args) DPA=$2; shift;;
    --load-args) LDA=$2; shift;;
    *) usage;;
  esac
  shift
done
B=$(cd "$BUILD" && pwd)
[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/dg-prof.XXXXXX)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PIDS=() PERFS=()
cleanup() {
  for p in "${PERFS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  stop_pids 10
}
trap cleanup EXIT
trap 'exit 130' INT TERM

quotas=(--maxFunctions 0 --maxSandboxesPerFunction 0 --maxSandboxesPerWorker 0 --maxSandboxes 0 --maxCreatesPerWorkerPerSecond 0)
# shellcheck disable=SC2086
"$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --heartbeatInterval 1s --dataDir "$OUT/cp" \
  --traceOutputFolder "" --logLevel warn "${quotas[@]}" $CPA >"$OUT/cp.log" 2>&1 &
PIDS+=($!)
CPPID=$!
wait_log "$OUT/cp.log" 'registration on'
CPI=127.0.0.1:$(port_of "$OUT/cp.log" 'internal api on')
REG=127.0.0.1:$(port_of "$OUT/cp.log" 'registration on')
DPPIDS=() DPS=""
for ((i = 0; i < NDP; i++)); do
  # shellcheck disable=SC2086
  "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --controlPlaneAddress "$CPI" --heartbeatInterval 1s \
    --traceOutputFolder "" --coldStartTimeout 30s --logLevel warn $DPA >"$OUT/dp$i.log" 2>&1 &
  PIDS+=($!)
  DPPIDS+=($!)
done
"$B/dirigent-worker" --port 0 --controlPlaneAddress "$CPI" --heartbeatInterval 1s --logLevel warn \
  --runtime emulated --emulatedCreateDelayMs 0 --emulatedNodes "$NODES" --name emu >"$OUT/wk.log" 2>&1 &
PIDS+=($!)
WKPID=$!
for ((i = 0; i < NDP; i++)); do
  wait_log "$OUT/dp$i.log" 'proxy on'
  DPS=$DPS${DPS:+,}127.0.0.1:$(port_of "$OUT/dp$i.log" 'proxy on')
done
wait_log "$OUT/wk.log" 'listening on'
n=0
until [ "$(curl -s "http://$REG/v1/status" | /usr/bin/python3 -c 'import json,sys; s=json.load(sys.stdin); print(len(s["workers"]), len(s["dataplanes"]))' 2>/dev/null)" = "$NODES $NDP" ]; do
  n=$((n + 1)); [ $n -lt 200 ] || { echo "cluster did not register" >&2; exit 1; }; sleep 0.05
done
FNPID=$(pgrep -P "$WKPID" | head -1)

# shellcheck disable=SC2086
"$B/dirigent" --json --cp "$REG" --dp "$DPS" load rps --cold --keep --cooldown 10 --rate "$RATE" \
  --duration "$DUR" --timeout 40 --csv "$OUT/load.csv" $LDA >"$OUT/load.json" 2>"$OUT/load.err" &
LPID=$!
wait_log "$OUT/load.err" 'sending' 600
t_send=$(date +%s%N)
NAMES=(cp worker fn load) PS=("$CPPID" "$WKPID" "$FNPID" "$LPID")
for ((i = 0; i < NDP; i++)); do NAMES+=("dp$i"); PS+=("${DPPIDS[$i]}"); done
all_ticks() { # every process's ticks, then the machine's busy ticks (/proc/stat, all CPUs)
  local p; for p in "${PS[@]}"; do printf '%s ' "$(proc_ticks "$p")"; done
  awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat
}
all_sys() { # every process's read+write system calls and context switches (all threads)
  local p; for p in "${PS[@]}"; do
    printf '%s ' "$(awk '/^sys(cr|cw):/{n+=$2} END{print n+0}' "/proc/$p/io" 2>/dev/null || echo 0)"
    printf '%s ' "$(cat /proc/"$p"/task/*/status 2>/dev/null | awk '/ctxt_switches:/{n+=$2} END{print n+0}')"
  done
  echo
}
sleep "$(/usr/bin/python3 -c "print(max(0, $WARM - ($(date +%s%N) - $t_send) / 1e9))")"
read -ra T0 <<<"$(all_ticks)"
read -ra S0 <<<"$(all_sys)"
w0=$(date +%s%N)
if [ "$PERF" != 0 ]; then
  for ((i = 0; i < ${#PS[@]}; i++)); do
    perf record -q -F 4000 -g -p "${PS[$i]}" -o "$OUT/perf-${NAMES[$i]}.data" -- sleep "$PERF" >/dev/null 2>&1 &
    PERFS+=($!)
  done
fi
# the window ends 0.5 s before the last send: the load generator must still be running
sleep "$(/usr/bin/python3 -c "print(max(0, $DUR - 0.5 - ($(date +%s%N) - $t_send) / 1e9))")"
read -ra T1 <<<"$(all_ticks)"
read -ra S1 <<<"$(all_sys)"
w1=$(date +%s%N)
for p in "${PERFS[@]}"; do wait "$p" 2>/dev/null || true; done
PERFS=()
wait "$LPID" || true
HZ=$(getconf CLK_TCK)
{
  echo "# coldstart_profile: $(date -u '+%Y-%m-%d %H:%M UTC'), rate $RATE/s, $DUR s, window from $WARM s, $NODES emulated nodes, $NDP DP(s), build $BUILD, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  /usr/bin/python3 - "$OUT/load.csv" "$WARM" "$DUR" "$RATE" "$(( (w1 - w0) / 1000 ))" "$HZ" "${NAMES[*]}" "${T0[*]}" "${T1[*]}" "${S0[*]}" "${S1[*]}" <<'EOF'
import csv, sys
path, warm, dur, rate, win_us, hz = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
names = sys.argv[7].split(); t0 = list(map(int, sys.argv[8].split())); t1 = list(map(int, sys.argv[9].split()))
s0 = list(map(int, sys.argv[10].split())); s1 = list(map(int, sys.argv[11].split()))
rows = [r for r in csv.DictReader(open(path)) if warm * 1000 <= float(r["start_ms"]) < (dur - 0.5) * 1000]
ok = [r for r in rows if r["status"] == "200"]
lat = sorted(float(r["response_ms"]) for r in ok)
pct = lambda p: lat[int((len(lat) - 1) * p)] if lat else float("nan")
win_s = win_us / 1e6
n = rate * win_s  # cold starts sent in the window (open loop)
print(f"window {win_s:.2f} s, ~{n:.0f} cold starts; {warm:g} s to {dur - 0.5:g} s: sent {len(rows)}, ok {len(ok)}, errors {len(rows) - len(ok)}, "
      f"p50 {pct(.5):.2f} ms, p90 {pct(.9):.2f} ms, p99 {pct(.99):.2f} ms, max {lat[-1] if lat else float('nan'):.2f} ms")
ours = 0
print(f"{'process':8} {'CPU %':>7} {'us/cold start':>14} {'rd+wr/cold':>11} {'ctxsw/cold':>11}")
for i, (name, a, b) in enumerate(zip(names, t0, t1)):
    d = (b - a) / hz
    ours += d
    rw, cs = (s1[2 * i] - s0[2 * i]) / n, (s1[2 * i + 1] - s0[2 * i + 1]) / n
    print(f"{name:8} {100 * d / win_s:7.1f} {1e6 * d / n:14.1f} {rw:11.2f} {cs:11.2f}")
allb = (t1[-1] - t0[-1]) / hz
print(f"{'ours':8} {100 * ours / win_s:7.1f} {1e6 * ours / n:14.1f}")
print(f"{'other':8} {100 * (allb - ours) / win_s:7.1f}   (other processes on the machine, % of one CPU)")
EOF
} | tee "$OUT/summary.txt"
if [ "$PERF" != 0 ]; then
  for nm in "${NAMES[@]}"; do
    [ -s "$OUT/perf-$nm.data" ] || continue
    perf report -i "$OUT/perf-$nm.data" --no-children --percent-limit 0.5 --stdio 2>/dev/null |
      grep -E '^ +[0-9.]+%' >"$OUT/perf-$nm.txt" || true
  done
  echo "perf reports: $OUT/perf-*.txt"
fi
echo "out: $OUT"
