#!/usr/bin/python3
"""plots.py: the benchmark CSVs under bench/results/ as PNGs in the same directory (`make plots`).

  (a) coldstart_sweep.png     p50 and p99 end-to-end latency against the cold-start rate, log
                              scales, one colour per runtime (coldstart_sweep_{emulated,oci}.csv
                              from bench/coldstart_sweep.sh; a _quick file when no full one)
  (b) trace_replay_RUNTIME.png  CDFs of slowdown (response / execution) and scheduling latency
                              (response - execution) of a trace replay through the real cluster,
                              the simulator's overlaid (trace_replay_RUNTIME[_quick]_{real,sim}.csv
                              from bench/trace_replay.sh)
  (c) coldstart_breakdown.png a stacked bar of where a container cold start's time goes, from the
                              CP's cold_start_trace.csv (µs): mean per step of the oci sweep when
                              its per-invocation CSVs are in raw/, with the rest of the end-to-end
                              path (CP, DP, endpoint propagation, proxied call) on top
  (d) overload.png            the saturation curve: goodput (200s per second) against the offered
                              cold-start rate, one colour per runtime, with the ideal line and
                              0.9x the best sustainable rate (overload_{emulated,oci}[_quick].csv
                              from bench/overload.sh; a one-cluster sweep's steps added when
                              there: coldstart_sweep_RUNTIME_onecluster[_quick].csv)

A plot whose input is missing is skipped with a one-line note; nothing here raises on a missing
or malformed file.
    scripts/plots.py [--dir bench/results]
"""
import csv
import glob
import gzip
import math
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

RUNTIME_COLOURS = {"emulated": "tab:blue", "oci": "tab:red"}


def note(msg):
    print(f"plots: {msg}")


