#!/usr/bin/env bash
# dirigent-dp's proxy port over h2c: the real data plane in front of real dirigent-fn sandboxes
# (HTTP/1.1 upstreams: the DP translates), driven with curl, nghttp and h2load (nghttp2-client).
# The function is named by :authority as it is by Host over HTTP/1.1.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
DP=$B/dirigent-dp
FN=$B/dirigent-fn

plan 9

bg_start "$TAP_TMP/f1.log" "$FN" --host 127.0.0.1 --port 0
wait_for_log "$TAP_TMP/f1.log" 'listening on' >/dev/null || { echo "Bail out! dirigent-fn did not start"; exit 1; }
F1=$(grep -oE 'listening on [0-9.]+:[0-9]+' "$TAP_TMP/f1.log" | head -1 | sed 's/listening on //')

bg_start "$TAP_TMP/dp.log" "$DP" --portProxy 0 --portGRPC 0 --coldStartTimeout 5s --controlPlaneAddress '' \
  --traceOutputFolder '' --loadBalancingPolicy round-robin
wait_for_log "$TAP_TMP/dp.log" 'proxy on' || { echo "Bail out! dirigent-dp did not start"; exit 1; }
PP=$(grep -oE 'proxy on [0-9.]+:[0-9]+' "$TAP_TMP/dp.log" | sed 's/.*://')
P=http://127.0.0.1:$PP
A=http://127.0.0.1:$(grep -oE 'api on [0-9.]+:[0-9]+' "$TAP_TMP/dp.log" | sed 's/.*://')

fn_put() { curl -sf -XPUT "$A/v1/functions/$1" -d "{\"concurrency\":${2:-1}}" >/dev/null; }
eps_put() { curl -sf -XPUT "$A/v1/functions/$1/endpoints" -d "{\"endpoints\":[{\"id\":\"$2\",\"address\":\"$3\"}]}" >/dev/null; }
# wait_fn FN FIELD N: poll the DP's API until FIELD of FN reaches N (5 s)
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
# h2 ARGS...: curl over h2c with prior knowledge; prints the body, then "<version> <status>"
h2() { curl -s --http2-prior-knowledge -w '\n%{http_version} %{http_code}\n' "$@"; }

fn_put hello 4 && eps_put hello s1 "$F1" || { echo "Bail out! cannot register"; exit 1; }

t_unknown() {
  local out
  out=$(h2 -H 'Host: ghost' "$P/") || return 1
  echo "$out"
  grep -q "function 'ghost' is not registered" <<<"$out" && [ "$(tail -1 <<<"$out")" = "2 404" ]
}
check "h2c prior knowledge: an unknown :authority gets 404 naming the function" t_unknown

t_same() {
  local h1 h2o
  h1=$(curl -sf -H 'Host: hello' "$P/x?q=1") || return 1
  h2o=$(h2 -H 'Host: hello' "$P/x?q=1") || return 1
  echo "h1: $h1"; echo "h2: $h2o"
  [ "$(tail -1 <<<"$h2o")" = "2 200" ] &&
    [ "$(json_field "$(head -1 <<<"$h2o")" Function)" = hello ] &&
    [ "$(json_field "$h1" Function)" = hello ] &&
    [ "$(json_field "$(head -1 <<<"$h2o")" Status)" = "$(json_field "$h1" Status)" ]
}
check "h2c prior knowledge: :authority names the function, same answer as HTTP/1.1" t_same

t_nghttp() {
  local out
  out=$(timeout 10 nghttp -v -H ':authority: hello' "$P/") || return 1
  echo "$out" | tail -20
  grep -q '"Function":"hello"' <<<"$out" && grep -q ':status: 200' <<<"$out" &&
    ! grep -qi '^ *connection:' <<<"$out"
}
check "nghttp: 200 with the function's JSON, no connection-specific header" t_nghttp

t_upgrade() {
  local out
  out=$(curl -s --http2 -w '\n%{http_version} %{http_code}\n' -H 'Host: hello' "$P/") || return 1
  echo "$out"
  [ "$(tail -1 <<<"$out")" = "2 200" ] && grep -q '"Function":"hello"' <<<"$out"
}
check "h2c by upgrade from HTTP/1.1: 101, then the answer over HTTP/2" t_upgrade

