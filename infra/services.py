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
from dataclasses import dataclass, field
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
            *self._listener_props(),
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

    def _listener_props(self) -> list[str]:
        """The listeners and their security: plaintext on loopback here, SASL_SSL in SecuredKafkaBroker."""
        return [f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"]

    def _format_args(self) -> list[str]:
        """Extra arguments of `kafka-storage format` (SecuredKafkaBroker: the bootstrap admin's SCRAM user)."""
        return []

    def client_conf(self) -> dict[str, str]:
        """librdkafka properties with which infra/ itself (readiness, setup) talks to this broker."""
        return {}

    def _after_start(self) -> None:
        """Runs once the broker answers (SecuredKafkaBroker: its users and ACLs)."""

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
                                      "--ignore-formatted", *self._format_args()),
                           check=True, stdout=subprocess.DEVNULL)
        self.proc.start(self._java("kafka.Kafka", str(props)))
        self.wait(timeout)
        self._after_start()
        log(f"kafka: ready on {self.bootstrap}")
        return self.bootstrap

    def wait(self, timeout: float = 90.0) -> None:
        self.proc.wait_ready(lambda: kafka_answers(self.bootstrap, self.client_conf()), timeout, self.bootstrap,
                             interval=0.5)

    def stop(self) -> None:
        self.proc.stop(timeout=30)

    def kill(self) -> None:
        """Hard crash, for fault tests."""
        self.proc.kill()


# -------------------------------------------------------------------------------------------- Secured Kafka

KAFKA_ADMIN = "admin"
# The SCRAM users of a secured broker besides KAFKA_ADMIN (its only super user): one per role, least privilege
# (kafka_acls). Each component runs as its role through the config's kafka section (sasl_username,
# sasl_password_file, ssl_ca_location: SecuredKafkaBroker.principal_env).
KAFKA_ROLES = {
    "fraud-job": "jobs/fraud_job.py",
    "operator": "python -m pipelines.rules (make rules): publishes the fraud job's rule sets",
    "sentiment-job": "jobs/sentiment_job.py",
    "replay": "the producers: the fraud and posts replays, the profile publisher",
    "dashboard": "dashboard/ (reads what it shows)",
    "lag-exporter": "infra/lag_exporter.py",
    "quality": "pipelines/quality.py (live model quality from the delayed labels)",
}
QUALITY_GROUP = "streamscore-quality"  # pipelines/quality.py GROUP
SENTIMENT_GROUP = "streamscore-sentiment"  # jobs/sentiment_job.py --group-id
DASHBOARD_GROUP = "streamscore-dashboard"  # dashboard/server.py --group


@dataclass(frozen=True)
class KafkaAcl:
    """One ALLOW rule: `principal` (a KAFKA_ROLES user) may do `operations` on the `resource` ("topic", "group",
    "transactional_id" or "cluster") called `name`, or on every one whose name starts with it when `prefixed`."""

    principal: str
    resource: str
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False


def kafka_acls(cfg: Config) -> list[KafkaAcl]:
    """The ACL table of a secured broker: everything not listed is denied (allow.everyone.if.no.acl.found=false).
    READ and WRITE imply DESCRIBE. Exactly-once sinks name their transactional ids `<group id>-<table>`
    (jobs/fraud_job.py), hence the prefixed transactional-id rules."""
    from pipelines.rules import CLI_GROUP as RULES_CLI_GROUP, rules_group

    t, g = cfg.topics, cfg.flink.group_id
    read, write, desc = ("READ",), ("WRITE",), ("DESCRIBE",)
    # An exactly-once sink also reads its own topics' producer state (DescribeProducers needs READ): the connector
    # looks for transactions a crashed run left open, and the sink fails without it.
    eos = ("WRITE", "READ")
    txn = ("WRITE", "DESCRIBE")
    return [
        # The producers write the inputs; they read nothing.
        *(KafkaAcl("replay", "topic", name, write) for name in
          (t.transactions, t.labels, t.customer_profiles, t.terminal_profiles, t.posts)),
        # The fraud job: its two inputs and its group, its four outputs, its transactions.
        KafkaAcl("fraud-job", "topic", t.transactions, read),
        KafkaAcl("fraud-job", "topic", t.labels, read),
        KafkaAcl("fraud-job", "group", g, read),
        *(KafkaAcl("fraud-job", "topic", name, eos) for name in (t.fraud_scores, t.late, t.dead_letter)),
        KafkaAcl("fraud-job", "topic", t.fraud_decisions, write),  # at-least-once
        KafkaAcl("fraud-job", "transactional_id", g, txn, prefixed=True),
        # Run-time rules (pipelines/rules.py): every scoring subtask reads the control topic (assign only; its group
        # is named, never joined); only the operator writes it.
        KafkaAcl("fraud-job", "topic", t.fraud_control, read),
        KafkaAcl("fraud-job", "group", rules_group(cfg), read),
        KafkaAcl("operator", "topic", t.fraud_control, ("WRITE", "READ")),
        KafkaAcl("operator", "group", RULES_CLI_GROUP, read),
        # The sentiment job, likewise.
        KafkaAcl("sentiment-job", "topic", t.posts, read),
        KafkaAcl("sentiment-job", "group", SENTIMENT_GROUP, read),
        *(KafkaAcl("sentiment-job", "topic", name, eos) for name in
          (t.post_sentiment, t.sentiment_trends, t.posts_late, t.dead_letter)),
        KafkaAcl("sentiment-job", "transactional_id", SENTIMENT_GROUP, txn, prefixed=True),
        # The dashboard reads the outputs it shows (and the posts beside their scores), counts the inputs' rate
        # from their end offsets, and commits to its group; it writes nothing.
        *(KafkaAcl("dashboard", "topic", name, read) for name in
          (t.fraud_scores, t.fraud_decisions, t.post_sentiment, t.sentiment_trends, t.late, t.posts_late,
           t.dead_letter, t.posts)),
        KafkaAcl("dashboard", "topic", t.transactions, desc),
        KafkaAcl("dashboard", "group", DASHBOARD_GROUP, read),
        # The lag exporter: committed offsets of the groups, end offsets and the newest record time of the topics.
        *(KafkaAcl("lag-exporter", "group", name, desc) for name in (g, SENTIMENT_GROUP, DASHBOARD_GROUP)),
        *(KafkaAcl("lag-exporter", "topic", name, read) for name in
          (t.transactions, t.labels, t.posts, t.fraud_scores, t.fraud_decisions, t.post_sentiment)),
        KafkaAcl("lag-exporter", "group", "streamscore-lag-exporter", read),
        # The quality service: the scores and the labels it joins (its group commits nothing), the snapshots it
        # writes; the dashboard reads those.
        *(KafkaAcl("quality", "topic", name, read) for name in (t.fraud_scores, t.labels)),
        KafkaAcl("quality", "group", QUALITY_GROUP, read),
        KafkaAcl("quality", "topic", t.model_quality, write),
        KafkaAcl("dashboard", "topic", t.model_quality, read),
    ]


