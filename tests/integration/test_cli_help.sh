#!/usr/bin/env bash
# Every dirigent command explains itself and acts on nothing while doing so: `--help`/`-h` at
# any position and `dirigent help CMD` for every command of the table, against a recording
# fake control plane and data plane (no request may reach it); wrong command lines exit 2
# naming the culprit; --json anywhere; tables sized to their content; form fields told as
# options; a refused connection names the address and `dirigent up`; docs/cli.md is the
# table's output. No cluster, ephemeral ports.
set -u
SRC=$(cd "${DG_SOURCE_DIR:-$(dirname "$0")/../..}" && pwd)
. "$SRC/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
D=$B/dirigent

plan 12

# The fake: records "METHOD PATH" of every request; GET /v1/functions answers a list with a
# 60-character name and an unbounded function; POST /v1/functions a 400 naming a form field.
LOG=$TAP_TMP/requests.log
: >"$LOG"
cat >"$TAP_TMP/fake.py" <<'EOF'
import http.server, json, sys
log, portfile = sys.argv[1], sys.argv[2]
LONG = "f" * 30 + "-" + "x" * 29
FNS = [{"name": LONG, "image": "/bin/fn", "state": "ready", "ready": 1, "desired": 1,
        "scaling_lower_bound": 0, "scaling_upper_bound": 5},
       {"name": "hello", "image": "/bin/fn", "state": "idle", "ready": 0, "desired": 0,
        "scaling_lower_bound": 0, "scaling_upper_bound": 2147483647}]
class H(http.server.BaseHTTPRequestHandler):
    def answer(self, code, body, ctype="application/json"):
        b = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        with open(log, "a") as f:
            f.write("%s %s\n" % (self.command, self.path))
        if self.command == "GET" and self.path == "/v1/functions":
            self.answer(200, json.dumps(FNS))
        elif self.command == "POST" and b'"name": "ok"' in body.replace(b'":"', b'": "'):
            self.answer(200, "127.0.0.1:8080;127.0.0.1:8090", "text/plain")
        elif self.command == "POST" and self.path == "/v1/functions":
            self.answer(400, "registration: field 'scaling_lower_bound': expected at most "
                        "scaling_upper_bound (5), got 7\n", "text/plain")
        else:
            self.answer(200, "{}")
    do_GET = do_POST = do_DELETE = do_PUT = any
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(portfile, "w").write(str(s.server_address[1]))
s.serve_forever()
EOF
bg_start "$TAP_TMP/fake.out" /usr/bin/python3 "$TAP_TMP/fake.py" "$LOG" "$TAP_TMP/port"
for i in $(seq 1 100); do [ -s "$TAP_TMP/port" ] && break; sleep 0.05; done
P=$(cat "$TAP_TMP/port")
FAKE=127.0.0.1:$P
export FAKE

# every command of the table, from `dirigent help --all`
CMDS=$("$D" help --all | sed -n 's/^## dirigent //p')

# an argument that makes each command's line complete (so only --help stops it)
args_of() {
  case $1 in
    "function deploy") echo "mine --image /bin/true --max 1" ;;
    "function get" | "function delete" | invoke) echo "mine" ;;
    "load burst") echo "3 mine" ;;
    "load rps") echo "--rate 5 --duration 1 mine" ;;
    "load trace" | "load summarize") echo "$TAP_TMP/none" ;;
    haproxy-config) echo "--socket $TAP_TMP/s --cp 127.0.0.1:1" ;;
    up) echo "--runtime process --state-dir $TAP_TMP/upstate --port-base 30080" ;;
    *) echo "" ;;
  esac
}

t_help_forms() {
  local c a out rc n=0
  cd "$TAP_TMP" || return 1
  while read -r c; do
    a=$(args_of "$c")
    # shellcheck disable=SC2086
    for form in "$c $a --help" "$c -h $a" "-h $c $a" "--cp $FAKE $c $a -h --dp $FAKE" "help $c"; do
      out=$("$D" --cp "$FAKE" --dp "$FAKE" $form 2>&1); rc=$?
      if [ $rc != 0 ] || ! grep -q "^usage: dirigent $c\b" <<<"$out" || ! grep -q '^example:' <<<"$out"; then
        echo "dirigent $form: rc=$rc"; echo "$out" | head -5; return 1
      fi
      n=$((n + 1))
    done
    # a leaf's usage lists every option of the table with its default
    if [ "$c" = "function deploy" ]; then
      grep -q -- '--max N .*(default: unbounded)' <<<"$("$D" help function deploy)" || return 1
    fi
  done <<<"$CMDS"
  echo "$n help forms"
  # none acted: no request reached the fake, `up` made no state directory and started nothing
  [ ! -s "$LOG" ] || { echo "requests:"; cat "$LOG"; return 1; }
  [ ! -e "$TAP_TMP/upstate" ] && [ ! -e "$TAP_TMP/data" ] || { echo "up acted"; return 1; }
  ! pgrep -f "port-base 30080" >/dev/null
}
check "--help/-h anywhere and dirigent help CMD: usage of every command, exit 0, nothing done" t_help_forms

