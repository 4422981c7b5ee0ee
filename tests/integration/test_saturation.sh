#!/usr/bin/env bash
# A saturated worker (issue 16) through the real daemons: w1 (emulated runtime, each create
# costs 4 s, maxConcurrentCreates 1) gets three creates at once: one runs, two wait in its
# queue, and its heartbeats say "saturated". The CP keeps it alive and schedulable, places a
# second function on w2 instead, and once w1's queue has drained w1's creates all finish.
# Ephemeral ports only.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)

plan 6

trap 'tap_cleanup' EXIT

start_cp_dp --traceOutputFolder "" --placementPolicy round-robin # without the check, w1 would get one of two
bg_start "$TAP_TMP/w1.log" "$B/dirigent-worker" --port 0 --name w1 --runtime emulated \
  --fnBinary "$B/dirigent-fn" --controlPlaneAddress "$CPI" --heartbeatInterval 300ms \
  --emulatedCreateDelayMs 4000 --maxConcurrentCreates 1
wait_for_log "$TAP_TMP/w1.log" 'w1: listening on' || { echo "Bail out! w1 did not start"; exit 1; }
W1=http://127.0.0.1:$(port_of "$TAP_TMP/w1.log" 'w1: listening on')
wait_json "$REG/v1/status" 'len(j["workers"]) == 1' || { echo "Bail out! w1 not registered"; exit 1; }

register() { # register NAME LOWER_BOUND
  curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/registerService" \
    -d "name=$1&image=$B/dirigent-fn&port_forwarding=80&port_forwarding=tcp&scaling_lower_bound=$2&scaling_upper_bound=10"
}
# the functions of the sandboxes a worker lists (state STATE), one per line
listed() { curl -sf "$1/v1/sandboxes" | /usr/bin/python3 -c 'import json,sys
for s in json.load(sys.stdin)["sandboxes"]:
    if s["state"] == sys.argv[1]: print(s["function"])' "$2"; }

count_is() { [ "$(listed "$1" "$2" | grep -c "^$3\$")" = "$4" ]; } # WORKER STATE FN N

t_saturated() {
  [ "$(register slow 3)" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  wait_for_log "$TAP_TMP/w1.log" 'saturated: 1 creates wait, 1 run \(maxConcurrentCreates 1\)' || return 1
  wait_for_log "$TAP_TMP/cp.log" 'worker w1 saturated' || return 1
  curl -sf "$W1/metrics" | grep -qE '^dg_worker_create_queue [1-9]' || return 1
  [ "$(listed "$W1" creating | grep -c '^slow$')" = 3 ]
}
check "three creates on a worker bounded to one: two wait in its queue, it says it is saturated, the CP hears it" t_saturated

t_elsewhere() {
  bg_start "$TAP_TMP/w2.log" "$B/dirigent-worker" --port 0 --name w2 --runtime emulated \
    --fnBinary "$B/dirigent-fn" --controlPlaneAddress "$CPI" --heartbeatInterval 300ms
  wait_for_log "$TAP_TMP/w2.log" 'w2: listening on' || return 1
  W2=http://127.0.0.1:$(port_of "$TAP_TMP/w2.log" 'w2: listening on')
  wait_json "$REG/v1/status" 'len(j["workers"]) == 2' || return 1
  grep -q 'worker w1 no longer saturated' "$TAP_TMP/cp.log" && { echo "w1 drained too early for this check"; return 1; }
  [ "$(register other 2)" = 200 ] || return 1
  poll_until 100 count_is "$W2" ready other 2 || return 1
  [ "$(listed "$W1" creating | grep -c '^other$')" = 0 ] && [ "$(listed "$W1" ready | grep -c '^other$')" = 0 ]
}
check "while w1 is saturated a new function's sandboxes are placed on w2, none on w1" t_elsewhere

t_invoke() {
  [ "$(curl -s -m 20 -o "$TAP_TMP/inv.out" -w '%{http_code}' -H 'Host: other' "$P/")" = 200 ]
}
check "the function placed elsewhere serves" t_invoke

t_drains() {
  # 3 x 4 s of creates, one at a time: all ready, and w1 is free again
  poll_until 400 count_is "$W1" ready slow 3 || return 1
  wait_for_log "$TAP_TMP/w1.log" 'no longer saturated' && wait_for_log "$TAP_TMP/cp.log" 'worker w1 no longer saturated'
}
check "w1's queue drains: its three sandboxes ready, one at a time, and it says it is free again" t_drains

t_alive() {
  ! grep -E 'worker w1 silent|worker w1 .*lost' "$TAP_TMP/cp.log"
}
check "a saturated worker is never taken for a lost one" t_alive

t_siblings() {
  # an emulated worker of 3 nodes: nodes 1 and 2 beat through node 0's sibling beats
  # (POST /v1/workers/siblings), which carry "saturated" too: the CP hears it for every node
  bg_start "$TAP_TMP/w3.log" "$B/dirigent-worker" --port 0 --name w3 --runtime emulated \
    --emulatedNodes 3 --fnBinary "$B/dirigent-fn" --controlPlaneAddress "$CPI" \
    --heartbeatInterval 300ms --emulatedCreateDelayMs 4000 --maxConcurrentCreates 1
  wait_json "$REG/v1/status" 'len(j["workers"]) == 5' || return 1
  poll_until 100 eval '[ "$(curl -sf "http://$CPI/metrics" | sed -n "s/^dg_cp_worker_beats_total{via=\"siblings\"} //p")" -ge 2 ]' || return 1
  # round-robin in name order: 6 sandboxes over w1, w2, w3-0..2 put at least 3 on w3's nodes,
  # one process that runs one create at a time
  [ "$(register sib 6)" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  wait_for_log "$TAP_TMP/w3.log" 'saturated: [0-9]+ creates wait' || return 1
  local n
  for n in w3-0 w3-1 w3-2; do
    wait_for_log "$TAP_TMP/cp.log" "worker $n saturated" || { echo "no saturated for $n"; return 1; }
  done
}
check "an emulated worker's saturation reaches the CP for every node, also those beaten by sibling beats" t_siblings

tap_done
