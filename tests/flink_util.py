"""Tests run jobs the way `make run` and `make bench` do: see pipelines/jobrunner.py."""

from pipelines.jobrunner import RunningJob, job_env, run_job  # noqa: F401
