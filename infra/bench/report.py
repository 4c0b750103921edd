"""The README's Results block and docs/benchmarks.md's "Current results", rendered from the committed results files.

Every number users read comes from a file under docs/bench/ (issue 26): the newest `bench-<stamp>.json` that
`make bench` wrote (copied there by hand when a run is published), and the newest `peers-<stamp>.json` from
`make bench-peers --docs`, when there is one. `make docs` runs this; tests/unit/test_readme.py fails when a block
differs from what this module renders, so a number cannot be edited by hand or go stale.

    python -m infra.bench.report            # rewrite both blocks
    python -m infra.bench.report --check    # exit 1 when a block is out of date
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = ROOT / "docs" / "bench"
TARGETS = {"README.md": ("<!-- results:begin -->", "<!-- results:end -->"),
           "docs/benchmarks.md": ("<!-- results:begin -->", "<!-- results:end -->")}

# The targets the issues set for this 2-core machine (reported, never asserted): issue 25 (throughput), issue 22
# (live-clock latency), issue 28 (sentiment).
GOALS = {"fraud_events_per_s": (">=", 25_000), "fraud_live_p99_ms_2k": ("<=", 100), "fraud_live_p99_ms_10": ("<=", 100),
         "fraud_live_p99_ms_2k_committed": ("<=", 1500), "sentiment_posts_per_s": (">", 300),
         "sentiment_live_p99_ms": ("<=", 1000)}


def newest(prefix: str, bench_dir: Path = BENCH_DIR) -> Path | None:
    """The newest docs/bench/<prefix>-<YYYYmmdd-HHMMSS>.json (the stamp sorts by time)."""
    files = sorted(p for p in bench_dir.glob(f"{prefix}-*.json") if re.fullmatch(rf"{prefix}-\d{{8}}-\d{{6}}", p.stem))
    return files[-1] if files else None


def _num(v, unit: str = "") -> str:
    if v is None:
        return "not measured"
    if isinstance(v, float) and math.isinf(v):
        return "∞ (scores missing)"
    if isinstance(v, str):
        return v
    if abs(v) >= 100:
        text = f"{v:,.0f}"
    else:
        text = f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
        text = text.rstrip("0").rstrip(".") if "." in text else text
    return text + unit


def _spread(h: dict, key: str, unit: str = "") -> str:
    lo, hi = h.get(f"{key}_min"), h.get(f"{key}_max")
    text = _num(h.get(key), unit)
    if lo is not None and hi is not None and h.get(key) is not None:
        text += f" ({_num(lo)}–{_num(hi)})"
    return text


def _goal(h: dict, key: str) -> str:
    if key not in GOALS:
        return ""
    op, goal = GOALS[key]
    v = h.get(key)
    met = v is not None and {">=": v >= goal, "<=": v <= goal, ">": v > goal}[op]
    word = "met" if met else ("not measured" if v is None else "**not met**")
    return f"{op.replace('>=', '≥').replace('<=', '≤')} {goal:,}: {word}"


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.as_posix()


def render_bench(result: dict, path: Path) -> list[str]:
    h, s, m = result["headline"], result["headline"]["settings"], result["headline"]["machine"]
    rows = [
        ("fraud drain, events/s (`fraud_events_per_s`)", _spread(h, "fraud_events_per_s"), "fraud_events_per_s"),
        ("start-up to first score, s (`fraud_startup_s`)", _spread(h, "fraud_startup_s"), None),
        ("live p99 at 10 tx/s, decision path, ms", _spread(h, "fraud_live_p99_ms_10"), "fraud_live_p99_ms_10"),
        ("live p99 at 2,000 tx/s, decision path, ms", _spread(h, "fraud_live_p99_ms_2k"), "fraud_live_p99_ms_2k"),
        ("live p50 at 2,000 tx/s, decision path, ms", _num(h.get("fraud_live_p50_ms_2k")), None),
        ("live p99 at 5,000 tx/s, decision path, ms", _spread(h, "fraud_live_p99_ms_5k"), None),
        ("live p99 at 2,000 tx/s, committed `fraud-scores`, ms", _spread(h, "fraud_live_p99_ms_2k_committed"),
         "fraud_live_p99_ms_2k_committed"),
        ("native scorer speed-up over numpy, batch 64", _num(h.get("native_speedup_b64"), "x"), None),
        ("sentiment, posts/s (`sentiment_posts_per_s`)", _num(h.get("sentiment_posts_per_s")), "sentiment_posts_per_s"),
    ]
    if h.get("fraud_events_per_s_shadow") is not None:
        rows.append(("drain with a shadow version scored on every batch, events/s",
                     _spread(h, "fraud_events_per_s_shadow"), None))
    if "sentiment_live_p99_ms" in h:
        rows.append(("sentiment live p99 beside the fraud job, ms", _spread(h, "sentiment_live_p99_ms"),
                     "sentiment_live_p99_ms"))
    variants = [("at-least-once, 30 s checkpoints", "fraud_events_per_s_at_least_once_30s"),
                ("reference (numpy) scorer", "fraud_events_per_s_reference_scorer"),
                ("10% malformed records", "fraud_events_per_s_10pct_malformed"),
                ("emit at the watermark", "fraud_events_per_s_emit_watermark"),
                ("standalone cluster, parallelism 2", "fraud_events_per_s_cluster_p2")]
    load = m.get("load_avg_max_during_run")
    st = result.get("started", "")
    when = f"{st[0:4]}-{st[4:6]}-{st[6:8]} {st[9:11]}:{st[11:13]} UTC" if re.fullmatch(r"\d{8}-\d{6}", st) else st
    lines = [f"From [{_rel(path)}]({_rel(path)}), run {when}: {m.get('cpu')}, {m.get('cores')} "
             f"cores. Median of {s.get('runs')} runs (min–max) at `make run`'s defaults: emit on {s.get('emit')}, "
             f"{s.get('delivery_guarantee')}, checkpoints every {s.get('checkpoint_interval_ms')} ms, "
             f"{s.get('state_backend')} state, parallelism {s.get('parallelism')}; drains of {s.get('backlog'):,} "
             f"after {s.get('drain_warmup'):,}; live phases of {s.get('seconds_per_rate')} s per rate after "
             f"{s.get('warmup_seconds')} s of warm-up."]
    if m.get("overloaded"):
        lines.append("")
        lines.append(f"**This run was overloaded** (1-minute load average up to {_num(load)} on {m.get('cores')} "
                     "cores: other work shared the machine), so read its figures as lower bounds.")
    lines += ["", "| figure | median (min–max) | target |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {_goal(h, key) if key else ''} |" for name, value, key in rows]
    lines += ["", "Variants, one run each, events/s: " + "; ".join(
        f"{name} {_num(h.get(key))}" for name, key in variants) + "."]
    stem = path.with_suffix("")
    pngs = [(f"{stem.name}-throughput.png", "throughput over time, per drain"),
            (f"{stem.name}-latency-cdf.png", "live-clock latency CDF, per rate")]
    shown = [(n, alt) for n, alt in pngs if (path.parent / n).exists()]
    if shown:
        lines.append("")
        lines.append(" ".join(f"![{alt}]({_rel(path.parent / n)})" for n, alt in shown))
    return lines


def render_peers(result: dict | None, path: Path | None) -> list[str]:
    if not result:
        return ["", "Peers (`make bench-peers`): no published run yet."]
    systems = result.get("systems", {})
    summary = result.get("summary", {})
    lines = ["", f"Peers, one `make bench-peers` run ([{_rel(path)}]({_rel(path)})), same broker, topics, Avro "
             "records, features and model:", "",
             "| system | drain events/s | CPU s / 10k events | live p99 at 2,000 tx/s, ms | peak RSS, MiB | late events "
             "| streamscore ÷ peer |", "|---|---|---|---|---|---|---|"]
    for name, r in systems.items():
        d, lv = r.get("drain", {}), r.get("live_2k", {})
        ratio = summary.get(f"ratio_vs_{name}")
        lines.append(f"| {name} | {_num(d.get('events_per_s'))} | {_num(d.get('cpu_s_per_10k_events'))} | "
                     f"{_num(lv.get('p99'))} | {_num(d.get('peak_rss_mib'))} | {(r.get('late_events') or 'not stated').split(' ')[0]} | "
                     f"{_num(ratio, 'x') if name != 'streamscore' else ''} |")
    missing = summary.get("not_implemented") or []
    if missing:
        lines.append("")
        lines.append("Not measured in that run: " + ", ".join(missing) + ".")
    return lines


def render(bench_dir: Path = BENCH_DIR) -> str:
    path = newest("bench", bench_dir)
    if path is None:
        return "No published `make bench` run yet."
    lines = render_bench(json.loads(path.read_text()), path)
    peers = newest("peers", bench_dir)
    lines += render_peers(json.loads(peers.read_text()) if peers else None, peers)
    return "\n".join(lines)


def replace_block(text: str, begin: str, end: str, body: str) -> str:
    i, j = text.index(begin), text.index(end)
    return text[:i + len(begin)] + "\n" + body + "\n" + text[j:]


def block(text: str, begin: str, end: str) -> str:
    i, j = text.index(begin), text.index(end)
    return text[i + len(begin):j].strip("\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 when a block differs from the render")
    args = ap.parse_args(argv)
    body = render()
    stale = []
    for name, (begin, end) in TARGETS.items():
        f = ROOT / name
        text = f.read_text()
        if block(text, begin, end) != body:
            stale.append(name)
            if not args.check:
                f.write_text(replace_block(text, begin, end, body))
    if args.check and stale:
        print("out of date (run `make docs`): " + ", ".join(stale), file=sys.stderr)
        return 1
    print(("rewrote " + ", ".join(stale)) if stale and not args.check else "results blocks up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
