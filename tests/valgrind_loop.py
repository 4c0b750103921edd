"""A small scoring loop for `make native-valgrind`: load a tiny random model, score, hit the error paths."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from udfs import scoring as S


def main(model_dir: str) -> None:
    import streamscore_native as sn

    d = 6
    names = [f"f{i}" for i in range(d)]
    out = Path(model_dir)
    if not (out / "model.pt").exists():
        S.write_mlp_artifact(out, S.random_mlp_weights(d, (16, 8), seed=0), names, [True, False] * 3,
                             [0.5] * d, [2.0] * d, 5.0, version="valgrind")
    rng = np.random.default_rng(0)
    for fused in (True, False):
        scorer = sn.load_fraud_scorer(out, device="cpu", fused=fused)
        total = 0.0
        for i in range(60):
            n = (1, 7, 64, 300)[i % 4]
            cols = [rng.normal(0, 2, n).astype(np.float32) for _ in range(d)]
            cols[1] = rng.integers(0, 100, n).astype(np.int64)
            total += float(scorer.score(cols).sum())
            scorer.preprocess(cols)
        bad = [np.ones(4, np.float32)] * d
        for columns in ([np.ones(4)] * d, bad[:-1], [*bad[:-1], np.ones(5, np.float32)],
                        [*bad[:-1], np.array([1, np.nan, 1, 1], np.float32)], [*bad[:-1], np.ones(8, np.float32)[::2]]):
            try:
                scorer.score(columns)
            except (TypeError, ValueError):
                pass
        del scorer
    model = sn.Model(str(out / "model.pt"), "cpu")
    for _ in range(20):
        model.run([rng.normal(0, 1, (5, d)).astype(np.float32)])
    for path in (out / "missing.pt", out / "meta.json"):
        try:
            sn.Model(str(path), "cpu")
        except (FileNotFoundError, RuntimeError):
            pass
    print(f"valgrind loop done ({total:.3f})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cpp_ext/build/valgrind/model")
