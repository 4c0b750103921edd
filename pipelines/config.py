"""The one validated configuration object.

Settings come from three layers, later wins:
  1. the defaults in the dataclasses below;
  2. a YAML file: ``$STREAMSCORE_CONFIG`` or ``config/streamscore.yaml`` when present;
  3. environment variables ``STREAMSCORE_<SECTION>__<KEY>`` (for example ``STREAMSCORE_KAFKA__BOOTSTRAP``), plus the
     conventional ``KAFKA_BOOTSTRAP``, ``KAFKA_HOME`` and ``REDIS_URL``.

This module is the only place that reads the environment. Unknown keys are errors that name their source, so a typo
in a file or a variable never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = ROOT / "config" / "streamscore.yaml"
ENV_PREFIX = "STREAMSCORE_"


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names where it came from."""


@dataclass(frozen=True)
class KafkaConfig:
    # An external broker; empty means "the local KRaft broker that infra/ starts on `port`".
    bootstrap: str = ""
    port: int = 9092
    controller_port: int = 9093
    # An existing Kafka installation to run instead of the Maven-resolved jars.
    home: str = ""
    partitions: int = 4
    data_dir: str = ".run/kafka"

    @property
    def bootstrap_servers(self) -> str:
        return self.bootstrap or f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class RedisConfig:
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    url: str = ""

    @property
    def redis_url(self) -> str:
        return self.url or f"redis://{self.host}:{self.port}/{self.db}"


@dataclass(frozen=True)
class TopicsConfig:
    transactions: str = "transactions"
    labels: str = "transaction-labels"
    customer_profiles: str = "customer-profiles"
    terminal_profiles: str = "terminal-profiles"
    # The record of truth: written with flink.delivery_guarantee (exactly-once: visible at each checkpoint's commit).
    fraud_scores: str = "fraud-scores"
    # The decision path: the same records at-least-once, visible as soon as they are scored; after a failure a
    # record can come twice, so readers keep the first per transaction id (pipelines/decisions.py).
    fraud_decisions: str = "fraud-decisions"
    late: str = "transactions-late"
    dead_letter: str = "dead-letter"
    posts: str = "posts"
    post_sentiment: str = "post-sentiment"
    sentiment_trends: str = "sentiment-trends"
    posts_late: str = "posts-late"
    # The first job's output: decoded transactions re-encoded, proving the Kafka -> Flink -> Kafka chain.
    passthrough: str = "transactions-decoded"


