#!/usr/bin/env bash
# dirigent-fn end to end: the real binary on an ephemeral port, driven with curl.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
FN=${DG_BUILD_DIR:-build}/dirigent-fn

plan 21

start_fn() { # start_fn LOG [args...] -> sets FN_PID, FN_PORT
  local log=$1; shift
  bg_start "$log" "$FN" --host 127.0.0.1 --port 0 "$@"
  FN_PID=$BG_PID
  wait_for_log "$log" 'listening on 127\.0\.0\.1:[0-9]+' || return 1
  FN_PORT=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$log" | head -1 | sed 's/.*://')
}

start_fn "$TAP_TMP/fn.log" || { echo "Bail out! dirigent-fn did not start"; exit 1; }
URL="http://127.0.0.1:$FN_PORT"
# metric [URL] NAME: an unlabelled sample of /metrics (0 when there is none)
metric() { curl -sf "${2:-$URL}/metrics" | awk -v n="$1" '$1 == n {print $2; f = 1} END {if (!f) print 0}'; }
iterations() { metric dg_fn_work_iterations_total; }

check "GET /health answers 200" \
  bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' $URL/health)\" = 200 ]"

# the cold-start path: without a start-up busy loop nothing runs before it listens (the work
# threads start with the first request that spins), so a fresh one has a single thread
t_cold_path() {
  local threads
  threads=$(awk '/^Threads:/ {print $2}' "/proc/$FN_PID/status") || return 1
  echo "threads after listening: $threads"
  [ "$threads" = 1 ]
}
check "without a start-up loop it listens at once: no worker threads started before a request" t_cold_path

t_spin() {
  local out et before
  before=$(iterations)
  out=$(curl -sf -H 'requested_cpu: 20' -H 'function: hello' "$URL/") || return 1
  et=$(json_field "$out" ExecutionTime) || return 1
  echo "response: $out; iterations $before -> $(iterations)"
  # at least the 20 ms asked for (a floor the server guarantees, whatever the load), spent
  # working (iterations done), not sleeping
  [ "$(json_field "$out" Status)" = OK ] && [ "$et" -ge 20000 ] && [ "$(iterations)" -gt "$before" ]
}
check "requested_cpu: 20 works for at least 20 ms (ExecutionTime in us)" t_spin

t_names() {
  local out before
  before=$(iterations)
  out=$(curl -sf -H 'Host: fn-from-host' "$URL/invoke") || return 1
  echo "response: $out"
  [ "$(json_field "$out" Function)" = fn-from-host ] &&
    [ "$(json_field "$out" MachineName)" = "$(hostname)" ] &&
    [ "$(json_field "$out" ExecutionTime)" = 0 ] && [ "$(iterations)" = "$before" ]
}
check "Function falls back to Host; MachineName is the hostname; no spin without requested_cpu" t_names

t_escape() {
  local out
  out=$(curl -sf -H 'function: a"b\c' "$URL/") || return 1
  [ "$(json_field "$out" Function)" = 'a"b\c' ]
}
check "the function name is JSON-escaped" t_escape

t_empty() {
  local out
  out=$(curl -sf -H 'workload: empty' -H 'requested_cpu: 500' "$URL/") || return 1
  [ "$(json_field "$out" Status)" = "OK - EMPTY" ] && [ "$(json_field "$out" ExecutionTime)" = 0 ]
}
check "workload: empty answers at once with 'OK - EMPTY'" t_empty

t_multiplier() {
  # InVitro's trace function (vhive-serverless/invitro pkg/workload/standard/workload.go,
  # server/trace-func-go) spins multiplier x requested_cpu iterations of 100 square roots (less
  # the milliseconds already spent before the loop, none here), whatever they take
  local out before after
  before=$(iterations)
  out=$(curl -sf -H 'requested_cpu: 5' -H 'multiplier: 50' "$URL/") || return 1
  after=$(iterations)
  echo "response: $out; iterations $before -> $after"
  [ "$(json_field "$out" Status)" = OK ] && [ $((after - before)) = 250 ] || return 1
  before=$after
  out=$(curl -sf -H 'requested_cpu: 7' -H 'multiplier: 1' "$URL/") || return 1
  [ $(($(iterations) - before)) = 7 ]
}
check "multiplier runs InVitro's iteration count: multiplier x requested_cpu" t_multiplier

t_bad_header() {
  local code body
  body=$(curl -s -H 'requested_cpu: 12abc' -w '\n%{http_code}' "$URL/")
  code=$(tail -n1 <<<"$body")
  echo "$body"
  [ "$code" = 400 ] && grep -q "header 'requested_cpu': expected an integer" <<<"$body"
}
check "a bad requested_cpu gets 400 naming the header" t_bad_header

