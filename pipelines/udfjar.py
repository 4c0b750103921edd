"""Where our Java SQL functions' jar lives and what it is built from.

`make jars` (infra/services.py `ensure_udf_jar`) builds it as part of the install; a job only checks that the jar
is there and newer than its inputs, so a job's start never runs javac (and a cluster image never needs a JDK)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UDF_SRC = ROOT / "udfs" / "java"
UDF_JAR = ROOT / "build" / "flink-udfs" / "streamscore-udfs.jar"


def inputs() -> list[Path]:
    """The Java sources, plus the .avsc files and serde.py the decoders' schema index is derived from."""
    return [*sorted(UDF_SRC.rglob("*.java")), *sorted((ROOT / "schemas").rglob("*.avsc")),
            ROOT / "pipelines" / "serde.py"]


def stale_inputs(jar: Path = UDF_JAR) -> list[Path]:
    """Inputs newer than the jar (all of them when there is no jar)."""
    if not jar.exists():
        return inputs()
    built = jar.stat().st_mtime
    return [p for p in inputs() if p.stat().st_mtime > built]


def checked_jar(jar: Path = UDF_JAR) -> Path:
    """The jar, or an error that says how to build it."""
    stale = stale_inputs(jar)
    if stale:
        what = "is missing" if not jar.exists() else f"is older than {stale[0].relative_to(ROOT)}"
        raise RuntimeError(f"{jar.relative_to(ROOT)} {what}: run `make jars` (python -m infra.services flink-jars)")
    return jar
