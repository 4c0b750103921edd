"""Models load only from the configured model dir (issue 24): LATEST and versions cannot point outside it."""

from __future__ import annotations

import dataclasses

import pytest

from pipelines.config import load_config
from pipelines.modelpath import ModelPathError, contained
from udfs import scoring, sentiment


def _tree(tmp_path):
    base = tmp_path / "models"
    (base / "v1").mkdir(parents=True)
    (base / "v1" / "model.pt").write_text("x")
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "model.pt").write_text("x")
    return base, evil


def test_inside_is_fine(tmp_path):
    base, _ = _tree(tmp_path)
    assert contained(base, "v1") == base / "v1"


@pytest.mark.parametrize("version", ["../evil", "/etc", "", "..", "v1/../../evil"])
def test_paths_outside_are_refused(tmp_path, version):
    base, evil = _tree(tmp_path)
    with pytest.raises(ModelPathError):
        contained(base, version if version != "/etc" else str(evil))


def test_symlinks_escaping_are_refused(tmp_path):
    base, evil = _tree(tmp_path)
    (base / "v2").symlink_to(evil)
    with pytest.raises(ModelPathError, match="outside"):
        contained(base, "v2")
    (base / "v3").mkdir()
    (base / "v3" / "model.pt").symlink_to(evil / "model.pt")
    with pytest.raises(ModelPathError, match="outside"):
        contained(base, "v3")


def test_latest_pointing_outside_is_refused_by_both_loaders(tmp_path):
    base, evil = _tree(tmp_path)
    (base / "LATEST").write_text("../evil\n")
    cfg = load_config(environ={})
    cfg = dataclasses.replace(cfg, fraud=dataclasses.replace(cfg.fraud, model_dir=str(base)))
    with pytest.raises(ModelPathError):
        scoring.resolve_model_dir(cfg)
    with pytest.raises(ModelPathError):
        sentiment.resolve_model_dir(base)
    (base / "LATEST").write_text("v1\n")
    assert sentiment.resolve_model_dir(base) == base / "v1"
