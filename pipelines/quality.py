"""Live model quality from the delayed labels: ``python -m pipelines.quality`` (started by `make run`).

A fraud label (a chargeback) is known days after its transaction (fraud.label_delay_days of event time, 7 by
default). This service joins each label to the score each model version gave its transaction and, every
quality.refresh_s, recomputes per version over a rolling window:

* AUC ROC and average precision (sklearn's roc_auc_score / average_precision_score);
* precision and recall of ``score >= fraud.review_threshold`` and of ``score >= fraud.decline_threshold``;
* card precision@100: per UTC day of transaction event time, the share of the day's 100 highest-scored cards
  (card = customer, scored by its highest score that day) with a fraud that day, always divided by 100, averaged
  over the window's days: pipelines/train/fraud.py's card_precision_at_k, the number training reports.

and exports them as Prometheus gauges per (model, version, stage) (pipelines/metrics.py, served on
metrics.quality_port) and as one ModelQuality snapshot per version (schemas/model_quality.avsc) on
topics.model_quality (compacted, keyed by version), which the dashboard reads. A value that is undefined (one class
only in the window; no score at or over a threshold for precision) is NaN in Prometheus and null in the snapshot.

Inputs. ``topics.fraud_scores`` read_committed (the exactly-once record of truth: each transaction once) and
``topics.labels``. A score record gives its ``model_version`` (who decided) and, when the job runs a shadow,
``shadow_version`` / ``shadow_score``; each version's pairs are the transactions it scored. A record that does not
decode is counted (streamscore_quality_undecodable_total) and skipped.

Join. A score waits (transaction id -> event time, customer, each version's score) until its label comes; a label
that comes first waits for its score. Both are bounded, in event time and in count. The clock is a watermark of the
scores: the oldest of the newest event times of the fraud-scores partitions (each partition is in event-time order
give or take fraud.out_of_orderness_ms; one partition read ahead of another, as when the service reads the topics
back at its start, must not expire the labels of the one behind). While a partition has no record, nothing expires
by event time; the count bounds still hold:

* a score waits fraud.label_delay_days + quality.expiry_margin_days, at most quality.max_pending_scores of them
  (the oldest in event time go first); either way it is counted as expired;
* a label waits quality.expiry_margin_days for its score (scores follow the labels closely: the exactly-once sink
  publishes at each checkpoint), at most quality.max_pending_labels (oldest first), then it is counted as expired.

Memory is therefore about max_pending_scores x ~250 bytes + max_pending_labels x ~150 bytes + the windows (below):
under 1 GB with the defaults.

Window. The pairs whose transaction event time lies within quality.window_days of the newest labelled transaction
(of any version, so that versions are compared over the same period), at most quality.max_window_labels per version
(the newest kept; on the live clock of `make run`, event time is wall time and seven days would not fit). The
snapshot's window_start says where the kept window of a version begins. A version without pairs in the window loses
its gauges and gets no more snapshots (its last one stays on the compacted topic).

Exact recomputation at every refresh, rather than incremental sketches: at up to a million pairs per version a
refresh costs well under a second of sklearn's sorting, and the numbers are then exactly what an offline
computation on the same pairs gives (tests/integration/test_live_quality.py checks that within 1e-9).

State lives in memory only: the service commits no offsets, so a (re)start reads both topics from the beginning
(they are retained by size) and rebuilds it. Stages and training average precision (metrics.json of the artifact)
come from the model registry (pipelines/models) at each refresh. The alert FraudModelLiveAPDrop compares the
production version's live AP with quality.ap_alert_fraction times its training AP; the fraction and the label
minimum are exported as gauges, so the rule file holds no copy of them (docs/operations.md#fraudmodelliveapdrop).
"""

from __future__ import annotations

import argparse
import heapq
import math
import signal
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from pipelines import kafka_util, metrics
from pipelines.config import Config, load_config
from pipelines.serde import DecodeError, serde

