"""The README is for users: short, every link resolves, and its results come from the committed results file."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def test_readme_is_short() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; detail belongs in docs/"


def test_every_relative_link_resolves() -> None:
    text = README.read_text()
    missing = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        if not (ROOT / target).exists():
            missing.append(target)
    assert not missing, f"README.md links to missing files: {missing}"


def test_every_doc_the_readme_names_exists() -> None:
    for name in ("architecture", "configuration", "operations", "benchmarks", "native-scorer", "sentiment",
                 "testing"):
        assert (ROOT / "docs" / f"{name}.md").exists(), f"docs/{name}.md is missing"


def test_results_blocks_are_rendered_from_the_committed_results_file() -> None:
    """README's Results and docs/benchmarks.md's Current results equal infra/bench/report.py's render of the newest
    docs/bench/ results; `make docs` rewrites them."""
    from infra.bench import report

    body = report.render()
    assert report.newest("bench") is not None, "no committed docs/bench/bench-<stamp>.json"
    for name, (begin, end) in report.TARGETS.items():
        assert report.block((ROOT / name).read_text(), begin, end) == body, f"{name}: run `make docs`"


def test_render_marks_missing_figures_and_unmet_targets(tmp_path: Path) -> None:
    import json

    from infra.bench import report

    headline = {"fraud_events_per_s": 30_000.0, "fraud_events_per_s_min": 29_000.0, "fraud_events_per_s_max": 31_000.0,
                "fraud_live_p99_ms_2k": float("inf"), "sentiment_posts_per_s": None,
                "settings": {"runs": 3, "emit": "arrival", "delivery_guarantee": "exactly-once",
                             "checkpoint_interval_ms": 2000, "state_backend": "hashmap", "parallelism": 1,
                             "backlog": 10, "drain_warmup": 5, "seconds_per_rate": 1.0, "warmup_seconds": 1.0},
                "machine": {"cpu": "x", "cores": 2, "overloaded": False}}
    (tmp_path / "bench-20300101-000000.json").write_text(json.dumps({"headline": headline,
                                                                     "started": "20300101-000000"}))
    text = report.render(tmp_path)
    assert "30,000 (29,000–31,000) | ≥ 25,000: met" in text
    assert "∞ (scores missing) | ≤ 100: **not met**" in text
    assert "not measured" in text and "overloaded" not in text
