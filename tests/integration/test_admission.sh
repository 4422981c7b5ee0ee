#!/usr/bin/env bash
# Admission control in the data plane (issue 16, docs/decisions.md "Admission control"): a
# tiny cluster (dirigent-cp that creates at most 20 sandboxes per second on its one emulated
# worker, dirigent-dp with admissionMaxWait 50ms and coldStartTimeout 10s) flooded with cold
# starts at 5x what it can serve (`dirigent load rps --cold`). What cannot be served in time
# is refused at arrival: 503 with Retry-After and X-Dirigent-Error (gRPC: UNAVAILABLE with a
# retry-after hint), well before the deadline; what is admitted succeeds; nothing waits until
# its deadline; the DP counts the refusals in /metrics; no daemon crashes. Ephemeral ports.
# (The CP retries rate-limited creates on its tick, so this cluster serves in bursts and an
# admitted request may wait up to about a second: the test checks correctness, not latency;
# bench/overload.sh measures that.)
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
D=$B/dirigent
py() { /usr/bin/python3 - "$@"; }

plan 7

bg_start "$TAP_TMP/cp.log" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 \
  --dataDir "$TAP_TMP/cpdata" --heartbeatInterval 300ms --traceOutputFolder "" \
  --maxCreatesPerWorkerPerSecond 20 --maxSandboxesPerWorker 0 --maxSandboxes 0
CP_PID=$BG_PID
wait_for_log "$TAP_TMP/cp.log" 'registration on' || { echo "Bail out! cp did not start"; exit 1; }
CPI=127.0.0.1:$(port_of "$TAP_TMP/cp.log" 'internal api on')
REGA=127.0.0.1:$(port_of "$TAP_TMP/cp.log" 'registration on')
bg_start "$TAP_TMP/dp.log" "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --name dp1 \
  --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --coldStartTimeout 10s \
  --admissionMaxWait 50ms --traceOutputFolder ""
DP_PID=$BG_PID
wait_for_log "$TAP_TMP/dp.log" 'proxy on' || { echo "Bail out! dp did not start"; exit 1; }
DPA=127.0.0.1:$(port_of "$TAP_TMP/dp.log" 'proxy on')
DPI=127.0.0.1:$(port_of "$TAP_TMP/dp.log" 'api on')
bg_start "$TAP_TMP/wk.log" "$B/dirigent-worker" --port 0 --name emu --controlPlaneAddress "$CPI" \
  --heartbeatInterval 300ms --runtime emulated --emulatedCreateDelayMs 0
WK_PID=$BG_PID
wait_for_log "$TAP_TMP/wk.log" 'listening on' || { echo "Bail out! worker did not start"; exit 1; }
wait_json "http://$REGA/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1' ||
  { echo "Bail out! not registered"; exit 1; }

# probe functions for the header checks, registered before the flood (cold, one request each)
for i in $(seq 0 39); do
  curl -sf -o /dev/null -XPOST "http://$REGA/registerService" \
    -d "name=probe-$i&image=emulated&port_forwarding=80&port_forwarding=tcp&cold_start_sweep=true" ||
    { echo "Bail out! registration failed"; exit 1; }
done

# the flood: 100 cold starts/s for 5 s (500 functions, each called once) against 20/s
"$D" --json --cp "$REGA" --dp "$DPA" load rps --cold --rate 100 --duration 5 --cooldown 5 \
  --timeout 30 --csv "$TAP_TMP/flood.csv" >"$TAP_TMP/flood.json" 2>"$TAP_TMP/flood.err" &
LOAD_PID=$!
TAP_PIDS+=("$LOAD_PID")

# while it runs: cold calls of the probes until one is refused (HTTP/1.1), then one over gRPC
probe_http=0 probe_grpc=0
for i in $(seq 0 39); do
  kill -0 "$LOAD_PID" 2>/dev/null || break
  if [ $probe_http = 0 ]; then
    code=$(curl -s -m 20 -D "$TAP_TMP/probe.h" -o "$TAP_TMP/probe.b" -w '%{http_code}' -H "Host: probe-$i" "http://$DPA/")
    [ "$code" = 503 ] && grep -qi '^x-dirigent-error: overloaded' "$TAP_TMP/probe.h" && probe_http=1
  elif [ $probe_grpc = 0 ]; then
    curl -s -m 20 --http2-prior-knowledge -D "$TAP_TMP/grpc.h" -o /dev/null -H "Host: probe-$i" \
      -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @/dev/null \
      "http://$DPA/faas.Executor/Execute"
    grep -qi '^grpc-status: 14' "$TAP_TMP/grpc.h" && grep -qi '^grpc-message: .*overloaded' "$TAP_TMP/grpc.h" &&
      probe_grpc=1
  else
    break
  fi
  sleep 0.05