def kafka_acl_markdown(cfg: Config) -> str:
    """kafka_acls as the Markdown table docs/operations.md shows (a unit test keeps the two equal); `*`: a prefix."""
    rows: dict[tuple, list[str]] = {}
    for a in kafka_acls(cfg):
        rows.setdefault((a.principal, a.resource, a.operations, a.prefixed), []).append(a.name)
    lines = ["| principal | resource | names | operations |", "|---|---|---|---|"]
    for (who, resource, ops, prefixed), names in rows.items():
        listed = ", ".join(f"`{n}`" + ("*" if prefixed else "") for n in names)
        lines.append(f"| `{who}` | {resource.replace('_', ' ')} | {listed} | {', '.join(ops)} |")
    return "\n".join(lines) + "\n"


def _acl_bindings(acls: list[KafkaAcl]):
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, ResourcePatternType,
                                       ResourceType)

    kinds = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
             "transactional_id": ResourceType.TRANSACTIONAL_ID, "cluster": ResourceType.BROKER}
    return [AclBinding(kinds[a.resource], "kafka-cluster" if a.resource == "cluster" else a.name,
                       ResourcePatternType.PREFIXED if a.prefixed else ResourcePatternType.LITERAL,
                       f"User:{a.principal}", "*", getattr(AclOperation, op), AclPermissionType.ALLOW)
            for a in acls for op in a.operations]


