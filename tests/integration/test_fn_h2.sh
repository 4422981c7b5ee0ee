#!/usr/bin/env bash
# dirigent-fn over h2c with prior knowledge, on the same port as HTTP/1.1: the real binary on
# an ephemeral port, driven with nghttp (nghttp2-client), curl and tests/lib/h2raw.py (raw
# frames: several streams on one connection, bad frames).
set -u
SRC=${DG_SOURCE_DIR:-$(dirname "$0")/../..}
. "$SRC/tests/lib/tap.sh"
FN=${DG_BUILD_DIR:-build}/dirigent-fn
H2RAW="/usr/bin/python3 $SRC/tests/lib/h2raw.py"

plan 18

bg_start "$TAP_TMP/fn.log" "$FN" --host 127.0.0.1 --port 0 --maxCpuMs 60000
FN_PID=$BG_PID
wait_for_log "$TAP_TMP/fn.log" 'listening on 127\.0\.0\.1:[0-9]+' ||
  { echo "Bail out! dirigent-fn did not start"; exit 1; }
PORT=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$TAP_TMP/fn.log" | head -1 | sed 's/.*://')
URL="http://127.0.0.1:$PORT"

t_same_json() {
  local h1 h2
  h1=$(curl -sf -H 'function: fA' "$URL/") || return 1
  h2=$(timeout 10 nghttp -H 'function: fA' "$URL/") || return 1
  echo "h1: $h1"; echo "h2: $h2"
  [ -n "$h2" ] && [ "$h1" = "$h2" ] && grep -q '"Status":"OK","Function":"fA"' <<<"$h2"
}
check "prior knowledge: an h2c request gets the same JSON as HTTP/1.1" t_same_json

t_spin_h2() {
  local out us
  out=$(timeout 10 nghttp -H 'function: fB' -H 'requested_cpu: 20' "$URL/") || return 1
  echo "$out"
  us=$(sed -n 's/.*"ExecutionTime":\([0-9]*\).*/\1/p' <<<"$out")
  [ -n "$us" ] && [ "$us" -ge 20000 ]
}
check "requested_cpu over h2c: the work runs (ExecutionTime >= 20000 us)" t_spin_h2

t_streams() {
  local out
  out=$($H2RAW "$PORT" req / 'function: s1' 'requested_cpu: 30' -- / 'function: s3' -- \
    / 'function: s5' 'workload: empty') || return 1
  echo "$out"
  grep -q '^DATA 1 {"Status":"OK","Function":"s1"' <<<"$out" &&
    grep -q '^DATA 3 {"Status":"OK","Function":"s3"' <<<"$out" &&
    grep -q '^DATA 5 {"Status":"OK - EMPTY","Function":"s5"' <<<"$out" &&
    ! grep -q '^GOAWAY' <<<"$out"
}
check "three streams on one connection: each answered on its own stream" t_streams

t_bad_header() {
  local out
  out=$($H2RAW "$PORT" req / 'requested_cpu: abc') || return 1
  echo "$out"
  grep -q "^DATA 1 header 'requested_cpu': expected an integer" <<<"$out" &&
    grep -q '^HEADERS 1 8c' <<<"$out" # :status 400 (HPACK static index 12)
}
check "a bad requested_cpu over h2c gets 400 naming the header" t_bad_header

t_bad_frame() {
  local out code
  # a DATA frame on stream 0 (a connection error: PROTOCOL_ERROR)
  out=$($H2RAW "$PORT" raw 0000050001000000007878787878) || return 1
  echo "$out"
  grep -q '^GOAWAY 0 last=0 code=1 ' <<<"$out" && grep -q '^closed' <<<"$out" || return 1
  # a bad preface after the first bytes matched
  exec 3<>"/dev/tcp/127.0.0.1/$PORT" || return 1
  printf 'PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n' >&3
  out=$(timeout 5 cat <&3 | od -An -tx1 | tr -d ' \n')
  exec 3>&-
  echo "bad preface answer: $out"
  kill -0 "$FN_PID" && code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/health") &&
    [ "$code" = 200 ] && timeout 10 nghttp "$URL/health" | grep -q '"status":"ok"'
}
check "a bad frame gets GOAWAY PROTOCOL_ERROR and closes; the server keeps serving both" t_bad_frame

t_h1_still() {
  local out code
  out=$(curl -sf -H 'function: old' "$URL/") || return 1
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'requested_cpu: x' "$URL/")
  echo "$out / $code"
  grep -q '"Function":"old"' <<<"$out" && [ "$code" = 400 ] &&
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health")" = 200 ]
}
check "HTTP/1.1 on the same port keeps working (200, 400 for a bad header, /health)" t_h1_still

