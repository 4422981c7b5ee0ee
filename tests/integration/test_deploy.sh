#!/usr/bin/env bash
# docs/operations.md, "A cluster on three hosts, step by step", on one machine: three network
# namespaces stand for the hosts 10.0.1.2 (control plane), .3 (data plane) and .4 (worker, oci
# runtime), joined by a bridge inside a fourth namespace, so nothing of it is visible in the
# root namespace. The installed tree (meson install --destdir) runs with the configs of the
# doc's steps 2-4 (addresses as there; the worker also gets a name, runDir, dataDir and bridge
# of its own so it cannot touch another worker on this machine), the DP host routes the
# worker's sandbox subnet to it, and step 5's checks run: status, deploy of the installed
# image, invoke through the data plane, a restart of the control plane that keeps the
# registry. systemd itself is not run (no systemd here): test_install verifies the units.
# Root, crun, skopeo, umoci, nsenter and a static dirigent-fn are needed; else skipped.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
D=$TAP_TMP/dest
NCHECKS=7
P=dgd$$ # names of namespaces, links and the worker
NET=10.0.1

plan $NCHECKS
missing=""
[ "$(id -u)" = 0 ] || missing="root"
for t in crun skopeo umoci nsenter unshare ip; do command -v $t >/dev/null || missing="$missing $t"; done
[ -d "$B/images/dirigent-fn" ] || missing="$missing the-dirigent-fn-image"
if [ -n "$missing" ]; then
  for i in $(seq 1 $NCHECKS); do echo "ok $i # SKIP needs:$missing"; done
  exit 0
fi

