# Observability: Prometheus (config, alert rules and their unit tests), the consumer-lag exporter.
PROMTOOL ?= promtool
PROM_DIR := infra/prometheus

.PHONY: check-prometheus prometheus-up prometheus-down prometheus-status lag-exporter-up lag-exporter-down grafana-dashboard

check-prometheus: ## Validate the Prometheus config and alert rules, and run the rules' unit tests (promtool)
	@command -v $(PROMTOOL) >/dev/null || { echo "promtool not found: apt-get install prometheus" >&2; exit 1; }
	$(PROMTOOL) check config $(PROM_DIR)/prometheus.yml
	$(PROMTOOL) check rules $(PROM_DIR)/rules/*.yml
	$(PROMTOOL) test rules $(PROM_DIR)/tests/*.yml

prometheus-up: ## Start Prometheus on 127.0.0.1:9090 (metrics.prometheus_port), data in .run/prometheus
	$(PY) -m infra.observability prometheus start

prometheus-down: ## Stop Prometheus
	$(PY) -m infra.observability prometheus stop

prometheus-status: ## Prometheus running? and the health of each scrape target
	@$(PY) -m infra.observability prometheus status

lag-exporter-up: ## Start the consumer-lag exporter (/metrics on metrics.lag_exporter_port, 9404; .run/pids/lag-exporter.pid, as under `make run`)
	$(PY) -m infra.observability lag-exporter start

lag-exporter-down: ## Stop the consumer-lag exporter
	$(PY) -m infra.observability lag-exporter stop

grafana-dashboard: ## Regenerate infra/grafana/dashboards/streamscore.json from infra/grafana/build_dashboard.py
	$(PY) -m infra.grafana.build_dashboard
