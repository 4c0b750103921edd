"""Post sentiment scoring: the model scorer (TorchScript through the native runtime), the VADER fallback, and the
vectorised Flink UDFs of the sentiment job.

* :class:`ModelSentimentScorer` reads ``<model_dir>/<version>/`` (``LATEST`` for "latest"): ``tokenizer.json``
  (the fast tokenizer, used through the ``tokenizers`` library directly) and ``model.pt`` (``(input_ids,
  attention_mask) int64 [n, L] -> probabilities float32 [n, 3]``), run by ``streamscore_native.Model`` on the
  configured device. A batch is tokenised once (truncated to ``max_length``), sorted by token length and cut into
  sub-batches each padded to its own longest text, so short posts do not pay for long ones.
* :class:`VaderSentimentScorer`: VADER's lexicon; label from the compound score (>= 0.05 positive, <= -0.05
  negative, else neutral), probabilities from VADER's neg/neu/pos proportions.
* Both return ``(labels int64 [n] (0 negative, 1 neutral, 2 positive), probs float64 [n, 3])``.
* :func:`make_score_udf`: per post ``ROW<value BYTES (SentimentScore Avro), label STRING, p_positive DOUBLE>`` --
  the label is computed once and both the score sink and the trend windows read it.
* :func:`make_trend_udf`: one SentimentTrend Avro record per (topic, window).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

LABELS = ("negative", "neutral", "positive")


def resolve_model_dir(model_dir: str | Path, version: str = "latest") -> Path:
    base = Path(model_dir)
    if version == "latest":
        latest = base / "LATEST"
        if not latest.exists():
            raise FileNotFoundError(f"{latest} not found: no sentiment model yet (run `make train-sentiment`)")
        version = latest.read_text().strip()
    from pipelines.modelpath import contained

    d = contained(base, version)  # never outside sentiment.model_dir (issue 24)
    if not (d / "model.pt").exists():
        raise FileNotFoundError(f"no model.pt in {d}")
    return d


def artifact_precision(meta: dict) -> str:
    """The precision of an artifact's model.pt (meta.json; artifacts older than the field: fp32, or int8 if
    quantized)."""
    return meta.get("precision") or ("int8" if meta.get("quantized") else "fp32")


def chosen_model(meta: dict, precision: str) -> tuple[str, str, str]:
    """(precision, model file, version) for the config's ``sentiment.precision``: ``artifact`` is model.pt; fp32,
    bf16 or int8 is model_<precision>.pt, named in the version ("+int8") when it is not the artifact's own."""
    own = artifact_precision(meta)
    if precision == "artifact":
        return own, "model.pt", meta["version"]
    return precision, f"model_{precision}.pt", meta["version"] + ("" if precision == own else f"+{precision}")


