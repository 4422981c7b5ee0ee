#!/usr/bin/env bash
# Many emulated nodes against a CP whose internal listener takes few connections per client
# (issue 16, cluster size): one dirigent-worker --emulatedNodes 300 (more nodes than the CP
# accepts connections from one address, http.internalConns 200: 100 per client) registers every
# node and keeps them all schedulable (its nodes share a few heartbeat connections), and a
# function's 120 sandboxes, placed over the 300 nodes (sampled: above 100 workers), are all
# created (the CP reaches the nodes at that one address over one pool) and spread.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
FN=$B/dirigent-fn

plan 4

start_cp_dp --traceOutputFolder "" --http.internalConns 200 --maxSandboxesPerWorker 0 \
  --maxCreatesPerWorkerPerSecond 0
bg_start "$TAP_TMP/wk.log" "$B/dirigent-worker" --port 0 --name emu --runtime emulated \
  --emulatedNodes 300 --emulatedCreateDelayMs 0 --fnBinary "$FN" --controlPlaneAddress "$CPI" \
  --heartbeatInterval 300ms --dataDir "$TAP_TMP/wk/data" --runDir "$TAP_TMP/wk/run"
wait_for_log "$TAP_TMP/wk.log" 'listening on' || { echo "Bail out! worker did not start"; exit 1; }

t_registered() {
  wait_json "$REG/v1/status" 'len(j["workers"]) == 300 and all(w["schedulable"] for w in j["workers"])' 400
}
check "all 300 emulated nodes register and are schedulable (the CP takes 100 connections per client)" t_registered

t_stay() {
  # 10 heartbeat intervals later (3 s): none lost, none refused a beat
  sleep 3
  wait_json "$REG/v1/status" 'len(j["workers"]) == 300 and all(w["schedulable"] for w in j["workers"])' 1 &&
    ! grep -q 'too many connections' "$TAP_TMP/wk.log" "$TAP_TMP/cp.log"
}
check "they stay schedulable, and no beat or create is refused for too many connections" t_stay

beats() { curl -sf "http://$CPI/metrics" | sed -n "s/^dg_cp_worker_beats_total{via=\"$1\"} //p"; }
t_siblings() {
  # nodes 1..299 are beaten by node 0's sibling beats (groups of up to 100 in one message),
  # not each by its own: over 3 s (10 intervals) about 10 beats each through siblings, and of
  # their own only what registering and node 0 take
  local s0 o0 s1 o1
  s0=$(beats siblings) && o0=$(beats own) || return 1
  sleep 3
  s1=$(beats siblings) && o1=$(beats own) || return 1
  echo "# in 3 s: $((s1 - s0)) beats through siblings, $((o1 - o0)) own"
  [ $((s1 - s0)) -ge $((299 * 5)) ] && [ $((o1 - o0)) -lt 100 ] &&
    wait_json "$REG/v1/status" 'len(j["workers"]) == 300 and all(w["schedulable"] for w in j["workers"])' 1
}
check "nodes beyond the first beat through their first node's sibling beats (few requests), all stay schedulable" t_siblings

t_spread() {
  local code
  code=$(curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/registerService" \
    -d "name=spread&image=$FN&port_forwarding=80&port_forwarding=tcp&requested_cpu=10&requested_memory=10&scaling_lower_bound=120")
  [ "$code" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  wait_json "$REG/v1/status" 'sum(w["sandboxes"] for w in j["workers"]) == 120 and sum(1 for w in j["workers"] if w["sandboxes"] > 0) >= 60' 400 &&
    ! grep -q 'create on .* failed' "$TAP_TMP/cp.log"
}
check "a function's 120 sandboxes are created over the nodes (spread over at least 60 of them)" t_spread

tap_done
