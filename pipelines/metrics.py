"""Every Prometheus metric streamscore exports, in one place.

Names carry the ``streamscore_`` prefix and the ``_total`` / ``_seconds`` suffixes; histograms have explicit
buckets chosen for the latencies we care about (a fraud decision well under a second). Producers, job functions, the
scorer wrapper and the dashboard import from here, so a metric is defined exactly once.
"""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

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
CSV_ROWS_REJECTED = Counter(f"{PREFIX}_csv_rows_rejected_total", "Malformed source-file rows, by reason",
                            ["source", "reason"])
PROFILE_LOOKUPS = Counter(f"{PREFIX}_profile_lookups_total", "Profile lookups by kind and result",
                          ["kind", "result"])
UNKNOWN_LABELS = Counter(f"{PREFIX}_unknown_labels_total", "Labels for transactions the job has not seen", [])

SCORER_BATCH_SIZE = Histogram(f"{PREFIX}_scorer_batch_size", "Events per scorer call", ["model", "backend"],
                              buckets=BATCH_BUCKETS)
INFERENCE_SECONDS = Histogram(f"{PREFIX}_inference_seconds", "Scorer call duration", ["model", "backend"],
                              buckets=INFERENCE_BUCKETS)
END_TO_END_SECONDS = Histogram(f"{PREFIX}_end_to_end_latency_seconds",
                               "Producer timestamp to score, wall clock", ["pipeline"], buckets=LATENCY_BUCKETS)
MODEL_INFO = Info(f"{PREFIX}_model", "The model serving each pipeline")

EVENT_TIME_LAG_SECONDS = Gauge(f"{PREFIX}_event_time_lag_seconds",
                               "Now minus the newest event time seen in an output topic", ["topic"])
CONSUMER_LAG = Gauge(f"{PREFIX}_consumer_lag", "Log-end offset minus committed offset",
                     ["group", "topic", "partition"])
CONSUMER_COMMITTED = Gauge(f"{PREFIX}_consumer_committed_offset", "Committed offset",
                           ["group", "topic", "partition"])
LOG_END_OFFSET = Gauge(f"{PREFIX}_log_end_offset", "Log-end (high-watermark) offset", ["topic", "partition"])
LAG_EXPORTER_ERRORS = Counter(f"{PREFIX}_lag_exporter_errors_total",
                              "Lag-exporter poll failures (broker down, missing group, undecodable record), by stage",
                              ["stage"])
LAG_EXPORTER_POLL_SECONDS = Histogram(f"{PREFIX}_lag_exporter_poll_seconds", "Duration of one lag-exporter poll",
                                      [], buckets=LATENCY_BUCKETS)
LAG_EXPORTER_LAST_SUCCESS = Gauge(f"{PREFIX}_lag_exporter_last_success_timestamp_seconds",
                                  "Unix time of the lag exporter's last poll that reached the broker")

DASHBOARD_CLIENTS = Gauge(f"{PREFIX}_dashboard_clients", "Connected dashboard WebSocket clients")
DASHBOARD_MESSAGES = Counter(f"{PREFIX}_dashboard_messages_sent_total", "Updates pushed to browsers", [])
DASHBOARD_COALESCED = Counter(f"{PREFIX}_dashboard_coalesced_total",
                              "Updates merged because a client's send queue was full", [])
DASHBOARD_DISCONNECTS = Counter(f"{PREFIX}_dashboard_disconnects_total", "Clients dropped by the server",
                                ["reason"])
DASHBOARD_REJECTED = Counter(f"{PREFIX}_dashboard_rejected_total", "Connections refused at the handshake",
                             ["reason"])
DASHBOARD_BAD_MESSAGES = Counter(f"{PREFIX}_dashboard_bad_messages_total",
                                 "Client messages answered with an error frame", ["reason"])

_server_lock = threading.Lock()
_servers: dict[int, object] = {}


def serve(port: int, registry: CollectorRegistry = REGISTRY, addr: str = "127.0.0.1") -> None:
    """Starts the /metrics endpoint once per process and port (idempotent: Flink may open a function twice)."""
    if port <= 0:
        return
    with _server_lock:
        if port in _servers:
            return
        try:
            _servers[port] = start_http_server(port, addr=addr, registry=registry)
        except OSError:
            # Another worker of the same job already serves this port; its numbers are the job's numbers.
            _servers[port] = None
