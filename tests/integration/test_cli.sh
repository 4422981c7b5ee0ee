#!/usr/bin/env bash
# The dirigent CLI and `dirigent up`: a local cluster on the default ports (configs/local),
# the sample function, deploy/list/get/invoke/delete/status, and a clean stop.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
D=$B/dirigent
STATE=$TAP_TMP/state

plan 20

bg_start "$TAP_TMP/up.log" "$D" up --runtime process --state-dir "$STATE"
UP_PID=$BG_PID

# ours ST BASE: the daemons answering on the ports of the cluster with state directory ST and
# port base BASE are the ones it started (their pid files), not another cluster's
ours() {
  local o=$(($2 - 8080))
  answers_as "127.0.0.1:$((9090 + o))" /v1/status "$(cat "$1/pids/cp.pid")" "$1/operator.token" &&
    answers_as "127.0.0.1:$((8081 + o))" /health "$(cat "$1/pids/dp.pid")" &&
    answers_as "127.0.0.1:$((10010 + o))" /health "$(cat "$1/pids/worker.pid")"
}

t_up() {
  wait_for_log "$TAP_TMP/up.log" "^ready: curl -H 'Host: hello' http://127.0.0.1:8080/$" 30 || return 1
  # the control plane, data plane and worker answering are the ones this up started
  kill -0 "$UP_PID" && ours "$STATE" 8080 || return 1
  [ "$(json_field "$(curl -sf -H 'Host: hello' http://127.0.0.1:8080/)" Function)" = hello ]
}
check "dirigent up starts the cluster (its own daemons answer), deploys hello and prints the curl line" t_up
# every check below talks to the default ports: without our own cluster there, none can tell
[ $TAP_FAILED = 0 ] || { echo "Bail out! the cluster answering on the default ports is not the one this test started"; exit 1; }

t_status() {
  local out
  out=$("$D" status) || return 1
  echo "$out"
  grep -q '^WORKERS' <<<"$out" && grep -q '^hello ' <<<"$out" &&
    # the worker with what placement may reserve (milli-CPU = cores x 1000 x the default
    # overcommit of 10), what hello's one sandbox reserves of it (requested_cpu=100,
    # requested_memory=64), and that sandbox
    grep -qE "^worker-local +127\.0\.0\.1:10010 +yes +100/$(($(nproc) * 10000)) \($(($(nproc) * 1000)) x10\) +64/[0-9]+ +1$" <<<"$out"
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
    curl -sf -H "Authorization: Bearer $(cat "$STATE/operator.token")" http://127.0.0.1:8081/v1/functions | /usr/bin/python3 -c \
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
  [ $rc != 0 ] && grep -q "NAME: expected lowercase letters" <<<"$out" || return 1
  out=$("$D" frobnicate 2>&1); rc=$?
  [ $rc != 0 ] && grep -q "unknown command 'frobnicate'" <<<"$out"
}
check "errors go to stderr with a non-zero exit and say what was wrong" t_errors

t_delete() {
  "$D" function delete echo || return 1
  ! "$D" function get echo 2>/dev/null
}
check "function delete" t_delete

t_json_after() {
  local j
  j=$("$D" function get hello --json) || return 1
  [ "$(json_field "$j" name)" = hello ] || return 1
  j=$("$D" status --json) || return 1
  /usr/bin/python3 -c 'import json,sys; assert json.loads(sys.argv[1])["workers"]' "$j"
}
check "--json after the command gives JSON" t_json_after

# InVitro's names are 30-60 characters: the table's columns follow them
LONG=$(printf 'a%.0s' $(seq 30))-$(printf 'b%.0s' $(seq 29))
t_columns() {
  "$D" function deploy "$LONG" --image "$B/dirigent-fn" >/dev/null || return 1
  local out hdr row
  out=$("$D" function list) || return 1
  echo "$out"
  hdr=$(sed -n 1p <<<"$out"); row=$(grep "^$LONG " <<<"$out")
  [ "${hdr:62:5}" = STATE ] && [ "${row:62:4}" = idle ] &&
    grep -qE "^hello +ready +1 +1 +0\.\.unbounded +$B/dirigent-fn$" <<<"$out" &&
    grep -qE "^$LONG +idle +0 +0 +0\.\.unbounded +$B/dirigent-fn$" <<<"$out" &&
    "$D" function delete "$LONG" >/dev/null
}
check "function list: columns sized to a 60-character name, unbounded for no upper bound" t_columns

t_already_running() {
  local out rc
  out=$("$D" up --runtime process --state-dir "$STATE" 2>&1); rc=$?
  echo "$out"
  [ $rc != 0 ] && grep -q "already running (pid $UP_PID)" <<<"$out" || return 1
  # nothing touched: the first cluster answers as before
  [ "$(json_field "$(curl -sf -H 'Host: hello' http://127.0.0.1:8080/)" Function)" = hello ] &&
    kill -0 "$UP_PID"
}
check "a second up on the same state directory: already running (pid N), nothing touched" t_already_running

t_busy_port() {
  local out rc
  out=$("$D" up --runtime process --state-dir "$TAP_TMP/busy" 2>&1); rc=$?
  echo "$out"
  [ $rc != 0 ] &&
    grep -q "port 8080 (data plane 0 proxy) is in use by dirigent-dp (pid $(cat "$STATE/pids/dp.pid"))" <<<"$out" &&
    grep -q "port 9091 (control plane 0 registration) is in use by dirigent-cp (pid $(cat "$STATE/pids/cp.pid"))" <<<"$out" &&
    grep -q -- "--port-base" <<<"$out" || return 1
  # nothing started (no daemon log), the first cluster untouched
  [ -z "$(ls "$TAP_TMP/busy/logs" 2>/dev/null)" ] &&
    [ "$(json_field "$(curl -sf -H 'Host: hello' http://127.0.0.1:8080/)" Function)" = hello ]
}
check "up with busy ports names each port and its process, starts nothing" t_busy_port

# A second cluster beside the first: its own state directory, every port moved by 10000.
# Started in a process group of its own, as a shell started from a terminal would be.
PB=$TAP_TMP/pb/nested/state # and its parents do not exist yet
t_port_base() {
  bg_start "$TAP_TMP/pb.log" setsid "$D" up --runtime process --state-dir "$PB" --port-base 18080
  PB_PID=$BG_PID
  wait_for_log "$TAP_TMP/pb.log" "^ready: curl -H 'Host: hello' http://127.0.0.1:18080/$" 30 || return 1
  [ "$(ps -o pgid= -p "$PB_PID" | tr -d ' ')" = "$PB_PID" ] || { echo "not a group leader"; return 1; }
  ours "$PB" 18080 || return 1
  [ "$(json_field "$(curl -sf -H 'Host: hello' http://127.0.0.1:18080/)" Function)" = hello ] &&
    [ "$(json_field "$(curl -sf -H 'Host: hello' http://127.0.0.1:8080/)" Function)" = hello ] || return 1
  local out
  out=$("$D" --cp 127.0.0.1:19091 status) || return 1
  echo "$out"
  grep -qE '^worker-local +127\.0\.0\.1:20010 +yes ' <<<"$out" && grep -qE '^dp +127\.0\.0\.1:18080 +127\.0\.0\.1:18081$' <<<"$out" || return 1
  # the first cluster still sees only its own
  grep -qE '^worker-local +127\.0\.0\.1:10010 +yes ' <<<"$("$D" status)"
}
check "--port-base 18080: a second cluster beside the default one (fresh nested state dir)" t_port_base

# Prepare the runtime-mismatch case: hello registered as a state directory made with the oci
# runtime would hold it (an oci: image), while this cluster runs processes.
t_oci_hello() {
  "$D" --cp 127.0.0.1:19091 function delete hello >/dev/null || return 1
  local i out
  for i in $(seq 1 100); do
    out=$("$D" --cp 127.0.0.1:19091 function deploy hello --image oci:/nonexistent/fn:latest 2>&1) && return 0
    grep -q 'still being deleted' <<<"$out" || { echo "$out"; return 1; }
    sleep 0.1
  done
  return 1
}
check "(set-up) hello of the second cluster re-registered with an oci: image" t_oci_hello

t_ctrl_c() {
  local pids p i n alive
  pids=$(cat "$PB"/pids/*.pid)
  kill -INT -- "-$PB_PID" # what a terminal's Ctrl-C does: SIGINT to the foreground group
  wait_bounded "$PB_PID" || { echo "up exited $?"; return 1; }
  for i in $(seq 1 100); do
    alive=0
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.05
  done
  [ $alive = 0 ] || { echo "daemons left"; return 1; }
  grep -q '^dirigent: stopped$' "$TAP_TMP/pb.log" || return 1
  for d in cp dp worker; do
    n=$(grep -cE " $d\[[0-9]+\] $d: signal [0-9]+: shutting down" "$PB/logs/$d.log")
    [ "$n" = 1 ] || { echo "$d shut down $n times"; grep signal "$PB/logs/$d.log"; return 1; }
    ! grep -q 'second signal' "$PB/logs/$d.log" || { grep 'second signal' "$PB/logs/$d.log"; return 1; }
  done
  # the first cluster is untouched
  [ "$(json_field "$(curl -sf -H 'Host: hello' http://127.0.0.1:8080/)" Function)" = hello ]
}
check "Ctrl-C (SIGINT to the process group): each daemon gets one signal, shuts down once, all gone" t_ctrl_c

t_runtime_mismatch() {
  bg_start "$TAP_TMP/pb2.log" setsid "$D" up --runtime process --state-dir "$PB" --port-base 18080
  local up=$BG_PID out
  wait_for_log "$TAP_TMP/pb2.log" "^ready: curl -H 'Host: hello' http://127.0.0.1:18080/$" 30 || return 1
  cat "$TAP_TMP/pb2.log"
  grep -q "^hello: registered with image oci:/nonexistent/fn:latest (not this runtime's); re-deploying it for the process runtime with $B/dirigent-fn$" "$TAP_TMP/pb2.log" || return 1
  out=$(curl -s -m 20 -H 'Host: hello' http://127.0.0.1:18080/)
  echo "$out"
  [ "$(json_field "$out" Function)" = hello ] || return 1
  kill -INT -- "-$up"; wait_bounded "$up"
}
check "a state directory reused with another runtime: up re-deploys hello for this one and says so" t_runtime_mismatch

cold_left() { "$D" --json function list | /usr/bin/python3 -c 'import json,sys; print(len([f for f in json.load(sys.stdin) if f["name"].startswith("cold-")]))'; }
wait_cold_gone() {
  local i
  for i in $(seq 1 100); do [ "$(cold_left)" = 0 ] && return 0; sleep 0.1; done
  echo "left: $(cold_left)"; return 1
}

t_load_cold() {
  local out
  out=$("$D" load rps --rate 4 --duration 1 --cold --cooldown 1 2>&1) || { echo "$out"; return 1; }
  echo "$out"
  grep -q 'removed the 4 function(s) it registered' <<<"$out" && wait_cold_gone || return 1
  out=$("$D" load rps --rate 2 --duration 1 --cold --cooldown 1 --keep 2>&1) || { echo "$out"; return 1; }
  [ "$(cold_left)" = 2 ] || { echo "kept: $(cold_left)"; return 1; }
  for f in $("$D" --json function list | /usr/bin/python3 -c 'import json,sys; print(" ".join(f["name"] for f in json.load(sys.stdin) if f["name"].startswith("cold-")))'); do
    "$D" function delete "$f" >/dev/null || return 1
  done
  wait_cold_gone
}
check "load rps --cold removes the functions it registered; --keep keeps them" t_load_cold

t_load_cold_interrupted() {
  bg_start "$TAP_TMP/load.log" setsid "$D" load rps --rate 2 --duration 60 --cold --cooldown 2
  local pid=$BG_PID i
  for i in $(seq 1 100); do [ "$(cold_left)" = 4 ] && break; sleep 0.1; done
  [ "$(cold_left)" = 4 ] || { echo "registered: $(cold_left)"; cat "$TAP_TMP/load.log"; return 1; }
  kill -INT -- "-$pid"
  wait_bounded "$pid"; local rc=$?
  cat "$TAP_TMP/load.log"
  [ $rc = 130 ] && grep -q 'interrupted after' "$TAP_TMP/load.log" &&
    grep -q 'removed the 4 function(s)' "$TAP_TMP/load.log" && wait_cold_gone
}
check "load rps --cold interrupted by Ctrl-C still removes its functions" t_load_cold_interrupted

t_stop() {
  local pids
  pids=$(cat "$STATE"/pids/*.pid)
  kill -TERM "$UP_PID"
  wait_bounded "$UP_PID"
  local p
  for p in $pids; do
    if kill -0 "$p" 2>/dev/null; then echo "pid $p still running"; return 1; fi
  done
}
check "SIGTERM stops every daemon" t_stop

# `dirigent up` without --runtime: containers as root with crun, else processes, saying why
t_up_auto() {
  host_snapshot >"$TAP_TMP/host.before"
  bg_start "$TAP_TMP/up2.log" "$D" up --state-dir "$TAP_TMP/state2"
  local up=$BG_PID oci=0 out
  [ "$(id -u)" = 0 ] && command -v crun >/dev/null && [ -d "$B/images/dirigent-fn" ] && oci=1
  if [ $oci = 1 ]; then
    wait_for_log "$TAP_TMP/up2.log" "^runtime oci \(crun, image oci:$B/images/dirigent-fn:latest\)$" || return 1
  else
    wait_for_log "$TAP_TMP/up2.log" '^runtime process \(containers need ' || return 1
  fi
  wait_for_log "$TAP_TMP/up2.log" "^ready: curl" 60 || { cat "$TAP_TMP/state2/logs/worker.log"; return 1; }
  ours "$TAP_TMP/state2" 8080 || return 1
  out=$(curl -sf -H 'Host: hello' http://127.0.0.1:8080/) || return 1
  echo "$out"
  if [ $oci = 1 ]; then # a container: its own hostname, the sandbox's id
    grep -q '^worker-local-' <<<"$(json_field "$out" MachineName)" || return 1
  fi
  kill -TERM "$up"
  wait_bounded "$up"
  # nothing left: no process, container, mount, netns, veth, bridge or cgroup of the cluster
  host_nothing_left "$TAP_TMP/host.before" || return 1
  # and the worker's run dir (named from its instance: the log's "oci: instance" line)
  local run
  run=$(sed -n 's/.*oci: instance [0-9a-f]*: runDir \([^ ,]*\).*/\1/p' "$TAP_TMP/state2/logs/worker.log" | head -n 1)
  [ $oci = 0 ] || { [ -n "$run" ] && [ ! -e "$run" ]; }
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
  # the daemons answering are the ones this up started
  for i in 0 1 2; do answers_as "127.0.0.1:$((9090 + 10 * i))" /v1/status "$(cat "$S/pids/cp-$i.pid")" "$S/operator.token" || return 1; done
  for i in 0 1; do answers_as "127.0.0.1:$((8081 + 10 * i))" /health "$(cat "$S/pids/dp-$i.pid")" || return 1; done
  answers_as 127.0.0.1:10010 /health "$(cat "$S/pids/worker.pid")" || return 1
  # Redis wants its password (STATE/redis.pass, 0600, never on a command line): the CPs have it
  [ "$(stat -c %a "$S/redis.pass")" = 600 ] && [ "$(stat -c %a "$S/redis.conf")" = 600 ] || return 1
  out=$(redis-cli -p 6380 get x 2>&1); grep -q NOAUTH <<<"$out" || { echo "redis without AUTH: $out"; return 1; }
  ! grep -q "$(cat "$S/redis.pass")" "/proc/$(cat "$S/pids/redis.pid")/cmdline" || return 1
  # status (asked of any replica) lists the three replicas, one of them leading
  out=$(DIRIGENT_TOKEN=$(cat "$S/operator.token") "$D" --cp 127.0.0.1:9101 status) || return 1
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
  local op=(-H "Authorization: Bearer $(cat "$S/operator.token")")
  curl -s "${op[@]}" http://127.0.0.1:8081/metrics | grep -qE '^dg_dp_requests_total\{function="hello"\} [1-9]' && victim=dp-0
  curl -s "${op[@]}" "http://127.0.0.1:$([ $victim = dp-0 ] && echo 8081 || echo 8091)/metrics" |
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
  kill -TERM "$up"; wait_bounded "$up"
  for p in $pids; do
    [ "$p" = "$dead" ] && continue
    if kill -0 "$p" 2>/dev/null; then echo "pid $p still running"; return 1; fi
  done
}
check "dirigent up --cp-replicas 3 --dataplanes 2: a leader, Redis with a password, HAProxy in front, registrations on :9092, a dead DP routed around, a clean stop" t_up_ha

# `up` killed with -9: its daemons stop too (nothing left holding the ports)
t_up_killed() {
  local S=$TAP_TMP/state4 pids p i
  bg_start "$TAP_TMP/up4.log" "$D" up --runtime process --state-dir "$S"
  local up=$BG_PID
  wait_for_log "$TAP_TMP/up4.log" "^ready: curl" 30 || return 1
  ours "$S" 8080 || return 1
  pids=$(cat "$S"/pids/*.pid)
  kill -9 "$up"; wait_bounded "$up" 2>/dev/null
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
