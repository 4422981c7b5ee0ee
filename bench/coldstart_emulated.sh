#!/usr/bin/env bash
# Cold-start throughput with emulated sandboxes (DESIGN.md §10, the paper's Fig. 7 setting):
# dirigent-cp, dirigent-dp and one dirigent-worker standing for 20 emulated nodes (0 ms create
# delay), all on 127.0.0.1; `dirigent load rps --cold` sends open-loop requests, each to a
# function at zero, at rising rates. Per step: achieved cold starts/s, p50/p99 end-to-end
# latency, errors. Prints the highest rate with p99 <= 50 ms and no errors.
#   bench/coldstart_emulated.sh [--quick] [--build DIR] [--rates "100 200 ..."] [--nodes N]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build
STEP=10
RATES="100 200 400 800 1200 1600 2400 3200"
NODES=20
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) STEP=3; RATES="100 400 800 1600";;
    --build) BUILD=$2; shift;;
    --rates) RATES=$2; shift;;
    --nodes) NODES=$2; shift;;
    *) echo "usage: $0 [--quick] [--build DIR] [--rates LIST] [--nodes N]" >&2; exit 2;;
  esac
  shift
done
B=$(cd "$BUILD" && pwd)
TMP=$(mktemp -d /tmp/dg-bench-cold.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; sleep 0.3
            for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

wait_log() { local i=0; until grep -qE "$2" "$1" 2>/dev/null; do i=$((i + 1)); [ $i -lt 200 ] || { echo "no '$2' in $1" >&2; cat "$1" >&2; exit 1; }; sleep 0.05; done; }
port_of() { grep -oE "$2 [0-9.]+:[0-9]+" "$1" | head -1 | sed 's/.*://'; }

"$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --traceOutputFolder "" --dataDir "$TMP/cp" 2>"$TMP/cp.log" &
PIDS+=($!)
wait_log "$TMP/cp.log" 'registration on'
CPI=127.0.0.1:$(port_of "$TMP/cp.log" 'internal api on')
REG=127.0.0.1:$(port_of "$TMP/cp.log" 'registration on')
"$B/dirigent-dp" --portProxy 0 --portGRPC 0 --controlPlaneAddress "$CPI" --traceOutputFolder "" \
  --heartbeatInterval 1s 2>"$TMP/dp.log" &
PIDS+=($!)
"$B/dirigent-worker" --port 0 --runtime emulated --emulatedCreateDelayMs 0 --emulatedNodes "$NODES" \
  --name emu --controlPlaneAddress "$CPI" --heartbeatInterval 1s 2>"$TMP/wk.log" &
PIDS+=($!)
wait_log "$TMP/dp.log" 'proxy on'
wait_log "$TMP/wk.log" 'listening on .*runtime'
DP=127.0.0.1:$(port_of "$TMP/dp.log" 'proxy on')
i=0; until [ "$(curl -s "http://$REG/v1/status" | /usr/bin/python3 -c 'import json,sys; s=json.load(sys.stdin); print(len(s["workers"]), len(s["dataplanes"]))')" = "$NODES 1" ]; do
  i=$((i + 1)); [ $i -lt 100 ] || { echo "cluster did not register" >&2; exit 1; }; sleep 0.1; done

echo "# coldstart_emulated: $NODES emulated nodes, 0 ms create delay, ${STEP} s per step, every request cold (cooldown 10 s)"
echo "# $(date -u), $(nproc) CPUs, build $BUILD"
# warm-up (not reported): connections, first creates on every node
"$B/dirigent" --json --cp "$REG" --dp "$DP" load rps --rate 50 --duration 2 --cold --cooldown 10 >/dev/null || true
printf '%8s %10s %8s %10s %10s %8s\n' rate achieved ok p50_ms p99_ms errors
best=0
for r in $RATES; do
  out=$("$B/dirigent" --json --cp "$REG" --dp "$DP" load rps --rate "$r" --duration "$STEP" --cold --cooldown 10 || true)
  [ -n "$out" ] || { echo "load failed at $r/s" >&2; break; }
  read -r ach ok p50 p99 errs < <(/usr/bin/python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["rate_achieved"], d["ok"], d["p50_ms"], d["p99_ms"], d["errors"])' "$out")
  printf '%8s %10s %8s %10.2f %10.2f %8s\n' "$r" "$ach" "$ok" "$p50" "$p99" "$errs"
  if [ "$errs" = 0 ] && /usr/bin/python3 -c "import sys; sys.exit(0 if $p99 <= 50 else 1)"; then best=$r; else break; fi
done
echo "highest rate with p99 <= 50 ms and no errors: $best cold starts/s (paper: 2,500/s on 100 nodes)"
echo "RESULT coldstart_best_rate=$best nodes=$NODES step_s=$STEP"
