"""pipelines/kafka_security.py: one config section, mapped to librdkafka's and the Java client's names (issue 24)."""

from __future__ import annotations

import dataclasses

import pytest

from pipelines.config import ConfigError, KafkaConfig, RedisConfig, load_config
from pipelines.kafka_security import (flink_table_options, java_properties, librdkafka_conf, redacted,
                                      redis_kwargs, topic_layout)

SECURE = {"STREAMSCORE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "STREAMSCORE_KAFKA__SASL_USERNAME": "fraud-job",
          "STREAMSCORE_KAFKA__SSL_CA_LOCATION": "/etc/ss/ca.pem"}


def test_plaintext_adds_nothing():
    k = KafkaConfig()
    assert librdkafka_conf(k) == {} and java_properties(k) == {} and flink_table_options(k) == ""


def test_sasl_ssl_from_env_and_password_file(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text('s3cr"et\\x\n')
    cfg = load_config(environ={**SECURE, "STREAMSCORE_KAFKA__SASL_PASSWORD_FILE": str(pw)})
    rd = librdkafka_conf(cfg.kafka)
    assert rd == {"security.protocol": "sasl_ssl", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "fraud-job",
                  "sasl.password": 's3cr"et\\x', "ssl.ca.location": "/etc/ss/ca.pem",
                  "ssl.endpoint.identification.algorithm": "https"}
    jv = java_properties(cfg.kafka)
    assert jv["security.protocol"] == "SASL_SSL" and jv["sasl.mechanism"] == "SCRAM-SHA-512"
    assert jv["sasl.jaas.config"] == ('org.apache.flink.kafka.shaded.org.apache.kafka.common.security.scram.'
                                      'ScramLoginModule required username="fraud-job" password="s3cr\\"et\\\\x";')
    assert jv["ssl.truststore.type"] == "PEM" and jv["ssl.truststore.location"] == "/etc/ss/ca.pem"
    assert "ScramLoginModule" in java_properties(cfg.kafka, shaded=False)["sasl.jaas.config"]
    assert not java_properties(cfg.kafka, shaded=False)["sasl.jaas.config"].startswith("org.apache.flink")
    opts = flink_table_options(cfg.kafka)
    assert "'properties.sasl.jaas.config' = '" in opts and "'properties.security.protocol' = 'SASL_SSL'" in opts


def test_secrets_stay_out_of_repr_and_logs():
    cfg = load_config(environ={**SECURE, "STREAMSCORE_KAFKA__SASL_PASSWORD": "hunter2",
                               "STREAMSCORE_REDIS__PASSWORD": "redispw"})
    assert "hunter2" not in repr(cfg) and "redispw" not in repr(cfg)
    assert "hunter2" not in str(redacted(librdkafka_conf(cfg.kafka)))
    assert "hunter2" not in str(redacted(java_properties(cfg.kafka)))
    assert redis_kwargs(cfg.redis) == {"password": "redispw"}


def test_choices_and_validation():
    with pytest.raises(ConfigError, match="security_protocol"):
        load_config(environ={"STREAMSCORE_KAFKA__SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(ConfigError, match="sasl_username"):
        load_config(environ={"STREAMSCORE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(ConfigError, match="min_insync_replicas"):
        load_config(environ={"STREAMSCORE_KAFKA__REPLICATION_FACTOR": "2",
                             "STREAMSCORE_KAFKA__MIN_INSYNC_REPLICAS": "3"})


@pytest.mark.parametrize("brokers,rf,isr,want", [(1, 0, 0, (1, 1)), (2, 0, 0, (2, 1)), (3, 0, 0, (3, 2)),
                                                  (6, 0, 0, (3, 2)), (6, 5, 0, (5, 4)), (6, 3, 3, (3, 3))])
def test_topic_layout(brokers, rf, isr, want):
    k = dataclasses.replace(KafkaConfig(), replication_factor=rf, min_insync_replicas=isr)
    assert topic_layout(k, brokers) == want


def test_topic_layout_refuses_more_replicas_than_brokers():
    with pytest.raises(ValueError, match="exceeds"):
        topic_layout(dataclasses.replace(KafkaConfig(), replication_factor=3), 1)


def test_redis_credentials(tmp_path):
    assert redis_kwargs(RedisConfig()) == {}
    f = tmp_path / "redis"
    f.write_text("frompw\n")
    assert redis_kwargs(dataclasses.replace(RedisConfig(), username="job", password="x", password_file=str(f))) == \
        {"password": "frompw", "username": "job"}


def test_every_client_and_the_ddl_use_the_section(monkeypatch, tmp_path):
    """kafka_util's admin/producer/consumer start from the section; the Flink source and sink DDL carry it."""
    from pipelines import kafka_util
    from jobs import common

    for k, v in {**SECURE, "STREAMSCORE_KAFKA__SASL_PASSWORD": "pw"}.items():
        monkeypatch.setenv(k, v)
    assert kafka_util.security_conf()["sasl.username"] == "fraud-job"
    cfg = load_config()
    src = common.kafka_source_ddl(cfg, table="t", topic="transactions", group_id="g")
    sink = common.kafka_sink_ddl(cfg, table="s", topic="fraud-scores")
    for ddl in (src, sink):
        assert "'properties.security.protocol' = 'SASL_SSL'" in ddl
        assert "'properties.sasl.jaas.config'" in ddl and "'properties.ssl.truststore.location'" in ddl
    assert "'properties.acks' = 'all'" in sink
    captured = {}
    monkeypatch.setattr(kafka_util, "Producer", lambda conf: captured.setdefault("p", conf))
    monkeypatch.setattr(kafka_util, "Consumer", lambda conf: captured.setdefault("c", conf))
    monkeypatch.setattr(kafka_util, "AdminClient", lambda conf: captured.setdefault("a", conf))
    kafka_util.producer("b:1")
    kafka_util.consumer("b:1", "g")
    kafka_util.admin("b:1")
    for conf in captured.values():
        assert conf["security.protocol"] == "sasl_ssl" and conf["sasl.password"] == "pw"
    assert captured["p"]["acks"] == "all"
