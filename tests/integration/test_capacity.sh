#!/usr/bin/env bash
# Resource accounting through the real daemons: dirigent-cp (kubernetes placement),
# dirigent-dp and one dirigent-worker (process runtime) that advertises 1000 milli-CPU and
# 1024 MiB, no overcommit. Sandboxes reserve max(request, the worker's floor: 100m, 32 MiB;
# lib/resources.c, the rule the worker limits them by); a function that fits nowhere is
# unschedulable: 503 naming the request at once, the state in the API and the CLI; once
# capacity frees it starts.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
FN=$B/dirigent-fn
CLI=$B/dirigent
TAG="DG_CAPACITY_TEST=$$"

plan 9

trap 'tap_cleanup; cleanup_sandboxes' EXIT

start_cp_dp --traceOutputFolder "" --placementPolicy kubernetes
bg_start "$TAP_TMP/w1.log" "$B/dirigent-worker" --port 0 --name w1 \
  --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --cpuMilli 1000 --memoryMiB 1024 --cpuOvercommit 1 --processUser nobody
wait_for_log "$TAP_TMP/w1.log" 'w1: listening on' || { echo "Bail out! worker did not start"; exit 1; }
wait_json "$REG/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1' ||
  { echo "Bail out! not registered"; exit 1; }

register() { # register NAME CPU MEM
  curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/registerService" \
    -d "name=$1&image=$FN&port_forwarding=80&port_forwarding=tcp&requested_cpu=$2&requested_memory=$3&env_vars=$TAG"
}
invoke() { curl -s -m 20 -o "$TAP_TMP/inv.$1" -w '%{http_code}' -H "Host: $1" "$P/"; }

t_reserve() {
  [ "$(register big1 600 256)" = 200 ] || return 1
  [ "$(invoke big1)" = 200 ] || { cat "$TAP_TMP/inv.big1"; return 1; }
  wait_json "$REG/v1/status" 'j["workers"][0]["cpuUsedMilli"] == 600 and j["workers"][0]["memoryUsedMiB"] == 256 and j["workers"][0]["cpuMilli"] == 1000'
}
check "a sandbox reserves its function's request on its worker (600m, 256 MiB of 1000m, 1024 MiB)" t_reserve

t_metrics() {
  local m
  m=$(curl -sf "http://$CPI/metrics") || return 1
  grep -q '^dg_cp_worker_cpu_milli{worker="w1",kind="capacity"} 1000$' <<<"$m" &&
    grep -q '^dg_cp_worker_cpu_milli{worker="w1",kind="reserved"} 600$' <<<"$m" &&
    grep -q '^dg_cp_worker_memory_mib{worker="w1",kind="capacity"} 1024$' <<<"$m" &&
    grep -q '^dg_cp_worker_memory_mib{worker="w1",kind="reserved"} 256$' <<<"$m" || { grep dg_cp_worker <<<"$m"; return 1; }
}
check "the CP's /metrics: capacity and reservations per worker, in milli-CPU and MiB" t_metrics

t_unschedulable() {
  [ "$(register big2 600 256)" = 200 ] || return 1
  local code
  code=$(invoke big2)
  [ "$code" = 503 ] && grep -q "function 'big2' cannot start: no capacity for cpu=600m memory=256MiB" "$TAP_TMP/inv.big2" ||
    { echo "$code $(cat "$TAP_TMP/inv.big2")"; return 1; }
  wait_json "$REG/v1/functions/big2" 'j["state"] == "unschedulable" and "no capacity for cpu=600m" in j["error"]' || return 1
  # the memory side too: 100m fits, 800 MiB does not
  [ "$(register big3 100 800)" = 200 ] || return 1
  code=$(invoke big3)
  [ "$code" = 503 ] && grep -q "no capacity for cpu=100m memory=800MiB" "$TAP_TMP/inv.big3" || return 1
  curl -sf -XDELETE "$REG/v1/functions/big3" >/dev/null || return 1 # it would take the room next
  # nothing was created for them: still one sandbox, 600m used
  wait_json "$REG/v1/status" 'j["workers"][0]["sandboxes"] == 1 and j["workers"][0]["cpuUsedMilli"] == 600'
}
check "no worker has room: 503 at once naming the request (cpu and memory), state unschedulable" t_unschedulable