@dataclass
class SecuredKafkaBroker(KafkaBroker):
    """The KRaft broker with one SASL_SSL listener for clients (SCRAM-SHA-512, which inter-broker traffic uses too,
    as the admin) and the KRaft controller on loopback over TLS with client certificates (only the broker's own is
    accepted); the StandardAuthorizer with `kafka_acls`, super users the admin and the broker.

    Everything secret lives in the data dir (.run/kafka-secured for `make run SECURE=1`, never committed):
    `tls/` holds the broker's key store (PKCS12, made with keytool; its certificate is self-signed, for 127.0.0.1
    and localhost) and `tls/ca.pem`, the certificate clients trust; `secrets/<user>.password` each user's random
    password (mode 0600). The admin's SCRAM user is created at storage format time, the roles' users and the ACLs
    at each start with the admin client (both idempotent): a role whose password file is replaced gets the new
    password at the next start."""

    cfg: Config | None = field(default=None, repr=False)

    # The subject of the broker's certificate: its principal on the controller listener.
    BROKER_PRINCIPAL = "CN=streamscore-broker"

    @classmethod
    def from_config(cls, cfg: Config) -> "SecuredKafkaBroker":
        """`make run SECURE=1`'s broker: on kafka.port, its storage and secrets in `<kafka.data_dir>-secured` (the
        plaintext broker's storage has no users)."""
        return cls(cfg.kafka.port, cfg.kafka.controller_port, cfg.path(cfg.kafka.data_dir.rstrip("/") + "-secured"),
                   cfg.kafka.home, cfg=cfg)

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.pem"

    def password_file(self, user: str) -> Path:
        return self.data_dir / "secrets" / f"{user}.password"

    def password(self, user: str) -> str:
        """The user's password, made (random, 0600) on first use."""
        import secrets

        f = self.password_file(user)
        if not f.exists():
            f.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(24) + "\n")
        return f.read_text().splitlines()[0].strip()

    def principal_env(self, user: str) -> dict[str, str]:
        """The config settings (STREAMSCORE_KAFKA__*) with which a component talks to this broker as `user`: the
        password by file, never by value."""
        self.password(user)
        return {"STREAMSCORE_KAFKA__BOOTSTRAP": self.bootstrap, "STREAMSCORE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
                "STREAMSCORE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512", "STREAMSCORE_KAFKA__SASL_USERNAME": user,
                "STREAMSCORE_KAFKA__SASL_PASSWORD_FILE": str(self.password_file(user)),
                "STREAMSCORE_KAFKA__SSL_CA_LOCATION": str(self.ca_file)}

    def user_conf(self, user: str) -> dict[str, str]:
        """librdkafka properties for `user`, through the config's kafka section (pipelines/kafka_security.py)."""
        from pipelines.kafka_security import librdkafka_conf

        return librdkafka_conf(load_config(environ=self.principal_env(user)).kafka)

    def client_conf(self) -> dict[str, str]:
        return self.user_conf(KAFKA_ADMIN)

    def _keystore_password(self) -> str:
        return self.password("keystore")

    def _ensure_tls(self) -> None:
        store = self.tls_dir / "broker.p12"
        if store.exists() and self.ca_file.exists():
            return
        if shutil.which("keytool") is None:
            raise ServiceError("keytool (a JDK) is needed to make the secured broker's TLS key store")
        self.tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        store.unlink(missing_ok=True)
        # keytool reads the store password from the environment (:env), not from its command line.
        env = {**os.environ, "SS_KEYSTORE_PASSWORD": self._keystore_password()}
        pw = ["-storepass:env", "SS_KEYSTORE_PASSWORD"]
        subprocess.run(["keytool", "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
                        "-validity", "825", "-dname", self.BROKER_PRINCIPAL, "-ext",
                        "SAN=ip:127.0.0.1,dns:localhost", "-storetype", "PKCS12", "-keystore", str(store), *pw],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["keytool", "-exportcert", "-rfc", "-alias", "broker", "-keystore", str(store), *pw,
                        "-file", str(self.ca_file)], check=True, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        os.chmod(store, 0o600)

    def _listener_props(self) -> list[str]:
        self._ensure_tls()
        jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{KAFKA_ADMIN}" '
                f'password="{self.password(KAFKA_ADMIN)}";')
        return [f"listeners=SASL_SSL://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=SASL_SSL://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=SASL_SSL",
                # The controller listener is TLS with client certificates: the broker presents its own and is the
                # super user BROKER_PRINCIPAL there. Plaintext would make that principal User:ANONYMOUS, a super user
                # for anyone who can reach the port.
                "listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL",
                "listener.name.controller.ssl.client.auth=required",
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
                f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}",
                f"ssl.keystore.location={self.tls_dir / 'broker.p12'}",
                "ssl.keystore.type=PKCS12",
                f"ssl.keystore.password={self._keystore_password()}",
                # Inter-broker connections are TLS clients too: they trust the broker's own certificate.
                f"ssl.truststore.location={self.ca_file}",
                "ssl.truststore.type=PEM",
                "ssl.client.auth=none",
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                f"super.users=User:{KAFKA_ADMIN};User:{self.BROKER_PRINCIPAL}",
                "allow.everyone.if.no.acl.found=false"]

    def _write_config(self) -> Path:
        props = super()._write_config()
        os.chmod(props, 0o600)  # it holds the admin's and the key store's passwords
        return props

    def _format_args(self) -> list[str]:
        # The one password on a command line: the storage tool takes the bootstrap admin's no other way; the
        # tool runs for a second, once, before the broker ever starts.
        return ["--add-scram", f"SCRAM-SHA-512=[name={KAFKA_ADMIN},password={self.password(KAFKA_ADMIN)}]"]

    def _after_start(self) -> None:
        from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                           UserScramCredentialUpsertion)

        client = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0, **self.client_conf()})
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
        ups = [UserScramCredentialUpsertion(user, info, self.password(user).encode()) for user in KAFKA_ROLES]
        for fut in client.alter_user_scram_credentials(ups).values():
            fut.result()
        for fut in client.create_acls(_acl_bindings(kafka_acls(self.cfg or load_config()))).values():
            fut.result()


def kafka_answers(bootstrap: str, conf: dict[str, str] | None = None) -> bool:
    """`conf`: librdkafka security properties (a secured broker answers its admin only)."""
    from confluent_kafka.admin import AdminClient

    try:
        # log_level 0: librdkafka would log every refused connection while the broker boots.
        client = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, **(conf or {})})
        return bool(client.list_topics(timeout=2).brokers)
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
