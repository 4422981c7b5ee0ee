#!/usr/bin/env bash
# gRPC and h2c upstreams through the data plane: dirigent-cp, dirigent-dp and a worker on the
# process runtime with dirigent-fn as the function, on ephemeral ports. A gRPC call (as
# InVitro's grpc_client.go makes it: POST /faas.Executor/Execute, a FaasRequest, :authority =
# the function) reaches dirigent-fn and its reply and grpc-status come back unchanged; the
# platform's own errors are gRPC errors; a function registered with upstream_protocol=h2c is
# reached over h2c (the DP's dg_dp_upstream_requests_total{protocol}); an HTTP/1.1 function
# keeps working; `dirigent load --protocol grpc|h2c` succeed.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
FN=$B/dirigent-fn
TAG="DG_GRPC_TEST=$$"
PY=/usr/bin/python3

plan 11

trap 'tap_cleanup; cleanup_sandboxes' EXIT

bg_start "$TAP_TMP/cp.log" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 \
  --dataDir "$TAP_TMP/cpdata" --heartbeatInterval 300ms --traceOutputFolder ""
wait_for_log "$TAP_TMP/cp.log" 'registration on' || { echo "Bail out! cp did not start"; exit 1; }
CPI=127.0.0.1:$(port_of "$TAP_TMP/cp.log" 'internal api on')
REG=http://127.0.0.1:$(port_of "$TAP_TMP/cp.log" 'registration on')
bg_start "$TAP_TMP/dp.log" "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --name dp1 \
  --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --coldStartTimeout 2s \
  --traceOutputFolder ""
wait_for_log "$TAP_TMP/dp.log" 'proxy on' || { echo "Bail out! dp did not start"; exit 1; }
DPA=127.0.0.1:$(port_of "$TAP_TMP/dp.log" 'proxy on')
API=http://127.0.0.1:$(port_of "$TAP_TMP/dp.log" 'api on')
bg_start "$TAP_TMP/w1.log" "$B/dirigent-worker" --port 0 --name w1 \
  --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --processUser nobody
wait_for_log "$TAP_TMP/w1.log" 'listening on' || { echo "Bail out! worker did not start"; exit 1; }
wait_json "$REG/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1' ||
  { echo "Bail out! not registered"; exit 1; }

register() { # register NAME [extra form fields]
  curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/registerService" \
    -d "name=$1&image=$FN&port_forwarding=80&port_forwarding=tcp&requested_cpu=100&requested_memory=64&env_vars=$TAG${2:-}"
}
# up_count PROTO: the DP's requests sent to sandboxes over PROTO (http1, h2c)
up_count() {
  curl -sf "$API/metrics" | sed -n "s/^dg_dp_upstream_requests_total{protocol=\"$1\"} \\([0-9]*\\).*/\\1/p"
}
# a FaasRequest{message "nothing", runtimeInMilliSec 5} as one gRPC message (flag, length, bytes)
printf '\x00\x00\x00\x00\x0b\x0a\x07nothing\x10\x05' >"$TAP_TMP/req.bin"
# grpc_call FUNCTION: nghttp (prior knowledge) as a gRPC client; the reply body in call.bin, the
# frames it received in call.log
grpc_call() {
  nghttp -H ":authority: $1" -H 'content-type: application/grpc' -H 'te: trailers' \
    -d "$TAP_TMP/req.bin" "http://$DPA/faas.Executor/Execute" >"$TAP_TMP/call.bin" \
    2>"$TAP_TMP/call.err" &&
    nghttp -v -H ":authority: $1" -H 'content-type: application/grpc' -H 'te: trailers' \
      -d "$TAP_TMP/req.bin" "http://$DPA/faas.Executor/Execute" >"$TAP_TMP/call.log" 2>&1
}
# faas_reply FILE: the FaasReply in a gRPC message body as "message=...;duration=N"
faas_reply() {
  $PY - "$1" <<'EOF'
import sys
b = open(sys.argv[1], "rb").read()
assert b[0] == 0 and int.from_bytes(b[1:5], "big") == len(b) - 5, "not one gRPC message"
m, i, out = b[5:], 0, {}
def varint():
    global i
    v = s = 0
    while True:
        c = m[i]; i += 1; v |= (c & 0x7f) << s; s += 7
        if not c & 0x80: return v
while i < len(m):
    k = varint()
    if k & 7 == 2:
        n = varint(); out[k >> 3] = m[i:i + n].decode(); i += n
    else:
        out[k >> 3] = varint()
print("message=%s;duration=%d" % (out.get(1, ""), out.get(2, 0)))
EOF
}

