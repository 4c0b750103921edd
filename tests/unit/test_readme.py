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
