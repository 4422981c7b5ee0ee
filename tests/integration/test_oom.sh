#!/usr/bin/env bash
# A sandbox killed by its memory limit (issue 12): dirigent-cp, dirigent-dp and a
# dirigent-worker with the oci runtime (crun) on 127.0.0.1, the dirigent-fn image from an OCI
# layout on disk, sandbox addresses in 100.126.9.0/24 on the test's own bridge. A function
# registered with 64 MiB allocates 256 MiB (dirigent-fn's /_dirigent/allocate?mib=N, which it
# serves with DIRIGENT_FN_ALLOCATE_ENDPOINT=true in the registration's env_vars): the
# memory cgroup's OOM killer ends it, and the caller's 502 and GET /v1/functions/NAME say
# "OOM-killed: memory limit 64 MiB". Root only: without root or the tools, every check is
# skipped. Run with `flock /tmp/dg-itest.lock` (containers, a bridge, cgroups).
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/oci.sh"
S=${DG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
NCHECKS=3
BRIDGE=dgoom
SUBNET=100.126.9.0/24
WORKER=oom-w1
RUN=$TAP_TMP/run
DATA=$TAP_TMP/data

plan $NCHECKS
oci_require $NCHECKS

# ---- clean-up: the worker stops its sandboxes on SIGTERM; whatever a killed one left is
# removed by hand (containers, mounts, veths, the bridge, the cgroups of the worker's instance)
cleanup_oom() {
  oci_stop "${WK_PID:-}"
  for p in "${TAP_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  oci_names "$TAP_TMP/w1.log"
  oci_remove "$RUN" "$BRIDGE" "$OCI_VETH" "$OCI_CGROUP"
  rm -rf "$TAP_TMP"
}
trap cleanup_oom EXIT

# ---- the image (an OCI layout the worker copies from) and the cluster
oci_image

start_cp_dp
bg_start "$TAP_TMP/w1.log" "$B/dirigent-worker" --port 0 --name $WORKER --runtime oci --imageRoots "$TAP_TMP" \
  --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --runDir "$RUN" --dataDir "$DATA" \
  --bridge "$BRIDGE" --sandboxSubnet "$SUBNET" --netnsPool 2 --readinessTimeout 10s \
  --cpuMilli 8000 --memoryMiB 8192
WK_PID=$BG_PID
wait_for_log "$TAP_TMP/w1.log" "$WORKER: listening on" 20 || { echo "Bail out! the oci worker did not start"; exit 1; }
wait_json "$REG/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1' ||
  { echo "Bail out! not registered"; exit 1; }

code=$(curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/registerService" \
  -d "name=hog&image=$IMAGE&port_forwarding=80&port_forwarding=tcp&requested_cpu=1000&requested_memory=64&env_vars=DIRIGENT_FN_ALLOCATE_ENDPOINT=true")
[ "$code" = 200 ] || { echo "Bail out! registration: $code $(cat "$TAP_TMP/reg.out")"; exit 1; }

allocate() { # allocate MIB: the code; the body in $TAP_TMP/alloc.out
  curl -s -m 60 -o "$TAP_TMP/alloc.out" -w '%{http_code}' -H 'Host: hog' "$P/_dirigent/allocate?mib=$1"
}

t_caller() {
  # a cold start, then 256 MiB touched in a 64 MiB cgroup: the kernel kills dirigent-fn
  local code
  code=$(allocate 256)
  echo "$code $(cat "$TAP_TMP/alloc.out")"
  [ "$code" = 502 ] || return 1
  grep -q "^function 'hog': sandbox $WORKER-[^ ]* OOM-killed: memory limit 64 MiB$" "$TAP_TMP/alloc.out"
}
check "a function that allocates past its 64 MiB limit: the caller gets 502 'OOM-killed: memory limit 64 MiB' naming the function and the sandbox" t_caller

t_function_get() {
  local out
  out=$(curl -sf "$REG/v1/functions/hog") || return 1
  echo "$out"
  /usr/bin/python3 -c 'import json,sys; f=json.loads(sys.argv[1])
ok = ("OOM-killed: memory limit 64 MiB" in f["error"] and f["error_kind"] == "exit"
      and f["error_worker"] == sys.argv[2] and f["error_at_ms"] > 0 and f["state"] != "failing")
sys.exit(0 if ok else 1)' "$out" "$WORKER" || return 1
  # and the worker counted a sandbox that ended by itself
  curl -sf "http://127.0.0.1:$(port_of "$TAP_TMP/w1.log" "$WORKER: listening on")/metrics" |
    awk '$1 == "dg_worker_sandbox_unexpected_exits_total" && $2 >= 1 {f = 1} END {exit !f}'
}
check "GET /v1/functions/NAME shows the OOM kill as the function's last failure (kind exit, worker, time); the worker counts the exit" t_function_get

t_after() {
  # within the limit: a replacement answers 200, and the OOM kill is still the last failure
  local code
  code=$(allocate 16)
  echo "$code $(cat "$TAP_TMP/alloc.out")"
  [ "$code" = 200 ] && [ "$(json_field "$(cat "$TAP_TMP/alloc.out")" Status)" = OK ] || return 1
  curl -sf "$REG/v1/functions/hog" | /usr/bin/python3 -c 'import json,sys; f=json.load(sys.stdin)
sys.exit(0 if f["state"] == "ready" and "OOM-killed: memory limit 64 MiB" in f["error"] else 1)'
}
check "the next invocation within the limit gets 200 from a replacement; the OOM kill stays shown" t_after

tap_done
