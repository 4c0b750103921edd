"""Local services for development, `make run` and the tests: a KRaft Kafka broker, Redis, and the Flink jars.

Every command is idempotent: starting a running service reports it and returns, stopping a stopped one is a no-op.
Used as a script (``python -m infra.services kafka start``) and as a library by the test fixtures, which run their
own broker and Redis on free ports beside any that ``make run`` started.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipelines import udfjar  # noqa: E402
from pipelines.config import Config, load_config  # noqa: E402
from pipelines.procs import (Managed, ManagedProcess, ServiceError, control, log, port_open,  # noqa: E402,F401 - infra/'s
                             run_main)
from pipelines.udfjar import UDF_JAR, UDF_SRC  # noqa: E402

CACHE = ROOT / ".cache"
KAFKA_LIBS = CACHE / "kafka" / "libs"
FLINK_JARS = CACHE / "flink-jars"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------------------- Maven

def _mvn(pom: Path, out_dir: Path, extra: list[str] | None = None) -> None:
    if shutil.which("mvn") is None:
        raise ServiceError(
            "Maven (`mvn`) is needed to fetch jars from Maven Central. Install it (Debian: `apt-get install maven`, "
            "macOS: `brew install maven`), or point KAFKA_HOME at a Kafka installation, or KAFKA_BOOTSTRAP at a "
            "running broker.")
    tmp = out_dir.with_suffix(".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
           f"-DoutputDirectory={tmp}", "-DincludeScope=runtime", *(extra or [])]
    log("resolving " + pom.parent.name + " jars from Maven Central")
    subprocess.run(cmd, check=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


def _resolved(pom: Path, out_dir: Path, extra: list[str] | None = None) -> Path:
    """The pom's jars in out_dir, resolved again when the pom changes (its hash is the marker's content). An empty
    marker is the container image's (infra/docker/Dockerfile resolves the pom it ships while building)."""
    marker = out_dir / ".complete"
    digest = hashlib.sha256(pom.read_bytes() + " ".join(extra or []).encode()).hexdigest()[:16]
    if not marker.exists() or marker.read_text().strip() not in (digest, ""):
        _mvn(pom, out_dir, extra)
        marker.write_text(digest + "\n")
    return out_dir


def ensure_kafka_libs() -> Path:
    return _resolved(ROOT / "infra" / "kafka" / "pom.xml", KAFKA_LIBS)


def ensure_flink_jars(cfg: Config | None = None) -> Path:
    """Puts the Flink Kafka connector where jobs find it (`flink.jars_dir`, added to `pipeline.jars`)."""
    cfg = cfg or load_config()
    return _resolved(ROOT / "infra" / "flink" / "pom.xml", cfg.path(cfg.flink.jars_dir), ["-DexcludeTransitive=true"])


AVRO_JARS = CACHE / "avro-jars"


def ensure_avro_jars() -> Path:
    """Apache Avro's Java library and its dependencies (infra/avro/pom.xml) in .cache/avro-jars: the oracle the
    JVM decoders are tested against (tests/avro_oracle.py) and the library the decode benchmark measures. Never on a
    job's classpath."""
    return _resolved(ROOT / "infra" / "avro" / "pom.xml", AVRO_JARS)


def ensure_udf_jar() -> Path:
    """Compiles our Java SQL functions (udfs/java) against the Flink jars PyFlink ships; rebuilt when a source
    changes. Java is used only where per-row speed matters: the rolling-window aggregates and the Avro decoders."""
    if not udfjar.stale_inputs():
        return UDF_JAR
    sources = sorted(UDF_SRC.rglob("*.java"))
    import pyflink

    lib = Path(pyflink.__file__).parent / "lib"
    cp = os.pathsep.join(str(j) for j in sorted(lib.glob("flink-*.jar")))
    if shutil.which("javac") is None or shutil.which("jar") is None:
        raise ServiceError("a JDK (javac, jar) is needed to build udfs/java (Debian: apt-get install openjdk-17-jdk)")
    classes = UDF_JAR.parent / "classes"
    shutil.rmtree(classes, ignore_errors=True)
    classes.mkdir(parents=True)
    log(f"compiling {len(sources)} Java sources in {UDF_SRC.relative_to(ROOT)}")
    subprocess.run(["javac", "--release", "11", "-nowarn", "-cp", cp, "-d", str(classes), *map(str, sources)],
                   check=True)
    from pipelines.serde import java_schema_index

    (classes / "io" / "streamscore" / "udfs" / "avro-writers.tsv").write_text(java_schema_index())
    tmp = UDF_JAR.with_suffix(".partial")
    subprocess.run(["jar", "cf", str(tmp), "-C", str(classes), "."], check=True)
    tmp.rename(UDF_JAR)
    return UDF_JAR


# --------------------------------------------------------------------------------------------------------- Kafka

