"""The one command line every peer takes: infra/bench/peers/run.py `start()` launches
`python -m infra.bench.peers.<name>.peer` with exactly these options. (jobs/bench_peer_sql_job.py parses the same
options itself: a job may not import infra, tests/unit/test_layers.py.)"""

from __future__ import annotations

import argparse
import time


def peer_parser(doc: str | None, group_prefix: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--tx-topic", required=True)
    ap.add_argument("--labels-topic", required=True)
    ap.add_argument("--out-topic", required=True)
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--group-id", default=f"{group_prefix}-{time.time_ns()}")
    return ap
