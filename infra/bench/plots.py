"""PNG plots of a `make bench` result: throughput over time for each drain, latency CDF for each live-clock rate.

    python -m infra.bench.plots bench-results/latest.json [--out DIR] [--prefix NAME]

writes NAME-throughput.png and NAME-latency-cdf.png (matplotlib, Agg backend: no display needed).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def _finite(xs):
    return [x if isinstance(x, (int, float)) and math.isfinite(x) else math.inf for x in
            (math.inf if x == "inf" else x for x in xs)]


def plot_throughput(result: dict, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drains = [d for d in result.get("fraud_drain", []) if d.get("throughput_timeline", {}).get("t_s")]
    if not drains:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    seen: dict[str, int] = {}
    for d in drains:
        name = d["variant"]
        seen[name] = seen.get(name, 0) + 1
        label = f"{name} #{seen[name]}" if name == "native scorer" else name
        tl = d["throughput_timeline"]
        ax.plot(tl["t_s"], tl["events_per_s"], label=label, linewidth=1.2)
    s = result.get("settings", {})
    ax.set_xlabel("seconds since the job was started (cold)")
    ax.set_ylabel("scores out per second")
    ax.set_title(f"Fraud job draining a {s.get('backlog', '?'):,} backlog: {s.get('delivery_guarantee')}, "
                 f"{s.get('checkpoint_interval_ms')} ms checkpoints, {s.get('state_backend')}, emit {s.get('emit')}",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    m = result.get("machine", {})
    fig.text(0.01, 0.01, f"{m.get('cpu', '')}, {m.get('cores')} cores; max load {m.get('load_avg_max_during_run')}",
             fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_cdf(result: dict, path: Path, emit: str = "arrival", read: str = "decision") -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result.get("fraud_live", {}).get(emit, {}).get("runs", [])
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    colors = {}
    for r in runs:
        for p in r["phases"]:
            cdf = p.get(read, {}).get("cdf_ms")
            if not cdf or not cdf["q"]:
                continue
            rate = p["rate"]
            ms = _finite(cdf["ms"])
            pts = [(m, q) for m, q in zip(ms, cdf["q"]) if math.isfinite(m)]
            if not pts:
                continue
            first = rate not in colors
            line, = ax.plot([max(m, 0.5) for m, _ in pts], [q for _, q in pts], linewidth=1.2,
                            color=colors.get(rate), label=f"{rate:g} tx/s" if first else None,
                            alpha=0.9 if first else 0.5)
            colors.setdefault(rate, line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("latency on the live clock, ms (arrival at a consumer minus the wall clock when sent)")
    ax.set_ylabel("% of transactions sent")
    ax.axhline(99, color="grey", linestyle=":", linewidth=0.8)
    ax.set_title(f"Latency CDF per live rate ({read} topic, emit {emit}; {len(runs)} runs, one line each; "
                 "a missing score never reaches 100%)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_plots(result: dict, out_dir: Path, prefix: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made = [plot_throughput(result, out_dir / f"{prefix}-throughput.png"),
            plot_cdf(result, out_dir / f"{prefix}-latency-cdf.png")]
    return [p for p in made if p is not None]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--out", default=None, help="folder for the PNGs (default: the results file's)")
    ap.add_argument("--prefix", default=None, help="file name prefix (default: the results file's stem)")
    args = ap.parse_args(argv)
    src = Path(args.results)
    for p in write_plots(json.loads(src.read_text()), Path(args.out) if args.out else src.parent,
                         args.prefix or src.stem):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
