#!/usr/bin/env bash
# Authentication (issue 14, finding 1; docs/security.md): a cluster whose daemons share a key
# (authTokenFile) on 127.0.0.1 with ephemeral ports, attacked the way the issue's probes did
# it: a fake worker reporting a sandbox for hello at the attacker's address, a worker taking
# another's name, the wrong roles, a fake data plane, endpoint lists pushed or deleted on the
# DP's API, containers created on the worker's API, forged metrics, the open status and
# metrics. Each is refused (401/403 naming what is missing) and the legitimate path still
# works. Then the start-up rules (no key off loopback, a key readable by others, the
# registration API's loopback rule) and `dirigent up`'s key and operator token with the CLI.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
D=$B/dirigent
FN=$B/dirigent-fn
TAG="DG_AUTH_TEST=$$"

plan 21

trap 'tap_cleanup; cleanup_sandboxes' EXIT

KEY=$TAP_TMP/cluster.key
"$D" token init --key "$KEY" 2>/dev/null || { echo "Bail out! dirigent token init failed"; exit 1; }
cred() { "$D" token create --key "$KEY" --role "$1" --name "$2"; } # cred ROLE NAME
OP=$(cred operator admin)
NODE_W1=$(cred node w1)
NODE_DP1=$(cred node dp1)
# the same identity from another cluster's key
"$D" token init --key "$TAP_TMP/other.key" 2>/dev/null
OTHER_OP=$("$D" token create --key "$TAP_TMP/other.key" --role operator --name admin)

# as ROLE-CRED (or "-" for none): curl with the credential; prints the status, body in $TAP_TMP/out
as() {
  local c=$1; shift
  local auth=()
  [ "$c" != - ] && auth=(-H "Authorization: Bearer $c")
  curl -s -o "$TAP_TMP/out" -w '%{http_code}' "${auth[@]}" "$@"
}
body_has() { grep -q -- "$1" "$TAP_TMP/out" || { echo "body: $(cat "$TAP_TMP/out")"; return 1; }; }

# ---- the cluster: CP (registration API requires an operator), DP dp1, worker w1, all keyed
bg_start "$TAP_TMP/cp.log" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 \
  --authTokenFile "$KEY" --registrationAuth operator --persistence none \
  --heartbeatInterval 300ms --traceOutputFolder ""
wait_for_log "$TAP_TMP/cp.log" 'registration on' || { echo "Bail out! cp did not start"; exit 1; }
CPI=http://127.0.0.1:$(port_of "$TAP_TMP/cp.log" 'internal api on')
REG=http://127.0.0.1:$(port_of "$TAP_TMP/cp.log" 'registration on')
bg_start "$TAP_TMP/dp.log" "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --name dp1 \
  --controlPlaneAddress "${CPI#http://}" --authTokenFile "$KEY" --heartbeatInterval 300ms \
  --coldStartTimeout 10s --traceOutputFolder ""
wait_for_log "$TAP_TMP/dp.log" 'proxy on' || { echo "Bail out! dp did not start"; exit 1; }
P=http://127.0.0.1:$(port_of "$TAP_TMP/dp.log" 'proxy on')
DPA=http://127.0.0.1:$(port_of "$TAP_TMP/dp.log" 'api on')
bg_start "$TAP_TMP/w1.log" "$B/dirigent-worker" --port 0 --name w1 --authTokenFile "$KEY" \
  --controlPlaneAddress "${CPI#http://}" --heartbeatInterval 300ms --fnBinary "$FN" \
  --dataDir "$TAP_TMP/w1/data" --runDir "$TAP_TMP/w1/run" --processUser nobody
wait_for_log "$TAP_TMP/w1.log" 'listening on' || { echo "Bail out! worker did not start"; exit 1; }
WK=http://127.0.0.1:$(port_of "$TAP_TMP/w1.log" 'w1: listening on')

status() { curl -sf -H "Authorization: Bearer $OP" "$CPI/v1/status"; }
status_is() { # status_is PYEXPR: poll until it holds (10 s)
  local i
  for i in $(seq 1 200); do
    status | /usr/bin/python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if ($1) else 1)" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "timed out waiting for $1: $(status)"; return 1
}
hello_ok() { [ "$(json_field "$(curl -sf -m 10 -H 'Host: hello' "$P/")" Function)" = hello ]; }

