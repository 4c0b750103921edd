"""The provisioned Grafana dashboard only queries metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from pipelines import metrics

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "infra" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "streamscore.json"
# Metrics that come from elsewhere: Flink's PrometheusReporter and Prometheus's own per-target `up`.
ALLOWED_PREFIXES = ("flink_",)
ALLOWED_NAMES = {"up"}

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool",
             "inf", "nan"}
_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
             "summary": ("", "_sum", "_count"), "info": ("_info",), "stateset": ("",), "enum": ("",)}


def exported_names() -> set[str]:
    """Every series name pipelines/metrics.py exports, as Prometheus stores it (with _total, _bucket...)."""
    names: set[str] = set()
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            for family in obj.describe():
                names |= {family.name + s for s in _SUFFIXES[family.type]}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords, labels or Grafana variables)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)   # string literals
    e = re.sub(r"\{[^}]*\}", " ", e)                                      # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                                     # ranges and subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)  # label lists
    e = re.sub(r"\$\{?\w+\}?", " ", e)                                    # $__rate_interval and friends
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", e):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def panels(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_metric_name_parser() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (le, pipeline) '
                        '(rate(streamscore_end_to_end_latency_seconds_bucket{pipeline="fraud"}[$__rate_interval])))'
                        ) == {"streamscore_end_to_end_latency_seconds_bucket"}
    assert metric_names('sum(rate(a_total{x="rate(b)"}[5m])) / on (g) group_left c_count > 0 and up') == {
        "a_total", "c_count", "up"}
    assert metric_names("time() - streamscore_x_seconds") == {"streamscore_x_seconds"}


def test_exported_names_cover_histograms_counters_info() -> None:
    names = exported_names()
    assert {"streamscore_events_in_total", "streamscore_end_to_end_latency_seconds_bucket",
            "streamscore_end_to_end_latency_seconds_count", "streamscore_consumer_lag",
            "streamscore_model_info"} <= names
    assert "streamscore_events_in" not in names


def test_dashboard_is_valid_and_every_panel_queries(dashboard: dict) -> None:
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels(dashboard):
        if p["type"] == "row":
            continue
        assert p.get("targets"), f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            assert t.get("expr", "").strip(), f"panel {p['title']!r} has an empty query"
            assert t["datasource"]["uid"] == "streamscore-prometheus"


def test_every_queried_metric_is_exported(dashboard: dict) -> None:
    exported = exported_names()
    unknown = {}
    for p in panels(dashboard):
        for t in p.get("targets", []):
            for name in metric_names(t["expr"]):
                if name not in exported and name not in ALLOWED_NAMES and not name.startswith(ALLOWED_PREFIXES):
                    unknown.setdefault(p["title"], set()).add(name)
    assert not unknown, f"panels query metrics nobody exports: {unknown}"


def test_dashboard_covers_the_sre_views(dashboard: dict) -> None:
    exprs = " ".join(t["expr"] for p in panels(dashboard) for t in p.get("targets", []))
    for needed in ("streamscore_events_in_total", "streamscore_events_out_total",
                   "streamscore_end_to_end_latency_seconds_bucket", "streamscore_scorer_batch_size",
                   "streamscore_inference_seconds_bucket", "streamscore_late_events_total",
                   "streamscore_dead_letters_total", "streamscore_consumer_lag", "streamscore_event_time_lag_seconds",
                   "streamscore_model_info", "streamscore_dashboard_clients"):
        assert needed in exprs, needed


def test_dashboard_json_is_what_the_generator_writes(dashboard: dict) -> None:
    from infra.grafana.build_dashboard import build

    assert build() == dashboard, "run `python -m infra.grafana.build_dashboard` after editing it"


def test_provisioning_files() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["apiVersion"] == 1
    assert [d["uid"] for d in ds["datasources"]] == ["streamscore-prometheus"]
    assert ds["datasources"][0]["type"] == "prometheus"
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "streamscore.yml").read_text())
    assert prov["apiVersion"] == 1 and prov["providers"][0]["type"] == "file"
    assert prov["providers"][0]["options"]["path"]
