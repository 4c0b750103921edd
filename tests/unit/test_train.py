"""A quick fraud training run on the first days of the data: artifact layout, meta.json, TorchScript vs numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines import features as F
from pipelines.train import fraud as T
from pipelines.config import load_config

torch = pytest.importorskip("torch")

META_KEYS = {"name", "version", "created_at", "features", "input_width", "log1p", "mean", "std", "clip",
             "architecture", "activation", "output", "train_range", "test_range", "data_sha256"}


@pytest.fixture(scope="module")
def data_path():
    cfg = load_config()
    path = cfg.path(cfg.replay.fraud_csv)
    if not path.exists():
        pytest.skip(f"no fraud data at {path}")
    return path


def quick_config(**kw) -> T.TrainConfig:
    base = dict(train_start="2018-04-01", train_end="2018-04-08", test_end="2018-04-11", nrows=100_000,
                hidden=(16, 8), epochs=2, batch_size=1024, neg_sample_rate=0.3, rf_trees=5, rf_max_depth=6)
    base.update(kw)
    return T.TrainConfig(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_path):
    out = tmp_path_factory.mktemp("fraud-train")
    torch.set_num_threads(1)
    paths = T.Paths(data=data_path, model_dir=out / "models", metrics_file=out / "metrics" / "fraud.json",
                    threads=1, n_jobs=1)
    metrics = T.train(quick_config(val_days=2.0), paths, log=lambda *a: None)
    return out, paths, metrics


def test_artifact_layout(trained):
    out, paths, metrics = trained
    version = (paths.model_dir / "LATEST").read_text().strip()
    assert version == metrics["version"] and version.startswith("fraud-")
    vdir = paths.model_dir / version
    assert {p.name for p in vdir.iterdir()} == {"model.pt", "meta.json", "weights.npz", "metrics.json"}
    assert json.loads((out / "metrics" / "fraud.json").read_text()) == json.loads((vdir / "metrics.json").read_text())
    for model in ("mlp", "baseline_random_forest"):
        assert {"auc_roc", "average_precision", "card_precision_at_100"} <= set(metrics["models"][model])
    assert metrics["rows"]["train"] > 0 and metrics["rows"]["test"] > 0
    assert not list(paths.model_dir.glob(".*tmp*"))


def test_meta(trained):
    _, paths, metrics = trained
    meta = json.loads((paths.model_dir / metrics["version"] / "meta.json").read_text())
    assert META_KEYS <= set(meta)
    d = meta["input_width"]
    assert meta["features"] == F.FEATURE_NAMES and d == len(F.FEATURE_NAMES)
    assert len(meta["log1p"]) == len(meta["mean"]) == len(meta["std"]) == d
    assert all(isinstance(v, bool) for v in meta["log1p"])
    assert all(s > 0 for s in meta["std"])
    assert meta["clip"] == 10.0 and meta["architecture"] == "mlp" and meta["activation"] == "relu"
    assert meta["output"] == "probability" and meta["name"] == "fraud" and meta["version"] == metrics["version"]
    assert len(meta["data_sha256"]) == 64


def test_torchscript_matches_numpy_reference(trained, data_path):
    _, paths, metrics = trained
    vdir = paths.model_dir / metrics["version"]
    meta = json.loads((vdir / "meta.json").read_text())
    model = torch.jit.load(str(vdir / "model.pt"))
    weights = dict(np.load(vdir / "weights.npz"))
    assert set(weights) == {"W0", "b0", "W1", "b1", "W2", "b2"}
    assert weights["W0"].shape == (16, meta["input_width"]) and weights["W2"].shape == (1, 8)
    ignored = [meta["features"].index(n) for n in meta["ignored_features"]]
    assert (weights["W0"][:, ignored] == 0).all()

    df = F.load_transactions(data_path, nrows=3000)
    feats = F.compute_features(df, F.build_profiles(df, "2018-04-01 12:00")[0], F.make_labels(df))
    x = T.preprocess(feats.to_numpy(), meta)
    assert x.dtype == np.float32 and x.shape == (len(df), meta["input_width"])
    assert np.abs(x).max() <= meta["clip"]
    with torch.no_grad():
        got = model(torch.from_numpy(x))
    assert got.dtype == torch.float32 and tuple(got.shape) == (len(df),)
    want = T.numpy_forward(weights, x)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5, rtol=0)
    assert ((want >= 0) & (want <= 1)).all()


def test_version_is_deterministic():
    assert T.model_version("ab" * 32, quick_config()) == T.model_version("ab" * 32, quick_config())
    assert T.model_version("ab" * 32, quick_config()) != T.model_version("ab" * 32, quick_config(epochs=3))
    assert T.model_version("ab" * 32, quick_config()) != T.model_version("cd" * 32, quick_config())


def test_card_precision_at_k():
    day = F.MS_PER_DAY
    cust = np.array([1, 1, 2, 3, 1, 2])
    t = np.array([0, 10, 20, 30, day, day + 1])
    fraud = np.array([0, 1, 0, 0, 0, 0])
    score = np.array([0.1, 0.2, 0.9, 0.5, 0.3, 0.1])
    # Day 0: top-2 cards are 2 (0.9) and 3 (0.5): no fraud. Top-3 adds card 1, which had a fraud.
    assert T.card_precision_at_k(cust, t, fraud, score, k=2) == 0.0
    assert T.card_precision_at_k(cust, t, fraud, score, k=3) == pytest.approx((1 / 3 + 0) / 2)
    assert T.card_precision_at_k(cust, t, fraud, np.where(cust == 1, 1.0, 0.0), k=1) == pytest.approx(0.5)
