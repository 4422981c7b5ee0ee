#!/usr/bin/env bash
# What an image reference may reach (issue 14, findings 7 and 8; docs/security.md "Images"):
# a dirigent-worker with the oci runtime, standalone, driven through its API. Local images
# only below imageRoots (any other directory, /etc/shadow, a link out, a FIFO: refused with
# the same 400 whether the file exists or not, its contents never echoed), registries only
# from imageRegistries (169.254.169.254 and a loopback port not listed: refused, skopeo never
# run), a pull from a registry that never answers killed after imagePullTimeout and at
# shutdown (skopeo's process group gone); the image under the root and the allowed registry
# still work. Root and crun (skipped otherwise).
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/oci.sh"
S=${DG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
NCHECKS=7

plan $NCHECKS
oci_require $NCHECKS

WPID=
cleanup_ic() {
  [ -n "$WPID" ] && oci_stop "$WPID" 100
  oci_names "$TAP_TMP/w.log"
  [ -n "$WPID" ] && kill -0 "$WPID" 2>/dev/null && { kill -9 "$WPID"; oci_remove "$OCI_RUN" "$OCI_BRIDGE" "$OCI_VETH" "$OCI_CGROUP"; }
  tap_cleanup
}
trap cleanup_ic EXIT

ROOT=$TAP_TMP/images
mkdir -p "$ROOT"
"$S/scripts/make-image.sh" "$B/dirigent-fn" "$ROOT/fn" >/dev/null || { echo "Bail out! cannot build the image"; exit 1; }
ln -s /etc "$ROOT/etc-link"
mkfifo "$ROOT/fifo.tar"

# a "registry" that accepts connections and never answers (python, on an ephemeral port)
/usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
conns = []
while True:
    c, _ = s.accept(); conns.append(c)
' >"$TAP_TMP/silent.port" &
SILENT_PID=$!
TAP_PIDS+=("$SILENT_PID")
poll_until 100 test -s "$TAP_TMP/silent.port" || { echo "Bail out! no silent listener"; exit 1; }
SILENT=127.0.0.1:$(cat "$TAP_TMP/silent.port")

# the worker's skopeo, counted (a shim first on its PATH logs each run's arguments)
mkdir -p "$TAP_TMP/bin"
printf '#!/bin/sh\necho "$*" >>"%s/skopeo.calls"\nexec %s "$@"\n' "$TAP_TMP" "$(command -v skopeo)" >"$TAP_TMP/bin/skopeo"
chmod +x "$TAP_TMP/bin/skopeo"
touch "$TAP_TMP/skopeo.calls"

start_worker() { # start_worker LOG [args]
  local log=$1; shift
  PATH="$TAP_TMP/bin:$PATH" bg_start "$log" "$B/dirigent-worker" --port 0 --name imgconf --runtime oci \
    --controlPlaneAddress "" --dataDir "$TAP_TMP/data" --netnsPool 1 --killGrace 200ms \
    --imageRoots "$ROOT" --imageRegistries "$SILENT,localhost" "$@"
  WPID=$BG_PID
  wait_for_log "$log" 'imgconf: listening on' 20 || return 1
  WKA=127.0.0.1:$(port_of "$log" 'imgconf: listening on')
}
create() { # create IMAGE -> "BODY CODE" on stdout
  curl -s -m 60 -w ' %{http_code}' -XPOST "http://$WKA/v1/sandboxes" \
    -d "{\"function\":\"f\",\"image\":\"$1\",\"cpuMilli\":100,\"memoryMiB\":64}" | tr '\n' ' '
}

start_worker "$TAP_TMP/w.log" --imagePullTimeout 1s || { echo "Bail out! worker did not start"; exit 1; }

t_host_paths() {
  local body ref out=""
  for ref in "oci:/etc:latest" "docker-archive:/etc/shadow" "docker-archive:/etc/no-such-file" \
    "oci-archive:$ROOT/etc-link/shadow" "oci:$ROOT/../../../etc:x" "oci:$ROOT/etc-link:latest"; do
    body=$(create "$ref"); echo "$ref -> $body"
    grep -qF "field 'image': '$ref' is not an image below this worker's image roots (imageRoots: $ROOT; its log has the reason)" <<<"$body" &&
      grep -q ' 400 *$' <<<"$body" || return 1
    out+=$body
  done
  # nothing of the files: no "no such file", no shadow line (root's entry starts "root:")
  ! grep -qiE 'no such|permission|root:' <<<"$out" || return 1
  [ ! -s "$TAP_TMP/skopeo.calls" ] || { cat "$TAP_TMP/skopeo.calls"; return 1; }
}
check "local references outside imageRoots (a directory, /etc/shadow, a missing file, links and '..' out): the same 400, nothing run" t_host_paths

t_fifo() {
  local body
  body=$(create "oci-archive:$ROOT/fifo.tar"); echo "$body"
  grep -q "is not an image below this worker's image roots.* 400 *$" <<<"$body" || return 1
  grep -q "fifo.tar: an archive must be a regular file" "$TAP_TMP/w.log" || return 1
  [ ! -s "$TAP_TMP/skopeo.calls" ]
}
check "an archive that is a FIFO is refused (400; the log says why), skopeo never run" t_fifo

t_registries() {
  local body ref
  for ref in "169.254.169.254/latest/meta-data:x" "127.0.0.1:9090/v1/x:latest" "10.0.0.1:5000/fn:latest" "docker.io/library/busybox:latest" "busybox"; do
    body=$(create "$ref"); echo "$ref -> $body"
    grep -q "field 'image': registry '.*' is not one this worker pulls from (imageRegistries: $SILENT,localhost).* 400 *$" <<<"$body" || return 1
  done
  [ ! -s "$TAP_TMP/skopeo.calls" ] || { cat "$TAP_TMP/skopeo.calls"; return 1; }
}
check "registries outside imageRegistries (link-local, another loopback port, docker.io) are refused (400), nothing fetched" t_registries

t_legit() {
  local body ep
  body=$(create "oci:$ROOT/fn:latest"); echo "$body"
  grep -q ' 201 *$' <<<"$body" || return 1
  ep=$(json_field "${body% *}" endpoint)
  [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://$ep/")" = 200 ] || return 1
  # skopeo was given the resolved path
  grep -q "^copy .* oci:$(realpath "$ROOT")/fn:latest " "$TAP_TMP/skopeo.calls" ||
    { cat "$TAP_TMP/skopeo.calls"; return 1; }
  curl -sf -XDELETE "http://$WKA/v1/sandboxes/$(json_field "${body% *}" id)" >/dev/null
}
check "the image below imageRoots still runs and answers" t_legit

t_timeout() {
  local body
  body=$(create "$SILENT/fn:latest"); echo "$body"
  grep -q "pull of $SILENT/fn:latest failed: timed out after 1 s (imagePullTimeout).* 503 *$" <<<"$body" || return 1
  # skopeo is gone (its process group was killed)
  poll_until 100 eval '! pgrep -f "skopeo copy .*docker://$SILENT/fn:latest" >/dev/null'
}
check "a pull from a registry that never answers fails after imagePullTimeout (503 naming it), skopeo killed" t_timeout

t_shutdown() {
  oci_stop "$WPID" 200 || return 1
  start_worker "$TAP_TMP/w2.log" --imagePullTimeout 10m || return 1
  # a pull that hangs (10 min allowed): the create waits; SIGTERM must not wait for it
  curl -s -m 60 -o "$TAP_TMP/hang.out" -XPOST "http://$WKA/v1/sandboxes" \
    -d "{\"function\":\"f\",\"image\":\"$SILENT/other:latest\",\"cpuMilli\":100,\"memoryMiB\":64}" &
  local c=$!
  poll_until 200 pgrep -f "skopeo copy .*docker://$SILENT/other:latest" || return 1
  oci_stop "$WPID" 200 || { echo "the worker did not stop"; return 1; }
  wait_bounded "$c"
  grep -q "the pull is killed" "$TAP_TMP/w2.log" || return 1
  poll_until 100 eval '! pgrep -f "skopeo copy .*docker://$SILENT/other:latest" >/dev/null'
}
check "SIGTERM during a hanging pull: the worker stops (exit), skopeo killed" t_shutdown

t_leftovers() {
  oci_names "$TAP_TMP/w2.log"
  [ ! -e "$OCI_RUN" ] && ! ip link show "$OCI_BRIDGE" >/dev/null 2>&1
}
check "nothing of the worker is left on the host" t_leftovers
