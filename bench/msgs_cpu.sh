#!/usr/bin/env bash
# CPU per emulated cold start of each daemon (issue 16, internal messages): a fresh cluster
# (dirigent-cp, dirigent-dp, one dirigent-worker as --nodes emulated nodes, 0 ms create delay,
# quotas off, ephemeral ports on 127.0.0.1), then
#   dirigent load rps --cold --rate R --duration S --csv ...
# and the user+system CPU (/proc/PID/stat) each daemon spent during the load, divided by the
# cold starts that succeeded: CPU µs per cold start (registration of the functions and their
# scale-downs within the run included). CPU per operation, not wall clock: on a shared machine
# it is what compares two builds. Run it once per build (--build) at the same rate.
#
#   bench/msgs_cpu.sh [--build DIR] [--rate R] [--duration S] [--nodes N] [--rounds N]
#                     [--quick] [--out DIR]
# --quick: 800/s for 6 s, one round, into a scratch directory (never bench/results/).
# Writes OUT/msgs_cpu[_quick].csv (a row per round; OUT: bench/results).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."
BUILD=build RATE=2000 DUR=10 NODES=20 ROUNDS=3 QUICK=0 OUT=""
usage() { echo "usage: $0 [--build DIR] [--rate R] [--duration S] [--nodes N] [--rounds N] [--quick] [--out DIR]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD=$2; shift;;
    --rate) RATE=$2; shift;;
    --duration) DUR=$2; shift;;
    --nodes) NODES=$2; shift;;
    --rounds) ROUNDS=$2; shift;;
    --quick) QUICK=1;;
    --out) OUT=$2; shift;;
    *) usage;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  RATE=800 DUR=6 ROUNDS=1
  : "${OUT:=$(mktemp -d /tmp/dg-msgs-cpu-out.XXXXXX)}"
fi
: "${OUT:=bench/results}"
mkdir -p "$OUT"
SUM=$OUT/msgs_cpu$([ "$QUICK" = 1 ] && echo _quick || true).csv
B=$(cd "$BUILD" && pwd)
TMP=$(mktemp -d /tmp/dg-msgs-cpu.XXXXXX)
PIDS=()
stop_cluster() {
  stop_pids 30
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop_cluster; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

start_cluster() {
  local d=$1
  mkdir -p "$d"
  "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --heartbeatInterval 1s --dataDir "$d/cp" \
    --traceOutputFolder "" --logLevel warn --maxFunctions 0 --maxSandboxesPerFunction 0 \
    --maxSandboxesPerWorker 0 --maxSandboxes 0 --maxCreatesPerWorkerPerSecond 0 >"$d/cp.log" 2>&1 &
  CP=$!; PIDS+=($CP)
  wait_log "$d/cp.log" 'registration on'
  local cpi
  cpi=127.0.0.1:$(port_of "$d/cp.log" 'internal api on')
  REG=127.0.0.1:$(port_of "$d/cp.log" 'registration on')
  "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --controlPlaneAddress "$cpi" --heartbeatInterval 1s \
    --traceOutputFolder "" --coldStartTimeout 30s --logLevel warn >"$d/dp.log" 2>&1 &
  DPP=$!; PIDS+=($DPP)
  "$B/dirigent-worker" --port 0 --controlPlaneAddress "$cpi" --heartbeatInterval 1s --logLevel warn \
    --runtime emulated --emulatedCreateDelayMs 0 --emulatedNodes "$NODES" --name emu >"$d/wk.log" 2>&1 &
  WK=$!; PIDS+=($WK)
  wait_log "$d/dp.log" 'proxy on'
  wait_log "$d/wk.log" 'listening on'
  DP=127.0.0.1:$(port_of "$d/dp.log" 'proxy on')
  local i=0
  until [ "$(curl -s "http://$REG/v1/status" | /usr/bin/python3 -c 'import json,sys; s=json.load(sys.stdin); print(len(s["workers"]), len(s["dataplanes"]))' 2>/dev/null)" = "$NODES 1" ]; do
    i=$((i + 1)); [ $i -lt 200 ] || { echo "cluster did not register" >&2; return 1; }; sleep 0.05
  done
}

[ -f "$SUM" ] || echo "build,commit,rate,duration_s,cold_ok,errors,cp_us,dp_us,worker_us,total_us,date" >"$SUM"
commit=$(git -C "$B/.." rev-parse --short HEAD 2>/dev/null || echo "?")
hz=$(getconf CLK_TCK)
echo "# msgs_cpu: build $BUILD ($commit), $RATE cold starts/s for $DUR s, $NODES emulated nodes, $ROUNDS round(s)"
printf '%6s %8s %7s %9s %9s %9s %9s\n' round cold_ok errors cp_us dp_us wk_us total_us
for round in $(seq "$ROUNDS"); do
  d=$TMP/r$round
  start_cluster "$d"
  c0=$(proc_ticks "$CP"); p0=$(proc_ticks "$DPP"); w0=$(proc_ticks "$WK")
  "$B/dirigent" --cp "$REG" --dp "$DP" load rps --cold --rate "$RATE" --duration "$DUR" \
    --timeout 30 --csv "$d/load.csv" >"$d/load.out" 2>&1 || true
  c1=$(proc_ticks "$CP"); p1=$(proc_ticks "$DPP"); w1=$(proc_ticks "$WK")
  stop_cluster
  read -r ok errs < <(/usr/bin/python3 -c '
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
ok = sum(1 for r in rows if r["status"] == "200" and r["cold"] == "cold")
print(ok, sum(1 for r in rows if r["status"] != "200"))' "$d/load.csv")
  [ "$ok" -gt 0 ] || { echo "no cold start succeeded: $(tail -3 "$d/load.out")" >&2; exit 1; }
  us() { echo $(( ($1) * 1000000 / hz / ok )); }
  cu=$(us "c1 - c0"); pu=$(us "p1 - p0"); wu=$(us "w1 - w0"); tu=$((cu + pu + wu))
  printf '%6s %8s %7s %9s %9s %9s %9s\n' "$round" "$ok" "$errs" "$cu" "$pu" "$wu" "$tu"
  echo "$BUILD,$commit,$RATE,$DUR,$ok,$errs,$cu,$pu,$wu,$tu,$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$SUM"
done
echo "summary: $SUM"
echo "RESULT msgs_cpu build=$BUILD rate=$RATE rounds=$ROUNDS"
