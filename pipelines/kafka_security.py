"""The one mapping from the config's security settings (kafka.security_protocol, sasl_*, ssl_*; redis.username /
password) to what each client library wants (issue 24).

- librdkafka (confluent-kafka: the producers, the profile publisher, the dashboard, the lag exporter, the
  benchmarks, the tests): `librdkafka_conf`.
- The Java Kafka client inside the Flink connector (its `properties.*` table options): `java_properties`. Its names
  differ: `sasl.jaas.config` with the ScramLoginModule (shaded in flink-sql-connector-kafka), and the CA file as a
  PEM trust store (`ssl.truststore.type = PEM`, Kafka 2.7+).
- redis-py: `redis_kwargs`.

Secrets are read here, from the config value or (preferred) the file it names, and are never put in a URL, a
process argument or a log line. `redacted` replaces them in a mapping for printing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

# flink-sql-connector-kafka relocates the Kafka client under this prefix, its login modules included.
SHADED = "org.apache.flink.kafka.shaded."
LOGIN_MODULES = {"PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
                 "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
                 "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule"}
SECRET_KEYS = ("sasl.password", "sasl.jaas.config", "ssl.key.password", "ssl.keystore.password",
               "ssl.truststore.password", "password")


def _secret(value: str, file: str) -> str:
    """The secret in `file` (its first line) when one is named, else `value`."""
    if file:
        lines = Path(file).read_text().splitlines()
        return lines[0].strip() if lines else ""
    return value


def sasl_password(kafka) -> str:
    return _secret(kafka.sasl_password, kafka.sasl_password_file)


def _sasl(kafka) -> bool:
    return kafka.security_protocol.startswith("SASL_")


def _ssl(kafka) -> bool:
    return kafka.security_protocol in ("SSL", "SASL_SSL")


def librdkafka_conf(kafka) -> dict[str, str]:
    """librdkafka properties for `kafka` (a KafkaConfig): empty for PLAINTEXT, so plain clients stay as they were."""
    if kafka.security_protocol == "PLAINTEXT":
        return {}
    conf = {"security.protocol": kafka.security_protocol.lower()}
    if _sasl(kafka):
        conf.update({"sasl.mechanism": kafka.sasl_mechanism, "sasl.username": kafka.sasl_username,
                     "sasl.password": sasl_password(kafka)})
    if _ssl(kafka):
        if kafka.ssl_ca_location:
            conf["ssl.ca.location"] = kafka.ssl_ca_location
        if kafka.ssl_certificate_location:
            conf["ssl.certificate.location"] = kafka.ssl_certificate_location
        if kafka.ssl_key_location:
            conf["ssl.key.location"] = kafka.ssl_key_location
        conf["ssl.endpoint.identification.algorithm"] = "https" if kafka.ssl_endpoint_identification else "none"
    return conf


def _jaas_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def java_properties(kafka, *, shaded: bool = True) -> dict[str, str]:
    """The Java client's properties for `kafka` (without Flink's `properties.` prefix). `shaded`: the login module
    under the relocated name flink-sql-connector-kafka uses."""
    if kafka.security_protocol == "PLAINTEXT":
        return {}
    props = {"security.protocol": kafka.security_protocol}
    if _sasl(kafka):
        module = (SHADED if shaded else "") + LOGIN_MODULES[kafka.sasl_mechanism]
        props["sasl.mechanism"] = kafka.sasl_mechanism
        props["sasl.jaas.config"] = (f"{module} required username={_jaas_quote(kafka.sasl_username)} "
                                     f"password={_jaas_quote(sasl_password(kafka))};")
    if _ssl(kafka):
        if kafka.ssl_ca_location:
            props["ssl.truststore.type"] = "PEM"
            props["ssl.truststore.location"] = kafka.ssl_ca_location
        if kafka.ssl_certificate_location and kafka.ssl_key_location:
            # A PEM key store: the certificate chain and the key in one file is what the Java client reads.
            props["ssl.keystore.type"] = "PEM"
            props["ssl.keystore.location"] = kafka.ssl_certificate_location
        props["ssl.endpoint.identification.algorithm"] = "https" if kafka.ssl_endpoint_identification else ""
    return props


def flink_table_options(kafka) -> str:
    """java_properties as `'properties.<k>' = '<v>'` lines of a CREATE TABLE ... WITH (...), each with a leading
    comma, ready to append (SQL string quotes doubled)."""
    return "".join(f",\n          'properties.{k}' = '{str(v).replace(chr(39), chr(39) * 2)}'"
                   for k, v in java_properties(kafka).items())


def topic_layout(kafka, brokers: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for new topics: the configured ones, else min(3, brokers) and
    RF - 1 (at least 1)."""
    rf = kafka.replication_factor or max(1, min(3, brokers))
    isr = kafka.min_insync_replicas or max(1, rf - 1)
    if rf > max(brokers, 1):
        raise ValueError(f"kafka.replication_factor {rf} exceeds the {brokers} broker(s) of the cluster")
    return rf, min(isr, rf)


def redis_kwargs(redis_cfg) -> dict[str, str]:
    """username/password for redis.Redis.from_url(url, **redis_kwargs(cfg.redis)); empty when none is set."""
    out = {}
    password = _secret(redis_cfg.password, redis_cfg.password_file)
    if password:
        out["password"] = password
    if redis_cfg.username:
        out["username"] = redis_cfg.username
    return out


def redacted(conf: Mapping[str, object]) -> dict[str, object]:
    """`conf` with every secret replaced, for logs and error messages."""
    return {k: ("***" if any(k.endswith(s) for s in SECRET_KEYS) else v) for k, v in conf.items()}
