#!/usr/bin/env bash
# InVitro's other protocols, unchanged, on containers (issue 15 part 4): what InVitro sends
# with InvokeProtocol "http2" (h2c with prior knowledge, every Dirigent config it ships),
# "grpc" (faas.Executor/Execute with :authority = the function's name) and AsyncMode (the id
# as the answer, the result fetched from portProxyRead with the id as the body), emulated
# byte for byte by tests/lib/invitro_h2.py, which also judges every answer as InVitro (Go's
# net/http, grpc-go) does. Straight to the data plane InVitro's registration names (no
# HAProxy in between), on the oci runtime (crun), through two clusters:
#   single  one dirigent-cp (sqlite), one dirigent-dp, one 2-core oci worker
#   ha      Redis, three dirigent-cp replicas (raft), one dirigent-dp, one oci worker; the
#           registrations go to a follower's registration server, as to any replica
# In each: RPS warm (one function, lower bound 1), RPS 100% cold (RpsTarget 5 x
# RpsCooldownSeconds 2 = 10 functions at zero, one invocation each) and trace mode (the
# example trace's 4 functions with BusyLoopOnSandboxStartup, 3 invocations each), for http2
# and grpc; a gRPC call to an unknown function (a gRPC error InVitro can read); then the
# same DP restarted with `async: true` for the three modes in async mode (submissions over
# http2 and http1, as InvokeProtocol says), and an unknown id on the result port.
# And as a user of the README's HA cluster: `dirigent up --cp-replicas 3 --dataplanes 2
# --runtime oci` (Redis, HAProxy; its own --port-base), InVitro registering on HAProxy's
# registration frontend and invoking where the answer says (HAProxy's invocation frontend),
# http2 and grpc, warm and 100% cold; then `up ... --async` again, async warm and cold with the
# results fetched from 127.0.0.1:<base+2> (dp-0's result port) whichever DP ran them.
# Root, crun, skopeo, umoci, redis-server and haproxy needed; otherwise every check is skipped.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/oci.sh"
S=${DG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
CLIENT=$S/tests/lib/invitro_h2.py
PER_CLUSTER=11
UP_CHECKS=6
UP_BASE=21080 # below the ephemeral range; ports 19380..23010 (dirigent up --help)
NCHECKS=$((2 * PER_CLUSTER + UP_CHECKS))

plan $NCHECKS
oci_require $NCHECKS redis-server haproxy

WK_PID=""
UP_PID=""
cleanup_protocols() {
  # `up` stops its daemons (the worker first, which removes its containers) on SIGTERM
  [ -n "$UP_PID" ] && oci_stop "$UP_PID" 600
  oci_stop "${WK_PID:-}" 200
  for p in "${TAP_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for log in "$TAP_TMP"/w-*.log "$TAP_TMP"/up-state/logs/worker.log; do
    [ -e "$log" ] || continue
    oci_names "$log"
    oci_remove "$OCI_RUN" "$OCI_BRIDGE" "$OCI_VETH" "$OCI_CGROUP"
  done
  [ -n "${DG_KEEP_TMP:-}" ] && echo "# kept $TAP_TMP" || rm -rf "$TAP_TMP"
}
trap cleanup_protocols EXIT

oci_image

free_ports() { /usr/bin/python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
[s.bind(("127.0.0.1", 0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"; }

# start_worker LABEL BRIDGE SUBNET CPS: an oci worker of 2 cores (InVitro's functions register
# a tenth of what they use; overcommit 10 as in test_invitro.sh)
start_worker() {
  bg_start "$TAP_TMP/w-$1.log" "$B/dirigent-worker" --port 0 --name "inv-$1" --runtime oci --imageRoots "$TAP_TMP" \
    --controlPlaneAddress "$4" --heartbeatInterval 300ms --runDir "$TAP_TMP/run-$1" --dataDir "$TAP_TMP/data-$1" \
    --bridge "$2" --sandboxSubnet "$3" --netnsPool 8 --readinessTimeout 20s --cpuMilli 2000 --prefetchImages "$IMAGE"
  WK_PID=$BG_PID
  wait_for_log "$TAP_TMP/w-$1.log" "inv-$1: listening on" 30 || { echo "Bail out! the oci worker did not start"; exit 1; }
  answers_as "127.0.0.1:$(port_of "$TAP_TMP/w-$1.log" "inv-$1: listening on")" /health "$WK_PID" ||
    { echo "Bail out! the worker answering is not the one started"; exit 1; }
}

# start_dp LABEL NAME CPS [ARGS...]: a data plane (its proxy DPA; with async on also its
# result port ASYNC, as its log says), listed by the CP with that proxy (a restart under the
# same NAME replaces the old one's address); fails, saying why, when it does not start or is
# not listed
start_dp() {
  local label=$1 name=$2 cps=$3
  shift 3
  bg_start "$TAP_TMP/dp-$label.log" "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --name "$name" \
    --controlPlaneAddress "$cps" --heartbeatInterval 300ms --coldStartTimeout 60s --traceOutputFolder "" "$@"
  DP_PID=$BG_PID
  wait_for_log "$TAP_TMP/dp-$label.log" 'proxy on' || return 1
  DPA=127.0.0.1:$(port_of "$TAP_TMP/dp-$label.log" 'proxy on')
  answers_as "127.0.0.1:$(port_of "$TAP_TMP/dp-$label.log" 'api on')" /health "$DP_PID" || return 1
  ASYNC=""
  if [ $# -gt 0 ]; then # "async results on HOST:PORT" (src/dp/main.c)
    ASYNC=127.0.0.1:$(port_of "$TAP_TMP/dp-$label.log" 'async results on')
    [ "$ASYNC" != 127.0.0.1: ] || { echo "no 'async results on' in the DP's log"; return 1; }
  fi
  wait_json "http://$STATUS/v1/status" "[d[\"proxy\"] for d in j[\"dataplanes\"]] == [\"$DPA\"]" ||
    { echo "the CP does not list $DPA as its one data plane"; return 1; }
}

# spec LABEL PROTO MODE [ASYNC_URL]: InVitro's settings for one run (as test_invitro.sh's,
# smaller), to $TAP_TMP/LABEL-PROTO-MODE.json; function names unique per run
spec() {
  /usr/bin/python3 - "$@" "$CPR" "$IMAGE" "$S/tests/data/invitro-example" >"$TAP_TMP/$1-$2-$3.json" <<'EOF'
import csv, json, random, sys
label, proto, mode = sys.argv[1:4]
rest = sys.argv[4:]
asy = rest.pop(0) if len(rest) == 4 else ""
cp, image, trace = rest
rnd = random.Random(f"{label}{proto}{mode}")
tag = {"http2": "h2", "grpc": "grpc", "http1": "h1"}[proto] + ("a" if asy else "")
def name(prefix, i):  # InVitro: fmt.Sprintf("%s-%d-%d", prefix, i, rand.Int()); the tag keeps runs apart
    return f"{prefix}-{tag}-{i}-{rnd.getrandbits(40)}"
fns, invs = [], []
if mode == "warm":  # CPULimit 1vCPU: 100m; RpsMemoryMB 2048 / 10; RpsRuntimeMs 10
    fns.append(dict(name=name("warm-function", 0), image=image, port=80, protocol="tcp",
                    upper=1024, lower=1, cpu=100, memory=2048 // 10, sweep=True))
    for k in range(10):  # IAT 200 ms (RpsTarget 5); async: half over each InvokeProtocol
        invs.append(dict(at_ms=200 * k, function=0, runtime=10, memory=2048, multiplier=80))
elif mode == "cold":  # RpsColdStartRatioPercentage 100: ceil(RpsTarget x RpsCooldownSeconds) functions
    rps, cooldown = 5, 2
    for i in range(rps * cooldown):
        fns.append(dict(name=name("cold-function", i), image=image, port=80, protocol="tcp",
                        upper=1, lower=0, cpu=100, memory=2048 // 10, sweep=True))
        invs.append(dict(at_ms=int((i % rps) * 1000 / rps) + (i // rps) * 1000, function=i,
                         runtime=10, memory=2048, multiplier=80))
else:  # the example trace, BusyLoopOnSandboxStartup (1250 ms for > 60 MiB)
    meta = {m["HashFunction"]: m for m in json.load(open(trace + "/dirigent.json"))}
    dur = {r["HashFunction"]: float(r["Average"]) for r in csv.DictReader(open(trace + "/durations.csv"))}
    mem = {r["HashFunction"]: r for r in csv.DictReader(open(trace + "/memory.csv"))}
    for i, r in enumerate(csv.DictReader(open(trace + "/invocations.csv"))):
        h = r["HashFunction"]
        fns.append(dict(name=name("trace-func", i), image=image, port=meta[h]["Port"],
                        protocol=meta[h]["Protocol"], upper=meta[h]["ScalingUpperBound"],
                        lower=meta[h]["ScalingLowerBound"], cpu=1000 // 10,
                        memory=int(float(mem[h]["AverageAllocatedMb_pct100"])) // 10, sweep=False,
                        multiplier=meta[h]["IterationMultiplier"], busy_loop_ms=1250))
        for k in range(3):
            invs.append(dict(at_ms=300 * k + 50 * i, function=i, runtime=int(dur[h]),
                             memory=int(float(mem[h]["AverageAllocatedMb_pct50"])),
                             multiplier=meta[h]["IterationMultiplier"]))
out = dict(cp=cp, method="POST", protocol=proto, functions=fns, invocations=invs)
if asy:
    out["async"] = {"url": asy, "wait_s": 90}
    for k, inv in enumerate(invs):
        inv["protocol"] = "http2" if k % 2 == 0 else "http1"
print(json.dumps(out))
EOF
}

# run_mode LABEL PROTO MODE [ASYNC_URL]: every invocation a success as InVitro judges it, and
# each answer as the function gave it: its name, work done, OK; http2: one connection for all
run_mode() {
  spec "$@" || return 1
  local f=$TAP_TMP/$1-$2-$3
  /usr/bin/python3 "$CLIENT" "$f.json" "$f.out.json" || return 1
  /usr/bin/python3 - "$f.out.json" "$2" "${4:+async}" <<'EOF'
import json, sys
rs, proto, asy = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
bad = []
for r in rs:
    if proto == "grpc" and not asy:
        rep = r["reply"]  # FaasReply: InVitro records durationInMicroSec as the actual duration
        if not rep["message"].startswith("OK") or rep["durationInMicroSec"] <= 0 or r["grpc_status"] != 0:
            bad.append(r)
    else:
        resp = r["response"]
        if resp["Function"] != r["function"] or resp["ExecutionTime"] <= 0 or not resp["Status"].startswith("OK"):
            bad.append(r)
        # async: the result says how long the invocation took end to end (at least the work)
        elif asy and (not isinstance(r.get("duration_us"), int) or r["duration_us"] < resp["ExecutionTime"]):
            bad.append(r)
conns = {r["conn"] for r in rs if r.get("protocol") == "http2" and "conn" in r}
if proto == "http2" and not asy and len(conns) != 1:
    print(f"http2: {len(conns)} connections; Go's transport multiplexes on one"); sys.exit(1)
print(bad[:3]); sys.exit(1 if bad else 0)
EOF
}

# grpc_unknown DP: faas.Executor/Execute with :authority naming no function: an HTTP 200 with
# grpc-status NOT_FOUND (5) and a message, which grpc-go hands InVitro as the call's error
grpc_unknown() {
  /usr/bin/python3 - "$1" "$S/tests/lib" <<'EOF'
import sys
sys.path.insert(0, sys.argv[2])
import invitro_h2 as m
try:
    print(m.grpc_invoke(sys.argv[1], {"name": "no-such-function"}, {"runtime": 10, "memory": 128}))
    sys.exit(1)
except m.GrpcError as e:
    print(e, "http", e.http_status)
    sys.exit(0 if e.http_status == 200 and e.code == 5 and e.message else 1)
EOF
}

# async_unknown URL: the result port asked for an id it never gave: 404 with an empty body (what
# InVitro counts as a failed invocation; a body would be read as the function's answer) and the
# reason, naming the id unknown, in X-Dirigent-Error
async_unknown() {
  /usr/bin/python3 - "$1" "$S/tests/lib" <<'EOF'
import sys
sys.path.insert(0, sys.argv[2])
import invitro_h2 as m
st, h, body = m.async_fetch(m.h1.Pool(), sys.argv[1], "00000000-0000-4000-8000-000000000000")
hs = h.items() if hasattr(h, "items") else h
why = " ".join(v.decode() if isinstance(v, bytes) else str(v) for k, v in hs
               if (k.decode() if isinstance(k, bytes) else str(k)).lower() == "x-dirigent-error")
print(st, body[:200], why)
sys.exit(0 if st == 404 and body == b"" and "unknown" in why else 1)
EOF
}

# cluster_checks LABEL CPS: the PER_CLUSTER checks against a cluster whose CP registration
# server is CPR, data plane DP_PID (restarted in async mode half way) and worker WK_PID
cluster_checks() {
  local L=$1 cps=$2
  check "$L: http2 RPS warm: 10 invocations multiplexed on one h2c connection, all succeed" run_mode "$L" http2 warm
  check "$L: http2 RPS 100% cold: 10 functions at zero, one invocation each, all succeed" run_mode "$L" http2 cold
  check "$L: http2 trace mode: the example trace's 4 functions, 12 invocations, all succeed" run_mode "$L" http2 trace
  check "$L: grpc RPS warm: 10 faas.Executor/Execute calls, a FaasReply and grpc-status 0 each" run_mode "$L" grpc warm
  check "$L: grpc RPS 100% cold: 10 functions at zero, one call each, all succeed" run_mode "$L" grpc cold
  check "$L: grpc trace mode: 12 calls, all succeed" run_mode "$L" grpc trace
  check "$L: grpc to an unknown function: HTTP 200, grpc-status NOT_FOUND and a message" grpc_unknown "$DPA"
  # the same data plane, now asynchronous (a DP restart: the CP gives it every function)
  kill -TERM "$DP_PID"
  wait_bounded "$DP_PID" >/dev/null 2>&1
  if ! start_dp "$L-async" "dp-$L" "$cps" --set async=true --portProxyRead 0 >"$TAP_TMP/dp-async.out" 2>&1; then
    async_dp_failed() { echo "the asynchronous data plane did not start:"; cat "$TAP_TMP/dp-async.out"; return 1; }
    for _ in 1 2 3 4; do check "$L: async: a data plane with async: true starts" async_dp_failed; done
    return
  fi
  check "$L: async RPS warm: ids at once over h2c and HTTP/1.1, results with Duration-Microseconds on the result port" run_mode "$L" http2 warm "$ASYNC"
  check "$L: async RPS 100% cold: 10 functions at zero, all results fetched" run_mode "$L" http2 cold "$ASYNC"
  check "$L: async trace mode: 12 invocations, all results fetched" run_mode "$L" http2 trace "$ASYNC"
  check "$L: async: an id never given is answered 404, empty body, X-Dirigent-Error 'unknown'" async_unknown "$ASYNC"
}

stop_cluster() {
  oci_stop "$WK_PID" 200
  WK_PID=""
  for p in "${TAP_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${TAP_PIDS[@]}"; do wait_bounded "$p" >/dev/null 2>&1; done
}

# ---- single: one CP, one DP, one oci worker
bg_start "$TAP_TMP/cp.log" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 \
  --dataDir "$TAP_TMP/cpdata" --heartbeatInterval 300ms --traceOutputFolder ""
wait_for_log "$TAP_TMP/cp.log" 'registration on' || { echo "Bail out! cp did not start"; exit 1; }
CPI=127.0.0.1:$(port_of "$TAP_TMP/cp.log" 'internal api on')
CPR=127.0.0.1:$(port_of "$TAP_TMP/cp.log" 'registration on')
answers_as "$CPI" /v1/status "$BG_PID" || { echo "Bail out! the CP answering is not the one started"; exit 1; }
STATUS=$CPR # where the cluster's status is asked (a follower answers with its own view)
start_dp single dp-single "$CPI" || { echo "Bail out! dp did not start"; exit 1; }
start_worker single dginvp1 100.123.0.0/24 "$CPI"
wait_json "http://$STATUS/v1/status" 'len(j["workers"]) == 1' || { echo "Bail out! the worker did not register"; exit 1; }
cluster_checks single "$CPI"
stop_cluster

# ---- ha: Redis, three CP replicas, one DP, one oci worker
read -r RP A1 A2 A3 G1 G2 G3 F1 F2 F3 <<<"$(free_ports 10)"
(umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TAP_TMP/redis.pass" &&
  printf 'requirepass %s\n' "$(cat "$TAP_TMP/redis.pass")" >"$TAP_TMP/redis.conf")
bg_start "$TAP_TMP/redis.log" redis-server "$TAP_TMP/redis.conf" --port "$RP" --bind 127.0.0.1 --dir "$TAP_TMP" --save ""
for _ in $(seq 1 100); do REDISCLI_AUTH=$(cat "$TAP_TMP/redis.pass") redis-cli -p "$RP" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
API=("127.0.0.1:$A1" "127.0.0.1:$A2" "127.0.0.1:$A3")
REGS=("127.0.0.1:$G1" "127.0.0.1:$G2" "127.0.0.1:$G3")
ALL="${API[0]},${API[1]},${API[2]}"
for i in 1 2 3; do
  bg_start "$TAP_TMP/cp$i.log" "$B/dirigent-cp" --port "${API[$((i - 1))]##*:}" \
    --registrationServer "${REGS[$((i - 1))]}" --persistence redis --redis.address "127.0.0.1:$RP" \
    --redis.passwordFile "$TAP_TMP/redis.pass" --replicas "$ALL" \
    --raftAddresses "127.0.0.1:$F1,127.0.0.1:$F2,127.0.0.1:$F3" --replicaId "$i" --dataDir "$TAP_TMP/cp$i" \
    --heartbeatInterval 300ms --traceOutputFolder ""
done
LEADER=""
for _ in $(seq 1 200); do
  for i in 1 2 3; do
    curl -s -m 1 "http://${API[$((i - 1))]}/v1/status" | grep -q '"role": *"leader"' && LEADER=$i
  done
  [ -n "$LEADER" ] && break
  sleep 0.05
done
[ -n "$LEADER" ] || { echo "Bail out! no leader among the three replicas"; exit 1; }
# InVitro registers with any replica's registration server: a follower's (it forwards)
CPR=${REGS[$((LEADER % 3))]}
STATUS=${REGS[$((LEADER - 1))]}
start_dp ha dp-ha "$ALL" || { echo "Bail out! dp did not start"; exit 1; }
start_worker ha dginvp2 100.124.0.0/24 "$ALL"
wait_json "http://$STATUS/v1/status" 'len(j["workers"]) == 1' || { echo "Bail out! the worker did not register with the HA cluster"; exit 1; }
cluster_checks ha "$ALL"
stop_cluster

# ---- up-ha: the README's HA cluster, InVitro through HAProxy
t_up_ready() { # t_up_ready [--async]
  bg_start "$TAP_TMP/up.log" "$B/dirigent" up --runtime oci --cp-replicas 3 --dataplanes 2 \
    --port-base "$UP_BASE" --state-dir "$TAP_TMP/up-state" "$@"
  UP_PID=$BG_PID
  wait_for_log "$TAP_TMP/up.log" "^ready: .*registrations: http://127.0.0.1:$((UP_BASE + 1012))/registerService" 120 ||
    { tail -n 5 "$TAP_TMP"/up-state/logs/*.log; return 1; }
}
up_failed() { cat "$TAP_TMP/up-ready.out"; return 1; }
if t_up_ready >"$TAP_TMP/up-ready.out" 2>&1; then
  CPR=127.0.0.1:$((UP_BASE + 1012))
  IMAGE=oci:$B/images/dirigent-fn:latest # up's image: its worker takes images below the build's images/
  check "up-ha: http2 RPS warm through HAProxy (registered on :$((UP_BASE + 1012)), invoked where the answer says)" run_mode up-ha http2 warm
  check "up-ha: http2 RPS 100% cold through HAProxy: 10 functions at zero, all succeed" run_mode up-ha http2 cold
  check "up-ha: grpc RPS warm through HAProxy: a FaasReply and grpc-status 0 each" run_mode up-ha grpc warm
  check "up-ha: grpc RPS 100% cold through HAProxy: 10 functions at zero, all succeed" run_mode up-ha grpc cold
else
  for _ in 1 2 3 4; do
    check "up-ha: dirigent up --cp-replicas 3 --dataplanes 2 --runtime oci becomes ready" up_failed
  done
fi
oci_stop "$UP_PID" 600
UP_PID=""
rm -f "$TAP_TMP/up.log"
if t_up_ready --async >"$TAP_TMP/up-ready.out" 2>&1; then
  check "up-ha --async: async RPS warm through HAProxy, results from :$((UP_BASE + 2))" run_mode up-ha http2 warm "127.0.0.1:$((UP_BASE + 2))"
  check "up-ha --async: async RPS 100% cold through HAProxy, all results fetched" run_mode up-ha http2 cold "127.0.0.1:$((UP_BASE + 2))"
else
  for _ in 1 2; do
    check "up-ha: dirigent up --cp-replicas 3 --dataplanes 2 --runtime oci --async becomes ready" up_failed
  done
fi
oci_stop "$UP_PID" 600
UP_PID=""

tap_done