@dataclass(frozen=True)
class FlinkConfig:
    parallelism: int = 1
    # "process" isolates Python workers; "thread" runs them inside the JVM (faster, see docs/pyflink notes). The
    # default for every job; fraud.execution_mode overrides it for the fraud job.
    execution_mode: str = "process"
    checkpoint_interval_ms: int = 2000
    # Unaligned barriers overtake the records queued before them, so no input waits while the barrier of another
    # input (transactions and labels join in the feature functions) catches up. Aligned, the transactions produced
    # in the 200 ms before each checkpoint waited: p99 of those 552-629 ms against 163-289 unaligned at 2,000/s.
    # State stays exactly-once either way; the checkpoint also holds the overtaken records.
    unaligned_checkpoints: bool = True
    checkpoint_dir: str = ".run/flink-checkpoints"
    # Event-time windows emit a row once a watermark passes it, so the interval is a latency floor; 50 ms and the
    # 20 ms bundle time below are what the tests and `make bench` have always run with.
    auto_watermark_interval_ms: int = 50
    # How long a network buffer between operators may wait to fill before it is sent (Flink's default: 100 ms,
    # paid at every keyBy/exchange of the job's graph: at 500 events/s, 5 ms halved p99 from source to scorer).
    buffer_timeout_ms: int = 5
    bundle_size: int = 1000
    bundle_time_ms: int = 20
    arrow_batch_size: int = 1000
    jvm_heap: str = "1g"
    # Extra options for the JVM that runs the operators (the MiniCluster's, a cluster's TaskManagers). C2 inlines a
    # whole chain of Flink operators into one method and recompiles those 50 kB methods for minutes (JFR: 13 s of
    # compilation in 20 s, 0.5-0.9 of our 2 cores for the job's first minute). Shallower inlining: 300k drains used
    # 1.56-1.92 CPU s per 10k events (6 runs) against 2.15-2.24 (3 runs). infra/k8s repeats these options.
    jvm_opts: str = "-XX:MaxInlineLevel=4 -XX:InlineSmallCode=500"
    log_dir: str = ".run/logs/flink"
    # Where `infra/flink_jars.py` puts the Kafka connector; jobs add every jar found there to `pipeline.jars`.
    jars_dir: str = ".cache/flink-jars"
    # A remote cluster (host:port of the JobManager REST endpoint); empty means the local MiniCluster.
    jobmanager: str = ""
    # The REST endpoint of a job's local MiniCluster, on loopback: where the dashboard and the tests read the job's
    # state and restart count (0: a random port). `make run` starts the sentiment job with
    # STREAMSCORE_FLINK__LOCAL_REST_PORT set to sentiment_rest_port. Not used on a cluster (its own rest.port).
    local_rest_port: int = 8091
    sentiment_rest_port: int = 8092
    # Kafka source consumer group and the start position for a job without a checkpoint.
    group_id: str = "streamscore-fraud"
    starting_offsets: str = "earliest"
    delivery_guarantee: str = "exactly-once"
    transaction_timeout_ms: int = 600000
    # "hashmap" keeps state as objects on the heap (fastest per event) but snapshots all of it at every checkpoint;
    # "rocksdb" pays serialisation per access and checkpoints incrementally (large windows, frequent checkpoints).
    state_backend: str = "hashmap"
    # Changelog (FLIP-158): each checkpoint uploads only the state changes since the last one, and the full state
    # is written in the background every few minutes; for frequent checkpoints over large windows.
    state_changelog: bool = False


@dataclass(frozen=True)
class FraudConfig:
    # When a transaction gets its features and score. "arrival": as soon as it arrives, over every row received
    # so far in [t - W, t] (a live fraud decision cannot wait). "watermark": once the watermark passes its time,
    # over every row of its window however late within the bound (complete, for backfills and audits; every
    # decision then waits at least out_of_orderness_ms of event time). docs/architecture.md has the trade-off.
    emit: str = "arrival"
    out_of_orderness_ms: int = 5000
    idleness_ms: int = 30000
    # A record whose event time is this far ahead of wall-clock "now" or of the watermark is rejected.
    max_future_ms: int = 86_400_000
    # No record time (transactions, labels, posts) may be older than this (epoch ms; default 2000-01-01, the
    # Python and Java decoders' DEFAULT_MIN_TIME_MS): an older one is a dead letter (bad-timestamp).
    min_event_time_ms: int = 946_684_800_000
    # A customer's or terminal's feature state is dropped once the watermark is this far past its newest row (the
    # longest window: nothing older can be in a window; 0: never), so ids that never come back do not grow the heap.
    # A key that comes back after that starts afresh (no previous transaction). docs/architecture.md: memory per key.
    state_ttl_ms: int = 30 * 86_400_000
    # Rows one key may hold ahead of the watermark (a transaction or label over it is a dead letter,
    # too-many-ahead): honest traffic holds a few seconds' worth (out_of_orderness_ms), a flood stamped ahead would
    # otherwise pile up in one key and slow every row of it.
    max_rows_ahead: int = 1000
    label_delay_days: float = 7.0
    review_threshold: float = 0.5
    decline_threshold: float = 0.9
    # Thread mode runs the job's Python functions inside the JVM (pemja) instead of worker processes fed over
    # gRPC: at 2,000 events/s p50 350-672 ms against 456-829 ms in process mode (four runs each; p99 is within
    # the noise). Its functions are numpy and our C++ kernels; the sentiment job (torch in the worker) stays on
    # flink.execution_mode.
    execution_mode: str = "thread"
    scorer: str = "native"  # native | reference
    # Rows per call of the scoring UDF (Flink's bundle and Arrow batch size for this job; flink.bundle_time_ms still
    # closes a bundle, so latency at a few thousand events/s is unchanged). The UDF runs in a Python worker (pandas
    # UDFs have no thread mode) and the operator waits for each bundle's results: 5,000 against 1,000, two 300k
    # drains, 8.4k/7.8k and 13.6k/10.7k events/s, 1.72/1.92 and 1.18/1.31 CPU s per 10k events.
    bundle_size: int = 5000
    # How long the scoring UDF's bundle may wait to fill (flink.bundle_time_ms for this job): every transaction
    # waits for its bundle to close on the live clock, while a drain fills bundle_size first.
    bundle_time_ms: int = 5
    model_dir: str = "artifacts/models/fraud"
    model_version: str = "latest"
    device: str = "auto"  # auto | cpu | cuda
    # What runs the MLP on the CPU: auto (our kernels, best ISA) | avx512 | avx2 | generic | aten (LibTorch).
    cpu_kernel: str = "auto"
    # On a GPU, batches smaller than this are scored on the CPU: a CUDA call costs about 120 us whatever its size
    # (H100: 119 us at batch 1, 151 us at 64) against about 7 us + 1 us per event on one CPU core, so the GPU only
    # wins from about 128 events. 0 sends every batch to the GPU.
    cuda_min_batch: int = 128
    max_batch: int = 1024
    max_wait_ms: float = 5.0
    # A transaction's amount above this is a dead letter ("amount-too-large"); at most float32's largest value.
    max_amount: float = 1_000_000.0


