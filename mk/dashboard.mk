# Dashboard: scores and trends pushed over WebSockets to the browser (dashboard/server.py).
# Extra server flags go in DASHBOARD_ARGS, e.g. `make dashboard DASHBOARD_ARGS="--port 8800 --token t"`.
DASHBOARD_ARGS ?=

.PHONY: dashboard dashboard-up dashboard-down dashboard-status

dashboard: ## Run the dashboard in the foreground (http://127.0.0.1:8765/?token=..., Ctrl-C stops it)
	$(PY) -m dashboard.server $(DASHBOARD_ARGS)

dashboard-up: ## Start the dashboard in the background (.run/pids/dashboard.pid, .run/logs/dashboard.log, as under `make run`; `make stop` stops it too) and print its URL with the token
	$(PY) -m dashboard.ctl up -- $(DASHBOARD_ARGS)

dashboard-down: ## Stop the background dashboard
	$(PY) -m dashboard.ctl down

dashboard-status: ## Is the background dashboard running?
	@$(PY) -m dashboard.ctl status
