#!/usr/bin/env bash
# The process runtime's confinement (issue 14, finding 2; docs/security.md "Process runtime"):
# a create that names /bin/sh to run `id > f` as root is refused and makes nothing; so is any
# executable outside processAllowedDirs, a symlink in an allowed directory pointing out, and a
# '..' path; a root worker without processUser runs nothing; the build's dirigent-fn runs, as
# processUser (its uids in /proc/PID/status). Root only for the uid checks (skipped otherwise).
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
WK=$B/dirigent-worker
FN=$B/dirigent-fn

plan 6
if [ "$(id -u)" != 0 ] || ! id nobody >/dev/null 2>&1; then
  for i in $(seq 1 6); do echo "ok $i # SKIP needs root and a user nobody"; done
  exit 0
fi
NOBODY=$(id -u nobody)
# a secret in the workers' environment (as a cloud key would be): no sandbox may see it
export AWS_SECRET_ACCESS_KEY=dg-secret-$$

start_worker() { # start_worker LOG [args...] -> WK_PID, WK_URL
  local log=$1; shift
  bg_start "$log" "$WK" --workerNodeIp 127.0.0.1 --port 0 --name conf-wk --controlPlaneAddress '' \
    --runDir "$TAP_TMP/run-$RANDOM" "$@"
  WK_PID=$BG_PID
  wait_for_log "$log" 'listening on 127\.0\.0\.1:[0-9]+, runtime' || return 1
  WK_URL="http://127.0.0.1:$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+, runtime' "$log" | head -1 | sed 's/.*://; s/,.*//')"
}
create() { # create JSON -> prints "BODY CODE"
  curl -s -w ' %{http_code}' -XPOST "$WK_URL/v1/sandboxes" -d "$1" | tr '\n' ' '
}

# the attack: a shell writing a file (in a directory anyone may write, so only the refusal
# keeps the file from appearing)
ATTACK_DIR=$TAP_TMP/attack
mkdir -m 1777 "$ATTACK_DIR"
ATTACK='{"function":"x","image":"/bin/sh","args":["-c","id > '"$ATTACK_DIR"'/f"]}'

t_root_no_user() {
  start_worker "$TAP_TMP/w0.log" || return 1
  local body
  body=$(create "$ATTACK"); echo "$body"
  grep -q "processUser.* 400 *$" <<<"$body" || return 1
  body=$(create '{"function":"fn","image":"'"$FN"'"}'); echo "$body"
  grep -q "processUser.* 400 *$" <<<"$body" || return 1
  grep -q "without processUser: process sandboxes are refused" "$TAP_TMP/w0.log" || return 1
  sleep 0.2; [ ! -e "$ATTACK_DIR/f" ] || { cat "$ATTACK_DIR/f"; return 1; }
  kill -TERM "$WK_PID"; wait_bounded "$WK_PID"
}
check "a root worker without processUser refuses every create with 400 naming processUser" t_root_no_user

# the worker inherits descriptor 7 (a supervisor's pipe, a shell's file): no sandbox may
exec 7>"$TAP_TMP/inherited"
start_worker "$TAP_TMP/w1.log" --processUser nobody ||
  { echo "Bail out! dirigent-worker did not start"; exit 1; }

t_attack() {
  local body
  body=$(create "$ATTACK"); echo "$body"
  grep -q "field 'image': '/bin/sh' is not below the process runtime's allowed directories (processAllowedDirs: $FN;.* 400 *$" <<<"$body" || return 1
  # by default only dirigent-fn itself, not its directory (installed, that is /usr/bin): the
  # worker's own binary next to it is refused too
  body=$(create '{"function":"x","image":"'"$WK"'","args":["--help"]}'); echo "$body"
  grep -q "field 'image': '$WK' is not below .*(processAllowedDirs: $FN;.* 400 *$" <<<"$body" || return 1
  sleep 0.2; [ ! -e "$ATTACK_DIR/f" ] || { cat "$ATTACK_DIR/f"; return 1; }
  [ "$(curl -s "$WK_URL/v1/sandboxes" | /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)["sandboxes"]))')" = 0 ]
}
check "the attack (/bin/sh -c 'id > f') and another executable beside dirigent-fn are refused with 400 naming image and processAllowedDirs; no file, no sandbox" t_attack