@dataclass(frozen=True)
class SentimentConfig:
    scorer: str = "model"  # model (TorchScript via the native runtime) | vader
    model_dir: str = "artifacts/models/sentiment"
    model_version: str = "latest"
    device: str = "auto"  # auto | cpu | cuda
    max_length: int = 128
    # Torch intra-op threads for the scorer inside a Flink Python worker; 0 leaves torch's default.
    threads: int = 0
    window_minutes: int = 1


@dataclass(frozen=True)
class ReplayConfig:
    fraud_csv: str = "../shared/data/fraud/transactions_2018-04-01_2018-06-30.csv.gz"
    sentiment_dir: str = "../shared/data/sentiment"
    rate: float = 2000.0
    speedup: float = 0.0  # 0 = as fast as `rate` allows, ignoring event-time gaps
    # How long the replays' producer holds messages to batch them; on the live clock every transaction waits up to
    # this long before the broker has it. librdkafka sends one produce request per partition (librdkafka#1700): at
    # 2,000 transactions/s with their labels over 8 partitions, 5 ms meant about 900 requests/s and the broker spent
    # 0.2-0.3 of a core on them (20 ms: 0.08-0.12), yet 5 ms with fraud.bundle_time_ms 5 took the live 2,000/s p99
    # from 149 to 114 ms and 10/s from 93 to 69 (one run each; README, Benchmarks).
    linger_ms: int = 5
    # A paced replay sleeps only once it is this far ahead of its schedule, sending what is due in between at once:
    # a sleep per message at 2,000/s was a wake-up every 0.5 ms.
    pace_slack_ms: float = 2.0


