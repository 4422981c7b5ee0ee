#!/usr/bin/env bash
# The dirigent CLI and `dirigent up`: a local cluster on the default ports (configs/local),
# the sample function, deploy/list/get/invoke/delete/status, and a clean stop.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
D=$B/dirigent
STATE=$TAP_TMP/state

plan 10

bg_start "$TAP_TMP/up.log" "$D" up --runtime process --state-dir "$STATE"
UP_PID=$BG_PID

t_up() {
  wait_for_log "$TAP_TMP/up.log" "^ready: curl -H 'Host: hello' http://127.0.0.1:8080/$" 30 || return 1
  [ "$(json_field "$(curl -sf -H 'Host: hello' http://127.0.0.1:8080/)" Function)" = hello ] &&
    [ -s "$STATE/pids/cp.pid" ] && [ -s "$STATE/logs/worker.log" ]
}
check "dirigent up starts the cluster, deploys hello and prints the curl line" t_up

t_status() {
  local out
  out=$("$D" status) || return 1
  echo "$out"
  grep -q '^WORKERS' <<<"$out" && grep -q '^hello ' <<<"$out" &&
    # the worker with its capacity (milli-CPU = cores x 1000), what hello's one sandbox
    # reserves of it (requested_cpu=100, requested_memory=64), and that sandbox
    grep -qE "^worker-local +127\.0\.0\.1:10010 +yes +100/$(($(nproc) * 1000)) +64/[0-9]+ +1$" <<<"$out"
}
check "status shows workers, data planes and functions as tables" t_status

t_deploy_invoke() {
  "$D" function deploy echo --image "$B/dirigent-fn" --max 2 --concurrency 4 || return 1
  local out
  out=$("$D" invoke echo --header 'requested_cpu: 5') || return 1
  echo "$out"
  [ "$(json_field "$out" Function)" = echo ] && [ "$(json_field "$out" ExecutionTime)" -ge 5000 ]
}
check "function deploy, then invoke with a header" t_deploy_invoke

t_list_get() {
  "$D" function list | grep -q '^echo ' || return 1
  local j
  j=$("$D" --json function get echo) || return 1
  [ "$(json_field "$j" scaling_upper_bound)" = 2 ] && [ "$(json_field "$j" container_concurrency)" = 4 ] &&
    # and the data plane got it: 4 requests at once per sandbox
    curl -sf http://127.0.0.1:8081/v1/functions | /usr/bin/python3 -c \
      'import json,sys; f=[f for f in json.load(sys.stdin) if f["name"]=="echo"][0]; assert f["concurrency"]==4, f'
}
check "function list (table) and get (--json); the concurrency reaches the data plane" t_list_get

t_errors() {
  local out rc
  out=$("$D" function get nope 2>&1); rc=$?
  echo "$out"
  [ $rc != 0 ] && grep -q "function 'nope' is not registered" <<<"$out" || return 1
  out=$("$D" function deploy bad_name --image /x 2>&1); rc=$?
  echo "$out"
  [ $rc != 0 ] && grep -q "field 'name'" <<<"$out" || return 1
  out=$("$D" frobnicate 2>&1); rc=$?
  [ $rc != 0 ] && grep -q "unknown command 'frobnicate'" <<<"$out"
}
check "errors go to stderr with a non-zero exit and say what was wrong" t_errors

t_delete() {
  "$D" function delete echo || return 1
  ! "$D" function get echo 2>/dev/null
}
check "function delete" t_delete

t_stop() {
  local pids
  pids=$(cat "$STATE"/pids/*.pid)
  kill -TERM "$UP_PID"
  wait "$UP_PID"
  local p
  for p in $pids; do
    if kill -0 "$p" 2>/dev/null; then echo "pid $p still running"; return 1; fi
  done
}
check "SIGTERM stops every daemon" t_stop

# `dirigent up` without --runtime: containers as root with crun, else processes, saying why
t_up_auto() {
  bg_start "$TAP_TMP/up2.log" "$D" up --state-dir "$TAP_TMP/state2"
  local up=$BG_PID oci=0 out
  [ "$(id -u)" = 0 ] && command -v crun >/dev/null && [ -d "$B/images/dirigent-fn" ] && oci=1
  if [ $oci = 1 ]; then
    wait_for_log "$TAP_TMP/up2.log" "^runtime oci \(crun, image oci:$B/images/dirigent-fn:latest\)$" || return 1
  else
    wait_for_log "$TAP_TMP/up2.log" '^runtime process \(containers need ' || return 1
  fi
  wait_for_log "$TAP_TMP/up2.log" "^ready: curl" 60 || { cat "$TAP_TMP/state2/logs/worker.log"; return 1; }
  out=$(curl -sf -H 'Host: hello' http://127.0.0.1:8080/) || return 1
  echo "$out"
  if [ $oci = 1 ]; then # a container: its own hostname, the sandbox's id
    grep -q '^worker-local-' <<<"$(json_field "$out" MachineName)" || return 1
  fi
  kill -TERM "$up"
  wait "$up"
  # nothing left: no container, mount, veth or bridge of the worker
  [ "$(crun --root /run/dirigent/worker-local/crun list -q 2>/dev/null | grep -c .)" = 0 ] || return 1
  ! grep -q ' /run/dirigent/worker-local/' /proc/self/mountinfo || return 1
  ! ls /sys/class/net | grep -q '^dg0'
}
check "dirigent up picks the oci runtime as root with crun (else process, saying why); a clean stop" t_up_auto

# `dirigent up --cp-replicas 3 --dataplanes 2`: Redis, three CPs electing a leader, two DPs
# behind HAProxy (invocations on :8079 hashed on Host, registrations on :9092), one worker
t_up_ha() {
  if ! command -v haproxy >/dev/null || ! command -v redis-server >/dev/null; then
    echo "# needs haproxy and redis-server (make deps)"; return 1
  fi
  local S=$TAP_TMP/state3 out i code dead
  bg_start "$TAP_TMP/up3.log" "$D" up --runtime process --cp-replicas 3 --dataplanes 2 --state-dir "$S"
  local up=$BG_PID
  wait_for_log "$TAP_TMP/up3.log" "^ready: curl -H 'Host: hello' http://127.0.0.1:8079/ .*registrations: http://127.0.0.1:9092/registerService" 60 ||
    { tail -n 5 "$S"/logs/*.log; return 1; }
  for f in cp-0 cp-1 cp-2 dp-0 dp-1 worker redis haproxy; do [ -s "$S/pids/$f.pid" ] || { echo "no $f.pid"; return 1; }; done
  # status (asked of any replica) lists the three replicas, one of them leading
  out=$("$D" --cp 127.0.0.1:9101 status) || return 1
  echo "$out" | head -5
  [ "$(grep -cE '^[123] +127\.0\.0\.1:9[01][019]0 +(leader|follower)$' <<<"$out")" = 3 ] &&
    [ "$(grep -cE ' leader$' <<<"$out")" = 1 ] && grep -q '^dp-1 ' <<<"$out" || return 1
  [ "$(json_field "$(curl -sf -m 10 -H 'Host: hello' http://127.0.0.1:8079/)" Function)" = hello ] || return 1
  # a registration through HAProxy's registration frontend, whichever replica takes it
  code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST http://127.0.0.1:9092/registerService \
    -d "name=ha2&image=$B/dirigent-fn&port_forwarding=80&port_forwarding=tcp")
  [ "$code" = 200 ] || { echo "register via :9092: $code"; return 1; }
  [ "$(json_field "$(curl -sf -m 10 -H 'Host: ha2' http://127.0.0.1:8079/)" Function)" = ha2 ] || return 1
  # kill -9 of the data plane HAProxy sends hello to (its API: 8081 for dp-0, 8091 for dp-1):
  # the health check takes it out within a second or so and hello moves to the other
  local victim=dp-1
  curl -s http://127.0.0.1:8081/metrics | grep -qE '^dg_dp_requests_total\{function="hello"\} [1-9]' && victim=dp-0
  curl -s "http://127.0.0.1:$([ $victim = dp-0 ] && echo 8081 || echo 8091)/metrics" |
    grep -qE '^dg_dp_requests_total\{function="hello"\} [1-9]' || { echo "no DP served hello"; return 1; }
  dead=$(cat "$S/pids/$victim.pid"); kill -9 "$dead"
  for i in $(seq 1 40); do
    curl -sf -m 2 -H 'Host: hello' http://127.0.0.1:8079/ >/dev/null && curl -sf -m 2 -H 'Host: ha2' http://127.0.0.1:8079/ >/dev/null && break
    sleep 0.1
  done
  for i in $(seq 1 20); do
    for fn in hello ha2; do
      code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' -H "Host: $fn" http://127.0.0.1:8079/)
      [ "$code" = 200 ] || { echo "after the DP died: $fn $code"; return 1; }
    done
  done
  local pids; pids=$(cat "$S"/pids/*.pid)
  kill -TERM "$up"; wait "$up"
  for p in $pids; do
    [ "$p" = "$dead" ] && continue
    if kill -0 "$p" 2>/dev/null; then echo "pid $p still running"; return 1; fi
  done
}
check "dirigent up --cp-replicas 3 --dataplanes 2: a leader, HAProxy in front, registrations on :9092, a dead DP routed around, a clean stop" t_up_ha

# `up` killed with -9: its daemons stop too (nothing left holding the ports)
t_up_killed() {
  local S=$TAP_TMP/state4 pids p i
  bg_start "$TAP_TMP/up4.log" "$D" up --runtime process --state-dir "$S"
  local up=$BG_PID
  wait_for_log "$TAP_TMP/up4.log" "^ready: curl" 30 || return 1
  pids=$(cat "$S"/pids/*.pid)
  kill -9 "$up"; wait "$up" 2>/dev/null
  for i in $(seq 1 100); do
    local alive=0
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && return 0
    sleep 0.05
  done
  for p in $pids; do kill -0 "$p" 2>/dev/null && echo "pid $p still running"; done
  return 1
}
check "dirigent up killed with -9: its daemons stop with it" t_up_killed

tap_done