COMPONENT = "quality"
MODEL = "fraud"
GROUP = "streamscore-quality"
DAY_MS = 86_400_000
K = 100
THRESHOLDS = ("review", "decline")


# ------------------------------------------------------------------------------------------------------ metrics


def _nan_to_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def live_metrics(label: np.ndarray, score: np.ndarray, customer_id: np.ndarray, event_time: np.ndarray,
                 review_threshold: float, decline_threshold: float, k: int = K) -> dict[str, Any]:
    """The live-quality numbers of one version's labelled pairs; NaN where undefined (AUC and AP need both
    classes, as training's evaluate; precision needs a score at or over the threshold, recall a fraud)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from pipelines.train.fraud import card_precision_at_k

    y = np.asarray(label, dtype=np.int64)
    s = np.asarray(score, dtype=np.float64)
    n, frauds = int(len(y)), int(y.sum())
    both = 0 < frauds < n
    out: dict[str, Any] = {
        "labels": n, "frauds": frauds,
        "auc_roc": float(roc_auc_score(y, s)) if both else math.nan,
        "average_precision": float(average_precision_score(y, s)) if both else math.nan,
        "card_precision_at_100": (card_precision_at_k(np.asarray(customer_id, dtype=np.int64),
                                                      np.asarray(event_time, dtype=np.int64), y, s, k)
                                  if n else math.nan),
    }
    for name, thr in (("review", review_threshold), ("decline", decline_threshold)):
        flagged = s >= thr
        tp = int((flagged & (y == 1)).sum())
        out[f"precision_{name}"] = tp / int(flagged.sum()) if flagged.any() else math.nan
        out[f"recall_{name}"] = tp / frauds if frauds else math.nan
    return out


# ------------------------------------------------------------------------------------------------------ the join


@dataclass
class Counts:
    """What the join did, by result (the service adds them to the Prometheus counters)."""

    labels: dict[str, int]
    scores: dict[str, int]


class QualityState:
    """The join of scores and labels and the per-version windows; no Kafka, no clock of its own (event time only).

    ``add_score`` / ``add_label`` take decoded records and return the result (also counted in ``counts``);
    ``expire`` drops what waited too long; ``window`` returns one version's pairs in the window as arrays."""

    def __init__(self, *, label_delay_ms: int, margin_ms: int, window_ms: int, max_pending_scores: int,
                 max_pending_labels: int, max_window_labels: int):
        self.score_ttl_ms = label_delay_ms + margin_ms
        self.label_ttl_ms = margin_ms
        self.window_ms = window_ms
        self.max_pending_scores = max_pending_scores
        self.max_pending_labels = max_pending_labels
        self.max_window_labels = max_window_labels
        # transaction id -> (event time, customer id, ((version, score), ...)), and a heap by event time for expiry
        # (entries of ids joined since are skipped when they come up; rebuilt when mostly such).
        self.scores: dict[int, tuple[int, int, tuple[tuple[str, float], ...]]] = {}
        self._heap: list[tuple[int, int]] = []
        # transaction id -> (label, tx_time), oldest first
        self.labels: OrderedDict[int, tuple[int, int]] = OrderedDict()
        # version -> transaction id -> (event time, customer id, label, score)
        self.windows: dict[str, dict[int, tuple[int, int, int, float]]] = {}
        self._partition_clock: dict[int, int | None] = {}  # fraud-scores partition -> newest event time
        self.window_end: int | None = None  # newest labelled transaction's event time
        self.counts = Counts({}, {})

    def assign(self, partitions: Iterable[int]) -> None:
        """The fraud-scores partitions read: the clock waits for each of them."""
        self._partition_clock = {p: self._partition_clock.get(p) for p in partitions}

    @property
    def clock(self) -> int | None:
        """The scores' watermark: the oldest partition's newest event time; None while one has no record."""
        values = list(self._partition_clock.values())
        return None if not values or None in values else min(values)

    def _count(self, kind: dict[str, int], result: str, n: int = 1) -> str:
        kind[result] = kind.get(result, 0) + n
        return result

    def _joined(self, txid: int) -> bool:
        return any(txid in w for w in self.windows.values())

    @staticmethod
    def versions_of(rec: Mapping[str, Any]) -> tuple[tuple[str, float], ...]:
        """(version, score) of the deciding version and, when there is one, the shadow."""
        out = [(str(rec["model_version"]), float(rec["score"]))]
        sv, ss = rec.get("shadow_version"), rec.get("shadow_score")
        if sv and ss is not None and sv != out[0][0]:
            out.append((str(sv), float(ss)))
        return tuple((v, s) for v, s in out if math.isfinite(s))

    def add_score(self, rec: Mapping[str, Any], partition: int = 0) -> str:
        txid = int(rec["transaction_id"])
        et = int(rec["event_time"])
        if txid in self.scores or self._joined(txid):
            return self._count(self.counts.scores, "duplicate")
        versions = self.versions_of(rec)
        if not versions:
            return self._count(self.counts.scores, "invalid")
        cur = self._partition_clock.get(partition)
        self._partition_clock[partition] = et if cur is None else max(cur, et)
        entry = (et, int(rec["customer_id"]), versions)
        pending = self.labels.pop(txid, None)
        if pending is not None:
            self._join(txid, entry, pending[0])
            self._count(self.counts.labels, "joined")
            return self._count(self.counts.scores, "joined")
        self.scores[txid] = entry
        heapq.heappush(self._heap, (et, txid))
        while len(self.scores) > self.max_pending_scores:
            self._pop_oldest_score()
        return self._count(self.counts.scores, "stored")

    def _pop_oldest_score(self) -> None:
        et, txid = heapq.heappop(self._heap)
        e = self.scores.get(txid)
        if e is not None and e[0] == et:
            del self.scores[txid]
            self._count(self.counts.scores, "expired")

    def add_label(self, rec: Mapping[str, Any]) -> str:
        txid = int(rec["transaction_id"])
        label = int(rec["label"])
        if label not in (0, 1):
            return self._count(self.counts.labels, "invalid")
        entry = self.scores.pop(txid, None)
        if entry is not None:
            self._join(txid, entry, label)
            self._count(self.counts.scores, "joined")
            return self._count(self.counts.labels, "joined")
        if txid in self.labels or self._joined(txid):
            return self._count(self.counts.labels, "duplicate")
        self.labels[txid] = (label, int(rec["tx_time"]))
        while len(self.labels) > self.max_pending_labels:
            self.labels.popitem(last=False)
            self._count(self.counts.labels, "expired")
        return self._count(self.counts.labels, "pending")

    def _join(self, txid: int, entry: tuple[int, int, tuple[tuple[str, float], ...]], label: int) -> None:
        et, customer, versions = entry
        for version, score in versions:
            self.windows.setdefault(version, {})[txid] = (et, customer, label, score)
        self.window_end = et if self.window_end is None else max(self.window_end, et)

    def expire(self) -> None:
        """Drops the scores and labels that waited longer than their bound in event time (the service calls it at
        each refresh; the count bounds hold at every insertion)."""
        clock = self.clock
        if clock is not None:
            cutoff = clock - self.score_ttl_ms
            while self._heap and self._heap[0][0] < cutoff:
                self._pop_oldest_score()
            label_cutoff = clock - self.label_ttl_ms
            stale = [t for t, (_, tx_time) in self.labels.items() if tx_time < label_cutoff]
            for t in stale:
                del self.labels[t]
            if stale:
                self._count(self.counts.labels, "expired", len(stale))
        if len(self._heap) > 2 * len(self.scores) + 1024:
            self._heap = [(e[0], t) for t, e in self.scores.items()]
            heapq.heapify(self._heap)

    def window(self, version: str) -> dict[str, np.ndarray]:
        """The version's pairs in the window (pruning the ones that left it): event_time, customer_id, label,
        score and transaction_id arrays, by event time."""
        w = self.windows.get(version, {})
        if not w or self.window_end is None:
            self.windows.pop(version, None)
            return {k: np.empty(0, dtype=np.float64 if k == "score" else np.int64)
                    for k in ("transaction_id", "event_time", "customer_id", "label", "score")}
        ids = np.fromiter(w.keys(), dtype=np.int64, count=len(w))
        vals = list(w.values())
        et = np.fromiter((v[0] for v in vals), dtype=np.int64, count=len(w))
        keep = np.flatnonzero(et >= self.window_end - self.window_ms)
        order = keep[np.lexsort((ids[keep], et[keep]))]  # by event time, then id
        if len(order) > self.max_window_labels:
            order = order[-self.max_window_labels:]
        if len(order) < len(w):
            kept = set(ids[order].tolist())
            for t in [t for t in w if t not in kept]:
                del w[t]
        if not w:
            self.windows.pop(version, None)
        return {"transaction_id": ids[order], "event_time": et[order],
                "customer_id": np.fromiter((vals[i][1] for i in order), dtype=np.int64, count=len(order)),
                "label": np.fromiter((vals[i][2] for i in order), dtype=np.int64, count=len(order)),
                "score": np.fromiter((vals[i][3] for i in order), dtype=np.float64, count=len(order))}