@dataclass(frozen=True)
class MetricsConfig:
    # The address every /metrics endpoint binds (pipelines/metrics.py serve): loopback by default; docker-compose
    # sets 0.0.0.0 so that Prometheus in another container can scrape it.
    host: str = "127.0.0.1"
    # Each process that `make run` starts has its own port (a second process on a taken port serves nothing).
    producer_port: int = 9401  # pipelines/replay/fraud.py
    # A job's Python workers serve `job_port` (udfs/); `make run` starts the sentiment job with
    # STREAMSCORE_METRICS__JOB_PORT set to `sentiment_job_port`, so the two jobs' workers do not compete for one port.
    job_port: int = 9402
    dashboard_port: int = 9403
    lag_exporter_port: int = 9404
    sentiment_job_port: int = 9405
    posts_producer_port: int = 9406  # pipelines/replay/posts.py
    # Flink's own metrics (its PrometheusReporter: job state, numRestarts, checkpoints, records per task). The fraud
    # job's: its local MiniCluster's reporter (jobs/common.py), or on the standalone cluster (`make run CLUSTER=1`)
    # the JobManager's, the TaskManager taking the next port. 0: no reporter (the tests' jobs).
    flink_reporter_port: int = 9249
    # The sentiment job's MiniCluster reporter: `make run` starts that job with STREAMSCORE_METRICS__FLINK_REPORTER_PORT
    # set to this (as with job_port); apart from flink_reporter_port + 1, which a cluster's TaskManager takes.
    sentiment_flink_reporter_port: int = 9251
    prometheus_port: int = 9090


@dataclass(frozen=True)
class DashboardConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str = "change-me"
    allowed_origins: tuple[str, ...] = ("http://127.0.0.1:8765", "http://localhost:8765")
    send_queue: int = 64


@dataclass(frozen=True)
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    flink: FlinkConfig = field(default_factory=FlinkConfig)
    fraud: FraudConfig = field(default_factory=FraudConfig)
    sentiment: SentimentConfig = field(default_factory=SentimentConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)

    def path(self, value: str) -> Path:
        """Resolves a configured path relative to the project root."""
        p = Path(value)
        return p if p.is_absolute() else ROOT / p

    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any]]) -> "Config":
        return _merge(self, overrides, source="overrides")


_CHOICES = {
    ("flink", "execution_mode"): {"process", "thread"},
    ("fraud", "execution_mode"): {"process", "thread"},
    ("fraud", "emit"): {"arrival", "watermark"},
    ("fraud", "cpu_kernel"): {"auto", "avx512", "avx2", "generic", "aten"},
    ("flink", "delivery_guarantee"): {"exactly-once", "at-least-once", "none"},
    ("flink", "starting_offsets"): {"earliest", "latest", "committed"},
    ("flink", "state_backend"): {"hashmap", "rocksdb"},
    ("fraud", "scorer"): {"native", "reference"},
    ("fraud", "device"): {"auto", "cpu", "cuda"},
    ("sentiment", "scorer"): {"model", "vader"},
    ("sentiment", "device"): {"auto", "cpu", "cuda"},
}


def _coerce(value: Any, typ: Any, where: str) -> Any:
    origin = typing.get_origin(typ)
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if typ in (int, float, str):
            if typ is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return typ(value)
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(i).strip() for i in items if str(i).strip())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read {value!r} as {getattr(typ, '__name__', typ)}") from exc
    raise ConfigError(f"{where}: unsupported type {typ}")


def _merge(cfg: Config, data: Mapping[str, Any], source: str) -> Config:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    sections = {}
    hints = typing.get_type_hints(Config)
    for section, values in data.items():
        if section not in hints:
            raise ConfigError(f"{source}: unknown section {section!r} (known: {', '.join(sorted(hints))})")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: section {section!r} must be a mapping")
        current = getattr(cfg, section)
        sec_hints = typing.get_type_hints(type(current))
        changes = {}
        for key, value in values.items():
            if key not in sec_hints:
                raise ConfigError(
                    f"{source}: unknown key {section}.{key} (known: {', '.join(sorted(sec_hints))})")
            where = f"{source}: {section}.{key}"
            coerced = _coerce(value, sec_hints[key], where)
            allowed = _CHOICES.get((section, key))
            if allowed and coerced not in allowed:
                raise ConfigError(f"{where}: {coerced!r} is not one of {sorted(allowed)}")
            changes[key] = coerced
        sections[section] = dataclasses.replace(current, **changes)
    return dataclasses.replace(cfg, **sections)


