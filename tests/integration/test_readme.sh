#!/usr/bin/env bash
# The README's quick start, literally, on a fresh copy of the working tree (issue 12): the
# commands of README.md's "Run a local cluster" block are read from the README itself and run
# in a new directory that holds only the tracked files (uncommitted changes included), as a new
# user runs them: `make up` in the background (a fresh build, its state in that copy), the curl
# line, `dirigent status`, `function deploy`, `invoke`, then Ctrl-C as a terminal sends it (a
# SIGINT to the whole foreground process group). Each answer is checked, and after Ctrl-C
# nothing of the cluster may remain: processes, containers, mounts, network namespaces, links,
# cgroups, nftables tables.
#
# A README command this test has no check for fails the test: when the README changes, this
# test changes with it. Uses the default ports (8080, 9090, ...): not run in parallel.
set -u
SRC=${DG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$SRC/tests/lib/tap.sh"

plan 5

CLONE=$TAP_TMP/clone
UP_LOG=$TAP_TMP/up.log
UP_PGID=

# a process group still running at exit (a failed check) is stopped like a terminal would
readme_cleanup() {
  if [ -n "$UP_PGID" ] && kill -0 -- "-$UP_PGID" 2>/dev/null; then
    kill -INT -- "-$UP_PGID" 2>/dev/null
    for _ in $(seq 100); do kill -0 -- "-$UP_PGID" 2>/dev/null || break; sleep 0.1; done
    kill -9 -- "-$UP_PGID" 2>/dev/null
  fi
  tap_cleanup
}
trap readme_cleanup EXIT

# ---- the commands, from the README ----------------------------------------------------------
# The first ```sh block after "## Run a local cluster": command lines, and the comment lines
# that show what `make up` prints.
readme_block() {
  awk '/^## Run a local cluster/ {s = 1; next}
       s == 1 && /^```sh/ {s = 2; next}
       s == 2 && /^```/ {exit}
       s == 2 {print}' "$SRC/README.md"
}
mapfile -t CMDS < <(readme_block | grep -v '^#' | sed 's/ *#.*$//' | grep -v '^ *$')
mapfile -t SHOWN < <(readme_block | sed -n 's/^# \(ready: .*\)$/\1/p')

t_copy() {
  mkdir -p "$CLONE" || return 1
  # the tracked files as they are now (uncommitted changes included), and new files not ignored
  (cd "$SRC" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf -) | tar -xf - -C "$CLONE" || return 1
  [ -f "$CLONE/README.md" ] && [ ! -e "$CLONE/build" ] && [ ! -e "$CLONE/data" ] || return 1
  echo "${#CMDS[@]} commands: ${CMDS[*]}"
  [ "${CMDS[0]}" = "make up" ] && [ ${#SHOWN[@]} = 1 ]
}
check "a fresh copy of the tree; the README's quick start starts with 'make up' and shows its ready line" t_copy

BEFORE=$TAP_TMP/before
host_snapshot >"$BEFORE"
HOST_OWN=$CLONE # the cluster runs from the fresh copy's build

RUNTIME=
t_make_up() {
  # its own session, as a terminal's foreground job: Ctrl-C goes to the whole group
  # as a new user's shell: none of the make variables of the `make test` that runs this test
  # (SANITIZE=... would build into build-san, where the README's build/dirigent is not)
  (cd "$CLONE" && exec env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u SANITIZE -u BUILD -u WERROR \
    setsid bash -c "${CMDS[0]}") >"$UP_LOG" 2>&1 &
  UP_PGID=$!
  # a fresh build comes first
  wait_for_log "$UP_LOG" "^${SHOWN[0]//./\\.}\$|^dirigent: |Error|error:" 240 || return 1
  if ! grep -qxF "${SHOWN[0]}" "$UP_LOG"; then tail -n 15 "$UP_LOG"; return 1; fi
  RUNTIME=$(sed -n 's/^runtime \([a-z]*\).*/\1/p' "$UP_LOG" | head -n 1)
  echo "runtime $RUNTIME"
  [ -d "$CLONE/data/local/logs" ] && [ -n "$RUNTIME" ]
}
check "make up on a fresh copy builds, starts the cluster and prints the README's ready line" t_make_up

# what each README command must answer (a command with no entry here fails the test)
expect() {
  local cmd=$1 out=$2
  case "$cmd" in
  "curl -H 'Host: hello'"*)
    [ "$(json_field "$out" Function)" = hello ] && [ "$(json_field "$out" Status)" = OK ] ;;
  "build/dirigent status")
    grep -qE '^WORKERS' <<<"$out" && grep -qE '^hello ' <<<"$out" ;;
  "build/dirigent function deploy mine "*)
    grep -q mine <<<"$out" ;;
  "build/dirigent invoke mine")
    [ "$(json_field "$out" Function)" = mine ] && [ "$(json_field "$out" Status)" = OK ] ;;
  *)
    echo "README command without a check in tests/integration/test_readme.sh: $cmd"
    return 1 ;;
  esac
}

t_commands() {
  local c run out
  for c in "${CMDS[@]:1}"; do
    run=$c
    # the README's note: with the process runtime, the executable instead of the image
    if [ "$RUNTIME" = process ]; then
      run=${run//oci:\$PWD\/build\/images\/dirigent-fn:latest/\$PWD\/build\/dirigent-fn}
    fi
    echo "\$ $run"
    out=$(cd "$CLONE" && timeout 60 bash -c "$run" 2>"$TAP_TMP/cmd.err") ||
      { echo "$out"; cat "$TAP_TMP/cmd.err"; return 1; }
    echo "$out"
    expect "$c" "$out" || return 1
  done
}
check "each README command answers as it should (curl, status, deploy, invoke)" t_commands

t_ctrl_c() {
  kill -INT -- "-$UP_PGID" || return 1
  local i
  for i in $(seq 300); do kill -0 -- "-$UP_PGID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 -- "-$UP_PGID" 2>/dev/null; then echo "still running 30 s after Ctrl-C"; ps -o pid,args -g "$UP_PGID"; return 1; fi
  UP_PGID=
  tail -n 3 "$UP_LOG"
  grep -q 'dirigent: stopped' "$UP_LOG" || return 1
  # each daemon was told once: no daemon saw a second signal
  if grep -l 'second signal' "$CLONE"/data/local/logs/*.log; then return 1; fi
  return 0
}
check "Ctrl-C stops the cluster; every daemon shuts down once" t_ctrl_c

check "after Ctrl-C nothing of the cluster remains (processes, mounts, netns, links, cgroups, nft tables)" host_nothing_left "$BEFORE"
