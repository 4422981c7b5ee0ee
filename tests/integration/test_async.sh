#!/usr/bin/env bash
# Asynchronous invocations (issue 15 §3): dirigent-cp (sqlite), dirigent-dp with async: true,
# one dirigent-worker (process runtime), dirigent-fn sandboxes. A submission is answered with
# an id, fetched on portProxyRead as InVitro does (GET, the id as the body): 204 while it
# runs, then the function's answer with Duration-Microseconds; unknown, malformed and huge ids
# are refused; a sandbox that answers 500 is tried numberRetries times; a DP killed (SIGKILL)
# with requests accepted and not run loses none; results expire and are deleted from the store;
# with three CP replicas on Redis, results survive the leader's kill -9.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
FN=$B/dirigent-fn
TAG="DG_ASYNC_TEST=$$"

plan 17
trap 'tap_cleanup; cleanup_sandboxes; rm -rf "$PUB"' EXIT
# a sandbox that fails: every POST gets 500 (in a directory the sandbox's user can read)
PUB=$(mktemp -d /tmp/dg-async-pub.XXXXXX)
chmod 755 "$PUB"
cat >"$PUB/broken.py" <<'EOF'
#!/usr/bin/python3
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def answer(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.answer(200, b"")
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.answer(500, b"sandbox broken\n")
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
EOF
chmod 755 "$PUB/broken.py"

start_cp() { # start_cp LOG [flags]
  bg_start "$1" "$B/dirigent-cp" --port "${CP_PORT:-0}" --registrationServer 127.0.0.1:0 \
    --dataDir "$TAP_TMP/cpdata" --heartbeatInterval 300ms --traceOutputFolder "" "${@:2}"
  CP_PID=$BG_PID
  wait_for_log "$1" 'registration on' || return 1
  CP_PORT=$(port_of "$1" 'internal api on')
  CPI=127.0.0.1:$CP_PORT
  REG=http://127.0.0.1:$(port_of "$1" 'registration on')
}
start_dp() { # start_dp LOG CP-ADDRESSES [NAME]
  bg_start "$1" "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --name "${3:-dpa}" --async \
    --portProxyRead 0 --controlPlaneAddress "$2" --heartbeatInterval 300ms --coldStartTimeout 60s \
    --traceOutputFolder ""
  DP_PID=$BG_PID
  wait_for_log "$1" 'async results on' || return 1
  P=http://127.0.0.1:$(port_of "$1" 'proxy on')
  R=http://127.0.0.1:$(port_of "$1" 'async results on')
}
start_worker() { # start_worker LOG CP-ADDRESSES
  bg_start "$1" "$B/dirigent-worker" --port 0 --name w1 --controlPlaneAddress "$2" \
    --heartbeatInterval 300ms --processUser nobody --processAllowedDirs "$B,$PUB"
  W_PID=$BG_PID
  wait_for_log "$1" 'w1: listening on' || return 1
}
register() { # register REG NAME [IMAGE] [EXTRA]
  curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$1/registerService" \
    -d "name=$2&image=${3:-$FN}&port_forwarding=80&port_forwarding=tcp&requested_cpu=100&requested_memory=64&env_vars=$TAG${4:-}"
}
# submit FN [curl args]: prints the id (fails unless 200 with an id)
submit() {
  local f=$1 code; shift
  code=$(curl -s -o "$TAP_TMP/sub.out" -w '%{http_code}' -XPOST -H "Host: $f" "$@" "$P/")
  [ "$code" = 200 ] || { echo "submit: $code $(cat "$TAP_TMP/sub.out")" >&2; return 1; }
  grep -qE '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$' "$TAP_TMP/sub.out" ||
    { echo "submit: not an id: $(cat "$TAP_TMP/sub.out")" >&2; return 1; }
  cat "$TAP_TMP/sub.out"
}
# fetch ID [OUT]: InVitro's fetch (GET, the id as the body); prints the status, the body in
# OUT (default $TAP_TMP/f.out), headers in OUT.h
fetch() {
  local o=${2:-$TAP_TMP/f.out}
  curl -s -D "$o.h" -o "$o" -w '%{http_code}' -XGET --data-binary "$1" "${R_URL:-$R}/"
}
done_ok() { [ "$(fetch "$1" "${2:-}")" = 200 ]; }

start_cp "$TAP_TMP/cp.log" || { echo "Bail out! cp did not start"; exit 1; }
start_worker "$TAP_TMP/w1.log" "$CPI" || { echo "Bail out! worker did not start"; exit 1; }
start_dp "$TAP_TMP/dp.log" "$CPI" || { echo "Bail out! dp did not start"; exit 1; }
wait_json "$REG/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1' ||
  { echo "Bail out! not registered"; exit 1; }

t_roundtrip() {
  [ "$(register "$REG" hello)" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  wait_json "$REG/v1/status" '[f for f in j["functions"] if f["name"] == "hello"]' || return 1
  local id code
  # a function that works 1.5 s: fetched at once it is not finished (204, empty)
  id=$(submit hello -H 'requested_cpu: 1500' -d 'payload') || return 1
  code=$(fetch "$id")
  [ "$code" = 204 ] && [ ! -s "$TAP_TMP/f.out" ] || { echo "first fetch: $code"; return 1; }
  poll_until 600 done_ok "$id" || return 1
  cat "$TAP_TMP/f.out"; echo
  [ "$(json_field "$(cat "$TAP_TMP/f.out")" Function)" = hello ] &&
    [ "$(json_field "$(cat "$TAP_TMP/f.out")" ExecutionTime)" -ge 1500000 ] || return 1
  local us
  us=$(tr -d '\r' <"$TAP_TMP/f.out.h" | sed -n 's/^Duration-Microseconds: //Ip')
  echo "Duration-Microseconds: $us"
  [ -n "$us" ] && [ "$us" -ge 1500000 ] || return 1
  grep -qi '^Content-Type: application/json' "$TAP_TMP/f.out.h" || return 1
  # the id as the path works too, and a second fetch gets the same
  code=$(curl -s -o "$TAP_TMP/p.out" -w '%{http_code}' "$R/$id")
  [ "$code" = 200 ] && cmp -s "$TAP_TMP/p.out" "$TAP_TMP/f.out"
}
check "submit: 200 with an id; 204 while it runs; then the function's answer with Duration-Microseconds" t_roundtrip

t_duration_us() {
  # short runs (under a millisecond of work): acceptance-to-result is counted in µs, so it is
  # never less than the function's own ExecutionTime (a ms clock made it 0 or rounded down)
  local i id us ex
  for i in $(seq 10); do
    id=$(submit hello -H 'requested_cpu: 1') || return 1
    poll_until 600 done_ok "$id" "$TAP_TMP/d.out" || return 1
    us=$(tr -d '\r' <"$TAP_TMP/d.out.h" | sed -n 's/^Duration-Microseconds: //Ip')
    ex=$(json_field "$(cat "$TAP_TMP/d.out")" ExecutionTime)
    echo "run $i: Duration-Microseconds $us, ExecutionTime $ex"
    [ -n "$us" ] && [ -n "$ex" ] && [ "$us" -ge "$ex" ] && [ "$us" -gt 0 ] || return 1
  done
}
check "short runs: Duration-Microseconds (µs, acceptance to result) is never below the function's ExecutionTime" t_duration_us

t_refusals() {
  local code
  # unknown: 404 with an empty body (InVitro reads any body as the function's answer, an empty
  # one as no result) and the reason in X-Dirigent-Error
  code=$(fetch 00000000-0000-4000-8000-000000000000)
  [ "$code" = 404 ] && [ ! -s "$TAP_TMP/f.out" ] &&
    grep -qi '^X-Dirigent-Error: asynchronous request 00000000-0000-4000-8000-000000000000: unknown or expired' "$TAP_TMP/f.out.h" ||
    { echo "unknown: $code"; cat "$TAP_TMP/f.out.h" "$TAP_TMP/f.out"; return 1; }
  code=$(fetch 'not an id; DROP')
  [ "$code" = 400 ] && grep -q 'expected the id' "$TAP_TMP/f.out" || { echo "malformed: $code"; cat "$TAP_TMP/f.out"; return 1; }
  code=$(curl -s -o "$TAP_TMP/f.out" -w '%{http_code}' "$R/")
  [ "$code" = 400 ] || { echo "empty: $code"; return 1; }
  head -c 100000 /dev/zero | tr '\0' a >"$TAP_TMP/huge"
  code=$(curl -s -o "$TAP_TMP/f.out" -w '%{http_code}' -XGET --data-binary @"$TAP_TMP/huge" "$R/")
  [ "$code" = 413 ] || { echo "huge: $code"; return 1; }
  # an unknown function is refused at submission, as a synchronous call
  code=$(curl -s -o "$TAP_TMP/f.out" -w '%{http_code}' -XPOST -H 'Host: ghost' "$P/")
  [ "$code" = 404 ] && grep -q "function 'ghost' is not registered" "$TAP_TMP/f.out" || return 1
  # a body over the asynchronous limit (512 KiB): 413 naming it
  head -c 600000 /dev/zero >"$TAP_TMP/big"
  code=$(curl -s -o "$TAP_TMP/f.out" -w '%{http_code}' -XPOST -H 'Host: hello' --data-binary @"$TAP_TMP/big" "$P/")
  [ "$code" = 413 ] && grep -q 'at most 524288 bytes' "$TAP_TMP/f.out"
}
t_h2c() {
  # InVitro's InvokeProtocol http2: h2c with prior knowledge, :authority the function, POST
  printf 'payload' >"$TAP_TMP/h2body"
  local out id
  out=$(timeout 10 nghttp -H ':authority: hello' -H 'requested_cpu: 3' -d "$TAP_TMP/h2body" "$P/") || return 1
  id=$(printf '%s' "$out" | tr -d '\r\n')
  echo "id: $id"
  grep -qE '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$' <<<"$id" || return 1
  poll_until 600 done_ok "$id" || return 1
  [ "$(json_field "$(cat "$TAP_TMP/f.out")" Function)" = hello ]
}
if command -v nghttp >/dev/null; then
  check "an h2c submission (InVitro's http2: prior knowledge, :authority the function) gets an id that completes" t_h2c
else
  skip "an h2c submission gets an id that completes" "needs nghttp (nghttp2-client)"
fi

check "results port: unknown id 404 (empty body, X-Dirigent-Error), malformed 400, huge 413; submission: unknown function 404, big body 413" t_refusals

t_retries() {
  [ "$(register "$REG" broken "$PUB/broken.py")" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  wait_json "$REG/v1/status" '[f for f in j["functions"] if f["name"] == "broken"]' || return 1
  local id
  id=$(submit broken -d 'x') || return 1
  poll_until 600 done_any "$id" || return 1
  [ "$(fetch "$id")" = 500 ] || return 1
  cat "$TAP_TMP/f.out"
  grep -q "failed 3 times (numberRetries); the last try: 500 sandbox broken" "$TAP_TMP/f.out" &&
    [ "$(grep -c "request $id: try [12] failed (500 sandbox broken)" "$TAP_TMP/dp.log")" = 2 ]
}
done_any() { local c; c=$(fetch "$1" "${2:-}"); [ "$c" != 204 ] && [ "$c" != 503 ]; }
check "a sandbox answering 500 is tried numberRetries (3) times, then the result is 500 saying so" t_retries

t_dp_killed() {
  # no sandbox may run (scaling_upper_bound 0): requests accepted, none run, when the DP dies;
  # capacity comes after its restart
  [ "$(register "$REG" slow "$FN" '&scaling_upper_bound=0')" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  wait_json "$REG/v1/status" '[f for f in j["functions"] if f["name"] == "slow"]' || return 1
  local ids=() i id c
  for i in 1 2 3 4 5; do id=$(submit slow -d "n=$i") || return 1; ids+=("$id"); done
  for id in "${ids[@]}"; do c=$(fetch "$id"); [ "$c" = 204 ] || { echo "before the kill: $c"; return 1; }; done
  kill -9 "$DP_PID"
  wait_bounded "$DP_PID" 2>/dev/null
  start_dp "$TAP_TMP/dp2.log" "$CPI" || return 1
  wait_for_log "$TAP_TMP/dp2.log" '5 unfinished asynchronous requests taken over' || return 1
  for id in "${ids[@]}"; do c=$(fetch "$id"); [ "$c" = 204 ] || { echo "after the restart: $c"; return 1; }; done
  curl -sf -XPUT "$REG/v1/functions/slow" -d '{"scaling_upper_bound":2}' >/dev/null || return 1
  for id in "${ids[@]}"; do
    poll_until 1200 done_ok "$id" "$TAP_TMP/k.out" || return 1
    [ "$(json_field "$(cat "$TAP_TMP/k.out")" Function)" = slow ] || return 1
  done
}
check "kill -9 of the DP with 5 requests accepted and not run: all 5 complete after its restart" t_dp_killed

t_dp_killed_big() {
  # 12 requests of 480 KiB (about 7.7 MiB stored, base64): the restarted DP's claim comes back
  # in pages below DG_WIRE_ASYNC_CLAIM_BYTES (4 MiB), each page going on where the last ended
  [ "$(register "$REG" big "$FN" '&scaling_upper_bound=0')" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  wait_json "$REG/v1/status" '[f for f in j["functions"] if f["name"] == "big"]' || return 1
  head -c 491520 /dev/zero | tr '\0' b >"$TAP_TMP/big.body"
  local ids=() i id
  for i in $(seq 12); do id=$(submit big --data-binary "@$TAP_TMP/big.body") || return 1; ids+=("$id"); done
  kill -9 "$DP_PID"
  wait_bounded "$DP_PID" 2>/dev/null
  start_dp "$TAP_TMP/dp3.log" "$CPI" || return 1
  wait_for_log "$TAP_TMP/dp3.log" 'unfinished asynchronous requests taken over, more to come' || return 1
  poll_until 100 eval '[ "$(grep -o "[0-9]* unfinished asynchronous requests taken over" "$TAP_TMP/dp3.log" |
    awk "{s += \$1} END {print s}")" = 12 ]' || { grep 'taken over' "$TAP_TMP/dp3.log"; return 1; }
  grep 'taken over' "$TAP_TMP/dp3.log"
  curl -sf -XPUT "$REG/v1/functions/big" -d '{"scaling_upper_bound":2}' >/dev/null || return 1
  for id in "${ids[@]}"; do
    poll_until 1200 done_ok "$id" "$TAP_TMP/b.out" || return 1
    [ "$(json_field "$(cat "$TAP_TMP/b.out")" Function)" = big ] || return 1
  done
}
check "kill -9 of the DP with 7.7 MiB of requests not run: the restarted DP claims them in pages, all 12 complete" t_dp_killed_big

t_orphans() {
  # a DP killed and never restarted: once the CP lost it, another DP takes its requests over
  [ "$(register "$REG" slow2 "$FN" '&scaling_upper_bound=0')" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  wait_json "$REG/v1/status" '[f for f in j["functions"] if f["name"] == "slow2"]' || return 1
  local ids=() i id c
  for i in 1 2 3; do id=$(submit slow2 -d "n=$i") || return 1; ids+=("$id"); done
  kill -9 "$DP_PID"
  wait_bounded "$DP_PID" 2>/dev/null
  start_dp "$TAP_TMP/dpb.log" "$CPI" dpb || return 1
  wait_for_log "$TAP_TMP/cp.log" "request ${ids[2]} of lost data plane dpa goes to dpb" 40 || return 1
  wait_for_log "$TAP_TMP/dpb.log" 'async: [1-9][0-9]* unfinished asynchronous requests taken over' 20 || return 1
  for id in "${ids[@]}"; do c=$(fetch "$id"); [ "$c" = 204 ] || { echo "taken over: $c"; return 1; }; done
  curl -sf -XPUT "$REG/v1/functions/slow2" -d '{"scaling_upper_bound":1}' >/dev/null || return 1
  for id in "${ids[@]}"; do
    poll_until 1200 done_ok "$id" "$TAP_TMP/o.out" || return 1
    [ "$(json_field "$(cat "$TAP_TMP/o.out")" Function)" = slow2 ] || return 1
  done
}
check "a DP killed and not restarted: another DP takes its unfinished requests over once the CP lost it" t_orphans

# a proxy to the CP that holds a data plane's heartbeats back for its first 3 s (503), and
# forwards everything else: the CP learns of the DP, and pushes it the functions, only then
cat >"$PUB/hold.py" <<'EOF'
import http.client, http.server, sys, time
cp, t0 = sys.argv[1], time.time()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def fwd(self):
        n = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(n) if n else None
        if self.path == "/v1/dataplanes" and time.time() - t0 < 3:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        c = http.client.HTTPConnection(cp, timeout=10)
        hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        c.request(self.command, self.path, body, hdrs)
        r = c.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    do_GET = do_POST = do_PUT = do_DELETE = fwd
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print("holding proxy on 127.0.0.1:%d" % s.server_address[1], flush=True)
s.serve_forever()
EOF
t_late_functions() {
  # a DP restarted whose function list comes 3 s late (its claim is answered before): the
  # requests it takes over wait for their function, then run (not 3 quick 404s and a 500)
  [ "$(register "$REG" slow3 "$FN" '&scaling_upper_bound=0')" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  wait_json "$REG/v1/status" '[f for f in j["functions"] if f["name"] == "slow3"]' || return 1
  local ids=() i id
  for i in 1 2; do id=$(submit slow3 -d "n=$i") || return 1; ids+=("$id"); done
  kill -9 "$DP_PID"
  wait_bounded "$DP_PID" 2>/dev/null
  bg_start "$TAP_TMP/hold.log" /usr/bin/python3 "$PUB/hold.py" "$CPI"
  wait_for_log "$TAP_TMP/hold.log" 'holding proxy on' || return 1
  start_dp "$TAP_TMP/dpl.log" "127.0.0.1:$(port_of "$TAP_TMP/hold.log" 'holding proxy on')" dpb || return 1
  wait_for_log "$TAP_TMP/dpl.log" 'async: 2 unfinished asynchronous requests taken over' 20 || return 1
  curl -sf -XPUT "$REG/v1/functions/slow3" -d '{"scaling_upper_bound":1}' >/dev/null || return 1
  for id in "${ids[@]}"; do
    poll_until 1200 done_any "$id" "$TAP_TMP/l.out" || return 1
    [ "$(fetch "$id" "$TAP_TMP/l.out")" = 200 ] || { cat "$TAP_TMP/l.out"; return 1; }
    [ "$(json_field "$(cat "$TAP_TMP/l.out")" Function)" = slow3 ] || return 1
  done
}
check "a restarted DP whose function list comes late: the requests it takes over wait for it and complete" t_late_functions

t_many_waiting() {
  # more requests waiting for a sandbox than the loopback runner takes connections from one
  # client (http.maxConnsPerClient 20 here; by default half the proxy's cap): they wait in the
  # DP, none is refused into a failed try
  kill -9 "$DP_PID"
  wait_bounded "$DP_PID" 2>/dev/null
  bg_start "$TAP_TMP/dpc.log" "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --name dpb --async \
    --portProxyRead 0 --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --coldStartTimeout 60s \
    --traceOutputFolder "" --http.maxConnsPerClient 20
  DP_PID=$BG_PID
  wait_for_log "$TAP_TMP/dpc.log" 'async results on' || return 1
  P=http://127.0.0.1:$(port_of "$TAP_TMP/dpc.log" 'proxy on')
  R=http://127.0.0.1:$(port_of "$TAP_TMP/dpc.log" 'async results on')
  [ "$(register "$REG" many "$FN" '&scaling_upper_bound=0')" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  wait_json "$REG/v1/status" '[f for f in j["functions"] if f["name"] == "many"]' || return 1
  poll_until 200 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' -XPOST -H 'Host: many' -d warm '$P/')\" = 200 ]" || return 1
  local ids=() i id
  for i in $(seq 40); do id=$(submit many -d "n=$i") || return 1; ids+=("$id"); done
  sleep 1 # (what is tested: nothing fails while they wait; a refused try fails within 0.75 s)
  curl -sf -XPUT "$REG/v1/functions/many" -d '{"scaling_upper_bound":2}' >/dev/null || return 1
  for id in "${ids[@]}"; do
    poll_until 1200 done_any "$id" "$TAP_TMP/w.out" || return 1
    [ "$(fetch "$id" "$TAP_TMP/w.out")" = 200 ] || { cat "$TAP_TMP/w.out"; return 1; }
  done
}
check "41 requests waiting for a sandbox, 20 loopback connections allowed: all complete, none refused" t_many_waiting

t_expiry() {
  local id
  id=$(submit hello) || return 1
  poll_until 600 done_ok "$id" || return 1
  kill -9 "$CP_PID"
  wait_bounded "$CP_PID" 2>/dev/null
  # no control plane: a submission is not accepted (503 saying why), a fetch cannot be answered
  local code
  code=$(curl -s -o "$TAP_TMP/f.out" -w '%{http_code}' -XPOST -H 'Host: hello' -d x "$P/")
  [ "$code" = 503 ] && grep -q 'not accepted: the control plane did not store it' "$TAP_TMP/f.out" ||
    { echo "no CP, submit: $code $(cat "$TAP_TMP/f.out")"; return 1; }
  [ "$(fetch "$id")" = 503 ] && [ ! -s "$TAP_TMP/f.out" ] &&
    grep -qi '^X-Dirigent-Error: .*the control plane' "$TAP_TMP/f.out.h" || return 1
  # the CP restarts with a short TTL: results stored from now expire after 1 s
  start_cp "$TAP_TMP/cp2.log" --asyncResultTtl 1s || return 1
  [ "$(fetch "$id")" = 200 ] || { echo "kept across the CP restart: no"; return 1; }
  local id2
  id2=$(submit hello) || return 1
  poll_until 600 done_ok "$id2" || return 1
  poll_until 200 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' -XGET --data-binary '$id2' '$R/')\" = 404 ]" || return 1
  wait_for_log "$TAP_TMP/cp2.log" 'results expired \(asyncResultTtl 1000 ms\)' || return 1
  # deleted from the store: gone after another restart too, and not in the file
  /usr/bin/python3 - "$TAP_TMP/cpdata/cp.sqlite" "$id2" "$id" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
n = lambda key: sum(db.execute(f"select count(*) from {t} where key=?", (key,)).fetchone()[0] for t in tables)
assert n(sys.argv[2]) == 0, "expired result still stored"
assert n(sys.argv[3]) == 1, "unexpired result gone"
EOF
}
check "no CP: submissions 503; results survive a CP restart; with asyncResultTtl 1s a result expires: 404, deleted from the store" t_expiry

t_load() {
  local out
  out=$("$B/dirigent" --dp "${P#http://}" --json load burst 6 hello --async --results "${R#http://}" --timeout 60) ||
    { echo "exit $?: $out"; return 1; }
  echo "$out"
  [ "$(json_field "$out" ok)" = 6 ] && [ "$(json_field "$out" errors)" = 0 ] || return 1
  # the failing function: every result is an error (500 after the retries), exit status 3
  out=$("$B/dirigent" --dp "${P#http://}" --json load burst 2 broken --async --results "${R#http://}" --timeout 60)
  [ $? = 3 ] && [ "$(json_field "$out" errors_5xx)" = 2 ]
}
check "dirigent load burst --async: submits, fetches every result, counts the failures" t_load

t_auth() {
  # with a cluster key: the DP's calls carry its node credential; the CP's async routes refuse
  # anonymous callers and a node acting for another data plane
  cluster_key
  "$B/dirigent" token create --key "$TAP_TMP/cluster.key" --role node --name other \
    --out "$TAP_TMP/other.token" >/dev/null || return 1
  bg_start "$TAP_TMP/acp.log" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 \
    --dataDir "$TAP_TMP/acpdata" --heartbeatInterval 300ms --traceOutputFolder "" --asyncMaxRecords 2 \
    "${KEY_ARGS[@]}"
  wait_for_log "$TAP_TMP/acp.log" 'registration on' || return 1
  local acpi=127.0.0.1:$(port_of "$TAP_TMP/acp.log" 'internal api on') code
  bg_start "$TAP_TMP/adp.log" "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --name dpauth --async \
    --portProxyRead 0 --controlPlaneAddress "$acpi" --heartbeatInterval 300ms --traceOutputFolder "" \
    "${KEY_ARGS[@]}"
  local adp_pid=$BG_PID
  wait_for_log "$TAP_TMP/adp.log" 'async results on' || return 1
  local ap=http://127.0.0.1:$(port_of "$TAP_TMP/adp.log" 'proxy on')
  local ar=http://127.0.0.1:$(port_of "$TAP_TMP/adp.log" 'async results on')
  local areg=http://127.0.0.1:$(port_of "$TAP_TMP/acp.log" 'registration on')
  curl -s -o /dev/null -w '%{http_code}' -XPOST -H "Authorization: Bearer $(cat "$TAP_TMP/operator.token")" \
    "$areg/registerService" -d "name=authfn&image=$FN&port_forwarding=80&port_forwarding=tcp&scaling_upper_bound=0" >"$TAP_TMP/c" &&
    [ "$(cat "$TAP_TMP/c")" = 200 ] || return 1
  poll_until 200 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' -XPOST -H 'Host: authfn' -d x '$ap/')\" = 200 ]" || return 1
  local id
  id=$(curl -s -XPOST -H 'Host: authfn' -d y "$ap/")
  [ "$(R_URL=$ar fetch "$id")" = 204 ] || return 1
  # two records kept (asyncMaxRecords 2): a third submission is refused
  code=$(curl -s -o "$TAP_TMP/a.out" -w '%{http_code}' -XPOST -H 'Host: authfn' -d z "$ap/")
  [ "$code" = 429 ] && grep -q 'asyncMaxRecords' "$TAP_TMP/a.out" || { echo "third: $code $(cat "$TAP_TMP/a.out")"; return 1; }
  code=$(curl -s -o "$TAP_TMP/a.out" -w '%{http_code}' "http://$acpi/v1/async/$id")
  [ "$code" = 401 ] || { echo "anonymous GET: $code"; return 1; }
  code=$(curl -s -o "$TAP_TMP/a.out" -w '%{http_code}' -H "Authorization: Bearer $(cat "$TAP_TMP/other.token")" \
    -XPOST "http://$acpi/v1/async-claims" -d '{"dataplane":"dpauth"}')
  [ "$code" = 403 ] && grep -q "credential node.other cannot act as data plane 'dpauth'" "$TAP_TMP/a.out" ||
    { echo "other node's claim: $code $(cat "$TAP_TMP/a.out")"; return 1; }
  # a node credential of no registered data plane (a worker's, say) gets no other data plane's
  # requests: dpauth's unfinished ones, once the CP lost dpauth, are not handed to "other"
  kill -9 "$adp_pid"
  wait_for_log "$TAP_TMP/acp.log" 'data plane dpauth silent: removed' 20 || return 1
  code=$(curl -s -o "$TAP_TMP/a.out" -w '%{http_code}' -H "Authorization: Bearer $(cat "$TAP_TMP/other.token")" \
    -XPOST "http://$acpi/v1/async-claims" -d '{"dataplane":"other","orphansOnly":true}')
  [ "$code" = 200 ] && ! grep -q "$id" "$TAP_TMP/a.out" ||
    { echo "a non-data-plane's orphan claim: $code $(head -c 300 "$TAP_TMP/a.out")"; return 1; }
}
check "with a cluster key: the DP submits with its credential; anonymous callers 401, another node's claim 403, a non-data-plane node no orphans; asyncMaxRecords: 429" t_auth

# ---- CP replicas (Redis): results survive the leader's kill -9 -----------------------------
if ! command -v redis-server >/dev/null; then
  for i in 1 2 3 4; do skip "HA cluster check $i" "needs redis-server"; done
  tap_done
fi
kill -9 "$DP_PID" "$CP_PID" 2>/dev/null
free_ports() { /usr/bin/python3 -c '
import socket
ss=[socket.socket() for _ in range(int(__import__("sys").argv[1]))]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"; }
read -r RP A1 A2 A3 G1 G2 G3 F1 F2 F3 <<<"$(free_ports 10)"
bg_start "$TAP_TMP/redis.log" redis-server --port "$RP" --bind 127.0.0.1 --dir "$TAP_TMP" --save ""
for _ in $(seq 1 100); do redis-cli -p "$RP" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
API=(127.0.0.1:$A1 127.0.0.1:$A2 127.0.0.1:$A3)
REGS=(127.0.0.1:$G1 127.0.0.1:$G2 127.0.0.1:$G3)
ALL="${API[0]},${API[1]},${API[2]}"
CPID=()
for i in 1 2 3; do
  bg_start "$TAP_TMP/hcp$i.log" "$B/dirigent-cp" --port "${API[$((i - 1))]##*:}" \
    --registrationServer "${REGS[$((i - 1))]}" --persistence redis --redis.address "127.0.0.1:$RP" \
    --replicas "$ALL" --raftAddresses "127.0.0.1:$F1,127.0.0.1:$F2,127.0.0.1:$F3" --replicaId "$i" \
    --dataDir "$TAP_TMP/hcp$i" --heartbeatInterval 300ms --traceOutputFolder ""
  CPID[$i]=$BG_PID
done
kill "$W_PID" 2>/dev/null # SIGTERM: it stops its sandboxes
wait_bounded "$W_PID" 2>/dev/null
start_worker "$TAP_TMP/hw1.log" "$ALL" || { echo "Bail out! worker did not start"; exit 1; }
start_dp "$TAP_TMP/hdp.log" "$ALL" || { echo "Bail out! dp did not start"; exit 1; }
role() { curl -s -m 1 "http://$1/v1/status" | /usr/bin/python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["role"])' 2>/dev/null; }
leader_index() {
  local i
  for i in 1 2 3; do
    [ "$i" = "${1:-0}" ] && continue
    [ "$(role "${API[$((i - 1))]}")" = leader ] && { echo "$i"; return 0; }
  done
  return 1
}

t_ha_setup() {
  local i id
  for i in $(seq 1 200); do LEADER=$(leader_index) && break; sleep 0.05; done
  [ -n "${LEADER:-}" ] || return 1
  HREG=http://${REGS[$((LEADER - 1))]}
  [ "$(register "$HREG" hafn)" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  wait_json "$HREG/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1' || return 1
  HIDS=()
  for i in 1 2 3 4; do id=$(submit hafn -d "h=$i") || return 1; HIDS+=("$id"); done
  for i in 0 1 2 3; do
    poll_until 600 done_ok "${HIDS[$i]}" "$TAP_TMP/ha$i.out" || return 1
  done
}
check "HA cluster (3 CP replicas on Redis): asynchronous requests complete" t_ha_setup

t_ha_failover() {
  [ -n "${LEADER:-}" ] || return 1
  kill -9 "${CPID[$LEADER]}"
  local i NEW=""
  for i in $(seq 1 300); do NEW=$(leader_index "$LEADER") && break; sleep 0.05; done
  [ -n "$NEW" ] || return 1
  echo "new leader: $NEW"
  # every result is still there, the same bytes
  for i in 0 1 2 3; do
    poll_until 400 done_ok "${HIDS[$i]}" "$TAP_TMP/hb$i.out" || return 1
    cmp "$TAP_TMP/ha$i.out" "$TAP_TMP/hb$i.out" || return 1
  done
  LEADER=$NEW
}
check "kill -9 of the leader: every result is still fetched, the same body" t_ha_failover

t_ha_after() {
  local id
  id=$(submit hafn -d after) || return 1
  poll_until 600 done_ok "$id" || return 1
  [ "$(json_field "$(cat "$TAP_TMP/f.out")" Function)" = hafn ]
}
check "after the failover: a new asynchronous request is accepted and completes" t_ha_after

t_ha_unknown() {
  [ "$(fetch 0123abcd)" = 404 ] && grep -qi '^X-Dirigent-Error: .*unknown or expired' "$TAP_TMP/f.out.h"
}
check "an unknown id through the new leader: 404" t_ha_unknown
tap_done