t_garbage() {
  local resp
  exec 3<>"/dev/tcp/127.0.0.1/$FN_PORT" || return 1
  printf 'NOT HTTP AT ALL\r\n\r\n' >&3
  resp=$(timeout 5 head -c 12 <&3)
  exec 3>&-
  echo "got: $resp"
  [ "$resp" = "HTTP/1.1 400" ] &&
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health")" = 200 ]
}
check "malformed request gets 400 and the server keeps serving" t_garbage

hwm_mib() { awk '/^VmHWM/ {print int($2 / 1024)}' "/proc/$1/status"; }

t_memory_ignored() {
  local out code
  # InVitro's header: the function's full memory (here more than maxMemoryMiB, 4096)
  out=$(curl -s -w '\n%{http_code}' -H 'requested_cpu: 1' -H 'requested_memory: 8192' -H 'multiplier: 1' "$URL/")
  code=$(tail -n1 <<<"$out")
  echo "$out; peak RSS $(hwm_mib "$FN_PID") MiB"
  [ "$code" = 200 ] && [ "$(hwm_mib "$FN_PID")" -lt 64 ]
}
check "requested_memory is ignored by default (as the original): 200, nothing allocated" t_memory_ignored

t_allocate_endpoint() {
  local code pid port
  # off by default: the path is an invocation like any other, nothing allocated
  code=$(curl -s -o "$TAP_TMP/alloc.out" -w '%{http_code}' "$URL/_dirigent/allocate?mib=1000")
  echo "default: $code $(cat "$TAP_TMP/alloc.out"); peak RSS $(hwm_mib "$FN_PID") MiB"
  [ "$code" = 200 ] && [ "$(json_field "$(cat "$TAP_TMP/alloc.out")" Status)" = OK ] &&
    [ "$(hwm_mib "$FN_PID")" -lt 64 ] || return 1
  # with the variable a registration sets: allocates and touches N MiB, bounded by maxMemoryMiB
  DIRIGENT_FN_ALLOCATE_ENDPOINT=true bg_start "$TAP_TMP/fn-alloc.log" "$FN" --host 127.0.0.1 --port 0
  pid=$BG_PID
  wait_for_log "$TAP_TMP/fn-alloc.log" 'listening on' || return 1
  port=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$TAP_TMP/fn-alloc.log" | sed 's/.*://')
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/_dirigent/allocate?mib=100")
  echo "enabled: $code; peak RSS $(hwm_mib $pid) MiB"
  [ "$code" = 200 ] && [ "$(hwm_mib $pid)" -ge 100 ] || { kill $pid; return 1; }
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/_dirigent/allocate?mib=100000")
  kill $pid
  [ "$code" = 400 ]
}
check "/_dirigent/allocate only with DIRIGENT_FN_ALLOCATE_ENDPOINT=true (else an ordinary invocation)" t_allocate_endpoint

t_memory_option() {
  local out pid
  bg_start "$TAP_TMP/fn-mem.log" "$FN" --host 127.0.0.1 --port 0 --allocateRequestedMemory
  pid=$BG_PID
  wait_for_log "$TAP_TMP/fn-mem.log" 'listening on' || return 1
  local port; port=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$TAP_TMP/fn-mem.log" | sed 's/.*://')
  out=$(curl -sf -H 'requested_cpu: 1' -H 'requested_memory: 200' "http://127.0.0.1:$port/") || return 1
  echo "$out; peak RSS $(hwm_mib $pid) MiB"
  [ "$(hwm_mib $pid)" -ge 200 ] || return 1
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'requested_memory: 8192' "http://127.0.0.1:$port/")" = 400 ] || return 1
  kill -TERM $pid; wait_bounded $pid
}
check "--allocateRequestedMemory touches the header's MiB (and bounds it: 400 over maxMemoryMiB)" t_memory_option

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

