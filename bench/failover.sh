#!/usr/bin/env bash
# Control-plane failover and recovery (issue 6), three measurements:
#   1 leader kill   `dirigent up --runtime emulated --cp-replicas 3 --dataplanes 2` (Redis, raft,
#                   HAProxy on 127.0.0.1:8079/9092); per round, under warm load on `hello`
#                   (`dirigent load rps` through HAProxy): kill -9 the leader, time until a
#                   survivor says "role": "leader" (polled every 5 ms) and until a new
#                   registration through 127.0.0.1:9092 gets 200; failed warm requests; then
#                   restart the killed replica with its own command line until it is a follower.
#                   Afterwards every registered function must still be listed.
#   2 reconstruction  one dirigent-cp (sqlite), one dirigent-dp, emulated workers; N functions,
#                   M of them with scaling_lower_bound 1 (one sandbox each); kill -9 the CP,
#                   restart it with the same flags: "reconstruction done in X ms" and
#                   dg_cp_reconstruction_seconds; then all N listed, M sandboxes adopted (the
#                   workers' own totals unchanged, no duplicates after two autoscaler ticks).
#   3 memory        a fresh dirigent-cp (persistence none, then sqlite), VmRSS before and after
#                   registering N functions (no sandboxes): bytes per function (goal <= 2 KiB),
#                   and the registration rate.
# Measurement 1 uses `dirigent up`'s fixed ports (9090-9115, 8079-8091, 9092, 6380, 10010) and is
# skipped (exit 1 at the end) if any of them is taken; 2 and 3 use free ports of 127.0.0.1.
#   bench/failover.sh [--quick] [--build DIR] [--out DIR] [--only 1,2,3] [--rounds N]
#                     [--functions N] [--sandboxes M] [--mem-functions N] [--workers N]
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."
BUILD=build
OUT=bench/results
ONLY=1,2,3
ROUNDS=10 LOAD_S=5 KILL_AT=1.5 RATE=200 SETTLE_PRE=2.5 SETTLE_POST=4.5
NFN=10000 NSB=1000 NMEM=100000 WORKERS=2 MEM_SQLITE=1 THREADS=8
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; ROUNDS=3; LOAD_S=2; KILL_AT=0.8; NFN=1000; NSB=100; NMEM=10000
             SETTLE_PRE=0.5; SETTLE_POST=2.5;;
    --build) BUILD=$2; shift;;
    --out) OUT=$2; shift;;
    --only) ONLY=$2; shift;;
    --rounds) ROUNDS=$2; shift;;
    --functions) NFN=$2; shift;;
    --sandboxes) NSB=$2; shift;;
    --mem-functions) NMEM=$2; shift;;
    --workers) WORKERS=$2; shift;;
    --no-sqlite-memory) MEM_SQLITE=0;;
    *) echo "usage: $0 [--quick] [--build DIR] [--out DIR] [--only 1,2,3] [--rounds N] [--functions N]" \
            "[--sandboxes M] [--mem-functions N] [--workers N] [--no-sqlite-memory]" >&2; exit 2;;
  esac
  shift
done
B=$(cd "$BUILD" && pwd)
for x in dirigent dirigent-cp dirigent-dp dirigent-worker dirigent-fn; do
  [ -x "$B/$x" ] || { echo "failover: no $B/$x (build first)" >&2; exit 1; }
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TMP=$(mktemp -d /tmp/dg-bench-fo.XXXXXX)
STATE=$TMP/state
PY=/usr/bin/python3
PIDS=()    # daemons started here (measurements 2 and 3)
UP_PID=""  # `dirigent up` (measurement 1)
T_START=$(date +%s.%N)

