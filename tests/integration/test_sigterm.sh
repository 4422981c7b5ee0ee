#!/usr/bin/env bash
# SIGTERM under load (issue 16): every daemon exits 0, with no sanitizer report, when stopped
# while cold starts, drains and deletes are in flight over many emulated nodes.
# 1: the CP stopped while its drains wait on a data plane that does not answer (SIGSTOP): the
#    close of the DP's pool fails the drains, the core deletes their sandboxes, and those deletes
#    once waited in a worker's batch that was never sent, answered only while the CP freed its
#    registry (heap-use-after-free in cp_core_on_deleted, a segfault seen once in
#    bench/cluster_size.sh). Freed memory is scribbled (MALLOC_PERTURB_, no tcache) so that a
#    use after free also shows without a sanitizer build; with one (make test
#    SANITIZE=address,undefined) any report fails the step.
# 2-4: the CP, the worker and the DP, each stopped while `dirigent load rps --cold` runs against
#    a worker emulating 300 nodes.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
FN=$B/dirigent-fn
export MALLOC_PERTURB_=165 GLIBC_TUNABLES=glibc.malloc.tcache_count=0

plan 4

# cluster NAME NODES [CP ARGS...]: a CP and a DP (start_cp_dp) and a worker emulating NODES
# nodes, logs under $TAP_TMP/NAME; waits until all nodes are schedulable. Sets WK_PID.
cluster() {
  local name=$1 n=$2
  shift 2
  mkdir -p "$TAP_TMP/$name"
  local saved=$TAP_TMP
  TAP_TMP=$TAP_TMP/$name
  start_cp_dp --traceOutputFolder "" --maxSandboxesPerWorker 0 --maxCreatesPerWorkerPerSecond 0 \
    --maxFunctions 0 --maxSandboxesPerFunction 0 --maxSandboxes 0 "$@"
  bg_start "$TAP_TMP/wk.log" "$B/dirigent-worker" --port 0 --name "emu$name" --runtime emulated \
    --emulatedNodes "$n" --emulatedCreateDelayMs 0 --fnBinary "$FN" --controlPlaneAddress "$CPI" \
    --heartbeatInterval 300ms --dataDir "$TAP_TMP/wk/data" --runDir "$TAP_TMP/wk/run"
  WK_PID=$BG_PID
  TAP_TMP=$saved
  wait_for_log "$TAP_TMP/$name/wk.log" 'listening on' || { echo "Bail out! worker did not start"; exit 1; }
  wait_json "$REG/v1/status" "len(j['workers']) == $n and all(w['schedulable'] for w in j['workers'])" 400 ||
    { echo "Bail out! the $n nodes did not register"; exit 1; }
}

# stopped_clean PID LOG...: SIGTERM to PID; it exits (within 20 s) with 0, and no log has a
# sanitizer's report or a crash
stopped_clean() {
  local pid=$1 i rc
  shift
  kill -TERM "$pid" || return 1
  for i in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then echo "pid $pid still running 20 s after SIGTERM"; return 1; fi
  wait "$pid"
  rc=$?
  if grep -E 'AddressSanitizer|LeakSanitizer|runtime error:|SEGV' "$@"; then return 1; fi
  [ "$rc" = 0 ] || { echo "exit status $rc"; tail -n 20 "$@"; return 1; }
}

# cold_load: `dirigent load rps --cold` in the background (its pid in LOAD_PID), once the CP
# created 30 sandboxes
cold_load() {
  "$B/dirigent" --cp "$REGA" --dp "$DPA" load rps --cold --cooldown 2 --rate 300 --duration 30 \
    --timeout 20 >/dev/null 2>&1 &
  LOAD_PID=$!
  TAP_PIDS+=("$LOAD_PID")
  poll_until 400 creates_over 30
}
creates_over() {
  local n
  n=$(curl -s -m 5 "http://$CPI/metrics" | awk '/^dg_cp_sandbox_creates_total/ {print int($2)}')
  [ "${n:-0}" -gt "$1" ]
}
load_end() { kill -TERM "$LOAD_PID" 2>/dev/null; wait "$LOAD_PID" 2>/dev/null; }

# 1: drains in flight to a stopped DP. The CP's heartbeat timeout (3 x 2 s) keeps the DP
# registered meanwhile.
cluster drain 50 --heartbeatInterval 2s
t_drain() {
  local code
  code=$(curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/registerService" \
    -d "name=f&image=$FN&port_forwarding=80&port_forwarding=tcp&requested_cpu=10&requested_memory=10&scaling_lower_bound=40&scaling_upper_bound=100")
  [ "$code" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  wait_json "$REG/v1/functions/f" 'j["ready"] == 40' 400 || return 1
  kill -STOP "$DP_PID"
  curl -sf -XPUT "$REG/v1/functions/f" -d '{"scaling_lower_bound":0,"scaling_upper_bound":1}' >/dev/null &&
    wait_json "$REG/v1/functions/f" 'j["ready"] == 1' 400 || { kill -CONT "$DP_PID"; return 1; }
  stopped_clean "$CP_PID" "$TAP_TMP/drain/cp.log"
  local rc=$?
  kill -CONT "$DP_PID"
  return $rc
}
check "SIGTERM to the CP while its drains wait on a stopped DP: it exits 0, no use after free" t_drain
kill -TERM "$DP_PID" "$WK_PID" 2>/dev/null
wait "$DP_PID" "$WK_PID" 2>/dev/null

cluster cp 300
t_cp() { cold_load && stopped_clean "$CP_PID" "$TAP_TMP/cp/cp.log"; }
check "SIGTERM to the CP under cold-start load over 300 emulated nodes: it exits 0" t_cp
load_end
kill -TERM "$DP_PID" "$WK_PID" 2>/dev/null
wait "$DP_PID" "$WK_PID" 2>/dev/null

cluster wk 300
t_wk() { cold_load && stopped_clean "$WK_PID" "$TAP_TMP/wk/wk.log"; }
check "SIGTERM to the worker (300 emulated nodes) under cold-start load: it exits 0" t_wk
load_end
kill -TERM "$DP_PID" "$CP_PID" 2>/dev/null
wait "$DP_PID" "$CP_PID" 2>/dev/null

cluster dp 300
t_dp() { cold_load && stopped_clean "$DP_PID" "$TAP_TMP/dp/dp.log"; }
check "SIGTERM to the DP under cold-start load: it exits 0" t_dp
load_end

tap_done
