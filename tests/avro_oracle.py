"""Apache Avro's Java decoder as the oracle of ours (udfs/java AvroDecoder): tests/java/.../AvroOracle.java, compiled
against our function jar and Avro Java (infra/avro/pom.xml, fetched by Maven like the other jars), and a small Avro
binary encoder that can write any value of any schema, including the encodings fastavro never writes (blocks with
byte sizes, a chosen union branch).

`python -m tests.avro_oracle bench` measures decode throughput of both on the same records (docs/decoder.md)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from fastavro import parse_schema

from pipelines.serde import MARKER, _fingerprint, _named, java_type

ROOT = Path(__file__).resolve().parent.parent
JAVA_SRC = ROOT / "tests" / "java"
OUT = ROOT / "build" / "avro-oracle"


def classpath() -> str:
    """Compiled oracle (and benchmark) classes, our function jar, Avro Java and its dependencies, the Flink jars."""
    from infra.services import ensure_avro_jars
    from tests.flink_util import udf_classpath

    cp = os.pathsep.join([udf_classpath(), *map(str, sorted(ensure_avro_jars().glob("*.jar")))])
    sources = sorted(JAVA_SRC.rglob("*.java"))
    stamp = OUT / ".stamp"
    newest = max(p.stat().st_mtime for p in [*sources, Path(udf_classpath().split(os.pathsep)[0])])
    if not stamp.exists() or stamp.stat().st_mtime < newest:
        OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run(["javac", "--release", "11", "-nowarn", "-cp", cp, "-d", str(OUT), *map(str, sources)],
                       check=True, timeout=300)
        stamp.touch()
    return os.pathsep.join([str(OUT), cp])


def fingerprint(schema: dict) -> bytes:
    return _fingerprint(parse_schema(schema, _write_hint=False))


def write_schemas(tmp: Path, writers: list[dict], readers: dict[str, dict]) -> tuple[Path, Path]:
    """The index (our notation) and the JSON file the oracle reads: writers by fingerprint, readers by name."""
    index, js = ["# test index"], ["# test schemas"]
    for w in writers:
        parsed = parse_schema(w, _write_hint=False)
        fp = fingerprint(w).hex()
        index.append(f"{fp}\t{parsed['name']}\t{java_type(parsed, _named(parsed))}")
        js.append(f"{fp}\t{json.dumps(w)}")
    for name, r in readers.items():
        parsed = parse_schema(r, _write_hint=False)
        index.append(f"reader:{name}\t{parsed['name']}\t{java_type(parsed, _named(parsed))}")
        js.append(f"reader:{name}\t{json.dumps(r)}")
    (tmp / "index.tsv").write_text("\n".join(index) + "\n")
    (tmp / "schemas.tsv").write_text("\n".join(js) + "\n")
    return tmp / "index.tsv", tmp / "schemas.tsv"


def run(tmp: Path, writers: list[dict], readers: dict[str, dict], lines: list[str]) -> list[list[str]]:
    """Runs the oracle on `lines` (READER \\t HEX ...); returns each output line's columns."""
    index, js = write_schemas(tmp, writers, readers)
    out = subprocess.run(["java", "-Xmx512m", "-cp", classpath(), "io.streamscore.udfs.AvroOracle", str(index),
                          str(js)], input="".join(line + "\n" for line in lines), capture_output=True, text=True,
                         timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-4000:])
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert len(rows) == len(lines), (len(rows), len(lines), out.stderr[-2000:])
    return rows


# ----------------------------------------------------------------------------------------- Avro binary encoder

def zigzag(n: int) -> bytes:
    """A long's zigzag varint (n in the signed 64-bit range)."""
    v = (n << 1) ^ (n >> 63) if n < 0 else n << 1
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class Encoder:
    """Encodes values of a (JSON) schema. A union value is (branch index, value); `blocks` is a random.Random
    whose choices split arrays and maps into blocks, some with negative counts and byte sizes (the spec allows
    both)."""

    def __init__(self, schema: dict, rng=None):
        self.named: dict[str, Any] = {}
        self.rng = rng
        self._collect(schema, None)

    def _collect(self, t: Any, ns: str | None) -> None:
        if isinstance(t, list):
            for b in t:
                self._collect(b, ns)
        elif isinstance(t, dict):
            if t["type"] in ("record", "enum", "fixed"):
                full = self.full(t["name"], t.get("namespace", ns))
                self.named[full] = t
                ns = full.rpartition(".")[0] or None
            for f in t.get("fields", []):
                self._collect(f["type"], ns)
            for k in ("items", "values"):
                if k in t:
                    self._collect(t[k], ns)

    @staticmethod
    def full(name: str, ns: str | None) -> str:
        return name if "." in name or not ns else f"{ns}.{name}"

    def resolve(self, t: Any) -> Any:
        if isinstance(t, str) and t not in ("null", "boolean", "int", "long", "float", "double", "bytes", "string"):
            return self.named[t] if t in self.named else next(v for k, v in self.named.items()
                                                              if k.rpartition(".")[2] == t)
        return t

    def encode(self, t: Any, v: Any) -> bytes:
        t = self.resolve(t)
        if isinstance(t, list):
            i, value = v
            return zigzag(i) + self.encode(t[i], value)
        kind = t if isinstance(t, str) else t["type"]
        if isinstance(kind, (dict, list)):
            return self.encode(kind, v)
        if kind == "null":
            return b""
        if kind == "boolean":
            return b"\x01" if v else b"\x00"
        if kind in ("int", "long"):
            return zigzag(v)
        if kind == "float":
            return struct.pack("<f", v)
        if kind == "double":
            return struct.pack("<d", v)
        if kind in ("bytes", "string"):
            raw = v.encode() if isinstance(v, str) else v
            return zigzag(len(raw)) + raw
        if kind == "fixed":
            return v
        if kind == "enum":
            return zigzag(t["symbols"].index(v))
        if kind == "record":
            return b"".join(self.encode(f["type"], v[f["name"]]) for f in t["fields"])
        items = v if kind == "array" else list(v.items())
        enc = [self.encode(t["items"], x) if kind == "array" else zigzag(len(x[0].encode())) + x[0].encode()
               + self.encode(t["values"], x[1]) for x in items]
        out = bytearray()
        i = 0
        while i < len(enc):
            n = self.rng.randint(1, len(enc) - i) if self.rng else len(enc) - i
            block = b"".join(enc[i:i + n])
            out += zigzag(-n) + zigzag(len(block)) if self.rng and self.rng.random() < 0.3 else zigzag(n)
            out += block
            i += n
        return bytes(out + b"\x00")


def single_object(schema: dict, body: bytes) -> bytes:
    return MARKER + fingerprint(schema) + body


if __name__ == "__main__" and sys.argv[1:2] == ["bench"]:
    from tests.bench_decoder import main

    sys.exit(main(sys.argv[2:]))
