#!/usr/bin/env bash
# Asynchronous invocations at scale (review of issue 15 §3): the CP's loop never walks all its
# records at once. A store prepared with 6,000 results about to expire, 100 that do not, and
# 1,500 unfinished requests of data plane "dps" is read back by dirigent-cp (sqlite): the
# expired results are deleted a bounded number per timer tick (GC_MAX_PER_TICK, 2,000), not in
# one go; a restarted "dps" gets its 1,500 requests in pages of at most 1,000 records. A claim
# whose answer is lost (a proxy between DP and CP drops it after the CP handed the records; the
# client then sends it again) still brings every request: a second CP's store holds 1,200 of
# data plane "dpl", whose first page's answer is dropped.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)

plan 9
# gen.py FILE DONE-SOON DONE-LATER PENDING DATAPLANE: records in a CP's sqlite store
cat >"$TAP_TMP/gen.py" <<'PY'
import base64, json, sqlite3, sys, time, uuid
db = sqlite3.connect(sys.argv[1])
db.execute("CREATE TABLE IF NOT EXISTS objects (kind TEXT NOT NULL, key TEXT NOT NULL, "
           "value TEXT NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID")
soon, later, npending, dp = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
now = int(time.time() * 1000)
body = base64.b64encode(b'{"Status":"OK","Function":"hello","ExecutionTime":1}').decode()
def done(expires):
    i = str(uuid.uuid4())
    return i, {"state": "done", "expiresMs": expires, "result": {"id": i, "status": 200,
               "contentType": "application/json", "body": body, "durationUs": 5, "tries": 0}}
def pending():
    i = str(uuid.uuid4())
    return i, {"state": "pending", "request": {"id": i, "dataplane": dp, "function": "hello",
               "method": "POST", "url": "/", "headers": [], "body": "", "acceptedMs": now}}
rows = [done(now + 3000) for _ in range(soon)] + [done(now + 3600000) for _ in range(later)] + \
       [pending() for _ in range(npending)]
db.executemany("INSERT INTO objects VALUES ('async', ?, ?)",
               [(i, json.dumps(v, separators=(",", ":"))) for i, v in rows])
db.commit()
PY
mkdir -p "$TAP_TMP/cpdata" "$TAP_TMP/cp2data"
/usr/bin/python3 "$TAP_TMP/gen.py" "$TAP_TMP/cpdata/cp.sqlite" 6000 100 1500 dps &&
  /usr/bin/python3 "$TAP_TMP/gen.py" "$TAP_TMP/cp2data/cp.sqlite" 0 0 1200 dpl ||
  { echo "Bail out! store not prepared"; exit 1; }

start_cp() { # start_cp LOG DATADIR: sets CPI
  bg_start "$1" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 \
    --dataDir "$2" --heartbeatInterval 300ms --traceOutputFolder ""
  wait_for_log "$1" 'registration on' || return 1
  CPI=127.0.0.1:$(port_of "$1" 'internal api on')
}
start_dp() { # start_dp LOG NAME CP
  bg_start "$1" "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --name "$2" --async \
    --portProxyRead 0 --controlPlaneAddress "$3" --heartbeatInterval 300ms --traceOutputFolder ""
}
start_cp "$TAP_TMP/cp.log" "$TAP_TMP/cpdata" || { echo "Bail out! cp did not start"; exit 1; }

expired_total() {
  grep -oE '[0-9]+ results expired' "$TAP_TMP/cp.log" | awk '{s += $1} END {print s + 0}'
}
t_expiry() {
  poll_until 400 eval '[ "$(expired_total)" = 6000 ]' || return 1
  grep -E 'results expired' "$TAP_TMP/cp.log"
  # each tick deleted at most 2,000 (the loop is not held for all 6,000)
  ! grep -oE '[0-9]+ results expired' "$TAP_TMP/cp.log" | awk '$1 > 2000 {bad = 1} END {exit !bad}' || return 1
  /usr/bin/python3 - "$TAP_TMP/cpdata/cp.sqlite" <<'PY'
import sqlite3, sys
n = sqlite3.connect(sys.argv[1]).execute("select count(*) from objects where kind='async'").fetchone()[0]
assert n == 1600, f"{n} records stored, expected 1600 (100 results and 1500 requests)"
PY
}
check "6,000 expired results are deleted from the store a bounded number per tick; the 1,600 others stay" t_expiry