@dataclass
class KafkaBroker(Managed):
    """A single-node KRaft broker (combined broker + controller) on loopback."""

    port: int
    controller_port: int
    data_dir: Path
    kafka_home: str = ""
    heap: str = "512m"

    @classmethod
    def from_config(cls, cfg: Config) -> "KafkaBroker":
        return cls(cfg.kafka.port, cfg.kafka.controller_port, cfg.path(cfg.kafka.data_dir), cfg.kafka.home)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def proc(self) -> ManagedProcess:
        return ManagedProcess("kafka", self.data_dir / "kafka.pid", self.data_dir / "kafka.log")

    @property
    def server_log(self) -> Path:
        """The broker's own log (log4j); `proc.logfile` holds only the JVM's stdout and stderr."""
        return self.data_dir / "server.log"

    def _classpath(self) -> str:
        if self.kafka_home:
            libs = Path(self.kafka_home) / "libs"
            if not libs.is_dir():
                raise ServiceError(f"KAFKA_HOME={self.kafka_home} has no libs/ folder")
            return f"{libs}/*"
        return f"{ensure_kafka_libs()}/*"

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        props.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.data_dir / 'data'}",
            "num.partitions=4",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            # Flink's transactional sink keeps a transaction open across a checkpoint interval.
            "transaction.max.timeout.ms=3600000",
            # Replays carry historical event times as record timestamps: time-based retention would delete them
            # at once, so retention is by size only.
            "log.retention.ms=-1",
            "log.retention.bytes=1073741824",
            "log.segment.bytes=268435456",
            "",
        ]))
        (self.data_dir / "log4j2.properties").write_text("\n".join([
            "status = warn",
            "appender.file.type = File",
            "appender.file.name = file",
            f"appender.file.fileName = {self.server_log}",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.file.ref = file",
            "logger.kafka.name = kafka",
            "logger.kafka.level = INFO",
            "logger.state.name = state.change.logger",
            "logger.state.level = WARN",
            "",
        ]))
        return props

    def _java(self, main: str, *args: str) -> list[str]:
        return ["java", f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
                "-cp", self._classpath(), main, *args]

    def start(self, timeout: float = 90.0) -> str:
        if self.proc.already_running(self.port, self.bootstrap, "STREAMSCORE_KAFKA__PORT, or KAFKA_BOOTSTRAP to "
                                                                "use that broker"):
            self.wait(timeout)
            return self.bootstrap
        props = self._write_config()
        meta = self.data_dir / "data" / "meta.properties"
        if not meta.exists():
            cluster_id = uuid.uuid4().bytes
            import base64
            cid = base64.urlsafe_b64encode(cluster_id).decode().rstrip("=")
            log(f"kafka: formatting storage in {self.data_dir / 'data'}")
            # "--cluster-id=": a base64 id starts with "-" one time in 64, which argparse would read as an option.
            subprocess.run(self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cid}", "-c", str(props),
                                      "--ignore-formatted"), check=True, stdout=subprocess.DEVNULL)
        self.proc.start(self._java("kafka.Kafka", str(props)))
        self.wait(timeout)
        log(f"kafka: ready on {self.bootstrap}")
        return self.bootstrap

    def wait(self, timeout: float = 90.0) -> None:
        self.proc.wait_ready(lambda: kafka_answers(self.bootstrap), timeout, self.bootstrap, interval=0.5)

    def stop(self) -> None:
        self.proc.stop(timeout=30)

    def kill(self) -> None:
        """Hard crash, for fault tests."""
        self.proc.kill()


def kafka_answers(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        return bool(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=2).brokers)
    except Exception:  # KafkaException while the broker boots
        return False


def wait_for_kafka(bootstrap: str, timeout: float = 90.0) -> None:
    """Until a broker we do not manage (KAFKA_BOOTSTRAP) answers."""
    deadline = time.time() + timeout
    while not kafka_answers(bootstrap):
        if time.time() > deadline:
            raise ServiceError(f"kafka at {bootstrap} did not answer within {timeout:.0f}s")
        time.sleep(0.5)


# --------------------------------------------------------------------------------------------------------- Redis

def ensure_redis_installed() -> str:
    exe = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists()
                                           else None)
    if exe:
        return exe
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("redis: installing Debian's redis-server")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], check=False, env=env)
        if not shutil.which("redis-server"):
            subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
            subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], check=True, env=env)
        return shutil.which("redis-server") or "/usr/bin/redis-server"
    raise ServiceError("redis-server is not installed: `sudo apt-get install redis-server` "
                       "(or `brew install redis`), or set REDIS_URL to a running Redis")


@dataclass
class RedisServer(Managed):
    port: int
    data_dir: Path

    @classmethod
    def from_config(cls, cfg: Config) -> "RedisServer":
        return cls(cfg.redis.port, cfg.path(cfg.run.dir) / "redis")

    @property
    def proc(self) -> ManagedProcess:
        return ManagedProcess("redis", self.data_dir / "redis.pid", self.data_dir / "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> str:
        exe = ensure_redis_installed()
        if self.proc.already_running(self.port, self.url, "STREAMSCORE_REDIS__PORT or REDIS_URL"):
            return self.url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Foreground under our own session (not --daemonize) so the pid file is the real process.
        self.proc.start([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                         "--save", "", "--appendonly", "yes", "--protected-mode", "yes"])
        self.proc.wait_ready(self._answers, timeout, self.url, interval=0.2)
        log(f"redis: ready on {self.url}")
        return self.url

    def _answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        self.proc.stop(timeout=15)


# ------------------------------------------------------------------------------------------------------------ CLI

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("service", choices=["kafka", "redis", "flink-jars", "kafka-libs", "avro-jars"])
    ap.add_argument("action", nargs="?", default="start", choices=["start", "stop", "status"])
    args = ap.parse_args(argv)
    cfg = load_config()

    def body() -> int | None:
        if args.service == "flink-jars":
            print(ensure_flink_jars(cfg))
            print(ensure_udf_jar())
        elif args.service == "kafka-libs":
            print(ensure_kafka_libs())
        elif args.service == "avro-jars":
            print(ensure_avro_jars())
        elif args.service == "kafka":
            if cfg.kafka.bootstrap:
                log(f"kafka: using the external broker at {cfg.kafka.bootstrap} (KAFKA_BOOTSTRAP); not managing it")
                if args.action != "stop":
                    wait_for_kafka(cfg.kafka.bootstrap, 30)
                return 0
            control(KafkaBroker.from_config(cfg), args.action)
        elif args.service == "redis":
            if cfg.redis.url:
                log(f"redis: using {cfg.redis.url} (REDIS_URL); not managing it")
                return 0
            control(RedisServer.from_config(cfg), args.action)

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