# Is pid $1 a live (not zombie) process of this run: our temp dir in its command line or as its
# working directory, or one of the binaries of $B (the daemons started here)?
ours() {
  local st; st=$(ps -o stat= -p "$1" 2>/dev/null || true)
  [ -n "$st" ] && [ "${st:0:1}" != Z ] || return 1
  { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null | grep -qF "$TMP" && return 0
  case "$(readlink "/proc/$1/exe" 2>/dev/null)" in "$B"/dirigent*) return 0;; esac
  case "$(readlink "/proc/$1/cwd" 2>/dev/null)" in "$TMP"/*) return 0;; esac # redis (its own title)
  return 1
}
# SIGTERM, up to $2 s for it to go, then SIGKILL (itself and the children it had).
stop_pid() {
  local p=$1 t=${2:-5} kids i
  ours "$p" || return 0
  kids=$(pgrep -P "$p" 2>/dev/null || true)
  kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 1 $((t * 20))); do ours "$p" || break; sleep 0.05; done
  if ours "$p"; then kill -9 "$p" 2>/dev/null || true; fi
  for k in $kids; do kill -9 "$k" 2>/dev/null || true; done
}
# The `dirigent up` cluster: up itself stops the daemons it started; the replicas the rounds
# restarted (and anything left) are found by their pid files.
stop_up() {
  if [ -n "$UP_PID" ] && kill -0 "$UP_PID" 2>/dev/null; then
    kill -TERM "$UP_PID"
    for _ in $(seq 1 200); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$UP_PID" 2>/dev/null
    wait "$UP_PID" 2>/dev/null
  fi
  UP_PID=""
  for f in "$STATE"/pids/*.pid; do [ -f "$f" ] && stop_pid "$(cat "$f")" 5; done
  return 0
}
cleanup() {
  set +e
  stop_up
  for p in "${PIDS[@]}"; do stop_pid "$p" 5; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# ---- the client side, in Python (keep-alive HTTP, threads) -------------------------------------
cat >"$TMP/fo.py" <<'PYEOF'
import http.client, itertools, json, os, signal, statistics, subprocess, sys, threading, time

FORM = {"Content-Type": "application/x-www-form-urlencoded"}

def req(addr, method, path, body=None, timeout=2.0, headers=None):
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()

def get_json(addr, path, timeout=2.0):
    try:
        st, b = req(addr, "GET", path, timeout=timeout)
        return json.loads(b) if st == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None

def reg(addr, prefix, start, n, threads, lower, image):
    """Registers prefix%06d for start..start+n-1 (the first `lower` with scaling bounds 1..1)
    over `threads` keep-alive connections; JSON: ok, errors, secs, rate, rates per tenth."""
    host, port = addr.rsplit(":", 1)
    it, end = itertools.count(start), start + n
    res = {"ok": 0, "errors": 0, "first_error": ""}
    done_t = []
    lock = threading.Lock()
    def work():
        c, ok, err, ts = None, 0, 0, []
        while True:
            i = next(it)
            if i >= end:
                break
            body = "name=%s%06d&image=%s&port_forwarding=80&port_forwarding=tcp" % (prefix, i, image)
            if i - start < lower:
                body += "&scaling_lower_bound=1&scaling_upper_bound=1"
            for attempt in range(3):
                try:
                    if c is None:
                        c = http.client.HTTPConnection(host, int(port), timeout=120)
                    c.request("POST", "/registerService", body=body, headers=FORM)
                    r = c.getresponse()
                    b = r.read()
                    if r.status == 200:
                        ok += 1
                    else:
                        err += 1
                        with lock:
                            res["first_error"] = res["first_error"] or "%d %s" % (r.status, b[:200].decode(errors="replace"))
                    break
                except (OSError, http.client.HTTPException) as e:
                    c = None
                    if attempt == 2:
                        err += 1
                        with lock:
                            res["first_error"] = res["first_error"] or repr(e)
            ts.append(time.monotonic())
        with lock:
            res["ok"] += ok
            res["errors"] += err
            done_t.extend(ts)
    t0 = time.monotonic()
    th = [threading.Thread(target=work) for _ in range(threads)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    res["secs"] = time.monotonic() - t0
    res["rate"] = n / res["secs"] if res["secs"] > 0 else 0
    done_t.sort()
    tenth, prev, rates = max(1, len(done_t) // 10), t0, []
    for k in range(1, 11):
        idx = min(len(done_t), k * tenth) - 1
        if idx < 0:
            break
        rates.append(round(tenth / max(done_t[idx] - prev, 1e-9)))
        prev = done_t[idx]
    res["rate_per_tenth"] = rates
    return res

def cmd_reg(a):
    print(json.dumps(reg(a[0], a[1], int(a[2]), int(a[3]), int(a[4]), int(a[5]), a[6])))

def sandboxes(addr):
    s = get_json(addr, "/v1/status", timeout=10)
    if s is None:
        return None, None
    return sum(w["sandboxes"] for w in s["workers"]), len(s["workers"])

def cmd_wait_sandboxes(a):
    """wait-sandboxes CP_ADDR N TIMEOUT_S: until the CP counts N sandboxes on its workers."""
    addr, n, tmo = a[0], int(a[1]), float(a[2])
    t0 = time.monotonic()
    while time.monotonic() - t0 < tmo:
        total, _ = sandboxes(addr)
        if total is not None and total >= n:
            print("%d %.2f" % (total, time.monotonic() - t0))
            return
        time.sleep(0.25)
    print("%s %.2f" % (total, time.monotonic() - t0))
    sys.exit(1)

def cmd_worker_totals(a):
    """worker-totals ADDR...: each worker's own count of sandboxes (GET /v1/sandboxes), and
    whether any function has two."""
    out, dup = [], 0
    for addr in a:
        j = get_json(addr, "/v1/sandboxes", timeout=10)
        sbs = j.get("sandboxes", []) if j else []
        out.append(len(sbs))
        fns = [s.get("function") for s in sbs]
        dup += len(fns) - len(set(fns))
    print(" ".join(map(str, out)), dup)

def cmd_count_functions(a):
    j = get_json(a[0], "/v1/functions", timeout=30)
    if j is None:
        print("-1 -1")
        return
    names = [f["name"] for f in j]
    print(len(names), sum(1 for f in j if f.get("ready", 0) > 0))

# ---- measurement 1: leader kills under warm load ------------------------------------------------
def cmd_rounds(a):
    B, state, rounds, load_s, kill_at, rate, csv_path, image = \
        a[0], a[1], int(a[2]), float(a[3]), float(a[4]), a[5], a[6], a[7]
    apis = ["127.0.0.1:9090", "127.0.0.1:9100", "127.0.0.1:9110"]
    REG = "127.0.0.1:9092"

    def role(i, timeout=0.2):
        s = get_json(apis[i], "/v1/status", timeout=timeout)
        return (s["role"], s.get("leader")) if s else (None, None)

    def find_leader(tmo=10):
        t0 = time.monotonic()
        while time.monotonic() - t0 < tmo:
            for i in range(3):
                if role(i)[0] == "leader":
                    return i
            time.sleep(0.02)
        return None

    def load(secs):
        return subprocess.Popen([B + "/dirigent", "--dp", "127.0.0.1:8079", "--json", "load", "rps",
                                 "--rate", rate, "--duration", str(secs), "hello"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def load_result(p):
        o, e = p.communicate(timeout=60)
        try:
            return json.loads(o)
        except ValueError:
            return {"sent": 0, "ok": 0, "errors": -1, "err": e.strip()}

    # warm up `hello` (first sandboxes, connections) before the first kill
    w = load_result(load(1))
    print("# warm-up: %d sent, %d ok" % (w.get("sent", 0), w.get("ok", 0)), flush=True)
    rows, registered, failed = [], ["hello"], False
    hdr = ("round,killed,new_leader,leader_ms,register_ms,register_attempts,register_answers,"
           "rejoin_ms,load_sent,load_ok,load_failed")
    print("%5s %6s %10s %10s %12s %9s %10s %8s" % ("round", "killed", "new_lead", "leader_ms",
          "register_ms", "attempts", "rejoin_ms", "failed"), flush=True)
    for rnd in range(1, rounds + 1):
        lead = find_leader()
        if lead is None:
            print("round %d: no leader among %s" % (rnd, apis), file=sys.stderr)
            failed = True
            break
        pidf = "%s/pids/cp-%d.pid" % (state, lead)
        pid = int(open(pidf).read())
        argv = open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")[:-1]
        exe, cwd = os.readlink("/proc/%d/exe" % pid), os.readlink("/proc/%d/cwd" % pid)
        lp = load(load_s)
        time.sleep(kill_at)
        name = "fo%03d" % rnd
        res = {"leader": None, "new": None, "reg": None, "attempts": 0, "answers": {}, "texts": {}}
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)

        def poll_leader():
            while time.monotonic() - t0 < 30:
                for i in range(3):
                    if i != lead and role(i, 0.1)[0] == "leader":
                        res["leader"], res["new"] = time.monotonic() - t0, i
                        return
                time.sleep(0.005)

        def register():
            body = "name=%s&image=%s&port_forwarding=80&port_forwarding=tcp" % (name, image)
            while time.monotonic() - t0 < 30:
                res["attempts"] += 1
                try:
                    st, b = req(REG, "POST", "/registerService", body=body, timeout=1, headers=FORM)
                    key, text = str(st), b.decode(errors="replace").strip()
                except (OSError, http.client.HTTPException) as e:
                    st, key, text = 0, type(e).__name__, str(e)
                res["answers"][key] = res["answers"].get(key, 0) + 1
                res["texts"].setdefault(key, (time.monotonic() - t0, text[:150]))
                if st == 200 or st == 409:  # 409: an earlier attempt went through unanswered
                    res["reg"] = time.monotonic() - t0
                    return
                time.sleep(0.005)

        th = [threading.Thread(target=poll_leader), threading.Thread(target=register)]
        for t in th:
            t.start()
        for t in th:
            t.join()
        if res["reg"] is not None:
            registered.append(name)
        # the killed replica back, as `dirigent up` started it: same argv, cwd and log, new pid
        log = open("%s/logs/cp-%d.log" % (state, lead), "ab")
        p = subprocess.Popen([exe] + [x.decode() for x in argv[1:]], cwd=cwd, stdout=log,
                             stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        with open(pidf, "w") as f:
            f.write("%d\n" % p.pid)
        t1, rejoin = time.monotonic(), None
        while time.monotonic() - t1 < 20:
            r, l = role(lead)
            if r == "follower" and l:
                rejoin = time.monotonic() - t1
                break
            time.sleep(0.01)
        lr = load_result(lp)
        lfail = lr.get("sent", 0) - lr.get("ok", 0) if lr.get("errors", 0) >= 0 else -1
        ms = lambda x: "%.1f" % (x * 1000) if x is not None else ""
        answers = " ".join("%s:%d" % kv for kv in sorted(res["answers"].items()))
        rows.append("%d,cp-%d,%s,%s,%s,%d,%s,%s,%d,%d,%d" % (
            rnd, lead, "cp-%d" % res["new"] if res["new"] is not None else "", ms(res["leader"]),
            ms(res["reg"]), res["attempts"], answers, ms(rejoin), lr.get("sent", 0),
            lr.get("ok", 0), lfail))
        print("%5d %6s %10s %10s %12s %9d %10s %8d   (answers %s)" % (
            rnd, "cp-%d" % lead, "cp-%d" % res["new"] if res["new"] is not None else "-",
            ms(res["leader"]) or "NONE", ms(res["reg"]) or "NONE", res["attempts"],
            ms(rejoin) or "NONE", lfail, answers), flush=True)
        for k, (t, text) in sorted(res["texts"].items()):
            if k != "200":
                print("#       first %s at %.0f ms: %s" % (k, t * 1000, text), flush=True)
        if res["leader"] is None or res["reg"] is None or rejoin is None:
            failed = True
            print("round %d: %s" % (rnd, "no new leader within 30 s" if res["leader"] is None else
                  "no registration within 30 s" if res["reg"] is None else
                  "the restarted replica did not rejoin within 20 s"), file=sys.stderr)
            break
        time.sleep(0.3)
    with open(csv_path, "w") as f:
        f.write(hdr + "\n" + "".join(r + "\n" for r in rows))
    # every registered function still listed (through HAProxy, whichever replica leads)
    lst, missing = None, registered
    for _ in range(50):
        lst = get_json(REG, "/v1/functions", timeout=5)
        if lst is not None:
            have = {x["name"] for x in lst}
            missing = [n for n in registered if n not in have]
            break
        time.sleep(0.1)
    cols = list(zip(*[r.split(",") for r in rows])) if rows else []
    def num(col):
        return [float(x) for x in cols[col] if x != ""] if cols else []
    lm, rm, fl = num(3), num(4), num(10)
    def mmm(v):
        return "%.0f/%.0f/%.0f" % (min(v), statistics.median(v), max(v)) if v else "-"
    print("leader kills: %d rounds; new leader ms min/median/max %s; first registration ms %s; "
          "failed warm requests per kill %s (total %d of %d)" % (
              len(rows), mmm(lm), mmm(rm), mmm(fl), sum(fl),
              sum(int(r.split(",")[8]) for r in rows)))
    print("functions after the rounds: %d registered, %s listed, missing: %s" % (
        len(registered), len(lst) if lst is not None else "none (list failed)",
        " ".join(missing) or "none"))
    print("SUMMARY1 rounds=%d leader_ms=%s register_ms=%s failed_per_kill=%s failed_total=%d "
          "missing=%d" % (len(rows), mmm(lm), mmm(rm), mmm(fl), sum(fl), len(missing)))
    med = lambda v: "%.0f" % statistics.median(v) if v else "-"
    print("RESULT1 kill_rounds=%d leader_ms_p50=%s leader_ms_max=%s register_ms_p50=%s "
          "register_ms_max=%s warm_failed=%d functions_missing=%d" % (
              len(rows), med(lm), "%.0f" % max(lm) if lm else "-", med(rm),
              "%.0f" % max(rm) if rm else "-", sum(fl), len(missing)))
    sys.exit(1 if failed or missing or lst is None else 0)

cmds = {"reg": cmd_reg, "wait-sandboxes": cmd_wait_sandboxes, "worker-totals": cmd_worker_totals,
        "count-functions": cmd_count_functions, "rounds": cmd_rounds}
cmds[sys.argv[1]](sys.argv[2:])
PYEOF

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
FAILED=""
SUMMARY=()
RES=()
IMAGE=$B/dirigent-fn   # what `dirigent up` registers for the emulated runtime (it runs no image)

echo "# failover: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, build $BUILD"
echo "# options: rounds=$ROUNDS load=${LOAD_S}s@${RATE}/s functions=$NFN sandboxes=$NSB memory-functions=$NMEM workers=$WORKERS$([ $QUICK = 1 ] && echo ' (quick)')"

# ---- 1: leader kills ----------------------------------------------------------------------------
m1() {
  local p busy=""
  for p in 9090 9091 9095 9100 9101 9105 9110 9111 9115 8079 8080 8081 8090 8091 9092 6380 10010; do
    ss -Hltn "sport = :$p" | grep -q . && busy="$busy $p"
  done
  if [ -n "$busy" ]; then
    echo "1: ports in use:$busy (another \`dirigent up\`?): skipped; held by:" >&2
    ss -Hltnp | grep -E "127\.0\.0\.1:($(echo $busy | tr ' ' '|')) " | grep -oE '"[^"]+",pid=[0-9]+' | sort -u | tr '\n' ' ' | sed 's/^/   /; s/$/\n/' >&2
    return 1
  fi
  command -v redis-server >/dev/null && command -v haproxy >/dev/null ||
    { echo "1: needs redis-server and haproxy (make deps): skipped" >&2; return 1; }
  echo
  echo "## 1. leader kill x$ROUNDS under warm load (3 CP replicas, 2 DPs, HAProxy, emulated worker)"
  "$B/dirigent" up --runtime emulated --cp-replicas 3 --dataplanes 2 --state-dir "$STATE" >"$TMP/up.out" 2>&1 </dev/null &
  UP_PID=$!
  wait_log "$TMP/up.out" '^ready:|did not become healthy|dirigent: up:' 40 || return 1
  grep -q '^ready:' "$TMP/up.out" || { cat "$TMP/up.out" >&2; return 1; }
  timeout --foreground $((ROUNDS * 60 + 60)) $PY "$TMP/fo.py" rounds "$B" "$STATE" "$ROUNDS" "$LOAD_S" "$KILL_AT" "$RATE" \
    "$OUT/failover_leader_kill.csv" "$IMAGE" | tee "$TMP/m1.out"
  local rc=${PIPESTATUS[0]}
  SUMMARY+=("leader_kill $(grep '^SUMMARY1' "$TMP/m1.out" | cut -d' ' -f2-)")
  RES+=("$(grep '^RESULT1' "$TMP/m1.out" | cut -d' ' -f2-)")
  # stop the cluster now: measurement 2 and 3 should not share the CPUs with it
  stop_up
  [ -z "$(grep -l 'Assertion\|AddressSanitizer\|SEGV' "$STATE"/logs/*.log 2>/dev/null)" ] ||
    { echo "1: a daemon crashed:" >&2; grep -H 'Assertion\|AddressSanitizer\|SEGV' "$STATE"/logs/*.log >&2; rc=1; }
  return "$rc"
}

# ---- 2: reconstruction --------------------------------------------------------------------------
m2() {
  local D=$TMP/m2 CPP REGP CPI REG i waddr=() before after
  mkdir -p "$D"
  echo
  echo "## 2. reconstruction: $NFN functions, $NSB sandboxes on $WORKERS emulated workers, sqlite, kill -9 the CP"
  CPP=$(free_port); REGP=$(free_port)
  [ "$CPP" != "$REGP" ] || REGP=$(free_port)
  CPI=127.0.0.1:$CPP REG=127.0.0.1:$REGP
  local CPCMD=("$B/dirigent-cp" --port "$CPP" --registrationServer "$REG" --persistence sqlite
               --dataDir "$D/cp" --traceOutputFolder "" --heartbeatInterval 1s
               --maxFunctions 0 --maxSandboxesPerFunction 0 --maxSandboxesPerWorker 0 --maxSandboxes 0 --maxCreatesPerWorkerPerSecond 0)
  "${CPCMD[@]}" >>"$D/cp.log" 2>&1 </dev/null &
  local CP_PID=$!; PIDS+=("$CP_PID")
  wait_log "$D/cp.log" 'registration on' || return 1
  "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --controlPlaneAddress "$CPI" --traceOutputFolder "" \
    --heartbeatInterval 1s --name "fo-dp-$$" >"$D/dp.log" 2>&1 </dev/null &
  PIDS+=($!)
  for i in $(seq 1 "$WORKERS"); do
    "$B/dirigent-worker" --port 0 --runtime emulated --emulatedCreateDelayMs 0 --fnBinary "$B/dirigent-fn" \
      --name "fo-w$i-$$" --controlPlaneAddress "$CPI" --heartbeatInterval 1s --cpuMilli 1000000 \
      --memoryMiB 1000000 >"$D/w$i.log" 2>&1 </dev/null &
    PIDS+=($!)
  done
  wait_log "$D/dp.log" 'proxy on' || return 1
  for i in $(seq 1 "$WORKERS"); do
    wait_log "$D/w$i.log" 'listening on .*runtime' || return 1
    waddr+=("$(grep -oE 'listening on [0-9.]+:[0-9]+, runtime' "$D/w$i.log" | grep -oE '[0-9.]+:[0-9]+')")
  done
  i=0; until [ "$($PY -c 'import json,sys; s=json.load(sys.stdin); print(len(s["workers"]), len(s["dataplanes"]))' \
                 < <(curl -s "http://$REG/v1/status") 2>/dev/null)" = "$WORKERS 1" ]; do
    i=$((i + 1)); [ $i -lt 100 ] || { echo "2: cluster did not register" >&2; return 1; }; sleep 0.1; done
  local r
  r=$($PY "$TMP/fo.py" reg "$REG" f 0 "$NFN" "$THREADS" "$NSB" "$IMAGE")
  echo "registered: $r"
  local reg_rate; reg_rate=$($PY -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.0f" % d["rate"]) if d["errors"] == 0 else sys.exit(1)' "$r") ||
    { echo "2: registration errors" >&2; return 1; }
  local wsb; wsb=$($PY "$TMP/fo.py" wait-sandboxes "$REG" "$NSB" 300) ||
    { echo "2: only $wsb sandboxes (of $NSB) came up" >&2; return 1; }
  echo "sandboxes ready: ${wsb% *} after ${wsb#* } s"
  sleep "$SETTLE_PRE" # (full run: one more autoscaler tick) nothing still moving
  read -r -a before < <($PY "$TMP/fo.py" worker-totals "${waddr[@]}")
  local cp_before; cp_before=$($PY -c 'import json,sys; s=json.load(sys.stdin); print(sum(w["sandboxes"] for w in s["workers"]))' < <(curl -s "http://$REG/v1/status"))
  echo "before the kill: CP counts $cp_before sandboxes; workers: ${before[*]:0:$WORKERS} (duplicates ${before[$WORKERS]})"
  local rss_before; rss_before=$(rss_kib "$CP_PID")
  kill -9 "$CP_PID"; wait "$CP_PID" 2>/dev/null || true
  local t0; t0=$(date +%s%N)
  "${CPCMD[@]}" >>"$D/cp.log" 2>&1 </dev/null &
  CP_PID=$!; PIDS+=("$CP_PID")
  i=0; until [ "$(grep -c 'reconstruction done' "$D/cp.log")" -ge 2 ]; do
    i=$((i + 1)); [ $i -lt 6000 ] || { echo "2: no second 'reconstruction done' in the CP log" >&2; tail "$D/cp.log" >&2; return 1; }
    sleep 0.005
  done
  local line; line=$(grep 'reconstruction done' "$D/cp.log" | tail -1)
  # from the exec to the line's own time stamp (the log's clock is the wall clock, in ms)
  local wall_ms; wall_ms=$($PY -c 'import datetime,sys; t=datetime.datetime.strptime(sys.argv[1].split()[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp(); print("%.0f" % (t * 1000 - int(sys.argv[2]) / 1e6))' "$line" "$t0")
  local log_ms; log_ms=$(sed -E 's/.*reconstruction done in ([0-9.]+) ms.*/\1/' <<<"$line")
  local restored; restored=$(grep 'restored .* functions' "$D/cp.log" | tail -1 | sed -E 's/.*(restored .*)/\1/')
  local metric; metric=$(curl -s "http://$CPI/metrics" | awk '/^dg_cp_reconstruction_seconds/ {print $2}')
  local adopted; adopted=$(awk -v n="$(grep -c 'reconstruction done' "$D/cp.log")" '/reconstruction done/ {k++} k == n - 1 && /rediscovered/ {c++} END {print c + 0}' "$D/cp.log")
  echo "restart: $restored"
  echo "restart: $line (wall clock from the exec to that line: $wall_ms ms; dg_cp_reconstruction_seconds $metric)"
  # autoscaler ticks (every 2 s) after the restart: a sandbox not adopted would be created again
  sleep "$SETTLE_POST"
  read -r -a after < <($PY "$TMP/fo.py" worker-totals "${waddr[@]}")
  local cp_after; cp_after=$($PY -c 'import json,sys; s=json.load(sys.stdin); print(sum(w["sandboxes"] for w in s["workers"]))' < <(curl -s "http://$REG/v1/status"))
  local nf; nf=$($PY "$TMP/fo.py" count-functions "$REG")
  local rss_after; rss_after=$(rss_kib "$CP_PID")
  # a function with an adopted sandbox answers through the DP (its list was pushed again)
  local dpp; dpp=$(port_of "$D/dp.log" 'proxy on')
  local inv; inv=$(curl -s -o /dev/null -w '%{http_code}' -m 10 -H 'Host: f000000' "http://127.0.0.1:$dpp/")
  echo "after: $adopted sandboxes rediscovered (log), CP counts $cp_after; workers: ${after[*]:0:$WORKERS} (duplicates ${after[$WORKERS]}); functions listed ${nf% *}, ready ${nf#* }; invocation of f000000 through the DP: $inv; CP RSS $rss_before -> $rss_after KiB"
  local ok=1
  [ "$inv" = 200 ] || { echo "2: invoking f000000 after the restart: $inv" >&2; ok=0; }
  [ "${nf% *}" = "$NFN" ] || { echo "2: ${nf% *} functions listed, expected $NFN" >&2; ok=0; }
  [ "$cp_after" = "$NSB" ] && [ "$adopted" = "$NSB" ] || { echo "2: $adopted adopted, CP counts $cp_after, expected $NSB" >&2; ok=0; }
  [ "${before[*]}" = "${after[*]}" ] && [ "${after[$WORKERS]}" = 0 ] || { echo "2: workers' sandboxes changed: ${before[*]} -> ${after[*]}" >&2; ok=0; }
  { echo "functions,sandboxes,workers,register_rate_per_s,recon_log_ms,recon_metric_s,restart_wall_ms,adopted,cp_sandboxes_after,worker_totals_before,worker_totals_after,functions_listed"
    echo "$NFN,$NSB,$WORKERS,$reg_rate,$log_ms,$metric,$wall_ms,$adopted,$cp_after,${before[*]:0:$WORKERS},${after[*]:0:$WORKERS},${nf% *}"; } >"$OUT/failover_reconstruction.csv"
  RES+=("recon_functions=$NFN recon_sandboxes=$NSB recon_ms=$log_ms adopted=$adopted")
  SUMMARY+=("reconstruction functions=$NFN sandboxes=$NSB log_ms=$log_ms metric_s=$metric wall_ms=$wall_ms adopted=$adopted listed=${nf% *} duplicates=$(( ${after[$WORKERS]} + ${cp_after:-0} - NSB ))")
  [ $ok = 1 ]
}