t_startup_loop() {
  local p pid refused=0 i=0
  p=$(free_port)
  # about 2 s of work here (dirigent-fn --calibrate: ~1500 iterations per ms), longer when busy
  COLD_START_BUSY_LOOP_MS=2000 ITERATIONS_MULTIPLIER=1500 bg_start "$TAP_TMP/fn-start.log" "$FN" --host 127.0.0.1 --port "$p" --logLevel debug
  pid=$BG_PID
  # not ready while it loops: connections are refused until it listens
  while ! grep -q 'listening on' "$TAP_TMP/fn-start.log"; do
    if ! curl -s -o /dev/null "http://127.0.0.1:$p/health" && ! grep -q 'listening on' "$TAP_TMP/fn-start.log"; then
      refused=1
    fi
    i=$((i + 1)); [ $i -lt 600 ] || return 1
    sleep 0.05
  done
  cat "$TAP_TMP/fn-start.log"
  [ $refused = 1 ] || { echo "never saw it unready"; return 1; }
  # once it answers, the whole loop was done: 1500 x 2000 iterations, and no invocation work
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p/health")" = 200 ] &&
    [ "$(metric dg_fn_startup_work_iterations "http://127.0.0.1:$p")" = 3000000 ] &&
    [ "$(metric dg_fn_work_iterations_total "http://127.0.0.1:$p")" = 0 ] || return 1
  kill -TERM $pid; wait_bounded $pid
}
check "COLD_START_BUSY_LOOP_MS x ITERATIONS_MULTIPLIER runs before it listens (not ready until then)" t_startup_loop

t_startup_sigterm() {
  local pid rc p
  p=$(free_port)
  COLD_START_BUSY_LOOP_MS=3600000 bg_start "$TAP_TMP/fn-term.log" "$FN" --host 127.0.0.1 --port "$p"
  pid=$BG_PID
  # into the loop (an hour of it): it runs on a thread of the pool, started after the
  # signal handlers
  poll_until 200 awk '/^Threads:/ {exit !($2 > 1)}' "/proc/$pid/status" || return 1
  # not listening
  ! curl -s -o /dev/null -m 2 "http://127.0.0.1:$p/health" || return 1
  kill -TERM $pid
  wait_bounded $pid; rc=$?
  cat "$TAP_TMP/fn-term.log"
  [ $rc = 0 ]
}
check "SIGTERM during the start-up loop ends it and exits 0 without listening" t_startup_sigterm

t_startup_bad_env() {
  local out rc
  out=$(ITERATIONS_MULTIPLIER=lots "$FN" --port 0 2>&1); rc=$?
  echo "$out (exit $rc)"
  [ $rc = 2 ] && grep -q ITERATIONS_MULTIPLIER <<<"$out" && grep -q lots <<<"$out"
}
check "a bad ITERATIONS_MULTIPLIER stops start-up naming the variable" t_startup_bad_env

t_parallel_health() {
  curl -s -o /dev/null -H 'requested_cpu: 2000' "$URL/" &
  local spin=$!
  # the spin is in the server (the scrape itself is the other active request)
  poll_until 200 bash -c "curl -s '$URL/metrics' | grep -q '^dg_http_active_requests [2-9]'" || return 1
  curl -sf -o /dev/null --max-time 10 "$URL/health" || return 1
  # the spin must still be running: /health did not wait behind it
  kill -0 $spin 2>/dev/null || { echo "the spin finished before /health answered"; return 1; }
  wait_bounded $spin
}
check "/health answers while a long spin runs (work is off the event loop)" t_parallel_health

t_metrics() {
  local m
  m=$(curl -sf "$URL/metrics") || return 1
  grep -qE '^dg_fn_invocations_total [1-9]' <<<"$m" && grep -q '^# TYPE dg_fn_invocations_total counter' <<<"$m"
}
check "/metrics counts invocations in Prometheus text" t_metrics

t_sigterm() {
  local out rc
  curl -s -H 'requested_cpu: 300' "$URL/" >"$TAP_TMP/inflight" &
  local c=$! i=0
  # wait until the server has it (the scrape itself is the other active request)
  until curl -s "$URL/metrics" | grep -q '^dg_http_active_requests [2-9]'; do
    i=$((i + 1)); [ $i -lt 200 ] || return 1; sleep 0.02
  done
  kill -TERM "$FN_PID"
  wait_bounded "$FN_PID"; rc=$?
  wait_bounded $c
  out=$(cat "$TAP_TMP/inflight")
  echo "exit $rc, in-flight: $out"
  [ $rc = 0 ] && [ "$(json_field "$out" Status)" = OK ]
}
check "SIGTERM finishes the request in flight and exits 0" t_sigterm

t_env_port() {
  local p
  p=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  PORT=$p bg_start "$TAP_TMP/fn-env.log" "$FN" --host 127.0.0.1
  local pid=$BG_PID
  wait_for_log "$TAP_TMP/fn-env.log" "listening on 127.0.0.1:$p" || { kill $pid; return 1; }
  kill -TERM $pid; wait_bounded $pid
}
check "PORT from the environment" t_env_port

t_bad_config() {
  local out rc
  out=$("$FN" --port 70000 2>&1); rc=$?
  echo "$out (exit $rc)"
  [ $rc = 2 ] && grep -q "port" <<<"$out" && grep -q "70000" <<<"$out"
}
check "a bad --port stops start-up with exit 2 naming the key and value" t_bad_config

t_help() {
  local out
  out=$("$FN" --help) || return 1
  grep -q 'port' <<<"$out" && grep -q 'http.maxHeaderBytes' <<<"$out" && grep -q 'PORT' <<<"$out"
}
check "--help lists the keys" t_help

tap_done
