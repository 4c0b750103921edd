"""Sentiment pieces without a broker: topic assignment, malformed posts, VADER, the training helpers, and the model
artifact (tokeniser + TorchScript through the native runtime) when one has been trained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.config import load_config
from pipelines.replay.posts import (MALFORMED_KINDS, TOPICS, PostsOptions, PostsReplay, assign_topic, author_of,
                                    iter_posts, load_texts, malformed_post)
from pipelines.serde import DecodeError, serde
from pipelines.train.sentiment import (TrainConfig, calibrate, cross_validate, fit_head, load_splits, macro_recall,
                                       read_tweeteval, sst_accuracy)
from udfs.sentiment import LABELS, VaderSentimentScorer

CFG = load_config()
DATA = CFG.path(CFG.replay.sentiment_dir)
MODEL_DIR = CFG.path(CFG.sentiment.model_dir)


def test_topic_assignment_is_deterministic_and_keyword_first():
    assert assign_topic("Trump wins the GOP debate") == "politics"
    assert assign_topic("The Packers won the game!") == "sports"
    assert assign_topic("New iPhone from Apple") == "tech"
    assert assign_topic("a charming film with great characters") == "entertainment"
    t = "nothing to see here"
    assert assign_topic(t) == assign_topic(t) and assign_topic(t) in TOPICS
    assert author_of(t) == author_of(t) and author_of(t).startswith("user")


@pytest.mark.skipif(not (DATA / "dev.tsv").exists(), reason="shared sentiment data missing")
def test_texts_and_posts():
    texts = load_texts(DATA)
    assert len(texts) > 2800 and all(t.strip() for t in texts)
    topics = {assign_topic(t) for t in texts[:500]}
    assert len(topics) >= 4, topics
    posts = list(iter_posts(texts[:3], spacing_ms=500))
    assert [p.post_id for p in posts] == ["p-0", "p-1", "p-2"]
    assert posts[1].event_time - posts[0].event_time == 500


def test_malformed_posts_are_rejected():
    import random

    from pipelines.serde import DecodeError as DE  # noqa: F401
    from udfs.routing import KINDS

    s = serde("social_post")
    good = {"post_id": "p-1", "author": "u", "text": "hi", "topic": "general", "language": "en",
            "event_time": 1_704_067_200_000, "produced_at": 1}
    now = 1_800_000_000_000
    for kind in MALFORMED_KINDS:
        raw = malformed_post(kind, good, random.Random(1), now)
        try:
            rec = s.decode(raw)
        except DecodeError:
            continue
        assert KINDS["social_post"].check(rec, now, CFG.fraud.max_future_ms) is not None, kind


def test_burst_rate():
    r = PostsReplay.__new__(PostsReplay)
    r.opts = PostsOptions(burst_rate=500, burst_every_s=30, burst_seconds=5)
    r.opts.base.rate = 50
    assert r._rate_now(1.0) == 500 and r._rate_now(10.0) == 50 and r._rate_now(31.0) == 500


def test_vader():
    labels, probs = VaderSentimentScorer().predict(
        ["I love this, it is wonderful!", "This is terrible and I hate it.", "The meeting is at 3pm."])
    assert [LABELS[i] for i in labels] == ["positive", "negative", "neutral"]
    assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1.0, atol=0.01)


def test_metrics_helpers():
    y = np.array([0, 0, 1, 2, 2, 2])
    assert macro_recall(y, y) == 1.0
    assert macro_recall(y, np.array([0, 1, 1, 2, 2, 0])) == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    probs = np.array([[0.6, 0.3, 0.1], [0.1, 0.5, 0.4]])
    assert sst_accuracy(np.array([0, 2]), probs) == 1.0  # neutral is ignored in the binary task


def test_fit_head_folds_the_scaler():
    from sklearn.linear_model import LogisticRegression

    from pipelines.train.sentiment import TrainConfig

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)) * rng.uniform(0.1, 10, size=8) + rng.normal(size=8)
    y = rng.integers(0, 3, size=300)
    x[y == 2, 0] += 5
    tc = TrainConfig(C=1.0)
    W, b = fit_head(x, y, np.ones(300), tc)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=1.0, max_iter=3000, random_state=tc.seed).fit((x - mu) / sd, y)
    assert np.allclose(x @ W.T + b, clf.decision_function((x - mu) / sd), atol=1e-3)


def test_calibration_is_folded_into_the_head():
    """calibrate() fits a balanced LR on the head's logits and folds it in: W' x + b' == A (W x + b) + c."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 6))
    W, b = rng.normal(size=(3, 6)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    z = x @ W.T + b
    y = np.where(z[:, 2] > 1.0, 2, np.where(z[:, 0] > 1.0, 0, 1))  # a shifted decision rule to correct
    W2, b2, info = calibrate(z, y, W, b, seed=0)
    A, c = np.asarray(info["A"]), np.asarray(info["c"])
    assert W2.shape == W.shape and b2.shape == b.shape and info["n"] == 400
    assert np.allclose(x @ W2.T + b2, z @ A.T + c, atol=1e-2)  # A, c are rounded to 4 places in info
    assert macro_recall(y, (x @ W2.T + b2).argmax(1)) >= macro_recall(y, z.argmax(1))


def test_cross_validation_holds_out_each_tweet_once():
    """load_splits(hold=...) holds out exactly those tweets, never trains or calibrates on them; cross_validate's
    stratified folds cover every tweet once and each fold is trained from scratch (a tiny recipe here)."""
    texts, y = read_tweeteval(DATA / "tweeteval")
    tc = TrainConfig(sst_train_n=0, tweet_calib=100)
    hold = np.arange(0, len(texts), 5)
    sp = load_splits(DATA, tc, hold)
    held = set(sp.tweet_test[0])
    assert sp.tweet_test[0] == [texts[i] for i in hold] and list(sp.tweet_test[1]) == list(y[hold])
    assert not held & set(sp.train_texts) - {texts[i] for i in range(len(texts)) if i % 5}  # duplicates aside
    assert len(sp.train_texts) + len(sp.calib[0]) + len(hold) == len(texts) and len(sp.calib[0]) == 100

    tiny = TrainConfig(sst_train_n=60, tweet_train_n=60, tweet_calib=0, finetune_layers=0, eval_n=20,
                       quantize=False)
    cv = cross_validate(tiny, 2, data_dir=DATA, log=lambda *_: None)
    assert cv["folds"] == 2 and [r["fold"] for r in cv["per_fold"]] == [0, 1]
    assert all(0.0 <= r["fp32"]["tweeteval_macro_recall"] <= 1.0 for r in cv["per_fold"])
    mr = cv["fp32"]["tweeteval_macro_recall"]
    assert mr["min"] <= mr["mean"] <= mr["max"] and mr["std"] >= 0


def _model_dir() -> Path | None:
    return MODEL_DIR if (MODEL_DIR / "LATEST").exists() else None


@pytest.mark.skipif(_model_dir() is None, reason="no trained sentiment model (make train-sentiment)")
def test_model_artifact_scores_sentences():
    from transformers import AutoTokenizer

    from udfs.sentiment import ModelSentimentScorer

    scorer = ModelSentimentScorer(MODEL_DIR, device="cpu", batch_size=2)
    texts = ["What a wonderful, delightful movie. I loved every minute!",
             "This was the worst, most boring film I have ever seen.",
             "@user the game starts at 7pm tonight",
             "absolutely brilliant performances " * 60]  # longer than max_length: truncated
    hf = AutoTokenizer.from_pretrained(str(scorer.dir), local_files_only=True)
    assert scorer.tokenize(texts) == hf(texts, truncation=True, max_length=scorer.max_length)["input_ids"]
    labels, probs = scorer.predict(texts)
    assert probs.shape == (4, 3) and np.allclose(probs.sum(1), 1.0, atol=1e-4)
    assert LABELS[labels[0]] == "positive" and LABELS[labels[1]] == "negative"
    # Sorting and sub-batching inside a batch must not change any row.
    one_by_one = np.concatenate([scorer.predict_proba([t]) for t in texts])
    assert np.allclose(scorer.predict_proba(texts), one_by_one, atol=1e-4)
    assert scorer.predict_proba([]).shape == (0, 3)


@pytest.mark.skipif(_model_dir() is None, reason="no trained sentiment model (make train-sentiment)")
def test_small_batches_run_on_one_thread_and_large_ones_on_all():
    """sentiment.single_thread_below: a live batch of a post or two on one torch thread, a backlog's on `threads`;
    the scores are the same either way."""
    import streamscore_native

    from pipelines.config import ConfigError
    from udfs.sentiment import ModelSentimentScorer

    before = streamscore_native.get_num_threads()
    try:
        s = ModelSentimentScorer(MODEL_DIR, device="cpu", threads=2, single_thread_below=4)
        texts = ["a lovely day", "this is awful", "meh", "fine I guess"]
        small = s.predict_proba(texts[:3])
        assert streamscore_native.get_num_threads() == 1
        large = s.predict_proba(texts)
        assert streamscore_native.get_num_threads() == 2
        assert np.allclose(small, large[:3], atol=1e-4)
        with pytest.raises(ConfigError, match="single_thread_below"):
            load_config(environ={"STREAMSCORE_SENTIMENT__SINGLE_THREAD_BELOW": "-1"})
    finally:
        streamscore_native.set_num_threads(before)


@pytest.mark.skipif(_model_dir() is None, reason="no trained sentiment model (make train-sentiment)")
def test_sentiment_precision_choice():
    """sentiment.precision picks model_<precision>.pt; a choice other than the artifact's is named in the version,
    a missing file is a clear error, and an unknown precision is a config error."""
    from pipelines.config import ConfigError
    from udfs.sentiment import ModelSentimentScorer

    base = ModelSentimentScorer(MODEL_DIR, device="cpu")
    texts = ["What a wonderful, delightful movie. I loved every minute!", "the worst, most boring film ever"]
    for p in ("fp32", "bf16", "int8"):
        if not (base.dir / f"model_{p}.pt").exists():
            continue
        s = ModelSentimentScorer(MODEL_DIR, device="cpu", precision=p)
        assert s.precision == p
        assert s.version == base.version if p == base.meta.get("precision") else s.version == f"{base.version}+{p}"
        labels, probs = s.predict(texts)
        assert probs.shape == (2, 3) and list(labels) == [2, 0]
    with pytest.raises(ConfigError, match="precision"):
        load_config(environ={"STREAMSCORE_SENTIMENT__PRECISION": "int4"})


def test_one_precision_rule_for_the_job_and_the_benchmark():
    """The job's scorer and the benchmark's record of it derive the file and version from one function."""
    from udfs.sentiment import chosen_model

    meta = {"version": "sentiment-x", "precision": "bf16"}
    assert chosen_model(meta, "artifact") == ("bf16", "model.pt", "sentiment-x")
    assert chosen_model(meta, "bf16") == ("bf16", "model_bf16.pt", "sentiment-x")
    assert chosen_model(meta, "int8") == ("int8", "model_int8.pt", "sentiment-x+int8")
    # Artifacts from before meta.json had "precision": fp32, or int8 when quantized.
    assert chosen_model({"version": "v"}, "artifact")[0] == "fp32"
    assert chosen_model({"version": "v", "quantized": True}, "int8") == ("int8", "model_int8.pt", "v")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.text(st.characters(categories=("Cc", "Zs", "Zl", "Zp")), max_size=50)
       | st.integers(10_000, 30_000).map(lambda n: "a" * n))
def test_hostile_post_texts_are_scored_or_dead_letters(text):
    """Any text decodes and is either scorable (something visible, within the length bound) or a dead letter with a
    reason: empty, whitespace or control characters only, or too long for the model to read."""
    from udfs.routing import KINDS, MAX_POST_TEXT_CHARS

    s = serde("social_post")
    rec = s.decode(s.encode({"post_id": "p", "author": "u", "text": text, "topic": "t", "language": "en",
                              "event_time": 1_704_067_200_000, "produced_at": 1}))
    problem = KINDS["social_post"].check(rec, 1_800_000_000_000, CFG.fraud.max_future_ms)
    visible = any(c.isprintable() and not c.isspace() for c in text)
    if len(text) > MAX_POST_TEXT_CHARS:
        assert problem[0] == "text-too-long"
    elif not visible:
        assert problem[0] == "empty-text"
    else:
        assert problem is None
