"""The fraud pipeline through a secured broker (issue 24): SASL_SSL with SCRAM-SHA-512 and least-privilege ACLs
(infra/services.py SecuredKafkaBroker, kafka_acls).

Every client runs as its own principal through the config's kafka section (STREAMSCORE_KAFKA__SECURITY_PROTOCOL,
SASL_USERNAME, SASL_PASSWORD_FILE, SSL_CA_LOCATION: SecuredKafkaBroker.principal_env): the fraud job as
`fraud-job`, the replay as `replay`, the reader of the scores as `dashboard`. 10,000 transactions are scored exactly
once; then a client without credentials, one with a wrong password, the dashboard writing `transactions` and the
replay reading `fraud-scores` are each refused.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from infra import services
from pipelines import kafka_util
from pipelines.config import load_config
from pipelines.replay.fraud import FraudReplay, ReplayOptions
from pipelines.serde import serde
from tests.flink_util import RunningJob
from tests.pipeline_util import write_test_model

pytestmark = pytest.mark.integration

N = 10_000


def as_principal(mp: pytest.MonkeyPatch, broker: services.SecuredKafkaBroker, user: str) -> None:
    """This process's clients (kafka_util) talk to the broker as `user`, through the config's kafka section."""
    for k, v in broker.principal_env(user).items():
        mp.setenv(k, v)


@pytest.fixture(scope="module")
def secured(run_dir) -> Iterator[services.SecuredKafkaBroker]:
    cfg = load_config()
    broker = services.SecuredKafkaBroker(services.free_port(), services.free_port(), run_dir / "kafka-secured",
                                         cfg=cfg)
    broker.start(timeout=120)
    try:
        with pytest.MonkeyPatch.context() as mp:
            as_principal(mp, broker, services.KAFKA_ADMIN)
            t = cfg.topics
            kafka_util.ensure_topics(broker.bootstrap, [t.transactions, t.labels, t.fraud_scores, t.fraud_decisions,
                                                        t.late, t.dead_letter], partitions=4)
        yield broker
    finally:
        broker.stop()


def test_fraud_pipeline_exactly_once_through_sasl_ssl(secured, redis_url, tmp_path, monkeypatch):
    cfg = load_config()
    t = cfg.topics
    env = {**secured.principal_env("fraud-job"), "STREAMSCORE_REDIS__URL": redis_url,
           "STREAMSCORE_FRAUD__MODEL_DIR": str(write_test_model(tmp_path / "models"))}
    assert "STREAMSCORE_KAFKA__SASL_PASSWORD" not in env, "passwords go by file"
    with RunningJob("jobs/fraud_job.py", tmp_path, "--bootstrap", secured.bootstrap,
                    "--group-id", cfg.flink.group_id, env=env) as job:
        as_principal(monkeypatch, secured, "replay")
        rep = FraudReplay(cfg, ReplayOptions(rate=0, limit=N, label_delay_days=1.0),
                          bootstrap=secured.bootstrap).run()
        assert rep.sent == N

        # The dashboard's principal reads the committed scores, in the dashboard's group (the only one it may use).
        as_principal(monkeypatch, secured, "dashboard")
        c = kafka_util.consumer(secured.bootstrap, services.DASHBOARD_GROUP, read_committed=True)
        got: Counter = Counter()
        try:
            c.assign([TopicPartition(t.fraud_scores, p, 0) for p in range(4)])
            deadline = time.time() + 240
            while len(got) < N:
                for m in c.consume(num_messages=5000, timeout=1):
                    assert m.error() is None, m.error()
                    got[serde("fraud_score").decode(m.value())["transaction_id"]] += 1
                assert job.alive(), job.output()
                assert time.time() < deadline, f"scored {len(got)} of {N}\n{job.output()}"
            quiet = time.time() + 3  # a duplicate would show up too
            while time.time() < quiet:
                for m in c.consume(num_messages=5000, timeout=0.5):
                    got[serde("fraud_score").decode(m.value())["transaction_id"]] += 1
        finally:
            c.close()
        assert job.num_restarts() == 0, job.output()
    assert set(got) == set(range(N))
    assert max(got.values()) == 1, f"duplicates: {[k for k, v in got.items() if v > 1][:10]}"


def test_client_without_credentials_is_refused(secured):
    with pytest.raises(KafkaException):
        AdminClient({"bootstrap.servers": secured.bootstrap, "log_level": 0}).list_topics(timeout=5)
    errors: list[KafkaError] = []
    wrong = {**secured.user_conf("replay"), "sasl.password": "not-the-password"}
    client = AdminClient({"bootstrap.servers": secured.bootstrap, "log_level": 0, "error_cb": errors.append,
                          **wrong})
    with pytest.raises(KafkaException):
        client.list_topics(timeout=5)
    deadline = time.time() + 10
    while time.time() < deadline and not errors:
        client.poll(0.5)  # serves error_cb
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


def test_dashboard_cannot_write_transactions(secured):
    reports: list[KafkaError | None] = []
    # Not idempotent: an idempotent producer would already be refused its producer id (it may write no topic).
    p = Producer({"bootstrap.servers": secured.bootstrap, "log_level": 0, "enable.idempotence": False,
                  "message.timeout.ms": 30000, **secured.user_conf("dashboard")})
    p.produce(load_config().topics.transactions, b"forged", on_delivery=lambda err, msg: reports.append(err))
    p.flush(40)
    assert len(reports) == 1 and reports[0] is not None, reports
    assert reports[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, reports[0]


def test_replay_cannot_read_scores(secured):
    topic = load_config().topics.fraud_scores
    c = Consumer({"bootstrap.servers": secured.bootstrap, "log_level": 0, "group.id": "replay-probe",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, **secured.user_conf("replay")})
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        assert meta.error is not None and meta.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, meta.error
        c.assign([TopicPartition(topic, p, 0) for p in range(4)])
        # The fetch is refused too. The consumer may report the group first (the replay may use no group either).
        refused = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}
        errors, records = [], 0
        deadline = time.time() + 15
        while time.time() < deadline and KafkaError.TOPIC_AUTHORIZATION_FAILED not in {e.code() for e in errors}:
            for m in c.consume(num_messages=100, timeout=1):
                if m.error():
                    errors.append(m.error())
                else:
                    records += 1
        assert records == 0
        assert errors and {e.code() for e in errors} <= refused | {KafkaError._PARTITION_EOF}, errors
    finally:
        c.close()
