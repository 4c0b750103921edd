"""Session-scoped real services for the integration tests, and a fresh topic per test.

A real Kafka broker and a real Redis: testcontainers when a Docker engine answers, else the local KRaft broker and
Debian's redis-server from infra/services.py, each on free ports so they never collide with `make run`'s.
An external broker can be given with KAFKA_BOOTSTRAP. Nothing here is mocked.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra import services  # noqa: E402
from pipelines import kafka_util  # noqa: E402


def docker_available() -> bool:
    if os.environ.get("STREAMSCORE_NO_DOCKER"):
        return False
    try:
        import docker

        return bool(docker.from_env(timeout=3).ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def run_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="streamscore-test-", dir=str(ROOT / ".run") if (ROOT / ".run").exists()
                              else None))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_broker(run_dir: Path) -> Iterator[services.KafkaBroker | None]:
    """The local broker object (None when the broker is external or a container), for fault tests."""
    if os.environ.get("KAFKA_BOOTSTRAP") or docker_available():
        yield None
        return
    broker = services.KafkaBroker(services.free_port(), services.free_port(), run_dir / "kafka")
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker) -> Iterator[str]:
    if kafka_broker is not None:
        yield kafka_broker.bootstrap
        return
    if os.environ.get("KAFKA_BOOTSTRAP"):
        yield os.environ["KAFKA_BOOTSTRAP"]
        return
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kc:
        yield kc.get_bootstrap_server()


@pytest.fixture(scope="session")
def redis_url(run_dir: Path) -> Iterator[str]:
    if docker_available():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7") as rc:
            yield f"redis://{rc.get_container_host_ip()}:{rc.get_exposed_port(6379)}/0"
        return
    server = services.RedisServer(services.free_port(), run_dir / "redis")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(redis_url: str, run_dir: Path) -> services.RedisServer | None:
    """The local RedisServer behind `redis_url` (for restart tests), or None for a container."""
    server = services.RedisServer(int(redis_url.rsplit(":", 1)[1].split("/")[0]), run_dir / "redis")
    return server if server.running() else None


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Creates uniquely named topics for one test and deletes them afterwards."""
    created: list[str] = []

    def make(prefix: str = "t", partitions: int = 4, compacted: bool = False) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        kafka_util.ensure_topics(kafka_bootstrap, [name], partitions=partitions,
                                 compacted=[name] if compacted else [])
        created.append(name)
        return name

    yield make
    kafka_util.delete_topics(kafka_bootstrap, created)
