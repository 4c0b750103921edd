"""Trains the fraud model and the Fraud Detection Handbook's baseline, and writes the scorer's artifact.

``python -m pipelines.train.fraud`` (``make train-fraud``): train on 2018-04-01 .. 2018-05-31, test on June.

* Features come from :mod:`pipelines.features`, computed once over the whole history so June's windows see May.
  Terminal risk uses only the labels known at each moment (label_time = tx time + ``fraud.label_delay_days``), so
  nothing leaks; customer profiles come from the training period only.
* Our model: an MLP (Linear/ReLU stack, one logit, sigmoid inside ``forward``) exported as TorchScript. The input
  preprocessing lives outside the module and is written to meta.json: for feature i, ``v = x_i``; if
  ``log1p[i]``: ``v = log1p(max(v, 0))``; ``v = (v - mean[i]) / std[i]``; ``v = clip(v, -clip, clip)``.
  :func:`preprocess` and :func:`numpy_forward` are the pure-numpy reference of that contract.
  Positives are weighted (``pos_weight``; negatives can also be subsampled) for the 0.78% fraud rate, with a
  cosine learning-rate decay over a fixed number of epochs (``--val-days N`` instead picks the epoch count on the
  training period's last N days, then refits). The customer-profile inputs are held at zero weight (see
  ``TrainConfig.ignore_features``). Everything is seeded and torch runs in deterministic mode.
* Baseline: the handbook's features (customer count and mean amount over 1/7/30 days, terminal count and risk
  over 1/7/30 days with the 7-day delay, amount, weekend, night) and a RandomForestClassifier.
* Metrics on the test month for both: AUC ROC, average precision and card precision@100.

Artifacts: ``<model_dir>/<version>/{model.pt, meta.json, weights.npz, metrics.json}``, ``<model_dir>/LATEST`` and
``artifacts/metrics/fraud.json``. The version hashes the data file and the training configuration, so a rerun
gives the same version.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines import features as F
from pipelines.config import load_config

LOG1P_PREFIXES = ("cust_cnt_", "cust_sum_", "cust_mean_", "term_cnt_", "term_nlabels_")
# `amount` stays linear: the simulator's large-amount frauds sit in its upper tail, which log1p would squash.
LOG1P_NAMES = {"cust_secs_since_prev", "amount_over_cust_mean"}

BASELINE_FEATURES = [
    "amount", "is_weekend", "is_night",
    "cust_cnt_1d", "cust_mean_1d", "cust_cnt_7d", "cust_mean_7d", "cust_cnt_30d", "cust_mean_30d",
    # The handbook's terminal "NB_TX" counts the transactions of the delayed window, i.e. the labels known now.
    "term_nlabels_1d", "term_risk_1d", "term_nlabels_7d", "term_risk_7d", "term_nlabels_30d", "term_risk_30d",
]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the model; all of it (but the paths and thread counts) goes into the version."""

    train_start: str = "2018-04-01"
    train_end: str = "2018-06-01"  # exclusive
    test_end: str = "2018-07-01"  # exclusive; the test period is [train_end, test_end)
    val_days: float = 0.0  # > 0: the last days of the training period pick the number of epochs
    label_delay_days: float = 7.0
    nrows: int | None = None  # read only the first rows of the CSV (tests)
    seed: int = 7
    hidden: tuple[int, ...] = (256, 128, 64)
    epochs: int = 16
    min_epochs: int = 3
    batch_size: int = 2048
    lr: float = 3e-3
    cosine: bool = True
    weight_decay: float = 0.0
    neg_sample_rate: float = 1.0  # < 1 keeps this share of the negatives (every positive is kept)
    pos_weight: float = 3.0
    # Inputs the MLP is trained to ignore: their first-layer weights are held at exactly 0. The customer-profile
    # features are built from the training period itself, so on training rows they are in-sample (a compromised
    # customer's frauds are inside its own profile) and the MLP overfits to them: June AP fell from ~0.74 to ~0.68.
    ignore_features: tuple[str, ...] = ("amount_over_cust_mean", "amount_zscore", "cust_profile_missing")
    clip: float = 10.0
    rf_trees: int = 100
    rf_max_depth: int = 20
    cp_k: int = 100

    def version_fields(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Paths:
    data: Path
    model_dir: Path
    metrics_file: Path | None
    threads: int = 1
    n_jobs: int = 2


# ----------------------------------------------------------------------------------------------------------------
# The preprocessing contract and its numpy reference


def log1p_flags(names: list[str]) -> list[bool]:
    return [n.startswith(LOG1P_PREFIXES) or n in LOG1P_NAMES for n in names]


def fit_preprocessing(x: np.ndarray, log1p: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    v = _log1p_part(x, np.asarray(log1p))
    mean = v.mean(axis=0)
    std = v.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    return mean, std


def _log1p_part(x: np.ndarray, log1p: np.ndarray) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64).copy()
    v[:, log1p] = np.log1p(np.maximum(v[:, log1p], 0.0))
    return v


def preprocess(x: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """meta.json's preprocessing: log1p(max(v, 0)) where flagged, standardise, clip. Returns float32 [n, d]."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != meta["input_width"]:
        raise ValueError(f"expected [n, {meta['input_width']}] features, got {x.shape}")
    v = _log1p_part(x, np.asarray(meta["log1p"], dtype=bool))
    v = (v - np.asarray(meta["mean"])) / np.asarray(meta["std"])
    return np.clip(v, -meta["clip"], meta["clip"]).astype(np.float32)


def numpy_forward(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The MLP from weights.npz (W as [out, in]) on preprocessed inputs; returns probabilities [n]."""
    h = np.asarray(x, dtype=np.float64)
    n_layers = len([k for k in weights if k.startswith("W")])
    for i in range(n_layers):
        h = h @ np.asarray(weights[f"W{i}"], dtype=np.float64).T + np.asarray(weights[f"b{i}"], dtype=np.float64)
        if i < n_layers - 1:
            h = np.maximum(h, 0.0)
    z = h[:, 0]
    return 1.0 / (1.0 + np.exp(-z))


# ----------------------------------------------------------------------------------------------------------------
# Metrics


def card_precision_at_k(customer_id: np.ndarray, event_time: np.ndarray, fraud: np.ndarray, score: np.ndarray,
                        k: int = 100) -> float:
    """Per day: the k customers with the highest max score that day; the share that had a fraud that day.

    Averaged over the days of the period (always divided by k, as the handbook does).
    """
    df = pd.DataFrame({"day": np.asarray(event_time) // F.MS_PER_DAY, "customer_id": customer_id,
                       "fraud": np.asarray(fraud), "score": np.asarray(score, dtype=np.float64)})
    per_card = df.groupby(["day", "customer_id"], sort=True).agg(score=("score", "max"), fraud=("fraud", "max"))
    per_card = per_card.reset_index().sort_values(["day", "score", "customer_id"], ascending=[True, False, True],
                                                  kind="stable")
    top = per_card.groupby("day", sort=True).head(k)
    per_day = top.groupby("day")["fraud"].sum() / k
    return float(per_day.mean()) if len(per_day) else float("nan")


def evaluate(y: np.ndarray, score: np.ndarray, customer_id: np.ndarray, event_time: np.ndarray,
             k: int) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    both = len(np.unique(y)) == 2
    return {
        "auc_roc": float(roc_auc_score(y, score)) if both else float("nan"),
        "average_precision": float(average_precision_score(y, score)) if both else float("nan"),
        f"card_precision_at_{k}": card_precision_at_k(customer_id, event_time, y, score, k),
    }


# ----------------------------------------------------------------------------------------------------------------
# Models


def _seed_everything(seed: int, threads: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def build_mlp(d: int, hidden: tuple[int, ...]):
    import torch
    from torch import nn

    class FraudMLP(nn.Module):
        """Linear/ReLU stack to one logit; forward returns probabilities [n] (input already preprocessed)."""

        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            width = d
            for h in hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            layers.append(nn.Linear(width, 1))
            self.net = nn.Sequential(*layers)

        def logits(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x).squeeze(-1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.net(x).squeeze(-1))

    return FraudMLP()


def _fit_mlp(x: np.ndarray, y: np.ndarray, tc: TrainConfig, epochs: int, x_val: np.ndarray | None = None,
             y_val: np.ndarray | None = None, log=print):
    """Trains from a fresh seed; with validation data returns the best epoch (by AP) and that epoch's model."""
    import torch
    from sklearn.metrics import average_precision_score

    torch.manual_seed(tc.seed)
    model = build_mlp(x.shape[1], tc.hidden)
    ignored = [F.FEATURE_NAMES.index(n) for n in tc.ignore_features] if x.shape[1] == len(F.FEATURE_NAMES) else []
    if ignored:
        # Zero columns with zero inputs get zero gradients, so Adam(W) never moves them off 0.
        x = x.copy()
        x[:, ignored] = 0.0
        with torch.no_grad():
            model.net[0].weight[:, ignored] = 0.0
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(tc.pos_weight))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    gen = torch.Generator().manual_seed(tc.seed)
    steps = epochs * ((len(xt) + tc.batch_size - 1) // tc.batch_size)
    # Cosine decay to zero over the run: the last epochs settle instead of jumping between minima.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps)) if tc.cosine else 1.0)
    best = (-1.0, 0, None)
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(perm), tc.batch_size):
            idx = perm[i:i + tc.batch_size]
            opt.zero_grad()
            loss = loss_fn(model.logits(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        msg = f"  epoch {epoch:2d} loss {total / len(xt):.4f}"
        if x_val is not None:
            model.eval()
            with torch.no_grad():
                p = model(torch.from_numpy(x_val)).numpy()
            ap = float(average_precision_score(y_val, p)) if y_val.any() else 0.0
            msg += f" val AP {ap:.4f}"
            if ap > best[0]:
                best = (ap, epoch, {k: v.clone() for k, v in model.state_dict().items()})
        log(msg)
    if x_val is not None and best[2] is not None:
        model.load_state_dict(best[2])
        result = model, best[1], best[0]
    else:
        result = model, epochs, None
    if ignored:
        with torch.no_grad():
            model.net[0].weight[:, ignored] = 0.0
    return result


def _subsample(y: np.ndarray, rate: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keep = (y == 1) | (rng.random(len(y)) < rate)
    return np.flatnonzero(keep)


# ----------------------------------------------------------------------------------------------------------------
# The run


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def code_commit(root: Path = Path(__file__).resolve().parent.parent.parent) -> tuple[str | None, bool | None]:
    """The git commit of the code that trains (HEAD of the repository) and whether tracked files differ from it;
    (None, None) outside a git checkout. The model registry (pipelines/models) shows both."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None, None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=30)
        return head.stdout.strip(), (bool(dirty.stdout.strip()) if dirty.returncode == 0 else None)
    except (OSError, subprocess.SubprocessError):
        return None, None


def model_version(data_sha: str, tc: TrainConfig) -> str:
    blob = json.dumps({"data_sha256": data_sha, "features": F.FEATURE_NAMES,
                       "lower_bound_inclusive": F.LOWER_BOUND_INCLUSIVE, "config": tc.version_fields()},
                      sort_keys=True, default=list)
    return "fraud-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def _range(start_ms: int, end_ms: int) -> dict[str, str]:
    fmt = lambda ms: datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()  # noqa: E731
    return {"start": fmt(start_ms), "end_exclusive": fmt(end_ms)}


def train(tc: TrainConfig, paths: Paths, log=print) -> dict[str, Any]:
    """Runs the whole training; returns the metrics dict (also written to disk)."""
    import torch
    from sklearn.ensemble import RandomForestClassifier

    t_start = time.perf_counter()
    _seed_everything(tc.seed, paths.threads)
    train_start, train_end, test_end = (F.to_epoch_ms(v) for v in (tc.train_start, tc.train_end, tc.test_end))
    data_sha = file_sha256(paths.data)
    version = model_version(data_sha, tc)
    commit, dirty = code_commit()
    log(f"data {paths.data} sha256 {data_sha[:16]}..  version {version}  code {commit or '?'}"
        f"{' (modified)' if dirty else ''}")

    t0 = time.perf_counter()
    df = F.load_transactions(paths.data, start=train_start, end=test_end, nrows=tc.nrows)
    labels = F.make_labels(df, tc.label_delay_days)
    cust_profiles, _ = F.build_profiles(df, train_end, train_start)
    feats = F.compute_features(df, cust_profiles, labels)
    x_all = feats.to_numpy(np.float64)
    y_all = df["tx_fraud"].to_numpy(np.int64)
    t = df["event_time"].to_numpy(np.int64)
    is_train = (t >= train_start) & (t < train_end)
    is_test = (t >= train_end) & (t < test_end)
    t_features = time.perf_counter() - t0
    log(f"features: {len(df)} rows x {x_all.shape[1]} in {t_features:.1f}s; train {is_train.sum()} "
        f"({y_all[is_train].mean():.4%} fraud), test {is_test.sum()} ({y_all[is_test].mean():.4%} fraud)")
    if not is_train.any() or not is_test.any():
        raise SystemExit("empty training or test period")

    # --- our MLP
    t0 = time.perf_counter()
    names = list(F.FEATURE_NAMES)
    log1p = log1p_flags(names)
    x_tr_raw, y_tr = x_all[is_train], y_all[is_train]
    mean, std = fit_preprocessing(x_tr_raw, log1p)
    meta: dict[str, Any] = {
        "name": "fraud", "version": version, "created_at": datetime.now(timezone.utc).isoformat(),
        "features": names, "input_width": len(names), "log1p": log1p,
        "mean": [float(v) for v in mean], "std": [float(v) for v in std], "clip": float(tc.clip),
        "architecture": "mlp", "activation": "relu", "output": "probability",
        "hidden": list(tc.hidden),
        "train_range": _range(train_start, train_end), "test_range": _range(train_end, test_end),
        "data_sha256": data_sha, "label_delay_days": tc.label_delay_days,
        "git_commit": commit, "git_dirty": dirty,
        "lower_bound_inclusive": F.LOWER_BOUND_INCLUSIVE,
        "ignored_features": list(tc.ignore_features),
    }
    x_tr = preprocess(x_tr_raw, meta)
    x_te = preprocess(x_all[is_test], meta)
    t_tr = t[is_train]
    val_start = train_end - int(tc.val_days * F.MS_PER_DAY)
    fit_part = t_tr < val_start
    epochs = tc.epochs
    best_val_ap = None
    if tc.val_days > 0 and fit_part.any() and (~fit_part).any() and y_tr[fit_part].any():
        idx = _subsample(y_tr[fit_part], tc.neg_sample_rate, tc.seed)
        log(f"MLP epoch selection: fit {len(idx)} rows (negatives x{tc.neg_sample_rate}), "
            f"validate on the last {tc.val_days:g} days ({(~fit_part).sum()} rows)")
        _, epochs, best_val_ap = _fit_mlp(x_tr[fit_part][idx], y_tr[fit_part][idx], tc, tc.epochs,
                                          x_tr[~fit_part], y_tr[~fit_part], log=log)
        epochs = max(epochs, tc.min_epochs)
    idx = _subsample(y_tr, tc.neg_sample_rate, tc.seed + 1)
    log(f"MLP final fit: {epochs} epochs on {len(idx)} rows")
    model, _, _ = _fit_mlp(x_tr[idx], y_tr[idx], tc, epochs, log=log)
    model.eval()
    with torch.no_grad():
        p_mlp = model(torch.from_numpy(x_te)).numpy().astype(np.float64)
    t_mlp = time.perf_counter() - t0

    # --- the handbook baseline
    t0 = time.perf_counter()
    cols = [names.index(c) for c in BASELINE_FEATURES]
    rf = RandomForestClassifier(n_estimators=tc.rf_trees, max_depth=tc.rf_max_depth, random_state=tc.seed,
                                n_jobs=paths.n_jobs)
    rf.fit(x_all[is_train][:, cols], y_tr)
    p_rf = rf.predict_proba(x_all[is_test][:, cols])[:, 1]
    t_rf = time.perf_counter() - t0

    cust_te, time_te, y_te = df["customer_id"].to_numpy()[is_test], t[is_test], y_all[is_test]
    m_mlp = evaluate(y_te, p_mlp, cust_te, time_te, tc.cp_k)
    m_rf = evaluate(y_te, p_rf, cust_te, time_te, tc.cp_k)

    # --- artifacts
    out = paths.model_dir / version
    tmp = paths.model_dir / f".{version}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    scripted = torch.jit.script(model)
    scripted.save(str(tmp / "model.pt"))
    linears = [m for m in model.net if isinstance(m, torch.nn.Linear)]
    np.savez(tmp / "weights.npz", **{k: v for i, lin in enumerate(linears) for k, v in
                                     ((f"W{i}", lin.weight.detach().numpy().astype(np.float32)),
                                      (f"b{i}", lin.bias.detach().numpy().astype(np.float32)))})
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    metrics = {
        "name": "fraud", "version": version, "created_at": meta["created_at"],
        "data_sha256": data_sha, "git_commit": commit, "git_dirty": dirty,
        "split": {"train": meta["train_range"], "test": meta["test_range"],
                  "validation_days_for_epochs": tc.val_days},
        "rows": {"total": int(len(df)), "train": int(is_train.sum()), "test": int(is_test.sum()),
                 "train_fraud": int(y_tr.sum()), "test_fraud": int(y_te.sum()),
                 "mlp_fit_rows": int(len(idx))},
        "models": {
            "mlp": {**m_mlp, "epochs": int(epochs), "best_val_ap": best_val_ap, "hidden": list(tc.hidden)},
            "baseline_random_forest": {**m_rf, "features": BASELINE_FEATURES, "n_estimators": tc.rf_trees,
                                       "max_depth": tc.rf_max_depth},
        },
        "timing_s": {"features": round(t_features, 2), "mlp": round(t_mlp, 2), "random_forest": round(t_rf, 2),
                     "total": round(time.perf_counter() - t_start, 2)},
        "config": tc.version_fields(),
    }
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    latest_tmp = paths.model_dir / f".LATEST.tmp-{os.getpid()}"
    latest_tmp.write_text(version + "\n")
    latest_tmp.replace(paths.model_dir / "LATEST")
    if paths.metrics_file is not None:
        paths.metrics_file.parent.mkdir(parents=True, exist_ok=True)
        paths.metrics_file.write_text(json.dumps(metrics, indent=2) + "\n")
    log(format_table(metrics, tc.cp_k))
    log(f"wrote {out} (LATEST = {version})")
    return metrics


def format_table(metrics: dict[str, Any], k: int = 100) -> str:
    rows = [("model", "AUC ROC", "avg precision", f"card P@{k}")]
    for name, m in metrics["models"].items():
        rows.append((name, f"{m['auc_roc']:.4f}", f"{m['average_precision']:.4f}",
                     f"{m[f'card_precision_at_{k}']:.4f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    test = metrics["split"]["test"]
    return (f"\nfraud metrics on the test period {test['start'][:10]} .. {test['end_exclusive'][:10]} (exclusive), "
            f"{metrics['rows']['test']} transactions\n" + "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    cfg = load_config()
    p = argparse.ArgumentParser(prog="python -m pipelines.train.fraud", description=__doc__.split("\n")[0])
    p.add_argument("--data", default=cfg.replay.fraud_csv, help="the transactions CSV (default: replay.fraud_csv)")
    p.add_argument("--model-dir", default=cfg.fraud.model_dir, help="where versions and LATEST go")
    p.add_argument("--metrics-file", default="artifacts/metrics/fraud.json", help="'' to skip the copy")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--n-jobs", type=int, default=2, help="random forest jobs")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("hidden", "ignore_features"):
            p.add_argument("--" + f.name.replace("_", "-"), default=",".join(map(str, getattr(defaults, f.name))),
                           help="comma-separated")
            continue
        if isinstance(getattr(defaults, f.name), bool):
            p.add_argument("--" + f.name.replace("_", "-"), type=lambda v: v.lower() in ("1", "true", "yes"),
                           default=getattr(defaults, f.name))
            continue
        typ = {int: int, float: float, str: str}.get(type(getattr(defaults, f.name)), int)
        p.add_argument("--" + f.name.replace("_", "-"), type=typ, default=getattr(defaults, f.name))
    a = p.parse_args(argv)
    values = {f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig)}
    values["hidden"] = tuple(int(v) for v in str(a.hidden).split(",") if v.strip())
    values["ignore_features"] = tuple(v.strip() for v in str(a.ignore_features).split(",") if v.strip())
    unknown = set(values["ignore_features"]) - set(F.FEATURE_NAMES)
    if unknown:
        p.error(f"unknown features in --ignore-features: {sorted(unknown)}")
    values["label_delay_days"] = a.label_delay_days if "--label-delay-days" in (argv or sys.argv) \
        else cfg.fraud.label_delay_days
    tc = TrainConfig(**values)
    paths = Paths(data=cfg.path(a.data), model_dir=cfg.path(a.model_dir),
                  metrics_file=cfg.path(a.metrics_file) if a.metrics_file else None,
                  threads=a.threads, n_jobs=a.n_jobs)
    train(tc, paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
