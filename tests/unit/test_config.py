import pytest

from pipelines.config import ConfigError, load_config


def test_defaults_without_file(tmp_path):
    cfg = load_config(environ={})
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert cfg.topics.dead_letter == "dead-letter"


def test_file_and_env_layers(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("kafka:\n  port: 19092\nfraud:\n  review_threshold: 0.3\n")
    cfg = load_config(f, environ={"STREAMSCORE_FRAUD__DECLINE_THRESHOLD": "0.8", "KAFKA_BOOTSTRAP": "h:1"})
    assert cfg.kafka.port == 19092
    assert cfg.kafka.bootstrap_servers == "h:1"
    assert (cfg.fraud.review_threshold, cfg.fraud.decline_threshold) == (0.3, 0.8)


def test_unknown_key_names_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("kafka:\n  prot: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*kafka\.prot"):
        load_config(f, environ={})


def test_unknown_section_and_env_key():
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(environ={"STREAMSCORE_NOPE__X": "1"})
    with pytest.raises(ConfigError, match="environment: unknown key fraud.nope"):
        load_config(environ={"STREAMSCORE_FRAUD__NOPE": "1"})


def test_bad_values():
    with pytest.raises(ConfigError, match="kafka.port"):
        load_config(environ={"STREAMSCORE_KAFKA__PORT": "abc"})
    with pytest.raises(ConfigError, match="scorer"):
        load_config(environ={"STREAMSCORE_FRAUD__SCORER": "magic"})
    with pytest.raises(ConfigError, match="threshold"):
        load_config(environ={"STREAMSCORE_FRAUD__REVIEW_THRESHOLD": "0.95"})
    with pytest.raises(ConfigError, match="cuda_min_batch"):
        load_config(environ={"STREAMSCORE_FRAUD__CUDA_MIN_BATCH": "-1"})


def test_missing_explicit_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml", environ={})


def test_metrics_host(tmp_path):
    assert load_config(environ={}).metrics.host == "127.0.0.1"
    assert load_config(environ={"STREAMSCORE_METRICS__HOST": "0.0.0.0"}).metrics.host == "0.0.0.0"
    f = tmp_path / "s.yaml"
    f.write_text("metrics:\n  host: 10.0.0.5\n")
    assert load_config(f, environ={}).metrics.host == "10.0.0.5"
    with pytest.raises(ConfigError, match="metrics: host"):
        load_config(environ={"STREAMSCORE_METRICS__HOST": " "})


def test_metrics_ports_one_per_process():
    m = load_config(environ={}).metrics
    assert (m.sentiment_job_port, m.posts_producer_port) == (9405, 9406)
    ports = [m.producer_port, m.job_port, m.dashboard_port, m.lag_exporter_port, m.sentiment_job_port,
             m.posts_producer_port, m.flink_reporter_port, m.flink_reporter_port + 1, m.prometheus_port]
    assert len(set(ports)) == len(ports), "two default /metrics endpoints share a port"
    env = {"STREAMSCORE_METRICS__SENTIMENT_JOB_PORT": "19405", "STREAMSCORE_METRICS__POSTS_PRODUCER_PORT": "19406"}
    m = load_config(environ=env).metrics
    assert (m.sentiment_job_port, m.posts_producer_port) == (19405, 19406)
    with pytest.raises(ConfigError, match="metrics.sentiment_job_port"):
        load_config(environ={"STREAMSCORE_METRICS__SENTIMENT_JOB_PORT": "x"})
    with pytest.raises(ConfigError, match="unknown key metrics.sentiment_port"):
        load_config(environ={"STREAMSCORE_METRICS__SENTIMENT_PORT": "9405"})
    with pytest.raises(ConfigError, match="posts_producer_port must be a port"):
        load_config(environ={"STREAMSCORE_METRICS__POSTS_PRODUCER_PORT": "70000"})


def test_checkpoint_settings_follow_the_config(monkeypatch, tmp_path):
    from jobs import common

    monkeypatch.setattr(common, "connector_jars", lambda cfg: [])
    env = {"STREAMSCORE_FLINK__CHECKPOINT_DIR": str(tmp_path)}
    plain = common.flink_settings(load_config(environ=env), job_name="j")
    assert plain["execution.checkpointing.interval"] == "2000 ms"
    assert not any(k.startswith("state.changelog") for k in plain)
    assert plain["execution.checkpointing.unaligned.enabled"] == "true"
    aligned = common.flink_settings(load_config(environ={**env, "STREAMSCORE_FLINK__UNALIGNED_CHECKPOINTS": "false"}),
                                    job_name="j")
    assert aligned["execution.checkpointing.unaligned.enabled"] == "false"
    cfg = load_config(environ={**env, "STREAMSCORE_FLINK__STATE_CHANGELOG": "true"})
    s = common.flink_settings(cfg, job_name="j")
    assert s["state.changelog.enabled"] == "true"
    assert s["state.changelog.dstl.dfs.base-path"] == (tmp_path / "j" / "changelog").as_uri()


def test_the_minimum_event_time_default_is_the_decoders():
    from pipelines.config import FraudConfig
    from pipelines.serde import DEFAULT_MIN_TIME_MS

    from pipelines.config import ROOT

    java = (ROOT / "udfs" / "java" / "io" / "streamscore" / "udfs" / "AvroDecoder.java").read_text()
    assert FraudConfig().min_event_time_ms == DEFAULT_MIN_TIME_MS
    assert f"DEFAULT_MIN_TIME_MS = {DEFAULT_MIN_TIME_MS:_}L;" in java
