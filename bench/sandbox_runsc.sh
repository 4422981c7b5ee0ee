#!/usr/bin/env bash
# gVisor against crun (issue 14): cold starts of the dirigent-fn image through a standalone
# dirigent-worker's API, one at a time, with ociRuntime crun and then runsc (same image, same
# pooled network namespaces): the create's total until its first HTTP answer, and the OCI
# runtime's part of it (latencyUs.start: `crun run --detach` / `runsc run --detach`), p50/p90
# over N creates (each deleted before the next; the image is pulled once before).
# Root, crun and runsc. Run under `flock /tmp/dg-itest.lock` on a shared machine.
#   bench/sandbox_runsc.sh [--build DIR] [--n N]
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."
BUILD=build
N=30
while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD=$2; shift;;
    --n) N=$2; shift;;
    *) echo "usage: $0 [--build DIR] [--n N]" >&2; exit 2;;
  esac
  shift
done
if [ "$(id -u)" != 0 ] || ! command -v crun >/dev/null || ! command -v runsc >/dev/null; then
  echo "sandbox_runsc: needs root, crun and runsc: skipped"; exit 0
fi
B=$(cd "$BUILD" && pwd)
IMG=$B/images/dirigent-fn
[ -f "$IMG/index.json" ] || { echo "sandbox_runsc: no image at $IMG (make image)" >&2; exit 1; }
TMP=$(mktemp -d /tmp/dg-bench-runsc.XXXXXX)
PIDS=()
trap 'stop_pids; rm -rf "$TMP"' EXIT

for rt in crun runsc; do
  "$B/dirigent-worker" --port 0 --name bench-$rt --runtime oci --ociRuntime $rt --controlPlaneAddress "" \
    --runDir "$TMP/run-$rt" --dataDir "$TMP/data-$rt" --netnsPool 4 --killGrace 200ms \
    --prefetchImages "oci:$IMG:latest" >"$TMP/w-$rt.log" 2>&1 &
  PIDS=($!)
  wait_log "$TMP/w-$rt.log" "bench-$rt: listening on" 30
  wait_log "$TMP/w-$rt.log" "image: oci:.*: ready" 60
  A=127.0.0.1:$(port_of "$TMP/w-$rt.log" "bench-$rt: listening on")
  : >"$TMP/lat-$rt"
  for i in $(seq 1 "$N"); do
    out=$(curl -sf -m 60 -XPOST "http://$A/v1/sandboxes" \
      -d "{\"function\":\"f$i\",\"image\":\"oci:$IMG:latest\",\"cpuMilli\":100,\"memoryMiB\":64}")
    /usr/bin/python3 -c 'import json,sys; l=json.loads(sys.argv[1])["latencyUs"]; print(l["total"], l["start"])' "$out" >>"$TMP/lat-$rt"
    id=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$out")
    curl -sf -XDELETE "http://$A/v1/sandboxes/$id" >/dev/null
    # the delete runs in the background: wait for it, so creates never overlap teardowns
    for _ in $(seq 1 200); do
      curl -sf "http://$A/v1/sandboxes" | grep -q "\"$id\"" || break
      sleep 0.02
    done
  done
  stop_pids
  /usr/bin/python3 - "$rt" "$TMP/lat-$rt" <<'PY'
import sys
rows = [tuple(int(x) for x in l.split()) for l in open(sys.argv[2]) if l.strip()]
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(p * len(v)))] / 1000
tot = [r[0] for r in rows]; st = [r[1] for r in rows]
print(f"{sys.argv[1]:6} n={len(rows)}  create to first answer p50 {pct(tot, .5):6.1f} ms  p90 {pct(tot, .9):6.1f} ms"
      f"   runtime run p50 {pct(st, .5):6.1f} ms  p90 {pct(st, .9):6.1f} ms")
PY
done
