#!/usr/bin/env bash
# dirigent-worker end to end: the real daemon with the process and emulated runtimes, driven
# through its API with curl; sandboxes are real dirigent-fn processes.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
WK=$B/dirigent-worker
FN=$B/dirigent-fn

plan 14

start_worker() { # start_worker LOG [args...] -> WK_PID, WK_URL
  local log=$1; shift
  bg_start "$log" "$WK" --workerNodeIp 127.0.0.1 --port 0 --name test-wk --controlPlaneAddress '' \
    --processUser nobody --processAllowedDirs "$B,/bin" "$@"
  WK_PID=$BG_PID
  # the worker's own line (an emulated worker's shared dirigent-fn logs to the same file)
  wait_for_log "$log" 'listening on 127\.0\.0\.1:[0-9]+, runtime' || return 1
  WK_URL="http://127.0.0.1:$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+, runtime' "$log" | head -1 | sed 's/.*://; s/,.*//')"
}

# pids of processes whose environment holds TAG (sandboxes are tagged through "env")
pids_with() { grep -l "$1" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3; }

start_worker "$TAP_TMP/wk.log" || { echo "Bail out! dirigent-worker did not start"; exit 1; }

t_create_invoke() {
  local out ep
  out=$(curl -sf -XPOST "$WK_URL/v1/sandboxes" \
    -d "{\"function\":\"hello\",\"image\":\"$FN\",\"port\":80,\"env\":[\"DG_TEST_TAG=t1-$$\"]}") || return 1
  echo "create: $out"
  ep=$(json_field "$out" endpoint) || return 1
  [ "$(json_field "$out" function)" = hello ] || return 1
  # ready means answering: the first request must succeed at once
  out=$(curl -sf -H 'function: hello' "http://$ep/") || return 1
  [ "$(json_field "$out" Status)" = OK ] || return 1
  SB1=$(curl -sf "$WK_URL/v1/sandboxes" | /usr/bin/python3 -c \
    'import json,sys; s=json.load(sys.stdin)["sandboxes"]; print(s[0]["id"] if s and s[0]["state"]=="ready" else "")')
  EP1=$ep
  [ -n "$SB1" ]
}
check "create a process sandbox: 201 once it answers, endpoint serves, listed as ready" t_create_invoke

t_latency() {
  local out
  out=$(curl -sf -XPOST "$WK_URL/v1/sandboxes" -d "{\"function\":\"lat\",\"image\":\"$FN\"}") || return 1
  /usr/bin/python3 -c 'import json,sys; l=json.loads(sys.argv[1])["latencyUs"]; \
    assert l["total"] >= l["start"] > 0 and l["total"] >= l["ready"], l' "$out" || return 1
  curl -sf -XDELETE "$WK_URL/v1/sandboxes/$(json_field "$out" id)" >/dev/null
}
check "a create reports its latency breakdown" t_latency