def _from_env(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if name == "STREAMSCORE_CONFIG" or not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):]
        if "__" not in rest:
            raise ConfigError(f"environment: {name} is not of the form {ENV_PREFIX}<SECTION>__<KEY>")
        section, key = rest.split("__", 1)
        out.setdefault(section.lower(), {})[key.lower()] = value
    # The conventional names a Kafka or Redis user already has set.
    if environ.get("KAFKA_BOOTSTRAP"):
        out.setdefault("kafka", {})["bootstrap"] = environ["KAFKA_BOOTSTRAP"]
    if environ.get("KAFKA_HOME"):
        out.setdefault("kafka", {})["home"] = environ["KAFKA_HOME"]
    if environ.get("REDIS_URL"):
        out.setdefault("redis", {})["url"] = environ["REDIS_URL"]
    return out


def _validate(cfg: Config) -> Config:
    f = cfg.fraud
    if not 0.0 <= f.review_threshold <= f.decline_threshold <= 1.0:
        raise ConfigError("fraud: need 0 <= review_threshold <= decline_threshold <= 1")
    if f.state_ttl_ms < 0 or f.max_rows_ahead < 1:
        raise ConfigError(f"fraud: state_ttl_ms must be >= 0 and max_rows_ahead >= 1, not {f.state_ttl_ms} and "
                          f"{f.max_rows_ahead}")
    if f.max_batch < 1 or f.max_wait_ms < 0 or f.cuda_min_batch < 0 or f.bundle_size < 1 \
            or f.bundle_time_ms < 1:
        raise ConfigError("fraud: max_batch, bundle_size and bundle_time_ms must be >= 1, max_wait_ms >= 0 and "
                          "cuda_min_batch >= 0")
    if not 0.0 < f.max_amount <= 3.4028234663852886e38:
        raise ConfigError(f"fraud: max_amount must be > 0 and at most float32's largest value, not {f.max_amount}")
    s = cfg.sentiment
    if not 1 <= s.max_length <= 512 or s.threads < 0 or s.window_minutes < 1:
        raise ConfigError("sentiment: need 1 <= max_length <= 512, threads >= 0 and window_minutes >= 1")
    if cfg.replay.linger_ms < 0 or cfg.replay.pace_slack_ms < 0:
        raise ConfigError("replay: linger_ms and pace_slack_ms must be >= 0")
    if cfg.flink.parallelism < 1:
        raise ConfigError("flink: parallelism must be >= 1")
    for name in ("local_rest_port", "sentiment_rest_port"):
        if not 0 <= getattr(cfg.flink, name) <= 65535:
            raise ConfigError(f"flink: {name} must be a port number 0-65535 (0: a random port), not "
                              f"{getattr(cfg.flink, name)}")
    if cfg.kafka.partitions < 1:
        raise ConfigError("kafka: partitions must be >= 1")
    if not cfg.metrics.host.strip():
        raise ConfigError("metrics: host must not be empty (127.0.0.1 for loopback, 0.0.0.0 for every interface)")
    for f in dataclasses.fields(cfg.metrics):
        port = getattr(cfg.metrics, f.name)
        if f.name.endswith("_port") and not 0 <= port <= 65535:
            raise ConfigError(f"metrics: {f.name} must be a port number 0-65535 (0: no endpoint), not {port}")
    return cfg


def load_config(path: str | os.PathLike[str] | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    """Builds the validated Config from defaults, the YAML file and the environment."""
    environ = os.environ if environ is None else environ
    cfg = Config()
    file = Path(path) if path else (Path(environ["STREAMSCORE_CONFIG"]) if environ.get("STREAMSCORE_CONFIG")
                                    else DEFAULT_CONFIG_FILE)
    if path or environ.get("STREAMSCORE_CONFIG") or file.exists():
        if not file.exists():
            raise ConfigError(f"{file}: config file not found")
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
        cfg = _merge(cfg, data, source=str(file))
    env = _from_env(environ)
    if env:
        cfg = _merge(cfg, env, source="environment")
    return _validate(cfg)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
