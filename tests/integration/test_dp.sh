#!/usr/bin/env bash
# dirigent-dp end to end: the real data plane in front of real dirigent-fn sandboxes; the
# control plane's pushes are made with curl through the DP's API, as the CP will make them.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
SRC=${DG_SOURCE_DIR:-$(dirname "$0")/../..}
DP=$B/dirigent-dp
FN=$B/dirigent-fn

plan 16

start_fn() { # start_fn LOG VAR: sets VAR to host:port (no subshell: the pid must be ours to kill)
  bg_start "$1" "$FN" --host 127.0.0.1 --port 0
  wait_for_log "$1" 'listening on' >/dev/null || return 1
  printf -v "$2" '%s' "$(grep -oE 'listening on [0-9.]+:[0-9]+' "$1" | head -1 | sed 's/listening on //')"
}
start_fn "$TAP_TMP/f1.log" F1 && start_fn "$TAP_TMP/f2.log" F2 ||
  { echo "Bail out! dirigent-fn did not start"; exit 1; }
DEAD=127.0.0.1:$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# 3 s: the queued requests of t_slots wait while the test polls the DP between gates (slow
# under sanitizers on a busy machine); the deadline tests wait it out
bg_start "$TAP_TMP/dp.log" "$DP" --portProxy 0 --portGRPC 0 --coldStartTimeout 3s --controlPlaneAddress '' \
  --traceOutputFolder '' \
  --loadBalancingPolicy round-robin
DP_PID=$BG_PID
wait_for_log "$TAP_TMP/dp.log" 'proxy on' || { echo "Bail out! dirigent-dp did not start"; exit 1; }
P=http://127.0.0.1:$(grep -oE 'proxy on [0-9.]+:[0-9]+' "$TAP_TMP/dp.log" | sed 's/.*://')
A=http://127.0.0.1:$(grep -oE 'api on [0-9.]+:[0-9]+' "$TAP_TMP/dp.log" | sed 's/.*://')

fn_put() { curl -sf -XPUT "$A/v1/functions/$1" -d "{\"concurrency\":${2:-1}}" >/dev/null; }
eps_put() { # eps_put FN id=addr ...
  local f=$1 body="" sep=""; shift
  for kv in "$@"; do body="$body$sep{\"id\":\"${kv%%=*}\",\"address\":\"${kv#*=}\"}"; sep=","; done
  curl -sf -XPUT "$A/v1/functions/$f/endpoints" -d "{\"endpoints\":[$body]}" >/dev/null
}
code_of() { curl -s -o "$TAP_TMP/body" -w '%{http_code}' "$@"; }
# wait_fn FN FIELD N: poll the DP's API until FIELD (queued, inFlight) of FN reaches N (5 s)
wait_fn() {
  local i=0 v
  while [ $i -lt 100 ]; do
    v=$(curl -sf "$A/v1/functions" | /usr/bin/python3 -c \
      "import json,sys; print([f['$2'] for f in json.load(sys.stdin) if f['name']=='$1'][0])")
    [ "$v" -ge "$3" ] 2>/dev/null && return 0
    sleep 0.05; i=$((i + 1))
  done
  echo "$1: $2 did not reach $3 (last: $v)"; return 1
}

t_unknown() {
  [ "$(code_of -H 'Host: ghost' "$P/")" = 404 ] && grep -q "function 'ghost' is not registered" "$TAP_TMP/body"
}
check "an unknown function gets 404 naming it" t_unknown

