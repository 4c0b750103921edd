"""What the dashboard shows, aggregated from the output topics; pure Python, no Kafka and no asyncio.

The server feeds decoded records in (``add_fraud_score``, ``add_trend``...) and asks for ``snapshot(now)`` every
broadcast tick. Every structure here is bounded, whatever the input rate or the number of distinct keys:

* throughput: one bucket per wall-clock second, the last ``series_seconds`` kept. *In* is the growth rate of the
  input topics' end offsets (transactions + posts, sampled by the lag poller), *out* is score records read per
  second (fraud-scores + post-sentiment).
* fraud score histogram: ``bins`` equal-width bins over [0, 1], cumulative since the dashboard started, plus the
  count per decision.
* latest REVIEW / DECLINE decisions (newest first) with their **top features**. The attribution is a simple,
  model-agnostic one: each feature value's z-score against the running mean / standard deviation of that feature
  over every scored transaction seen so far (Welford), ranked by |z|, so "how unusual was this feature for this
  transaction". Until ``min_stats`` transactions were seen (or when a feature has no spread) the raw |value| ranks.
* sentiment per post topic over time: the ``mean_positivity`` and counts of the last ``sentiment_windows`` windows
  per topic from ``sentiment-trends``; a re-emitted window (late firing) replaces the earlier value. At most
  ``max_topics`` topics, the least recently updated evicted first.
* per topic, the examples: the ``examples`` most negative and most positive of the last ``recent_posts`` scored
  posts (``p_positive - p_negative``), with their text from the ``posts`` topic (joined on post_id; at most
  ``max_texts`` texts are held, the oldest dropped first), and the volume (posts per window).
* the shift marker: a topic's newest window's mean positivity against the count-weighted mean of its windows in the
  hour before it; ``shift`` is the difference, ``shifted`` true when |shift| > ``shift_threshold``
  (``dashboard.shift_threshold``). The signed shift is exported as ``streamscore_dashboard_sentiment_shift``.
* counts: late transactions / posts, dead letters (by reason, at most ``max_reasons``), records the dashboard
  itself could not decode.
* latency: p50 / p99 of ``scored_at - produced_at`` over the last ``latency_samples`` scores, per pipeline.
* lag: rows per partition given by the lag poller (log-end offset minus the dashboard group's committed offset).
* job: the fraud job's state (RUNNING, RESTARTING, ...) and its restart count (Flink's numRestarts) as the server's
  poller last read them from Flink's REST API (``set_job``); UNREACHABLE when the endpoint did not answer, NO JOB
  when it lists none, NOT WATCHED when the server has no endpoint to ask.
* models (issue 27, :class:`ModelsView`): from fraud-scores, per deciding ``model_version`` the records and their
  decision mix read in the last ``models_window_s`` seconds, the A/B split per ``ab_arm`` when records carry one,
  and per (deciding version, ``shadow_version``) pair the share of records whose shadow score would be decided
  otherwise, the mean |score - shadow_score| and how many of the last ``models_last_n`` each would decline. Both
  scores are decided at the *configured* thresholds (``fraud.review_threshold`` / ``decline_threshold``): a record
  carries its rule set's version, not its thresholds, so a run-time rule set or a hard rule is not replayed (the
  records whose own decision differs from that are counted as ``otherwise``). From model-quality, the latest
  snapshot per version (bounded), production first, then shadow, candidate, the rest.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from typing import Any, Iterable, Mapping

from pipelines.metrics import SENTIMENT_SHIFT, SENTIMENT_SHIFT_THRESHOLD

PANELS = ("throughput", "histogram", "decisions", "sentiment", "counts", "latency", "lag", "job", "models")
DECISIONS = ("APPROVE", "REVIEW", "DECLINE")


class _Welford:
    __slots__ = ("n", "mean", "m2")

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (q in [0, 100]); None when empty."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


def _finite(x: Any) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


ARMS = ("CONTROL", "CANDIDATE")
STAGES = ("production", "shadow", "candidate", "archived")
QUALITY_METRICS = ("auc_roc", "average_precision", "precision_review", "recall_review", "precision_decline",
                   "recall_decline", "card_precision_at_100", "training_average_precision")


def _name(x: Any, chars: int = 64) -> str | None:
    return None if x is None else str(x)[:chars]


def _int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def decide(score: float, review: float, decline: float) -> str:
    """The decision thresholds give a score (pipelines/rules.py's rule set 0, the configured thresholds)."""
    return "DECLINE" if score >= decline else "REVIEW" if score >= review else "APPROVE"


class ModelsView:
    """The models panel: which versions decide, production against shadow, and the live quality per version.

    Per wall-clock second (the second a record was read, as the throughput), bounded to ``window_s`` seconds and
    ``max_versions`` keys per second (more go to ``other``); the last ``last_n`` records with a shadow score in a
    deque; the newest quality snapshot of at most ``max_versions`` versions (the least recently updated evicted).
    """

    def __init__(self, *, review_threshold: float = 0.5, decline_threshold: float = 0.9, window_s: int = 300,
                 last_n: int = 1000, max_versions: int = 8):
        self.review = review_threshold
        self.decline = decline_threshold
        self.window_s = window_s
        self.last_n = last_n
        self.max_versions = max_versions
        # second -> (version, arm) -> [approve, review, decline]
        self._mix: OrderedDict[int, dict[tuple[str, str | None], list[int]]] = OrderedDict()
        # second -> (deciding version, shadow version) -> [n, decided otherwise, sum |diff|, record decision not
        # the configured thresholds' one, shadow without a usable score]
        self._pairs: OrderedDict[int, dict[tuple[str, str], list[float]]] = OrderedDict()
        # (deciding version, shadow version, deciding declines, shadow declines) of the last records with a shadow
        self._recent: deque[tuple[str, str, bool, bool]] = deque(maxlen=last_n)
        self.quality: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.quality_rejected = 0  # decoded snapshots without a version (undecodable ones count as decode errors)

    def _bucket(self, series: OrderedDict, now: float) -> dict:
        sec = int(now)
        bucket = series.get(sec)
        if bucket is None:
            bucket = series[sec] = {}
            if len(series) > 1 and sec < next(reversed(series)):  # the wall clock went back: keep them in order
                ordered = sorted(series.items())
                series.clear()
                series.update(ordered)
        while series and next(iter(series)) <= sec - self.window_s:
            series.popitem(last=False)
        return bucket

    def _key(self, bucket: dict, key: tuple, other: tuple) -> tuple:
        return key if key in bucket or len(bucket) < self.max_versions * (len(ARMS) + 1) else other

    def add(self, rec: Mapping[str, Any], now: float) -> None:
        version = _name(rec.get("model_version")) or "?"
        decision = rec.get("decision")
        arm = rec.get("ab_arm")
        arm = arm if arm in ARMS else None
        if decision in DECISIONS:
            bucket = self._bucket(self._mix, now)
            key = self._key(bucket, (version, arm), ("other", arm))
            counts = bucket.get(key)
            if counts is None:
                counts = bucket[key] = [0, 0, 0]
            counts[DECISIONS.index(decision)] += 1
        shadow = _name(rec.get("shadow_version"))  # .get: records written before the shadow fields have none
        if shadow is None:
            return
        bucket = self._bucket(self._pairs, now)
        key = self._key(bucket, (version, shadow), ("other", "other"))
        entry = bucket.get(key)
        if entry is None:
            entry = bucket[key] = [0, 0, 0.0, 0, 0]
        score, shadow_score = _finite(rec.get("score")), _finite(rec.get("shadow_score"))
        if score is None or shadow_score is None:
            entry[4] += 1
            return
        mine, theirs = decide(score, self.review, self.decline), decide(shadow_score, self.review, self.decline)
        entry[0] += 1
        entry[1] += mine != theirs
        entry[2] += abs(score - shadow_score)
        entry[3] += decision in DECISIONS and decision != mine
        self._recent.append((key[0], key[1], mine == "DECLINE", theirs == "DECLINE"))

    def add_quality(self, rec: Mapping[str, Any] | None) -> bool:
        version = _name((rec or {}).get("version"))
        if not version:
            self.quality_rejected += 1
            return False
        entry: dict[str, Any] = {"version": version, "model": _name(rec.get("model")), "stage": _name(rec.get("stage"))}
        for k in ("labels", "frauds", "window_start", "window_end", "updated_at"):
            entry[k] = _int(rec.get(k))
        for k in QUALITY_METRICS:
            v = _finite(rec.get(k))
            entry[k] = None if v is None else round(v, 4)
        self.quality.pop(version, None)
        self.quality[version] = entry
        while len(self.quality) > self.max_versions:
            self.quality.popitem(last=False)
        return True

    def _stage_rank(self, version: str) -> tuple[int, str]:
        stage = (self.quality.get(version) or {}).get("stage")
        return (STAGES.index(stage) if stage in STAGES else len(STAGES), version)

    def snapshot(self, now: float) -> dict[str, Any]:
        since = int(now) - self.window_s
        mix: dict[str, list[int]] = {}
        arms: dict[str, dict[str, int]] = {}
        for sec, bucket in self._mix.items():
            if sec <= since:
                continue
            for (version, arm), counts in bucket.items():
                row = mix.setdefault(version, [0, 0, 0])
                for i, c in enumerate(counts):
                    row[i] += c
                if arm is not None:
                    per = arms.setdefault(arm, {})
                    per[version] = per.get(version, 0) + sum(counts)
        ranked = sorted(mix.items(), key=lambda kv: -sum(kv[1]))
        if len(ranked) > self.max_versions:  # distinct versions beyond the bound are summed into "other"
            rest = [sum(col) for col in zip(*(c for _, c in ranked[self.max_versions - 1:]))]
            ranked = ranked[:self.max_versions - 1] + [("other", rest)]
        total = sum(sum(c) for _, c in ranked)
        versions = [{"version": v, "n": sum(c), "share": round(sum(c) / total, 4) if total else None,
                     "decisions": dict(zip(DECISIONS, c)), "stage": (self.quality.get(v) or {}).get("stage")}
                    for v, c in ranked]
        arm_total = sum(sum(per.values()) for per in arms.values())
        ab = [{"arm": arm, "n": sum(arms[arm].values()), "share": round(sum(arms[arm].values()) / arm_total, 4),
               "versions": sorted(arms[arm], key=lambda v: -arms[arm][v])[:self.max_versions]}
              for arm in ARMS if arm in arms]
        pairs: dict[tuple[str, str], list[float]] = {}
        for sec, bucket in self._pairs.items():
            if sec <= since:
                continue
            for key, entry in bucket.items():
                acc = pairs.setdefault(key, [0, 0, 0.0, 0, 0])
                for i, x in enumerate(entry):
                    acc[i] += x
        recent: dict[tuple[str, str], list[int]] = {}
        for deciding, shadow, d1, d2 in self._recent:
            acc = recent.setdefault((deciding, shadow), [0, 0, 0])
            acc[0] += 1
            acc[1] += d1
            acc[2] += d2
        shadow_rows = []
        for key in sorted(pairs, key=lambda k: -pairs[k][0])[:self.max_versions]:
            n, differ, diff, otherwise, unscored = pairs[key]
            last = recent.get(key, [0, 0, 0])
            shadow_rows.append({
                "deciding": key[0], "shadow": key[1], "n": int(n), "differ": int(differ),
                "differ_share": round(differ / n, 4) if n else None,
                "mean_abs_diff": round(diff / n, 4) if n else None, "otherwise": int(otherwise),
                "unscored": int(unscored), "last_n": last[0], "declines_deciding": last[1],
                "declines_shadow": last[2]})
        quality = [self.quality[v] for v in sorted(self.quality, key=self._stage_rank)]
        return {"window_s": self.window_s, "last_n": self.last_n, "total": total,
                "thresholds": {"review": self.review, "decline": self.decline, "source": "configured"},
                "versions": versions, "ab": ab, "shadow": shadow_rows, "quality": quality,
                "quality_rejected": self.quality_rejected}


class DashboardState:
    def __init__(self, *, bins: int = 20, decisions: int = 20, top_features: int = 3, series_seconds: int = 120,
                 sentiment_windows: int = 60, max_topics: int = 12, latency_samples: int = 2048,
                 max_features: int = 128, max_reasons: int = 20, min_stats: int = 30,
                 examples: int = 3, recent_posts: int = 50, max_texts: int = 4096, text_chars: int = 280,
                 shift_threshold: float = 0.15, shift_baseline_s: int = 3600,
                 review_threshold: float = 0.5, decline_threshold: float = 0.9, models_window_s: int = 300,
                 models_last_n: int = 1000, max_versions: int = 8,
                 start: float | None = None):
        self.bins = bins
        self.top_features = top_features
        self.series_seconds = series_seconds
        self.sentiment_windows = sentiment_windows
        self.max_topics = max_topics
        self.max_features = max_features
        self.max_reasons = max_reasons
        self.min_stats = min_stats
        self.started = time.time() if start is None else start
        self.examples = examples
        self.recent_posts = recent_posts
        self.max_texts = max_texts
        self.text_chars = text_chars
        self.shift_threshold = shift_threshold
        self.shift_baseline_ms = shift_baseline_s * 1000
        SENTIMENT_SHIFT_THRESHOLD.set(shift_threshold)
        # post_id -> text (bounded, oldest first); topic -> the last scored posts (bounded per topic).
        self.texts: OrderedDict[str, str] = OrderedDict()
        self.untexted: OrderedDict[str, dict] = OrderedDict()  # post_id -> a scored post still without its text
        self.recent: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()

        self.histogram = [0] * bins
        self.decision_counts = {d: 0 for d in DECISIONS}
        self.decisions: deque[dict[str, Any]] = deque(maxlen=decisions)
        self.feature_stats: dict[str, _Welford] = {}

        # second -> score records read in that second; second -> input events/s measured then.
        self._out: OrderedDict[int, int] = OrderedDict()
        self._in: OrderedDict[int, float] = OrderedDict()
        self._input_offsets: dict[str, tuple[float, int]] = {}
        self._input_rates: dict[str, float] = {}

        self.trends: OrderedDict[str, OrderedDict[int, dict[str, Any]]] = OrderedDict()
        self.totals = {"fraud_scores": 0, "sentiment_scores": 0, "trends": 0, "late_transactions": 0,
                       "late_posts": 0, "dead_letters": 0, "decode_errors": 0, "model_quality": 0}
        self.sentiment_labels = {"negative": 0, "neutral": 0, "positive": 0}
        self.dead_letter_reasons: dict[str, int] = {}
        self.latency = {"fraud": deque(maxlen=latency_samples), "sentiment": deque(maxlen=latency_samples)}
        self.lag: list[dict[str, Any]] = []
        self.lag_updated: float | None = None
        self.last_event: float | None = None
        self.models = ModelsView(review_threshold=review_threshold, decline_threshold=decline_threshold,
                                 window_s=models_window_s, last_n=models_last_n, max_versions=max_versions)
        self.job: dict[str, Any] = {"state": "NOT WATCHED", "restarts": None, "name": None, "job_id": None,
                                    "error": None, "updated": None}

    # ------------------------------------------------------------------------------------------------ inputs

    def _count_out(self, now: float) -> None:
        sec = int(now)
        self._out[sec] = self._out.get(sec, 0) + 1
        self._trim(self._out, sec)
        self.last_event = now

    def _trim(self, series: OrderedDict, sec: int) -> None:
        while series and next(iter(series)) <= sec - self.series_seconds:
            series.popitem(last=False)

    def _latency(self, pipeline: str, rec: Mapping[str, Any]) -> None:
        try:
            ms = int(rec["scored_at"]) - int(rec["produced_at"])
        except (KeyError, TypeError, ValueError):
            return
        # Clocks of two hosts can disagree by a little; a negative latency is reported as zero.
        self.latency[pipeline].append(max(0, ms) / 1000.0)

    def add_fraud_score(self, rec: Mapping[str, Any], now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.totals["fraud_scores"] += 1
        self._count_out(now)
        score = _finite(rec.get("score"))
        if score is not None:
            i = min(self.bins - 1, max(0, int(score * self.bins)))
            self.histogram[i] += 1
        decision = rec.get("decision")
        if decision in self.decision_counts:
            self.decision_counts[decision] += 1
        self._latency("fraud", rec)
        self.models.add(rec, now)
        features = {k: v for k, v in (rec.get("features") or {}).items() if _finite(v) is not None}
        top = self.attribute(features)  # before updating, so a value is compared with what came before it
        for name, value in features.items():
            stats = self.feature_stats.get(name)
            if stats is None:
                if len(self.feature_stats) >= self.max_features:
                    continue
                stats = self.feature_stats[name] = _Welford()
            stats.add(float(value))
        if decision in ("REVIEW", "DECLINE"):
            self.decisions.appendleft({
                "transaction_id": rec.get("transaction_id"), "customer_id": rec.get("customer_id"),
                "terminal_id": rec.get("terminal_id"), "amount": _finite(rec.get("amount")),
                "score": score, "decision": decision, "model_version": rec.get("model_version"),
                "event_time": rec.get("event_time"), "scored_at": rec.get("scored_at"),
                "top_features": top,
            })

    def attribute(self, features: Mapping[str, float]) -> list[dict[str, Any]]:
        """The ``top_features`` most unusual features: largest |z| against the running statistics, or largest
        |value| while the statistics are too young."""
        ranked = []
        for name, value in features.items():
            value = float(value)
            stats = self.feature_stats.get(name)
            z = None
            if stats is not None and stats.n >= self.min_stats and stats.std > 0:
                z = (value - stats.mean) / stats.std
            ranked.append((abs(z) if z is not None else -1.0, abs(value), name, value, z))
        # Features with a z-score outrank those without; ties (and the young-statistics case) by |value|.
        ranked.sort(key=lambda r: (r[0], r[1]), reverse=True)
        return [{"name": name, "value": round(value, 4), "z": None if z is None else round(z, 2)}
                for _, _, name, value, z in ranked[:self.top_features]]

    def add_sentiment_score(self, rec: Mapping[str, Any], now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.totals["sentiment_scores"] += 1
        self._count_out(now)
        label = rec.get("label")
        if label in self.sentiment_labels:
            self.sentiment_labels[label] += 1
        self._latency("sentiment", rec)
        topic = str(rec.get("topic", ""))[:64]
        pos, neg = _finite(rec.get("p_positive")), _finite(rec.get("p_negative"))
        if pos is None or neg is None:
            return
        recent = self.recent.get(topic)
        if recent is None:
            if len(self.recent) >= self.max_topics:
                self.recent.popitem(last=False)
            recent = self.recent[topic] = deque(maxlen=self.recent_posts)
        else:
            self.recent.move_to_end(topic)
        post_id = str(rec.get("post_id", ""))[:64]
        entry = {"post_id": post_id, "polarity": round(pos - neg, 4), "label": rec.get("label"),
                 "event_time": rec.get("event_time"), "text": self.texts.pop(post_id, None)}
        recent.append(entry)
        if entry["text"] is None:
            # The two topics are read by one consumer in no fixed order: a score may come before its post, whose
            # text then fills this entry in (add_post). Bounded like the texts.
            self.untexted[post_id] = entry
            while len(self.untexted) > self.max_texts:
                self.untexted.popitem(last=False)

    def add_post(self, rec: Mapping[str, Any], now: float | None = None) -> None:
        """A post from the input topic: its text is kept (bounded) until its score arrives."""
        post_id = str(rec.get("post_id", ""))[:64]
        waiting = self.untexted.pop(post_id, None)
        if waiting is not None:  # its score came first
            waiting["text"] = str(rec.get("text", ""))[:self.text_chars]
            return
        self.texts[post_id] = str(rec.get("text", ""))[:self.text_chars]
        self.texts.move_to_end(post_id)
        while len(self.texts) > self.max_texts:
            self.texts.popitem(last=False)

    def shift(self, topic: str) -> float | None:
        """The newest window's mean positivity minus the count-weighted mean of the windows in the hour before
        it; None without a newest mean or without any earlier window in that hour."""
        windows = self.trends.get(topic)
        if not windows:
            return None
        newest_start = next(reversed(windows))
        newest = windows[newest_start]["mean"]
        if newest is None:
            return None
        total = weight = 0.0
        for start, w in windows.items():
            if newest_start - self.shift_baseline_ms <= start < newest_start and w["mean"] is not None:
                n = max(1, w["neg"] + w["neu"] + w["pos"])
                total += w["mean"] * n
                weight += n
        return None if weight == 0 else newest - total / weight

    def add_trend(self, rec: Mapping[str, Any], now: float | None = None) -> None:
        self.totals["trends"] += 1
        self.last_event = time.time() if now is None else now
        topic = str(rec.get("topic", ""))[:64]
        windows = self.trends.get(topic)
        if windows is None:
            if len(self.trends) >= self.max_topics:
                self.trends.popitem(last=False)
            windows = self.trends[topic] = OrderedDict()
        else:
            self.trends.move_to_end(topic)
        start = int(rec.get("window_start", 0))
        counts = [int(rec.get(k, 0)) for k in ("count_negative", "count_neutral", "count_positive")]
        windows[start] = {"mean": _finite(rec.get("mean_positivity")), "neg": counts[0], "neu": counts[1],
                          "pos": counts[2], "end": int(rec.get("window_end", start))}
        if len(windows) > self.sentiment_windows or (len(windows) > 1 and start < next(reversed(windows))):
            # Keep the windows in time order (a late firing may come after newer ones) and bounded.
            ordered = sorted(windows.items())[-self.sentiment_windows:]
            windows.clear()
            windows.update(ordered)
        shift = self.shift(topic)
        if shift is not None:
            SENTIMENT_SHIFT.labels(topic=topic).set(shift)

    def add_model_quality(self, rec: Mapping[str, Any] | None, now: float | None = None) -> None:
        """A model-quality snapshot (model_quality.avsc): the newest per version is shown."""
        self.totals["model_quality"] += 1
        self.last_event = time.time() if now is None else now
        self.models.add_quality(rec)

    def add_late(self, kind: str, now: float | None = None) -> None:
        self.totals["late_posts" if kind == "posts" else "late_transactions"] += 1
        self.last_event = time.time() if now is None else now

    def add_dead_letter(self, rec: Mapping[str, Any] | None, now: float | None = None) -> None:
        self.totals["dead_letters"] += 1
        self.last_event = time.time() if now is None else now
        reason = str((rec or {}).get("reason") or "unknown")[:64]
        if reason not in self.dead_letter_reasons and len(self.dead_letter_reasons) >= self.max_reasons:
            reason = "other"
        self.dead_letter_reasons[reason] = self.dead_letter_reasons.get(reason, 0) + 1

    def add_decode_error(self) -> None:
        self.totals["decode_errors"] += 1

    def observe_input_offsets(self, name: str, total: int, now: float | None = None) -> None:
        """The sum of an input topic's end offsets at `now`; the rate of growth is events/s in."""
        now = time.time() if now is None else now
        prev = self._input_offsets.get(name)
        self._input_offsets[name] = (now, total)
        if prev is not None and now > prev[0]:
            self._input_rates[name] = max(0.0, (total - prev[1]) / (now - prev[0]))
            sec = int(now)
            self._in[sec] = sum(self._input_rates.values())
            self._trim(self._in, sec)

    def set_lag(self, rows: Iterable[Mapping[str, Any]], now: float | None = None) -> None:
        self.lag = [dict(r) for r in rows][:256]
        self.lag_updated = time.time() if now is None else now

    def set_job(self, status: Mapping[str, Any] | None, error: str | None = None, name: str | None = None,
                now: float | None = None) -> None:
        """The poller's latest reading: a pipelines.flink_rest.JobStatus as a dict, or None with the `error` of an
        endpoint that did not answer (None and no error: it answered and lists no job `name`)."""
        now = time.time() if now is None else now
        if status is not None:
            self.job = {"state": str(status.get("state")), "restarts": int(status.get("restarts") or 0),
                        "name": status.get("name"), "job_id": status.get("job_id"), "error": None, "updated": now}
        else:
            self.job = {"state": "UNREACHABLE" if error else "NO JOB", "restarts": None, "name": name,
                        "job_id": None, "error": (error or "")[:200] or None, "updated": now}

    # ---------------------------------------------------------------------------------------------- snapshot

    def out_rate(self, now: float, window: int = 3) -> float:
        sec = int(now)
        return sum(self._out.get(s, 0) for s in range(sec - window, sec)) / window

    def in_rate(self) -> float | None:
        return sum(self._input_rates.values()) if self._input_rates else None

    def snapshot(self, now: float | None = None, panels: Iterable[str] = PANELS) -> dict[str, Any]:
        now = time.time() if now is None else now
        return {p: getattr(self, f"_panel_{p}")(now) for p in panels}

    def _panel_throughput(self, now: float) -> dict[str, Any]:
        sec = int(now)
        t, out, inn = [], [], []
        last_in = None
        for s in range(sec - self.series_seconds + 1, sec):
            if s in self._in:
                last_in = self._in[s]
            t.append(s)
            out.append(self._out.get(s, 0))
            inn.append(None if last_in is None else round(last_in, 1))
        rate_in = self.in_rate()
        return {"in_rate": None if rate_in is None else round(rate_in, 1),
                "out_rate": round(self.out_rate(now), 1), "t": t, "in": inn, "out": out}

    def _panel_histogram(self, now: float) -> dict[str, Any]:
        return {"bins": list(self.histogram), "edges": [round(i / self.bins, 4) for i in range(self.bins + 1)],
                "total": sum(self.histogram), "decisions": dict(self.decision_counts)}

    def _panel_decisions(self, now: float) -> dict[str, Any]:
        return {"latest": list(self.decisions), "review": self.decision_counts["REVIEW"],
                "decline": self.decision_counts["DECLINE"]}

    def _panel_sentiment(self, now: float) -> dict[str, Any]:
        topics = {}
        for topic, windows in self.trends.items():
            topics[topic] = {"t": list(windows.keys()),
                             "mean": [None if w["mean"] is None else round(w["mean"], 4) for w in windows.values()],
                             "count": [w["neg"] + w["neu"] + w["pos"] for w in windows.values()]}
            shift = self.shift(topic)
            topics[topic]["shift"] = None if shift is None else round(shift, 4)
            topics[topic]["shifted"] = shift is not None and abs(shift) > self.shift_threshold
        for topic, recent in self.recent.items():
            entry = topics.setdefault(topic, {"t": [], "mean": [], "count": [], "shift": None, "shifted": False})
            ranked = sorted(recent, key=lambda r: r["polarity"])
            # Fewer than 2 * examples posts: the two lists share some.
            entry["negative"] = ranked[:self.examples]
            entry["positive"] = ranked[::-1][:self.examples]
        return {"topics": topics, "labels": dict(self.sentiment_labels), "shift_threshold": self.shift_threshold}

    def _panel_counts(self, now: float) -> dict[str, Any]:
        return {**self.totals, "dead_letter_reasons": dict(self.dead_letter_reasons)}

    def _panel_latency(self, now: float) -> dict[str, Any]:
        out = {}
        for pipeline, samples in self.latency.items():
            s = sorted(samples)
            p50, p99 = percentile(s, 50), percentile(s, 99)
            out[pipeline] = {"p50": None if p50 is None else round(p50, 4),
                             "p99": None if p99 is None else round(p99, 4), "samples": len(s)}
        return out

    def _panel_lag(self, now: float) -> dict[str, Any]:
        return {"partitions": self.lag, "total": sum(max(0, int(r.get("lag") or 0)) for r in self.lag),
                "updated": self.lag_updated}

    def _panel_job(self, now: float) -> dict[str, Any]:
        return dict(self.job)

    def _panel_models(self, now: float) -> dict[str, Any]:
        return self.models.snapshot(now)
