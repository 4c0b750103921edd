"""Issue 6: the dashboard in headless Chromium while the real pipeline runs.

The replay producer sends transactions (with labels, malformed records and late events) to Kafka, the real fraud job
(PyFlink subprocess, exactly-once) writes `fraud-scores`, `dead-letter` and `transactions-late`, and the real
dashboard server shows them in Chromium (selenium + Debian's chromium-driver). While the replay is paced, the numbers
on screen must keep changing and never show more than Kafka holds (read_committed, like the dashboard); once the
pipeline is done they must equal what the test reads from Kafka: scores, approvals, reviews, declines, dead letters,
late events, and the dashboard's own lag back to 0. The screenshot taken while the pipeline runs stays in the test's tmp dir (a test never writes into the checkout; the
README's image comes from tests/integration/test_make_run_dashboard.py).

The trained model (artifacts/models/fraud, `make model`) scores when it is there, so the screenshot shows real
decisions; otherwise a random model of the same format does. The sentiment panels stay empty: the sentiment job is not
part of this run.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests import dashboard_util as testkit
from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.replay.fraud import FraudReplay, ReplayOptions
from pipelines.serde import serde
from tests.browser_util import HAVE_CHROMIUM, as_int, driver, login, texts, wait
from tests.flink_util import RunningJob
from tests.pipeline_util import eventually, write_test_model

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(540),
              pytest.mark.skipif(not HAVE_CHROMIUM, reason="needs Debian chromium + chromium-driver")]

FIRST = 1_000          # replayed at once, so the job has output as soon as it runs
PACED = 5_000          # then these, paced, while the page is watched
RATE = 250.0           # messages/s (transactions + labels + malformed) for the paced part: about 35 s
TAIL = 300
LABEL_DELAY_DAYS = 0.05
BUDGET_S = 420


def _model_env(tmp_path: Path) -> tuple[dict[str, str], str]:
    cfg = load_config()
    if (cfg.path(cfg.fraud.model_dir) / "LATEST").exists():
        return {}, "the trained model"
    return {"STREAMSCORE_FRAUD__MODEL_DIR": str(write_test_model(tmp_path / "models"))}, "a random test model"


class PacedReplay(threading.Thread):
    def __init__(self, bootstrap: str, tx_t: str, lb_t: str, before_late):
        super().__init__(daemon=True, name="paced-replay")
        opts = ReplayOptions(rate=RATE, skip=FIRST, limit=PACED, malformed_frac=0.01, late_frac=0.005,
                             late_at_end=True, tail=TAIL, label_delay_days=LABEL_DELAY_DAYS)
        self.replay = FraudReplay(load_config(), opts, bootstrap=bootstrap, tx_topic=tx_t, label_topic=lb_t)
        self.before_late = before_late
        self.report = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.report = self.replay.run(before_late=self.before_late)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            self.error = exc


def test_dashboard_shows_the_running_pipeline(kafka_bootstrap, redis_url, topic_factory, tmp_path):
    from selenium.webdriver.common.by import By

    t0 = time.time()
    tx_t, lb_t, out_t = topic_factory("dp-tx"), topic_factory("dp-labels"), topic_factory("dp-scores")
    late_t, dead_t = topic_factory("dp-late"), topic_factory("dp-dead")
    topics = {"fraud_scores": out_t, "late": late_t, "dead_letter": dead_t, "transactions": tx_t}
    for key in ("post_sentiment", "sentiment_trends", "posts_late", "posts"):
        topics[key] = topic_factory(f"dp-{key.replace('_', '-')}", partitions=1)
    model_env, model_what = _model_env(tmp_path)
    env = {"STREAMSCORE_REDIS__URL": redis_url, **model_env}
    fs = serde("fraud_score")

    def left() -> float:
        return BUDGET_S - (time.time() - t0)

    def kafka_scores() -> list[dict]:
        return [fs.decode(m.value()) for m in kafka_util.read_topic(kafka_bootstrap, out_t, idle=1, timeout=30)]

    job = RunningJob("jobs/fraud_job.py", tmp_path, "--bootstrap", kafka_bootstrap, "--source-topic", tx_t,
                     "--labels-topic", lb_t, "--out-topic", out_t, "--decisions-topic", topic_factory("dp-decisions"),
                     "--late-topic", late_t, "--dead-topic", dead_t,
                     "--group-id", f"g-{tx_t}", env=env)
    drv = None
    replay = None
    try:
        with testkit.run_server(kafka_bootstrap, tmp_path / "logs", topics=topics,
                                extra=["--flink-rest", job.rest_url, "--job-interval", "1"]) as server:
            drv = driver()
            login(drv, server.url, server.token)
            state = lambda: drv.find_element(By.ID, "connection-status").get_attribute("data-state")  # noqa: E731
            wait(lambda: state() == "connected", 60, "the page to connect")

            rep = FraudReplay(load_config(), ReplayOptions(rate=0, limit=FIRST, label_delay_days=LABEL_DELAY_DAYS),
                              bootstrap=kafka_bootstrap, tx_topic=tx_t, label_topic=lb_t).run()
            assert rep.sent == FIRST and rep.errors == 0

            def on_screen() -> int:
                assert job.alive(), job.output()
                return as_int(drv, "fraud-scores-total") or 0

            wait(lambda: on_screen() > 0, left(), "the job's first scores on screen")
            # The job's state and restart count, read by the server from the job's MiniCluster REST API.
            wait(lambda: drv.find_element(By.ID, "job-state").text == "RUNNING", 30, "the job RUNNING on screen")
            assert drv.find_element(By.ID, "job-restarts").text == str(job.num_restarts()) == "0"

            def caught_up() -> None:
                # The late events go out once the job has scored (so passed) nearly everything before them.
                while sum(kafka_util.end_offsets(kafka_bootstrap, out_t, timeout=5).values()) < 0.95 * (FIRST + PACED):
                    assert job.alive(), job.output()
                    assert left() > 0, f"the job did not catch up within {BUDGET_S}s\n{job.output()}"
                    time.sleep(1)

            replay = PacedReplay(kafka_bootstrap, tx_t, lb_t, caught_up)
            replay.start()

            # While the pipeline runs: the numbers move, and never run ahead of what Kafka has committed.
            seen: list[tuple[int, int]] = []
            shot_at = time.time() + 20
            while replay.is_alive() and len(seen) < 40:
                screen = on_screen()
                committed = len(kafka_util.read_topic(kafka_bootstrap, out_t, idle=0.5, timeout=20))
                assert screen <= committed, f"{screen} scores on screen, only {committed} committed in Kafka"
                seen.append((screen, committed))
                if shot_at and time.time() >= shot_at:
                    live = tmp_path / "dashboard.png"
                    drv.save_screenshot(str(live))
                    shot_at = 0
                assert left() > 0, f"the replay did not finish within {BUDGET_S}s"
                time.sleep(2)
            replay.join(max(left(), 1))
            assert replay.error is None, replay.error
            assert not replay.is_alive(), "the replay did not finish"
            counts = [s for s, _ in seen]
            assert len(set(counts)) >= 4 and counts == sorted(counts), f"scores on screen over time: {counts}"
            if shot_at:  # a fast run: the page as the pipeline ended
                drv.save_screenshot(str(tmp_path / "dashboard.png"))

            # Done: the screen converges to exactly what Kafka holds (the job may still be scoring the tail).
            rep2 = replay.report
            assert rep2.malformed >= 10 and rep2.late_ids, rep2.summary()
            late = len(kafka_util.read_topic(kafka_bootstrap, late_t, idle=1.5, timeout=30))
            dead = len(kafka_util.read_topic(kafka_bootstrap, dead_t, idle=1.5, timeout=30))
            assert dead == rep2.malformed and late == len(rep2.late_ids)

            def agrees():
                scores = kafka_scores()
                decisions = Counter(r["decision"] for r in scores)
                want = {"fraud-scores-total": len(scores), "decisions-review": decisions["REVIEW"],
                        "decisions-decline": decisions["DECLINE"], "dead-letter-total": dead,
                        "late-transactions": late, "lag-total": 0}
                got = {k: as_int(drv, k) for k in want}
                approved = texts(drv, "histogram-total")
                if got != want or f"{decisions['APPROVE']:,} approved" not in (approved[0] if approved else ""):
                    raise AssertionError(f"screen {got} {approved}; Kafka {want}, {decisions['APPROVE']} approved")
                return want

            final = eventually(agrees, max(left(), 60), "the screen to equal Kafka", every=2)
            rows = texts(drv, "decision-row")
            assert bool(rows) == bool(final["decisions-review"] + final["decisions-decline"]), rows
            assert all(("REVIEW" in r or "DECLINE" in r) for r in rows)
            drv.save_screenshot(str(tmp_path / "dashboard-final.png"))
            severe = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
            assert not severe, severe
            print(f"{model_what}; on screen while running: {counts}; final {final}; {time.time() - t0:.0f}s")
    finally:
        if replay is not None and replay.is_alive():
            replay.join(60)
        if drv is not None:
            drv.quit()
        job.kill()