t_claim_pages() {
  start_dp "$TAP_TMP/dp.log" dps "$CPI"
  wait_for_log "$TAP_TMP/dp.log" 'async: 1000 unfinished asynchronous requests taken over, more to come' 20 || return 1
  wait_for_log "$TAP_TMP/dp.log" 'async: 500 unfinished asynchronous requests taken over$' 20 || return 1
  grep 'taken over' "$TAP_TMP/dp.log"
}
check "a restarted data plane gets its 1,500 unfinished requests in pages of at most 1,000" t_claim_pages

t_fetch() {
  local r id code
  r=http://127.0.0.1:$(port_of "$TAP_TMP/dp.log" 'async results on')
  id=$(/usr/bin/python3 -c '
import json, sqlite3, sys
for k, v in sqlite3.connect(sys.argv[1]).execute("select key, value from objects where kind=\"async\""):
    if json.loads(v)["state"] == "done":
        print(k); break' "$TAP_TMP/cpdata/cp.sqlite")
  code=$(curl -s -o "$TAP_TMP/f.out" -w '%{http_code}' -XGET --data-binary "$id" "$r/")
  [ "$code" = 200 ] && grep -q '"Function":"hello"' "$TAP_TMP/f.out"
}
check "a result that did not expire is still fetched" t_fetch

t_submit_again() {
  # a DP's submission sent again (its HTTP client resends a request whose connection closed
  # after the CP read it; or the next replica is asked): 200, stored once; another DP's: 409
  local body='{"id":"0badc0de-0000-4000-8000-000000000001","dataplane":"dps","function":"hello","method":"POST","url":"/","headers":[],"body":"","acceptedMs":1}' c1 c2 c3
  c1=$(curl -s -o /dev/null -w '%{http_code}' -XPOST "http://$CPI/v1/async" -d "$body")
  poll_until 100 eval '[ "$(curl -s -o /dev/null -w "%{http_code}" "http://$CPI/v1/async/0badc0de-0000-4000-8000-000000000001")" = 204 ]' || return 1
  c2=$(curl -s -o "$TAP_TMP/s.out" -w '%{http_code}' -XPOST "http://$CPI/v1/async" -d "$body")
  c3=$(curl -s -o "$TAP_TMP/s3.out" -w '%{http_code}' -XPOST "http://$CPI/v1/async" -d "${body/\"dps\"/\"dpother\"}")
  echo "first $c1, again $c2 $(cat "$TAP_TMP/s.out"), another DP $c3 $(cat "$TAP_TMP/s3.out")"
  [ "$c1" = 200 ] && [ "$c2" = 200 ] && [ "$c3" = 409 ]
}
check "a submission sent again by its data plane is 200 (stored once), by another 409" t_submit_again

# a proxy to the CP that forwards everything but closes the connection instead of passing on
# the first answer to a claim (the CP has handed its records by then)
cat >"$TAP_TMP/lossy.py" <<'PY'
import http.client, http.server, sys
cp, drop = sys.argv[1], sys.argv[2]
dropped = [False]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def fwd(self):
        n = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(n) if n else None
        c = http.client.HTTPConnection(cp, timeout=10)
        hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        c.request(self.command, self.path, body, hdrs)
        r = c.getresponse()
        data = r.read()
        if self.path == drop and not dropped[0]:
            dropped[0] = True
            print("dropped the answer to " + drop, flush=True)
            self.close_connection = True
            return
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
print("lossy proxy on 127.0.0.1:%d" % s.server_address[1], flush=True)
s.serve_forever()
PY
taken_total() {
  grep -oE '[0-9]+ unfinished asynchronous requests taken over' "$1" | awk '{s += $1} END {print s + 0}'
}
t_claim_lost() {
  start_cp "$TAP_TMP/cp2.log" "$TAP_TMP/cp2data" || return 1
  bg_start "$TAP_TMP/lossy.log" /usr/bin/python3 "$TAP_TMP/lossy.py" "$CPI" /v1/async-claims
  wait_for_log "$TAP_TMP/lossy.log" 'lossy proxy on' || return 1
  start_dp "$TAP_TMP/dpl.log" dpl "127.0.0.1:$(port_of "$TAP_TMP/lossy.log" 'lossy proxy on')"
  wait_for_log "$TAP_TMP/lossy.log" "dropped the answer to /v1/async-claims" 20 || return 1
  poll_until 400 eval '[ "$(taken_total "$TAP_TMP/dpl.log")" -ge 1200 ]' || return 1
  grep -E 'claiming|taken over' "$TAP_TMP/dpl.log"
  [ "$(taken_total "$TAP_TMP/dpl.log")" = 1200 ]
}
check "a claim whose first page's answer was lost: the data plane still gets all its 1,200 requests" t_claim_lost

t_submit_lost() {
  # the CP stores a submission and its answer is lost: the DP sends it again, and its client
  # gets the id (not a 500 for the CP's 409 "the id is taken")
  mkdir -p "$TAP_TMP/cp4data"
  bg_start "$TAP_TMP/cp4.log" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 \
    --dataDir "$TAP_TMP/cp4data" --heartbeatInterval 300ms --traceOutputFolder ""
  wait_for_log "$TAP_TMP/cp4.log" 'registration on' || return 1
  local cpi=127.0.0.1:$(port_of "$TAP_TMP/cp4.log" 'internal api on')
  local reg=http://127.0.0.1:$(port_of "$TAP_TMP/cp4.log" 'registration on') p code
  bg_start "$TAP_TMP/lossy2.log" /usr/bin/python3 "$TAP_TMP/lossy.py" "$cpi" /v1/async
  wait_for_log "$TAP_TMP/lossy2.log" 'lossy proxy on' || return 1
  start_dp "$TAP_TMP/dpk.log" dpk "127.0.0.1:$(port_of "$TAP_TMP/lossy2.log" 'lossy proxy on')"
  wait_for_log "$TAP_TMP/dpk.log" 'proxy on' || return 1
  p=http://127.0.0.1:$(port_of "$TAP_TMP/dpk.log" 'proxy on')
  code=$(curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$reg/registerService" \
    -d "name=fk&image=$B/dirigent-fn&port_forwarding=80&port_forwarding=tcp&scaling_upper_bound=0")
  [ "$code" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  local api=http://127.0.0.1:$(port_of "$TAP_TMP/dpk.log" 'api on')
  poll_until 200 bash -c "curl -s '$api/v1/functions' | grep -q '\"fk\"'" || return 1
  code=$(curl -s -o "$TAP_TMP/k.out" -w '%{http_code}' -XPOST -H 'Host: fk' -d one "$p/")
  grep -q "dropped the answer to /v1/async" "$TAP_TMP/lossy2.log" || { echo "no answer dropped"; return 1; }
  echo "$code $(cat "$TAP_TMP/k.out")"
  [ "$code" = 200 ] && grep -qE '^[0-9a-f-]{36}$' "$TAP_TMP/k.out"
}
check "a submission whose stored answer was lost: the DP sends it again, the client gets its id" t_submit_lost

t_orphans_bounded() {
  # 30 unfinished requests of a data plane that is gone; a DP with asyncMaxPending 10 takes
  # over 10 of them (the rest stay for later, or for another DP), not all
  mkdir -p "$TAP_TMP/cp5data"
  /usr/bin/python3 "$TAP_TMP/gen.py" "$TAP_TMP/cp5data/cp.sqlite" 0 0 30 dpdead || return 1
  bg_start "$TAP_TMP/cp5.log" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 \
    --dataDir "$TAP_TMP/cp5data" --heartbeatInterval 300ms --traceOutputFolder ""
  wait_for_log "$TAP_TMP/cp5.log" 'registration on' || return 1
  bg_start "$TAP_TMP/dpq.log" "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --name dpq --async \
    --portProxyRead 0 --controlPlaneAddress "127.0.0.1:$(port_of "$TAP_TMP/cp5.log" 'internal api on')" \
    --heartbeatInterval 300ms --traceOutputFolder "" --asyncMaxPending 10
  poll_until 600 eval '[ "$(taken_total "$TAP_TMP/dpq.log")" -ge 10 ]' || return 1
  grep 'taken over' "$TAP_TMP/dpq.log"
  [ "$(taken_total "$TAP_TMP/dpq.log")" = 10 ] || return 1
  [ "$(grep -c 'of lost data plane dpdead goes to dpq' "$TAP_TMP/cp5.log")" = 10 ]
}
check "a DP with asyncMaxPending 10 takes over 10 of a lost DP's 30 requests, not all" t_orphans_bounded

t_ttl_invitro() {
  # InVitro fetches the results after ExperimentDuration + AsyncWaitToCollectMin (its shipped
  # config_dirigent_trace.json: 30 + 1 minutes), in batches: the default keeps them longer
  local ttl
  ttl=$("$B/dirigent-cp" --print-config | sed -n 's/^asyncResultTtl: //p')
  echo "asyncResultTtl: $ttl"
  /usr/bin/python3 - "$ttl" <<'PY'
import re, sys
m = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
secs = sum(float(n) * m[u] for n, u in re.findall(r"([0-9.]+)(ms|s|m|h)", sys.argv[1]))
assert secs >= 45 * 60, f"asyncResultTtl {sys.argv[1]}: InVitro's results (collected after 31 min) expire first"
PY
}
t_max_bytes() {
  # anyone who reaches a DP's proxy port may submit; every accepted body is kept in the CP's
  # memory until its result expires: asyncMaxBytes bounds them together (here 1 MiB)
  mkdir -p "$TAP_TMP/cp3data"
  bg_start "$TAP_TMP/cp3.log" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 \
    --dataDir "$TAP_TMP/cp3data" --heartbeatInterval 300ms --traceOutputFolder "" --asyncMaxBytes 1MiB
  wait_for_log "$TAP_TMP/cp3.log" 'registration on' || return 1
  local cpi=127.0.0.1:$(port_of "$TAP_TMP/cp3.log" 'internal api on')
  local reg=http://127.0.0.1:$(port_of "$TAP_TMP/cp3.log" 'registration on') p code
  start_dp "$TAP_TMP/dpm.log" dpm "$cpi"
  wait_for_log "$TAP_TMP/dpm.log" 'proxy on' || return 1
  p=http://127.0.0.1:$(port_of "$TAP_TMP/dpm.log" 'proxy on')
  code=$(curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$reg/registerService" \
    -d "name=big&image=$B/dirigent-fn&port_forwarding=80&port_forwarding=tcp&scaling_upper_bound=0")
  [ "$code" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  head -c 409600 /dev/zero | tr '\0' q >"$TAP_TMP/400k"
  poll_until 200 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' -XPOST -H 'Host: big' --data-binary @'$TAP_TMP/400k' '$p/')\" = 200 ]" || return 1
  code=$(curl -s -o "$TAP_TMP/m.out" -w '%{http_code}' -XPOST -H 'Host: big' --data-binary @"$TAP_TMP/400k" "$p/")
  cat "$TAP_TMP/m.out"
  [ "$code" = 429 ] && grep -q 'asyncMaxBytes' "$TAP_TMP/m.out" || return 1
  # a small one still fits
  code=$(curl -s -o "$TAP_TMP/m.out" -w '%{http_code}' -XPOST -H 'Host: big' -d small "$p/")
  [ "$code" = 200 ]
}
check "asyncMaxBytes (1 MiB): a second 400 KiB submission is refused with 429 naming it, a small one fits" t_max_bytes

check "the default asyncResultTtl outlives InVitro's shipped experiment (30 min) and wait (1 min) before it collects" t_ttl_invitro
tap_done