# ---- clean-up: the worker first (SIGTERM: it removes its sandboxes, namespaces and bridge),
# then the rest; then whatever is left in the namespaces, and the namespaces themselves
RUN=$TAP_TMP/run
cleanup() {
  declare -F restore_log >/dev/null && restore_log
  if [ -n "${WK_PID:-}" ] && kill -0 "$WK_PID" 2>/dev/null; then
    kill -TERM "$WK_PID"
    for _ in $(seq 1 200); do kill -0 "$WK_PID" 2>/dev/null || break; sleep 0.05; done
  fi
  local p id h
  for p in "${TAP_PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for id in $(crun --root "$RUN/crun" list -q 2>/dev/null); do crun --root "$RUN/crun" delete -f "$id" >/dev/null 2>&1; done
  for h in cp dp w sw; do
    for p in $(ip netns pids "$P-$h" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$P-$h" 2>/dev/null
  done
  for c in /sys/fs/cgroup/*/dirigent/$P-w; do [ -d "$c" ] && rmdir "$c"/* "$c" 2>/dev/null; done
  rm -rf "$TAP_TMP"
}
trap cleanup EXIT

# ---- the "hosts": cp 10.0.1.2, dp 10.0.1.3, w 10.0.1.4 on a bridge in namespace sw
setup_net() {
  ip netns add "$P-sw" && ip -n "$P-sw" link add name br0 type bridge && ip -n "$P-sw" link set br0 up &&
    ip -n "$P-sw" link set lo up || return 1
  local h a
  for h in cp:2 dp:3 w:4; do
    a=${h#*:} h=${h%%:*}
    ip netns add "$P-$h" &&
      ip -n "$P-$h" link add name eth0 type veth peer name "${P}$h-s" netns "$P-sw" &&
      ip -n "$P-$h" addr add "$NET.$a/24" dev eth0 &&
      ip -n "$P-$h" link set eth0 up && ip -n "$P-$h" link set lo up &&
      ip -n "$P-sw" link set "${P}$h-s" master br0 && ip -n "$P-sw" link set "${P}$h-s" up || return 1
  done
}
setup_net || { echo "Bail out! cannot make the namespaces"; exit 1; }
in_ns() { local h=$1; shift; nsenter --net="/run/netns/$P-$h" "$@"; }

# meson install overwrites the build's install log, which `make uninstall` reads: keep the
# operator's and put it back at the end
LOG=$B/meson-logs/install-log.txt
[ -f "$LOG" ] && cp "$LOG" "$TAP_TMP/install-log.txt"
restore_log() { if [ -f "$TAP_TMP/install-log.txt" ]; then cp "$TAP_TMP/install-log.txt" "$LOG"; else rm -f "$LOG"; fi; }
meson install -C "$B" --no-rebuild --quiet --destdir "$D" >/dev/null ||
  { echo "Bail out! meson install failed"; exit 1; }
PREFIX=$(meson introspect --buildoptions "$B" | /usr/bin/python3 -c \
  'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"][0])')
BIN=$D$PREFIX/bin
IMAGE=oci:$D$PREFIX/share/dirigent/images/dirigent-fn:latest
mkdir -p "$TAP_TMP"/{cp,dp,w}
# ---- step 1: the cluster key and the operator's credential
KEY=$TAP_TMP/cluster.key
"$BIN/dirigent" token init --key "$KEY" 2>/dev/null || { echo "Bail out! token init failed"; exit 1; }
DIRIGENT_TOKEN=$("$BIN/dirigent" token create --key "$KEY" --role operator --name admin) ||
  { echo "Bail out! token create failed"; exit 1; }
export DIRIGENT_TOKEN

# ---- step 2: the control plane (the doc's cp.yaml)
cat >"$TAP_TMP/cp.yaml" <<EOF
host: $NET.2
authTokenFile: $KEY
port: 9090
registrationServer: $NET.2:9091
persistence: sqlite
dataDir: .
traceOutputFolder: trace
placementPolicy: random
heartbeatInterval: 500ms
EOF
start_cp() {
  bg_start "$TAP_TMP/cp.log" env -C "$TAP_TMP/cp" nsenter --net="/run/netns/$P-cp" \
    "$BIN/dirigent-cp" --config "$TAP_TMP/cp.yaml"
  CP_PID=$BG_PID
  wait_for_log "$TAP_TMP/cp.log" "registration on $NET.2:9091"
}
# ---- step 3: the data plane, with a route to the worker's sandboxes
cat >"$TAP_TMP/dp.yaml" <<EOF
dataPlaneIp: $NET.3
authTokenFile: $KEY
portProxy: 8080
portGRPC: 8081
controlPlaneAddress: $NET.2:9090
traceOutputFolder: trace
heartbeatInterval: 500ms
EOF
# ---- step 4: the worker (plus what keeps it apart from any other worker here)
cat >"$TAP_TMP/w.yaml" <<EOF
workerNodeIp: $NET.4
authTokenFile: $KEY
port: 10010
controlPlaneAddress: $NET.2:9090
runtime: oci
sandboxSubnet: 100.100.0.0/16
heartbeatInterval: 500ms
name: $P-w
runDir: $RUN
dataDir: $TAP_TMP/w/data
bridge: ${P}b
EOF
t_start() {
  start_cp || return 1
  in_ns dp ip route add 100.100.0.0/16 via $NET.4 || return 1
  bg_start "$TAP_TMP/dp.log" env -C "$TAP_TMP/dp" nsenter --net="/run/netns/$P-dp" \
    "$BIN/dirigent-dp" --config "$TAP_TMP/dp.yaml"
  wait_for_log "$TAP_TMP/dp.log" "proxy on $NET.3:8080" || return 1
  in_ns w sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward' || return 1
  bg_start "$TAP_TMP/w.log" env -C "$TAP_TMP/w" nsenter --net="/run/netns/$P-w" unshare -m \
    --propagation private "$BIN/dirigent-worker" --config "$TAP_TMP/w.yaml"
  WK_PID=$BG_PID
  wait_for_log "$TAP_TMP/w.log" "listening on" 30 ||
    { tail -5 "$TAP_TMP/w.log"; return 1; }
}
check "the three daemons start from the doc's configs on their hosts" t_start

cli() { in_ns cp "$BIN/dirigent" --cp $NET.2:9091 --dp $NET.3:8080 "$@"; }
# status STEP PYEXPR: poll the CP's status (from the CP host) until the expression holds
status_is() {
  local i=0
  while [ $i -lt 300 ]; do
    in_ns cp curl -sf -H "Authorization: Bearer $DIRIGENT_TOKEN" "http://$NET.2:9091/v1/status" | /usr/bin/python3 -c \
      "import json,sys; s=json.load(sys.stdin); sys.exit(0 if ($1) else 1)" 2>/dev/null && return 0
    sleep 0.05; i=$((i + 1))
  done
  echo "timed out waiting for $1:"; in_ns cp curl -s -H "Authorization: Bearer $DIRIGENT_TOKEN" "http://$NET.2:9091/v1/status"; return 1
}
t_status() {
  status_is 'len(s["workers"]) == 1 and len(s["dataplanes"]) == 1' || return 1
  cli status >"$TAP_TMP/status.out" 2>&1 || { cat "$TAP_TMP/status.out"; return 1; }
}
check "dirigent status: one worker, one data plane" t_status

t_deploy() {
  cli function deploy hello --image "$IMAGE" >"$TAP_TMP/deploy.out" 2>&1 ||
    { cat "$TAP_TMP/deploy.out"; return 1; }
}
check "dirigent function deploy hello with the installed image" t_deploy

# invoke NAME: through the data plane from the CP host; a cold start, then warm
invoke_ok() {
  cli invoke hello >"$TAP_TMP/invoke.out" 2>&1 && grep -q '"Function"' "$TAP_TMP/invoke.out" ||
    { cat "$TAP_TMP/invoke.out"; tail -3 "$TAP_TMP/w.log" "$TAP_TMP/dp.log"; return 1; }
}
check "dirigent invoke hello answers through the data plane (sandbox routed to the worker)" invoke_ok

t_restart() { # systemctl restart control_plane: SIGTERM, then a start
  kill -TERM "$CP_PID" && for _ in $(seq 1 200); do kill -0 "$CP_PID" 2>/dev/null || break; sleep 0.05; done
  ! kill -0 "$CP_PID" 2>/dev/null || { echo "the CP did not stop"; return 1; }
  start_cp || return 1
  status_is 'len(s["workers"]) == 1 and len(s["dataplanes"]) == 1' || return 1
  cli function list >"$TAP_TMP/list.out" 2>&1 && grep -q hello "$TAP_TMP/list.out" ||
    { cat "$TAP_TMP/list.out"; return 1; }
}
check "after a restart of the control plane the registry is back and the nodes re-registered" t_restart
check "hello still answers after the restart" invoke_ok

t_stop() { # the worker leaves nothing behind in its host
  kill -TERM "$WK_PID"
  for _ in $(seq 1 200); do kill -0 "$WK_PID" 2>/dev/null || break; sleep 0.05; done
  ! kill -0 "$WK_PID" 2>/dev/null || { echo "the worker did not stop"; return 1; }
  [ -z "$(crun --root "$RUN/crun" list -q 2>/dev/null)" ] || { echo "containers left"; return 1; }
  ! in_ns w ip link show "${P}b" >/dev/null 2>&1 || { echo "bridge left"; return 1; }
}
check "the worker stops cleanly (no container, no bridge left)" t_stop
tap_done