t_upgrade() {
  local h1 up cu
  h1=$(curl -sf -H 'function: fU' "$URL/") || return 1
  up=$(timeout 10 nghttp -u -v -H 'function: fU' "$URL/" 2>&1) || return 1
  cu=$(timeout 10 curl -sf --http2 -H 'function: fU' -w '\n%{http_version}' "$URL/") || return 1
  echo "$up" | grep -E 'Upgrade|101|Status'; echo "curl: $cu"
  grep -q '^HTTP/1.1 101 Switching Protocols' <<<"$up" && grep -q 'HTTP Upgrade success' <<<"$up" &&
    grep -qF "$h1" <<<"$up" && [ "$cu" = "$h1"$'\n'2 ]
}
check "h2c upgrade from HTTP/1.1 (nghttp -u, curl --http2): 101, then the same JSON over HTTP/2" t_upgrade

t_bad_upgrade() {
  local a b code
  a=$(curl -s -H 'Upgrade: h2c' "$URL/")
  b=$(curl -s -H 'Upgrade: h2c' -H 'HTTP2-Settings: !!' "$URL/")
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Upgrade: h2c' "$URL/")
  echo "$a / $b / $code"
  [ "$code" = 400 ] && grep -q 'HTTP2-Settings' <<<"$a" && grep -q "header 'HTTP2-Settings'" <<<"$b" &&
    grep -q '"Status":"OK"' <<<"$(curl -s -H 'Upgrade: websocket' "$URL/")"
}
check "a malformed h2c upgrade gets 400 naming HTTP2-Settings; another Upgrade is ignored" t_bad_upgrade

# gRPC faas.Executor/Execute as InVitro's gRPC invoker calls it (POST, application/grpc, te:
# trailers, :authority the function's name; one length-prefixed FaasRequest)
# grpc_msg HEX: the FaasRequest's bytes, length-prefixed, in a file; prints its path
grpc_msg() {
  local f="$TAP_TMP/req.$RANDOM.bin"
  /usr/bin/python3 -c 'import sys; m = bytes.fromhex(sys.argv[1]); sys.stdout.buffer.write(b"\0" + len(m).to_bytes(4, "big") + m)' "$1" >"$f"
  echo "$f"
}
grpc_call() { # grpc_call PATH FILE [nghttp args]: response headers/trailers (-v) to stdout
  local path=$1 file=$2; shift 2
  timeout 10 nghttp -v -d "$file" -H 'content-type: application/grpc' -H 'te: trailers' \
    -H ':authority: fn-grpc' "$@" "$URL$path" 2>&1 | grep -a 'recv (stream_id'
}
# FaasReply from a length-prefixed gRPC body on stdin: "message|durationInMicroSec|memoryUsageInKb"
faas_reply() {
  /usr/bin/python3 -c '
import sys
b = sys.stdin.buffer.read()
assert b[0] == 0 and int.from_bytes(b[1:5], "big") == len(b) - 5, b
m, i, f = b[5:], 0, {1: b"", 2: 0, 3: 0}
def varint():
    global i
    v = s = 0
    while True:
        c = m[i]; i += 1; v |= (c & 0x7F) << s; s += 7
        if not c & 0x80: return v
while i < len(m):
    k = varint()
    if k & 7 == 2:
        n = varint(); f[k >> 3] = m[i:i + n]; i += n
    else:
        f[k >> 3] = varint()
print("%s|%d|%d" % (f[1].decode(), f[2], f[3]))'
}

t_grpc() {
  local req hdrs rep
  # {message: "hi", runtimeInMilliSec: 20, memoryInMebiBytes: 128}
  req=$(grpc_msg 0a0268691014188001)
  hdrs=$(grpc_call /faas.Executor/Execute "$req") || return 1
  rep=$(timeout 10 nghttp -d "$req" -H 'content-type: application/grpc' -H 'te: trailers' \
    "$URL/faas.Executor/Execute" | faas_reply) || return 1
  echo "$hdrs"; echo "reply: $rep"
  grep -q ':status: 200' <<<"$hdrs" && grep -q 'content-type: application/grpc' <<<"$hdrs" &&
    grep -q 'grpc-status: 0' <<<"$hdrs" &&
    [[ "$rep" =~ ^"OK - $(hostname)|"[1-9][0-9]*"|131072"$ ]]
}
check "gRPC faas.Executor/Execute: FaasReply{OK - host, duration, memory KiB} and grpc-status 0" t_grpc

