#!/usr/bin/python3
"""Print the one closing line of `make test`: "N passed, N failed".

Reads Meson's testlog.json. A TAP test counts each of its cases ("ok"/"not ok"
lines); a TAP test that dies before reporting all its planned cases (crash,
timeout) counts the missing ones as failed. Any other test counts as one.
Exit status: 1 when anything failed or no test ran.
"""
import json
import re
import sys

passed = failed = skipped = 0
path = sys.argv[1]
with open(path) as f:
    for line in f:
        if not line.strip():
            continue
        t = json.loads(line)
        result = t.get("result", "")
        ok_result = result in ("OK", "EXPECTEDFAIL", "SKIP")  # a TAP test whose cases all skipped
        out = t.get("stdout", "") or ""
        if t.get("protocol") == "tap" or re.search(r"^1\.\.\d+", out, re.M):
            plan = re.search(r"^1\.\.(\d+)", out, re.M)
            p = len(re.findall(r"^ok\b(?!.*# SKIP)", out, re.M | re.I))
            s = len(re.findall(r"^ok\b.*# SKIP", out, re.M | re.I))
            n = len(re.findall(r"^not ok\b", out, re.M))
            planned = int(plan.group(1)) if plan else p + s + n
            missing = max(0, planned - (p + s + n))
            if not ok_result and n == 0 and missing == 0:
                n = 1  # the test failed outside any case (e.g. a leak report at exit)
            passed += p
            skipped += s
            failed += n + missing
        elif result == "SKIP":
            skipped += 1
        elif ok_result:
            passed += 1
        else:
            failed += 1

line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
sys.exit(1 if failed or passed == 0 else 0)