def state_from_config(cfg: Config) -> QualityState:
    q = cfg.quality
    return QualityState(label_delay_ms=int(cfg.fraud.label_delay_days * DAY_MS),
                        margin_ms=int(q.expiry_margin_days * DAY_MS), window_ms=int(q.window_days * DAY_MS),
                        max_pending_scores=q.max_pending_scores, max_pending_labels=q.max_pending_labels,
                        max_window_labels=q.max_window_labels)


# ------------------------------------------------------------------------------------------------------ registry


class Stages:
    """Each version's stage and training average precision, from the registry (re-read at each refresh; a registry
    that cannot be read keeps the last answer). A version the registry does not know is ``unregistered``."""

    def __init__(self, model_dir):
        self.model_dir = model_dir
        self._state = None
        self._unregistered: dict[str, float | None] = {}

    def refresh(self) -> None:
        from pipelines.models import Registry, RegistryError

        try:
            self._state = Registry(self.model_dir, features=()).state()
        except (RegistryError, OSError) as exc:
            print(f"[{COMPONENT}] registry {self.model_dir}: {exc}; keeping the last stages", file=sys.stderr,
                  flush=True)

    def stage(self, version: str) -> str:
        return (self._state.stage(version) if self._state is not None else None) or "unregistered"

    def training_ap(self, version: str) -> float | None:
        from pipelines.models.registry import RegistryError, version_info

        e = self._state.versions.get(version) if self._state is not None else None
        if e is not None:
            m = e.get("metrics") or {}
        else:
            if version not in self._unregistered:
                try:
                    m = version_info(self.model_dir, version).get("metrics") or {}
                except RegistryError:
                    m = {}
                self._unregistered[version] = m.get("average_precision")
            return _as_float(self._unregistered[version])
        return _as_float(m.get("average_precision"))