done
WAIT_TRIES=1200 wait_bounded "$LOAD_PID"
sed "s/^/# /" "$TAP_TMP/flood.json"

t_http() {
  [ $probe_http = 1 ] || { echo "no refusal seen by a probe"; cat "$TAP_TMP/probe.h" "$TAP_TMP/probe.b"; return 1; }
  cat "$TAP_TMP/probe.h" "$TAP_TMP/probe.b"
  grep -qiE '^retry-after: [1-9][0-9]*'$'\r''?$' "$TAP_TMP/probe.h" &&
    grep -qE "^function 'probe-[0-9]+': overloaded: [0-9]+ cold start\(s\) queued ahead, about [0-9]+ ms expected wait at [0-9]+/s, over the [0-9]+ ms admitted; retry after [0-9]+ s$" "$TAP_TMP/probe.b"
}
check "a refused request: 503, Retry-After in seconds, X-Dirigent-Error: overloaded, the reason in the body" t_http

t_grpc() {
  [ $probe_grpc = 1 ] || { echo "no gRPC refusal seen"; cat "$TAP_TMP/grpc.h"; return 1; }
  cat "$TAP_TMP/grpc.h"
  grep -qi '^HTTP/2 200' "$TAP_TMP/grpc.h" && grep -qiE '^retry-after: [1-9]' "$TAP_TMP/grpc.h"
}
check "a refused gRPC call: trailers-only UNAVAILABLE (14) with the reason and a retry-after hint" t_grpc

t_refused_fast() {
  py "$TAP_TMP/flood.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 500, len(rows)
r503 = [float(r["response_ms"]) for r in rows if r["status"] == "503"]
ok = [r for r in rows if r["status"] == "200"]
print(f"{len(ok)} ok, {len(r503)} refused; slowest refusal {max(r503 or [0]):.1f} ms")
assert len(r503) >= 100, "the flood at 5x capacity was not refused"
# each refusal came at arrival, not at the 10 s deadline after waiting in the queue
assert max(r503) < 10000, max(r503)
EOF
}
check "at 5x capacity most cold starts are refused, each before its 10 s deadline" t_refused_fast

t_admitted_ok() {
  py "$TAP_TMP/flood.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
bad = [r for r in rows if r["status"] not in ("200", "503")]
assert not bad, bad[:5]
ok = [r for r in rows if r["status"] == "200"]
assert len(ok) >= 40, len(ok)  # 20/s for 5 s, less what started late
assert all(r["cold"] == "cold" for r in ok)
EOF
}
check "every admitted request succeeded (cold), none failed otherwise" t_admitted_ok

t_metrics() {
  local m n refused
  m=$(curl -sf "http://$DPI/metrics") || return 1
  refused=$(awk '/^dg_dp_refused_total / {print $2}' <<<"$m")
  n=$(grep -c ',503,' "$TAP_TMP/flood.csv")
  echo "dg_dp_refused_total $refused, load's 503s $n"
  # the load's refusals and the probes' (one HTTP, one gRPC at least)
  [ -n "$refused" ] && [ "$refused" -ge $((n + 2)) ] && [ "$refused" -le $((n + 40)) ]
}
check "the DP counts its refusals (dg_dp_refused_total)" t_metrics

t_alive() {
  for p in $CP_PID $DP_PID $WK_PID; do kill -0 "$p" || return 1; done
  curl -sf "http://$DPI/health" >/dev/null && ! grep -qiE 'assert|sanitizer|segv' "$TAP_TMP/dp.log" "$TAP_TMP/cp.log" "$TAP_TMP/wk.log"
}
check "no daemon crashed" t_alive

t_after() { # the backlog gone, a new cold start is admitted and served
  curl -sf -o /dev/null -XPOST "http://$REGA/registerService" \
    -d "name=after&image=emulated&port_forwarding=80&port_forwarding=tcp" || return 1
  sleep 2.5 # the estimator's two 1 s windows pass
  [ "$(curl -s -m 20 -o /dev/null -w '%{http_code}' -H 'Host: after' "http://$DPA/")" = 200 ]
}
check "after the flood a cold start is admitted and served" t_after

tap_done
