"""A job that fails every record (1 / 0 in SQL), so Flink restarts it every restart-strategy delay: a restart loop
on a MiniCluster set up exactly as our jobs' (jobs/common.py create_envs: the reporter, the REST endpoint, the
restart strategy). tests/integration/test_flink_reporter.py runs it."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from jobs.common import create_envs  # noqa: E402
from pipelines.config import load_config  # noqa: E402

if __name__ == "__main__":
    _, t_env = create_envs(load_config(), job_name="streamscore-restart-loop")
    t_env.execute_sql("CREATE TEMPORARY TABLE src (x BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '5')")
    t_env.execute_sql("CREATE TEMPORARY TABLE snk (x BIGINT) WITH ('connector' = 'blackhole')")
    t_env.execute_sql("INSERT INTO snk SELECT 1 / (x - x) FROM src").wait()