t_help_specific() {
  # the issue's cases: invoke --help invoked a function '--help', delete -h deleted '-h'
  "$D" --dp "$FAKE" invoke --help >/dev/null && "$D" --cp "$FAKE" function delete -h >/dev/null &&
    "$D" --cp "$FAKE" function list --help >/dev/null && "$D" --cp "$FAKE" status --help >/dev/null &&
    "$D" --cp "$FAKE" function delete mine --help >/dev/null || return 1
  [ ! -s "$LOG" ] || { cat "$LOG"; return 1; }
  # bare dirigent and `dirigent help` list every command
  local out
  out=$("$D" help) || return 1
  while read -r c; do grep -q "^  $c " <<<"$out" || { echo "help lacks $c"; return 1; }; done <<<"$CMDS"
}
check "invoke --help, function delete -h, list/status --help: usage only, no request" t_help_specific

t_unknown_option() {
  local c a out rc
  while read -r c; do
    a=$(args_of "$c")
    # shellcheck disable=SC2086
    out=$("$D" --cp "$FAKE" --dp "$FAKE" $c $a --frobnicate 2>&1); rc=$?
    [ $rc = 2 ] && grep -q "unknown option '--frobnicate'" <<<"$out" || { echo "$c: rc=$rc $out"; return 1; }
  done <<<"$CMDS"
  [ ! -s "$LOG" ]
}
check "an unknown option: exit 2 naming it, for every command, nothing sent" t_unknown_option

t_extra_args() {
  local out rc
  for line in "status extra|extra" "function get a b|b" "function delete a b|b" "invoke a b|b" \
    "function list x|x" "up x|x" "load summarize a b|b" "function frob|frob" "frob|frob"; do
    # shellcheck disable=SC2086
    out=$("$D" --cp "$FAKE" --dp "$FAKE" ${line%|*} 2>&1); rc=$?
    [ $rc = 2 ] && grep -q "'${line#*|}'" <<<"$out" || { echo "${line%|*}: rc=$rc $out"; return 1; }
  done
  out=$("$D" --cp "$FAKE" function delete 2>&1); rc=$?
  [ $rc = 2 ] && grep -q "expected NAME" <<<"$out" || return 1
  out=$("$D" --cp "$FAKE" function deploy x --max 3 2>&1); rc=$?
  [ $rc = 2 ] && grep -q -- "--image IMG is required" <<<"$out" || return 1
  [ ! -s "$LOG" ]
}
check "extra or missing arguments, unknown (sub-)commands: exit 2 naming them, nothing sent" t_extra_args

# a name that no function can have (a space would break the request line, '/' its path)
t_bad_name() {
  local c out rc
  for c in "function get" "function delete" "invoke"; do
    for n in 'a b' 'x/../y' 'Hello' 'a-'; do
      # shellcheck disable=SC2086
      out=$("$D" --cp "$FAKE" --dp "$FAKE" $c "$n" 2>&1); rc=$?
      [ $rc = 2 ] && grep -qF "NAME: expected a function name" <<<"$out" && grep -qF "'$n'" <<<"$out" ||
        { echo "$c '$n': rc=$rc $out"; return 1; }
    done
  done
  [ ! -s "$LOG" ]
}
check "get/delete/invoke of a name no function can have: exit 2 naming it, nothing sent" t_bad_name

