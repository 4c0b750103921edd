"""The one validated configuration object.

Settings come from three layers, later wins:
  1. the defaults in the dataclasses below;
  2. a YAML file: ``$STREAMSCORE_CONFIG`` or ``config/streamscore.yaml`` when present;
  3. environment variables ``STREAMSCORE_<SECTION>__<KEY>`` (for example ``STREAMSCORE_KAFKA__BOOTSTRAP``), plus the
     conventional ``KAFKA_BOOTSTRAP``, ``KAFKA_HOME`` and ``REDIS_URL`` and the standalone cluster's ``FLINK_*``
     (``ENV_ALIASES``), which win when set.

Unknown keys are errors that name their source: a section or key in the file names the file, a ``STREAMSCORE_``
variable that is not ``STREAMSCORE_CONFIG`` and names no known key names the variable. A typo in a file or a variable
never silently falls back to a default.

This module is the only reader of streamscore's settings in the environment. The rest of our code reads the
environment only to hand it on to the processes it starts (copied, or with ``PYTHONPATH`` extended), and for two
variables that PyFlink owns, in jobs/common.py: ``PYFLINK_PYTHON`` (the Python that runs the Flink workers) and
``PYFLINK_GATEWAY_PORT`` (set when ``flink run`` runs a job script). jobs/common.py also leaves Flink's own
``FLINK_LOG_DIR`` and ``JVM_ARGS`` alone when they are set, so those win over flink.log_dir, flink.jvm_heap and
flink.jvm_opts. Tests have knobs of their own. tests/unit/test_config.py checks the packages for other reads.

The comment above each field is its documentation: ``python -m pipelines.configdoc`` (``make docs``) writes
docs/configuration.md from these classes, and a unit test fails when that file is out of date.
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
    # An external broker (host:port[,host:port...]); empty means "the local KRaft broker that infra/ starts on
    # `port`".
    bootstrap: str = ""
    # The local broker's client port (`make run` starts it on 127.0.0.1); also the bootstrap when `bootstrap` is empty.
    port: int = 9092
    # The local broker's KRaft controller port.
    controller_port: int = 9093
    # An existing Kafka installation to run instead of the Maven-resolved jars.
    home: str = ""
    # Partitions of each topic that `make run` and the benchmarks create (a topic that exists keeps its own).
    partitions: int = 4
    # Where the local broker keeps its logs and metadata.
    data_dir: str = ".run/kafka"
    # How every client (producers, the Flink source and sinks, the dashboard, the lag exporter, the benchmarks)
    # talks to the brokers: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL. pipelines/kafka_security.py maps this section
    # to librdkafka's and the Java client's property names.
    security_protocol: str = "PLAINTEXT"
    # The SASL mechanism when security_protocol is SASL_*.
    sasl_mechanism: str = "SCRAM-SHA-512"
    # The SASL user (principal) of this component.
    sasl_username: str = ""
    # The SASL password; prefer sasl_password_file. Never printed (not in the config's repr).
    sasl_password: str = field(default="", repr=False)
    # A file holding the SASL password (its first line); wins over sasl_password.
    sasl_password_file: str = ""
    # A PEM file of the CA(s) that sign the brokers' certificates; empty: the system's trust store.
    ssl_ca_location: str = ""
    # The client's PEM certificate, for brokers that require TLS client authentication (mutual TLS).
    ssl_certificate_location: str = ""
    # The PEM private key of ssl_certificate_location.
    ssl_key_location: str = ""
    # Check that the broker's certificate names the host the client connected to.
    ssl_endpoint_identification: bool = True
    # Replicas of each topic that ensure_topics creates; 0: min(3, the number of brokers).
    replication_factor: int = 0
    # min.insync.replicas of the topics ensure_topics creates; 0: replication_factor - 1, at least 1.
    min_insync_replicas: int = 0

    @property
    def bootstrap_servers(self) -> str:
        return self.bootstrap or f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class RedisConfig:
    # The profile store's host, used to build the URL when `url` is empty.
    host: str = "127.0.0.1"
    # The profile store's port; `make run` starts a local redis-server on it unless `url` is set.
    port: int = 6379
    # The Redis database number that holds the customer and terminal profiles.
    db: int = 0
    # An external Redis (redis://host:port/db); when set, infra/ starts no Redis and host, port and db are ignored.
    url: str = ""
    # The Redis ACL user; empty: the default user (requirepass).
    username: str = ""
    # The Redis password; prefer password_file. Never printed (not in the config's repr).
    password: str = field(default="", repr=False)
    # A file holding the Redis password (its first line); wins over password.
    password_file: str = ""

    @property
    def redis_url(self) -> str:
        return self.url or f"redis://{self.host}:{self.port}/{self.db}"


@dataclass(frozen=True)
class TopicsConfig:
    # The fraud job's input: card transactions (transaction.avsc, keyed by customer id; the record time is event time).
    transactions: str = "transactions"
    # Fraud labels, published days after their transaction (transaction_label.avsc); the terminal features join them.
    labels: str = "transaction-labels"
    # Customer profiles (compacted, keyed by id): the system of record; Redis holds the copy the job reads.
    customer_profiles: str = "customer-profiles"
    # Terminal profiles (compacted, keyed by id): the system of record; Redis holds the copy the job reads.
    terminal_profiles: str = "terminal-profiles"
    # The record of truth: written with flink.delivery_guarantee (exactly-once: visible at each checkpoint's commit).
    fraud_scores: str = "fraud-scores"
    # The decision path: the same records at-least-once, visible as soon as they are scored; after a failure a
    # record can come twice, so readers keep the first per transaction id (pipelines/decisions.py).
    fraud_decisions: str = "fraud-decisions"
    # Transactions and labels that missed their watermark (late_event.avsc: the original bytes and the reason).
    late: str = "transactions-late"
    # Records no job could use (dead_letter.avsc: reason code, message, raw bytes, source topic/partition/offset).
    dead_letter: str = "dead-letter"
    # The sentiment job's input: social posts (social_post.avsc).
    posts: str = "posts"
    # The sentiment job's score of each post (sentiment_score.avsc).
    post_sentiment: str = "post-sentiment"
    # The sentiment job's trend per topic and sentiment.window_minutes window (sentiment_trend.avsc).
    sentiment_trends: str = "sentiment-trends"
    # Posts that missed their watermark (late_event.avsc).
    posts_late: str = "posts-late"
    # The first job's output: decoded transactions re-encoded, proving the Kafka -> Flink -> Kafka chain.
    passthrough: str = "transactions-decoded"
    # The fraud job's control topic (compacted, one partition): JSON rule sets, each under the key rules-v<version>,
    # that change the review/decline thresholds and hard rules while the job runs (pipelines/rules.py, `make rules`).
    fraud_control: str = "fraud-control"
    # The live quality of each fraud model version from the delayed labels (model_quality.avsc; compacted, keyed by
    # version): pipelines/quality.py writes a snapshot per version every quality.refresh_s, the dashboard reads it.
    model_quality: str = "model-quality"


@dataclass(frozen=True)
class FlinkConfig:
    # Every job's default operator parallelism (`make run CLUSTER=1` runs the fraud job at 2).
    parallelism: int = 1
    # How Python functions run: "process" in worker processes fed over gRPC (isolated), "thread" inside the JVM
    # through pemja (no transfer between processes). The default for every job; fraud.execution_mode overrides it
    # for the fraud job.
    execution_mode: str = "process"
    # How often each job checkpoints (exactly-once state, and when the exactly-once sink's output becomes visible);
    # 0 turns checkpoints off.
    checkpoint_interval_ms: int = 2000
    # Unaligned barriers overtake the records queued before them, so no input waits while the barrier of another
    # input (transactions and labels join in the feature functions) catches up. Aligned, the transactions produced
    # in the 200 ms before each checkpoint waited: p99 of those 552-629 ms against 163-289 unaligned at 2,000/s.
    # State stays exactly-once either way; the checkpoint also holds the overtaken records.
    unaligned_checkpoints: bool = True
    # Where jobs keep their checkpoints, one folder per job name; a job started with --restore latest resumes from the
    # newest one there.
    checkpoint_dir: str = ".run/flink-checkpoints"
    # Event-time windows emit a row once a watermark passes it, so the interval is a latency floor; 50 ms and the
    # 20 ms bundle time below are what the tests and `make bench` have always run with.
    auto_watermark_interval_ms: int = 50
    # How long a network buffer between operators may wait to fill before it is sent (Flink's default: 100 ms,
    # paid at every keyBy/exchange of the job's graph: at 500 events/s, 5 ms halved p99 from source to scorer).
    buffer_timeout_ms: int = 5
    # Rows a Python UDF worker takes per bundle (python.fn-execution.bundle.size); fraud.bundle_size overrides it
    # for the fraud job.
    bundle_size: int = 1000
    # How long a Python UDF bundle may wait to fill (python.fn-execution.bundle.time); fraud.bundle_time_ms
    # overrides it for the fraud job.
    bundle_time_ms: int = 20
    # Rows per Arrow batch handed to a pandas UDF (python.fn-execution.arrow.batch.size).
    arrow_batch_size: int = 1000
    # The maximum heap (-Xmx) of a job's local JVM (the MiniCluster's); a JVM_ARGS already in the environment
    # replaces this and jvm_opts.
    jvm_heap: str = "1g"
    # Extra options for the JVM that runs the operators (the MiniCluster's, a cluster's TaskManagers). C2 inlines a
    # whole chain of Flink operators into one method and recompiles those 50 kB methods for minutes (JFR: 13 s of
    # compilation in 20 s, 0.5-0.9 of our 2 cores for the job's first minute). Shallower inlining: 300k drains used
    # 1.56-1.92 CPU s per 10k events (6 runs) against 2.15-2.24 (3 runs). infra/k8s repeats these options.
    jvm_opts: str = "-XX:MaxInlineLevel=4 -XX:InlineSmallCode=500"
    # Where a local job's Flink logs go (FLINK_LOG_DIR, unless that is already set).
    log_dir: str = ".run/logs/flink"
    # Where `infra/flink_jars.py` puts the Kafka connector; jobs add every jar found there to `pipeline.jars`.
    jars_dir: str = ".cache/flink-jars"
    # The JobManager REST endpoint (host:port or URL) where the dashboard reads the fraud job's state when the job
    # runs on a cluster (docker-compose sets jobmanager:8081); empty: the MiniCluster's on local_rest_port. Only the
    # dashboard reads it: jobs are submitted to a cluster with `flink run`, not through this setting.
    jobmanager: str = ""
    # The REST endpoint of a job's local MiniCluster, on loopback: where the dashboard and the tests read the job's
    # state and restart count (0: a random port). `make run` starts the sentiment job with
    # STREAMSCORE_FLINK__LOCAL_REST_PORT set to sentiment_rest_port. Not used on a cluster (its own rest.port).
    local_rest_port: int = 8091
    # The sentiment job's MiniCluster REST port under `make run` (see local_rest_port).
    sentiment_rest_port: int = 8092
    # The standalone session cluster's JobManager REST port (`make cluster-up`, `make run CLUSTER=1`).
    cluster_rest_port: int = 8081
    # The standalone cluster's JobManager RPC port.
    cluster_rpc_port: int = 6123
    # Where clients and TaskManagers reach the standalone cluster's JobManager (docker-compose: jobmanager).
    cluster_host: str = "127.0.0.1"
    # Where the standalone cluster's JVMs listen (docker-compose: 0.0.0.0, every interface).
    cluster_bind_host: str = "127.0.0.1"
    # The fraud job's Kafka consumer group (its committed offsets are what the lag exporter reports).
    group_id: str = "streamscore-fraud"
    # Where a job without a checkpoint starts reading: earliest, latest, or the group's committed offsets.
    starting_offsets: str = "earliest"
    # The Kafka sinks' guarantee: exactly-once writes in transactions committed at each checkpoint (readers see a
    # record after its checkpoint); topics.fraud_decisions is always at-least-once.
    delivery_guarantee: str = "exactly-once"
    # The Kafka transaction timeout of the exactly-once sinks: more than the checkpoint interval plus the longest
    # expected job downtime (else the broker aborts the open transactions), at most the broker's
    # transaction.max.timeout.ms.
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
    # How far out of order records may arrive: every job's Kafka source holds its watermark this far behind the
    # newest record time of each partition; a record older than the watermark is late (topics.late and
    # topics.posts_late).
    out_of_orderness_ms: int = 5000
    # A source partition with no record for this long stops holding the watermark back (every job's sources).
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
    # How long after its transaction a fraud label is known: the replay publishes labels this late, and training
    # uses only the labels known at each moment.
    label_delay_days: float = 7.0
    # A score at or above this is decision 1 (review).
    review_threshold: float = 0.5
    # A score at or above this is decision 2 (decline); at least review_threshold.
    decline_threshold: float = 0.9
    # review_threshold and decline_threshold are rule set 0: a rule set on topics.fraud_control replaces them (and
    # adds hard rules) while the job runs. At open() each scoring subtask reads that topic to its end before it
    # decides its first batch, waiting at most this long (ms); then it decides with what it has read so far.
    rules_startup_wait_ms: int = 10000
    # Thread mode runs the job's Python functions inside the JVM (pemja) instead of worker processes fed over
    # gRPC: at 2,000 events/s p50 350-672 ms against 456-829 ms in process mode (four runs each; p99 is within
    # the noise). Its functions are numpy and our C++ kernels; the sentiment job (torch in the worker) stays on
    # flink.execution_mode.
    execution_mode: str = "thread"
    # The scoring implementation: native (C++/LibTorch, built by `make native`) or reference (numpy only, the same
    # model files).
    scorer: str = "native"
    # Rows per call of the scoring UDF (Flink's bundle and Arrow batch size for this job; flink.bundle_time_ms still
    # closes a bundle, so latency at a few thousand events/s is unchanged). The UDF runs in a Python worker (pandas
    # UDFs have no thread mode) and the operator waits for each bundle's results: 5,000 against 1,000, two 300k
    # drains, 8.4k/7.8k and 13.6k/10.7k events/s, 1.72/1.92 and 1.18/1.31 CPU s per 10k events.
    bundle_size: int = 5000
    # How long the scoring UDF's bundle may wait to fill (flink.bundle_time_ms for this job): every transaction
    # waits for its bundle to close on the live clock, while a drain fills bundle_size first. 5 ms (with
    # replay.linger_ms 5) keeps the live 2,000/s p99 near issue 22's 100 ms (20 ms: ~150 ms), but the job then spends
    # 0.75-0.8 of a core at 2,000/s against 0.57-0.6 at 20 ms, which the sentiment job beside it on 2 cores misses:
    # its live p99 1.2-2.7 s against 0.82-0.99 s at 20 ms (issue 28, docs/benchmarks.md 2026-12-08).
    bundle_time_ms: int = 5
    # Where the fraud model's versions live (`make train-fraud` writes <model_dir>/<version>/ and LATEST).
    model_dir: str = "artifacts/models/fraud"
    # The version folder the job scores with. "latest" follows the model registry (<model_dir>/registry.json, `make
    # promote`): its production version, or the one LATEST names while there is no registry file, and a promotion
    # or rollback is picked up while the job runs. A version name pins that version (no hot swap).
    model_version: str = "latest"
    # How often (ms) the fraud scoring function looks at the registry file for a new production version (one
    # stat() per look, at a batch); the new version loads beside the old one and decides from the next batch on.
    registry_poll_ms: int = 1000
    # Where the native scorer runs the MLP: auto (CUDA when a GPU is visible, else the CPU), cpu or cuda.
    device: str = "auto"
    # What runs the MLP on the CPU: auto (our kernels at the best ISA this CPU has), avx512, avx2 or generic (our
    # kernels at that ISA), or aten (LibTorch).
    cpu_kernel: str = "auto"
    # On a GPU, batches smaller than this are scored on the CPU: a CUDA call costs about 120 us whatever its size
    # (H100: 119 us at batch 1, 151 us at 64) against about 7 us + 1 us per event on one CPU core, so the GPU only
    # wins from about 128 events. 0 sends every batch to the GPU.
    cuda_min_batch: int = 128
    # A transaction's amount above this is a dead letter ("amount-too-large"); at most float32's largest value.
    max_amount: float = 1_000_000.0


@dataclass(frozen=True)
class SentimentConfig:
    # The post scorer: model (our TorchScript model through the native runtime) or vader (a lexicon, no model).
    scorer: str = "model"
    # Where the sentiment model's versions live (`make train-sentiment` writes <model_dir>/<version>/ and LATEST).
    model_dir: str = "artifacts/models/sentiment"
    # The version folder the job scores with; "latest" reads <model_dir>/LATEST.
    model_version: str = "latest"
    # Where the model runs: auto (CUDA when a GPU is visible, else the CPU), cpu or cuda.
    device: str = "auto"
    # Tokens of a post the model reads (at most the model's own limit and 512); the rest is cut off.
    max_length: int = 128
    # Torch intra-op threads for the scorer inside a Flink Python worker; 0 leaves torch's default (one per core).
    threads: int = 0
    # A batch of fewer posts than this runs on one torch thread (0: always `threads`). On the live clock a batch is
    # a post or two, which a second thread barely speeds up (int8, one post: 334 posts/s on two threads, 267 on one,
    # for 1.56 times the CPU) while it takes CPU from the fraud job beside it; a backlog's batches of 1,000 run on
    # every thread (554 against 299 posts/s). Well above a live batch: a job that fell behind for a second or two
    # catches up on one thread, since two on a busy machine wait for each other (with 32, live p99 1.5 s in one run
    # against 0.95 s on one thread).
    single_thread_below: int = 256
    # Which of the version's traced models the job runs: "artifact" (model.pt, the one training chose: the fastest
    # within train's quant_tolerance of fp32's accuracy on its one held-out split), or fp32, bf16 or int8
    # (model_<precision>.pt). A choice other than the artifact's is named in every score's model version
    # ("<version>+int8"). int8 by default: one post costs 3.7 ms of CPU against fp32's 11 (one thread, a VM without
    # AMX), which the job needs to keep up beside the fraud job on 2 cores, and in 5-fold cross-validation it is
    # 0.3 points of TweetEval macro-recall below fp32 (0.653 against 0.656) and 0.8 points on SST-2 dev (87.1
    # against 87.9%, docs/sentiment.md). "artifact" restores training's choice.
    precision: str = "int8"
    # The length of the sentiment job's tumbling trend windows (topics.sentiment_trends).
    window_minutes: int = 1
    # The sentiment job's checkpoint interval; 0 takes flink.checkpoint_interval_ms. Its scores reach the dashboard,
    # a read_committed reader, at the checkpoint after they are scored, so every post waits for the next one: at
    # 2,000 ms that wait was p50 ~1 s and p99 ~2 s of the live latency. 250 ms cost more CPU than it saved in
    # waiting (live p99 2.2-3.3 s beside the fraud job against 1.2 s at 500 ms, one run each).
    checkpoint_interval_ms: int = 500


@dataclass(frozen=True)
class ReplayConfig:
    # The transactions the fraud replay sends and training and the profiles are built from (CSV, gzip allowed).
    fraud_csv: str = "../shared/data/fraud/transactions_2018-04-01_2018-06-30.csv.gz"
    # The posts the sentiment replay sends and the sentiment model is trained on.
    sentiment_dir: str = "../shared/data/sentiment"
    # Transactions per second the fraud replay sends (0: as fast as it can).
    rate: float = 2000.0
    # Event time runs this many times faster than wall time, keeping the data's gaps; 0: ignore the gaps and send
    # as fast as `rate` allows.
    speedup: float = 0.0
    # How long the replays' producer holds messages to batch them; on the live clock every transaction waits up to
    # this long before the broker has it. librdkafka sends one produce request per partition (librdkafka#1700): at
    # 2,000 transactions/s with their labels over 8 partitions, 5 ms meant about 900 requests/s and the broker spent
    # 0.2-0.3 of a core on them (20 ms: 0.08-0.12), yet 5 ms with fraud.bundle_time_ms 5 took the live 2,000/s p99
    # from 149 to 114 ms and 10/s from 93 to 69 (one run each). 20 ms, with fraud.bundle_time_ms 20, would leave the
    # sentiment job beside them the CPU it needs to keep its live p99 under a second (issue 28).
    linger_ms: int = 5
    # A paced replay sleeps only once it is this far ahead of its schedule, sending what is due in between at once:
    # a sleep per message at 2,000/s was a wake-up every 0.5 ms.
    pace_slack_ms: float = 2.0
    # Posts per second the posts replay sends under `make run`.
    posts_rate: float = 50.0
    # The fraud replay's clock on the command line (`make run`, docker-compose): "live" stamps every transaction
    # and label with the wall clock when it is sent; "replay" keeps the compressed historical clock of the CSV
    # (benchmarks, backfills; also `--clock replay`, implied by --rebase, --speedup and the late/out-of-order
    # injection). Library callers (tests, infra/bench) choose with ReplayOptions.live.
    fraud_clock: str = "live"


@dataclass(frozen=True)
class QualityConfig:
    # The rolling window of the live-quality metrics (pipelines/quality.py): the labelled transactions whose event
    # time lies within this many days of the newest labelled transaction.
    window_days: float = 7.0
    # Seconds between two recomputations of the metrics over the window (gauges and topics.model_quality snapshots).
    refresh_s: float = 5.0
    # A score waits for its label fraud.label_delay_days plus this margin of event time (the newest score's event
    # time), then it is dropped (expired); a label that came before its score waits this margin for it.
    expiry_margin_days: float = 1.0
    # At most this many scores wait for their labels (the oldest go first, counted as expired): the memory bound.
    max_pending_scores: int = 2_000_000
    # At most this many labels wait for their scores (the oldest go first, counted as expired).
    max_pending_labels: int = 500_000
    # At most this many labelled transactions per version in the window (the newest are kept): at a few thousand
    # transactions per second of the live clock seven days would not fit in memory nor recompute in refresh_s.
    max_window_labels: int = 1_000_000
    # FraudModelLiveAPDrop fires when the production version's live average precision stays below this fraction of
    # its training average precision (exported as streamscore_quality_ap_alert_fraction, so the rule has no copy).
    ap_alert_fraction: float = 0.7
    # ... and only while its window holds at least this many labelled transactions
    # (streamscore_quality_ap_alert_min_labels): AP over a handful of frauds is noise.
    ap_alert_min_labels: int = 5000


@dataclass(frozen=True)
class MetricsConfig:
    # The address every /metrics endpoint binds (pipelines/metrics.py serve): loopback by default; docker-compose
    # sets 0.0.0.0 so that Prometheus in another container can scrape it.
    host: str = "127.0.0.1"
    # The fraud replay's /metrics port (pipelines/replay/fraud.py). Each process that `make run` starts has its own
    # port (a second process on a taken port serves nothing); 0 turns an endpoint off.
    producer_port: int = 9401
    # A job's Python workers serve `job_port` (udfs/); `make run` starts the sentiment job with
    # STREAMSCORE_METRICS__JOB_PORT set to `sentiment_job_port`, so the two jobs' workers do not compete for one port.
    job_port: int = 9402
    # The dashboard server's /metrics port.
    dashboard_port: int = 9403
    # The consumer-lag exporter's /metrics port (infra/lag_exporter.py).
    lag_exporter_port: int = 9404
    # The sentiment job's Python workers' /metrics port under `make run` (see job_port).
    sentiment_job_port: int = 9405
    # The posts replay's /metrics port (pipelines/replay/posts.py).
    posts_producer_port: int = 9406
    # The live-quality service's /metrics port (pipelines/quality.py).
    quality_port: int = 9407
    # Flink's own metrics (its PrometheusReporter: job state, numRestarts, checkpoints, records per task). The fraud
    # job's: its local MiniCluster's reporter (jobs/common.py), or on the standalone cluster (`make run CLUSTER=1`)
    # the JobManager's, the TaskManager taking the next port. 0: no reporter (the tests' jobs).
    flink_reporter_port: int = 9249
    # The sentiment job's MiniCluster reporter: `make run` starts that job with STREAMSCORE_METRICS__FLINK_REPORTER_PORT
    # set to this (as with job_port); apart from flink_reporter_port + 1, which a cluster's TaskManager takes.
    sentiment_flink_reporter_port: int = 9251
    # The port of the Prometheus server that `make run` starts on 127.0.0.1 (scrapes the endpoints above).
    prometheus_port: int = 9090


@dataclass(frozen=True)
class DashboardConfig:
    # The address the dashboard's HTTP and WebSocket server binds: loopback by default.
    host: str = "127.0.0.1"
    # The dashboard's HTTP and WebSocket port.
    port: int = 8765
    # The token that logs in: typed into the login page (which sets a session cookie), or sent by scripts as an
    # Authorization: Bearer header; never in a URL. Off loopback the server refuses to start with the default, an
    # empty, a well-known or a short (under 16 characters) token.
    token: str = "change-me"
    # Seconds a login lasts: the session cookie's Max-Age and the server-side expiry of its session id.
    session_ttl_s: float = 43200.0
    # A PEM certificate (chain) file: when set with tls_key the dashboard serves https and wss only, and its
    # session cookie is marked Secure.
    tls_cert: str = ""
    # The PEM private key file of tls_cert.
    tls_key: str = ""
    # Browser origins allowed on the WebSocket besides the server's own (comma-separated in a variable).
    allowed_origins: tuple[str, ...] = ("http://127.0.0.1:8765", "http://localhost:8765")
    # Snapshots queued per client; when full, the newest queued snapshot is replaced (a slow client sees fewer).
    send_queue: int = 64
    # The shift marker: a topic's newest trend window whose mean positivity differs by more than this from the
    # count-weighted mean of its windows in the hour before it is marked on the dashboard.
    shift_threshold: float = 0.15


@dataclass(frozen=True)
class RunConfig:
    # The folder (relative to the repo root unless absolute) of the pid files, logs, Redis, Prometheus and
    # standalone-cluster state of the processes the make targets start.
    dir: str = ".run"


@dataclass(frozen=True)
class Config:
    """Every section. The comment above a field, here and in each section's class, is its documentation:
    pipelines/configdoc.py makes docs/configuration.md from them (`make docs`)."""

    # The Kafka broker: an external one, or the local KRaft broker that `make run` starts.
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    # Redis, where the fraud job looks up customer and terminal profiles.
    redis: RedisConfig = field(default_factory=RedisConfig)
    # The Kafka topic names every job, replay, reader and test uses.
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    # Settings of every Flink job: parallelism, checkpoints, Python workers, JVM, Kafka source and sinks.
    flink: FlinkConfig = field(default_factory=FlinkConfig)
    # The fraud job: event time, input limits, bounded state, the scorer and its model, decision thresholds.
    fraud: FraudConfig = field(default_factory=FraudConfig)
    # The sentiment job: its scorer, model and trend windows.
    sentiment: SentimentConfig = field(default_factory=SentimentConfig)
    # The replays that feed the pipeline from the data sets, and the producer settings they use.
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    # Live model quality from the delayed labels (pipelines/quality.py): window, refresh, memory bounds, alert.
    quality: QualityConfig = field(default_factory=QualityConfig)
    # The Prometheus /metrics endpoints: where they bind and one port per process.
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # The live dashboard server.
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    # Where the background processes of `make run`, `make dashboard-up` and the other `*-up` targets keep their pid
    # files (pids/), logs (logs/) and state; `make stop` stops every process with a pid file there.
    run: RunConfig = field(default_factory=RunConfig)

    def path(self, value: str) -> Path:
        """Resolves a configured path relative to the project root."""
        p = Path(value)
        return p if p.is_absolute() else ROOT / p

    def sentiment_checkpoint_interval_ms(self) -> int:
        """The sentiment job's checkpoint interval: sentiment.checkpoint_interval_ms, or flink's where that is 0."""
        return self.sentiment.checkpoint_interval_ms or self.flink.checkpoint_interval_ms

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
    ("replay", "fraud_clock"): {"live", "replay"},
    ("sentiment", "device"): {"auto", "cpu", "cuda"},
    ("kafka", "security_protocol"): {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"},
    ("kafka", "sasl_mechanism"): {"SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"},
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


def _merge(cfg: Config, data: Mapping[str, Any], source: str,
           names: Mapping[tuple[str, str], str] | None = None) -> Config:
    """`names` maps (section, key) to the environment variable it came from, so an error names the variable."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    names = names or {}

    def origin(section: str, key: str | None = None) -> str:
        if key is None:  # a section: the first variable that named it
            key = next((k for (sec, k) in names if sec == section), None)
        name = names.get((section, key)) if key is not None else None
        return f"{source}: {name}" if name else source

    sections = {}
    hints = typing.get_type_hints(Config)
    for section, values in data.items():
        if section not in hints:
            raise ConfigError(f"{origin(section)}: unknown section {section!r} (known: {', '.join(sorted(hints))})")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: section {section!r} must be a mapping")
        current = getattr(cfg, section)
        sec_hints = typing.get_type_hints(type(current))
        changes = {}
        for key, value in values.items():
            if key not in sec_hints:
                raise ConfigError(
                    f"{origin(section, key)}: unknown key {section}.{key} (known: {', '.join(sorted(sec_hints))})")
            where = f"{origin(section, key)}: {section}.{key}"
            coerced = _coerce(value, sec_hints[key], where)
            allowed = _CHOICES.get((section, key))
            if allowed and coerced not in allowed:
                raise ConfigError(f"{where}: {coerced!r} is not one of {sorted(allowed)}")
            changes[key] = coerced
        sections[section] = dataclasses.replace(current, **changes)
    return dataclasses.replace(cfg, **sections)


