#!/usr/bin/env bash
# Asynchronous invocations at scale (review of issue 15 §3): the CP's loop never walks all its
# records at once. A store prepared with 6,000 results about to expire, 100 that do not, and
# 1,500 unfinished requests of data plane "dps" is read back by dirigent-cp (sqlite): the
# expired results are deleted a bounded number per timer tick (GC_MAX_PER_TICK, 2,000), not in
# one go; a restarted "dps" gets its 1,500 requests in pages of at most 1,000 records.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)

plan 3
mkdir -p "$TAP_TMP/cpdata"
/usr/bin/python3 - "$TAP_TMP/cpdata/cp.sqlite" <<'PY' || { echo "Bail out! store not prepared"; exit 1; }
import base64, json, sqlite3, sys, time, uuid
db = sqlite3.connect(sys.argv[1])
db.execute("CREATE TABLE IF NOT EXISTS objects (kind TEXT NOT NULL, key TEXT NOT NULL, "
           "value TEXT NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID")
now = int(time.time() * 1000)
body = base64.b64encode(b'{"Status":"OK","Function":"hello","ExecutionTime":1}').decode()
def done(expires):
    i = str(uuid.uuid4())
    return i, {"state": "done", "expiresMs": expires, "result": {"id": i, "status": 200,
               "contentType": "application/json", "body": body, "durationUs": 5, "tries": 0}}
def pending():
    i = str(uuid.uuid4())
    return i, {"state": "pending", "request": {"id": i, "dataplane": "dps", "function": "hello",
               "method": "POST", "url": "/", "headers": [], "body": "", "acceptedMs": now}}
rows = [done(now + 3000) for _ in range(6000)] + [done(now + 3600000) for _ in range(100)] + \
       [pending() for _ in range(1500)]
db.executemany("INSERT INTO objects VALUES ('async', ?, ?)",
               [(i, json.dumps(v, separators=(",", ":"))) for i, v in rows])
db.commit()
PY

bg_start "$TAP_TMP/cp.log" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 \
  --dataDir "$TAP_TMP/cpdata" --heartbeatInterval 300ms --traceOutputFolder ""
wait_for_log "$TAP_TMP/cp.log" 'registration on' || { echo "Bail out! cp did not start"; exit 1; }
CPI=127.0.0.1:$(port_of "$TAP_TMP/cp.log" 'internal api on')

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
  bg_start "$TAP_TMP/dp.log" "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --name dps --async \
    --portProxyRead 0 --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --traceOutputFolder ""
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
tap_done
