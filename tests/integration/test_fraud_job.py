"""The fraud job against an independent pandas reference, through the real broker, Redis and PyFlink job.

50,000 transactions from the shared data with injected out-of-order events (on time: within the watermark bound),
late events (sent after the job has passed their time) and malformed records, in both emit modes. Every late event
must be in the late topic once, every malformed record in the dead-letter topic, and nothing may be missing or
duplicated. Features (counts exactly, amounts to 1e-6):

* at the watermark, every on-time event's features match pipelines/features.py compute_features, the training
  reference, whatever order the rows arrived in;
* on arrival, a transaction's windows hold the rows its key had received before it, so the reference has to know
  that order. The test records it: the JVM runs with -Dstreamscore.arrival-log, the feature functions write the
  order they saw (udfs/java ArrivalLog), and pipelines/features.py arrival_window_features replays it. With four
  partitions, two topics and out-of-order events, a bound on the difference would allow for whole hours of event
  time of skew between partitions in a replay this fast; the recorded order makes the check exact. The features
  that no window decides (amount, profile, time of day) match compute_features as at the watermark.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.features import FEATURE_NAMES, arrival_window_features, build_profiles, compute_features
from pipelines.profiles import publish
from pipelines.replay.fraud import FraudReplay, ReplayOptions
from pipelines.serde import serde
from tests.flink_util import RunningJob
from udfs.fraud_scoring import derive_features
from udfs.scoring import ReferenceScorer
from tests.pipeline_util import write_test_model

pytestmark = pytest.mark.integration

N = 50_000
COUNT_FEATURES = [f for f in FEATURE_NAMES if "_cnt_" in f or "nlabels" in f or f.startswith("is_")
                  or f in ("hour_of_day", "cust_profile_missing")]


@pytest.fixture
def model_dir(tmp_path):
    return write_test_model(tmp_path / "models", seed=3)


def count_ids(msgs, schema, field="transaction_id"):
    return Counter(serde(schema).decode(m.value())[field] for m in msgs)


def arrival_reference(log_dir, tx_df: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The window features as known at arrival, from the order the job's feature functions logged."""
    amount = dict(zip(tx_df["transaction_id"], tx_df["amount"]))
    fraud = dict(zip(labels["transaction_id"], labels["label"]))
    cust, term = [], []
    for line in (log_dir / "customer.log").read_text().splitlines():
        key, txid, t, _ = line.split()
        cust.append((int(key), int(txid), int(t), amount[int(txid)]))
    for line in (log_dir / "terminal.log").read_text().splitlines():
        key, txid, t, kind = line.split()
        is_tx = kind == "tx"
        term.append((int(key), int(txid), int(t), is_tx, 0 if is_tx else int(fraud[int(txid)])))
    raw = arrival_window_features(cust, term)
    c = {col: raw[col].to_numpy() for col in raw.columns}
    times = dict(zip(tx_df["transaction_id"], tx_df["event_time"]))
    c["event_time"] = np.array([times[i] for i in raw.index], dtype=np.int64)
    c["amount"] = np.array([amount[i] for i in raw.index], dtype=np.float64)
    nan = np.full(len(raw), np.nan)
    f = derive_features(c, nan, nan)
    windowed = [k for k in FEATURE_NAMES if k.startswith(("cust_", "term_")) and k != "cust_profile_missing"]
    return pd.DataFrame({k: f[k] for k in windowed}, index=raw.index)