t_cli() {
  local out
  out=$("$CLI" --cp "$REGA" status) || return 1
  echo "$out"
  grep -qE '^w1 +127\.0\.0\.1:[0-9]+ +yes +600/1000 +256/1024 +1$' <<<"$out" &&
    grep -qE '^big2 +unschedulable ' <<<"$out" && grep -q 'error: no capacity for cpu=600m' <<<"$out"
}
check "dirigent status: used/capacity per worker, the function unschedulable with its reason" t_cli

t_frees() {
  curl -sf -XDELETE "$REG/v1/functions/big1" >/dev/null || return 1
  # big2 still wants its sandbox (its requests are in the window): the CP retries as soon as
  # big1's sandbox is gone, without a new request
  wait_json "$REG/v1/functions/big2" 'j["state"] == "ready" and j["error"] is None' || return 1
  wait_json "$REG/v1/status" 'j["workers"][0]["sandboxes"] == 1 and j["workers"][0]["cpuUsedMilli"] == 600' || return 1
  local code
  code=$(invoke big2)
  [ "$code" = 200 ] || { echo "$code $(cat "$TAP_TMP/inv.big2")"; return 1; }
}
check "once capacity frees (big1 deleted), the CP starts big2 by itself; its error clears" t_frees

t_floor() {
  # InVitro registers 0 for small functions: accepted, and it takes the worker's floor
  [ "$(register tiny 0 0)" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  [ "$(invoke tiny)" = 200 ] || { cat "$TAP_TMP/inv.tiny"; return 1; }
  wait_json "$REG/v1/status" 'j["workers"][0]["cpuUsedMilli"] == 700 and j["workers"][0]["memoryUsedMiB"] == 256 + 32 and j["workers"][0]["sandboxMinCpuMilli"] == 100 and j["workers"][0]["cpuOvercommit"] == 1 and j["workers"][0]["cpuSchedulableMilli"] == 1000'
}
check "requested_cpu=0, requested_memory=0: accepted, the sandbox reserves the worker's floor (100m, 32 MiB)" t_floor

t_bad_policy() {
  local out
  out=$("$B/dirigent-cp" --placementPolicy best --dataDir "$TAP_TMP/x" 2>&1)
  [ $? -ne 0 ] && grep -q "placementPolicy" <<<"$out" && grep -q "chbl" <<<"$out" || { echo "$out"; return 1; }
}
check "an unknown placement policy is refused, naming the choices" t_bad_policy

t_cli_overcommit() {
  # with the default overcommit a worker's reservations pass its CPU: the table shows what
  # placement may reserve, so 700/1000 of a 100m-floored InVitro load never reads as 3500/1000
  bg_start "$TAP_TMP/w2.log" "$B/dirigent-worker" --port 0 --name w2 \
    --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --cpuMilli 2000 --memoryMiB 1024 --cpuOvercommit 10 --processUser nobody
  wait_json "$REG/v1/status" 'len(j["workers"]) == 2' || return 1
  local out
  out=$("$CLI" --cp "$REGA" status) || return 1
  echo "$out"
  grep -qE '^w2 +127\.0\.0\.1:[0-9]+ +yes +0/20000 \(2000 x10\) +0/1024 +0$' <<<"$out" &&
    grep -qE '^w1 +127\.0\.0\.1:[0-9]+ +yes +[0-9]+/1000 ' <<<"$out"
}
check "dirigent status with an overcommit: CPU used of what placement may reserve, and the machine's CPU x the factor" t_cli_overcommit

t_emulated_no_floor() {
  # an emulated sandbox costs nothing: it reserves its request alone, not the floors (else the
  # emulated scale benchmarks hit "no capacity" at a few thousand sandboxes)
  bg_start "$TAP_TMP/w3.log" "$B/dirigent-worker" --port 0 --name w3 --runtime emulated \
    --fnBinary "$B/dirigent-fn" --controlPlaneAddress "$CPI" --heartbeatInterval 300ms
  wait_json "$REG/v1/status" 'len(j["workers"]) == 3' || return 1
  curl -sf "$REG/v1/status" | /usr/bin/python3 -c 'import json,sys
w = {x["name"]: x for x in json.load(sys.stdin)["workers"]}
print(w["w3"], w["w2"], sep="\n")
sys.exit(0 if (w["w3"]["sandboxMinCpuMilli"], w["w3"]["sandboxMinMemoryMiB"]) == (1, 1) and
         (w["w2"]["sandboxMinCpuMilli"], w["w2"]["sandboxMinMemoryMiB"]) == (100, 32) else 1)'
}
check "an emulated worker advertises no floors (its sandboxes cost nothing); a real one its 100m, 32 MiB" t_emulated_no_floor

tap_done