# ---- 3: memory per function ---------------------------------------------------------------------
m3_one() { # PERSISTENCE
  local D=$TMP/m3-$1 REG
  mkdir -p "$D"
  "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --persistence "$1" --dataDir "$D/cp" \
    --traceOutputFolder "" --maxFunctions 0 --maxSandboxesPerFunction 0 --maxSandboxesPerWorker 0 --maxSandboxes 0 --maxCreatesPerWorkerPerSecond 0 >"$D/cp.log" 2>&1 </dev/null &
  local CP_PID=$!; PIDS+=("$CP_PID")
  wait_log "$D/cp.log" 'registration on' || return 1
  REG=127.0.0.1:$(port_of "$D/cp.log" 'registration on')
  sleep 0.3
  local before; before=$(rss_kib "$CP_PID")
  local r; r=$($PY "$TMP/fo.py" reg "$REG" m 0 "$NMEM" "$THREADS" 0 "$IMAGE")
  sleep 0.5
  local after; after=$(rss_kib "$CP_PID")
  ours "$CP_PID" || { echo "3: the CP ($1) died" >&2; tail "$D/cp.log" >&2; return 1; }
  local line
  line=$($PY - "$1" "$NMEM" "$before" "$after" "$r" <<'EOF'
import json, sys
p, n, b, a, r = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
per = (a - b) * 1024 / n
print("%s,%d,%d,%d,%.0f,%.0f,%d,%s" % (p, n, b, a, per, r["rate"], r["errors"], " ".join(map(str, r["rate_per_tenth"]))))
EOF
)
  echo "$line" >>"$OUT/failover_memory.csv"
  IFS=, read -r _ n b a per rate errs tenths <<<"$line"
  printf '%-8s %9s %11s %11s %12s %11s %7s   rate per tenth: %s\n' "$1" "$n" "$b" "$a" "$per" "$rate" "$errs" "$tenths"
  RES+=("mem_${1}_bytes_per_fn=$per mem_${1}_reg_per_s=$rate")
  SUMMARY+=("memory persistence=$1 functions=$n bytes_per_function=$per register_rate=$rate errors=$errs")
  stop_pid "$CP_PID" 5
  [ "$errs" = 0 ]
}
m3() {
  echo
  echo "## 3. CP memory per registered function ($NMEM functions, no sandboxes)"
  echo "persistence,functions,rss_before_kib,rss_after_kib,bytes_per_function,register_rate_per_s,errors,rate_per_tenth" >"$OUT/failover_memory.csv"
  printf '%-8s %9s %11s %11s %12s %11s %7s\n' persist functions rss_kib_0 rss_kib_1 B_per_fn reg_per_s errors
  local rc=0
  m3_one none || rc=1
  if [ "$MEM_SQLITE" = 1 ]; then m3_one sqlite || rc=1; fi
  return $rc
}

for m in 1 2 3; do
  case ",$ONLY," in *",$m,"*) ;; *) continue;; esac
  if ! "m$m"; then FAILED="$FAILED $m"; fi
  stop_up
  for p in "${PIDS[@]}"; do stop_pid "$p" 5; done
  PIDS=()
done

echo
echo "## summary ($(awk -v a="$T_START" -v b="$(date +%s.%N)" "BEGIN {printf \"%.0f\", b - a}") s; CSVs in $OUT)"
for s in "${SUMMARY[@]}"; do echo "  $s"; done
echo "RESULT ${RES[*]:+${RES[*]} }failed=$(echo ${FAILED:-none} | tr ' ' ,)"
[ -z "$FAILED" ]