@pytest.mark.parametrize("emit", ["arrival", "watermark"])
def test_fraud_job_features_late_dead_letters(kafka_bootstrap, redis_url, topic_factory, tmp_path, model_dir, emit):
    cfg = load_config()
    tx_t, lb_t, out_t = topic_factory("tx"), topic_factory("labels"), topic_factory("scores")
    late_t, dead_t = topic_factory("late"), topic_factory("dead")
    cp_t, tp_t = topic_factory("cprof", compacted=True), topic_factory("tprof", compacted=True)

    # Profiles from the first two days only, so later customers have none (defaults + flag).
    hist = pd.DataFrame([])
    from pipelines.features import load_transactions
    hist = load_transactions(cfg.path(cfg.replay.fraud_csv), nrows=N + 5000)
    customers, terminals = build_profiles(hist, int(hist["event_time"].min()) + 2 * 86_400_000)
    publish(cfg, customers, terminals, bootstrap=kafka_bootstrap, redis_url=redis_url, topics=(cp_t, tp_t))

    env = {"STREAMSCORE_REDIS__URL": redis_url, "STREAMSCORE_FRAUD__MODEL_DIR": str(model_dir),
           "STREAMSCORE_FRAUD__EMIT": emit}
    log_dir = tmp_path / "arrivals"
    if emit == "arrival":
        env["JVM_ARGS"] = f"-Xmx{cfg.flink.jvm_heap} {cfg.flink.jvm_opts} -Dstreamscore.arrival-log={log_dir}"
    with RunningJob("jobs/fraud_job.py", tmp_path, "--bootstrap", kafka_bootstrap, "--source-topic", tx_t,
                    "--labels-topic", lb_t, "--out-topic", out_t, "--decisions-topic", topic_factory("decisions"),
                     "--late-topic", late_t, "--dead-topic", dead_t,
                    "--group-id", f"g-{tx_t}", env=env) as job:
        def caught_up():
            # Late events go out only once the job has scored (so passed) nearly everything before them.
            deadline = time.time() + 240
            while time.time() < deadline:
                assert job.alive(), job.output()
                done = sum(kafka_util.end_offsets(kafka_bootstrap, out_t).values())
                if done >= 0.97 * N:
                    return
                time.sleep(1)
            raise AssertionError(f"job scored only {done} of {N}\n{job.output()}")

        opts = ReplayOptions(rate=0, limit=N, out_of_order_frac=0.01, out_of_order_max_ms=2000,
                             late_frac=0.001, late_at_end=True, malformed_frac=0.002, label_delay_days=1.0,
                             tail=3000)
        rep = FraudReplay(cfg, opts, bootstrap=kafka_bootstrap, tx_topic=tx_t, label_topic=lb_t).run(
            before_late=caught_up)
        assert rep.sent == N + 3000 and len(rep.late_ids) > 20 and rep.malformed > 50

        tail = set(rep.tail_ids)
        late_ids = set(rep.late_ids)
        expect_scored = N - len(late_ids)
        deadline = time.time() + 240
        while time.time() < deadline:
            scores = kafka_util.read_topic(kafka_bootstrap, out_t, idle=1, timeout=60)
            got = count_ids(scores, "fraud_score")
            if sum(1 for k in got if k not in tail) >= expect_scored:
                break
            assert job.alive(), job.output()
            time.sleep(2)
        late_msgs = kafka_util.read_topic(kafka_bootstrap, late_t, idle=2)
        dead_msgs = kafka_util.read_topic(kafka_bootstrap, dead_t, idle=2)

    # -- exactly once, nothing missing
    main_scored = {k: v for k, v in got.items() if k not in tail}
    late_events = [serde("late_event").decode(m.value()) for m in late_msgs]
    late_got = Counter(int(e["event_id"]) for e in late_events)
    assert max(main_scored.values()) == 1, "duplicate scores"
    assert max(late_got.values()) == 1, "duplicate late events"
    assert set(late_got) == late_ids, (f"late topic: {len(late_got)} events, injected {len(late_ids)}; "
                                       f"missing {sorted(late_ids - set(late_got))[:5]}")
    sent_ids = set(range(N))
    assert set(main_scored) | set(late_got) == sent_ids
    assert not set(main_scored) & set(late_got)
    for e in late_events:
        assert e["event_time"] <= e["watermark"] and e["source_topic"] == tx_t and e["payload"]

    # -- every malformed record in the dead-letter topic, with the reason and the raw bytes
    dead = [serde("dead_letter").decode(m.value()) for m in dead_msgs]
    assert len(dead) == rep.malformed
    assert all(d["reason"] and d["source_topic"] == tx_t and d["source_offset"] >= 0 for d in dead)

    # -- features against the independent reference
    records = [serde("fraud_score").decode(m.value()) for m in scores]
    job_rows = {r["transaction_id"]: r for r in records if r["transaction_id"] not in tail}
    sent_tx = []
    for m in kafka_util.read_topic(kafka_bootstrap, tx_t, idle=2):
        try:
            rec = serde("transaction").decode(m.value())
        except Exception:
            continue
        if rec["transaction_id"] >= 0 and rec["amount"] >= 0 and rec["transaction_id"] not in late_ids:
            sent_tx.append(rec)
    tx_df = pd.DataFrame(sent_tx)
    labels = pd.DataFrame([serde("transaction_label").decode(m.value())
                           for m in kafka_util.read_topic(kafka_bootstrap, lb_t, idle=2)])
    assert len(labels) > 1000, "labels should reach the terminal-risk windows"
    ref = compute_features(tx_df, customers, labels)
    if emit == "arrival":
        known = arrival_reference(log_dir, tx_df, labels)
        assert set(job_rows) <= set(known.index), "every scored transaction passed the feature functions"
        ref.loc[known.index, known.columns] = known
    ids = sorted(job_rows)
    job = pd.DataFrame([job_rows[i]["features"] for i in ids], index=ids)[FEATURE_NAMES]
    ref = ref.loc[ids, FEATURE_NAMES]
    mismatches = {}
    for f in FEATURE_NAMES:
        a, b = job[f].to_numpy(), ref[f].to_numpy()
        bad = ~(np.array_equal(a, b) if f in COUNT_FEATURES else np.isclose(a, b, rtol=1e-9, atol=1e-6))
        bad = (a != b) if f in COUNT_FEATURES else ~np.isclose(a, b, rtol=1e-9, atol=1e-6)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            mismatches[f] = (int(bad.sum()), ids[i], a[i], b[i])
    assert not mismatches, f"feature mismatches (count, first id, job, reference): {mismatches}"

    # -- scores: the job's scorer agrees with the reference scorer on the reference features
    scorer = ReferenceScorer(model_dir / "fraud-test")
    expected = scorer.score([ref[f].to_numpy(np.float32) for f in FEATURE_NAMES])
    actual = np.array([job_rows[i]["score"] for i in ids])
    assert np.allclose(actual, expected, atol=1e-5)
    flags = Counter(job_rows[i]["profile_flags"] & 1 for i in ids)
    assert flags[0] > 0 and flags[1] > 0, "some customers have profiles and some do not"