t_grpc_errors() {
  local a b c
  a=$(grpc_call /faas.Executor/Nope "$(grpc_msg 1001)")
  b=$(grpc_call /faas.Executor/Execute "$(grpc_msg 1096)") # a truncated varint
  c=$(grpc_call /faas.Executor/Execute "$(grpc_msg 10a08d06)") # 100000 ms > maxCpuMs 60000
  echo "$a"; echo "$b"; echo "$c"
  grep -q 'grpc-status: 12' <<<"$a" && grep -q 'grpc-message: unknown method /faas.Executor/Nope' <<<"$a" &&
    grep -q 'grpc-status: 3' <<<"$b" && grep -q 'grpc-message: FaasRequest: a truncated varint' <<<"$b" &&
    grep -q 'grpc-status: 3' <<<"$c" && grep -q 'runtimeInMilliSec: expected 0..60000 (maxCpuMs), got 100000' <<<"$c" &&
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health")" = 200 ]
}
check "gRPC errors are grpc-status codes naming the problem (UNIMPLEMENTED, INVALID_ARGUMENT)" t_grpc_errors

t_grpc_streams() {
  local out
  out=$(timeout 10 nghttp -m 3 -d "$(grpc_msg 1005)" -H 'content-type: application/grpc' \
    -H 'te: trailers' -v "$URL/faas.Executor/Execute" 2>&1 | grep -ac 'grpc-status: 0')
  echo "grpc-status 0 seen $out times"
  [ "$out" = 3 ]
}
check "three gRPC calls on one connection: three grpc-status 0 trailers" t_grpc_streams

t_idle() {
  local pid port out
  bg_start "$TAP_TMP/fn-idle.log" "$FN" --host 127.0.0.1 --port 0 --http.idleTimeout 300ms
  pid=$BG_PID
  wait_for_log "$TAP_TMP/fn-idle.log" 'listening on 127\.0\.0\.1:[0-9]+' || return 1
  port=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$TAP_TMP/fn-idle.log" | sed 's/.*://')
  out=$($H2RAW "$port" raw "") # the preface and SETTINGS, then nothing
  echo "$out"
  kill -TERM "$pid"; wait_bounded "$pid"
  grep -q '^GOAWAY 0 last=0 code=0 ' <<<"$out" && grep -q '^closed' <<<"$out"
}
check "an idle h2c connection gets GOAWAY NO_ERROR after http.idleTimeout and is closed" t_idle

t_misdirected() {
  local pid port out ok
  bg_start "$TAP_TMP/fn-sb.log" env DIRIGENT_SANDBOX_ID=sb-1 "$FN" --host 127.0.0.1 --port 0
  pid=$BG_PID
  wait_for_log "$TAP_TMP/fn-sb.log" 'listening on 127\.0\.0\.1:[0-9]+' || return 1
  port=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$TAP_TMP/fn-sb.log" | sed 's/.*://')
  out=$(timeout 10 nghttp -v -H 'x-dirigent-sandbox: sb-2' "http://127.0.0.1:$port/" 2>&1 |
    grep -aE 'recv \(stream_id|sandbox')
  ok=$(timeout 10 nghttp -H 'x-dirigent-sandbox: sb-1' -H 'function: mine' "http://127.0.0.1:$port/")
  echo "$out"; echo "$ok"
  kill -TERM "$pid"; wait_bounded "$pid"
  grep -q ':status: 421' <<<"$out" && grep -q 'x-dirigent-sandbox: sb-1' <<<"$out" &&
    grep -q 'sandbox sb-1 is not sb-2' <<<"$out" && grep -q '"Function":"mine"' <<<"$ok"
}
check "over h2c too, a call meant for another sandbox gets 421 with this one's id" t_misdirected

t_header_limits() {
  local many=() i out
  for i in $(seq 1 101); do many+=(-H "x-h$i: v"); done # http.maxHeaders is 100
  out=$(timeout 10 nghttp -v "${many[@]}" "$URL/" 2>&1 | grep -aE ':status|too many')
  echo "$out"
  grep -q ':status: 431' <<<"$out" && grep -q 'too many request header fields' <<<"$out" &&
    timeout 10 nghttp -H 'function: after' "$URL/" | grep -q '"Function":"after"'
}
check "over http.maxHeaders on a stream: 431 as over HTTP/1.1, and the server keeps serving" t_header_limits