# The conventional names a Kafka or Redis user already has set, and the FLINK_* ones docker-compose sets; a
# non-empty one wins over STREAMSCORE_<SECTION>__<KEY>.
ENV_ALIASES: dict[str, tuple[str, str]] = {
    "KAFKA_BOOTSTRAP": ("kafka", "bootstrap"),
    "KAFKA_HOME": ("kafka", "home"),
    "REDIS_URL": ("redis", "url"),
    # The standalone Flink cluster's (infra/flink_cluster.py; docker-compose sets the hosts).
    "FLINK_REST_PORT": ("flink", "cluster_rest_port"),
    "FLINK_RPC_PORT": ("flink", "cluster_rpc_port"),
    "FLINK_JOBMANAGER_HOST": ("flink", "cluster_host"),
    "FLINK_BIND_HOST": ("flink", "cluster_bind_host"),
}


def env_name(section: str, key: str) -> str:
    """The variable that sets `section.key`: STREAMSCORE_<SECTION>__<KEY>."""
    return f"{ENV_PREFIX}{section.upper()}__{key.upper()}"


def _from_env(environ: Mapping[str, str]) -> tuple[dict[str, dict[str, str]], dict[tuple[str, str], str]]:
    """The settings in `environ` by section and key, and the variable each came from."""
    out: dict[str, dict[str, str]] = {}
    names: dict[tuple[str, str], str] = {}
    for name, value in environ.items():
        if name == "STREAMSCORE_CONFIG" or not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):]
        if "__" not in rest:
            raise ConfigError(f"environment: {name} is not of the form {ENV_PREFIX}<SECTION>__<KEY> (nor "
                              f"STREAMSCORE_CONFIG)")
        section, key = rest.lower().split("__", 1)
        out.setdefault(section, {})[key] = value
        names[(section, key)] = name
    for name, (section, key) in ENV_ALIASES.items():
        if environ.get(name):
            out.setdefault(section, {})[key] = environ[name]
            names[(section, key)] = name
    return out, names


