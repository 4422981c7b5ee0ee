#!/usr/bin/env bash
# gVisor sandboxes (issue 14, "Isolation stronger than containers"; docs/security.md "gVisor"):
# a control plane, a data plane and a dirigent-worker with the oci runtime and ociRuntime runsc,
# on ephemeral ports, sandboxes in the worker's pooled network namespaces. Checked as for
# crun: the cold start answers, and from a gVisor sandbox (the container's process is
# runsc-sandbox; no host process runs the function's binary), warm invocations, a crash of the
# sandbox (kill -9) replaced, a function delete removing its sandboxes, and after SIGTERM
# nothing of the worker left (containers in its runsc root, mounts, veths, runsc processes).
# Root, crun's tools and runsc (skipped otherwise, saying which).
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/oci.sh"
S=${DG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
NCHECKS=6

plan $NCHECKS
oci_require $NCHECKS runsc unshare
if ! out=$(timeout 30 runsc --network=none --platform=ptrace do /bin/true 2>&1); then
  for i in $(seq 1 $NCHECKS); do echo "ok $i # SKIP runsc cannot run on this machine: $(tail -1 <<<"$out")"; done
  exit 0
fi

RUN=$TAP_TMP/run
WPID=
cleanup_rs() {
  [ -n "$WPID" ] && oci_stop "$WPID" 200
  if [ -n "$WPID" ] && kill -0 "$WPID" 2>/dev/null; then
    kill -9 "$WPID"
    for id in $(runsc --root "$RUN/runsc" list -quiet 2>/dev/null); do runsc --root "$RUN/runsc" delete -force "$id" >/dev/null 2>&1; done
    oci_names "$TAP_TMP/w1.log"
    oci_remove "$OCI_RUN" "$OCI_BRIDGE" "$OCI_VETH" "$OCI_CGROUP"
  fi
  tap_cleanup
}
trap cleanup_rs EXIT

oci_image
start_cp_dp --traceOutputFolder ""
bg_start "$TAP_TMP/w1.log" "$B/dirigent-worker" --port 0 --name rs-w1 --runtime oci --ociRuntime runsc \
  --imageRoots "$TAP_TMP" --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --runDir "$RUN" \
  --dataDir "$TAP_TMP/data" --netnsPool 2 --killGrace 1s --cpuMilli 64000 --memoryMiB 65536
WPID=$BG_PID
wait_for_log "$TAP_TMP/w1.log" 'rs-w1: listening on' 20 || { echo "Bail out! the runsc worker did not start"; exit 1; }
WKA=127.0.0.1:$(port_of "$TAP_TMP/w1.log" 'rs-w1: listening on')
oci_names "$TAP_TMP/w1.log"
wait_json "$REG/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1' ||
  { echo "Bail out! not registered"; exit 1; }

register() { # register NAME
  curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/registerService" \
    -d "name=$1&image=$IMAGE&port_forwarding=80&port_forwarding=tcp&requested_cpu=1000&requested_memory=128"
}
invoke() { curl -s -m 60 -o "$TAP_TMP/inv.$1" -w '%{http_code}' -H "Host: $1" "$P/"; }
ready_ids() { # the ids of a function's ready sandboxes
  curl -sf "http://$WKA/v1/sandboxes" | /usr/bin/python3 -c \
    'import json,sys; [print(s["id"]) for s in json.load(sys.stdin)["sandboxes"] if s["function"]==sys.argv[1] and s["state"]=="ready"]' "$1"
}
containers() { runsc --root "$RUN/runsc" list -quiet 2>/dev/null | grep -c .; }
running() { runsc --root "$RUN/runsc" list 2>/dev/null | awk '$3=="running"' | grep -c .; }

t_cold() {
  [ "$(register gv)" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  local code id pid
  code=$(invoke gv)
  echo "cold: $code $(cat "$TAP_TMP/inv.gv")"
  [ "$code" = 200 ] && [ "$(json_field "$(cat "$TAP_TMP/inv.gv")" Status)" = OK ] || { tail -5 "$TAP_TMP/w1.log"; return 1; }
  id=$(ready_ids gv | head -1)
  [ "$(json_field "$(cat "$TAP_TMP/inv.gv")" MachineName)" = "$id" ] || return 1
  # the container's process is gVisor's sandbox (the sentry), in the pooled namespace
  pid=$(cat "$RUN/sandboxes/$id/pid")
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q '^runsc-sandbox .* boot ' || { tr '\0' ' ' <"/proc/$pid/cmdline"; return 1; }
  [ "$(readlink "/proc/$pid/ns/net")" != "$(readlink /proc/self/ns/net)" ] || return 1
  # and the function's binary runs in it, not on the host kernel: no host process is it
  ! ls -l /proc/[0-9]*/exe 2>/dev/null | grep -q "$RUN/.*dirigent-fn" || return 1
  [ "$(running)" = 1 ]
}
check "a cold start with runsc answers 200, served by a gVisor sandbox (runsc-sandbox, its own network namespace)" t_cold

t_warm() {
  local i code
  for i in 1 2 3 4 5; do
    code=$(invoke gv)
    [ "$code" = 200 ] || { echo "$i: $code $(cat "$TAP_TMP/inv.gv")"; return 1; }
  done
  [ "$(ready_ids gv | grep -c .)" = 1 ]
}
check "warm invocations go to the same sandbox" t_warm

t_crash() {
  local id pid
  id=$(ready_ids gv | head -1)
  pid=$(cat "$RUN/sandboxes/$id/pid")
  kill -9 "$pid"
  # the worker sees it go, the CP replaces it: a new sandbox, and the next call works
  wait_json "http://$WKA/v1/sandboxes" '[s for s in j["sandboxes"] if s["function"]=="gv" and s["state"]=="ready" and s["id"]!="'"$id"'"]' 600 || return 1
  [ "$(invoke gv)" = 200 ] || { cat "$TAP_TMP/inv.gv"; return 1; }
  grep -q "sandbox $id (gv) killed by signal 9" "$TAP_TMP/w1.log" || { grep "$id" "$TAP_TMP/w1.log" | tail -3; return 1; }
  [ "$(running)" = 1 ]
}
check "kill -9 of the gVisor sandbox: reported (signal 9), replaced, the next invocation succeeds" t_crash

t_delete() {
  curl -sf -XDELETE "$REG/v1/functions/gv" >/dev/null || return 1
  # (the crashed one stays listed as exited until the worker stops: the CP forgets it)
  wait_json "http://$WKA/v1/sandboxes" 'not [s for s in j["sandboxes"] if s["function"]=="gv" and s["state"]!="exited"]' 600 || return 1
  poll_until 200 eval '[ "$(running)" = 0 ]'
}
check "deleting the function removes its gVisor sandboxes (runsc's running containers)" t_delete

t_again() {
  # a second function after the first: the namespaces runsc gave back (the pool holds 2) are
  # reused, their addresses restored
  local i
  for i in 2 3 4; do
    [ "$(register gv$i)" = 200 ] && [ "$(invoke gv$i)" = 200 ] || { cat "$TAP_TMP/inv.gv$i"; return 1; }
    curl -sf -XDELETE "$REG/v1/functions/gv$i" >/dev/null || return 1
    wait_json "http://$WKA/v1/sandboxes" 'not [s for s in j["sandboxes"] if s["function"]=="gv'$i'"]' 600 || return 1
  done
  ! grep -q "is not reused" "$TAP_TMP/w1.log"
}
check "three more functions, one after the other, cold-start in the reused namespaces" t_again

t_cleanup() {
  oci_stop "$WPID" 200 || { echo "the worker did not stop"; return 1; }
  WPID=
  [ ! -e "$RUN" ] || { ls -R "$RUN" | head; return 1; }
  ! grep -q " $RUN/" /proc/self/mountinfo || return 1
  [ "$(ls /sys/class/net | grep -c "^${OCI_VETH}[0-9]")" = 0 ] || return 1
  ! ip link show "$OCI_BRIDGE" >/dev/null 2>&1 || return 1
  poll_until 100 eval '! pgrep -f "runsc-(sandbox|gofer) --root=$RUN/runsc" >/dev/null'
}
check "SIGTERM: the worker stops, no container, mount, veth, bridge or runsc process of it left" t_cleanup
