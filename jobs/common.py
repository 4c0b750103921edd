"""Builds the Flink environments for our jobs from the one Config.

The same job file runs on the local MiniCluster (``python jobs/x.py``) and on a cluster (``flink run -py jobs/x.py``):
we never set ``execution.target`` ourselves, so ``flink run`` decides where it goes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipelines import kafka_security, udfjar  # noqa: E402
from pipelines.config import Config  # noqa: E402
from pipelines.procs import site_packages  # noqa: E402


def connector_jars(cfg: Config) -> list[str]:
    """The Kafka connector (from Maven Central) and our Java SQL functions (built from udfs/java by `make jars`)."""
    jars_dir = cfg.path(cfg.flink.jars_dir)
    jars = sorted(jars_dir.glob("*.jar"))
    if not jars:
        raise RuntimeError(f"no Flink connector jars in {jars_dir}: run `make jars` "
                           f"(python -m infra.services flink-jars)")
    return [j.resolve().as_uri() for j in [*jars, udfjar.checked_jar()]]


def _python() -> str:
    return os.environ.get("PYFLINK_PYTHON", sys.executable)


def checkpoint_root(cfg: Config, job_name: str) -> Path:
    return cfg.path(cfg.flink.checkpoint_dir) / job_name


def latest_checkpoint(cfg: Config, job_name: str) -> str | None:
    """The newest completed checkpoint (a chk-N folder with _metadata) of any earlier run of this job."""
    root = checkpoint_root(cfg, job_name)
    done = [m.parent for m in root.glob("*/chk-*/_metadata")] if root.exists() else []
    if not done:
        return None
    return str(max(done, key=lambda p: (p.stat().st_mtime, int(p.name.split("-")[1]))))


def restore_settings(cfg: Config, job_name: str, restore: str) -> dict[str, str]:
    """Settings that resume a job: `restore` is "" (start fresh), "latest" or a checkpoint path."""
    if not restore:
        return {}
    path = latest_checkpoint(cfg, job_name) if restore == "latest" else restore
    if not path:
        print(f"[{job_name}] no checkpoint to restore from; starting fresh", flush=True)
        return {}
    print(f"[{job_name}] restoring from {path}", flush=True)
    settings = {"execution.state-recovery.path": path}
    if cfg.flink.state_changelog:
        # The changelog cannot take the full snapshot NO_CLAIM (the default) needs: the new job owns the files.
        settings["execution.state-recovery.claim-mode"] = "CLAIM"
    return settings


def flink_settings(cfg: Config, *, job_name: str, execution_mode: str | None = None,
                   checkpoint_interval_ms: int | None = None) -> dict[str, str]:
    """`execution_mode` overrides flink.execution_mode for one job (the fraud job's fraud.execution_mode), and
    `checkpoint_interval_ms` flink.checkpoint_interval_ms (the sentiment job's sentiment.checkpoint_interval_ms)."""
    f = cfg.flink
    mode = execution_mode or f.execution_mode
    interval = f.checkpoint_interval_ms if checkpoint_interval_ms is None else checkpoint_interval_ms
    py = _python()
    settings = {
        "pipeline.name": job_name,
        "pipeline.jars": ";".join(connector_jars(cfg)),
        "python.executable": py,
        "python.client.executable": py,
        "python.execution-mode": mode,
        "python.fn-execution.bundle.size": str(f.bundle_size),
        "python.fn-execution.bundle.time": str(f.bundle_time_ms),
        "python.fn-execution.arrow.batch.size": str(f.arrow_batch_size),
        "pipeline.auto-watermark-interval": f"{f.auto_watermark_interval_ms} ms",
        "execution.buffer-timeout": f"{f.buffer_timeout_ms} ms",
        "parallelism.default": str(f.parallelism),
        "table.exec.source.idle-timeout": f"{cfg.fraud.idleness_ms} ms",
        # The source's watermark is per Kafka partition; late rows are split off (udfs/routing.py) before any window.
        "table.exec.state.ttl": "0",
        # Our feature functions bound their own state (udfs/java RollingFeatures reads these in open()).
        "pipeline.global-job-parameters": (f"streamscore.fraud.state-ttl-ms:{cfg.fraud.state_ttl_ms},"
                                           f"streamscore.fraud.max-rows-ahead:{cfg.fraud.max_rows_ahead}"),
        # Chained operators hand rows on without a defensive copy (JFR: RowDataSerializer.copy was 14% of the
        # JVM's CPU). Safe here: every operator in our jobs is a SQL or Python-UDF operator, which never keeps or
        # mutates a row it has emitted.
        "pipeline.object-reuse": "true",
        "state.backend.type": f.state_backend,
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": "1000",
        "restart-strategy.fixed-delay.delay": "2 s",
    }
    if interval > 0:
        settings.update({
            "execution.checkpointing.interval": f"{interval} ms",
            "execution.checkpointing.mode": "EXACTLY_ONCE",
            "execution.checkpointing.min-pause": f"{max(interval // 4, 50)} ms",
            "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
            "execution.checkpointing.dir": checkpoint_root(cfg, job_name).resolve().as_uri(),
            "execution.checkpointing.incremental": "true" if f.state_backend == "rocksdb" else "false",
            "execution.checkpointing.unaligned.enabled": "true" if f.unaligned_checkpoints else "false",
        })
        if f.state_changelog:
            settings.update({
                "state.changelog.enabled": "true",
                "state.changelog.storage": "filesystem",
                "state.changelog.dstl.dfs.base-path": (checkpoint_root(cfg, job_name) / "changelog").resolve().as_uri(),
            })
    if mode == "thread":
        # Thread mode runs Python inside the JVM through pemja, which must find our site-packages.
        os.environ["PYTHONPATH"] = os.pathsep.join([site_packages(), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return settings


PROMETHEUS_REPORTER = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
LOCAL_LIB_DIR = ROOT / ".run" / "flink-local-lib"


def on_cluster_client() -> bool:
    """True when `flink run -py` runs this script: the client started PyFlink's gateway and says so in
    PYFLINK_GATEWAY_PORT; a plain `python jobs/x.py` starts its own gateway JVM with a MiniCluster."""
    return "PYFLINK_GATEWAY_PORT" in os.environ


def local_cluster_settings(cfg: Config) -> dict[str, str]:
    """The local MiniCluster's REST endpoint (flink.local_rest_port, loopback) and Flink's PrometheusReporter
    (metrics.flink_reporter_port on metrics.host), with the job's state as gauges (runningState, restartingState, ...
    next to numRestarts). Nothing under `flink run`: a rest.port there would redirect the submission, and a
    cluster's reporters are its own (infra/flink_cluster.py)."""
    if on_cluster_client():
        return {}
    settings = {"rest.address": "127.0.0.1", "rest.bind-address": "127.0.0.1", "metrics.job.status.enable": "STATE"}
    if cfg.flink.local_rest_port:
        settings["rest.port"] = settings["rest.bind-port"] = str(cfg.flink.local_rest_port)
    if cfg.metrics.flink_reporter_port:
        settings.update({"metrics.reporter.prom.factory.class": PROMETHEUS_REPORTER,
                         "metrics.reporter.prom.host": cfg.metrics.host,
                         "metrics.reporter.prom.port": str(cfg.metrics.flink_reporter_port)})
    return settings


def local_lib_dir() -> Path:
    """pyflink/lib plus the Prometheus reporter that PyFlink ships in plugins/metrics-prometheus (the same Flink
    release), as links. A MiniCluster finds reporters on its JVM's classpath only: it has no plugin manager, and
    pipeline.jars is the user class loader, loaded after the reporters start. PyFlink's gateway puts
    $FLINK_LIB_DIR/*.jar on that classpath (pyflink_gateway_server.construct_flink_classpath)."""
    import pyflink

    home = Path(pyflink.__file__).resolve().parent
    jars = [*sorted((home / "lib").glob("*.jar")), *sorted((home / "plugins" / "metrics-prometheus").glob("*.jar"))]
    LOCAL_LIB_DIR.mkdir(parents=True, exist_ok=True)
    for link in LOCAL_LIB_DIR.iterdir():  # a jar of an earlier PyFlink
        if link.is_symlink() and (not link.exists() or link.resolve() not in jars):
            link.unlink(missing_ok=True)
    for jar in jars:
        try:
            (LOCAL_LIB_DIR / jar.name).symlink_to(jar)
        except FileExistsError:  # the other job, starting at the same time
            pass
    return LOCAL_LIB_DIR


def prepare_process_env(cfg: Config) -> None:
    """Environment the local MiniCluster's JVM and Python workers inherit."""
    log_dir = cfg.path(cfg.flink.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    if not on_cluster_client():
        import pyflink

        # Without FLINK_HOME, PyFlink resets FLINK_LIB_DIR to its own lib (find_flink_home.py).
        os.environ["FLINK_HOME"] = str(Path(pyflink.__file__).resolve().parent)
        os.environ["FLINK_LIB_DIR"] = str(local_lib_dir())
    os.environ.setdefault("FLINK_LOG_DIR", str(log_dir))
    os.environ.setdefault("JVM_ARGS", f"-Xmx{cfg.flink.jvm_heap} {cfg.flink.jvm_opts}".strip())
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)


def create_envs(cfg: Config, *, job_name: str, extra: dict[str, str] | None = None,
                execution_mode: str | None = None, checkpoint_interval_ms: int | None = None):
    """Returns (StreamExecutionEnvironment, StreamTableEnvironment) configured from cfg (plus `extra`)."""
    prepare_process_env(cfg)
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import EnvironmentSettings, StreamTableEnvironment

    settings = {**flink_settings(cfg, job_name=job_name, execution_mode=execution_mode,
                                 checkpoint_interval_ms=checkpoint_interval_ms),
                **local_cluster_settings(cfg), **(extra or {})}
    conf = Configuration()
    for k, v in settings.items():
        conf.set_string(k, v)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(cfg.flink.parallelism)
    t_env = StreamTableEnvironment.create(env, environment_settings=EnvironmentSettings.in_streaming_mode())
    tconf = t_env.get_config()
    for k, v in settings.items():
        tconf.set(k, v)
    return env, t_env


WATERMARK_GUARD = "io.streamscore.udfs.WatermarkGuard"


def create_kafka_source(t_env, cfg: Config, **kwargs) -> None:
    """Registers the watermark guard the source's WATERMARK calls, then the table of kafka_source_ddl(**kwargs)."""
    t_env.execute_sql(f"CREATE TEMPORARY SYSTEM FUNCTION IF NOT EXISTS watermark_guard AS '{WATERMARK_GUARD}' "
                      f"LANGUAGE JAVA")
    t_env.execute_sql(kafka_source_ddl(cfg, **kwargs))


def kafka_source_ddl(cfg: Config, *, table: str, topic: str, group_id: str, bootstrap: str | None = None,
                     watermark: bool = True, bounded: bool = False) -> str:
    """A Kafka table with the raw value bytes, the key, Kafka metadata, and a per-partition watermark on the
    record timestamp (our producers set it to the event time). The watermark needs `watermark_guard`
    (create_kafka_source registers it). `bounded` stops at the offsets that are the latest at start.

    Fetches are kept small per partition: the reader emits a fetched batch split by split, and a large batch from
    one partition could outlast the idle timeout of the others, which would then be marked idle and let the
    watermark run past their data. A fetch waits up to 10 ms for 16 KB: at a few thousand events/s, a fetch per
    record or two cost the fetcher thread a quarter of the job's JVM time (JFR at 500 transactions/s)."""
    bootstrap = bootstrap or cfg.kafka.bootstrap_servers
    startup = {"earliest": "earliest-offset", "latest": "latest-offset",
               "committed": "group-offsets"}[cfg.flink.starting_offsets]
    # Watermarks are generated inside the Kafka source, one per partition (watermark push-down). A record stamped
    # ahead of the wall clock moves its partition's watermark no further than now, and one beyond max_future_ms
    # (a dead letter) not at all: udfs/java WatermarkGuard, which the planner takes for deterministic, as push-down
    # requires.
    wm = (f", WATERMARK FOR kafka_ts AS watermark_guard(kafka_ts, CAST({int(cfg.fraud.max_future_ms)} AS BIGINT)) "
          f"- INTERVAL '{cfg.fraud.out_of_orderness_ms / 1000:.3f}' SECOND"
          if watermark else "")
    bounded_opt = ",\n          'scan.bounded.mode' = 'latest-offset'" if bounded else ""
    return f"""
        CREATE TEMPORARY TABLE {table} (
          `key` BYTES,
          `value` BYTES,
          `kafka_topic` STRING METADATA FROM 'topic' VIRTUAL,
          `kafka_partition` INT METADATA FROM 'partition' VIRTUAL,
          `kafka_offset` BIGINT METADATA FROM 'offset' VIRTUAL,
          `kafka_ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL
          {wm}
        ) WITH (
          'connector' = 'kafka',
          'topic' = '{topic}',
          'properties.bootstrap.servers' = '{bootstrap}',
          'properties.group.id' = '{group_id}',
          'properties.isolation.level' = 'read_committed',
          'properties.commit.offsets.on.checkpoint' = 'true',
          'properties.auto.offset.reset' = 'earliest',
          'properties.max.partition.fetch.bytes' = '65536',
          'properties.fetch.min.bytes' = '16384',
          'properties.fetch.max.wait.ms' = '10',
          'scan.startup.mode' = '{startup}',
          'scan.watermark.idle-timeout' = '{cfg.fraud.idleness_ms} ms',
          'key.format' = 'raw',
          'key.fields' = 'key',
          'value.format' = 'raw',
          'value.fields-include' = 'EXCEPT_KEY'{bounded_opt}{kafka_security.flink_table_options(cfg.kafka)}
        )"""


def kafka_sink_ddl(cfg: Config, *, table: str, topic: str, bootstrap: str | None = None,
                   txn_prefix: str | None = None, guarantee: str | None = None) -> str:
    """A Kafka sink of (key, value) bytes, with `guarantee` (default flink.delivery_guarantee). Exactly-once uses
    Kafka transactions committed on checkpoints. Their ids come from a pool (POOLING, connector 4+, Kafka 3+):
    the default names a new transactional id per checkpoint, so each checkpoint also initialised a new producer
    with the coordinator in the sink's task, which runs chained to the scorer and held up the decision path (live
    2,000/s decision p99: 213 ms, at-least-once sinks 141, pooled ids 136; README, Benchmarks)."""
    bootstrap = bootstrap or cfg.kafka.bootstrap_servers
    guarantee = guarantee or cfg.flink.delivery_guarantee
    txn = ""
    if guarantee == "exactly-once":
        txn = (f",\n 'sink.transactional-id-prefix' = '{txn_prefix or table}',"
               f"\n 'properties.transaction.timeout.ms' = '{cfg.flink.transaction_timeout_ms}',"
               f"\n 'sink.transaction-naming-strategy' = 'POOLING'")
    return f"""
        CREATE TEMPORARY TABLE {table} (
          `key` BYTES,
          `value` BYTES
        ) WITH (
          'connector' = 'kafka',
          'topic' = '{topic}',
          'properties.bootstrap.servers' = '{bootstrap}',
          'properties.linger.ms' = '5',
          'properties.acks' = 'all',
          'key.format' = 'raw',
          'key.fields' = 'key',
          'value.format' = 'raw',
          'value.fields-include' = 'EXCEPT_KEY',
          'sink.delivery-guarantee' = '{guarantee}'{txn}{kafka_security.flink_table_options(cfg.kafka)}
        )"""
