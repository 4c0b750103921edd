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


def test_unknown_section_names_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("kafak:\n  port: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown section 'kafak'"):
        load_config(f, environ={})


def test_unknown_env_variables_name_the_variable():
    with pytest.raises(ConfigError, match="environment: STREAMSCORE_NOPE__X: unknown section 'nope'"):
        load_config(environ={"STREAMSCORE_NOPE__X": "1"})
    with pytest.raises(ConfigError, match="environment: STREAMSCORE_FRAUD__NOPE: unknown key fraud.nope"):
        load_config(environ={"STREAMSCORE_FRAUD__NOPE": "1"})
    # One underscore between section and key, or no key at all: named, not ignored.
    for name in ("STREAMSCORE_KAFKA_PORT", "STREAMSCORE_HOME"):
        with pytest.raises(ConfigError, match=f"environment: {name} is not of the form"):
            load_config(environ={name: "1"})
    # A bad value names its variable too, an alias included.
    with pytest.raises(ConfigError, match="STREAMSCORE_KAFKA__PORT: kafka.port: cannot read 'x' as int"):
        load_config(environ={"STREAMSCORE_KAFKA__PORT": "x"})
    # STREAMSCORE_CONFIG names the file; variables without the prefix are not ours.
    assert load_config(environ={"STREAMSCORE_CONFIG": "", "KAFKA_PORT": "x"}).kafka.port == 9092


def test_env_aliases_win_over_their_twins():
    env = {"STREAMSCORE_KAFKA__BOOTSTRAP": "a:1", "KAFKA_BOOTSTRAP": "b:2", "STREAMSCORE_REDIS__URL": "redis://a/0"}
    cfg = load_config(environ=env)
    assert (cfg.kafka.bootstrap, cfg.redis.url) == ("b:2", "redis://a/0")
    assert load_config(environ={**env, "KAFKA_BOOTSTRAP": ""}).kafka.bootstrap == "a:1"


def test_removed_keys_are_unknown(tmp_path):
    """fraud.max_batch and fraud.max_wait_ms configured MicroBatcher, which nothing used; setting them is an error."""
    for key in ("max_batch", "max_wait_ms"):
        with pytest.raises(ConfigError, match=f"unknown key fraud.{key}"):
            load_config(environ={f"STREAMSCORE_FRAUD__{key.upper()}": "1"})


def test_the_deployments_environments_load():
    """Every container's environment in docker-compose.yml and the FlinkDeployment is a valid config."""
    import yaml

    from pipelines.config import ROOT

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    envs = {f"compose {name}": {k: str(v) for k, v in (svc.get("environment") or {}).items()}
            for name, svc in compose["services"].items() if "build" in svc or svc.get("image") == "streamscore:latest"}
    for doc in yaml.safe_load_all((ROOT / "infra" / "k8s" / "fraud-flinkdeployment.yaml").read_text()):
        if doc and doc.get("kind") == "FlinkDeployment":
            for c in doc["spec"]["podTemplate"]["spec"]["containers"]:
                envs[f"k8s {c['name']}"] = {e["name"]: str(e.get("value", "")) for e in c.get("env", [])}
    assert len(envs) > 5
    for where, env in envs.items():
        try:
            load_config(environ={k: v for k, v in env.items() if "${" not in v})
        except ConfigError as exc:
            raise AssertionError(f"{where}: {exc}") from exc


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
    # One job's own interval (the sentiment job's sentiment.checkpoint_interval_ms) replaces flink's, pause included.
    own = common.flink_settings(load_config(environ=env), job_name="j", checkpoint_interval_ms=500)
    assert own["execution.checkpointing.interval"] == "500 ms"
    assert own["execution.checkpointing.min-pause"] == "125 ms"


