#!/usr/bin/env bash
# `make install` as a packager runs it: `meson install --destdir` of the build into a temporary
# directory, at the build's prefix. Checks that the binaries, the systemd units (under the
# original's service names) and the example configs land where docs/operations.md says, that
# the units pass `systemd-analyze verify` (skipped with a message where systemd-analyze is
# missing), that the installed binaries run and load the installed configs, that a reinstall
# keeps an edited config, and that the Makefile hands PREFIX and DESTDIR to meson.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
S=$(cd "${DG_SOURCE_DIR:-$(dirname "$0")/../..}" && pwd)
D=$TAP_TMP/dest

plan 9
trap 'declare -F restore_log >/dev/null && restore_log; tap_cleanup' EXIT

# the build's install directories (absolute; sysconfdir may lie outside the prefix, e.g. /etc)
DIRS=$(meson introspect --buildoptions "$B" | /usr/bin/python3 -c '
import json, os, sys
o = {x["name"]: x["value"] for x in json.load(sys.stdin)}
p = o["prefix"]
def j(v):
    return v if os.path.isabs(v) else os.path.join(p, v)
unit = o.get("systemdunitdir") or os.path.join(p, "lib/systemd/system")
print("PREFIX=%s BINDIR=%s ETC=%s/dirigent DATA=%s/dirigent UNITDIR=%s"
      % (p, j(o["bindir"]), j(o["sysconfdir"]), j(o["datadir"]), unit))') ||
  { echo "Bail out! cannot read the build's install directories"; exit 1; }
eval "$DIRS"
DAEMONS="dirigent-cp dirigent-dp dirigent-worker"
UNITS="control_plane data_plane worker_node"

# meson install overwrites the build's install log, which `make uninstall` reads: keep the
# operator's and put it back at the end
LOG=$B/meson-logs/install-log.txt
[ -f "$LOG" ] && cp "$LOG" "$TAP_TMP/install-log.txt"
restore_log() { if [ -f "$TAP_TMP/install-log.txt" ]; then cp "$TAP_TMP/install-log.txt" "$LOG"; else rm -f "$LOG"; fi; }
install_once() { meson install -C "$B" --no-rebuild --quiet --destdir "$D"; }
check "meson install --destdir DIR installs the build under DIR$PREFIX" install_once

t_binaries() {
  local b
  for b in dirigent $DAEMONS dirigent-fn; do
    [ -x "$D$BINDIR/$b" ] || { echo "missing $D$BINDIR/$b"; return 1; }
  done
  if [ -d "$B/images/dirigent-fn" ]; then
    [ -f "$D$DATA/images/dirigent-fn/index.json" ] || { echo "no image in $D$DATA/images"; return 1; }
  fi
}
check "binaries in $BINDIR, the dirigent-fn image in $DATA/images" t_binaries

t_units() {
  local u f d cfg
  for u in $UNITS; do
    f=$D$UNITDIR/$u.service
    [ -f "$f" ] || { echo "missing $f"; return 1; }
    case $u in control_plane) d=dirigent-cp cfg=cp ;; data_plane) d=dirigent-dp cfg=dp ;;
      *) d=dirigent-worker cfg=worker ;; esac
    grep -qx "ExecStart=$BINDIR/$d --config $ETC/$cfg.yaml" "$f" &&
      grep -qx "Restart=on-failure" "$f" && grep -qx "WantedBy=multi-user.target" "$f" ||
      { echo "$f:"; grep -E '^(ExecStart|Restart|WantedBy)=' "$f"; return 1; }
  done
  ! grep -q User= "$D$UNITDIR/worker_node.service" # the worker runs as root
}
check "units control_plane, data_plane, worker_node.service in $UNITDIR" t_units

t_configs() {
  local c
  for c in cp dp worker; do
    cmp "$S/configs/etc/$c.yaml" "$D$ETC/$c.yaml" && cmp "$S/configs/etc/$c.yaml" \
      "$D$DATA/examples/$c.yaml" || return 1
  done
}
check "example configs in $ETC and $DATA/examples" t_configs

t_run() {
  local b
  for b in $DAEMONS dirigent-fn; do
    "$D$BINDIR/$b" --help >"$TAP_TMP/help" 2>&1 && grep -q "^Usage: $b" "$TAP_TMP/help" ||
      { echo "$b --help:"; head -3 "$TAP_TMP/help"; return 1; }
  done
  "$D$BINDIR/dirigent" --help >"$TAP_TMP/help" 2>&1 || { head -3 "$TAP_TMP/help"; return 1; }
}
check "the installed binaries run (--help)" t_run

# load PROG CONFIG: the installed program loads the installed config, silently
t_load() {
  local p c
  for p in cp:cp dp:dp worker:worker; do
    c=$D$ETC/${p#*:}.yaml
    "$D$BINDIR/dirigent-${p%%:*}" --config "$c" --print-config >"$TAP_TMP/eff" 2>"$TAP_TMP/err" ||
      { echo "dirigent-${p%%:*} --config $c:"; cat "$TAP_TMP/err"; return 1; }
    [ ! -s "$TAP_TMP/err" ] || { echo "warnings:"; cat "$TAP_TMP/err"; return 1; }
  done
  grep -qx 'runtime: "oci"' "$TAP_TMP/eff"
}
check "the installed daemons load the installed configs without a warning" t_load

t_reinstall() {
  echo "# edited by the operator" >>"$D$ETC/cp.yaml"
  install_once >/dev/null || return 1
  tail -1 "$D$ETC/cp.yaml" | grep -qx "# edited by the operator" ||
    { echo "the edited config was overwritten"; return 1; }
  cmp "$S/configs/etc/cp.yaml" "$D$DATA/examples/cp.yaml"
}
check "a reinstall keeps an edited config (the example is refreshed)" t_reinstall

if command -v systemd-analyze >/dev/null; then
  t_verify() {
    # ExecStart must name an executable: point it at the DESTDIR copy
    local u
    mkdir -p "$TAP_TMP/units"
    for u in $UNITS; do
      sed "s|^ExecStart=$BINDIR/|ExecStart=$D$BINDIR/|" "$D$UNITDIR/$u.service" \
        >"$TAP_TMP/units/$u.service"
    done
    # verify exits 0 on unknown keys and bad values too; any output is a finding
    systemd-analyze verify "$TAP_TMP"/units/*.service >"$TAP_TMP/verify" 2>&1 &&
      [ ! -s "$TAP_TMP/verify" ] || { cat "$TAP_TMP/verify"; return 1; }
  }
  check "the units pass systemd-analyze verify" t_verify
else
  TAP_N=$((TAP_N + 1))
  echo "ok $TAP_N - the units pass systemd-analyze verify # SKIP systemd-analyze is not installed (Debian package systemd)"
fi

t_make() {
  make -s -n -C "$S" install PREFIX=/opt/dg DESTDIR=pkg BUILD="$B" >"$TAP_TMP/make" 2>&1 || return 1
  grep -qF -- "-Dprefix=/opt/dg -Dsysconfdir=/etc" "$TAP_TMP/make" &&
    grep -qF -- "--destdir $S/pkg" "$TAP_TMP/make" || { cat "$TAP_TMP/make"; return 1; }
}
check "make install hands PREFIX, SYSCONFDIR and DESTDIR to meson" t_make
tap_done
