#!/usr/bin/env bash
# Sandbox confinement (issue 14, findings 4 and 10), checked from inside a sandbox: a CP, a DP
# and an oci worker (crun) on 127.0.0.1 run two functions whose image holds a probe
# (tests/integration/confine_probe.c) in place of dirigent-fn. Called through the data plane,
# the probe reports its capabilities, seccomp mode and what the kernel answers to the
# syscalls a container escape uses, its cgroup namespace and uid mapping, and tries TCP
# connections from inside: to a listener the test starts on 0.0.0.0, to the worker's API and
# to the node's own address (through the gateway and directly), and to the other function's
# sandbox. Each must fail while the host reaches them, and the calls through the cluster
# (DP -> sandbox) still work. After SIGTERM the worker's nftables tables are gone. Root only
# (crun, nft): without them every check is skipped.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/oci.sh"
S=${DG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
NCHECKS=10
WORKER=conf-w1

plan $NCHECKS
oci_require $NCHECKS nft
readelf -d "$B/tests/confine_probe" 2>/dev/null | grep -q NEEDED &&
  { for i in $(seq 1 $NCHECKS); do echo "ok $i # SKIP needs a static confine_probe"; done; exit 0; }

cleanup_conf() {
  oci_stop "${WK_PID:-}"
  for p in "${TAP_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  oci_names "$TAP_TMP/w1.log"
  oci_remove "$OCI_RUN" "$OCI_BRIDGE" "$OCI_VETH" "$OCI_CGROUP"
  [ -n "$OCI_RUN" ] && rm -rf "$OCI_RUN"
  rm -rf "$TAP_TMP"
}
trap cleanup_conf EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- the probe's image, the cluster, a service on every address of the host
"$S/scripts/make-image.sh" "$B/tests/confine_probe" "$TAP_TMP/probe" >/dev/null ||
  { echo "Bail out! cannot build the probe image"; exit 1; }
IMAGE=oci:$TAP_TMP/probe:latest
# the worker listens on every address (below): a keyed cluster, as off loopback it must be
cluster_key
start_cp_dp
LPORT=$(free_port)
bg_start "$TAP_TMP/listener.log" /usr/bin/python3 -m http.server --bind 0.0.0.0 "$LPORT"
# the worker's API on every address too (as on a node whose workerNodeIp is its own address);
# its run directory is the default one under /run/dirigent (a user namespace needs every
# directory above the sandboxes searchable, which the test's own temporary directory is not)
bg_start "$TAP_TMP/w1.log" "$B/dirigent-worker" --port 0 --name $WORKER --runtime oci \
  --workerNodeIp 0.0.0.0 --controlPlaneAddress "$CPI" --heartbeatInterval 300ms "${KEY_ARGS[@]}" --imageRoots "$TAP_TMP" \
  --dataDir "$TAP_TMP/data" --netnsPool 2 --readinessTimeout 10s --cpuMilli 8000 --memoryMiB 8192
WK_PID=$BG_PID
wait_for_log "$TAP_TMP/w1.log" "$WORKER: listening on" 20 || { echo "Bail out! the oci worker did not start"; cat "$TAP_TMP/w1.log"; exit 1; }
WPORT=$(port_of "$TAP_TMP/w1.log" "$WORKER: listening on")
oci_names "$TAP_TMP/w1.log"
TABLE=dirigent_${OCI_VETH#dv}
GW=$(/usr/bin/python3 -c 'import ipaddress,sys; print(ipaddress.ip_network(sys.argv[1]).network_address + 1)' "$OCI_SUBNET")
# the node's own address: its first global IPv4 address not on a sandbox bridge
NODE=$(ip -4 -o addr show scope global | awk '$2 !~ /^(dg|dv)/ {split($4, a, "/"); print a[1]; exit}')
wait_json "$REG/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1' ||
  { echo "Bail out! not registered"; exit 1; }
for f in probe-a probe-b; do
  code=$(curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/registerService" \
    -d "name=$f&image=$IMAGE&port_forwarding=80&port_forwarding=tcp&requested_cpu=100&requested_memory=64")
  [ "$code" = 200 ] || { echo "Bail out! registration of $f: $code $(cat "$TAP_TMP/reg.out")"; exit 1; }
done

t_bad_key() {
  local out rc before
  before=$(nft list tables)
  out=$(timeout 20 "$B/dirigent-worker" --port 0 --name conf-bad --runtime oci --controlPlaneAddress "" \
    --dataDir "$TAP_TMP/bad" --sandboxEgressAllow 10.1.2.3/8 2>&1)
  rc=$?
  echo "$out"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "sandboxEgressAllow '10.1.2.3/8': not an IPv4 address or CIDR" <<<"$out" || return 1
  # nothing made on the host: no run directory, no table of that instance
  ! ls -d /run/dirigent/conf-bad-* 2>/dev/null && [ "$(nft list tables)" = "$before" ]
}
check "a bad sandboxEgressAllow: the worker refuses to start naming the key and the form, and makes nothing on the host" t_bad_key

t_late_failure() {
  local out rc before
  before=$(nft list tables)
  # imageRoots is read after the tables went in: the start fails there
  out=$(timeout 20 "$B/dirigent-worker" --port 0 --name conf-late --runtime oci --controlPlaneAddress "" \
    --dataDir "$TAP_TMP/late" --imageRoots relative/images 2>&1)
  rc=$?
  echo "$out"
  rm -rf /run/dirigent/conf-late-*
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "imageRoots: expected absolute directories" <<<"$out" || return 1
  grep -q "nftables tables inet/bridge" <<<"$out" || { echo "the tables were never installed"; return 1; }
  [ "$(nft list tables)" = "$before" ] || { echo "left: $(nft list tables)"; return 1; }
}
check "a start failing after the nftables tables went in (a relative imageRoots) removes them" t_late_failure

call() { # call FUNCTION PATH: through the data plane; the body on stdout, 0 on a 200
  local code
  code=$(curl -s -m 60 -o "$TAP_TMP/call.out" -w '%{http_code}' -H "Host: $1" "$P$2")
  cat "$TAP_TMP/call.out"
  [ "$code" = 200 ]
}
from_a() { call probe-a "/connect/$1/$2"; } # from_a IP PORT: connected, refused, timeout, ...
line() { grep "^$1: " "$TAP_TMP/self" | head -1 | sed "s/^$1: //"; }

t_cluster() {
  call probe-a /self >"$TAP_TMP/self" && call probe-b / | grep -q '^probe$' || { cat "$TAP_TMP/self"; return 1; }
  cat "$TAP_TMP/self"
  grep -q '^status: Seccomp:' "$TAP_TMP/self"
}
check "two functions cold-started through the cluster: each sandbox answers its calls (DP -> sandbox), the probe reports from inside" t_cluster

t_caps() {
  # crun's default three: CAP_AUDIT_WRITE (29), CAP_KILL (5), CAP_NET_BIND_SERVICE (10)
  grep -Eq '^status: CapEff:[[:space:]]+0000000020000420$' "$TAP_TMP/self" &&
    grep -Eq '^status: CapBnd:[[:space:]]+0000000020000420$' "$TAP_TMP/self" &&
    grep -Eq '^status: CapInh:[[:space:]]+0000000000000000$' "$TAP_TMP/self"
}
check "capabilities inside: crun's default three (CapEff = CapBnd = 0x20000420), none inheritable" t_caps

t_seccomp() {
  local s bad=""
  grep -Eq '^status: Seccomp:[[:space:]]+2$' "$TAP_TMP/self" || { echo "seccomp mode: $(line status)"; return 1; }
  for s in unshare_newuser clone_newuser io_uring_setup socket_vsock socket_netlink_audit keyctl \
    bpf perf_event_open mount ptrace setns; do
    [ "$(line $s)" = EPERM ] || bad="$bad $s=$(line $s)"
  done
  [ -z "$bad" ] || { echo "not refused:$bad"; return 1; }
  [ "$(line socket_inet)" = ok ] # and what a function needs still works
}
check "seccomp filter mode 2: unshare/clone with CLONE_NEWUSER, io_uring_setup, AF_VSOCK and NETLINK_AUDIT sockets, keyctl, bpf, perf_event_open, mount, ptrace, setns fail with EPERM; an AF_INET socket works" t_seccomp

t_cgroupns() {
  # in its own cgroup namespace every hierarchy's path is its root
  grep -q '^cgroup: 0::/$' "$TAP_TMP/self" || return 1
  ! grep '^cgroup: ' "$TAP_TMP/self" | grep -v ':/$'
}
check "cgroup namespace: /proc/self/cgroup shows 0::/ and / in every hierarchy" t_cgroupns

t_userns() {
  local base
  base=$(sed -n 's/.*sandboxes in user namespaces: uid 0 is host uid \([0-9]*\) .*/\1/p' "$TAP_TMP/w1.log")
  if [ -z "$base" ]; then
    # the fallback is allowed only where the kernel has no user namespaces; it names why
    [ "$(cat /proc/sys/user/max_user_namespaces)" = 0 ] &&
      grep -q 'sandboxes without a user namespace' "$TAP_TMP/w1.log"
    return
  fi
  echo "uid_map: $(line uid_map)  host base $base"
  [ "$(line uid_map | awk '{print $1, $2, $3}')" = "0 $base 65536" ] || return 1
  # uid 0 inside is not the host's root: the sandbox's process runs as the mapped uid
  grep -Eq '^status: Uid:[[:space:]]+0[[:space:]]' "$TAP_TMP/self" || return 1
  local pids
  pids=$(for id in $(crun --root "$OCI_RUN/crun" list -q 2>/dev/null); do echo "$(cat "$OCI_RUN/sandboxes/$id/pid")"; done)
  [ -n "$pids" ] || return 1
  for p in $pids; do [ "$(stat -c %u "/proc/$p")" = "$base" ] || { echo "pid $p uid $(stat -c %u "/proc/$p")"; return 1; }; done
  # a sandbox's files are not readable by another local user through its bundle (its rootfs)
  local id
  id=$(crun --root "$OCI_RUN/crun" list -q 2>/dev/null | head -1)
  ls "$OCI_RUN/sandboxes/$id/rootfs/" >/dev/null || return 1
  if setpriv --reuid=65534 --regid=65534 --clear-groups ls "$OCI_RUN/sandboxes/$id/rootfs/" 2>&1; then
    echo "uid 65534 lists $OCI_RUN/sandboxes/$id/rootfs"; return 1
  fi
}
check "user namespace: uid 0 inside maps to the worker's unprivileged range (uid_map 0 BASE 65536), the sandboxes' processes are that uid on the host, their files closed to other host users" t_userns

t_host() {
  local target r bad=""
  # the host reaches its own services (the test is not vacuous)...
  curl -sf -m 5 -o /dev/null "http://127.0.0.1:$LPORT/" && curl -sf -m 5 -o /dev/null "http://127.0.0.1:$WPORT/health" || return 1
  [ -z "$NODE" ] || curl -sf -m 5 -o /dev/null "http://$NODE:$LPORT/" || return 1
  # ...and the probe's connect works (its own port)
  [ "$(from_a 127.0.0.1 80)" = connected ] || { echo "probe cannot connect to itself"; return 1; }
  for target in "$GW $LPORT" "$GW $WPORT" ${NODE:+"$NODE $LPORT" "$NODE $WPORT"}; do
    r=$(from_a $target) || return 1
    echo "sandbox -> ${target/ /:}: $r"
    [ "$r" != connected ] || bad="$bad ${target/ /:}"
  done
  [ -z "$bad" ] || { echo "reachable from a sandbox:$bad"; return 1; }
}
check "from a sandbox the host is unreachable: a 0.0.0.0 listener and the worker's API, at the gateway and the node address (the host reaches both)" t_host

t_other_sandbox() {
  local eb r
  eb=$(curl -sf -H "Authorization: Bearer $(cat "$TAP_TMP/cp.token")" "http://127.0.0.1:$WPORT/v1/sandboxes" | /usr/bin/python3 -c 'import json,sys
print([s["endpoint"] for s in json.load(sys.stdin)["sandboxes"] if s["function"] == "probe-b"][0])') || return 1
  [ "$(curl -s -m 5 "http://$eb/")" = probe ] || { echo "the host cannot reach $eb"; return 1; }
  r=$(from_a "${eb%:*}" "${eb#*:}") || return 1
  echo "probe-a -> probe-b ($eb): $r"
  [ "$r" != connected ] || return 1
  call probe-b / | grep -q '^probe$'
}
check "from a sandbox another function's sandbox is unreachable; the host and the cluster still reach it" t_other_sandbox

t_stop() {
  nft list tables | grep -qx "table inet $TABLE" && nft list tables | grep -qx "table bridge $TABLE" ||
    { echo "no table $TABLE: $(nft list tables)"; return 1; }
  oci_stop "$WK_PID" 200 || return 1
  WK_PID=
  ! nft list tables | grep -q "$TABLE"
}
check "the worker's nftables tables (inet and bridge $TABLE) exist while it runs and are removed by its SIGTERM" t_stop