t_keyed_cluster() {
  # the worker and the data plane registered with their own credentials
  status_is '[w["name"] for w in s["workers"]] == ["w1"] and [d["name"] for d in s["dataplanes"]] == ["dp1"]' || return 1
  grep -q 'audit: who=node.w1 from=127.0.0.1:[0-9]* register worker w1' "$TAP_TMP/cp.log" &&
    grep -q 'audit: who=node.dp1 from=127.0.0.1:[0-9]* register data plane dp1' "$TAP_TMP/cp.log" || return 1
  [ "$(as "$OP" -XPOST "$REG/registerService" \
    -d "name=hello&image=$FN&port_forwarding=80&port_forwarding=tcp&scaling_lower_bound=1&env_vars=$TAG")" = 200 ] ||
    { cat "$TAP_TMP/out"; return 1; }
  grep -q 'audit: who=operator.admin from=127.0.0.1:[0-9]* register function hello' "$TAP_TMP/cp.log" || return 1
  # the CP's calls to the worker and the DP carried its credential: hello runs and answers
  poll_until 200 hello_ok
}
check "a keyed cluster: worker and DP register as node.NAME, an operator registers hello, it answers" t_keyed_cluster

t_fake_worker() {
  # the attacker's "sandbox" counts what reaches it
  /usr/bin/python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        open(sys.argv[1], "a").write("hit\n"); self.send_response(200); self.end_headers(); self.wfile.write(b"{\"Function\":\"evil\"}")
    do_POST = do_GET
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
open(sys.argv[2], "w").write(str(s.server_port)); s.serve_forever()' "$TAP_TMP/evil.hits" "$TAP_TMP/evil.port" &
  TAP_PIDS+=($!)
  poll_until 100 test -s "$TAP_TMP/evil.port" || return 1
  local ep=127.0.0.1:$(cat "$TAP_TMP/evil.port") beat
  beat="{\"name\":\"evil\",\"address\":\"$ep\",\"boot\":\"b1\",\"resync\":true,\"sandboxes\":[{\"id\":\"x1\",\"function\":\"hello\",\"endpoint\":\"$ep\"}]}"
  [ "$(as - -XPOST "$CPI/v1/workers" -d "$beat")" = 401 ] || return 1
  body_has "no Authorization header: POST /v1/workers needs a node credential" || return 1
  [ "$(curl -s -o /dev/null -D - -XPOST "$CPI/v1/workers" -d "$beat" | grep -ci '^www-authenticate: Bearer')" = 1 ] || return 1
  grep -q 'audit: who=anonymous from=127.0.0.1:[0-9]* refused 401 POST /v1/workers' "$TAP_TMP/cp.log" || return 1
  # a credential of another cluster is no better
  [ "$(as "$(cd "$TAP_TMP" && "$D" token create --key other.key --role node --name evil)" \
    -XPOST "$CPI/v1/workers" -d "$beat")" = 401 ] && body_has "bad credential signature" || return 1
  # hello's calls never reach the attacker
  local i
  for i in $(seq 1 10); do hello_ok || return 1; done
  [ ! -s "$TAP_TMP/evil.hits" ] || { echo "the attacker got $(wc -l <"$TAP_TMP/evil.hits") calls"; return 1; }
  status | grep -qv '"evil"'
}
check "anonymous fake worker reporting a sandbox for hello: 401 naming the node credential, hello's calls never reach it" t_fake_worker

t_impersonate() {
  # w1's credential registering as w2, or moving w1 elsewhere under another name: 403 naming both
  [ "$(as "$NODE_W1" -XPOST "$CPI/v1/workers" -d '{"name":"w2","address":"127.0.0.1:9","boot":"x"}')" = 403 ] || return 1
  body_has "credential node.w1 cannot act as worker 'w2'" || return 1
  # a data plane's credential cannot register a worker named after itself either: the names
  # are the identity, not the role's
  [ "$(as "$NODE_DP1" -XPOST "$CPI/v1/workers" -d '{"name":"w1","address":"127.0.0.1:9","boot":"x"}')" = 403 ] || return 1
  status_is '[w["name"] for w in s["workers"]] == ["w1"] and s["workers"][0]["address"] != "127.0.0.1:9"'
}
check "a node credential for w1 registering as w2 (or dp1's as w1): 403 naming both; nothing moved" t_impersonate

