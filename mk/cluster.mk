# A standalone Flink session cluster (JobManager + TaskManager as separate JVMs) from the distribution inside PyFlink.
# FLINK_REST_PORT (8081) and FLINK_RPC_PORT (6123) pick the ports (flink.cluster_rest_port/cluster_rpc_port in
# pipelines/config.py); config, pids and checkpoints in .run/flink-cluster, logs in .run/logs/flink-cluster; `make stop`
# stops the cluster too. STREAMSCORE_* variables set at cluster-up reach the TaskManager's Python workers.
CLUSTER_ARGS ?=
JOB ?= jobs/fraud_job.py
JOB_ARGS ?=

.PHONY: cluster-up cluster-down cluster-status cluster-submit

cluster-up: ## Start a standalone Flink cluster (1 JobManager, 1 TaskManager with 2 slots, REST on 127.0.0.1:8081)
	$(PY) -m infra.flink_cluster $(CLUSTER_ARGS) up

cluster-down: ## Stop the standalone Flink cluster (both JVMs and their Python workers)
	$(PY) -m infra.flink_cluster $(CLUSTER_ARGS) down

cluster-status: ## The standalone cluster's processes, slots and jobs
	@$(PY) -m infra.flink_cluster $(CLUSTER_ARGS) status

cluster-submit: ## Submit JOB (default jobs/fraud_job.py) to the standalone cluster at parallelism 2: flink run -d -p 2 -py
	$(PY) -m infra.flink_cluster $(CLUSTER_ARGS) submit $(JOB) $(JOB_ARGS)