def _validate(cfg: Config) -> Config:
    f = cfg.fraud
    if not 0.0 <= f.review_threshold <= f.decline_threshold <= 1.0:
        raise ConfigError("fraud: need 0 <= review_threshold <= decline_threshold <= 1")
    if f.state_ttl_ms < 0 or f.max_rows_ahead < 1:
        raise ConfigError(f"fraud: state_ttl_ms must be >= 0 and max_rows_ahead >= 1, not {f.state_ttl_ms} and "
                          f"{f.max_rows_ahead}")
    if f.rules_startup_wait_ms < 0:
        raise ConfigError(f"fraud: rules_startup_wait_ms must be >= 0, not {f.rules_startup_wait_ms}")
    if f.registry_poll_ms < 1:
        raise ConfigError(f"fraud: registry_poll_ms must be >= 1, not {f.registry_poll_ms}")
    if f.cuda_min_batch < 0 or f.bundle_size < 1 or f.bundle_time_ms < 1:
        raise ConfigError("fraud: bundle_size and bundle_time_ms must be >= 1 and cuda_min_batch >= 0")
    if not 0.0 < f.max_amount <= 3.4028234663852886e38:
        raise ConfigError(f"fraud: max_amount must be > 0 and at most float32's largest value, not {f.max_amount}")
    s = cfg.sentiment
    if (not 1 <= s.max_length <= 512 or s.threads < 0 or s.window_minutes < 1 or s.checkpoint_interval_ms < 0
            or s.single_thread_below < 0):
        raise ConfigError("sentiment: need 1 <= max_length <= 512, threads >= 0, window_minutes >= 1, "
                          "checkpoint_interval_ms >= 0 and single_thread_below >= 0")
    if s.precision not in ("artifact", "fp32", "bf16", "int8"):
        raise ConfigError(f"sentiment: precision must be artifact, fp32, bf16 or int8, not {s.precision!r}")
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
    if cfg.kafka.replication_factor < 0 or cfg.kafka.min_insync_replicas < 0:
        raise ConfigError("kafka: replication_factor and min_insync_replicas must be >= 0 (0: derived)")
    if cfg.kafka.replication_factor and cfg.kafka.min_insync_replicas > cfg.kafka.replication_factor:
        raise ConfigError("kafka: min_insync_replicas must not exceed replication_factor")
    if cfg.kafka.security_protocol.startswith("SASL_") and not cfg.kafka.sasl_username:
        raise ConfigError(f"kafka: security_protocol {cfg.kafka.security_protocol} needs sasl_username")
    if not cfg.metrics.host.strip():
        raise ConfigError("metrics: host must not be empty (127.0.0.1 for loopback, 0.0.0.0 for every interface)")
    for f in dataclasses.fields(cfg.metrics):
        port = getattr(cfg.metrics, f.name)
        if f.name.endswith("_port") and not 0 <= port <= 65535:
            raise ConfigError(f"metrics: {f.name} must be a port number 0-65535 (0: no endpoint), not {port}")
    q = cfg.quality
    if not (q.window_days > 0 and q.refresh_s > 0 and q.expiry_margin_days >= 0 and 0 <= q.ap_alert_fraction <= 1
            and min(q.max_pending_scores, q.max_pending_labels, q.max_window_labels) >= 1
            and q.ap_alert_min_labels >= 0):
        raise ConfigError("quality: need window_days > 0, refresh_s > 0, expiry_margin_days >= 0, "
                          "0 <= ap_alert_fraction <= 1, max_* >= 1 and ap_alert_min_labels >= 0")
    if cfg.dashboard.session_ttl_s <= 0:
        raise ConfigError(f"dashboard: session_ttl_s must be > 0, not {cfg.dashboard.session_ttl_s}")
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
    env, names = _from_env(environ)
    if env:
        cfg = _merge(cfg, env, source="environment", names=names)
    return _validate(cfg)
