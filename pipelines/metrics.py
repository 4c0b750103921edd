"""Every Prometheus metric streamscore exports, in one place.

Names carry the ``streamscore_`` prefix and the ``_total`` / ``_seconds`` suffixes; histograms have explicit
buckets chosen for the latencies we care about (a fraud decision well under a second). Producers, job functions, the
scorer wrapper and the dashboard import from here, so a metric is defined exactly once.

Every process serves its numbers with :func:`serve` on ``metrics.host`` (``STREAMSCORE_METRICS__HOST``: 127.0.0.1 by
default, 0.0.0.0 in docker-compose so Prometheus can reach the containers).

A PyFlink job can be several processes. On a cluster each task slot has its own Python worker process, which runs
the Python functions of that slot (the decode/route functions, the scoring UDF, the unknown-label counter), and a
worker replaced after a failover is a new process; on the local MiniCluster PyFlink runs them inside the launcher
process ("loopback"). The scoring UDF and the unknown-label counter call ``serve(metrics.job_port)`` in ``open()``
(jobs/fraud_job.py gives the routers port 0): the first process to get there binds the port, the others skip (an
``OSError`` on bind is expected and ignored). So that the one endpoint still reports every
worker, a job runs with prometheus_client's multiprocess mode: the launcher sets ``PROMETHEUS_MULTIPROC_DIR`` to a
fresh, empty folder (infra/jobrunner.py, infra/stack.py, a tmpfs in docker-compose) before the workers start,
every worker writes its values to memory-mapped files there, and the process that holds the port serves the sum over
all of them (tests/integration/test_metrics_endpoints.py runs two workers). Counters and histograms of a worker that
died stay in the sum, so they do not go backwards while the job runs; the folder is emptied when the job starts
again, which Prometheus sees as an ordinary counter reset. Without the variable (producers, dashboard, lag exporter)
every process serves its own default registry.
"""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client import values as _values

PREFIX = "streamscore"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
INFERENCE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)

EVENTS_IN = Counter(f"{PREFIX}_events_in_total", "Records read, per component and topic",
                    ["component", "topic"])
EVENTS_OUT = Counter(f"{PREFIX}_events_out_total", "Records written, per component and topic",
                     ["component", "topic"])
LATE_EVENTS = Counter(f"{PREFIX}_late_events_total", "Events behind the watermark, sent to the late topic",
                      ["component", "reason"])
DEAD_LETTERS = Counter(f"{PREFIX}_dead_letters_total", "Records sent to the dead-letter topic",
                       ["component", "reason"])
PRODUCE_ERRORS = Counter(f"{PREFIX}_produce_errors_total", "Kafka delivery failures", ["component", "topic"])
KAFKA_CLIENT_RESETS = Counter(f"{PREFIX}_kafka_client_resets_total",
                              "Kafka clients replaced because they had no broker left, or only failed requests, "
                              "for 15 s (librdkafka#5301)", ["component", "client"])
CSV_ROWS_REJECTED = Counter(f"{PREFIX}_csv_rows_rejected_total", "Malformed source-file rows, by reason",
                            ["source", "reason"])
PROFILE_LOOKUPS = Counter(f"{PREFIX}_profile_lookups_total", "Profile lookups by kind and result",
                          ["kind", "result"])
UNKNOWN_LABELS = Counter(f"{PREFIX}_unknown_labels_total",
                         "Labels whose transaction the job has not scored at that terminal in the 30 days before the "
                         "label; they do not count toward terminal risk", [])
DUPLICATE_LABELS = Counter(f"{PREFIX}_duplicate_labels_total",
                           "Labels for a transaction an earlier label already counts for; they do not count toward "
                           "terminal risk", [])

SCORER_BATCH_SIZE = Histogram(f"{PREFIX}_scorer_batch_size", "Events per scorer call", ["model", "backend"],
                              buckets=BATCH_BUCKETS)
INFERENCE_SECONDS = Histogram(f"{PREFIX}_inference_seconds", "Scorer call duration", ["model", "backend"],
                              buckets=INFERENCE_BUCKETS)
END_TO_END_SECONDS = Histogram(f"{PREFIX}_end_to_end_latency_seconds",
                               "Producer timestamp to score, wall clock", ["pipeline"], buckets=LATENCY_BUCKETS)


def multiprocess_mode() -> bool:
    """True when prometheus_client keeps values in PROMETHEUS_MULTIPROC_DIR (decided when it was first imported)."""
    return _values.ValueClass is not _values.MutexValue