t_delete() {
  curl -sf -XDELETE "$WK_URL/v1/sandboxes/$SB1" || return 1
  local i=0
  while [ -n "$(pids_with "DG_TEST_TAG=t1-$$")" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
  [ -z "$(pids_with "DG_TEST_TAG=t1-$$")" ] || { echo "sandbox process still running"; return 1; }
  ! curl -s -o /dev/null "http://$EP1/" || { echo "endpoint still answers"; return 1; }
  [ "$(curl -s -o /dev/null -w '%{http_code}' -XDELETE "$WK_URL/v1/sandboxes/$SB1")" = 404 ]
}
check "delete stops the process; a second delete is 404" t_delete

t_bad_requests() {
  local body
  body=$(curl -s -w ' %{http_code}' -XPOST "$WK_URL/v1/sandboxes" -d '{"function":"x","image":"rel/path"}' | tr '\n' ' ')
  echo "$body"; grep -q "field 'image'.*absolute path.* 400$" <<<"$body" || return 1
  body=$(curl -s -w ' %{http_code}' -XPOST "$WK_URL/v1/sandboxes" -d '{"image":"/bin/true"}' | tr '\n' ' ')
  echo "$body"; grep -q "field 'function': required .*400$" <<<"$body" || return 1
  body=$(curl -s -w ' %{http_code}' -XPOST "$WK_URL/v1/sandboxes" -d '{"function":' | tr '\n' ' ')
  echo "$body"; grep -q "invalid JSON.* 400$" <<<"$body" || return 1
  body=$(curl -s -w ' %{http_code}' -XPOST "$WK_URL/v1/sandboxes" -d '{"function":"x","image":"/bin/true","port":0}' | tr '\n' ' ')
  echo "$body"; grep -q "field 'port'.* 400$" <<<"$body"
}
check "bad create requests get 400 naming the field" t_bad_requests

t_exits_at_start() {
  local body
  body=$(curl -s -w ' %{http_code}' -XPOST "$WK_URL/v1/sandboxes" -d '{"function":"bad","image":"/bin/false"}' | tr '\n' ' ')
  echo "$body"; grep -q "exited during start (status 1) .*503$" <<<"$body" || return 1
  body=$(curl -s -w ' %{http_code}' -XPOST "$WK_URL/v1/sandboxes" -d '{"function":"bad","image":"'"$B"'/no-such-cmd"}' | tr '\n' ' ')
  echo "$body"; grep -q "cannot start '$B/no-such-cmd'.* 503$" <<<"$body"
}
check "a command that cannot start or exits at once fails the create with 503 and the reason" t_exits_at_start

t_unexpected_exit() {
  local out pid state
  out=$(curl -sf -XPOST "$WK_URL/v1/sandboxes" \
    -d "{\"function\":\"dies\",\"image\":\"$FN\",\"env\":[\"DG_TEST_TAG=t2-$$\"]}") || return 1
  pid=$(pids_with "DG_TEST_TAG=t2-$$")
  [ -n "$pid" ] || return 1
  kill -9 $pid
  local i=0
  while [ $i -lt 100 ]; do
    state=$(curl -sf "$WK_URL/v1/sandboxes" | /usr/bin/python3 -c \
      'import json,sys; print([s["state"] for s in json.load(sys.stdin)["sandboxes"] if s["function"]=="dies"][0])')
    [ "$state" = exited ] && break
    sleep 0.05; i=$((i + 1))
  done
  echo "state: $state"
  [ "$state" = exited ] && curl -sf "$WK_URL/metrics" | grep -q '^dg_worker_sandbox_unexpected_exits_total 1$'
}
check "a sandbox that exits by itself is seen at once (state exited, counted)" t_unexpected_exit

t_sigterm() {
  curl -sf -XPOST "$WK_URL/v1/sandboxes" \
    -d "{\"function\":\"left\",\"image\":\"$FN\",\"env\":[\"DG_TEST_TAG=t3-$$\"]}" >/dev/null || return 1
  [ -n "$(pids_with "DG_TEST_TAG=t3-$$")" ] || return 1
  kill -TERM "$WK_PID"
  wait_bounded "$WK_PID"; local rc=$?
  echo "exit $rc"
  [ $rc = 0 ] && [ -z "$(pids_with "DG_TEST_TAG=t3-$$")" ]
}
check "SIGTERM stops the worker (exit 0) and the sandboxes it runs" t_sigterm

# kill -9: its sandboxes run in their own sessions and survive it; the next worker of that
# name removes them at start. A worker of the same name that is running keeps its own.
t_crash_leftovers() {
  start_worker "$TAP_TMP/wk-c1.log" --runDir "$TAP_TMP/run" || return 1
  local first=$WK_PID
  curl -sf -XPOST "$WK_URL/v1/sandboxes" \
    -d "{\"function\":\"orphan\",\"image\":\"$FN\",\"env\":[\"DG_TEST_TAG=t4-$$\"]}" >/dev/null || return 1
  [ -n "$(pids_with "DG_TEST_TAG=t4-$$")" ] || return 1
  # a second live worker of the same name starts: it must not touch the first one's sandbox
  start_worker "$TAP_TMP/wk-c2.log" --runDir "$TAP_TMP/run" || return 1
  local second=$WK_PID
  [ -n "$(pids_with "DG_TEST_TAG=t4-$$")" ] || { echo "a live worker's sandbox was killed"; return 1; }
  kill -TERM "$second"; wait_bounded "$second"
  kill -9 "$first"; wait_bounded "$first" 2>/dev/null
  [ -n "$(pids_with "DG_TEST_TAG=t4-$$")" ] || { echo "the sandbox died with its worker?"; return 1; }
  start_worker "$TAP_TMP/wk-c3.log" --runDir "$TAP_TMP/run" || return 1
  # the sandbox the killed one left is gone, and its record with it
  poll_until 100 eval '[ -z "$(pids_with "DG_TEST_TAG=t4-$$")" ]' || return 1
  [ -z "$(ls "$TAP_TMP/run/process")" ]
}
check "kill -9 of a worker: the next one of its name removes the sandboxes left running" t_crash_leftovers

t_crash_stop() {
  kill -TERM "$WK_PID"; wait_bounded "$WK_PID" || return 1
  # no record left: its records directory and run directory are removed
  [ ! -e "$TAP_TMP/run" ] || { ls -R "$TAP_TMP/run"; return 1; }
}
check "and stops cleanly, leaving no run directory" t_crash_stop

start_worker "$TAP_TMP/wk-emu.log" --runtime emulated --fnBinary "$FN" --emulatedCreateDelayMs 50 ||
  { echo "Bail out! emulated worker did not start"; exit 1; }

t_emulated() {
  local out ep total
  out=$(curl -sf -XPOST "$WK_URL/v1/sandboxes" -d '{"function":"emu"}') || return 1
  echo "$out"
  total=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["latencyUs"]["total"])' "$out")
  ep=$(json_field "$out" endpoint)
  # libuv timers count whole ms from the loop's cached time: allow 5 ms early
  [ "$total" -ge 45000 ] && [ "$(json_field "$(curl -sf -H 'function: emu' "http://$ep/")" Function)" = emu ]
}
check "emulated create costs the configured delay and points at the shared dirigent-fn" t_emulated

