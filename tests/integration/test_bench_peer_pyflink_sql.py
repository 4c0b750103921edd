"""The PyFlink SQL benchmark peer (infra/bench/peers/pyflink_sql) computes what streamscore computes: through the real
broker, Redis and PyFlink job, its features and scores against the pandas reference (pipelines.features) and the
numpy reference scorer, so a fast but wrong peer cannot win `make bench-peers`.

A few thousand transactions in event-time order with their labels (a label delay of an hour and a bit, so labels
reach the terminal windows of so short a sample), then a tail of later transactions that moves the watermark past
the sample (OVER windows emit at the watermark). Every sampled transaction must be scored once. RANGE OVER windows
count the rows sharing a millisecond together, as the reference does, so unlike the on-arrival peers
(tests/unit/test_bench_peers.py) no row is exempt: every feature of every row must match.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.features import FEATURE_NAMES, build_profiles, compute_features, load_transactions
from pipelines.profiles import publish
from pipelines.replay.fraud import FraudReplay, ReplayOptions
from pipelines.serde import serde
from tests.flink_util import RunningJob
from udfs.scoring import ReferenceScorer
from tests.pipeline_util import write_test_model

pytestmark = pytest.mark.integration

N = 4000
TAIL = 100  # later transactions, sent last: they move the watermark past the sample
LABEL_DELAY_DAYS = 0.05  # 72 minutes of event time
COUNT_FEATURES = [f for f in FEATURE_NAMES if "_cnt_" in f or "nlabels" in f or f.startswith("is_")
                  or f in ("hour_of_day", "cust_profile_missing")]


@pytest.fixture
def model_dir(tmp_path):
    return write_test_model(tmp_path / "models", seed=5)


def test_pyflink_sql_peer_matches_the_pandas_reference(kafka_bootstrap, redis_url, topic_factory, tmp_path,
                                                        model_dir):
    cfg = load_config()
    path = cfg.path(cfg.replay.fraud_csv)
    if not path.exists():
        pytest.skip(f"no data set at {path}")
    tx_t, lb_t, out_t = topic_factory("tx"), topic_factory("labels"), topic_factory("scores")
    cp_t, tp_t = topic_factory("cprof", compacted=True), topic_factory("tprof", compacted=True)
    hist = load_transactions(path, nrows=N + TAIL)
    # Profiles of the first hours only, so later customers have none (the default features and the flag).
    customers, terminals = build_profiles(hist, int(hist["event_time"].min()) + 4 * 3_600_000)
    publish(cfg, customers, terminals, bootstrap=kafka_bootstrap, redis_url=redis_url, topics=(cp_t, tp_t))

    rep = FraudReplay(cfg, ReplayOptions(rate=0, limit=N, tail=TAIL, label_delay_days=LABEL_DELAY_DAYS,
                                         progress_every_s=60),
                      bootstrap=kafka_bootstrap, tx_topic=tx_t, label_topic=lb_t).run()
    assert rep.sent == N + TAIL and rep.labels > N / 2
    tail = set(rep.tail_ids)

    env = {"STREAMSCORE_FRAUD__MODEL_DIR": str(model_dir)}
    with RunningJob("infra/bench/peers/pyflink_sql/peer.py", tmp_path, "--bootstrap", kafka_bootstrap,
                    "--tx-topic", tx_t, "--labels-topic", lb_t, "--out-topic", out_t, "--redis-url", redis_url,
                    "--group-id", f"g-{tx_t}", env=env) as job:
        # The label stream ends before the tail: its watermark holds the windows back until the label source is
        # idle (fraud.idleness_ms), then the tail's watermark releases the sample.
        deadline = time.time() + 150
        while True:
            assert job.alive(), job.output()
            msgs = kafka_util.read_topic(kafka_bootstrap, out_t, idle=1, timeout=30)
            got = Counter(serde("fraud_score").decode(m.value())["transaction_id"] for m in msgs)
            if sum(1 for k in got if k not in tail) >= N or time.time() > deadline:
                break
            time.sleep(2)

    sent_tx = [serde("transaction").decode(m.value()) for m in kafka_util.read_topic(kafka_bootstrap, tx_t, idle=2)]
    main = {k: v for k, v in got.items() if k not in tail}
    assert set(main) == {r["transaction_id"] for r in sent_tx} - tail, f"scored {len(main)} of {N}"
    assert max(main.values()) == 1, "duplicate scores"

    records = {r["transaction_id"]: r for r in (serde("fraud_score").decode(m.value()) for m in msgs)}
    labels = pd.DataFrame([serde("transaction_label").decode(m.value())
                           for m in kafka_util.read_topic(kafka_bootstrap, lb_t, idle=2)])
    ref = compute_features(pd.DataFrame(sent_tx), customers, labels)
    ids = sorted(main)
    peer = pd.DataFrame([records[i]["features"] for i in ids], index=ids)[FEATURE_NAMES]
    ref = ref.loc[ids, FEATURE_NAMES]
    assert (ref["term_nlabels_1d"] > 0).mean() > 0.1, "labels must reach the terminal windows"
    mismatches = {}
    for f in FEATURE_NAMES:
        a, b = peer[f].to_numpy(), ref[f].to_numpy()
        bad = (a != b) if f in COUNT_FEATURES else ~np.isclose(a, b, rtol=1e-9, atol=1e-6)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            mismatches[f] = (int(bad.sum()), ids[i], a[i], b[i])
    assert not mismatches, f"feature mismatches (count, first id, peer, reference): {mismatches}"

    scorer = ReferenceScorer(model_dir / "fraud-test")
    expected = scorer.score([ref[f].to_numpy(np.float32) for f in scorer.features])
    np.testing.assert_allclose([records[i]["score"] for i in ids], expected, rtol=1e-6, atol=1e-6)
    flags = Counter(records[i]["profile_flags"] & 1 for i in ids)
    assert flags[0] > 0 and flags[1] > 0, "some customers have profiles and some do not"