class _MultiprocessInfo:
    """``Info`` for multiprocess mode, where prometheus_client's own Info is not shared between processes: the same
    series, ``<name>_info{key="value",...} 1``, written as a gauge (the text format exposes an Info as that gauge)."""

    def __init__(self, name: str, documentation: str):
        self._name, self._doc = f"{name}_info", documentation

    def info(self, val: dict[str, str]) -> None:
        gauge = Gauge(self._name, self._doc, sorted(val), registry=None, multiprocess_mode="max")
        gauge.labels(**val).set(1)


MODEL_INFO = (_MultiprocessInfo(f"{PREFIX}_model", "The model serving each pipeline") if multiprocess_mode()
              else Info(f"{PREFIX}_model", "The model serving each pipeline"))

MODEL_SWAPS = Counter(f"{PREFIX}_model_swaps_total",
                      "Production-version changes seen by a running job: swapped (the new version decides from the "
                      "next batch) or refused (its feature list differs from the job's, or it does not load; the "
                      "current version keeps serving)", ["model", "result"])
MODEL_SERVING = Gauge(f"{PREFIX}_model_serving", "1 for the version that decides in a running job, 0 for one it "
                      "served before", ["model", "version"], multiprocess_mode="mostrecent")

# The fraud job's run-time rule sets (pipelines/rules.py): every scoring subtask reads every control record, so at
# parallelism p each record counts p times.
CONTROL_RECORDS = Counter(f"{PREFIX}_control_records_total",
                          "Control-topic records seen by a scoring subtask: applied (the new rule set decides from "
                          "the next batch), rejected (not a valid rule set: dead-lettered) or stale (version not "
                          "above the one in force: dead-lettered)", ["result"])
CONTROL_ERRORS = Counter(f"{PREFIX}_control_errors_total",
                         "Control-topic trouble: startup (topic or broker missing, or not read to its end in "
                         "fraud.rules_startup_wait_ms), consume, evaluate (a rule names a column the job lacks), "
                         "dead-letter", ["stage"])
RULE_SET_VERSION = Gauge(f"{PREFIX}_rule_set_version", "The rule set version deciding in the fraud job (0: the "
                         "config's thresholds); the highest over its scoring subtasks", [], multiprocess_mode="max")

EVENT_TIME_LAG_SECONDS = Gauge(f"{PREFIX}_event_time_lag_seconds",
                               "Now minus the newest event time seen in an output topic", ["topic"],
                               multiprocess_mode="mostrecent")
CONSUMER_LAG = Gauge(f"{PREFIX}_consumer_lag", "Log-end offset minus committed offset",
                     ["group", "topic", "partition"], multiprocess_mode="mostrecent")
CONSUMER_COMMITTED = Gauge(f"{PREFIX}_consumer_committed_offset", "Committed offset",
                           ["group", "topic", "partition"], multiprocess_mode="mostrecent")
LOG_END_OFFSET = Gauge(f"{PREFIX}_log_end_offset", "Log-end (high-watermark) offset", ["topic", "partition"],
                       multiprocess_mode="mostrecent")
LAG_EXPORTER_ERRORS = Counter(f"{PREFIX}_lag_exporter_errors_total",
                              "Lag-exporter poll failures (broker down, missing group, undecodable record), by stage",
                              ["stage"])
LAG_EXPORTER_POLL_SECONDS = Histogram(f"{PREFIX}_lag_exporter_poll_seconds", "Duration of one lag-exporter poll",
                                      [], buckets=LATENCY_BUCKETS)
LAG_EXPORTER_LAST_SUCCESS = Gauge(f"{PREFIX}_lag_exporter_last_success_timestamp_seconds",
                                  "Unix time of the lag exporter's last poll that reached the broker",
                                  multiprocess_mode="max")

DASHBOARD_CLIENTS = Gauge(f"{PREFIX}_dashboard_clients", "Connected dashboard WebSocket clients",
                          multiprocess_mode="livesum")
DASHBOARD_MESSAGES = Counter(f"{PREFIX}_dashboard_messages_sent_total", "Updates pushed to browsers", [])
DASHBOARD_COALESCED = Counter(f"{PREFIX}_dashboard_coalesced_total",
                              "Updates merged because a client's send queue was full", [])
DASHBOARD_DISCONNECTS = Counter(f"{PREFIX}_dashboard_disconnects_total", "Clients dropped by the server",
                                ["reason"])
DASHBOARD_REJECTED = Counter(f"{PREFIX}_dashboard_rejected_total", "Connections refused at the handshake",
                             ["reason"])
DASHBOARD_BAD_MESSAGES = Counter(f"{PREFIX}_dashboard_bad_messages_total",
                                 "Client messages answered with an error frame", ["reason"])
