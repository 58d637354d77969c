"""Draws bench/scaling.png from the rows `autohealer-bench --json` wrote.

    python3 -m venv .venv-bench && .venv-bench/bin/pip install matplotlib
    .venv-bench/bin/python bench/plot.py bench/results.json bench/scaling.png

Four panels against node count (log scales): peak and steady memory, detection lag
(p50 and p99 of the wave during churn), CPU under churn, and the time until the
leader has read every node, for the healer with and without the Heartbeat check and
for the reference model, with the targets of BENCH.md drawn in.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {
    "autohealer": ("tab:blue", "o"),
    "autohealer+heartbeat": ("tab:green", "s"),
    "reference model": ("tab:red", "^"),
}


def series(rows, side, key):
    pts = sorted((r["n"], r[key]) for r in rows if r["side"] == side and r.get(key) is not None)
    return [p[0] for p in pts], [p[1] for p in pts]


def main(src, out):
    with open(src) as f:
        rows = json.load(f)
    sides = [s for s in STYLE if any(r["side"] == s for r in rows)]
    fig, ax = plt.subplots(2, 2, figsize=(12, 9))
    (mem, lag), (cpu, up) = ax

    for s in sides:
        c, m = STYLE[s]
        x, y = series(rows, s, "peak_mib")
        mem.plot(x, y, color=c, marker=m, label=f"{s}: peak")
        x, y = series(rows, s, "rss_mib")
        mem.plot(x, y, color=c, marker=m, linestyle=":", alpha=0.7, label=f"{s}: steady")
    mem.plot([5000], [32], "k*", markersize=12, label="target at 5,000: 32 MiB")
    mem.plot([65000], [256], "k*", markersize=12, label="target at 65,000: 256 MiB")
    mem.set_title("Resident memory of the leader (MiB)")

    for s in sides:
        c, m = STYLE[s]
        x, y = series(rows, s, "lag_p99_ms")
        lag.plot(x, [v / 1000 for v in y], color=c, marker=m, label=f"{s}: p99")
        x, y = series(rows, s, "lag_p50_ms")
        lag.plot(x, [v / 1000 for v in y], color=c, marker=m, linestyle=":", alpha=0.7, label=f"{s}: p50")
    lag.axhline(1.0, color="k", linestyle="--", linewidth=1, label="target: p99 ≤ 1 s")
    lag.set_title("Detection lag past unhealthy-duration, wave during churn (s)")

    for s in sides:
        c, m = STYLE[s]
        x, y = series(rows, s, "cpu_per_min")
        cpu.plot(x, [v / 60 * 100 for v in y], color=c, marker=m, label=s)
    cpu.plot([65000], [5], "b*", markersize=12, label="target at 65,000: 5% (no Heartbeat)")
    cpu.plot([65000], [15], "g*", markersize=12, label="target at 65,000: 15% (Heartbeat)")
    cpu.set_title("CPU of the leader under churn (% of one core)")

    for s in sides:
        c, m = STYLE[s]
        x, y = series(rows, s, "sync_s")
        up.plot(x, y, color=c, marker=m, label=s)
    up.plot([65000], [10], "k*", markersize=12, label="target at 65,000: 10 s")
    up.set_title("Start until the leader has read every node (s)")

    for a in (mem, lag, cpu, up):
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("nodes")
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle("autohealer-bench: the healer against the polling reference's model (BENCH.md)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/results.json", sys.argv[2] if len(sys.argv) > 2 else "bench/scaling.png")