t_roles() {
  # an operator cannot register a worker, a node cannot register a function
  [ "$(as "$OP" -XPOST "$CPI/v1/workers" -d '{"name":"w1","address":"127.0.0.1:9"}')" = 403 ] &&
    body_has "credential role operator cannot call POST /v1/workers (it needs node)" || return 1
  [ "$(as "$NODE_W1" -XPOST "$REG/registerService" -d "name=evil&image=$FN&port_forwarding=80&port_forwarding=tcp")" = 403 ] &&
    body_has "credential role node cannot call POST /registerService" || return 1
  [ "$(as "$NODE_W1" -XPOST "$CPI/v1/functions" -d "{\"name\":\"evil\",\"image\":\"$FN\"}")" = 403 ] || return 1
  [ "$(as "$OP" "$REG/check?name=evil")" = 404 ]
}
check "roles: an operator credential registering a worker and a node credential registering a function: 403" t_roles

t_fake_dp() {
  [ "$(as - -XPOST "$CPI/v1/dataplanes" -d '{"name":"evil","api":"127.0.0.1:9","proxy":"127.0.0.1:9"}')" = 401 ] || return 1
  [ "$(as "$NODE_W1" -XPOST "$CPI/v1/dataplanes" -d '{"name":"evil","api":"127.0.0.1:9","proxy":"127.0.0.1:9"}')" = 403 ] || return 1
  # a worker's credential under its own name, a data plane's as a worker: one node is one kind
  [ "$(as "$NODE_W1" -XPOST "$CPI/v1/dataplanes" -d '{"name":"w1","api":"127.0.0.1:9","proxy":"127.0.0.1:9"}')" = 403 ] &&
    body_has "credential node.w1 is registered as a worker" || return 1
  [ "$(as "$NODE_DP1" -XPOST "$CPI/v1/workers" -d '{"name":"dp1","address":"127.0.0.1:9","boot":"x"}')" = 403 ] &&
    body_has "credential node.dp1 is registered as a data plane" || return 1
  status_is '[w["name"] for w in s["workers"]] == ["w1"]' || return 1
  status_is '[d["name"] for d in s["dataplanes"]] == ["dp1"]' || return 1
  # registration replies still name only dp1's proxy
  [ "$(as "$OP" -XPOST "$REG/registerService" -d "name=second&image=$FN&port_forwarding=80&port_forwarding=tcp&env_vars=$TAG")" = 200 ] &&
    [ "$(cat "$TAP_TMP/out")" = "${P#http://}" ]
}
check "a fake data plane (anonymous, or with a worker's credential, under its own name too), a DP as a worker: refused, registration replies unchanged" t_fake_dp

t_dp_api() {
  local c
  for c in - "$NODE_W1" "$OP"; do
    [ "$(as "$c" -XPUT "$DPA/v1/functions/hello/endpoints" -d '{"name":"hello","endpoints":[{"id":"x","address":"127.0.0.1:9"}]}')" = "$([ "$c" = - ] && echo 401 || echo 403)" ] || return 1
    [ "$(as "$c" -XDELETE "$DPA/v1/functions/hello")" = "$([ "$c" = - ] && echo 401 || echo 403)" ] || return 1
  done
  as - -XPUT "$DPA/v1/functions/hello/endpoints" -d '{}' >/dev/null
  body_has "needs a cp credential" || return 1
  local i
  for i in 1 2 3; do hello_ok || return 1; done
}
check "PUT/DELETE of hello's endpoints on the DP's API without the CP's credential: 401/403, hello still answers" t_dp_api

count_sandboxes() { curl -sf -H "Authorization: Bearer $OP" "$WK/v1/sandboxes" | /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)["sandboxes"]))'; }
t_worker_api() {
  local before
  before=$(count_sandboxes) || return 1
  [ "$(as - -XPOST "$WK/v1/sandboxes" -d "{\"function\":\"evil\",\"image\":\"$FN\",\"port\":80,\"env\":[\"$TAG\"]}")" = 401 ] &&
    body_has "needs a cp credential" || return 1
  [ "$(as "$NODE_W1" -XPOST "$WK/v1/sandboxes" -d "{\"function\":\"evil\",\"image\":\"$FN\",\"port\":80}")" = 403 ] || return 1
  [ "$(as "$OP" -XDELETE "$WK/v1/sandboxes/x")" = 403 ] || return 1
  [ "$(count_sandboxes)" = "$before" ] || return 1
  ! grep -l "$TAG" /proc/[0-9]*/environ 2>/dev/null | xargs -r grep -l evil 2>/dev/null | grep -q .
}
check "the worker's API: a create without the CP's credential is 401 and starts nothing" t_worker_api

t_metrics() {
  local desired
  desired=$(json_field "$(curl -sf -H "Authorization: Bearer $OP" "$REG/v1/functions/hello")" desired)
  [ "$(as - -XPOST "$CPI/v1/metrics" -d '{"dataplane":"dp1","functions":[{"name":"hello","inflight":1000000}]}')" = 401 ] || return 1
  # a worker's credential claiming to be dp1
  [ "$(as "$NODE_W1" -XPOST "$CPI/v1/metrics" -d '{"dataplane":"dp1","functions":[{"name":"hello","inflight":1000000}]}')" = 403 ] &&
    body_has "credential node.w1 cannot act as data plane 'dp1'" || return 1
  [ "$(json_field "$(curl -sf -H "Authorization: Bearer $OP" "$REG/v1/functions/hello")" desired)" = "$desired" ]
}
check "forged /v1/metrics (anonymous, or a worker as dp1): refused, hello's scale unchanged" t_metrics

t_forged_exit() {
  # another node's credential reporting hello's sandbox as exited: 403, the sandbox stays
  local id
  id=$(curl -sf -H "Authorization: Bearer $OP" "$WK/v1/sandboxes" | /usr/bin/python3 -c \
    'import json,sys; print([s["id"] for s in json.load(sys.stdin)["sandboxes"] if s["function"]=="hello"][0])') || return 1
  [ "$(as "$NODE_DP1" -XPOST "$CPI/v1/sandboxes/exited" -d "{\"worker\":\"dp1\",\"id\":\"$id\",\"function\":\"hello\",\"status\":1}")" = 403 ] &&
    body_has "credential node.dp1 cannot report sandbox '$id': it runs on worker 'w1'" || return 1
  [ "$(as - -XPOST "$CPI/v1/sandboxes/exited" -d "{\"id\":\"$id\",\"function\":\"hello\",\"status\":1}")" = 401 ] || return 1
  [ "$(json_field "$(curl -sf -H "Authorization: Bearer $OP" "$REG/v1/functions/hello")" error)" = None ] && hello_ok
}
check "a forged sandbox exit (another node's credential, or none): refused, hello keeps its sandbox" t_forged_exit

t_open_ports() {
  [ "$(as - "$CPI/v1/status")" = 401 ] && [ "$(as - "$CPI/metrics")" = 401 ] &&
    [ "$(as - "$DPA/metrics")" = 401 ] && [ "$(as - "$WK/metrics")" = 401 ] || return 1
  [ "$(as "$NODE_W1" "$CPI/v1/status")" = 403 ] || return 1
  # /metrics takes any cluster credential; /health stays open (probes, HAProxy)
  [ "$(as "$NODE_W1" "$CPI/metrics")" = 200 ] && [ "$(as "$OP" "$DPA/metrics")" = 200 ] || return 1
  [ "$(as - "$CPI/health")" = 200 ] && [ "$(as - "$DPA/health")" = 200 ] && [ "$(as - "$WK/health")" = 200 ]
}
check "/v1/status and /metrics: 401 anonymous, 200 with a credential; /health open" t_open_ports

t_registration_operator() {
  # registrationAuth: operator (what a non-loopback address gets by default)
  [ "$(as - -XPOST "$REG/registerService" -d "name=anon&image=$FN&port_forwarding=80&port_forwarding=tcp")" = 401 ] &&
    body_has "needs a operator credential\|needs an operator credential\|operator credential" || return 1
  [ "$(as "$OTHER_OP" "$REG/v1/functions")" = 401 ] && body_has "bad credential signature" || return 1
  # the CLI: with DIRIGENT_TOKEN, without, and with a wrong one (exit 1, the CP's message)
  DIRIGENT_TOKEN=$OP "$D" --cp "${REG#http://}" function list >"$TAP_TMP/cli.out" 2>&1 &&
    grep -q '^hello ' "$TAP_TMP/cli.out" || { cat "$TAP_TMP/cli.out"; return 1; }
  (cd "$TAP_TMP" && "$D" --cp "${REG#http://}" function list) >"$TAP_TMP/cli.out" 2>&1 && return 1
  grep -q "401" "$TAP_TMP/cli.out" && grep -q "no Authorization header" "$TAP_TMP/cli.out" || { cat "$TAP_TMP/cli.out"; return 1; }
  DIRIGENT_TOKEN=$OTHER_OP "$D" --cp "${REG#http://}" function list >"$TAP_TMP/cli.out" 2>&1 && return 1
  grep -q "bad credential signature" "$TAP_TMP/cli.out" || { cat "$TAP_TMP/cli.out"; return 1; }
  # --token-file: a file only its owner reads
  echo "$OP" >"$TAP_TMP/op.token" && chmod 600 "$TAP_TMP/op.token"
  "$D" --cp "${REG#http://}" --token-file "$TAP_TMP/op.token" function list >/dev/null 2>&1 || return 1
  chmod 644 "$TAP_TMP/op.token"
  "$D" --cp "${REG#http://}" --token-file "$TAP_TMP/op.token" function list >"$TAP_TMP/cli.out" 2>&1 && return 1
  grep -q "chmod 600" "$TAP_TMP/cli.out"
}
check "registration API with an operator requirement: anonymous 401; the CLI with DIRIGENT_TOKEN, --token-file, a wrong token" t_registration_operator

t_audit() {
  [ "$(as "$OP" -XPUT "$REG/v1/functions/second" -d '{"scaling_upper_bound":3}')" = 200 ] &&
    [ "$(as "$OP" -XDELETE "$REG/v1/functions/second")" = 200 ] || return 1
  grep -q 'audit: who=operator.admin from=127.0.0.1:[0-9]* update function second bounds 0..3' "$TAP_TMP/cp.log" &&
    grep -q 'audit: who=operator.admin from=127.0.0.1:[0-9]* delete function second' "$TAP_TMP/cp.log" &&
    grep -q 'audit: who=node.w1 from=127.0.0.1:[0-9]* refused 403 POST /registerService' "$TAP_TMP/cp.log" &&
    grep -q 'audit: who=anonymous from=127.0.0.1:[0-9]* refused 401 PUT /v1/functions/hello/endpoints' "$TAP_TMP/dp.log" &&
    grep -q 'audit: who=anonymous from=127.0.0.1:[0-9]* refused 401 POST /v1/sandboxes' "$TAP_TMP/w1.log"
}
check "the audit log: one line per change and per refusal, with who and from where" t_audit

t_tls() {
  # TLS terminated by HAProxy (dirigent haproxy-config --tls-cert): a registration-API call over
  # HTTPS, checked against the certificate, reaches the CP with the operator's credential
  command -v haproxy >/dev/null && command -v openssl >/dev/null ||
    { echo "# needs haproxy and openssl (make deps)"; return 1; }
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$TAP_TMP/tls.key" -out "$TAP_TMP/tls.crt" >/dev/null 2>&1 || return 1
  cat "$TAP_TMP/tls.crt" "$TAP_TMP/tls.key" >"$TAP_TMP/tls.pem" && chmod 600 "$TAP_TMP/tls.pem"
  local ports inv regp
  ports=$(/usr/bin/python3 -c 'import socket
ss=[socket.socket() for _ in range(2)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))')
  read -r inv regp <<<"$ports"
  "$D" haproxy-config --socket "$TAP_TMP/hap.sock" --cp "${REG#http://}" --invocations "127.0.0.1:$inv" \
    --registration "127.0.0.1:$regp" --tls-cert "$TAP_TMP/tls.pem" >"$TAP_TMP/hap.cfg" || return 1
  grep -q "bind 127.0.0.1:$regp ssl crt $TAP_TMP/tls.pem" "$TAP_TMP/hap.cfg" || return 1
  haproxy -c -q -f "$TAP_TMP/hap.cfg" || return 1
  bg_start "$TAP_TMP/haproxy.log" haproxy -db -f "$TAP_TMP/hap.cfg"
  poll_until 100 curl -sf --cacert "$TAP_TMP/tls.crt" -H "Authorization: Bearer $OP" "https://127.0.0.1:$regp/v1/functions/hello" || return 1
  [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$TAP_TMP/tls.crt" "https://127.0.0.1:$regp/v1/functions/hello")" = 401 ]
}
check "haproxy-config --tls-cert: the registration API over HTTPS (certificate checked), credentials still required" t_tls

# ---- start-up rules ----------------------------------------------------------------------------
# refused CMD...: exits at once (status 2) with the message; nothing to stop
refused() {
  local out rc
  out=$(timeout 10 "$@" 2>&1); rc=$?
  echo "$out" >"$TAP_TMP/out"
  [ $rc = 2 ] || { echo "exit $rc: $out"; return 1; }
}
t_no_key_off_loopback() {
  refused "$B/dirigent-cp" --host 0.0.0.0 --port 0 --registrationServer 127.0.0.1:0 --persistence none &&
    body_has "authTokenFile: not set, and the internal API listens on '0.0.0.0'" && body_has "dirigent token init" || return 1
  refused "$B/dirigent-cp" --port 0 --registrationServer 0.0.0.0:0 --persistence none &&
    body_has "registrationServer: 0.0.0.0 is not loopback" && body_has "registrationAuth: none" || return 1
  refused "$B/dirigent-dp" --dataPlaneIp 0.0.0.0 --portProxy 0 --portGRPC 0 --controlPlaneAddress '' &&
    body_has "authTokenFile" || return 1
  refused "$B/dirigent-worker" --workerNodeIp 0.0.0.0 --port 0 --name x --controlPlaneAddress '' &&
    body_has "authTokenFile" || return 1
  # on loopback without a key: runs, and says it is unauthenticated
  bg_start "$TAP_TMP/cp-nokey.log" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --persistence none --traceOutputFolder ""
  wait_for_log "$TAP_TMP/cp-nokey.log" 'registration on' || return 1
  grep -q "internal API unauthenticated (loopback only): set authTokenFile" "$TAP_TMP/cp-nokey.log"
}
check "without a key: refused off loopback (naming authTokenFile and how to make one); on loopback it runs and warns" t_no_key_off_loopback

t_key_mode() {
  cp "$KEY" "$TAP_TMP/loose.key" && chmod 644 "$TAP_TMP/loose.key"
  refused "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --persistence none --authTokenFile "$TAP_TMP/loose.key" &&
    body_has "key file '$TAP_TMP/loose.key' is accessible by group or others (mode 0644)" &&
    body_has "chmod 600 $TAP_TMP/loose.key" || return 1
  refused "$B/dirigent-worker" --port 0 --name x --controlPlaneAddress '' --authTokenFile "$TAP_TMP/loose.key" &&
    body_has "chmod 600"
}
check "a key file readable by others: every daemon refuses to start, naming the file and chmod 600" t_key_mode

t_registration_loopback_rule() {
  # with a key, registrationAuth auto: open on loopback (InVitro sends no credentials) but a
  # credential presented is still checked; on 0.0.0.0 (not loopback) an operator is required
  bg_start "$TAP_TMP/cp-lo.log" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --persistence none \
    --traceOutputFolder "" --authTokenFile "$KEY"
  wait_for_log "$TAP_TMP/cp-lo.log" 'registration on' || return 1
  grep -q 'registration API: open (loopback) (registrationAuth: auto)' "$TAP_TMP/cp-lo.log" || return 1
  local lo=http://127.0.0.1:$(port_of "$TAP_TMP/cp-lo.log" 'registration on')
  [ "$(as - -XPOST "$lo/registerService" -d "name=inv&image=$FN&port_forwarding=80&port_forwarding=tcp")" = 200 ] || return 1
  [ "$(as "$NODE_W1" -XPOST "$lo/registerService" -d "name=inv2&image=$FN&port_forwarding=80&port_forwarding=tcp")" = 403 ] || return 1
  bg_start "$TAP_TMP/cp-any.log" "$B/dirigent-cp" --port 0 --registrationServer 0.0.0.0:0 --persistence none \
    --traceOutputFolder "" --authTokenFile "$KEY"
  wait_for_log "$TAP_TMP/cp-any.log" 'registration on' || return 1
  grep -q 'registration API: operator credential required (registrationAuth: auto)' "$TAP_TMP/cp-any.log" || return 1
  local any=http://127.0.0.1:$(port_of "$TAP_TMP/cp-any.log" 'registration on')
  [ "$(as - -XPOST "$any/registerService" -d "name=inv&image=$FN&port_forwarding=80&port_forwarding=tcp")" = 401 ] &&
    [ "$(as "$OP" -XPOST "$any/registerService" -d "name=inv&image=$FN&port_forwarding=80&port_forwarding=tcp")" = 200 ]
}
check "registration API with a key: open on loopback (a node credential still refused), operator required on 0.0.0.0" t_registration_loopback_rule

t_fqdn_hostname() {
  # a keyed worker without --name takes its host's name: a dotted one (node1.example.com) is
  # no credential name, so it becomes wk-example-test instead of stopping the worker at start
  unshare --uts true 2>/dev/null || { echo "# skip: no UTS namespace"; return 0; }
  local cpi
  cpi=127.0.0.1:$(port_of "$TAP_TMP/cp-lo.log" 'internal api on')
  bg_start "$TAP_TMP/wfq.log" unshare --uts sh -c 'hostname wk.example.test && exec "$@"' sh \
    "$B/dirigent-worker" --port 0 --runtime emulated --authTokenFile "$KEY" --controlPlaneAddress "$cpi" \
    --heartbeatInterval 300ms --dataDir "$TAP_TMP/wfq/data" --runDir "$TAP_TMP/wfq/run"
  wait_for_log "$TAP_TMP/wfq.log" 'wk-example-test: listening on' || { cat "$TAP_TMP/wfq.log"; return 1; }
  local i
  for i in $(seq 1 100); do
    curl -sf -H "Authorization: Bearer $OP" "http://$cpi/v1/status" | grep -q '"wk-example-test"' && return 0
    sleep 0.1
  done
  echo "not registered: $(curl -s -H "Authorization: Bearer $OP" "http://$cpi/v1/status")"; return 1
}
check "a keyed worker on a host with a dotted hostname starts and registers (its name without dots)" t_fqdn_hostname

t_sibling_exit() {
  # workers named n-0, n-1 (a common scheme) are separate nodes: n-0's credential cannot report
  # n-1's sandbox as exited (only emulatedNodes' siblings, one process: the same address and boot)
  local cpi lo wk id i
  bg_start "$TAP_TMP/cp-sib.log" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --persistence none \
    --traceOutputFolder "" --authTokenFile "$KEY" --heartbeatInterval 300ms
  wait_for_log "$TAP_TMP/cp-sib.log" 'registration on' || return 1
  cpi=127.0.0.1:$(port_of "$TAP_TMP/cp-sib.log" 'internal api on')
  lo=http://127.0.0.1:$(port_of "$TAP_TMP/cp-sib.log" 'registration on')
  bg_start "$TAP_TMP/wn1.log" "$B/dirigent-worker" --port 0 --name n-1 --runtime emulated \
    --fnBinary "$FN" --authTokenFile "$KEY" --controlPlaneAddress "$cpi" --heartbeatInterval 300ms \
    --dataDir "$TAP_TMP/wn1/data" --runDir "$TAP_TMP/wn1/run"
  wait_for_log "$TAP_TMP/wn1.log" 'n-1: listening on' || return 1
  wk=http://127.0.0.1:$(port_of "$TAP_TMP/wn1.log" 'n-1: listening on')
  [ "$(as - -XPOST "$lo/registerService" -d "name=sib&image=$FN&port_forwarding=80&port_forwarding=tcp&scaling_lower_bound=1")" = 200 ] || return 1
  for i in $(seq 1 100); do
    id=$(curl -sf -H "Authorization: Bearer $OP" "$wk/v1/sandboxes" | /usr/bin/python3 -c \
      'import json,sys; print([s["id"] for s in json.load(sys.stdin)["sandboxes"] if s["function"]=="sib" and s["state"]=="ready"][0])' 2>/dev/null) && break
    sleep 0.1
  done
  [ -n "$id" ] || { echo "no sandbox of sib on n-1"; return 1; }
  for i in $(seq 1 100); do # the create's answer is in at the CP (its sandbox known there)
    [ "$(json_field "$(curl -sf "$lo/v1/functions/sib")" ready)" = 1 ] && break
    sleep 0.1
  done
  [ "$(as "$(cred node n-0)" -XPOST "http://$cpi/v1/sandboxes/exited" -d "{\"worker\":\"n-0\",\"id\":\"$id\",\"function\":\"sib\",\"status\":1}")" = 403 ] &&
    body_has "credential node.n-0 cannot report sandbox '$id': it runs on worker 'n-1'" || return 1
  [ "$(as "$(cred node n-1)" -XPOST "http://$cpi/v1/sandboxes/exited" -d "{\"worker\":\"n-1\",\"id\":\"$id\",\"function\":\"sib\",\"status\":1}")" = 200 ]
}
check "a worker named n-0 cannot report the exit of worker n-1's sandbox; n-1 itself can" t_sibling_exit

t_sibling_beat() {
  # a sibling beat (POST /v1/workers/siblings: emulatedNodes' nodes beaten by their first)
  # speaks only for siblings of one process: n-0's credential cannot beat for worker n-1 (another
  # process: refused in the answer, n-1 unchanged), nor n-1's as sender n-0; a keyed worker
  # emulating 3 nodes has its nodes beaten that way
  local cpi lo
  cpi=127.0.0.1:$(port_of "$TAP_TMP/cp-sib.log" 'internal api on')
  lo=http://127.0.0.1:$(port_of "$TAP_TMP/cp-sib.log" 'registration on')
  [ "$(as "$(cred node n-0)" -XPOST "http://$cpi/v1/workers" -d '{"name":"n-0","address":"127.0.0.1:9","boot":"b0"}')" = 200 ] || return 1
  [ "$(as "$(cred node n-0)" -XPOST "http://$cpi/v1/workers/siblings" -d '{"sender":"n-0","address":"127.0.0.1:9","boot":"b0","cpuMilli":1,"nodes":["n-1"]}')" = 200 ] &&
    body_has '"refused": *\["n-1"\]' || return 1
  [ "$(as "$(cred node n-1)" -XPOST "http://$cpi/v1/workers/siblings" -d '{"sender":"n-0","address":"127.0.0.1:9","boot":"b0","nodes":["n-1"]}')" = 403 ] &&
    body_has 'credential node.n-1 cannot act as worker' || return 1
  [ "$(as "$(cred node n-0)" -XPOST "http://$cpi/v1/workers/siblings" -d '{"sender":"n-0","address":"127.0.0.1:9","boot":"other","nodes":["n-1"]}')" = 409 ] &&
    body_has 'beat on their own first' || return 1
  [ "$(as "$(cred node n-0)" -XPOST "http://$cpi/v1/workers/siblings" -d '{"sender":"n-0","address":"127.0.0.1:9","boot":"b0","nodes":[]}')" = 400 ] &&
    body_has "field 'nodes'" || return 1
  # n-1 keeps its own capacity (the refused beat changed nothing)
  [ "$(curl -sf -H "Authorization: Bearer $OP" "http://$cpi/v1/status" | /usr/bin/python3 -c \
    'import json,sys; print([w["cpuMilli"] for w in json.load(sys.stdin)["workers"] if w["name"]=="n-1"][0])')" != 1 ] || return 1
  bg_start "$TAP_TMP/wk3.log" "$B/dirigent-worker" --port 0 --name k --runtime emulated --emulatedNodes 3 \
    --fnBinary "$FN" --authTokenFile "$KEY" --controlPlaneAddress "$cpi" --heartbeatInterval 300ms \
    --dataDir "$TAP_TMP/wk3/data" --runDir "$TAP_TMP/wk3/run"
  local i m
  for i in $(seq 1 100); do
    m=$(curl -sf -H "Authorization: Bearer $OP" "http://$cpi/metrics")
    [ "$(sed -n 's/^dg_cp_worker_beats_total{via="siblings"} //p' <<<"$m")" -ge 4 ] 2>/dev/null && break
    sleep 0.1
  done
  [ "$(sed -n 's/^dg_cp_worker_beats_total{via="siblings"} //p' <<<"$m")" -ge 4 ] ||
    { echo "sibling beats: $(grep beats_total <<<"$m")"; cat "$TAP_TMP/wk3.log"; return 1; }
  ! grep -q 'refused our credential\|sibling beat' "$TAP_TMP/wk3.log" &&
    curl -sf -H "Authorization: Bearer $OP" "http://$cpi/v1/status" | /usr/bin/python3 -c \
      'import json,sys; w={w["name"]: w["schedulable"] for w in json.load(sys.stdin)["workers"]}; sys.exit(not all(w.get(n) for n in ("k-0","k-1","k-2")))'
}
check "a sibling beat speaks only for its sender's siblings (one process): n-0 cannot beat for n-1; a keyed 3-node worker's nodes beat that way" t_sibling_beat

# ---- dirigent up: the key and the operator token in the state directory ---------------------
UPD=$TAP_TMP/updir
t_up() {
  mkdir -p "$UPD"
  (cd "$UPD" && exec "$D" up --runtime process --port-base 28080) >"$TAP_TMP/up.log" 2>&1 &
  UP_PID=$!
  TAP_PIDS+=("$UP_PID")
  wait_for_log "$TAP_TMP/up.log" "^ready: curl" 60 || { tail -n 5 "$UPD"/data/local/logs/*.log; return 1; }
  [ "$(stat -c %a "$UPD/data/local/cluster.key")" = 600 ] && [ "$(stat -c %a "$UPD/data/local/operator.token")" = 600 ] || return 1
  grep -q 'authTokenFile' /proc/"$(cat "$UPD/data/local/pids/cp.pid")"/cmdline || return 1
  # the internal API needs it; the CLI run where the state directory is finds it
  [ "$(as - http://127.0.0.1:29090/v1/status)" = 401 ] || return 1
  (cd "$UPD" && "$D" --cp 127.0.0.1:29091 function deploy mine --image "$FN") >"$TAP_TMP/cli.out" 2>&1 ||
    { cat "$TAP_TMP/cli.out"; return 1; }
  grep -q 'audit: who=operator.admin .* register function mine' "$UPD/data/local/logs/cp.log" || return 1
  (cd "$UPD" && "$D" --cp 127.0.0.1:29091 --dp 127.0.0.1:28080 invoke hello) | grep -q '"Function"' || return 1
  # elsewhere, a wrong token is refused with the CP's message
  DIRIGENT_TOKEN=$OTHER_OP "$D" --cp 127.0.0.1:29091 function list >"$TAP_TMP/cli.out" 2>&1 && return 1
  grep -q "bad credential signature" "$TAP_TMP/cli.out"
}
check "dirigent up: cluster.key and operator.token (0600), daemons keyed, the CLI uses the state directory's token" t_up

t_up_stop() {
  kill -INT "$UP_PID" && wait_bounded "$UP_PID"
  grep -q 'dirigent: stopped' "$TAP_TMP/up.log"
}
check "dirigent up stops cleanly" t_up_stop

tap_done
