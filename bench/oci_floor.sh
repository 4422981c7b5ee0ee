#!/usr/bin/env bash
# Containers at the floor (issue 16, requirement 2), in one run:
#   1. the bare-crun parallel floor: `crun run` of the dirigent-fn image to its first HTTP 200,
#      as many at a time as cores (crun_floor in bench/lib.sh, as sandbox_oci.sh measures it)
#   2. ONE long-lived dirigent cluster with the oci runtime (coldstart_sweep.sh --runtime oci
#      --hold-rate: its cluster, load and statistics), offered FRACTION (0.9) x the floor's rate
#      of cold starts (`dirigent load rps --cold`, every call to a function at zero) for
#      DURATION s measured (60; --quick 15) after WARM s not counted (8; --quick 5)
#   3. after the cluster's clean stop: containers, mounts, namespaces, veths and cgroups of the
#      worker's instance left on the host (the script fails if any)
# Goal: achieved >= 0.9 x floor, p99 <= 50 ms, no error, nothing left over.
# Root and crun. Takes /tmp/dg-itest.lock for the whole run (bridges, containers and fixed
# names are shared with the integration tests), unless its caller holds it already.
#   bench/oci_floor.sh [--quick] [--build DIR] [--out DIR] [--duration S] [--fraction F]
#                      [--floor-n N]
# Writes OUT/oci_floor.csv (a row per run, appended), OUT/raw/oci_floor_*.csv.gz (the hold's
# per-invocation CSV), OUT/raw/oci_floor_trace.csv.gz (the CP's cold_start_trace.csv) and the
# daemons' warnings (OUT/raw/oci_floor_{cp,dp,wk}.log), OUT:
# bench/results; --quick: a scratch directory (mktemp, printed), never bench/results.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [ -z "${DG_OCI_FLOOR_LOCKED:-}" ] && ! in_itest_lock; then # not when the caller holds it
  DG_OCI_FLOOR_LOCKED=1 exec flock /tmp/dg-itest.lock "$0" "$@"
fi
cd "$(dirname "$0")/.."
BUILD=build OUT="" QUICK=0 DUR="" WARM="" FRACTION=0.9 FLOOR_N=""
usage() { echo "usage: $0 [--quick] [--build DIR] [--out DIR] [--duration S] [--fraction F] [--floor-n N]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1;;
    --build) BUILD=$2; shift;;
    --out) OUT=$2; shift;;
    --duration) DUR=$2; shift;;
    --fraction) FRACTION=$2; shift;;
    --floor-n) FLOOR_N=$2; shift;;
    *) usage;;
  esac
  shift
done
if [ "$(id -u)" != 0 ] || ! command -v crun >/dev/null; then
  echo "oci_floor: needs root and crun: skipped"; exit 0
fi
if [ "$QUICK" = 1 ]; then
  : "${DUR:=15}" "${WARM:=5}" "${FLOOR_N:=40}"
  [ -n "$OUT" ] || OUT=$(mktemp -d /tmp/dg-ocifloor-quick.XXXXXX)
else
  : "${DUR:=60}" "${WARM:=8}" "${FLOOR_N:=100}" "${OUT:=bench/results}"
fi
mkdir -p "$OUT/raw"
OUT=$(cd "$OUT" && pwd)
if [ "$QUICK" = 1 ] && [ "$OUT" = "$(pwd)/bench/results" ]; then
  echo "oci_floor: --quick never writes to bench/results (the committed figures)" >&2; exit 2
fi
B=$(cd "$BUILD" && pwd)
IMG=$B/images/dirigent-fn
[ -f "$IMG/index.json" ] || { echo "oci_floor: no image at $IMG (make image)" >&2; exit 1; }
TMP=$(mktemp -d /tmp/dg-ocifloor.XXXXXX)
trap 'crun_floor_cleanup "$TMP"; rm -rf "$TMP"' EXIT
load1() { awk '{print $1}' /proc/loadavg; }
# the kernel's ARP table refusing a new entry (past gc_thresh3), summed over the CPUs since boot
arp_full() { /usr/bin/python3 -c 'print(sum(int(l.split()[12], 16) for l in list(open("/proc/net/stat/arp_cache"))[1:]))' 2>/dev/null || echo 0; }
echo "# oci_floor: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -r), crun $(crun --version | head -1 | awk '{print $3}'), build $BUILD, load average $(load1)"

# 1. the floor
crun_floor "$TMP" "$IMG" "$FLOOR_N" 0 >"$TMP/floor.txt"
FLOOR=$(awk '$1 == "floor_parallel_per_s" {print $2}' "$TMP/floor.txt")
RATE=$(awk -v f="$FLOOR" -v x="$FRACTION" 'BEGIN {printf "%.1f", f * x}')
echo "bare crun parallel floor: $FLOOR containers/s ($FLOOR_N containers, $(nproc) at a time); offered: $RATE cold starts/s ($FRACTION x) for $DUR s (+$WARM s not counted)"