t_escapes() {
  local body dir=$TAP_TMP/allowed
  # an allowed directory with a link pointing out of it, and '..' out of the build directory
  kill -TERM "$WK_PID"; wait_bounded "$WK_PID"
  mkdir -p "$dir" && ln -s /bin/sh "$dir/sh" && ln -s "$FN" "$dir/fn" || return 1
  start_worker "$TAP_TMP/w2.log" --processUser nobody --processAllowedDirs "$B,$dir" || return 1
  body=$(create '{"function":"x","image":"'"$dir"'/sh","args":["-c","id > '"$ATTACK_DIR"'/f"]}'); echo "$body"
  grep -q "field 'image': '$dir/sh' is not below .* 400 *$" <<<"$body" || return 1
  body=$(create '{"function":"x","image":"'"$B"'/../../../../../../bin/sh","args":["-c","id > '"$ATTACK_DIR"'/f"]}'); echo "$body"
  grep -q "field 'image': .* is not below .* 400 *$" <<<"$body" || return 1
  body=$(create '{"function":"x","image":"'"$B"'/./dirigent-fn"}'); echo "$body"
  grep -q " 400 *$" <<<"$body" || return 1
  sleep 0.2; [ ! -e "$ATTACK_DIR/f" ]
}
check "a symlink in an allowed directory pointing out, '..' and '.' paths are refused (400)" t_escapes

t_runs_as_user() {
  local out pid uids gids
  out=$(curl -sf -XPOST "$WK_URL/v1/sandboxes" \
    -d "{\"function\":\"hello\",\"image\":\"$FN\",\"env\":[\"DG_TEST_TAG=pc-$$\"]}") || return 1
  echo "create: $out"
  curl -sf -H 'function: hello' "http://$(json_field "$out" endpoint)/" >/dev/null || return 1
  pid=$(grep -l "DG_TEST_TAG=pc-$$" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | head -1)
  [ -n "$pid" ] || return 1
  uids=$(awk '/^Uid:/ {print $2,$3,$4,$5}' "/proc/$pid/status")
  gids=$(awk '/^Gid:/ {print $2,$3,$4,$5}' "/proc/$pid/status")
  echo "pid $pid: Uid $uids, Gid $gids, Groups $(awk '/^Groups:/ {print $2}' "/proc/$pid/status")"
  [ "$uids" = "$NOBODY $NOBODY $NOBODY $NOBODY" ] && [ "$gids" = "$(id -g nobody) $(id -g nobody) $(id -g nobody) $(id -g nobody)" ] &&
    [ -z "$(awk '/^Groups:/ {print $2}' "/proc/$pid/status")" ] || return 1
  # its environment: its own env_vars, PATH and PORT, none of the worker's secrets
  tr '\0' '\n' <"/proc/$pid/environ" >"$TAP_TMP/sb.env"
  grep -q "^PATH=" "$TAP_TMP/sb.env" && grep -q "^PORT=" "$TAP_TMP/sb.env" || return 1
  ! grep -q "AWS_SECRET_ACCESS_KEY" "$TAP_TMP/sb.env" || { echo "the worker's secret reached the sandbox"; return 1; }
  ! ls -l "/proc/$pid/fd/" | grep -q "$TAP_TMP/inherited" || { echo "the worker's inherited descriptor reached the sandbox"; return 1; }
}
check "the build's dirigent-fn runs and answers, as processUser (every uid and gid, no groups), without the worker's environment or inherited descriptors" t_runs_as_user

t_link_in() {
  # a link inside the allowed directories to an allowed executable is fine
  local out
  out=$(curl -sf -XPOST "$WK_URL/v1/sandboxes" -d "{\"function\":\"linked\",\"image\":\"$TAP_TMP/allowed/fn\"}") || return 1
  curl -sf -H 'function: linked' "http://$(json_field "$out" endpoint)/" >/dev/null
}
check "a link in an allowed directory to an allowed executable runs" t_link_in

t_bad_user() {
  local out rc=0
  out=$(timeout 20 "$WK" --port 0 --controlPlaneAddress '' --runDir "$TAP_TMP/run-bad" --processUser root 2>&1) || rc=$?
  echo "$out" | tail -2
  [ $rc != 0 ] && grep -q "processUser: 'root' is uid 0" <<<"$out" || return 1
  rc=0
  out=$(timeout 20 "$WK" --port 0 --controlPlaneAddress '' --runDir "$TAP_TMP/run-bad" --processUser no-such-user-x 2>&1) || rc=$?
  [ $rc != 0 ] && grep -q "processUser: no user 'no-such-user-x'" <<<"$out"
}
check "processUser root or an unknown user stops the start naming the key" t_bad_user
