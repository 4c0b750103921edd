"""Writes infra/grafana/dashboards/streamscore.json (``python -m infra.grafana.build_dashboard``).

The dashboard is generated so that panels stay uniform; edit this file, not the JSON, and re-run it.
tests/unit/test_grafana_dashboard.py checks that the JSON is what this script writes and that every metric a
panel queries is one that pipelines/metrics.py exports (or Flink's reporter / Prometheus's `up`).
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "streamscore.json"
DATASOURCE = {"type": "prometheus", "uid": "streamscore-prometheus"}


def _target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, fmt: str = "time_series") -> dict:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref, "instant": instant,
            "range": not instant, "format": fmt}


def _panel(pid: int, title: str, targets: list[dict], x: int, y: int, *, w: int = 12, h: int = 8,
           unit: str = "short", kind: str = "timeseries", description: str = "") -> dict:
    panel = {"id": pid, "type": kind, "title": title, "description": description, "datasource": DATASOURCE,
             "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
             "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {}}
    if kind == "timeseries":
        panel["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                            "tooltip": {"mode": "multi", "sort": "desc"}}
    return panel


def _row(pid: int, title: str, y: int) -> dict:
    return {"id": pid, "type": "row", "title": title, "collapsed": False, "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
            "panels": []}


def _quantiles(metric: str, by: str, legend: str) -> list[dict]:
    return [_target(f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket[$__rate_interval])))",
                    f"p{int(q * 100)} {legend}", ref) for q, ref in ((0.5, "A"), (0.99, "B"))]


def build() -> dict:
    p: list[dict] = []
    y = 0
    p.append(_row(1, "Throughput and latency", y)); y += 1
    p.append(_panel(2, "Events in per topic", [
        _target("sum by (topic) (rate(streamscore_events_in_total[$__rate_interval]))", "{{topic}}")],
        0, y, unit="ops", description="Records read per second, by topic (producers read files, jobs read Kafka)."))
    p.append(_panel(3, "Events out per topic", [
        _target("sum by (topic) (rate(streamscore_events_out_total[$__rate_interval]))", "{{topic}}")],
        12, y, unit="ops", description="Records written per second, by topic.")); y += 8
    p.append(_panel(4, "End-to-end latency p50 / p99", _quantiles(
        "streamscore_end_to_end_latency_seconds", "pipeline", "{{pipeline}}"), 0, y, unit="s",
        description="Producer timestamp to score. The fraud SLO is p99 < 250 ms (alert FraudLatencyP99OverSLO)."))
    p.append(_panel(5, "Produce errors", [
        _target("sum by (component, topic) (rate(streamscore_produce_errors_total[$__rate_interval]))",
                "{{component}} {{topic}}")], 12, y, unit="ops")); y += 8

    p.append(_row(6, "Scorer", y)); y += 1
    p.append(_panel(7, "Scorer batch size", [
        *_quantiles("streamscore_scorer_batch_size", "model, backend", "{{model}} {{backend}}"),
        _target("sum by (model, backend) (rate(streamscore_scorer_batch_size_sum[$__rate_interval])) / "
                "sum by (model, backend) (rate(streamscore_scorer_batch_size_count[$__rate_interval]))",
                "mean {{model}} {{backend}}", "C")], 0, y, unit="short"))
    p.append(_panel(8, "Inference latency p50 / p99", _quantiles(
        "streamscore_inference_seconds", "model, backend", "{{model}} {{backend}}"), 12, y, unit="s")); y += 8
    p.append(_panel(9, "Model version", [
        _target("streamscore_model_info", "", instant=True, fmt="table")], 0, y, w=12, h=6, kind="table",
        description="The model serving each pipeline (labels of streamscore_model_info)."))
    p.append(_panel(10, "Scorer calls per second", [
        _target("sum by (model, backend) (rate(streamscore_inference_seconds_count[$__rate_interval]))",
                "{{model}} {{backend}}")], 12, y, h=6, unit="ops")); y += 6

    p.append(_row(11, "Data quality", y)); y += 1
    p.append(_panel(12, "Late events by reason", [
        _target("sum by (component, reason) (rate(streamscore_late_events_total[$__rate_interval]))",
                "{{component}} {{reason}}")], 0, y, unit="ops"))
    p.append(_panel(13, "Dead letters by reason", [
        _target("sum by (component, reason) (rate(streamscore_dead_letters_total[$__rate_interval]))",
                "{{component}} {{reason}}")], 12, y, unit="ops",
        description="Alert DeadLetterRateHigh fires above 1 record/s for 5 minutes.")); y += 8
    p.append(_panel(14, "Rejected source rows by reason", [
        _target("sum by (source, reason) (rate(streamscore_csv_rows_rejected_total[$__rate_interval]))",
                "{{source}} {{reason}}")], 0, y, unit="ops"))
    p.append(_panel(15, "Profile lookups", [
        _target("sum by (kind, result) (rate(streamscore_profile_lookups_total[$__rate_interval]))",
                "{{kind}} {{result}}"),
        _target("rate(streamscore_unknown_labels_total[$__rate_interval])", "unknown labels", "B"),
        _target("rate(streamscore_duplicate_labels_total[$__rate_interval])", "repeated labels", "C")],
        12, y, unit="ops")); y += 8

    p.append(_row(16, "Kafka lag", y)); y += 1
    p.append(_panel(17, "Consumer lag per partition", [
        _target("streamscore_consumer_lag", "{{group}} {{topic}}[{{partition}}]")], 0, y, unit="short",
        description="Log-end offset minus committed offset (infra/lag_exporter.py). The Flink source commits "
                    "on checkpoints, so its lag saw-tooths with the checkpoint interval."))
    p.append(_panel(18, "Event-time lag", [
        _target("streamscore_event_time_lag_seconds", "{{topic}}")], 12, y, unit="s",
        description="Now minus the newest event time in each output topic.")); y += 8
    p.append(_panel(19, "Committed vs log-end offsets", [
        _target("sum by (group, topic) (streamscore_consumer_committed_offset)", "committed {{group}} {{topic}}"),
        _target("sum by (topic) (streamscore_log_end_offset)", "log end {{topic}}", "B")], 0, y, unit="short"))
    p.append(_panel(20, "Lag exporter health", [
        _target("sum by (stage) (rate(streamscore_lag_exporter_errors_total[$__rate_interval]))", "errors {{stage}}"),
        _target("time() - streamscore_lag_exporter_last_success_timestamp_seconds", "seconds since last poll", "B"),
        _target("histogram_quantile(0.99, sum by (le) (rate(streamscore_lag_exporter_poll_seconds_bucket"
                "[$__rate_interval])))", "poll p99 (s)", "C")], 12, y, unit="short")); y += 8

    p.append(_row(21, "Dashboard and services", y)); y += 1
    p.append(_panel(22, "Dashboard clients", [
        _target("streamscore_dashboard_clients", "clients")], 0, y, w=6, unit="short", kind="stat"))
    p.append(_panel(23, "Dashboard traffic", [
        _target("rate(streamscore_dashboard_messages_sent_total[$__rate_interval])", "sent"),
        _target("rate(streamscore_dashboard_coalesced_total[$__rate_interval])", "coalesced", "B"),
        _target("sum by (reason) (rate(streamscore_dashboard_disconnects_total[$__rate_interval]))",
                "disconnect {{reason}}", "C"),
        _target("sum by (reason) (rate(streamscore_dashboard_rejected_total[$__rate_interval]))",
                "rejected {{reason}}", "D")], 6, y, w=10, unit="ops"))
    p.append(_panel(24, "Scrape targets up", [
        _target("up", "{{job}} {{instance}}", instant=True, fmt="table")], 16, y, w=8, kind="table",
        description="1 = Prometheus scrapes the target; FlinkTargetDown fires when one has not answered for 5 "
                    "minutes.")); y += 8
    p.append(_panel(25, "Flink checkpoints", [
        _target("flink_jobmanager_job_lastCheckpointDuration / 1000", "last checkpoint duration (s) {{job_name}}"),
        _target("flink_jobmanager_job_numberOfFailedCheckpoints", "failed checkpoints {{job_name}}", "B")],
        0, y, unit="short"))
    p.append(_panel(26, "Flink records in/out per second", [
        _target("sum by (task_name) (flink_taskmanager_job_task_numRecordsInPerSecond)", "in {{task_name}}"),
        _target("sum by (task_name) (flink_taskmanager_job_task_numRecordsOutPerSecond)", "out {{task_name}}", "B")],
        12, y, unit="ops")); y += 8
    p.append(_panel(27, "Flink job restarts and state", [
        _target("max by (service, job_name) (flink_jobmanager_job_numRestarts)", "restarts {{job_name}}"),
        _target("sum by (service, job_name) (increase(flink_jobmanager_job_numRestarts[1m]))",
                "restarts in the last minute {{job_name}}", "B"),
        _target("max by (service, job_name) (flink_jobmanager_job_runningState)", "RUNNING (1) {{job_name}}", "C")],
        0, y, w=24, unit="short",
        description="Flink's numRestarts per job (each job's MiniCluster or the cluster's JobManager). "
                    "FlinkJobRestartLoop fires at 2 restarts in a minute, FlinkJobDown when a job has not been "
                    "RUNNING for a minute (docs/operations.md).")); y += 8

    return {
        "uid": "streamscore-overview", "title": "streamscore", "tags": ["streamscore"], "timezone": "browser",
        "schemaVersion": 39, "version": 1, "editable": True, "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"}, "graphTooltip": 1, "annotations": {"list": []},
        "templating": {"list": []}, "links": [], "panels": p,
    }


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(build(), indent=2) + "\n")
    print(OUT)


if __name__ == "__main__":
    main()