t_register() {
  [ "$(register hello-h2 '&upstream_protocol=h2c&scaling_lower_bound=1')" = 200 ] &&
    [ "$(register plain '&scaling_lower_bound=1')" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  [ "$(register bad '&upstream_protocol=http2')" = 400 ] &&
    grep -q "field 'upstream_protocol': expected 'http1' (the default) or 'h2c'" "$TAP_TMP/reg.out" ||
    { cat "$TAP_TMP/reg.out"; return 1; }
  # the DP has both, the first marked h2c, each with its sandbox
  wait_json "$API/v1/functions" \
    'sorted((f["name"], f.get("h2c", False), len(f["endpoints"])) for f in j) == [("hello-h2", True, 1), ("plain", False, 1)]'
}
check "upstream_protocol=h2c is registered and pushed to the DP; a bad value is refused naming the field" t_register

t_grpc_passthrough() {
  grpc_call hello-h2 || { cat "$TAP_TMP/call.err"; return 1; }
  local via direct sb
  via=$(faas_reply "$TAP_TMP/call.bin") || return 1
  echo "through the DP: $via"
  grep -q '^\[.*recv (stream_id=[0-9]*) :status: 200' "$TAP_TMP/call.log" &&
    grep -q 'recv (stream_id=[0-9]*) content-type: application/grpc' "$TAP_TMP/call.log" &&
    grep -q 'recv (stream_id=[0-9]*) grpc-status: 0' "$TAP_TMP/call.log" || { cat "$TAP_TMP/call.log"; return 1; }
  # the same call straight to the sandbox: the same message and trailer
  sb=$(curl -sf "$API/v1/functions" | $PY -c \
    'import json,sys; print([f for f in json.load(sys.stdin) if f["name"]=="hello-h2"][0]["endpoints"][0]["address"])')
  nghttp -H 'content-type: application/grpc' -H 'te: trailers' -d "$TAP_TMP/req.bin" \
    "http://$sb/faas.Executor/Execute" >"$TAP_TMP/direct.bin" || return 1
  direct=$(faas_reply "$TAP_TMP/direct.bin") || return 1
  echo "straight to $sb: $direct"
  [ "${via%%;*}" = "${direct%%;*}" ] && [ "${via##*duration=}" -gt 0 ]
}
check "a gRPC call through the DP reaches faas.Executor/Execute: its reply and grpc-status 0 come back" t_grpc_passthrough

t_grpc_http1_fn() { # a gRPC call to a function declared HTTP/1.1 still goes over h2c
  grpc_call plain || return 1
  grep -q 'recv (stream_id=[0-9]*) grpc-status: 0' "$TAP_TMP/call.log" && faas_reply "$TAP_TMP/call.bin"
}
check "a gRPC call to an HTTP/1.1-declared function is carried over h2c too" t_grpc_http1_fn

t_grpc_over_http1() { # an HTTP/1.1 client's gRPC call: the sandbox's trailer in the last chunk
  curl -s --http1.1 -D "$TAP_TMP/h1.h" -o "$TAP_TMP/h1.bin" -H 'Host: hello-h2' \
    -H 'content-type: application/grpc' -H 'te: trailers' --data-binary "@$TAP_TMP/req.bin" \
    "http://$DPA/faas.Executor/Execute" || return 1
  tr -d '\r' <"$TAP_TMP/h1.h"
  tr -d '\r' <"$TAP_TMP/h1.h" | grep -qx 'Transfer-Encoding: chunked' &&
    tr -d '\r' <"$TAP_TMP/h1.h" | grep -qx 'grpc-status: 0' && faas_reply "$TAP_TMP/h1.bin"
}
check "a gRPC call over HTTP/1.1 gets the reply and the grpc-status trailer (chunked)" t_grpc_over_http1

# grpc_error FUNCTION CODE MESSAGE-REGEX: a platform error as gRPC: 200, application/grpc,
# grpc-status and grpc-message in the one HEADERS frame that ends the stream
grpc_error() {
  grpc_call "$1"
  cat "$TAP_TMP/call.log" | grep -E 'recv|HEADERS|DATA' | head -20
  grep -q 'recv (stream_id=[0-9]*) :status: 200' "$TAP_TMP/call.log" &&
    grep -q 'recv (stream_id=[0-9]*) content-type: application/grpc' "$TAP_TMP/call.log" &&
    grep -q "recv (stream_id=[0-9]*) grpc-status: $2\$" "$TAP_TMP/call.log" &&
    grep -qE "recv \(stream_id=[0-9]+\) grpc-message: $3" "$TAP_TMP/call.log" &&
    grep -qE 'recv HEADERS frame <length=[0-9]+, flags=0x05, stream_id=[0-9]*>' "$TAP_TMP/call.log" &&
    ! grep -q 'recv DATA frame' "$TAP_TMP/call.log"
}
t_not_found() { grpc_error ghost 5 "function 'ghost' is not registered"; }
check "an unknown function is gRPC NOT_FOUND (5), trailers-only" t_not_found

t_deadline() { # no sandbox may start (upper bound 0): the queue deadline (2 s) passes
  [ "$(register never '&scaling_upper_bound=0')" = 200 ] || return 1
  wait_json "$API/v1/functions" '"never" in [f["name"] for f in j]' || return 1
  grpc_error never 4 '.'
}
check "the queue deadline is gRPC DEADLINE_EXCEEDED (4) with a message" t_deadline

t_unavailable() { # its sandboxes cannot start: the CP's reason, as UNAVAILABLE
  curl -s -o /dev/null -XPOST "$REG/registerService" \
    -d "name=broken&image=/nonexistent/fn&port_forwarding=80&port_forwarding=tcp&env_vars=$TAG" || return 1
  wait_json "$API/v1/functions" '"broken" in [f["name"] for f in j]' || return 1
  grpc_error broken 14 '.'
}
check "a function whose sandboxes cannot start is gRPC UNAVAILABLE (14)" t_unavailable

t_h2c_upstream() { # plain HTTP/1.1 clients, h2c upstream for hello-h2, HTTP/1.1 for plain
  local h2a h1a h2b h1b out
  h2a=$(up_count h2c) && h1a=$(up_count http1) || return 1
  for i in 1 2 3 4 5; do
    out=$(curl -sf -H 'Host: hello-h2' "http://$DPA/") || return 1
  done
  echo "$out"
  [ "$(json_field "$out" Function)" = hello-h2 ] || return 1
  h2b=$(up_count h2c) && h1b=$(up_count http1) || return 1
  echo "h2c $h2a -> $h2b, http1 $h1a -> $h1b"
  [ $((h2b - h2a)) = 5 ] && [ "$h1b" = "$h1a" ] || return 1
  out=$(curl -sf -H 'Host: plain' "http://$DPA/") || return 1
  [ "$(json_field "$out" Function)" = plain ] && [ "$(up_count http1)" = $((h1a + 1)) ]
}
check "a function declared h2c is reached over h2c; an HTTP/1.1 one over HTTP/1.1 (DP metrics)" t_h2c_upstream

t_h2c_body() { # a 600 KB body to the h2c function: the DP streams it over h2c flow control
  head -c 600000 /dev/zero | tr '\0' 'b' >"$TAP_TMP/big.txt"
  local h2a out
  h2a=$(up_count h2c) || return 1
  out=$(curl -sf -H 'Host: hello-h2' --data-binary "@$TAP_TMP/big.txt" "http://$DPA/") || return 1
  echo "$out"
  [ "$(json_field "$out" Function)" = hello-h2 ] && [ "$(up_count h2c)" = $((h2a + 1)) ] || return 1
  out=$(curl -sf --http2-prior-knowledge -H 'Host: hello-h2' --data-binary "@$TAP_TMP/big.txt" \
    "http://$DPA/") || return 1
  [ "$(json_field "$out" Function)" = hello-h2 ]
}
check "a 600 KB request body reaches an h2c function (HTTP/1.1 and h2c clients)" t_h2c_body

t_load_grpc() {
  local out
  out=$("$B/dirigent" load burst 40 hello-h2 --dp "$DPA" --protocol grpc --json) || { echo "$out"; return 1; }
  echo "$out"
  [ "$(json_field "$out" ok)" = 40 ] && [ "$(json_field "$out" errors)" = 0 ] || return 1
  out=$("$B/dirigent" load rps --rate 50 --duration 1 plain --dp "$DPA" --protocol grpc --json) ||
    { echo "$out"; return 1; }
  echo "$out"
  [ "$(json_field "$out" errors)" = 0 ] && [ "$(json_field "$out" ok)" -ge 40 ]
}
check "dirigent load --protocol grpc through the DP: 0 errors" t_load_grpc

t_load_h2c() {
  local out f
  for f in hello-h2 plain; do
    out=$("$B/dirigent" load burst 40 "$f" --dp "$DPA" --protocol h2c --json) || { echo "$out"; return 1; }
    echo "$f: $out"
    [ "$(json_field "$out" ok)" = 40 ] && [ "$(json_field "$out" errors)" = 0 ] || return 1
  done
}
check "dirigent load --protocol h2c through the DP (h2c and HTTP/1.1 functions): 0 errors" t_load_h2c

tap_done