def read_csv(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


def pick(d, *names):
    """The first of names that exists in d (a full run's file before a quick one's)."""
    for n in names:
        p = os.path.join(d, n)
        if os.path.isfile(p):
            return p
    return None


def fnum(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return float("nan")


# ---- (a) the cold-start sweep ----------------------------------------------------------------


def plot_sweep(d):
    series = []
    for rt in ("emulated", "oci"):
        p = pick(d, f"coldstart_sweep_{rt}.csv", f"coldstart_sweep_{rt}_quick.csv")
        if not p:
            continue
        rows = [r for r in read_csv(p) if fnum(r.get("ok")) > 0]
        if rows:
            series.append((rt, os.path.basename(p), rows))
    if not series:
        note("coldstart_sweep.png skipped: no coldstart_sweep_{emulated,oci}[_quick].csv in " + d)
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for rt, name, rows in series:
        x = [fnum(r["rate_target"]) for r in rows]
        c = RUNTIME_COLOURS.get(rt)
        label = rt + (" (quick)" if "_quick" in name else "")
        ax.plot(x, [fnum(r["p99_ms"]) for r in rows], "o-", color=c, label=f"{label} p99")
        ax.plot(x, [fnum(r["p50_ms"]) for r in rows], "s--", color=c, label=f"{label} p50",
                alpha=0.8)
        for r in rows:  # mark steps with errors
            if fnum(r.get("errors")) > 0:
                ax.annotate(f"{int(fnum(r['errors']))} err", (fnum(r["rate_target"]),
                            fnum(r["p99_ms"])), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color=c)
    ax.axhline(50, color="grey", lw=0.8, ls=":", label="50 ms bound")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("cold starts per second (target rate)")
    ax.set_ylabel("end-to-end latency of a cold invocation (ms)")
    ax.set_title("Cold-start sweep (every request finds its function at zero)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = os.path.join(d, "coldstart_sweep.png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    note(f"wrote {out} ({', '.join(n for _, n, _ in series)})")


# ---- (b) trace replay: slowdown and scheduling-latency CDFs -----------------------------------


def real_points(path):
    slow, sched = [], []
    for r in read_csv(path):
        if r.get("phase") != "measure" or r.get("status") != "200":
            continue
        resp = fnum(r["response_ms"])
        ex = fnum(r["execution_ms"]) if r.get("execution_ms") else fnum(r.get("requested_ms"))
        if math.isnan(resp) or math.isnan(ex):
            continue
        slow.append(max(resp, 1e-3) / max(ex, 1.0))
        sched.append(max(0.0, resp - ex))
    return slow, sched


def sim_points(path):
    slow, sched = [], []
    for r in read_csv(path):
        if r.get("status") != "ok":
            continue
        resp = fnum(r["end_ms"]) - fnum(r["arrival_ms"])
        ex = fnum(r["duration_ms"])
        if math.isnan(resp) or math.isnan(ex):
            continue
        slow.append(max(resp, 1e-3) / max(ex, 1.0))
        sched.append(max(0.0, resp - ex))
    return slow, sched


def cdf(ax, v, **kw):
    v = sorted(v)
    n = len(v)
    ax.step(v, [(i + 1) / n for i in range(n)], where="post", **kw)


def plot_trace(d):
    done = False
    for rt in ("emulated", "oci"):
        real = pick(d, f"trace_replay_{rt}_real.csv", f"trace_replay_{rt}_quick_real.csv")
        if not real:
            continue
        sim = real.replace("_real.csv", "_sim.csv")
        rs, rq = real_points(real)
        if not rs:
            note(f"trace_replay_{rt}.png skipped: no measured successful rows in {real}")
            continue
        ss, sq = sim_points(sim) if os.path.isfile(sim) else ([], [])
        quick = " (quick: 8x speed)" if "_quick" in real else ""
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        cdf(a1, rs, color="tab:red", label=f"real cluster ({rt}), n={len(rs)}")
        cdf(a2, rq, color="tab:red", label=f"real cluster ({rt})")
        if ss:
            cdf(a1, ss, color="tab:blue", ls="--", label=f"dirigent-sim, n={len(ss)}")
            cdf(a2, sq, color="tab:blue", ls="--", label="dirigent-sim")
        else:
            note(f"trace_replay_{rt}.png: no simulator CSV ({os.path.basename(sim)}), real only")
        if max(rs + ss) > 4:  # a log scale only when the slowdowns spread that far
            a1.set_xscale("log")
            a1.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        a1.set_xlabel("slowdown (response / execution time)")
        a1.set_ylabel("CDF")
        a2.set_xscale("symlog", linthresh=1)
        a2.set_xlabel("scheduling latency, response - execution (ms)")
        for a in (a1, a2):
            a.grid(True, which="both", alpha=0.3)
            a.legend(fontsize=8, loc="lower right")
            a.set_ylim(0, 1.02)
        fig.suptitle(f"InVitro example trace{quick}: real cluster vs simulator")
        fig.tight_layout()
        out = os.path.join(d, f"trace_replay_{rt}.png")
        fig.savefig(out, dpi=120)
        plt.close(fig)
        note(f"wrote {out} ({os.path.basename(real)}" + (f", {os.path.basename(sim)})" if ss else ")"))
        done = True
    if not done:
        note("trace_replay_*.png skipped: no trace_replay_{emulated,oci}[_quick]_real.csv in " + d)


# ---- (c) the cold-start breakdown ------------------------------------------------------------

# (label, columns of cold_start_trace.csv summed, colour)
PARTS = [
    ("image", ["image_fetch"], "tab:purple"),
    ("rootfs (overlay, config)", ["sandbox_create"], "tab:brown"),
    ("network", ["network_setup", "iptables"], "tab:green"),
    ("runtime (crun run)", ["sandbox_start"], "tab:red"),
    ("readiness probe", ["readiness_probe"], "tab:orange"),
    ("DP propagation (CP trace)", ["data_plane_propagation"], "tab:cyan"),
    ("other on the worker", ["other_worker_node", "snapshot_creation", "configure_monitoring",
                             "find_snapshot", "db"], "tab:gray"),
]
TAG = re.compile(r"^cold-(\d+)-\d+$")


def e2e_by_tag(d, quick):
    """{tag: (rate, [cold response_ms])} from the oci sweep's per-invocation CSVs in raw/."""
    out = {}
    pat = os.path.join(d, "raw", f"coldstart_oci{'_quick' if quick else ''}_*.csv.gz")
    for p in glob.glob(pat):
        m = re.search(r"^coldstart_oci%s_(\d+(?:\.\d+)?)\.csv\.gz$" % ("_quick" if quick else ""),
                      os.path.basename(p))
        if not m:
            continue
        try:
            rows = read_csv(p)
        except (OSError, EOFError, csv.Error):
            continue
        lat, tag = [], None
        for r in rows:
            t = TAG.match(r.get("function", ""))
            if t:
                tag = t.group(1)
            if r.get("status") == "200" and r.get("cold") == "cold":
                lat.append(fnum(r["response_ms"]))
        if tag and lat:
            out[tag] = (float(m.group(1)), lat)
    return out


def plot_breakdown(d):
    p = pick(d, "cold_start_trace.csv", "cold_start_trace_quick.csv")
    if not p:
        note("coldstart_breakdown.png skipped: no cold_start_trace.csv in " + d)
        return
    try:
        rows = [r for r in read_csv(p) if r.get("success") == "true"]
    except (OSError, csv.Error) as e:
        note(f"coldstart_breakdown.png skipped: {p}: {e}")
        return
    if not rows or "sandbox_start" not in rows[0]:
        note(f"coldstart_breakdown.png skipped: no successful rows with the expected columns in {p}")
        return
    e2e = e2e_by_tag(d, "_quick" in p)
    groups = {}  # label -> rows
    order = []
    for r in rows:
        t = TAG.match(r.get("service_name", ""))
        key = t.group(1) if t and t.group(1) in e2e else "all"
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(r)
    if "all" in groups and len(groups) > 1:  # rows of no known step: leave them out
        del groups["all"]
        order.remove("all")
    order.sort(key=lambda k: e2e[k][0] if k in e2e else 0)

    def mean_ms(rs, cols):
        def v(r, c):
            x = fnum(r.get(c))
            return 0.0 if math.isnan(x) else x
        return sum(sum(v(r, c) for c in cols) for r in rs) / len(rs) / 1000

    labels, stacks, rest = [], [], []
    for k in order:
        rs = groups[k]
        stacks.append([mean_ms(rs, cols) for _, cols, _ in PARTS])
        if k in e2e:
            rate, lat = e2e[k]
            labels.append(f"{rate:g}/s\n(n={len(rs)})")
            rest.append(max(0.0, sum(lat) / len(lat) - sum(stacks[-1])))
        else:
            labels.append(f"all creates\n(n={len(rs)})")
            rest.append(None)
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(labels) + 5), 4.5))
    x = range(len(labels))
    bottom = [0.0] * len(labels)
    for i, (name, _, colour) in enumerate(PARTS):
        v = [s[i] for s in stacks]
        if not any(v) and name.startswith("DP propagation"):
            name += ": not recorded (0)"
        ax.bar(x, v, bottom=bottom, color=colour, label=name, width=0.6)
        bottom = [b + y for b, y in zip(bottom, v)]
    if any(r is not None for r in rest):
        v = [r or 0 for r in rest]
        ax.bar(x, v, bottom=bottom, color="tab:olive", hatch="//", alpha=0.6, width=0.6,
               label="rest of the end-to-end path\n(metric to the CP, decision, proxied call)")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("mean time per cold start (ms)")
    ax.set_xlabel("oci sweep step (cold starts per second)" if e2e else "")
    ax.set_title("Container cold start: where the time goes")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    out = os.path.join(d, "coldstart_breakdown.png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    note(f"wrote {out} ({os.path.basename(p)}, {len(rows)} creates"
         + (f", end to end from {len(e2e)} sweep step(s))" if e2e else ")"))


# ---- (d) the saturation curve: goodput against offered load -----------------------------------


def plot_overload(d):
    series = []
    for rt in ("emulated", "oci"):
        p = pick(d, f"overload_{rt}.csv", f"overload_{rt}_quick.csv")
        pts, best = [], None
        if p:
            for r in read_csv(p):
                x, y = fnum(r.get("rate_offered")), fnum(r.get("goodput_per_s"))
                if math.isfinite(x) and math.isfinite(y):
                    pts.append((x, y, r.get("phase", "")))
                if r.get("phase") == "best":
                    best = x
        sw = pick(d, f"coldstart_sweep_{rt}_onecluster.csv",
                  f"coldstart_sweep_{rt}_onecluster_quick.csv")
        if sw:
            for r in read_csv(sw):
                x, y = fnum(r.get("rate_target")), fnum(r.get("cold_per_s"))
                if math.isfinite(x) and math.isfinite(y):  # steps with errors too: goodput
                    pts.append((x, y, "sweep"))
        if pts:
            series.append((rt, [os.path.basename(f) for f in (p, sw) if f], sorted(pts), best))
    if not series:
        note("overload.png skipped: no overload_{emulated,oci}[_quick].csv in " + d)
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    top = 0
    for rt, names, pts, best in series:
        c = RUNTIME_COLOURS.get(rt)
        ov = [(x, y) for x, y, ph in pts if ph != "sweep"]
        sw = [(x, y) for x, y, ph in pts if ph == "sweep"]
        if ov:
            ax.plot([x for x, _ in ov], [y for _, y in ov], "o-", color=c,
                    label=f"{rt}: bench/overload.sh")
        if sw:
            ax.plot([x for x, _ in sw], [y for _, y in sw], "x", color=c, alpha=0.6,
                    label=f"{rt}: one-cluster sweep steps")
        if best:
            ax.axhline(0.9 * best, color=c, lw=0.8, ls=":",
                       label=f"{rt}: 0.9x the best rate ({best:.0f}/s)")
        top = max(top, max(x for x, _, _ in pts))
    ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--", label="goodput = offered")
    ax.set_xlabel("offered cold starts per second")
    ax.set_ylabel("goodput (successful invocations per second)")
    ax.set_title("Saturation curve: goodput against offered load")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = os.path.join(d, "overload.png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    note(f"wrote {out} ({', '.join(n for _, ns, _, _ in series for n in ns)})")


def main():
    d = "bench/results"
    args = sys.argv[1:]
    if args[:1] == ["--dir"] and len(args) > 1:
        d = args[1]
    elif args:
        print(__doc__, file=sys.stderr)
        return 2
    if not os.path.isdir(d):
        note(f"nothing to plot: no directory {d}")
        return 0
    for f in (plot_sweep, plot_trace, plot_breakdown, plot_overload):
        try:
            f(d)
        except Exception as e:  # a malformed input skips its plot, never the others
            note(f"{f.__name__} skipped: {type(e).__name__}: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