t_streams() {
  local out
  out=$(timeout 30 h2load -n 200 -c 1 -m 20 -H ':authority: hello' "$P/") || return 1
  echo "$out" | grep -E 'requests:|status codes:'
  grep -q 'requests: 200 total, 200 started, 200 done, 200 succeeded' <<<"$out" &&
    grep -q 'status codes: 200 2xx' <<<"$out"
}
check "200 requests as 20 concurrent streams on one connection: all 200" t_streams

t_cold() {
  fn_put cold || return 1
  h2 -D "$TAP_TMP/cold.h" -H 'Host: cold' "$P/" >"$TAP_TMP/cold.out" &
  local c=$!
  wait_fn cold queued 1 || return 1 # the stream waits in the cold-start queue
  eps_put cold c1 "$F1" || return 1
  wait_bounded $c
  cat "$TAP_TMP/cold.out"
  [ "$(tail -1 "$TAP_TMP/cold.out")" = "2 200" ] && grep -q '"Function":"cold"' "$TAP_TMP/cold.out" &&
    grep -qi '^x-dirigent-cold-start: 1' "$TAP_TMP/cold.h"
}
check "a cold h2c stream waits in the queue and is released by the endpoint push" t_cold

t_cold_many() {
  fn_put cold2 2 || return 1
  timeout 30 h2load -n 10 -c 1 -m 10 -H ':authority: cold2' "$P/" >"$TAP_TMP/many.out" &
  local c=$!
  wait_fn cold2 queued 10 || return 1 # ten streams of one connection queued at once
  eps_put cold2 c2 "$F1" || return 1
  wait_bounded $c
  grep -E 'requests:|status codes:' "$TAP_TMP/many.out"
  grep -q 'status codes: 10 2xx' "$TAP_TMP/many.out"
}
check "ten queued streams of one connection all complete once a sandbox comes" t_cold_many

t_rst() {
  fn_put cold3 || return 1
  # one stream, queued (no sandbox); then the client resets it and keeps the connection open
  /usr/bin/python3 - "$PP" "$TAP_TMP/go" <<'PY' >"$TAP_TMP/rst.out" 2>&1 &
import os, socket, sys, time
def frame(t, fl, sid, p=b""):
    return len(p).to_bytes(3, "big") + bytes([t, fl]) + sid.to_bytes(4, "big") + p
def lit(n, v):
    return b"\0" + bytes([len(n)]) + n.encode() + bytes([len(v)]) + v.encode()
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
block = lit(":method", "GET") + lit(":scheme", "http") + lit(":path", "/") + lit(":authority", "cold3")
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 5, 1, block))
while not os.path.exists(sys.argv[2]):
    time.sleep(0.02)
s.sendall(frame(3, 0, 1, (8).to_bytes(4, "big")))  # RST_STREAM CANCEL
time.sleep(3)  # the connection stays open
print("held")
PY
  local py=$! i=0 v
  wait_fn cold3 queued 1 || return 1
  touch "$TAP_TMP/go"
  while [ $i -lt 100 ]; do
    v=$(curl -sf "$A/v1/functions" | /usr/bin/python3 -c \
      "import json,sys; print([f['queued'] for f in json.load(sys.stdin) if f['name']=='cold3'][0])")
    [ "$v" = 0 ] && break
    sleep 0.05; i=$((i + 1))
  done
  echo "queued after the reset: $v"
  kill -0 $py 2>/dev/null || { echo "the client's connection closed first"; return 1; }
  wait_bounded $py
  [ "$v" = 0 ]
}
check "a client's RST_STREAM takes its queued stream out of the cold-start queue" t_rst

t_http1_still() {
  [ "$(curl -s -o /dev/null -w '%{http_version} %{http_code}' -H 'Host: hello' "$P/")" = "1.1 200" ]
}
check "HTTP/1.1 on the same port still works" t_http1_still

tap_done
