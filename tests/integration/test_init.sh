#!/usr/bin/env bash
# The minimal init (issue 16): an image whose entrypoint is a shell script that runs
# dirigent-fn in the background and loops on sleep, so as its sandbox's PID 1 it ignores
# SIGTERM (PID 1 has no default action for it). Under the worker's init (sandboxInit,
# tini-static, on by default) a delete stops it at SIGTERM: the log says it exited after
# SIGTERM, never "ignored SIGTERM". Registered with init: false, the same image needs SIGKILL
# after killGrace, and the log says so. Either way nothing is left. Root, crun, umoci and
# tini-static; skipped otherwise.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/oci.sh"
S=${DG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
NCHECKS=4
BRIDGE=dginit
SUBNET=100.126.16.0/24
RUN=$TAP_TMP/run
DATA=$TAP_TMP/data

plan $NCHECKS
oci_require $NCHECKS busybox tini-static

cleanup_init() {
  oci_stop "${WK_PID:-}"
  for p in "${TAP_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  oci_remove "$RUN" "$BRIDGE" "${OCI_VETH:-}" "${OCI_CGROUP:-}"
  rm -rf "$TAP_TMP"
}
trap cleanup_init EXIT

# ---- the image: busybox, dirigent-fn and /start.sh as the entrypoint
work=$TAP_TMP/build
{
  umoci init --layout "$work/layout" &&
    umoci new --image "$work/layout:latest" &&
    umoci unpack --rootless --image "$work/layout:latest" "$work/bundle" &&
    install -D -m 0755 "$(command -v busybox)" "$work/bundle/rootfs/bin/busybox" &&
    install -m 0755 "$B/dirigent-fn" "$work/bundle/rootfs/dirigent-fn" &&
    install -d -m 1777 "$work/bundle/rootfs/tmp" &&
    printf '#!/bin/busybox sh\n/dirigent-fn &\nwhile true; do /bin/busybox sleep 1; done\n' >"$work/bundle/rootfs/start.sh" &&
    chmod 0755 "$work/bundle/rootfs/start.sh" &&
    umoci repack --image "$work/layout:latest" "$work/bundle" &&
    umoci config --image "$work/layout:latest" --config.entrypoint /start.sh \
      --config.exposedports 80/tcp --config.env PORT=80 --config.workingdir / &&
    umoci gc --layout "$work/layout" && mv "$work/layout" "$TAP_TMP/image"
} >"$TAP_TMP/image.log" 2>&1 || { cat "$TAP_TMP/image.log"; echo "Bail out! cannot build the image"; exit 1; }
IMAGE=oci:$TAP_TMP/image:latest

# ---- the cluster: a killGrace long enough that a SIGKILL can only come from its end
start_cp_dp --traceOutputFolder ""
bg_start "$TAP_TMP/w1.log" "$B/dirigent-worker" --port 0 --name init-w1 --runtime oci --imageRoots "$TAP_TMP" \
  --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --runDir "$RUN" --dataDir "$DATA" \
  --bridge "$BRIDGE" --sandboxSubnet "$SUBNET" --netnsPool 2 --readinessTimeout 10s \
  --killGrace 3s --logLevel debug --cpuMilli 64000 --memoryMiB 65536
WK_PID=$BG_PID
wait_for_log "$TAP_TMP/w1.log" 'init-w1: listening on' 20 || { echo "Bail out! the oci worker did not start"; exit 1; }
oci_names "$TAP_TMP/w1.log"
wait_json "$REG/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1' ||
  { echo "Bail out! not registered"; exit 1; }

register() { # register NAME [extra form fields]
  curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/registerService" \
    -d "name=$1&image=$IMAGE&port_forwarding=80&port_forwarding=tcp&requested_cpu=100&requested_memory=64${2:-}"
}
invoke() { curl -s -m 30 -o "$TAP_TMP/inv.$1" -w '%{http_code}' -H "Host: $1" "$P/"; }
containers() { ([ -d "$RUN/crun" ] && crun --root "$RUN/crun" list -q 2>/dev/null) | grep -c .; }

t_init() {
  [ "$(register withinit)" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  [ "$(invoke withinit)" = 200 ] || { cat "$TAP_TMP/inv.withinit"; tail -20 "$TAP_TMP/w1.log"; return 1; }
  curl -sf -XDELETE "$REG/v1/functions/withinit" >/dev/null || return 1
  wait_for_log "$TAP_TMP/w1.log" 'sandbox [^ ]+ \(withinit\) exited [0-9]+ ms after SIGTERM' 20 || return 1
  ! grep -E '\(withinit\) (ignored SIGTERM|gone .* after SIGKILL)' "$TAP_TMP/w1.log"
}
check "under the init (the default), a shell-script entrypoint that ignores SIGTERM as PID 1 exits at SIGTERM: no SIGKILL" t_init

t_noinit() {
  [ "$(register noinit '&init=false')" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  [ "$(invoke noinit)" = 200 ] || { cat "$TAP_TMP/inv.noinit"; return 1; }
  curl -sf -XDELETE "$REG/v1/functions/noinit" >/dev/null || return 1
  wait_for_log "$TAP_TMP/w1.log" 'sandbox [^ ]+ \(noinit\) ignored SIGTERM: still running .* no init' 20 &&
    wait_for_log "$TAP_TMP/w1.log" 'sandbox [^ ]+ \(noinit\) gone [0-9]+ ms after SIGKILL' 20
}
check "registered with init: false, the same entrypoint ignores SIGTERM and needs SIGKILL after killGrace; the log says so" t_noinit

t_gone() {
  poll_until 200 test "$(containers)" = 0 || return 1
  [ "$(grep -c " $RUN/sandboxes/" /proc/self/mountinfo)" = 0 ]
}
check "both deletes leave no container and no mount" t_gone

t_bad() {
  [ "$(register bad '&init=maybe')" = 400 ] && grep -q "field 'init': expected true or false" "$TAP_TMP/reg.out"
}
check "a registration with init other than true or false is refused naming the field" t_bad

tap_done
