#!/usr/bin/env bash
# Entry point of the streamscore image. Runs its arguments from /opt/streamscore. The Flink Kubernetes Operator
# starts pods as `/docker-entrypoint.sh bash -c "kubernetes-jobmanager.sh ..."` (or taskmanager), so the Flink
# scripts' folder is put on PATH too.
set -euo pipefail
cd /opt/streamscore
export PATH="${FLINK_HOME:-/opt/flink}/bin:${PATH}"
export FLINK_CONF_DIR="${FLINK_CONF_DIR:-${FLINK_HOME:-/opt/flink}/conf}"
exec "$@"
