#!/usr/bin/env bash
# An InVitro user's HTTP/1 workload, unchanged, on containers (issue 12 part 4): a cluster
# of dirigent-cp, dirigent-dp and one dirigent-worker with the oci runtime (crun), advertised
# as a 2-core worker and otherwise at its defaults (CPU limit policy none, overcommit 10,
# floors 100m / 32 MiB). tests/integration/invitro_http1.py sends exactly what InVitro's
# Dirigent deployer and HTTP/1 invoker send (form fields in url.Values.Encode order, Go's
# canonical header spellings, POST as on main and GET as on the rps_mode branch, 0 values)
# and judges every answer as InVitro does (200, a body, JSON into its FunctionResponse).
# Modes, with InVitro's defaults where it has them:
#   RPS warm      one function (upper bound 1024, lower 1), runtime 10 ms, RpsMemoryMB 2048
#                 (registered: 100m, 204 MiB), multiplier 80; POST and GET
#   RPS 100% cold RpsTarget 5 x RpsCooldownSeconds 5 = 25 functions at zero (upper 1), one
#                 invocation each: more sandboxes than a 2-core worker held before (20)
#   trace         the example trace's 4 functions (tests/data/invitro-example: 100m, a tenth
#                 of each P100 memory, multiplier 80) with BusyLoopOnSandboxStartup, and one
#                 under 10 MiB with a CPULimit InVitro does not map: requested_cpu=0,
#                 requested_memory=0
# Root, crun, skopeo and umoci needed; otherwise every check is skipped.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/oci.sh"
S=${DG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
CLIENT=$S/tests/integration/invitro_http1.py
NCHECKS=7
NAME=inv-w1
BRIDGE=dginv
SUBNET=100.125.0.0/24
RUN=$TAP_TMP/run
DATA=$TAP_TMP/data

plan $NCHECKS
oci_require $NCHECKS

# ---- clean-up on every exit: the worker removes its sandboxes on SIGTERM; what a killed one
# left is removed by hand (containers, mounts, veths, the bridge, the instance's cgroups)
cleanup_invitro() {
  [ -n "${POLL_PID:-}" ] && kill "$POLL_PID" 2>/dev/null
  oci_stop "${WK_PID:-}" 200
  for p in "${TAP_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  oci_names "$TAP_TMP/w1.log"
  oci_remove "$RUN" "$BRIDGE" "$OCI_VETH" "$OCI_CGROUP"
  [ -n "${DG_KEEP_TMP:-}" ] && echo "# kept $TAP_TMP" || rm -rf "$TAP_TMP"
}
trap cleanup_invitro EXIT

# ---- the function image (dirigent-fn), as an OCI layout: no registry needed
oci_image

# ---- the cluster
start_cp_dp --traceOutputFolder ""
CPR=$REGA
# a 2-core worker; everything else at its defaults
bg_start "$TAP_TMP/w1.log" "$B/dirigent-worker" --port 0 --name "$NAME" --runtime oci --imageRoots "$TAP_TMP" \
  --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --runDir "$RUN" --dataDir "$DATA" \
  --bridge "$BRIDGE" --sandboxSubnet "$SUBNET" --netnsPool 8 --readinessTimeout 20s \
  --cpuMilli 2000 --prefetchImages "$IMAGE"
WK_PID=$BG_PID
wait_for_log "$TAP_TMP/w1.log" "$NAME: listening on" 30 || { echo "Bail out! the oci worker did not start"; exit 1; }
WKA=127.0.0.1:$(port_of "$TAP_TMP/w1.log" "$NAME: listening on")
wait_json "http://$CPR/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1' ||
  { echo "Bail out! not registered"; exit 1; }

# the largest number of sandboxes and CPU reserved on the worker while the test runs
( while :; do
    curl -s "http://$CPR/v1/status" 2>/dev/null | /usr/bin/python3 -c \
      'import json,sys; w=json.load(sys.stdin)["workers"][0]; print(w["sandboxes"], w["cpuUsedMilli"])' 2>/dev/null
    sleep 0.2
  done >"$TAP_TMP/usage" ) &
POLL_PID=$!

# spec MODE...: write the spec of one mode (InVitro's settings, see the top) to $TAP_TMP/MODE.json
spec() {
  /usr/bin/python3 - "$1" "$CPR" "$IMAGE" "$S/tests/data/invitro-example" >"$TAP_TMP/$1.json" <<'EOF'
import csv, json, random, sys
mode, cp, image, trace = sys.argv[1:5]
rnd = random.Random(42)  # InVitro's Seed
def name(prefix, i):  # InVitro: fmt.Sprintf("%s-%d-%d", prefix, i, rand.Int())
    return f"{prefix}-{i}-{rnd.getrandbits(62)}"
fns, invs = [], []
if mode == "warm":
    # RpsTarget 1 by default; 5 here to keep the test short. CPULimit 1vCPU: 1000 / 10 m,
    # RpsMemoryMB / 10 MiB (OvercommitmentRatio 10); ColdStartSweep = RpsTarget != 0
    fns.append(dict(name=name("warm-function", 0), image=image, port=80, protocol="tcp",
                    upper=1024, lower=1, cpu=100, memory=2048 // 10, sweep=True))
    for k in range(20):  # IAT 200 ms; the first at once; POST (main) then GET (rps_mode)
        invs.append(dict(at_ms=200 * k, function=0, runtime=10, memory=2048, multiplier=80,
                         method="POST" if k < 10 else "GET"))
elif mode == "cold":
    rps, cooldown = 5, 5
    n = rps * cooldown  # GenerateColdStartFunctions: ceil(rps x cooldown) functions
    iat = 1000 / rps
    for i in range(n):
        fns.append(dict(name=name("cold-function", i), image=image, port=80, protocol="tcp",
                        upper=1, lower=0, cpu=100, memory=2048 // 10, sweep=True))
        at = int((i % rps) * iat) + (i // rps) * 1000  # offset within batch + between functions
        invs.append(dict(at_ms=at, function=i, runtime=10, memory=2048, multiplier=80,
                         method="GET" if i % 2 else "POST"))
else:  # trace
    meta = {m["HashFunction"]: m for m in json.load(open(trace + "/dirigent.json"))}
    dur = {r["HashFunction"]: float(r["Average"]) for r in csv.DictReader(open(trace + "/durations.csv"))}
    mem = {r["HashFunction"]: r for r in csv.DictReader(open(trace + "/memory.csv"))}
    for i, r in enumerate(csv.DictReader(open(trace + "/invocations.csv"))):
        h = r["HashFunction"]
        p100 = int(float(mem[h]["AverageAllocatedMb_pct100"]))
        fns.append(dict(name=name("trace-func", i), image=image, port=meta[h]["Port"],
                        protocol=meta[h]["Protocol"], upper=meta[h]["ScalingUpperBound"],
                        lower=meta[h]["ScalingLowerBound"], cpu=1000 // 10, memory=p100 // 10,
                        sweep=False, multiplier=meta[h]["IterationMultiplier"],
                        busy_loop_ms=1250))  # StartupLoopConvertMemoryToRuntimeMs(> 60 MiB)
        for k in range(3):
            invs.append(dict(at_ms=300 * k + 50 * i, function=i, runtime=int(dur[h]),
                             memory=int(float(mem[h]["AverageAllocatedMb_pct50"])),
                             multiplier=meta[h]["IterationMultiplier"]))
    # a function under 10 MiB whose CPULimit InVitro does not map: it registers 0 and 0
    i = len(fns)
    fns.append(dict(name=name("trace-func", i), image=image, port=80, protocol="tcp", upper=1,
                    lower=0, cpu=0, memory=9 // 10, sweep=False, multiplier=80, busy_loop_ms=300))
    for k in range(3):
        invs.append(dict(at_ms=300 * k, function=i, runtime=50, memory=9, multiplier=80))
print(json.dumps(dict(cp=cp, method="POST", functions=fns, invocations=invs)))
EOF
}

run_mode() { # run_mode MODE: every invocation a success as InVitro judges it
  spec "$1" || return 1
  /usr/bin/python3 "$CLIENT" "$TAP_TMP/$1.json" "$TAP_TMP/$1.out.json" || return 1
  # each answer names its function and reports work done (ExecutionTime > 0 us)
  /usr/bin/python3 -c '
import json, sys
rs = json.load(open(sys.argv[1]))
bad = [r for r in rs if r["response"]["Function"] != r["function"] or r["response"]["ExecutionTime"] <= 0
       or not r["response"]["Status"].startswith("OK")]
print(bad[:3]); sys.exit(1 if bad else 0)' "$TAP_TMP/$1.out.json"
}

# sandbox_of FUNCTION: the container init pid of its (first ready) sandbox
sandbox_of() {
  local id
  id=$(curl -sf "http://$WKA/v1/sandboxes" | /usr/bin/python3 -c \
    'import json,sys; print(next(s["id"] for s in json.load(sys.stdin)["sandboxes"] if s["function"]==sys.argv[1] and s["state"]=="ready"))' "$1") || return 1
  cat "$RUN/sandboxes/$id/pid"
}
cgroup_file() { # cgroup_file PID CONTROLLER FILE
  local cg
  cg=$(awk -F: -v c="$2" '$2 ~ "(^|,)"c"(,|$)" {print $3}' "/proc/$1/cgroup")
  cat "/sys/fs/cgroup/$(ls /sys/fs/cgroup | grep -E "^$2(,|$)" | head -1)$cg/$3"
}
fn_name() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["functions"][int(sys.argv[2])]["name"])' "$TAP_TMP/$1.json" "$2"; }

check "RPS warm: 20 invocations (10 POST as on main, 10 GET as on rps_mode) all succeed" run_mode warm

t_warm_limits() {
  local pid f
  f=$(fn_name warm 0)
  pid=$(sandbox_of "$f") || return 1
  echo "cpu.cfs_quota_us $(cgroup_file "$pid" cpu cpu.cfs_quota_us) cpu.shares $(cgroup_file "$pid" cpu cpu.shares) memory $(cgroup_file "$pid" memory memory.limit_in_bytes)"
  # requested_cpu=100 is a weight (102 shares), no quota; the registered 204 MiB is the limit
  [ "$(cgroup_file "$pid" cpu cpu.cfs_quota_us)" = -1 ] &&
    [ "$(cgroup_file "$pid" cpu cpu.shares)" = 102 ] &&
    [ "$(cgroup_file "$pid" memory memory.limit_in_bytes)" = $((204 * 1024 * 1024)) ]
}
check "the default CPU policy: the request is a weight (cpu.shares 102), no quota; memory limit 204 MiB" t_warm_limits

check "RPS 100% cold: 25 functions at zero, one invocation each (GET and POST), all succeed" run_mode cold

t_more_than_old_limit() {
  local max
  max=$(sort -n "$TAP_TMP/usage" | tail -1)
  echo "most sandboxes at once, CPU reserved: $max (a 2-core worker reserved 2000m for 20 before)"
  [ "${max%% *}" -gt 20 ] && [ "${max##* }" -gt 2000 ]
}
check "more than 20 sandboxes of 100m at once on a 2-core worker (overcommit 10)" t_more_than_old_limit

check "trace mode: the example trace's functions and a 0/0 one, 15 invocations, all succeed" run_mode trace

t_startup_env() {
  local pid f
  f=$(fn_name trace 0)
  pid=$(sandbox_of "$f") || return 1
  tr '\0' '\n' <"/proc/$pid/environ" | grep -E 'COLD_START|ITERATIONS' || return 1
  tr '\0' '\n' <"/proc/$pid/environ" | grep -qx 'COLD_START_BUSY_LOOP_MS=1250' &&
    tr '\0' '\n' <"/proc/$pid/environ" | grep -qx 'ITERATIONS_MULTIPLIER=80'
}
check "cold_start_busy_loop_ms and iteration_multiplier reach the sandbox as the original's variables" t_startup_env

t_zero_floor() {
  local pid f
  f=$(fn_name trace 4)
  curl -sf "http://$CPR/v1/functions/$f" | grep -qE '"requested_cpu": *0[,}]' || { curl -s "http://$CPR/v1/functions/$f"; return 1; }
  pid=$(sandbox_of "$f") || return 1
  echo "memory $(cgroup_file "$pid" memory memory.limit_in_bytes) shares $(cgroup_file "$pid" cpu cpu.shares)"
  [ "$(cgroup_file "$pid" memory memory.limit_in_bytes)" = $((32 * 1024 * 1024)) ] &&
    [ "$(cgroup_file "$pid" cpu cpu.shares)" = 102 ]
}
check "requested_cpu=0 / requested_memory=0: registered as sent, the sandbox gets the floors (100m, 32 MiB)" t_zero_floor

tap_done
