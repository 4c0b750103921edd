"""Decode throughput of our JVM decoder (DecodeTransaction) against Apache Avro Java behind the same SQL function,
on the same records (tests/java/.../AvroDecodeBench.java): `python -m tests.bench_decoder [--rounds 5]
[--seconds 2] [--records 10000]`. One thread, both decoders alternating per round after a warm-up round of each;
prints each round and the median records/s per writer (docs/decoder.md has the method and the numbers)."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import tempfile
from pathlib import Path

from pipelines.serde import SCHEMA_DIR, load_schema_file
from tests import avro_oracle


def records(schema: dict, n: int, rng: random.Random) -> list[bytes]:
    enc = avro_oracle.Encoder(schema)
    names = {f["name"] for f in schema["fields"]}
    out = []
    for i in range(n):
        tx = {"transaction_id": 10**9 + i, "customer_id": rng.randrange(5000), "terminal_id": rng.randrange(10000),
              "amount": round(rng.uniform(0, 300), 2), "event_time": 1_522_540_831_000 + i * 1000,
              "produced_at": 1_795_000_000_000 + i, "currency": "EUR"}
        if "merchant_category" in names:
            tx["merchant_category"] = rng.choice([(0, None), (1, "5411"), (1, "5812")])
            tx["channel"] = rng.choice(["UNKNOWN", "POS", "ONLINE", "ATM"])
        out.append(avro_oracle.single_object(schema, enc.encode(schema, tx)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--records", type=int, default=10_000)
    args = ap.parse_args(argv)
    v1, v3 = (load_schema_file(SCHEMA_DIR / "history" / f"transaction.v{i}.avsc") for i in (1, 3))
    v2 = load_schema_file(SCHEMA_DIR / "transaction.avsc")
    cp = avro_oracle.classpath()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        _, js = avro_oracle.write_schemas(Path(tmp), [v1, v2, v3], {"transaction": v2})
        for name, w in (("v2 (the reader's own)", v2), ("v3 (newer writer)", v3), ("v1 (older writer)", v1)):
            path = Path(tmp) / "records.hex"
            path.write_text("".join(r.hex() + "\n" for r in records(w, args.records, random.Random(7))))
            out = subprocess.run(["java", "-Xmx1g", "-XX:+UseParallelGC", "-cp", cp,
                                  "io.streamscore.udfs.AvroDecodeBench", str(js), str(path), str(args.rounds),
                                  str(args.seconds)], capture_output=True, text=True, check=True).stdout
            rows = [line.split("\t") for line in out.splitlines()]
            per = {d: [int(r[1]) for r in rows if r[0] == d] for d in ("ours", "avro-java", "avro-java-strict-utf8")}
            results[name] = {d: {"median": statistics.median(v), "min": min(v), "max": max(v)} for d, v in per.items()}
            print(name, json.dumps(results[name]), flush=True)
    print(json.dumps({"settings": vars(args), "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