t_warm() {
  fn_put hello && eps_put hello "s1=$F1" || return 1
  local out
  out=$(curl -sf -H 'Host: hello' -H 'requested_cpu: 5' "$P/path?q=1") || return 1
  echo "$out"
  [ "$(json_field "$out" Function)" = hello ] && [ "$(json_field "$out" ExecutionTime)" -ge 5000 ] || return 1
  # the sandbox's headers come through (hop-by-hop ones are the DP's own), one Date, no cold
  # start mark on a warm request
  curl -sf -D "$TAP_TMP/h" -o /dev/null -H 'Host: hello' "$P/" || return 1
  tr -d '\r' <"$TAP_TMP/h" | grep -qx 'Content-Type: application/json' &&
    [ "$(grep -ci '^date:' "$TAP_TMP/h")" = 1 ] && ! grep -qi '^X-Dirigent-Cold-Start' "$TAP_TMP/h"
}
check "a warm invocation is proxied with its headers (Host names the function)" t_warm

t_cold() {
  fn_put cold || return 1
  curl -s -D "$TAP_TMP/cold.h" -H 'Host: cold' -o "$TAP_TMP/cold.out" -w '%{http_code}' "$P/" >"$TAP_TMP/cold.code" &
  local c=$!
  wait_fn cold queued 1 || return 1 # waiting in the queue: no sandbox yet
  eps_put cold "c1=$F1" || return 1
  wait_bounded $c
  [ "$(cat "$TAP_TMP/cold.code")" = 200 ] && [ "$(json_field "$(cat "$TAP_TMP/cold.out")" Function)" = cold ] &&
    grep -qi '^X-Dirigent-Cold-Start: 1' "$TAP_TMP/cold.h" # it waited for a sandbox
}
check "a cold invocation waits in the queue and is released by the endpoint push" t_cold

t_deadline() {
  fn_put lonely || return 1
  [ "$(code_of -H 'Host: lonely' "$P/")" = 503 ] &&
    grep -q "function 'lonely': no sandbox became available within 3000 ms (cold start timed out)" "$TAP_TMP/body"
}
check "past the queue deadline: 503 with a message" t_deadline

t_create_error() {
  # what the CP pushes when a create failed and there is no sandbox (test_create_error.sh
  # has the queued requests answered at once; here what stays and what clears it)
  fn_put broke || return 1
  curl -sf -XPUT "$A/v1/endpoints" \
    -d '{"functions":[{"name":"broke","concurrency":1,"endpoints":[],"error":"image not found"}]}' >/dev/null || return 1
  # a later request queues as usual; at its deadline the message has the last failure
  [ "$(code_of -H 'Host: broke' "$P/")" = 503 ] && cat "$TAP_TMP/body" &&
    grep -q "function 'broke': no sandbox became available within 3000 ms (cold start timed out; the last attempt failed: image not found)" "$TAP_TMP/body" || return 1
  # an empty list without an error keeps it; an update with endpoints clears it
  curl -sf -XPUT "$A/v1/endpoints" -d '{"functions":[{"name":"broke","endpoints":[]}]}' >/dev/null &&
    curl -sf "$A/v1/functions" | /usr/bin/python3 -c \
      'import json,sys; f=[f for f in json.load(sys.stdin) if f["name"]=="broke"][0]; assert f["error"]=="image not found", f' || return 1
  eps_put broke "b1=$F1" && [ "$(code_of -H 'Host: broke' "$P/")" = 200 ] &&
    curl -sf "$A/v1/functions" | /usr/bin/python3 -c \
      'import json,sys; f=[f for f in json.load(sys.stdin) if f["name"]=="broke"][0]; assert f["error"] is None, f'
}
check "a pushed create error: shown, kept by an empty list, named at the deadline, cleared by endpoints" t_create_error