class ModelSentimentScorer:
    def __init__(self, model_dir: str | Path, version: str = "latest", *, device: str = "auto",
                 max_length: int = 128, batch_size: int = 64, threads: int = 0, precision: str = "artifact",
                 single_thread_below: int = 0):
        import streamscore_native
        from tokenizers import Tokenizer

        self.dir = resolve_model_dir(model_dir, version)
        self.meta = json.loads((self.dir / "meta.json").read_text())
        self.precision, model_file, self.version = chosen_model(self.meta, precision)
        self.max_length = min(max_length, int(self.meta.get("max_length", max_length)))
        self.batch_size = batch_size
        self.tokenizer = Tokenizer.from_file(str(self.dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        if threads > 0:
            streamscore_native.set_num_threads(threads)
        # A batch of fewer posts than single_thread_below runs on one torch thread, a larger one on `threads`.
        self._native = streamscore_native
        self.single_thread_below = single_thread_below
        self.threads = self._threads_now = streamscore_native.get_num_threads()
        if not (self.dir / model_file).exists():
            raise FileNotFoundError(f"no {model_file} in {self.dir} (sentiment.precision={precision!r}; training "
                                    "writes model_bf16.pt and model_int8.pt only with quantize on)")
        self.model = streamscore_native.Model(str(self.dir / model_file), device)
        self.device = self.model.device

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        n = len(texts)
        out = np.zeros((n, 3), dtype=np.float32)
        if n == 0:
            return out
        want = 1 if n < self.single_thread_below else self.threads
        if want != self._threads_now:
            self._native.set_num_threads(want)
            self._threads_now = want
        enc = self.tokenize(texts)
        lens = np.fromiter((len(e) for e in enc), dtype=np.int64, count=n)
        order = np.argsort(lens, kind="stable")
        for s in range(0, n, self.batch_size):
            idx = order[s:s + self.batch_size]
            width = int(lens[idx].max())
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for r, i in enumerate(idx):
                ids[r, :lens[i]] = enc[i]
                mask[r, :lens[i]] = 1
            out[idx] = np.asarray(self.model.run([ids, mask]), dtype=np.float32)
        return out

    def predict(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        p = self.predict_proba(texts).astype(np.float64)
        return p.argmax(1), p


class VaderSentimentScorer:
    version = "vader-3.3.2"

    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.sia = SentimentIntensityAnalyzer()
        self.device = "cpu"

    def predict(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        scores = [self.sia.polarity_scores(t) for t in texts]
        compound = np.asarray([s["compound"] for s in scores], dtype=np.float64)
        probs = np.asarray([[s["neg"], s["neu"], s["pos"]] for s in scores], dtype=np.float64).reshape(-1, 3)
        labels = np.where(compound >= 0.05, 2, np.where(compound <= -0.05, 0, 1))
        return labels, probs


def load_sentiment_scorer(cfg):
    s = cfg.sentiment
    if s.scorer == "vader":
        return VaderSentimentScorer()
    return ModelSentimentScorer(cfg.path(s.model_dir), s.model_version, device=s.device, max_length=s.max_length,
                                threads=s.threads, precision=s.precision, single_thread_below=s.single_thread_below)


# Texts of a few lengths: the TorchScript profiling executor specialises its graph on the first runs, and each new
# padded width can cost a compile, so one short and one long batch take that cost before the first real post.
WARM_UP_TEXTS = ("ok", "warming up the sentiment scorer before the first post arrives " * 8)


def warm_up(scorer, runs: int = 2) -> float:
    """Runs the scorer `runs` times on WARM_UP_TEXTS, so the first real batch does not pay the cold-inference cost
    (issue 28 saw a cold start route posts late; tests/integration/test_sentiment_cold_start.py found none late with
    or without this, so it is a precaution, not the proven fix). Returns the seconds it took."""
    t0 = time.perf_counter()
    for _ in range(runs):
        scorer.predict(list(WARM_UP_TEXTS))
    return time.perf_counter() - t0


def make_score_udf():
    """Pandas UDF (post_id, topic, event_time, produced_at, text) -> ROW<value, label, p_positive>."""
    from pyflink.table import DataTypes
    from pyflink.table.udf import ScalarFunction, udf

    class SentimentScoringFunction(ScalarFunction):
        def open(self, function_context):
            from pipelines import metrics
            from pipelines.config import load_config
            from pipelines.serde import serde

            self.cfg = load_config()
            self.scorer = load_sentiment_scorer(self.cfg)
            warm_up(self.scorer)
            self.serde = serde("sentiment_score")
            self.out = metrics.EVENTS_OUT.labels("sentiment-job", self.cfg.topics.post_sentiment)
            self.e2e = metrics.END_TO_END_SECONDS.labels("sentiment")
            self.batch = metrics.SCORER_BATCH_SIZE.labels("sentiment", self.cfg.sentiment.scorer)
            self.infer = metrics.INFERENCE_SECONDS.labels("sentiment", self.cfg.sentiment.scorer)
            metrics.MODEL_INFO.info({"sentiment_model_version": self.scorer.version,
                                     "sentiment_scorer": type(self.scorer).__name__})
            metrics.serve(self.cfg.metrics.job_port)

        def eval(self, post_id, topic, event_time, produced_at, text):
            import pandas as pd

            n = len(post_id)
            t0 = time.perf_counter()
            labels, probs = self.scorer.predict(text.tolist())
            self.infer.observe(time.perf_counter() - t0)
            self.batch.observe(n)
            now = int(time.time() * 1000)
            encode, version = self.serde.encode, self.scorer.version
            ids, topics = post_id.tolist(), topic.tolist()
            et, prod = event_time.tolist(), produced_at.tolist()
            lab, p = labels.tolist(), probs.tolist()
            values = [encode({"post_id": ids[i], "topic": topics[i], "event_time": et[i],
                              "label": LABELS[lab[i]], "p_negative": p[i][0], "p_neutral": p[i][1],
                              "p_positive": p[i][2], "model_version": version, "produced_at": prod[i],
                              "scored_at": now}) for i in range(n)]
            self.out.inc(n)
            lat = (now - np.asarray(prod, dtype=np.int64)) / 1000.0
            for v in lat[:: max(1, n // 64)]:
                self.e2e.observe(max(float(v), 0.0))
            return pd.DataFrame({"value": values, "label": [LABELS[i] for i in lab],
                                 "p_positive": probs[:, 2]})

    result = DataTypes.ROW([DataTypes.FIELD("value", DataTypes.BYTES()),
                            DataTypes.FIELD("label", DataTypes.STRING()),
                            DataTypes.FIELD("p_positive", DataTypes.DOUBLE())])
    return udf(SentimentScoringFunction(),
               input_types=[DataTypes.STRING(), DataTypes.STRING(), DataTypes.BIGINT(), DataTypes.BIGINT(),
                            DataTypes.STRING()],
               result_type=result, func_type="pandas")


def make_trend_udf():
    """Pandas UDF (topic, window_start, window_end, n_neg, n_neu, n_pos, mean_pos) -> SentimentTrend bytes."""
    from pyflink.table import DataTypes
    from pyflink.table.udf import ScalarFunction, udf

    class TrendEncodeFunction(ScalarFunction):
        def open(self, function_context):
            from pipelines.serde import serde

            self.serde = serde("sentiment_trend")

        def eval(self, topic, ws, we, neg, neu, pos, mean_pos):
            import pandas as pd

            cols = [c.tolist() for c in (topic, ws, we, neg, neu, pos, mean_pos)]
            return pd.Series([self.serde.encode({
                "topic": t, "window_start": a, "window_end": b, "count_negative": n0, "count_neutral": n1,
                "count_positive": n2, "mean_positivity": float(m)}) for t, a, b, n0, n1, n2, m in zip(*cols)])

    return udf(TrendEncodeFunction(),
               input_types=[DataTypes.STRING(), DataTypes.BIGINT(), DataTypes.BIGINT(), DataTypes.BIGINT(),
                            DataTypes.BIGINT(), DataTypes.BIGINT(), DataTypes.DOUBLE()],
               result_type=DataTypes.BYTES(), func_type="pandas")
