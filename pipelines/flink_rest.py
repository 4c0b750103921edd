"""A job's state and restart count from Flink's REST API: a local MiniCluster's (flink.local_rest_port, set by
jobs/common.py) or a cluster's JobManager. Used by the dashboard and by the tests (infra/jobrunner.py
RunningJob.num_restarts)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

# The states in which a job is still someone's to watch (not FINISHED, CANCELED or FAILED).
LIVE_STATES = ("INITIALIZING", "CREATED", "RUNNING", "FAILING", "CANCELLING", "RESTARTING", "SUSPENDED",
               "RECONCILING")


class FlinkRestError(RuntimeError):
    """The REST endpoint did not answer, or answered something we cannot read."""


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    name: str
    state: str  # RUNNING, RESTARTING, FAILING, ...
    restarts: int  # the job's numRestarts metric: restarts since this job (id) was submitted
    start_time_ms: int

    def as_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "name": self.name, "state": self.state, "restarts": self.restarts,
                "start_time_ms": self.start_time_ms}


def _get(url: str, timeout: float) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read().decode())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FlinkRestError(f"{url}: {exc}") from exc


def num_restarts(rest_url: str, job_id: str, timeout: float = 3.0) -> int:
    """The job's numRestarts metric (`GET /jobs/<id>/metrics?get=numRestarts`)."""
    data = _get(f"{rest_url}/jobs/{urllib.parse.quote(job_id)}/metrics?get=numRestarts", timeout)
    for m in data if isinstance(data, list) else []:
        if m.get("id") == "numRestarts":
            return int(float(m["value"]))
    raise FlinkRestError(f"{rest_url}: job {job_id} reports no numRestarts metric")


def job_status(rest_url: str, name: str | None = None, timeout: float = 3.0) -> JobStatus | None:
    """The newest live job (named `name`, when given) of the cluster at `rest_url`, or else the newest job of that
    name whatever its state; None if there is none. Raises FlinkRestError if the endpoint does not answer."""
    jobs = _get(f"{rest_url}/jobs/overview", timeout).get("jobs", [])
    if name is not None:
        jobs = [j for j in jobs if j.get("name") == name]
    if not jobs:
        return None
    jobs.sort(key=lambda j: (j.get("state") in LIVE_STATES, j.get("start-time", 0)), reverse=True)
    j = jobs[0]
    try:
        restarts = num_restarts(rest_url, j["jid"], timeout)
    except FlinkRestError:
        if j.get("state") in LIVE_STATES:
            raise
        restarts = 0  # a finished job's metrics are gone
    return JobStatus(j["jid"], j.get("name", ""), j.get("state", "UNKNOWN"), restarts, int(j.get("start-time", 0)))