t_emulated_many() {
  local i pids=()
  for i in $(seq 1 20); do
    curl -sf -XPOST "$WK_URL/v1/sandboxes" -d "{\"function\":\"m$i\"}" -o /dev/null &
    pids+=($!)
  done
  wait_bounded "${pids[@]}" # not a bare wait: the worker is a background job too
  [ "$(curl -sf "$WK_URL/v1/sandboxes" | /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)["sandboxes"]))')" = 21 ]
}
check "20 concurrent emulated creates all succeed" t_emulated_many

t_emulated_stop() {
  kill -TERM "$WK_PID"; wait_bounded "$WK_PID"
}
check "the emulated worker stops cleanly with its shared dirigent-fn" t_emulated_stop

# kill -9 of an emulated worker: its shared dirigent-fn (tied by --parentPid) goes with it
t_emulated_killed() {
  start_worker "$TAP_TMP/wk-emu2.log" --runtime emulated --fnBinary "$FN" || return 1
  local fn i
  fn=$(pgrep -P "$WK_PID" -f "dirigent-fn .*--parentPid $WK_PID") || { echo "no shared dirigent-fn"; return 1; }
  kill -9 "$WK_PID"; wait_bounded "$WK_PID" 2>/dev/null
  for i in $(seq 100); do kill -0 "$fn" 2>/dev/null || return 0; sleep 0.05; done
  echo "shared dirigent-fn $fn still running 5 s after its worker's kill -9"
  kill -9 "$fn"
  return 1
}
check "kill -9 of an emulated worker: its shared dirigent-fn exits too" t_emulated_killed

t_bad_cpu_limit() {
  local out rc
  out=$("$WK" --port 0 --controlPlaneAddress '' --sandboxCpuLimit lots 2>&1); rc=$?
  echo "$out (exit $rc)"
  [ $rc = 2 ] && grep -q "sandboxCpuLimit: expected none, request or a factor of the request like 2x" <<<"$out" &&
    grep -q "'lots'" <<<"$out"
}
check "a bad sandboxCpuLimit stops start-up naming the key, the choices and the value" t_bad_cpu_limit

tap_done