# fn_is FN FIELD N: FIELD of FN in the DP's API is N now: queued, inFlight (all its requests),
# atSandboxes (the sum of its endpoints' inFlight: requests sent on to a sandbox)
fn_is() {
  local v
  v=$(curl -sf "$A/v1/functions" | /usr/bin/python3 -c "import json,sys
f=[f for f in json.load(sys.stdin) if f['name']=='$1'][0]
f['atSandboxes']=sum(e['inFlight'] for e in f['endpoints'])
print(f['$2'])")
  [ "$v" = "$3" ] || { echo "$1: $2 is $v, not $3"; return 1; }
}
lines() { [ "$(cat "$1" 2>/dev/null | wc -l)" = "$2" ] || { echo "$1: $(cat "$1" 2>/dev/null | tr '\n' ' ')(not $2 lines)"; return 1; }; }

# An upstream that holds each request until the test opens its gate (tests/lib/gate_server.py):
# the DP's state is looked at while requests are in a known place.
GATE=$TAP_TMP/gate
mkdir -p "$GATE"
bg_start "$TAP_TMP/gate.log" /usr/bin/python3 "$SRC/tests/lib/gate_server.py" "$GATE"

t_slots() {
  poll_until 200 test -s "$GATE/port" || return 1
  fn_put busy 1 && eps_put busy "g1=127.0.0.1:$(cat "$GATE/port")" || return 1
  local i pids=()
  for i in 1 2 3; do
    curl -s -o "$TAP_TMP/slot.$i" -w '%{http_code}' -H 'Host: busy' "$P/" >"$TAP_TMP/slot.$i.code" &
    pids+=($!)
    # each request is in the DP before the next is sent: the first in the slot, then queued
    if [ $i = 1 ]; then poll_until 200 fn_is busy atSandboxes 1 || return 1
    else poll_until 200 fn_is busy queued $((i - 1)) || return 1; fi
  done
  # the two beyond the one slot wait in the DP: the sandbox has seen only the first
  fn_is busy inFlight 3 && fn_is busy atSandboxes 1 && fn_is busy queued 2 &&
    lines "$GATE/arrived" 1 || return 1
  for i in 1 2 3; do
    touch "$GATE/open.$i" # request i may finish: the next one, and only it, reaches the sandbox
    poll_until 200 lines "$GATE/done" $i || return 1
    if [ $i -lt 3 ]; then
      poll_until 200 lines "$GATE/arrived" $((i + 1)) || return 1
      fn_is busy queued $((2 - i)) && fn_is busy atSandboxes 1 && lines "$GATE/arrived" $((i + 1)) || return 1
    fi
  done
  wait_bounded "${pids[@]}"
  # all succeeded, in the order they came (the queue is first in, first out)
  for i in 1 2 3; do
    [ "$(cat "$TAP_TMP/slot.$i.code")" = 200 ] && [ "$(cat "$TAP_TMP/slot.$i")" = $i ] ||
      { echo "request $i: $(cat "$TAP_TMP/slot.$i.code") $(cat "$TAP_TMP/slot.$i")"; return 1; }
  done
  poll_until 200 fn_is busy inFlight 0
}
check "with concurrency 1, requests beyond the free slots wait in the DP's queue (not at the sandbox) and go in order" t_slots

t_retry() {
  fn_put flaky && eps_put flaky "d1=$DEAD" "l1=$F2" || return 1
  local k
  for k in 1 2 3 4; do # round-robin reaches the dead endpoint; each is retried on the live one
    [ "$(code_of -H 'Host: flaky' "$P/")" = 200 ] || { cat "$TAP_TMP/body"; return 1; }
  done
}
check "a connect failure (nothing sent) is retried once on another endpoint" t_retry

t_502() {
  fn_put broken && eps_put broken "d1=$DEAD" || return 1
  [ "$(code_of -H 'Host: broken' "$P/")" = 502 ] && cat "$TAP_TMP/body" &&
    grep -q "function 'broken': sandbox $DEAD failed: connect to $DEAD: connection refused" "$TAP_TMP/body"
}
check "a sandbox that cannot be reached gives 502 with the reason" t_502

t_exited() {
  # the CP's push names a sandbox that exited by itself: a request whose connection to it
  # breaks gets 502 with why; a malformed "exited" is refused naming the field
  fn_put oomed || return 1
  curl -sf -XPUT "$A/v1/functions/oomed/endpoints" -d "{\"endpoints\":[{\"id\":\"x1\",\"address\":\"$DEAD\"}],
    \"exited\":[{\"id\":\"x1\",\"reason\":\"OOM-killed: memory limit 64 MiB\"}]}" >/dev/null || return 1
  [ "$(code_of -H 'Host: oomed' "$P/")" = 502 ] && cat "$TAP_TMP/body" &&
    grep -qx "function 'oomed': sandbox x1 OOM-killed: memory limit 64 MiB" "$TAP_TMP/body" || return 1
  [ "$(code_of -XPUT "$A/v1/functions/oomed/endpoints" -d '{"endpoints":[],"exited":[{"id":"x1"}]}')" = 400 ] &&
    grep -q "field 'exited': item 0: field 'reason': required" "$TAP_TMP/body" || { cat "$TAP_TMP/body"; return 1; }
}
check "a pushed sandbox exit reason: the 502 of a request that breaks on it says why" t_exited

t_delete_waiting() {
  # a request whose sandbox broke waits (a moment) for why, holding no sandbox: the function's
  # removal (the CP's DELETE after its drain) answers it at once instead of refusing with 409
  # a sandbox that takes the request and breaks the connection without answering (as one
  # OOM-killed under it): only such a break waits for why, a refused connect is answered at once
  bg_start "$TAP_TMP/breaker.log" /usr/bin/python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(16); print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept(); buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(4096)
        if not d: break
        buf += d
    c.close()'
  wait_for_log "$TAP_TMP/breaker.log" '^[0-9]+$' || return 1
  fn_put gone && eps_put gone "g1=127.0.0.1:$(head -n 1 "$TAP_TMP/breaker.log")" || return 1
  /usr/bin/python3 - "$P" "$A" <<'EOF'
import json, sys, threading, urllib.request, urllib.error
p, a = sys.argv[1], sys.argv[2]
got = {}
def call():
    try:
        urllib.request.urlopen(urllib.request.Request(p + "/", headers={"Host": "gone"}))
        got["code"] = 200
    except urllib.error.HTTPError as e:
        got["code"], got["body"] = e.code, e.read().decode()
t = threading.Thread(target=call); t.start()
while True:  # in the wait: the function has it in flight, its sandbox does not
    f = [f for f in json.load(urllib.request.urlopen(a + "/v1/functions")) if f["name"] == "gone"]
    if not f:
        sys.exit("gone: function missing")
    if f[0]["inFlight"] == 1 and all(e["inFlight"] == 0 for e in f[0]["endpoints"]):
        break
    if "code" in got:
        sys.exit("answered before it could be seen waiting: %s" % got)
req = urllib.request.Request(a + "/v1/functions/gone", method="DELETE")
try:
    code = urllib.request.urlopen(req).status
except urllib.error.HTTPError as e:
    code = e.code
    print(e.read().decode())
t.join()
print("delete", code, "request", got)
assert code == 200 and got["code"] == 502 and "function 'gone': sandbox" in got["body"], (code, got)
EOF
}
check "removing a function answers its requests waiting for why their sandbox broke (no 409)" t_delete_waiting

t_body() {
  head -c 2000000 /dev/zero | tr '\0' 'x' >"$TAP_TMP/big"
  [ "$(code_of -H 'Host: hello' -H 'Expect:' --data-binary @"$TAP_TMP/big" "$P/")" = 413 ] || return 1
  head -c 100000 /dev/zero | tr '\0' 'x' >"$TAP_TMP/body.in"
  [ "$(code_of -H 'Host: hello' --data-binary @"$TAP_TMP/body.in" "$P/")" = 200 ]
}
check "request bodies stream through (and the body limit holds: 413)" t_body

t_drain() {
  fn_put slow && eps_put slow "w1=$F2" || return 1
  curl -s -o "$TAP_TMP/slow.out" -H 'Host: slow' -H 'requested_cpu: 400' "$P/" &
  local c=$!
  wait_fn slow inFlight 1 || return 1
  curl -sf -XPOST "$A/v1/functions/slow/drain" -d '{"ids":["w1"]}' || return 1
  # the drain answered only once the request in flight had finished: nothing runs now, the
  # sandbox is out of the list, and the request got its whole answer
  curl -sf "$A/v1/functions" | /usr/bin/python3 -c \
    'import json,sys; f=[f for f in json.load(sys.stdin) if f["name"]=="slow"][0]; assert f["endpoints"]==[] and f["inFlight"]==0, f' || return 1
  wait_bounded $c
  [ "$(json_field "$(cat "$TAP_TMP/slow.out")" Status)" = OK ]
}
check "drain answers once the sandbox's requests have finished, and removes it" t_drain

t_replace() {
  eps_put hello "s1=$F1" "s2=$F2" && eps_put hello "s1=$F1" "s2=$F2" || return 1
  local n
  n=$(curl -sf "$A/v1/functions" | /usr/bin/python3 -c \
    'import json,sys; print(len([f for f in json.load(sys.stdin) if f["name"]=="hello"][0]["endpoints"]))')
  [ "$n" = 2 ] || { echo "endpoints: $n"; return 1; }
  [ "$(curl -s -o "$TAP_TMP/b" -w '%{http_code}' -XPUT "$A/v1/functions/hello/endpoints" -d '{"endpoints":[{"id":"x","address":"nope"}]}')" = 400 ] &&
    grep -q "item 0: field 'address': expected HOST:PORT (.*), got 'nope'" "$TAP_TMP/b"
}
check "the endpoint list is replaced, never appended; bad items get 400 naming the field" t_replace

t_metrics() {
  local m
  m=$(curl -sf "$A/metrics") || return 1
  grep -qE '^dg_dp_requests_total\{function="hello"\} [1-9]' <<<"$m" &&
    grep -qE '^dg_dp_cold_starts_total\{function="lonely"\} 1$' <<<"$m" &&
    grep -qE '^dg_dp_request_seconds_count\{function="hello"\} [1-9]' <<<"$m" &&
    grep -q '^# TYPE dg_dp_request_seconds histogram' <<<"$m"
}
check "/metrics: per-function requests, cold starts, latency histogram" t_metrics

t_full_push() {
  # a resync (the CP's whole table, "full": true) removes the functions it does not name; a
  # push without it removes nothing
  fn_put stale && fn_put kept || return 1
  curl -sf -XPUT "$A/v1/endpoints" \
    -d "{\"functions\":[{\"name\":\"kept\",\"endpoints\":[{\"id\":\"k1\",\"address\":\"$F1\"}]}]}" >/dev/null || return 1
  [ "$(code_of --max-time 5 -H 'Host: stale' "$P/")" != 404 ] || { echo "stale gone after a plain push"; return 1; }
  curl -sf -XPUT "$A/v1/endpoints" \
    -d "{\"full\":true,\"functions\":[{\"name\":\"kept\",\"endpoints\":[{\"id\":\"k1\",\"address\":\"$F1\"}]}]}" >/dev/null || return 1
  local names
  names=$(curl -sf --max-time 5 "$A/v1/functions" | /usr/bin/python3 -c \
    'import json,sys; print(" ".join(sorted(f["name"] for f in json.load(sys.stdin))))')
  echo "after the full push: $names"
  [ "$names" = kept ] && [ "$(code_of --max-time 5 -H 'Host: stale' "$P/")" = 404 ] &&
    [ "$(code_of --max-time 5 -H 'Host: kept' "$P/")" = 200 ]
}
check "a full push (a resync) is the whole table: functions not in it are removed" t_full_push

t_stop() {
  kill -TERM "$DP_PID"; wait_bounded "$DP_PID"
}
check "SIGTERM: exit 0" t_stop

tap_done
