"""The scoring step of the fraud job: a vectorised (pandas/Arrow) Flink UDF.

Flink hands it a batch of rows from the SQL feature chain, across keys, up to `python.fn-execution.arrow.batch.size`
rows or `bundle.time` ms, whichever comes first: that is the micro-batch the scorer sees. Per batch it looks up
the profiles (one Redis HMGET), derives the remaining features with the reference rules in pipelines/features.py,
scores through the scoring interface (the C++ scorer by default), and returns the encoded FraudScore records.
The model is the registry's production version (udfs/scoring.py ProductionScorer): a promotion is picked up between
two batches, and each record's ``model_version`` names the version that decided it. The registry's shadow version,
if any, scores the same batch: its score and version go into ``shadow_score`` / ``shadow_version``; it decides
nothing.
"""

from __future__ import annotations

import gc
import time

import numpy as np
import pandas as pd

from pipelines.features import CUSTOMER_WINDOWS, TERMINAL_WINDOWS
from udfs.features_sql import FINAL_COLUMNS, sql_type

DECISIONS = ("APPROVE", "REVIEW", "DECLINE")  # the FraudScore enum's symbols, in order


def derive_features(c: dict[str, np.ndarray], profile_mean: np.ndarray, profile_std: np.ndarray) -> dict:
    """From the SQL chain's raw aggregates to the model's features (names as pipelines.features.FEATURE_NAMES)."""
    from pipelines import features as F

    f: dict[str, np.ndarray] = {}
    for w in CUSTOMER_WINDOWS:
        cnt = c[f"cust_cnt_{w}"].astype(np.float64)
        s = c[f"cust_sum_{w}"].astype(np.float64)
        f[f"cust_cnt_{w}"], f[f"cust_sum_{w}"] = cnt, s
        f[f"cust_mean_{w}"] = np.where(cnt > 0, s / np.maximum(cnt, 1), 0.0)
    t = c["event_time"].astype(np.int64)
    prev_ts = c["cust_prev_ts"].astype(np.int64)
    prev = np.where(c["cust_same_ts"] > 1, 0.0, np.where(prev_ts < 0, -1.0, (t - prev_ts) / 1000.0))
    f["cust_secs_since_prev"] = prev
    amount = c["amount"].astype(np.float64)
    # Each row's own profile, looked up already; a profile without a std counts as none, as it always has here.
    F.profile_amount_features(amount, np.where(np.isnan(profile_std), np.nan, profile_mean), profile_std, f)
    for w in TERMINAL_WINDOWS:
        f[f"term_cnt_{w}"] = c[f"term_cnt_{w}"].astype(np.float64)
        n = c[f"term_nlabels_{w}"].astype(np.float64)
        fr = c[f"term_nfraud_{w}"].astype(np.float64)
        f[f"term_risk_{w}"] = np.where(n > 0, fr / np.maximum(n, 1), 0.0)
        f[f"term_nlabels_{w}"] = n
    hour = (t // F.MS_PER_HOUR) % 24
    dow = (t // F.MS_PER_DAY + 3) % 7
    f["hour_of_day"] = hour.astype(np.float64)
    f["is_weekend"] = (dow >= 5).astype(np.float64)
    f["is_night"] = (hour < 6).astype(np.float64)
    return f


def make_udf(bootstrap: str | None = None, dead_topic: str | None = None):
    """``bootstrap`` and ``dead_topic``: the job's brokers and dead-letter topic (its command line), where the
    decider reads the control topic and dead-letters what it refuses; default: the config's."""
    from pyflink.table import DataTypes
    from pyflink.table.udf import ScalarFunction, udf

    class FraudScoringFunction(ScalarFunction):
        def open(self, function_context):
            from pipelines import metrics
            from pipelines.config import load_config
            from pipelines.models import ab_arm
            from pipelines.profiles import ProfileStore
            from pipelines.rules import Decider
            from pipelines.serde import BatchEncoder
            from udfs.scoring import ProductionScorer

            self.cfg = load_config()
            # The registry's production version, swapped between batches when it changes (hot swap).
            self.models = ProductionScorer(self.cfg)
            self.features = self.models.features
            self.profiles = ProfileStore(self.cfg.redis.redis_url, max_amount=self.cfg.fraud.max_amount)
            self.encoder = BatchEncoder("fraud_score")
            self.ab_arm = ab_arm
            # Thresholds and hard rules (pipelines/rules.py): the score decides through the current rule set.
            rules_cfg = self.cfg if not dead_topic else self.cfg.with_overrides({"topics": {"dead_letter": dead_topic}})
            self.decider = Decider(rules_cfg, bootstrap=bootstrap)
            self.m = metrics
            self.out = metrics.EVENTS_OUT.labels("fraud-job", self.cfg.topics.fraud_scores)
            self.e2e = metrics.END_TO_END_SECONDS.labels("fraud")
            metrics.MODEL_INFO.info({"fraud_model_version": self.models.scorer.version,
                                     "fraud_scorer": type(self.models.scorer).__name__})
            metrics.serve(self.cfg.metrics.job_port)
            # Everything loaded so far (torch, pandas, pyflink, the model) lives as long as the worker: frozen, a
            # full collection no longer walks it. A full collection took 133 ms in the worker at 2,000 events/s,
            # and the job's last task waits for the batch in flight all that time.
            gc.freeze()

        def eval(self, *series):
            c = {name: s.to_numpy() for name, s in zip(FINAL_COLUMNS, series)}
            scorer = self.models.current()  # one version decides the whole batch
            n = len(c["transaction_id"])
            cust = self.profiles.lookup("customer", c["customer_id"])
            term = self.profiles.lookup("terminal", c["terminal_id"])
            feats = derive_features(c, cust.mean, cust.std)
            cols = [np.ascontiguousarray(feats[name], dtype=np.float32) for name in self.features]
            scores = np.asarray(scorer.score(cols), dtype=np.float64)
            shadow = self.models.shadow_scorer  # taken with `scorer` by current(): one registry revision per batch
            shadow_scores = None if shadow is None else np.asarray(shadow.score(cols), dtype=np.float64)
            version, arm = scorer.version, None
            if self.models.ab is not None:  # the A/B candidate decides for the customers of its arm
                candidate, fraction, salt = self.models.ab
                arm = self.ab_arm(c["customer_id"], salt, fraction)
                if arm.any():
                    scores = scores.copy()
                    scores[arm] = candidate.score([np.ascontiguousarray(col[arm]) for col in cols])
                version = np.where(arm, candidate.version, scorer.version).astype(object)
            d = self.decider.decide(scores, {**c, **feats})
            flags = (cust.missing.astype(np.int64) | (term.missing.astype(np.int64) << 1)
                     | (cust.invalid.astype(np.int64) << 2) | (term.invalid.astype(np.int64) << 3))
            now = int(time.time() * 1000)
            out = self.encoder.encode({
                "transaction_id": c["transaction_id"], "customer_id": c["customer_id"],
                "terminal_id": c["terminal_id"], "amount": c["amount"], "event_time": c["event_time"],
                "features": (self.features, np.stack([feats[k] for k in self.features], axis=1)),
                "profile_flags": flags, "score": scores, "decision": d.decision, "model_version": version,
                "produced_at": c["produced_at"], "scored_at": np.full(n, now, np.int64),
                "rule_set_version": np.full(n, d.rule_set_version, np.int64), "rule": d.rule,
                "shadow_version": None if shadow is None else shadow.version, "shadow_score": shadow_scores,
                "ab_arm": None if arm is None else arm.astype(np.int64)}, n)
            self.out.inc(n)
            lat = (now - c["produced_at"].astype(np.int64)) / 1000.0
            for v in lat[:: max(1, n // 64)]:  # a sample is enough for the histogram's quantiles
                self.e2e.observe(max(float(v), 0.0))
            return pd.Series(out)

    input_types = [DataTypes.DOUBLE() if sql_type(col) == "DOUBLE" else DataTypes.BIGINT() for col in FINAL_COLUMNS]
    return udf(FraudScoringFunction(), input_types=input_types, result_type=DataTypes.BYTES(), func_type="pandas")


def make_unknown_label_counter():
    """Counts the labels that do not count toward risk: for transactions the job has not scored
    (streamscore_unknown_labels_total) and repeats (streamscore_duplicate_labels_total).

    Takes the rows of features_sql.UNKNOWN_LABELS_VIEW: one per (terminal, label time) with the counts of its
    labels for unknown transactions and of its repeated labels; a repeat of the previous (terminal, label time) is
    skipped all the same."""
    from pyflink.table import DataTypes
    from pyflink.table.udf import ScalarFunction, udf

    class CountUnknownLabels(ScalarFunction):
        def open(self, function_context):
            from pipelines import metrics
            from pipelines.config import load_config

            self.counter = metrics.UNKNOWN_LABELS
            self.duplicates = metrics.DUPLICATE_LABELS
            self.last = None
            metrics.serve(load_config().metrics.job_port)

        def eval(self, terminal_id, label_time, unknown, duplicate):
            if (terminal_id, label_time) == self.last:
                return 0
            self.last = (terminal_id, label_time)
            self.counter.inc(unknown or 0)
            self.duplicates.inc(duplicate or 0)
            return (unknown or 0) + (duplicate or 0)

    return udf(CountUnknownLabels(), input_types=[DataTypes.BIGINT()] * 4, result_type=DataTypes.BIGINT())
