"""udfs/scoring.py: load_scorer's model resolution, the Scorer protocol, metrics, meta validation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from pipelines.config import ROOT, Config, load_config
from udfs import scoring as S

FEATURES = ["amount", "cust_cnt_1d", "hour_of_day"]


def _artifact(base: Path, version: str, seed: int = 0, name: str = "fraud-facade-test") -> Path:
    return S.write_mlp_artifact(base / version, S.random_mlp_weights(3, (8,), seed=seed), FEATURES,
                                [True, True, False], [1.0, 2.0, 12.0], [1.5, 1.0, 6.0], 4.0, version=version,
                                name=name)


@pytest.fixture
def models(tmp_path) -> Path:
    base = tmp_path / "models" / "fraud"
    _artifact(base, "v1", seed=1)
    _artifact(base, "v2", seed=2)
    (base / "LATEST").write_text("v2\n")
    return base


def _cfg(model_dir: Path | str, **fraud) -> Config:
    return load_config(environ={}).with_overrides({"fraud": {"model_dir": str(model_dir), **fraud}})


def _cols(n: int = 20) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.uniform(0, 500, n).astype(np.float32), rng.integers(0, 9, n).astype(np.int64),
            rng.integers(0, 24, n).astype(np.float32)]


@pytest.mark.parametrize("kind", ["native", "reference"])
def test_load_scorer_latest_and_pinned_version(models, kind):
    s = S.load_scorer(_cfg(models), kind=kind)
    assert isinstance(s, S.Scorer)
    assert s.version == "v2"
    assert s.score(_cols()).shape == (20,)
    pinned = S.load_scorer(_cfg(models, model_version="v1"), kind=kind)
    assert pinned.version == "v1"
    assert not np.allclose(pinned.score(_cols()), s.score(_cols()))


def test_load_scorer_picks_implementation_from_config(models):
    assert isinstance(S.load_scorer(_cfg(models, scorer="reference")), S.ReferenceScorer)
    native = S.load_scorer(_cfg(models, scorer="native", device="cpu"))
    assert isinstance(native, S.NativeScorer) and native.device == "cpu"
    ref = S.load_scorer(_cfg(models), kind="reference")
    np.testing.assert_allclose(native.score(_cols(500)), ref.score(_cols(500)), atol=1e-5, rtol=0)


def test_model_dir_relative_to_repo_root(models):
    rel = os.path.relpath(models, ROOT)
    cfg = _cfg(rel)
    assert not Path(rel).is_absolute() and cfg.path(rel).resolve() == models.resolve()
    assert S.load_scorer(cfg, kind="reference").version == "v2"


def test_missing_model_errors(tmp_path, models):
    with pytest.raises(S.ModelNotFoundError, match="LATEST not found"):
        S.load_scorer(_cfg(tmp_path / "nothing"), kind="reference")
    with pytest.raises(FileNotFoundError, match="v9"):
        S.load_scorer(_cfg(models, model_version="v9"), kind="reference")
    (models / "LATEST").write_text("  \n")
    with pytest.raises(S.ModelNotFoundError, match="is empty"):
        S.load_scorer(_cfg(models), kind="reference")
    with pytest.raises(ValueError, match="scorer kind"):
        S.load_scorer(_cfg(models, model_version="v1"), kind="gpu")


@pytest.mark.parametrize("change, pattern", [
    ({"input_width": 4}, "input_width 4 does not match 3 features"),
    ({"std": [1.0, 0.0, 1.0]}, "std must be finite and > 0"),
    ({"mean": [1.0, 2.0]}, "mean has 2 entries"),
    ({"clip": 0}, "clip must be finite and > 0"),
    ({"activation": "tanh"}, "activation 'tanh' is not supported"),
])
def test_meta_validation(models, change, pattern):
    path = models / "v1" / "meta.json"
    meta = json.loads(path.read_text())
    meta.update(change)
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=pattern):
        S.load_meta(models / "v1")
    del meta["clip"]
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="missing keys"):
        S.load_meta(models / "v1")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        S.load_meta(models / "v1")


@pytest.mark.parametrize("kind", ["native", "reference"])
def test_metrics_recorded_per_call(models, kind):
    s = S.load_scorer(_cfg(models, device="cpu"), kind=kind)
    labels = {"model": "fraud-facade-test", "backend": kind}

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    count0 = sample("streamscore_scorer_batch_size_count")
    sum0 = sample("streamscore_scorer_batch_size_sum")
    t0 = sample("streamscore_inference_seconds_count")
    s.score(_cols(7))
    s.score(_cols(64))
    s.score([c[:0] for c in _cols()])
    assert sample("streamscore_scorer_batch_size_count") - count0 == 3
    assert sample("streamscore_scorer_batch_size_sum") - sum0 == 71
    assert sample("streamscore_inference_seconds_count") - t0 == 3


def test_reference_does_not_need_torch(models):
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['streamscore_native'] = None\n"
        "import numpy as np\n"
        "from udfs.scoring import ReferenceScorer\n"
        f"s = ReferenceScorer({str(models / 'v1')!r})\n"
        "print(s.score([np.ones(3, np.float32), np.ones(3, np.int64), np.ones(3, np.float32)]).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(3,)"