SENTIMENT_SHIFT = Gauge(f"{PREFIX}_dashboard_sentiment_shift",
                        "A topic's newest trend window's mean positivity minus the mean of its previous hour",
                        ["topic"], multiprocess_mode="mostrecent")
SENTIMENT_SHIFT_THRESHOLD = Gauge(f"{PREFIX}_dashboard_sentiment_shift_threshold",
                                  "dashboard.shift_threshold: the |shift| the dashboard marks", [],
                                  multiprocess_mode="mostrecent")

# Live model quality from the delayed labels (pipelines/quality.py): one series per model version and the stage the
# registry gives it, recomputed over the rolling window every quality.refresh_s. NaN where a value is undefined (one
# class only in the window, no score over a threshold). A version's series go when it has no labels in the window or
# its stage changes.
_VERSION = ["model", "version", "stage"]
LIVE_AUC_ROC = Gauge(f"{PREFIX}_model_live_auc_roc", "AUC ROC of a model version over the labelled window", _VERSION)
LIVE_AVERAGE_PRECISION = Gauge(f"{PREFIX}_model_live_average_precision",
                               "Average precision of a model version over the labelled window", _VERSION)
LIVE_PRECISION = Gauge(f"{PREFIX}_model_live_precision", "Precision of score >= the review or decline threshold "
                       "over the labelled window", [*_VERSION, "threshold"])
LIVE_RECALL = Gauge(f"{PREFIX}_model_live_recall", "Recall of score >= the review or decline threshold over the "
                    "labelled window", [*_VERSION, "threshold"])
LIVE_CARD_PRECISION = Gauge(f"{PREFIX}_model_live_card_precision_at_100",
                            "Mean over the window's days of the share of the day's 100 highest-scored cards that had "
                            "a fraud", _VERSION)
LIVE_LABELS = Gauge(f"{PREFIX}_model_live_labels", "Labelled transactions in the window scored by a model version",
                    _VERSION)
LIVE_FRAUDS = Gauge(f"{PREFIX}_model_live_frauds", "Frauds among them", _VERSION)
TRAINING_AVERAGE_PRECISION = Gauge(f"{PREFIX}_model_training_average_precision",
                                   "Average precision of a model version on its training test split (metrics.json)",
                                   _VERSION)
QUALITY_AP_ALERT_FRACTION = Gauge(f"{PREFIX}_quality_ap_alert_fraction",
                                  "quality.ap_alert_fraction: FraudModelLiveAPDrop fires below this fraction of the "
                                  "training AP", [])
QUALITY_AP_ALERT_MIN_LABELS = Gauge(f"{PREFIX}_quality_ap_alert_min_labels",
                                    "quality.ap_alert_min_labels: the labels in the window FraudModelLiveAPDrop needs",
                                    [])
QUALITY_LABELS = Counter(f"{PREFIX}_quality_labels_total",
                         "Labels read by the quality service: joined (to a score), pending (waiting for its score), "
                         "expired (its score never came), duplicate (its transaction already joined), invalid (not "
                         "0 or 1)", ["result"])
QUALITY_SCORES = Counter(f"{PREFIX}_quality_scores_total",
                         "Scores read by the quality service: stored (waiting for a label), duplicate, expired (no "
                         "label came in time)", ["result"])
QUALITY_UNDECODABLE = Counter(f"{PREFIX}_quality_undecodable_total",
                              "Records the quality service could not decode (skipped), by topic and reason",
                              ["topic", "reason"])
QUALITY_LAST_REFRESH = Gauge(f"{PREFIX}_quality_last_refresh_timestamp_seconds",
                             "Unix time of the quality service's last recomputation", [])

_server_lock = threading.Lock()
_servers: dict[int, object] = {}


def serve(port: int, registry: CollectorRegistry | None = None, addr: str | None = None) -> None:
    """Starts the /metrics endpoint once per process and port on `addr` (default: the config's metrics.host).

    Idempotent (Flink may open a function twice). When another process holds the port (another Python worker of the
    same job), this one skips: in multiprocess mode the holder serves this process's values too (see the module
    docstring); without it, this process's values are not served."""
    if port <= 0:
        return
    if addr is None:
        from pipelines.config import load_config

        addr = load_config().metrics.host
    if registry is None:
        registry = REGISTRY
        if multiprocess_mode():
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
    with _server_lock:
        if port in _servers:
            return
        try:
            _servers[port] = start_http_server(port, addr=addr, registry=registry)
        except OSError:
            # Another worker of the same job already serves this port; its numbers are the job's numbers.
            _servers[port] = None