def _as_float(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


# ------------------------------------------------------------------------------------------------------ service


class QualityService:
    """Reads both topics, keeps a QualityState, and every refresh_s sets the gauges and publishes the snapshots."""

    def __init__(self, cfg: Config, *, bootstrap: str | None = None, scores_topic: str | None = None,
                 labels_topic: str | None = None, quality_topic: str | None = None, model_dir: str | None = None,
                 group: str = GROUP, clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.bootstrap = bootstrap or cfg.kafka.bootstrap_servers
        self.scores_topic = scores_topic or cfg.topics.fraud_scores
        self.labels_topic = labels_topic or cfg.topics.labels
        self.quality_topic = quality_topic or cfg.topics.model_quality
        self.state = state_from_config(cfg)
        self.stages = Stages(cfg.path(model_dir or cfg.fraud.model_dir))
        self.clock = clock
        self.score_serde, self.label_serde = serde("fraud_score"), serde("transaction_label")
        self.quality_serde = serde("model_quality")
        # No offsets are committed: every start reads both topics from the beginning and rebuilds the state.
        self.consumer = kafka_util.consumer(self.bootstrap, group, read_committed=True,
                                            **{"enable.auto.commit": False, "auto.offset.reset": "earliest"})
        self.consumer.subscribe([self.scores_topic, self.labels_topic], on_assign=self._on_assign)
        self.producer = kafka_util.TrackedProducer(self.bootstrap, COMPONENT)
        self._series: dict[str, tuple[str, str]] = {}  # version -> (model, stage) its gauges carry
        self._counted = Counts({}, {})
        self.snapshots: dict[str, dict[str, Any]] = {}  # the last snapshot per version
        metrics.QUALITY_AP_ALERT_FRACTION.set(cfg.quality.ap_alert_fraction)
        metrics.QUALITY_AP_ALERT_MIN_LABELS.set(cfg.quality.ap_alert_min_labels)

    def _on_assign(self, consumer, partitions) -> None:
        self.state.assign(p.partition for p in partitions if p.topic == self.scores_topic)

    def handle(self, msgs: Iterable) -> None:
        for m in msgs:
            if m.error() is not None:
                continue
            topic = m.topic()
            scores = topic == self.scores_topic
            try:
                rec = (self.score_serde if scores else self.label_serde).decode(
                    m.value(), topic=topic, partition=m.partition(), offset=m.offset())
            except DecodeError as exc:
                metrics.QUALITY_UNDECODABLE.labels(topic, exc.reason).inc()
                continue
            if scores:
                self.state.add_score(rec, m.partition())
            else:
                self.state.add_label(rec)
        self._export_counts()

    def _export_counts(self) -> None:
        for kind, counter in (("labels", metrics.QUALITY_LABELS), ("scores", metrics.QUALITY_SCORES)):
            now, before = getattr(self.state.counts, kind), getattr(self._counted, kind)
            for result, n in now.items():
                if n > before.get(result, 0):
                    counter.labels(result).inc(n - before.get(result, 0))
                    before[result] = n

    def refresh(self) -> dict[str, dict[str, Any]]:
        """Recomputes every version's metrics over the window; sets the gauges, publishes and returns the
        snapshots."""
        self.stages.refresh()
        self.state.expire()
        self._export_counts()
        f = self.cfg.fraud
        now_ms = int(self.clock() * 1000)
        out = {}
        for version in sorted(self.state.windows):
            w = self.state.window(version)
            if not len(w["label"]):
                continue
            m = live_metrics(w["label"], w["score"], w["customer_id"], w["event_time"], f.review_threshold,
                             f.decline_threshold)
            snap = {"model": MODEL, "version": version, "stage": self.stages.stage(version),
                    "window_start": int(w["event_time"][0]), "window_end": int(self.state.window_end),
                    "labels": m["labels"], "frauds": m["frauds"],
                    **{k: _nan_to_none(m[k]) for k in ("auc_roc", "average_precision", "precision_review",
                                                       "recall_review", "precision_decline", "recall_decline",
                                                       "card_precision_at_100")},
                    "training_average_precision": self.stages.training_ap(version), "updated_at": now_ms}
            out[version] = snap
        self._set_gauges(out)
        for version, snap in out.items():
            self.producer.produce(self.quality_topic, version.encode(), self.quality_serde.encode(snap), now_ms)
        self.producer.poll(0)
        self.snapshots = out
        metrics.QUALITY_LAST_REFRESH.set(now_ms / 1000)
        return out

    def _set_gauges(self, snaps: Mapping[str, Mapping[str, Any]]) -> None:
        per_version = (metrics.LIVE_AUC_ROC, metrics.LIVE_AVERAGE_PRECISION, metrics.LIVE_CARD_PRECISION,
                       metrics.LIVE_LABELS, metrics.LIVE_FRAUDS, metrics.TRAINING_AVERAGE_PRECISION)
        per_threshold = (metrics.LIVE_PRECISION, metrics.LIVE_RECALL)
        for version, (model, stage) in list(self._series.items()):
            s = snaps.get(version)
            if s is None or s["stage"] != stage:
                for g in per_version:
                    g.remove(model, version, stage)
                for g in per_threshold:
                    for thr in THRESHOLDS:
                        g.remove(model, version, stage, thr)
                del self._series[version]

        def val(x):
            return math.nan if x is None else float(x)

        for version, s in snaps.items():
            lv = (s["model"], version, s["stage"])
            metrics.LIVE_AUC_ROC.labels(*lv).set(val(s["auc_roc"]))
            metrics.LIVE_AVERAGE_PRECISION.labels(*lv).set(val(s["average_precision"]))
            metrics.LIVE_CARD_PRECISION.labels(*lv).set(val(s["card_precision_at_100"]))
            metrics.LIVE_LABELS.labels(*lv).set(s["labels"])
            metrics.LIVE_FRAUDS.labels(*lv).set(s["frauds"])
            metrics.TRAINING_AVERAGE_PRECISION.labels(*lv).set(val(s["training_average_precision"]))
            for thr in THRESHOLDS:
                metrics.LIVE_PRECISION.labels(*lv, thr).set(val(s[f"precision_{thr}"]))
                metrics.LIVE_RECALL.labels(*lv, thr).set(val(s[f"recall_{thr}"]))
            self._series[version] = (s["model"], s["stage"])

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        refresh_s = self.cfg.quality.refresh_s
        next_refresh = time.monotonic() + refresh_s
        next_log = time.monotonic()
        try:
            while not stop():
                self.handle(kafka_util.consume_ready(self.consumer, 5000, 0.2))
                if time.monotonic() >= next_refresh:
                    snaps = self.refresh()
                    next_refresh = time.monotonic() + refresh_s
                    if time.monotonic() >= next_log:
                        self._log(snaps)
                        next_log = time.monotonic() + 60
        finally:
            kafka_util.close_quietly(self.consumer)
            try:
                self.producer.drain(progress_every_s=5)
            except kafka_util.ProduceError as exc:
                print(f"[{COMPONENT}] snapshots not delivered: {exc}", file=sys.stderr, flush=True)

    def _log(self, snaps: Mapping[str, Mapping[str, Any]]) -> None:
        st = self.state
        parts = [f"{v} ({s['stage']}): {s['labels']} labels, AP {s['average_precision']}" for v, s in snaps.items()]
        print(f"[{COMPONENT}] {len(st.scores)} scores and {len(st.labels)} labels waiting; "
              f"{'; '.join(parts) or 'no labelled transactions yet'}", flush=True)


def main(argv: list[str] | None = None) -> int:
    cfg = load_config()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--scores-topic", default=None, help=f"default: topics.fraud_scores ({cfg.topics.fraud_scores})")
    ap.add_argument("--labels-topic", default=None, help=f"default: topics.labels ({cfg.topics.labels})")
    ap.add_argument("--quality-topic", default=None,
                    help=f"default: topics.model_quality ({cfg.topics.model_quality})")
    ap.add_argument("--model-dir", default=None, help=f"the registry's folder; default fraud.model_dir "
                                                      f"({cfg.fraud.model_dir})")
    ap.add_argument("--group", default=GROUP)
    ap.add_argument("--metrics-port", type=int, default=cfg.metrics.quality_port)
    args = ap.parse_args(argv)
    metrics.serve(args.metrics_port)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    svc = QualityService(cfg, bootstrap=args.bootstrap, scores_topic=args.scores_topic,
                         labels_topic=args.labels_topic, quality_topic=args.quality_topic, model_dir=args.model_dir,
                         group=args.group)
    print(f"[{COMPONENT}] reading {svc.scores_topic} and {svc.labels_topic} from the beginning; snapshots to "
          f"{svc.quality_topic}; /metrics on {args.metrics_port}", flush=True)
    svc.run(stop=lambda: bool(stopping))
    return 0


if __name__ == "__main__":
    sys.exit(main())
