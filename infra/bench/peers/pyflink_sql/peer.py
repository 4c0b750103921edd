"""Peer (b): a plain PyFlink job, Flink SQL OVER windows and a pandas scoring UDF, what a Flink team writes.

    python -m infra.bench.peers.pyflink_sql.peer --bootstrap HOST:PORT --tx-topic tx --labels-topic labels \
        --out-topic scores --redis-url redis://... [--group-id G]

The job itself is jobs/bench_peer_sql_job.py (a job file beside the fraud job, so that it can use jobs.common,
which infra may not import): this module declares what its figures depend on and replaces itself with that job,
keeping the process (the harness kills the process group, the JVM included). README.md beside this file says what
the SQL can and cannot express and where its results differ from streamscore's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipelines.config import load_config

ROOT = Path(__file__).resolve().parents[4]
JOB = ROOT / "jobs" / "bench_peer_sql_job.py"


def _settings() -> dict:
    cfg = load_config()
    return {"delivery": "at-least-once (Kafka sink; checkpoints exactly-once inside Flink)",
            "checkpoint_interval_ms": cfg.flink.checkpoint_interval_ms, "parallelism": cfg.flink.parallelism,
            "state_backend": cfg.flink.state_backend, "execution_mode": cfg.fraud.execution_mode,
            "scorer": "reference (numpy)", "emit": "watermark (OVER windows)",
            "out_of_orderness_ms": cfg.fraud.out_of_orderness_ms}


LATE = ("dropped silently by the SQL OVER windows: an event behind the watermark (fraud.out_of_orderness_ms) is "
        "neither scored nor routed anywhere (only Flink's numLateRecordsDropped metric counts it)")
SETTINGS = _settings()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    os.execv(sys.executable, [sys.executable, str(JOB), *args])
    return 1  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
