"""Issue 7: every /metrics endpoint of a short real run, scraped over HTTP.

The replay producer (in this process, serving its registry like `python -m pipelines.replay.fraud` does) sends N
transactions with labels, some malformed records and some late events; the real fraud job (PyFlink subprocess,
serving `metrics.job_port`), the lag exporter (subprocess) and the dashboard server (subprocess) run beside it. Then
each endpoint must report what the test injected and reads back from Kafka (read_committed):

* producer: records written per topic, exactly what the replay sent;
* job: records read per input, dead letters per reason and late events per reason, exactly what was injected;
  records scored (= scorer batch sizes summed); inference and end-to-end latency histograms; the model version;
  labels for unknown transactions (here: the labels of the late ones).
  The job's Python functions live in several Python worker processes (the decode/route function of each source,
  the scoring UDF, the unknown-label counter); the one that binds the port serves all of their values
  (prometheus_client multiprocess mode, see pipelines/metrics.py), which is what makes the router's dead-letter and
  late counters visible next to the scorer's histograms;
* lag exporter: committed offset, log-end offset and lag for the job's group on every input partition (the lag
  drains to 0 once the job has committed on a checkpoint), and the event-time lag of the output topic;
* dashboard: records read per output topic, equal to what is in Kafka.

Counters count records processed, and a task failover would process some twice; a healthy short run has none, so
the job's counters must equal the injected counts exactly.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests import dashboard_util as testkit
from infra.services import free_port
from pipelines import kafka_util, metrics
from pipelines.config import load_config
from pipelines.replay.fraud import FraudReplay, ReplayOptions
from pipelines.serde import serde
from tests.flink_util import RunningJob
from tests.pipeline_util import TEST_MODEL, eventually, lag_exporter, scrape, select, total, write_test_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

N = 3_000
TAIL = 300
LABEL_DELAY_DAYS = 0.05  # labels about an hour after their transaction, so the label source keeps moving
BUDGET_S = 300
# Two task slots, so two Python worker processes serve one job: only one of them can bind the job's port.
PARALLELISM = 2
JOB = "fraud-job"  # the `component` label the job's functions use


def test_every_metrics_endpoint_after_a_short_run(kafka_bootstrap, redis_url, topic_factory, tmp_path):
    t0 = time.time()
    cfg = load_config()
    tx_t, lb_t, out_t = topic_factory("m-tx"), topic_factory("m-labels"), topic_factory("m-scores")
    late_t, dead_t = topic_factory("m-late"), topic_factory("m-dead")
    dash_topics = {"fraud_scores": out_t, "late": late_t, "dead_letter": dead_t, "transactions": tx_t}
    for key in ("post_sentiment", "sentiment_trends", "posts_late", "posts"):
        dash_topics[key] = topic_factory(f"m-{key.replace('_', '-')}", partitions=1)
    group = f"g-{tx_t}"
    job_port, producer_port = free_port(), free_port()

    env = {"STREAMSCORE_REDIS__URL": redis_url, "STREAMSCORE_FRAUD__MODEL_DIR": str(write_test_model(tmp_path / "models")),
           "STREAMSCORE_METRICS__JOB_PORT": str(job_port), "STREAMSCORE_FLINK__PARALLELISM": str(PARALLELISM),
           # On the local MiniCluster PyFlink runs the Python functions in the launcher process itself ("loopback");
           # on a cluster they run in separate worker processes. PyFlink's own switch makes the MiniCluster start
           # workers the way a TaskManager does, so this run has the cluster's process layout.
           "_python_worker_execution_mode": "process"}
    job = RunningJob("jobs/fraud_job.py", tmp_path, "--bootstrap", kafka_bootstrap, "--source-topic", tx_t,
                     "--labels-topic", lb_t, "--out-topic", out_t, "--decisions-topic", topic_factory("m-decisions"),
                     "--late-topic", late_t, "--dead-topic", dead_t,
                     "--group-id", group, env=env)
    try:
        with lag_exporter(kafka_bootstrap, tmp_path / "logs", groups=[group],
                          env={"STREAMSCORE_TOPICS__FRAUD_SCORES": out_t}) as (_, lag_port), \
                testkit.run_server(kafka_bootstrap, tmp_path / "logs", topics=dash_topics) as dash:

            def left() -> float:
                return BUDGET_S - (time.time() - t0)

            def scored() -> int:
                return sum(kafka_util.end_offsets(kafka_bootstrap, out_t, timeout=5).values())

            def caught_up() -> None:
                # Late events go out once the job has scored (so passed) nearly everything before them.
                while scored() < 0.95 * N:
                    assert job.alive(), job.output()
                    assert left() > 0, f"the job scored only {scored()} of {N} within {BUDGET_S}s\n{job.output()}"
                    time.sleep(1)

            # The producer's endpoint: this process's registry, served the way replay_fraud.main does.
            metrics.serve(producer_port)
            replay_started_ms = time.time() * 1000
            opts = ReplayOptions(rate=0, limit=N, late_frac=0.01, late_at_end=True, malformed_frac=0.01,
                                 label_delay_days=LABEL_DELAY_DAYS, tail=TAIL)
            rep = FraudReplay(cfg, opts, bootstrap=kafka_bootstrap, tx_topic=tx_t, label_topic=lb_t).run(
                before_late=caught_up)
            t_replayed = time.time() - t0
            late_ids, tail = set(rep.late_ids), set(rep.tail_ids)
            assert rep.errors == 0 and len(late_ids) >= 10 and rep.malformed >= 10 and rep.labels > 0, rep.summary()
            tx_records = rep.sent + rep.malformed

            # -- Kafka, read_committed: what the endpoints must agree with
            fs = serde("fraud_score")

            def all_scored():
                assert job.alive(), job.output()
                ids = Counter(fs.decode(m.value())["transaction_id"]
                              for m in kafka_util.read_topic(kafka_bootstrap, out_t, idle=1, timeout=30))
                main = {k for k in ids if k not in tail}
                return len(main) >= N - len(late_ids) and ids

            ids = eventually(all_scored, left(), f"all {N - len(late_ids)} on-time transactions scored", every=2)
            assert max(ids.values()) == 1 and not set(ids) & late_ids
            late_msgs = kafka_util.read_topic(kafka_bootstrap, late_t, idle=1.5, timeout=30)
            dead = Counter(serde("dead_letter").decode(m.value())["reason"]
                           for m in kafka_util.read_topic(kafka_bootstrap, dead_t, idle=1.5, timeout=30))
            assert {int(serde("late_event").decode(m.value())["event_id"]) for m in late_msgs} == late_ids
            assert sum(dead.values()) == rep.malformed

            # -- the job's endpoint
            def job_settled():
                # The tail is still being scored for a while; the output counter must meet what is committed.
                s = scrape(job_port)
                committed = len(kafka_util.read_topic(kafka_bootstrap, out_t, idle=1, timeout=30))
                got = (total(s, "streamscore_events_out_total", component=JOB),
                       total(s, "streamscore_events_in_total", component=JOB, topic="transaction"))
                if got != (committed, tx_records):
                    raise AssertionError(f"job endpoint: (scored, read) = {got}; Kafka: {(committed, tx_records)}")
                return s, committed

            s, committed = eventually(job_settled, left(), "the job's counters to meet the committed output",
                                      every=2)
            assert total(s, "streamscore_events_out_total", component=JOB, topic=cfg.topics.fraud_scores) == committed
            # The router labels its input counter with the record kind.
            assert total(s, "streamscore_events_in_total", component=JOB, topic="transaction_label") == rep.labels
            assert {x.labels["reason"]: x.value for x in select(s, "streamscore_dead_letters_total", component=JOB)
                    if x.value} == dict(dead)
            # What the replay injected maps onto reasons one to one for these kinds.
            for kind, reason in (("negative-amount", "negative-amount"), ("nan-amount", "bad-amount"),
                                 ("future-timestamp", "future-timestamp"), ("truncated", "corrupt-avro")):
                assert dead[reason] >= rep.malformed_kinds.get(kind, 0), (kind, dead, rep.malformed_kinds)
            assert {x.labels["reason"]: x.value for x in select(s, "streamscore_late_events_total", component=JOB)
                    if x.value} == {"behind-watermark": len(late_ids)}
            # One scorer series, labelled with the model's name (meta.json) and the backend that ran it.
            batches = select(s, "streamscore_scorer_batch_size_count")
            assert len(batches) == 1 and batches[0].labels["backend"] in ("native", "reference"), batches
            scorer = batches[0].labels
            n_batches = batches[0].value
            assert 0 < n_batches <= committed
            assert total(s, "streamscore_scorer_batch_size_sum", **scorer) == committed
            assert total(s, "streamscore_inference_seconds_count", **scorer) == n_batches
            assert 0 < total(s, "streamscore_inference_seconds_sum", **scorer) < 60
            e2e_n = total(s, "streamscore_end_to_end_latency_seconds_count", pipeline="fraud")
            e2e_sum = total(s, "streamscore_end_to_end_latency_seconds_sum", pipeline="fraud")
            assert e2e_n and n_batches <= e2e_n <= committed, (e2e_n, n_batches, committed)
            # Producer timestamp to score: positive, and no longer than this test has been producing.
            assert 0 < e2e_sum / e2e_n <= (time.time() * 1000 - replay_started_ms) / 1000
            # Both workers wrote values (one file per process), and the one endpoint served their sum.
            workers = {f.stem.rsplit("_", 1)[1] for f in (tmp_path / "prometheus-multiproc").glob("counter_*.db")}
            assert len(workers) >= PARALLELISM, f"expected a Python worker per slot, found {sorted(workers)}"
            info = select(s, "streamscore_model_info")
            assert [x.labels.get("fraud_model_version") for x in info] == [TEST_MODEL], info
            assert info[0].value == 1 and info[0].labels.get("fraud_scorer")
            # Labels of the late transactions find no transaction in their terminal's window: counted, and nothing
            # else is (every on-time transaction was scored). A label counts once the watermark passes its label
            # time, so the newest ones may not be counted yet.
            late_labels = [r for r in (serde("transaction_label").decode(m.value())
                                       for m in kafka_util.read_topic(kafka_bootstrap, lb_t, idle=1, timeout=30))
                           if r["transaction_id"] in late_ids]
            settled = sum(1 for r in late_labels if r["label_time"] < rep.last_event_time - 60_000)
            assert settled > 0, "the replay should label some late transactions before its end"

            def unknown_labels_counted():
                n = total(scrape(job_port), "streamscore_unknown_labels_total") or 0
                if not settled <= n <= len(late_labels):
                    raise AssertionError(f"unknown labels counted: {n}; expected {settled} to {len(late_labels)}")
                return True

            eventually(unknown_labels_counted, max(left(), 30), "the labels of late transactions to be counted")

            # -- the producer's endpoint
            p = scrape(producer_port)
            assert total(p, "streamscore_events_out_total", component="replay-fraud", topic=tx_t) == tx_records
            assert total(p, "streamscore_events_out_total", component="replay-fraud", topic=lb_t) == rep.labels
            assert not total(p, "streamscore_produce_errors_total", component="replay-fraud", topic=tx_t)

            # -- the lag exporter's endpoint: the job's group on every partition of both inputs
            tx_end = kafka_util.end_offsets(kafka_bootstrap, tx_t)
            lb_end = kafka_util.end_offsets(kafka_bootstrap, lb_t)
            assert sum(tx_end.values()) == tx_records and sum(lb_end.values()) == rep.labels

            def lag_drained():
                x = scrape(lag_port)
                ok = all(total(x, "streamscore_consumer_lag", group=group, topic=t, partition=str(pt)) == 0
                         and total(x, "streamscore_consumer_committed_offset", group=group, topic=t,
                                   partition=str(pt)) == end
                         for t, ends in ((tx_t, tx_end), (lb_t, lb_end)) for pt, end in ends.items())
                return ok and x

            x = eventually(lag_drained, max(left(), 30), f"group {group}'s lag to drain to 0 on every partition")
            for t, ends in ((tx_t, tx_end), (lb_t, lb_end)):
                assert {int(v.labels["partition"]): v.value for v in select(x, "streamscore_log_end_offset", topic=t)} \
                    == {pt: float(end) for pt, end in ends.items()}
            newest = max(fs.decode(m.value())["event_time"]
                         for m in kafka_util.read_topic(kafka_bootstrap, out_t, idle=1, timeout=30))
            et_lag = total(x, "streamscore_event_time_lag_seconds", topic=out_t)
            assert et_lag is not None and abs(et_lag - (time.time() * 1000 - newest) / 1000) < 60, (et_lag, newest)
            assert total(x, "streamscore_lag_exporter_poll_seconds_count") >= 1
            assert total(x, "streamscore_lag_exporter_last_success_timestamp_seconds") > t0

            # -- the dashboard's endpoint: what it read, equal to Kafka
            def dashboard_read_all():
                # The job may still be scoring the tail (an idle partition lets the watermark move on after
                # fraud.idleness_ms), so the output topic is read again each round.
                want = {out_t: len(kafka_util.read_topic(kafka_bootstrap, out_t, idle=1, timeout=30)),
                        dead_t: rep.malformed, late_t: len(late_ids)}
                d = scrape(dash.metrics_port)
                got = {t: total(d, "streamscore_events_in_total", component="dashboard", topic=t)
                       for t in (out_t, dead_t, late_t)}
                if got != want:
                    raise AssertionError(f"dashboard read {got}, Kafka holds {want}")
                return d

            d = eventually(dashboard_read_all, 60, "the dashboard to read every output record", every=2)
            assert select(d, "streamscore_consumer_lag", topic=out_t), "the dashboard's own lag gauges"
            print(f"scored {committed} in {n_batches:.0f} calls of the {scorer['backend']} scorer; {rep.malformed} dead letters {dict(dead)}; "
                  f"{len(late_ids)} late; e2e mean {e2e_sum / e2e_n:.2f}s; replay done after {t_replayed:.0f}s, "
                  f"{time.time() - t0:.0f}s in all")
    finally:
        job.kill()