def test_the_sentiment_job_takes_its_own_checkpoint_interval(monkeypatch):
    """The dashboard reads scores read_committed, so the sentiment job's interval is what an analyst waits for;
    0 falls back to flink.checkpoint_interval_ms."""
    from jobs import sentiment_job

    monkeypatch.setenv("STREAMSCORE_SENTIMENT__SCORER", "vader")  # main() sets it for its workers; restored after
    seen = []

    def create_envs(cfg, **kw):  # records what the job asks for and stops before any Flink starts
        seen.append(kw)
        raise SystemExit(0)

    monkeypatch.setattr(sentiment_job, "create_envs", create_envs)
    for value, want in (("500", 500), ("0", 2000)):
        monkeypatch.setenv("STREAMSCORE_SENTIMENT__CHECKPOINT_INTERVAL_MS", value)
        with pytest.raises(SystemExit):
            sentiment_job.main(["--scorer", "vader"])
        assert seen[-1]["checkpoint_interval_ms"] == want


def test_the_minimum_event_time_default_is_the_decoders():
    from pipelines.config import FraudConfig
    from pipelines.serde import DEFAULT_MIN_TIME_MS

    from pipelines.config import ROOT

    java = (ROOT / "udfs" / "java" / "io" / "streamscore" / "udfs" / "AvroDecoder.java").read_text()
    assert FraudConfig().min_event_time_ms == DEFAULT_MIN_TIME_MS
    assert f"DEFAULT_MIN_TIME_MS = {DEFAULT_MIN_TIME_MS:_}L;" in java


# Read anywhere: extended for the child processes we start. jobs/common.py: the two variables PyFlink owns.
ENV_READS_ALLOWED = {"*": {"PYTHONPATH"}, "jobs/common.py": {"PYFLINK_PYTHON", "PYFLINK_GATEWAY_PORT"}}


def environment_reads(root) -> list[str]:
    """Every os.environ.get / os.getenv / os.environ[...] / `in os.environ` read in our packages outside
    pipelines/config.py, as 'path:line NAME' (NAME '?' when it is not a literal), less ENV_READS_ALLOWED."""
    import ast

    def is_environ(node) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "environ" and isinstance(node.value, ast.Name) \
            and node.value.id == "os"

    def literal(node) -> str:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else "?"

    found = []
    for folder in ("pipelines", "udfs", "jobs", "infra", "dashboard"):
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel == "pipelines/config.py" or "__pycache__" in rel:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                name = None
                if isinstance(node, ast.Call) and node.args:
                    f = node.func
                    if isinstance(f, ast.Attribute) and f.attr == "get" and is_environ(f.value):
                        name = literal(node.args[0])
                    elif isinstance(f, ast.Attribute) and f.attr == "getenv" and isinstance(f.value, ast.Name) \
                            and f.value.id == "os":
                        name = literal(node.args[0])
                elif isinstance(node, ast.Subscript) and is_environ(node.value) and isinstance(node.ctx, ast.Load):
                    name = literal(node.slice)
                elif isinstance(node, ast.Compare) and any(is_environ(c) for c in node.comparators) \
                        and any(isinstance(o, (ast.In, ast.NotIn)) for o in node.ops):
                    name = literal(node.left)
                if name is not None and name not in ENV_READS_ALLOWED["*"] | ENV_READS_ALLOWED.get(rel, set()):
                    found.append(f"{rel}:{node.lineno} {name}")
    return found


def test_environment_reader_finds_reads(tmp_path):
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "x.py").write_text(
        "import os\na = os.environ.get('RATE', '1')\nb = os.getenv('X')\nc = os.environ['Y']\nd = 'Z' in os.environ\n"
        "e = dict(os.environ, PYTHONPATH='p')\nos.environ['W'] = '1'\nf = os.environ.get('PYTHONPATH', '')\n")
    assert environment_reads(tmp_path) == ["infra/x.py:2 RATE", "infra/x.py:3 X", "infra/x.py:4 Y", "infra/x.py:5 Z"]


def test_the_config_is_the_only_reader_of_settings_in_the_environment():
    """What pipelines/config.py's docstring says: elsewhere the environment is only handed on to child processes,
    plus PyFlink's own PYFLINK_PYTHON and PYFLINK_GATEWAY_PORT."""
    from pipelines.config import ROOT

    assert environment_reads(ROOT) == []
