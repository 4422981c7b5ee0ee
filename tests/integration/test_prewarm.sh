#!/usr/bin/env bash
# Pre-created sandboxes (issue 16): dirigent-cp, dirigent-dp and a dirigent-worker with the oci
# runtime (crun) on 127.0.0.1, the dirigent-fn image from an OCI layout on disk, sandbox
# addresses in 100.126.16.0/24 on the test's own bridge. A function registered with prewarm 2
# gets two containers created and not started (crun's state "created"); a cold start starts one
# of them (the worker's log and its dg_worker_prewarm_hits_total say so) and answers 200; the
# pool is refilled; deleting the function and stopping the worker leave nothing on the host.
# Root only: without root or the tools, every check is skipped. Run with
# `flock /tmp/dg-itest.lock` (containers, a bridge, cgroups).
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/oci.sh"
S=${DG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
NCHECKS=10
BRIDGE=dgpw
SUBNET=100.126.16.0/24
WORKER=pw-w1
RUN=$TAP_TMP/run
DATA=$TAP_TMP/data

plan $NCHECKS
oci_require $NCHECKS

# ---- clean-up: the worker stops its sandboxes on SIGTERM; whatever a killed one left is
# removed by hand (containers, mounts, veths, the bridge, the cgroups of the worker's instance)
cleanup_pw() {
  oci_stop "${WK_PID:-}"
  for w in 2 3; do
    oci_stop "$(cat "$TAP_TMP/w$w.pid" 2>/dev/null)"
    oci_names "$TAP_TMP/w$w.log"
    oci_remove "$OCI_RUN" "$OCI_BRIDGE" "$OCI_VETH" "$OCI_CGROUP"
  done
  for p in "${TAP_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  oci_names "$TAP_TMP/w1.log"
  oci_remove "$RUN" "$BRIDGE" "$OCI_VETH" "$OCI_CGROUP"
  rm -rf "$TAP_TMP"
}
trap cleanup_pw EXIT

oci_image
start_cp_dp
bg_start "$TAP_TMP/w1.log" "$B/dirigent-worker" --port 0 --name $WORKER --runtime oci --imageRoots "$TAP_TMP" \
  --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --runDir "$RUN" --dataDir "$DATA" \
  --bridge "$BRIDGE" --sandboxSubnet "$SUBNET" --netnsPool 4 --readinessTimeout 10s \
  --cpuMilli 8000 --memoryMiB 8192 --logLevel debug
WK_PID=$BG_PID
wait_for_log "$TAP_TMP/w1.log" "$WORKER: listening on" 20 || { echo "Bail out! the oci worker did not start"; exit 1; }
WKA=127.0.0.1:$(port_of "$TAP_TMP/w1.log" "$WORKER: listening on")
oci_names "$TAP_TMP/w1.log"
wait_json "$REG/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1' ||
  { echo "Bail out! not registered"; exit 1; }

register() { # register NAME [extra form fields]: the HTTP code, the body in reg.out
  curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/registerService" \
    -d "name=$1&image=$IMAGE&port_forwarding=80&port_forwarding=tcp&requested_cpu=100&requested_memory=64${2:-}"
}
# containers in crun state STATE ("created": pooled, "running": serving)
containers() { crun --root "$RUN/crun" list 2>/dev/null | awk -v s="$1" 'NR > 1 && $3 == s' | grep -c .; }
metric() { curl -sf "http://$WKA/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
count_is() { [ "$(containers "$1")" = "$2" ]; }
# what the worker's instance has on the host: containers, mounts, veths, cgroups
leftovers() {
  echo "$( ([ -d "$RUN/crun" ] && crun --root "$RUN/crun" list -q 2>/dev/null) | grep -c .) $(grep -c " $RUN/" /proc/self/mountinfo) $(ls /sys/class/net | grep -c "^${OCI_VETH}[0-9]") $(ls -d /sys/fs/cgroup/memory/"$OCI_CGROUP"/*/ 2>/dev/null | grep -c .)"
}

t_bad() {
  local code
  code=$(register bad "&prewarm=lots")
  echo "$code $(cat "$TAP_TMP/reg.out")"
  [ "$code" = 400 ] && grep -q "field 'prewarm': expected an integer 0..1000, got 'lots'" "$TAP_TMP/reg.out" || return 1
  code=$(register bad "&prewarm=3&scaling_upper_bound=2")
  echo "$code $(cat "$TAP_TMP/reg.out")"
  [ "$code" = 400 ] && grep -q "field 'prewarm': expected at most scaling_upper_bound (2), got 3" "$TAP_TMP/reg.out" || return 1
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$REG/check?name=bad")" = 404 ]
}
check "a bad prewarm is refused naming the field and the fix, and registers nothing" t_bad

t_pooled() {
  local code
  code=$(register pw "&prewarm=2")
  [ "$code" = 200 ] || { echo "$code $(cat "$TAP_TMP/reg.out")"; return 1; }
  poll_until 400 count_is created 2 || { tail -20 "$TAP_TMP/w1.log"; return 1; }
  count_is running 0 && [ "$(metric dg_worker_prewarm_ready)" = 2 ] &&
    curl -sf "$REG/v1/functions/pw" | grep -q '"prewarm": *2'
}
check "prewarm 2: two containers created and not started, none running; the function shows prewarm 2" t_pooled

t_capacity() {
  # what the two hold (their cgroups' memory) is off the capacity the worker advertises
  local held want
  held=$(metric dg_worker_prewarm_held_bytes)
  echo "held: $held bytes"
  want=$(/usr/bin/python3 -c 'import math,sys; h=float(sys.argv[1]); print(8192 - math.ceil(h / 1048576) if h > 0 else "none")' "${held:-0}")
  [ "$want" != none ] || return 1
  wait_json "$REG/v1/status" "j['workers'][0]['memoryMiB'] == $want"
}
check "the memory the pooled containers hold is taken off the worker's advertised capacity" t_capacity

t_cold() {
  local code
  code=$(curl -s -m 30 -o "$TAP_TMP/inv.out" -w '%{http_code}' -H 'Host: pw' "$P/")
  echo "$code $(cat "$TAP_TMP/inv.out")"
  [ "$code" = 200 ] || { tail -20 "$TAP_TMP/w1.log"; return 1; }
  # the sandbox is the pre-created container, by its name: its id, its hostname (MachineName)
  local id
  id=$(json_field "$(cat "$TAP_TMP/inv.out")" MachineName)
  [[ "$id" =~ ^$WORKER-[0-9a-f]+-p[0-9a-f]+-[0-9]+$ ]] || { echo "not a pooled name: $id"; grep prewarm "$TAP_TMP/w1.log" | tail; return 1; }
  grep -qE "sandbox $id \(pw\): pre-created, starting \(create $WORKER-[0-9a-f]+-[0-9]+\)" "$TAP_TMP/w1.log" &&
    [ "$(metric dg_worker_prewarm_hits_total)" = 1 ] &&
    curl -sf "http://$WKA/v1/sandboxes" | grep -qF "$id"
}
check "a cold start starts a pre-created container (its name is the sandbox id; logged; dg_worker_prewarm_hits_total 1) and answers 200" t_cold

t_probe() {
  # that cold start's readiness was probed (the pool's creates are not: a created container
  # does not run), and every probe made at least one connect
  local probes attempts
  probes=$(metric dg_worker_probes_total)
  attempts=$(metric dg_worker_probe_attempts_total)
  echo "probes $probes, attempts $attempts"
  [ "${probes:-0}" = 1 ] && [ "${attempts:-0}" -ge 1 ]
}
check "the cold start's readiness probe is counted (dg_worker_probes_total 1, dg_worker_probe_attempts_total >= 1)" t_probe

t_refill() {
  poll_until 400 count_is created 2 && count_is running 1 &&
    [ "$(metric dg_worker_prewarm_made_total)" = 3 ]
}
check "the pool is refilled in the background: two created again beside the running one" t_refill

t_delete() {
  curl -sf -XDELETE "$REG/v1/functions/pw" >/dev/null || return 1
  poll_until 400 bash -c "[ \"\$(crun --root '$RUN/crun' list -q 2>/dev/null | grep -c .)\" = 0 ]" || return 1
  poll_until 200 bash -c "[ \"\$(grep -c ' $RUN/sandboxes/' /proc/self/mountinfo)\" = 0 ]"
}
check "removing the function removes its pooled containers and its sandbox (no container, no mount)" t_delete

t_stop() {
  [ "$(register pw2 "&prewarm=3")" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  poll_until 400 count_is created 3 || return 1
  oci_stop "$WK_PID" 200 || { echo "the worker did not stop"; return 1; }
  WK_PID=
  local left
  left=$(leftovers)
  echo "containers mounts veths cgroups: $left"
  [ "$left" = "0 0 0 0" ] && [ ! -e "$RUN" ] && ! ip link show "$BRIDGE" >/dev/null 2>&1
}
check "SIGTERM with three pooled: nothing of the worker is left (containers, mounts, veths, cgroups, run dir, bridge)" t_stop

t_log() {
  grep -q "prewarm: stopping: 3 pooled sandboxes removed" "$TAP_TMP/w1.log" || { grep prewarm "$TAP_TMP/w1.log" | tail; return 1; }
}
check "the worker says it removed the pooled sandboxes at its stop" t_log


# ---- two workers: a cold start goes to the worker holding the function's pre-created sandbox
# (the CP's placement hint from its pool table), not wherever the policy would put it
t_two() {
  wait_for_log "$TAP_TMP/cp.log" "worker $WORKER silent" 20 || { echo "the stopped worker is still schedulable"; return 1; }
  local w
  for w in 2 3; do
    bg_start "$TAP_TMP/w$w.log" "$B/dirigent-worker" --port 0 --name pw-w$w --runtime oci --imageRoots "$TAP_TMP" \
      --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --runDir "$TAP_TMP/run$w" --dataDir "$TAP_TMP/data$w" \
      --bridge dgpw$w --sandboxSubnet 100.126.1$((5 + w)).0/24 --netnsPool 2 --readinessTimeout 10s \
      --cpuMilli 8000 --memoryMiB 8192 --logLevel debug
    echo "$BG_PID" >"$TAP_TMP/w$w.pid"
    wait_for_log "$TAP_TMP/w$w.log" "pw-w$w: listening on" 20 || { echo "pw-w$w did not start"; return 1; }
  done
  curl -sf -XDELETE "$REG/v1/functions/pw2" >/dev/null || { echo "pw2 not deleted"; return 1; }
  local a2 a3
  a2=127.0.0.1:$(port_of "$TAP_TMP/w2.log" "pw-w2: listening on")
  a3=127.0.0.1:$(port_of "$TAP_TMP/w3.log" "pw-w3: listening on")
  m() { curl -sf "http://$1/metrics" | awk -v m="$2" '$1 == m {v = $2} END {print v + 0}'; }
  sum() { echo $(($(m "$a2" "$1") + $(m "$a3" "$1"))); }
  local i
  for i in 1 2 3 4; do
    [ "$(register hp$i "&prewarm=1")" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  done
  local tries
  for tries in $(seq 1 600); do
    [ "$(sum dg_worker_prewarm_ready)" = 4 ] && break
    sleep 0.05
  done
  [ "$(sum dg_worker_prewarm_ready)" = 4 ] || { echo "not 4 pooled: $(sum dg_worker_prewarm_ready)"; return 1; }
  echo "pooled: pw-w2 $(m "$a2" dg_worker_prewarm_ready), pw-w3 $(m "$a3" dg_worker_prewarm_ready)"
  local code id pooled=0
  for i in 1 2 3 4; do
    code=$(curl -s -m 30 -o "$TAP_TMP/inv.out" -w '%{http_code}' -H "Host: hp$i" "$P/")
    id=$(json_field "$(cat "$TAP_TMP/inv.out")" MachineName)
    echo "hp$i: $code $id"
    [ "$code" = 200 ] && [[ "$id" =~ ^pw-w[23]-[0-9a-f]+-p[0-9a-f]+-[0-9]+$ ]] && pooled=$((pooled + 1))
  done
  echo "pooled starts $pooled of 4, hits $(sum dg_worker_prewarm_hits_total), misses $(sum dg_worker_prewarm_misses_total)"
  [ "$pooled" = 4 ] && [ "$(sum dg_worker_prewarm_hits_total)" = 4 ]
}
check "two workers, four functions with prewarm 1 spread over them: each cold start lands on the worker holding its pre-created sandbox (4 pooled starts)" t_two

tap_done
