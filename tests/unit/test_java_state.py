"""The feature functions' state serializer (udfs/java FeatureStateSerializer): checkpoints and RocksDB read back
exactly what was written. Its main() round-trips random states and prints "ok"."""

import shutil
import subprocess

import pytest

from tests.flink_util import udf_classpath

pytestmark = pytest.mark.skipif(shutil.which("java") is None or shutil.which("javac") is None,
                                reason="needs a JDK (the jobs need one too)")


@pytest.mark.parametrize("seed", [1, 2])
def test_feature_state_round_trips(seed):
    out = subprocess.run(["java", "-cp", udf_classpath(), "io.streamscore.udfs.FeatureStateSerializer", str(seed)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
