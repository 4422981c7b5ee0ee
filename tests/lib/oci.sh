# oci.sh: what the shell tests that run a dirigent-worker with the oci runtime (crun) share:
# the skip when root or a tool is missing, the dirigent-fn image as an OCI layout, the host
# names a worker logged at start-up, and removing by hand what a killed worker left. Source it
# after tap.sh, with S the source and B the build directory set.
# shellcheck disable=SC2034 # IMAGE and OCI_* are set for the test that sources this

# oci_require NCHECKS [TOOL...]: unless this runs as root with crun, skopeo, umoci, the TOOLs
# and a static dirigent-fn, print every one of the NCHECKS checks as skipped and exit 0
oci_require() {
  local n=$1 missing="" t i
  shift
  [ "$(id -u)" = 0 ] || missing="root"
  for t in crun skopeo umoci "$@"; do command -v "$t" >/dev/null || missing="$missing $t"; done
  readelf -d "$B/dirigent-fn" 2>/dev/null | grep -q NEEDED && missing="$missing a-static-dirigent-fn"
  [ -z "$missing" ] && return 0
  for i in $(seq 1 "$n"); do echo "ok $i # SKIP needs:$missing"; done
  exit 0
}

# oci_image: the dirigent-fn image as an OCI layout in $TAP_TMP/image (no registry needed);
# sets IMAGE to its reference
oci_image() {
  "$S/scripts/make-image.sh" "$B/dirigent-fn" "$TAP_TMP/image" >/dev/null ||
    { echo "Bail out! cannot build the image"; exit 1; }
  IMAGE=oci:$TAP_TMP/image:latest
}

# oci_names LOG: the host names of the worker whose log is LOG, from its start-up line
# ("oci: instance ID: runDir R, bridge B, veths V<N>, sandboxSubnet S, cgroup C", instance.c;
# the last one when it started more than once): sets OCI_RUN, OCI_BRIDGE, OCI_VETH (the veths'
# prefix), OCI_SUBNET and OCI_CGROUP, each empty when LOG has no such line
oci_names() {
  local line
  line=$(grep ' oci: instance ' "$1" 2>/dev/null | tail -1)
  OCI_RUN=$(sed -n 's/.* runDir \([^,]*\),.*/\1/p' <<<"$line")
  OCI_BRIDGE=$(sed -n 's/.* bridge \([^,]*\),.*/\1/p' <<<"$line")
  OCI_VETH=$(sed -n 's/.* veths \([^<]*\)<N>.*/\1/p' <<<"$line")
  OCI_SUBNET=$(sed -n 's/.* sandboxSubnet \([^,]*\),.*/\1/p' <<<"$line")
  OCI_CGROUP=$(sed -n 's/.* cgroup \([^ ]*\) .*/\1/p' <<<"$line")
}

# oci_stop PID [TRIES]: SIGTERM to a running worker, then wait up to TRIES x 50 ms (100) for
# it to exit; 0 when it is gone
oci_stop() {
  [ -n "${1:-}" ] || return 0
  kill -TERM "$1" 2>/dev/null
  for _ in $(seq 1 "${2:-100}"); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
  ! kill -0 "$1" 2>/dev/null
}

# oci_remove RUN BRIDGE VETH CGROUP: remove what a killed worker left (its nftables tables too): the containers of the
# crun root RUN/crun, the mounts below RUN, the links VETH<N> and BRIDGE, the cgroups
# /sys/fs/cgroup/*/CGROUP with everything below them; an empty argument is passed over
oci_remove() {
  local run=$1 bridge=$2 veth=$3 cgroup=$4 id m l c
  if [ -n "$run" ]; then
    # (crun list makes its root if missing: only asked when there is one)
    if [ -d "$run/crun" ]; then
      for id in $(crun --root "$run/crun" list -q 2>/dev/null); do crun --root "$run/crun" delete -f "$id" >/dev/null 2>&1; done
    fi
    grep -o " $run/[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  fi
  if [ -n "$veth" ]; then
    for l in /sys/class/net/"$veth"[0-9]*; do [ -e "$l" ] && ip link del "${l##*/}" 2>/dev/null; done
  fi
  [ -n "$bridge" ] && ip link del "$bridge" 2>/dev/null
  # the worker's nftables tables (firewall.c: dirigent_<instance hex>, the veths' dv<hex>)
  if [ -n "$veth" ] && command -v nft >/dev/null; then
    nft delete table inet "dirigent_${veth#dv}" 2>/dev/null
    nft delete table bridge "dirigent_${veth#dv}" 2>/dev/null
  fi
  if [ -n "$cgroup" ]; then
    for c in /sys/fs/cgroup/*/"$cgroup"; do [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null; done
  fi
  return 0
}
