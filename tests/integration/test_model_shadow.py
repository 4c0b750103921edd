"""Issue 27 acceptance: a shadow version is scored on the same batches as production, and decides nothing.

The real fraud job (MiniCluster, defaults of `make run`) scores the shared data with A in production and B as the
registry's shadow from the start; a quarter of the way through the paced part, `python -m pipelines.models shadow C`
(the command line, as an operator would) makes C the shadow. On the committed output:

* every transaction is scored exactly once, and the job never restarted;
* every record carries both scores: the production version A and its score, the shadow version (B, then C: one
  switch per partition) and the shadow's score, each the one its own version gives the record's features;
* every decision is the configured thresholds' on A's score, never the shadow's (A and B disagree on some).
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter, defaultdict

import numpy as np
import pytest

from infra.services import free_port
from pipelines.config import load_config
from pipelines.features import FEATURE_NAMES
from pipelines.models import Registry
from pipelines.replay.fraud import FraudReplay, ReplayOptions
from pipelines.serde import serde
from tests.flink_util import PacedSender, committed_scores, fraud_job, labelled_replay, wait_scored
from tests.pipeline_util import ROOT, write_test_model
from udfs.scoring import ReferenceScorer

pytestmark = pytest.mark.integration

WARM = 1500
N = 6000
RATE = 250.0
A, B, C = "fraud-shadow-a", "fraud-shadow-b", "fraud-shadow-c"
DECISIONS = ("APPROVE", "REVIEW", "DECLINE")


def _model(base, version, seed):
    write_test_model(base, seed, version=version, latest=False)


def _features(rows):
    return [np.array([r["features"][n] for r in rows], dtype=np.float32) for n in FEATURE_NAMES]


def _thresholds(scores, review, decline):
    return np.where(scores >= decline, 2, np.where(scores >= review, 1, 0))


def test_shadow_scores_every_record_and_decides_nothing(kafka_bootstrap, redis_url, topic_factory, tmp_path):
    cfg = load_config()
    base = tmp_path / "models"
    for version, seed in ((A, 3), (B, 11), (C, 17)):
        _model(base, version, seed)
    (base / "LATEST").write_text(f"{A}\n")
    Registry(base).shadow(B)

    tx_t, lb_t, out_t = topic_factory("sh-tx"), topic_factory("sh-labels"), topic_factory("sh-scores")
    env = {"STREAMSCORE_REDIS__URL": redis_url, "STREAMSCORE_FRAUD__MODEL_DIR": str(base),
           "STREAMSCORE_FRAUD__REGISTRY_POLL_MS": "200", "STREAMSCORE_METRICS__JOB_PORT": str(free_port())}

    replay = labelled_replay(cfg, kafka_bootstrap, tx_t, lb_t)
    sender = PacedSender(replay(rate=RATE, skip=WARM, limit=N - WARM))
    with fraud_job(tmp_path, kafka_bootstrap, topic_factory, "sh", env, tx=tx_t, labels=lb_t, out=out_t) as job:
        warm = replay(rate=0, limit=WARM).run()
        assert warm.sent == WARM
        wait_scored(job, kafka_bootstrap, out_t, WARM, "the job is up: the first transactions scored")
        sender.start()
        wait_scored(job, kafka_bootstrap, out_t, WARM + (N - WARM) // 4,
                    f"a quarter of the paced transactions scored with shadow {B}")
        cmd = subprocess.run([sys.executable, "-m", "pipelines.models", "--model-dir", str(base), "shadow", C],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert cmd.returncode == 0, cmd.stderr
        changed_mid_stream = sender.is_alive()
        paced = sender.join(300)
        assert paced.sent == N - WARM

        msgs = committed_scores(job, kafka_bootstrap, out_t, N)
        restarts = job.num_restarts()

    assert restarts == 0, "the job restarted"
    assert changed_mid_stream, "the shadow changed after the replay had finished sending (machine too slow?)"
    s = serde("fraud_score")
    records, by_partition = [], defaultdict(list)
    for m in msgs:
        r = s.decode(m.value())
        records.append(r)
        by_partition[m.partition()].append((m.offset(), r["shadow_version"]))
    ids = Counter(r["transaction_id"] for r in records)
    assert len(ids) == N and max(ids.values()) == 1, f"{len(ids)} of {N} ids scored"

    # -- both scores in every record; production decides
    assert {r["model_version"] for r in records} == {A}
    shadows = Counter(r["shadow_version"] for r in records)
    assert set(shadows) == {B, C}, shadows
    for p, seq in sorted(by_partition.items()):
        vs = [v for _, v in sorted(seq)]
        first_c = vs.index(C) if C in vs else len(vs)
        assert set(vs[:first_c]) <= {B} and set(vs[first_c:]) <= {C}, f"partition {p}: the shadow switches back"
    assert np.allclose([r["score"] for r in records], ReferenceScorer(base / A).score(_features(records)), atol=1e-5)
    for version in (B, C):
        rows = [r for r in records if r["shadow_version"] == version]
        assert np.allclose([r["shadow_score"] for r in rows], ReferenceScorer(base / version).score(_features(rows)),
                           atol=1e-5), f"shadow {version}: scores are not its own"
    f = cfg.fraud
    score = np.array([r["score"] for r in records])
    shadow = np.array([r["shadow_score"] for r in records])
    got = np.array([DECISIONS.index(r["decision"]) for r in records])
    assert (got == _thresholds(score, f.review_threshold, f.decline_threshold)).all(), "production must decide"
    differ = int((_thresholds(shadow, f.review_threshold, f.decline_threshold) != got).sum())
    assert differ > 0, "the shadow would decide every record alike: the check above would mean nothing"
    print(f"shadows {dict(shadows)}; the shadow would have decided {differ} of {N} records otherwise")


AB_N = 5000
AB_FRACTION = 0.3


def test_ab_split_by_customer(kafka_bootstrap, redis_url, topic_factory, tmp_path):
    """The registry's A/B experiment (`python -m pipelines.models ab B 0.3`): B decides for the customers its stable
    hash puts in the candidate arm, A for the others; each customer always in one arm, the share of customers in
    the candidate arm within binomial bounds, every record scored and decided by the version it names."""
    from pipelines.models import ab_arm, read_state

    cfg = load_config()
    base = tmp_path / "models"
    for version, seed in ((A, 3), (B, 11)):
        _model(base, version, seed)
    (base / "LATEST").write_text(f"{A}\n")
    cmd = subprocess.run([sys.executable, "-m", "pipelines.models", "--model-dir", str(base), "ab", B,
                          str(AB_FRACTION)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert cmd.returncode == 0, cmd.stderr
    salt = read_state(base).ab["salt"]

    tx_t, lb_t, out_t = topic_factory("ab-tx"), topic_factory("ab-labels"), topic_factory("ab-scores")
    env = {"STREAMSCORE_REDIS__URL": redis_url, "STREAMSCORE_FRAUD__MODEL_DIR": str(base),
           "STREAMSCORE_METRICS__JOB_PORT": str(free_port())}
    with fraud_job(tmp_path, kafka_bootstrap, topic_factory, "ab", env, tx=tx_t, labels=lb_t, out=out_t) as job:
        sent = FraudReplay(cfg, ReplayOptions(rate=0, label_delay_days=1.0, limit=AB_N), bootstrap=kafka_bootstrap,
                           tx_topic=tx_t, label_topic=lb_t).run()
        assert sent.sent == AB_N

        msgs = committed_scores(job, kafka_bootstrap, out_t, AB_N, timeout=300)
        restarts = job.num_restarts()

    assert restarts == 0, "the job restarted"
    s = serde("fraud_score")
    records = [s.decode(m.value()) for m in msgs]
    assert len({r["transaction_id"] for r in records}) == AB_N == len(records)

    arms: dict[int, set] = defaultdict(set)
    for r in records:
        arms[r["customer_id"]].add(r["ab_arm"])
        assert r["model_version"] == (B if r["ab_arm"] == "CANDIDATE" else A), r
    assert all(len(a) == 1 for a in arms.values()), "a customer went to both arms"
    customers = np.array(sorted(arms))
    expected = ab_arm(customers, salt, AB_FRACTION)
    assert [arms[c] == {"CANDIDATE"} for c in customers] == expected.tolist(), "not the stable hash's arm"
    share, sigma = expected.mean(), math.sqrt(AB_FRACTION * (1 - AB_FRACTION) / customers.size)
    assert abs(share - AB_FRACTION) < 5 * sigma, f"{share:.3f} of {customers.size} customers in the candidate arm"

    f = cfg.fraud
    for version in (A, B):
        rows = [r for r in records if r["model_version"] == version]
        assert rows, version
        assert np.allclose([r["score"] for r in rows], ReferenceScorer(base / version).score(_features(rows)),
                           atol=1e-5), f"{version}: scores are not its own"
        got = np.array([DECISIONS.index(r["decision"]) for r in rows])
        want = _thresholds(np.array([r["score"] for r in rows]), f.review_threshold, f.decline_threshold)
        assert (got == want).all(), f"{version}: decisions are not its score's"
    print(f"A/B: {share:.3f} of {customers.size} customers in the candidate arm (fraction {AB_FRACTION}); "
          f"records {Counter(r['ab_arm'] for r in records)}")