t_grpc_limits() {
  local many=() i a b big
  for i in $(seq 1 101); do many+=(-H "x-h$i: v"); done # http.maxHeaders is 100
  a=$(grpc_call /faas.Executor/Execute "$(grpc_msg 1001)" "${many[@]}")
  big="$TAP_TMP/big.bin" # a message over http.maxBodyBytes (1 MiB)
  /usr/bin/python3 -c 'import sys; n = 1100000; sys.stdout.buffer.write(b"\0" + n.to_bytes(4, "big") + b"\0" * n)' >"$big"
  b=$(grpc_call /faas.Executor/Execute "$big")
  echo "$a"; echo "$b"
  grep -q ':status: 200' <<<"$a" && grep -q 'grpc-status: 8' <<<"$a" &&
    grep -q 'grpc-message: too many request header fields' <<<"$a" &&
    grep -q ':status: 200' <<<"$b" && grep -q 'grpc-status: 8' <<<"$b" &&
    grep -q 'grpc-message: request body too large' <<<"$b"
}
check "gRPC calls over a limit get grpc-status RESOURCE_EXHAUSTED naming it (HTTP 200)" t_grpc_limits

t_caps() {
  local pid port out
  bg_start "$TAP_TMP/fn-cap.log" "$FN" --host 127.0.0.1 --port 0 --http.maxConns 1
  pid=$BG_PID
  wait_for_log "$TAP_TMP/fn-cap.log" 'listening on 127\.0\.0\.1:[0-9]+' || return 1
  port=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$TAP_TMP/fn-cap.log" | sed 's/.*://')
  $H2RAW "$port" req / 'requested_cpu: 1500' >"$TAP_TMP/cap1.out" 2>&1 & # holds the only slot
  local cl=$! i=0
  while [ -z "$(ss -Htn state established "( sport = :$port )")" ] && [ $i -lt 200 ]; do
    sleep 0.05; i=$((i + 1))
  done
  out=$(curl -s -o "$TAP_TMP/cap.body" -w '%{http_code}' "http://127.0.0.1:$port/")
  wait "$cl"
  kill -TERM "$pid"; wait_bounded "$pid"
  echo "second connection: $out $(cat "$TAP_TMP/cap.body")"; cat "$TAP_TMP/cap1.out"
  [ "$out" = 503 ] && grep -q 'too many connections to this server (http.maxConns)' "$TAP_TMP/cap.body" &&
    grep -q '^DATA 1 {"Status":"OK"' "$TAP_TMP/cap1.out"
}
check "an h2c connection counts against http.maxConns: the next one gets 503" t_caps

t_random_frames() {
  local seed hex out n=0
  for seed in $(seq 1 40); do # reproducible junk: a valid SETTINGS, then random frames
    hex=$(/usr/bin/python3 -c 'import random, sys
r = random.Random(int(sys.argv[1]))
out = b""
for _ in range(r.randint(1, 6)):
    p = bytes(r.getrandbits(8) for _ in range(r.randint(0, 40)))
    out += len(p).to_bytes(3, "big") + bytes([r.randint(0, 10), r.getrandbits(8)]) + r.getrandbits(31).to_bytes(4, "big") + p
print(out.hex())' "$seed")
    out=$(timeout 20 $H2RAW "$PORT" junk "$hex" 2>&1)
    grep -qE '^(closed|reset)$' <<<"$out" || { echo "seed $seed: $out"; return 1; }
    grep -q '^GOAWAY' <<<"$out" && n=$((n + 1))
  done
  echo "$n of 40 connections ended with GOAWAY"
  kill -0 "$FN_PID" && [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health")" = 200 ] &&
    timeout 10 nghttp "$URL/health" | grep -q '"status":"ok"'
}
check "40 connections of random frames then EOF: each ends (GOAWAY or close), the server keeps serving" t_random_frames

t_term() {
  local rc
  # an h2c connection left open (its stream still working) when SIGTERM comes
  $H2RAW "$PORT" req / 'requested_cpu: 3000' >"$TAP_TMP/open.out" 2>&1 &
  local cl=$!
  local i=0 # until the connection is established (the work may or may not have started)
  while [ -z "$(ss -Htn state established "( sport = :$PORT )")" ] && [ $i -lt 200 ]; do
    sleep 0.05; i=$((i + 1))
  done
  kill -TERM "$FN_PID"
  wait_bounded "$FN_PID"; rc=$?
  wait "$cl"
  cat "$TAP_TMP/open.out"
  echo "exit $rc"
  [ "$rc" = 0 ]
}
check "SIGTERM with an h2c connection open: clean exit 0" t_term

tap_done