t_max_abc() {
  local out rc
  out=$("$D" --cp "$FAKE" function deploy x --image /bin/true --max abc 2>&1); rc=$?
  echo "$out"
  [ $rc = 2 ] && grep -q -- "--max: expected an integer" <<<"$out" && ! grep -q scaling_ <<<"$out" &&
    [ ! -s "$LOG" ] || return 1
  out=$("$D" --cp "$FAKE" up --port-base 99999 2>&1); rc=$?
  [ $rc = 2 ] && grep -q -- "--port-base: expected" <<<"$out" || return 1
  # what only the control plane judges comes back in the command's words
  out=$("$D" --cp "$FAKE" function deploy x --image /bin/true --min 7 --max 5000 2>&1); rc=$?
  echo "$out"
  [ $rc = 1 ] && grep -q -- "--min: expected at most --max (5), got 7" <<<"$out" && ! grep -q scaling_ <<<"$out"
}
check "--max abc names --max (exit 2, nothing sent); the CP's field names come back as options" t_max_abc
: >"$LOG"

t_json_anywhere() {
  local a b c
  a=$("$D" --json --cp "$FAKE" function list) && b=$("$D" function list --json --cp "$FAKE") &&
    c=$("$D" function --json list --cp="$FAKE") || return 1
  [ "$a" = "$b" ] && [ "$a" = "$c" ] && /usr/bin/python3 -c 'import json,sys; assert len(json.loads(sys.argv[1])) == 2' "$a" || return 1
  # deploy too: its answer (the proxies' addresses) as JSON
  a=$("$D" function deploy ok --image /bin/true --cp "$FAKE" --json) || return 1
  echo "$a"
  /usr/bin/python3 -c 'import json,sys; j=json.loads(sys.argv[1]); assert j == {"name": "ok", "invoke": ["127.0.0.1:8080", "127.0.0.1:8090"]}, j' "$a"
}
check "--json before, after and inside the command: the same JSON" t_json_anywhere

t_columns() {
  local out long hdr row
  out=$("$D" --cp "$FAKE" function list) || return 1
  echo "$out"
  long=$(printf 'f%.0s' $(seq 30))-$(printf 'x%.0s' $(seq 29))
  hdr=$(sed -n 1p <<<"$out"); row=$(grep "^$long " <<<"$out")
  # STATE starts right after the 60-character name and two spaces, in the header and rows
  [ "${hdr:62:5}" = STATE ] && [ "${row:62:5}" = ready ] &&
    grep -qE '^hello +idle +0 +0 +0\.\.unbounded +/bin/fn$' <<<"$out" &&
    grep -qE "^$long +ready +1 +1 +0\.\.5 +/bin/fn$" <<<"$out"
}
check "tables: columns as wide as a 60-character name; upper bound 2147483647 is unbounded" t_columns

t_refused() {
  local port out rc
  port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  out=$("$D" --cp "127.0.0.1:$port" status 2>&1); rc=$?
  echo "$out"
  [ $rc = 1 ] && grep -q "control plane at 127.0.0.1:$port: connection refused" <<<"$out" &&
    grep -q 'dirigent up' <<<"$out" && grep -q -- '--cp' <<<"$out" || return 1
  out=$("$D" invoke hello --dp "127.0.0.1:$port" 2>&1); rc=$?
  echo "$out"
  [ $rc = 1 ] && grep -q "data plane at 127.0.0.1:$port: connection refused" <<<"$out" &&
    grep -q 'dirigent up' <<<"$out" && grep -q -- '--dp' <<<"$out"
}
check "connection refused names the address tried and how to start a cluster" t_refused

t_docs() {
  # docs/cli.md ends with the table's own words
  local gen
  gen=$("$D" help --all) || return 1
  diff <(sed -n '/^<!-- generated: /,$p' "$SRC/docs/cli.md" | sed '1,2d') <(echo "$gen")
}
check "docs/cli.md is dirigent help --all" t_docs

t_global_cp_vs_haproxy() {
  # haproxy-config's own --cp (after the command) is the CPs' list, not the global option
  local out
  out=$("$D" haproxy-config --socket /tmp/x.sock --cp 10.0.0.1:9091,10.0.0.2:9091) || return 1
  grep -q 'server cp1 10.0.0.2:9091 check' <<<"$out"
}
check "haproxy-config keeps its own --cp" t_global_cp_vs_haproxy

t_dashdash() {
  local out rc
  out=$("$D" --dp "$FAKE" invoke -- -h 2>&1); rc=$?
  # after --, -h is a NAME, not a request for help: one no function can have
  echo "$out"
  [ $rc = 2 ] && grep -qF "NAME: expected a function name" <<<"$out" && grep -qF "got '-h'" <<<"$out" &&
    ! grep -q '^usage:' <<<"$out"
}
check "-- ends the options" t_dashdash

tap_done
