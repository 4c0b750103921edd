"""Issue 27 acceptance: a promotion in the model registry reaches the running fraud job without a restart.

The real fraud job (MiniCluster, defaults of `make run`: emit on arrival, exactly-once record of truth) scores the
shared data with version A, the registry's production (bootstrapped from LATEST): a first part sent at once (once it
is scored the job is up), then the rest paced. A quarter of the way through the paced part, `python -m pipelines.models promote B` (the command line, as an operator would) makes B production;
two thirds through, a version whose feature list is not the job's is made production by a registry that believes in
other features, which the job must refuse while B keeps serving. Then, on the committed (read_committed) output:

* every transaction sent is scored exactly once;
* in every output partition the version runs A...A B...B: one switch point, never back, never the refused one;
* each record's score is the one its own version gives its features (the version field names who decided);
* the job never restarted (Flink's numRestarts, REST), and its /metrics counted one swap and the refusal.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict

import numpy as np
import pytest

from infra.services import free_port
from pipelines.config import load_config
from pipelines.features import FEATURE_NAMES
from pipelines.models import Registry, production_version
from pipelines.serde import serde
from tests.flink_util import PacedSender, committed_scores, fraud_job, labelled_replay, wait_scored
from tests.pipeline_util import ROOT, eventually, scrape, total, write_test_model
from udfs.scoring import ReferenceScorer

pytestmark = pytest.mark.integration

WARM = 1500   # sent at once, before anything else: the job has started (JVM, workers, model) once they are scored
N = 8000      # in all; the rest paced at RATE, so promotions land while transactions flow
RATE = 250.0  # the paced part takes about 26 s
A, B, ODD = "fraud-hot-a", "fraud-hot-b", "fraud-hot-odd"
ODD_FEATURES = [*FEATURE_NAMES[:-1], "is_full_moon"]


def _model(base, version, seed, features=FEATURE_NAMES):
    write_test_model(base, seed, version=version, features=features, latest=False)


def test_promotion_mid_stream_swaps_without_restart_loss_or_duplicates(kafka_bootstrap, redis_url, topic_factory,
                                                                       tmp_path):
    cfg = load_config()
    base = tmp_path / "models"
    _model(base, A, seed=3)
    _model(base, B, seed=11)
    _model(base, ODD, seed=5, features=ODD_FEATURES)
    (base / "LATEST").write_text(f"{A}\n")
    assert production_version(base) == A and not (base / "registry.json").exists()

    tx_t, lb_t, out_t = topic_factory("hs-tx"), topic_factory("hs-labels"), topic_factory("hs-scores")
    job_port = free_port()
    env = {"STREAMSCORE_REDIS__URL": redis_url, "STREAMSCORE_FRAUD__MODEL_DIR": str(base),
           "STREAMSCORE_FRAUD__REGISTRY_POLL_MS": "200", "STREAMSCORE_METRICS__JOB_PORT": str(job_port)}
    replay = labelled_replay(cfg, kafka_bootstrap, tx_t, lb_t)
    sender = PacedSender(replay(rate=RATE, skip=WARM, limit=N - WARM))

    with fraud_job(tmp_path, kafka_bootstrap, topic_factory, "hs", env, tx=tx_t, labels=lb_t, out=out_t) as job:
        warm = replay(rate=0, limit=WARM).run()
        assert warm.sent == WARM
        wait_scored(job, kafka_bootstrap, out_t, WARM, "the job is up: the first transactions scored")
        sender.start()
        wait_scored(job, kafka_bootstrap, out_t, WARM + (N - WARM) // 4,
                    f"a quarter of the paced transactions scored with {A}")
        promote = subprocess.run([sys.executable, "-m", "pipelines.models", "--model-dir", str(base), "promote", B],
                                 cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert promote.returncode == 0, promote.stderr
        promoted_mid_stream = sender.is_alive()
        eventually(lambda: total(scrape(job_port), "streamscore_model_swaps_total", result="swapped") == 1, 60,
                   "the job swapped to B", every=0.5)

        wait_scored(job, kafka_bootstrap, out_t, WARM + 2 * (N - WARM) // 3,
                    "two thirds of the paced transactions scored")
        Registry(base, features=ODD_FEATURES).promote(ODD)  # the registry allows it; the job must not
        assert production_version(base) == ODD
        eventually(lambda: total(scrape(job_port), "streamscore_model_swaps_total", result="refused") == 1, 60,
                   "the job refused the version with other features", every=0.5)

        paced = sender.join(300)
        assert paced.sent == N - WARM

        msgs = committed_scores(job, kafka_bootstrap, out_t, N)
        restarts = job.num_restarts()
        swaps = {r: total(scrape(job_port), "streamscore_model_swaps_total", result=r) for r in ("swapped",
                                                                                                 "refused")}
        serving = {v: total(scrape(job_port), "streamscore_model_serving", version=v) for v in (A, B)}

    assert restarts == 0, "the job restarted"
    assert swaps == {"swapped": 1, "refused": 1}, swaps
    assert serving == {A: 0, B: 1}, serving
    assert promoted_mid_stream, "the promotion came after the replay had finished sending (machine too slow?)"

    s = serde("fraud_score")
    by_partition = defaultdict(list)
    records = []
    for m in msgs:
        r = s.decode(m.value())
        records.append(r)
        by_partition[m.partition()].append((m.offset(), r["model_version"]))

    # -- exactly once, nothing missing
    ids = Counter(r["transaction_id"] for r in records)
    dups = [k for k, c in ids.items() if c > 1]
    assert len(ids) == N and not dups, f"{len(ids)} of {N} ids scored; duplicates {dups[:5]}"
    assert set(ids) == set(warm.sent_ids) | set(paced.sent_ids)

    # -- one switch per partition, A then B, never the refused version
    versions = Counter(r["model_version"] for r in records)
    assert set(versions) == {A, B} and versions[A] > 0 and versions[B] > 0, versions
    for p, seq in sorted(by_partition.items()):
        vs = [v for _, v in sorted(seq)]
        first_b = vs.index(B) if B in vs else len(vs)
        assert set(vs[:first_b]) <= {A} and set(vs[first_b:]) <= {B}, \
            f"partition {p}: the version switches more than once ({Counter(zip(vs, vs[1:]))})"
        assert vs[-1] == B, f"partition {p} never switched to {B}: {Counter(vs)}"
    print(f"versions: {dict(versions)}; per partition: "
          f"{ {p: Counter(v for _, v in seq) for p, seq in sorted(by_partition.items())} }")

    # -- each score is its own version's
    for version in (A, B):
        rows = [r for r in records if r["model_version"] == version]
        ref = ReferenceScorer(base / version)
        expected = ref.score([np.array([r["features"][f] for r in rows], dtype=np.float32) for f in FEATURE_NAMES])
        got = np.array([r["score"] for r in rows])
        assert np.allclose(got, expected, atol=1e-5), f"{version}: scores are not its own"
    other = ReferenceScorer(base / A).score([np.array([r["features"][f] for r in records if r["model_version"] == B],
                                                      dtype=np.float32) for f in FEATURE_NAMES])
    assert not np.allclose(other, [r["score"] for r in records if r["model_version"] == B], atol=1e-3), \
        "A and B must score differently for the version check to mean anything"