# 2. + 3. one cluster, the hold, leftovers after its stop
SW=$TMP/sweep
mkdir -p "$SW"
rc=0
ARP0=$(arp_full)
bench/coldstart_sweep.sh --runtime oci --build "$BUILD" --out "$SW" $([ "$QUICK" = 1 ] && echo --quick) \
  --hold-rate "$RATE" --hold $((DUR + WARM)) --warmup "$WARM" --check-leftovers 2>&1 | tee "$TMP/sweep.txt" || rc=1
ARPFULL=$(($(arp_full) - ARP0))
RES=$(grep '^RESULT ' "$TMP/sweep.txt" | tail -1 || true)
[ -n "$RES" ] || { echo "oci_floor: the cluster run gave no RESULT" >&2; exit 1; }
val() { sed -n "s/.* $1=\\([^ ]*\\).*/\\1/p" <<<"$RES"; }
ACH=$(val hold_achieved) SENT=$(val hold_sent) OK=$(val hold_ok) P50=$(val hold_p50_ms) P99=$(val hold_p99_ms)
ERRS=$(val hold_errors) OTHER=$(val hold_other_cpu_pct)
LC=$(val left_containers) LM=$(val left_mounts) LN=$(val left_netns) LV=$(val left_veths) LG=$(val left_cgroups)
[ -n "$ACH" ] || { echo "oci_floor: the hold failed ($RES)" >&2; exit 1; }
SENT_PS=$ACH # what the load generator sent per second; achieved: the cold starts served (200) per second
ACH=$(awk -v o="$OK" -v d="$DUR" 'BEGIN {printf "%.1f", o / d}')
for f in "$SW"/raw/*hold.csv.gz; do [ -f "$f" ] && cp "$f" "$OUT/raw/oci_floor$([ "$QUICK" = 1 ] && echo _quick || true)_hold.csv.gz"; done
for f in "$SW"/cold_start_trace*.csv; do [ -f "$f" ] && gzip -c "$f" >"$OUT/raw/oci_floor$([ "$QUICK" = 1 ] && echo _quick || true)_trace.csv.gz"; done
for d in cp dp wk; do for f in "$SW"/raw/*_$d.log; do [ -f "$f" ] && cp "$f" "$OUT/raw/oci_floor$([ "$QUICK" = 1 ] && echo _quick || true)_$d.log"; done; done
goal() { /usr/bin/python3 -c "import sys; sys.exit(0 if $1 else 1)" && echo met || echo "NOT met"; }
echo
echo "floor $FLOOR/s; offered $RATE/s (sent $SENT_PS/s); achieved $ACH/s ($OK of $SENT ok, $ERRS errors); p50 $P50 ms, p99 $P99 ms; other processes used $OTHER% of one CPU"
echo "ARP table full (a new neighbour entry refused) during the run: $ARPFULL times"
echo "left over: $LC containers, $LM mounts, $LN namespaces, $LV veths, $LG cgroups"
echo "goals: rate >= 0.9x floor ($(goal "$ACH >= 0.9 * $FLOOR and $ERRS == 0")), p99 <= 50 ms ($(goal "$P99 <= 50")), no error ($(goal "$ERRS == 0")), nothing left ($(goal "$LC + $LM + $LN + $LV + $LG == 0"))"
CSV=$OUT/oci_floor$([ "$QUICK" = 1 ] && echo _quick || true).csv
[ -s "$CSV" ] || echo "date,floor_per_s,floor_n,offered_per_s,sent_per_s,achieved_per_s,sent,ok,errors,p50_ms,p99_ms,duration_s,warmup_s,other_cpu_pct,load1,left_containers,left_mounts,left_netns,left_veths,left_cgroups,arp_table_full" >"$CSV"
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ),$FLOOR,$FLOOR_N,$RATE,$SENT_PS,$ACH,$SENT,$OK,$ERRS,$P50,$P99,$DUR,$WARM,$OTHER,$(load1),$LC,$LM,$LN,$LV,$LG,$ARPFULL" >>"$CSV"
echo "summary: $CSV"
echo "RESULT oci_floor_floor_per_s=$FLOOR offered_per_s=$RATE achieved_per_s=$ACH rate_ratio=$(awk -v a="$ACH" -v f="$FLOOR" 'BEGIN {printf "%.2f", a / f}') p50_ms=$P50 p99_ms=$P99 errors=$ERRS left_containers=$LC left_mounts=$LM left_netns=$LN left_veths=$LV left_cgroups=$LG arp_table_full=$ARPFULL duration_s=$DUR"
exit $rc
