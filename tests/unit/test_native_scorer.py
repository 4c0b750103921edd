"""The native scorer (cpp_ext/, streamscore_native) against the pure-numpy reference (udfs/scoring.py).

Every bad-input case runs on both implementations and must raise the same exception type with the same message.
Models are tiny random MLPs in the real artifact format; the real-data parity test uses the trained model and
pipelines/features.py when they exist.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

try:
    import streamscore_native as sn
except ImportError as exc:  # pragma: no cover - a clear message instead of a bare collection error
    raise ImportError(f"streamscore_native is not installed ({exc}); run `make native`") from exc

from pipelines.config import ROOT, load_config
from udfs import scoring as S

FEATURES = ["amount", "cust_cnt_1d", "cust_mean_1d", "term_risk_7d", "hour_of_day", "is_night"]
LOG1P = [True, True, True, False, False, False]
ATOL = 1e-5


def _write(dir_: Path, d: int = len(FEATURES), hidden=(16, 8), seed: int = 0, features=None, **meta_over) -> Path:
    rng = np.random.default_rng(seed)
    features = features or (FEATURES if d == len(FEATURES) else [f"f{i}" for i in range(d)])
    log1p = LOG1P if d == len(FEATURES) else [i % 2 == 0 for i in range(d)]
    out = S.write_mlp_artifact(dir_, S.random_mlp_weights(d, hidden, seed=seed), features, log1p,
                               rng.normal(0.5, 1.0, d), rng.uniform(0.5, 2.0, d), 5.0, version="test-v1")
    if meta_over:
        meta = json.loads((out / "meta.json").read_text())
        meta.update(meta_over)
        (out / "meta.json").write_text(json.dumps(meta))
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("fraud") / "test-v1")


@pytest.fixture(scope="module")
def native(model_dir) -> S.NativeScorer:
    return S.NativeScorer(model_dir, device="cpu")


@pytest.fixture(scope="module")
def reference(model_dir) -> S.ReferenceScorer:
    return S.ReferenceScorer(model_dir)


def _columns(n: int, seed: int = 1, scale: float = 3.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    cols = [rng.normal(0, scale, n).astype(np.float32) for _ in FEATURES]
    cols[1] = rng.integers(-5, 50, n).astype(np.int64)  # an int64 column
    cols[0] = np.abs(cols[0]) * 100
    return cols


# ----------------------------------------------------------------------------------------------------------------
# Parity


@pytest.mark.parametrize("n", [1, 2, 7, 64, 1000, 4097])
def test_parity_random(native, reference, n):
    cols = _columns(n, seed=n)
    a, b = native.score(cols), reference.score(cols)
    assert a.dtype == np.float32 and b.dtype == np.float32 and a.shape == b.shape == (n,)
    np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)
    # The preprocessing is computed the same way (float64, then float32) on both sides.
    np.testing.assert_allclose(native.preprocess(cols), reference.preprocess(cols), atol=1e-6, rtol=0)


def test_parity_extreme(native, reference):
    f32 = np.finfo(np.float32)
    special = np.array([0.0, -0.0, 1e-45, -1e-45, f32.tiny, 1.0, -1.0, 1e10, -1e10, 1e30, -1e30, f32.max, -f32.max,
                        3.0e38, 123456.789], dtype=np.float32)
    ints = np.array([0, 1, -1, 2**31, -2**31, 2**53 + 1, 2**62, np.iinfo(np.int64).max, np.iinfo(np.int64).min,
                     -7, 99, 10**12, -10**12, 5, 6], dtype=np.int64)
    n = len(special)
    rng = np.random.default_rng(3)
    cols = [rng.permutation(special) for _ in FEATURES]
    cols[1] = ints
    a, b = native.score(cols), reference.score(cols)
    assert np.all(np.isfinite(a)) and np.all((a >= 0) & (a <= 1))
    np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)
    x = native.preprocess(cols)
    assert x.shape == (n, len(FEATURES)) and np.all(np.abs(x) <= 5.0)
    np.testing.assert_allclose(x, reference.preprocess(cols), atol=1e-6, rtol=0)


def test_saturated_outputs_match(tmp_path):
    # Large weights push logits to +-hundreds: both sides must saturate to exactly 0/1 without overflow warnings.
    d = len(FEATURES)
    w = S.random_mlp_weights(d, (8,), seed=5)
    w = [(wk * 200, bk) for wk, bk in w]
    S.write_mlp_artifact(tmp_path, w, FEATURES, LOG1P, [0.0] * d, [1.0] * d, 5.0, version="sat")
    nat, ref = S.NativeScorer(tmp_path, device="cpu"), S.ReferenceScorer(tmp_path)
    cols = _columns(500, seed=9)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        b = ref.score(cols)
    np.testing.assert_allclose(nat.score(cols), b, atol=ATOL, rtol=0)


def test_fused_path_matches_forward(model_dir):
    fused = S.NativeScorer(model_dir, device="cpu", fused=True)
    plain = S.NativeScorer(model_dir, device="cpu", fused=False)
    assert fused.fast_path and not plain.fast_path
    for n in (1, 64, 3000):
        cols = _columns(n, seed=n + 11)
        np.testing.assert_allclose(fused.score(cols), plain.score(cols), atol=1e-6, rtol=0)


def test_cpu_kernels_are_listed_and_auto_picks_the_best(model_dir):
    isas = sn.cpu_kernels()
    assert isas and isas[-1] == "generic" and set(isas) <= {"avx512", "avx2", "generic"}
    assert S.NativeScorer(model_dir, device="cpu").kernel == isas[0]
    assert S.NativeScorer(model_dir, device="cpu", cpu_kernel="aten").kernel == "aten"
    assert S.NativeScorer(model_dir, device="cpu", fused=False).kernel == "torchscript"


@pytest.mark.parametrize("kernel", sn.cpu_kernels() + ["aten"])
@pytest.mark.parametrize("hidden", [(16, 8), (5, 3), (), (256, 128, 64), (33,)])
def test_every_cpu_kernel_matches_reference(tmp_path, kernel, hidden):
    # Widths that are not multiples of the vector lanes, a logistic regression (no hidden layer), the production
    # shape; batch sizes that leave remainder rows after the register tiles (8, 6, 4 rows).
    d = len(FEATURES)
    rng = np.random.default_rng(4)
    S.write_mlp_artifact(tmp_path, S.random_mlp_weights(d, hidden, seed=2), FEATURES, LOG1P,
                         rng.normal(0.5, 1.0, d), rng.uniform(0.5, 2.0, d), 5.0, version="k")
    nat = S.NativeScorer(tmp_path, device="cpu", cpu_kernel=kernel)
    ref = S.ReferenceScorer(tmp_path)
    assert nat.kernel == kernel and nat._impl.probe_max_diff <= 1e-5
    for n in (1, 5, 7, 13, 64, 1001):
        cols = _columns(n, seed=n + 5)
        np.testing.assert_allclose(nat.score(cols), ref.score(cols), atol=ATOL, rtol=0)
        np.testing.assert_allclose(nat.preprocess(cols), ref.preprocess(cols), atol=1e-6, rtol=0)


def test_vectorised_log1p_matches_numpy_bit_for_bit(tmp_path):
    # The kernels' branch-free log1p against numpy's, over 16 decades and the edges; no clipping (clip 1e30).
    d = 1
    S.write_mlp_artifact(tmp_path, S.random_mlp_weights(d, (4,), seed=1), ["x"], [True], [0.0], [1.0], 1e30,
                         version="log1p")
    vals = np.concatenate([np.array([0.0, 1e-45, 1e-30, 1e-8, 0.5, 1.0, 2.0, 3.0e38, -5.0], np.float32),
                           (10.0 ** np.random.default_rng(0).uniform(-8, 8, 20000)).astype(np.float32)])
    for kernel in sn.cpu_kernels():
        got = S.NativeScorer(tmp_path, device="cpu", cpu_kernel=kernel).preprocess([vals])[:, 0]
        want = np.log1p(np.maximum(vals.astype(np.float64), 0.0)).astype(np.float32)
        assert np.array_equal(got, want), (kernel, np.flatnonzero(got != want)[:5])


def test_unknown_cpu_kernel_is_a_clear_error(model_dir):
    with pytest.raises(ValueError, match="CPU kernel 'avx9000' is not available on this machine"):
        S.NativeScorer(model_dir, device="cpu", cpu_kernel="avx9000")


def test_non_mlp_module_uses_forward(tmp_path):
    # A module whose parameters are not a Linear chain (a tanh in between): the fused path must not be used.
    import torch

    class Odd(torch.nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.a = torch.nn.Linear(d, 4)
            self.b = torch.nn.Linear(4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.b(torch.tanh(self.a(x)))).squeeze(-1)

    d = len(FEATURES)
    torch.manual_seed(0)
    m = Odd(d).eval()
    torch.jit.script(m).save(str(tmp_path / "model.pt"))
    scorer = sn.FraudScorer(str(tmp_path / "model.pt"), FEATURES, LOG1P, [0.0] * d, [1.0] * d, 5.0, device="cpu")
    assert not scorer.fast_path
    cols = _columns(100)
    x = scorer.preprocess(cols)
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(scorer.score(cols), want, atol=1e-6, rtol=0)


def test_load_fraud_scorer_and_attributes(model_dir):
    s = sn.load_fraud_scorer(model_dir, device="cpu")
    assert s.input_width == len(FEATURES) and s.features == FEATURES and s.device == "cpu"
    assert s.model_path.endswith("model.pt")
    assert sn.resolve_device("cpu") == "cpu"
    assert sn.resolve_device("auto") == ("cuda:0" if sn.cuda_available() else "cpu")


def test_inputs_are_not_modified_and_readonly_ok(native):
    cols = _columns(50)
    copies = [c.copy() for c in cols]
    for c in cols:
        c.setflags(write=False)
    native.score(cols)
    for c, k in zip(cols, copies):
        np.testing.assert_array_equal(c, k)


# ----------------------------------------------------------------------------------------------------------------
# Bad input: the same error from both implementations


def _bad_cases():
    n = 10
    good = _columns(n)

    def replace(j, value):
        cols = list(good)
        cols[j] = value
        return cols

    nan = replace(2, np.where(np.arange(n) == 3, np.nan, 1.0).astype(np.float32))
    inf = replace(4, np.where(np.arange(n) == 7, np.inf, 1.0).astype(np.float32))
    ninf = replace(0, np.where(np.arange(n) == 0, -np.inf, 1.0).astype(np.float32))
    big_endian = replace(3, good[3].astype(">f4"))
    return {
        "not-a-sequence": (5, TypeError, "columns must be a sequence"),
        "2-d-array-as-columns": (np.stack(good[:1] * len(FEATURES)), TypeError, "columns must be a sequence"),
        "string": ("amount", TypeError, "columns must be a sequence"),
        "too-few-columns": (good[:-1], ValueError, "expected 6 columns"),
        "too-many-columns": (good + [good[0]], ValueError, "expected 6 columns"),
        "list-column": (replace(1, [1, 2, 3]), TypeError, r"column 1 \('cust_cnt_1d'\) must be a numpy array"),
        "2-d-column": (replace(2, good[2].reshape(2, 5)), ValueError, r"must be 1-D, got shape \(2, 5\)"),
        "0-d-column": (replace(2, np.float32(1.0).reshape(())), ValueError, r"must be 1-D, got shape \(\)"),
        "float64": (replace(0, good[0].astype(np.float64)), TypeError, "has dtype float64; expected float32 or int64"),
        "int32": (replace(1, good[1].astype(np.int32)), TypeError, "has dtype int32"),
        "bool": (replace(5, good[5] > 0), TypeError, "has dtype bool"),
        "big-endian": (big_endian, TypeError, "has dtype >f4"),
        "length-mismatch": (replace(4, good[4][:-1]), ValueError, r"column 4 \('hour_of_day'\) has length 9, expected 10"),
        "non-contiguous": (replace(3, np.repeat(good[3], 2)[::2]), ValueError, "is not contiguous"),
        "nan": (nan, ValueError, r"column 2 \('cust_mean_1d'\) has a non-finite value \(nan\) at row 3"),
        "inf": (inf, ValueError, r"column 4 \('hour_of_day'\) has a non-finite value \(inf\) at row 7"),
        "-inf": (ninf, ValueError, r"column 0 \('amount'\) has a non-finite value \(-inf\) at row 0"),
    }


BAD = _bad_cases()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_same_error(native, reference, case):
    columns, exc, pattern = BAD[case]
    with pytest.raises(exc, match=pattern) as e_native:
        native.score(columns)
    with pytest.raises(exc, match=pattern) as e_ref:
        reference.score(columns)
    assert str(e_native.value) == str(e_ref.value)
    # The scorer is still usable afterwards.
    np.testing.assert_allclose(native.score(_columns(5)), reference.score(_columns(5)), atol=ATOL)


def test_memoryview_and_array_module_columns(native, reference):
    import array

    cols = _columns(8)
    cols[0] = memoryview(cols[0])
    cols[3] = array.array("f", cols[3].tolist())
    np.testing.assert_allclose(native.score(cols), reference.score(cols), atol=ATOL)
    bad = list(_columns(8))
    bad[2] = array.array("d", [1.0] * 8)
    with pytest.raises(TypeError, match="has dtype d; expected float32 or int64") as a:
        native.score(bad)
    with pytest.raises(TypeError) as b:
        reference.score(bad)
    assert str(a.value) == str(b.value)


def test_empty_batch_returns_empty(native, reference):
    # Documented choice: n == 0 is not an error; the result is an empty float32 array (columns still validated).
    cols = [np.empty(0, np.float32) for _ in FEATURES]
    cols[1] = np.empty(0, np.int64)
    for s in (native, reference):
        out = s.score(cols)
        assert out.dtype == np.float32 and out.shape == (0,)
    with pytest.raises(TypeError, match="has dtype float64"):
        native.score([np.empty(0)] * len(FEATURES))


def test_missing_model_file(model_dir, tmp_path):
    (tmp_path / "meta.json").write_text((model_dir / "meta.json").read_text())
    shutil.copy(model_dir / "weights.npz", tmp_path / "weights.npz")
    with pytest.raises(FileNotFoundError, match="model file not found"):
        S.NativeScorer(tmp_path, device="cpu")
    with pytest.raises(FileNotFoundError):
        sn.Model(str(tmp_path / "nope.pt"), "cpu")
    (tmp_path / "weights.npz").unlink()
    with pytest.raises(FileNotFoundError, match="weights.npz"):
        S.ReferenceScorer(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not a zip file at all" * 10, b"PK\x03\x04" + b"\x00" * 200])
def test_corrupt_model_file(model_dir, tmp_path, content):
    shutil.copytree(model_dir, tmp_path / "m")
    (tmp_path / "m" / "model.pt").write_bytes(content)
    with pytest.raises(RuntimeError, match="cannot load TorchScript model"):
        S.NativeScorer(tmp_path / "m", device="cpu")


def test_truncated_model_file(model_dir, tmp_path):
    shutil.copytree(model_dir, tmp_path / "m")
    data = (model_dir / "model.pt").read_bytes()
    (tmp_path / "m" / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match="cannot load TorchScript model"):
        S.NativeScorer(tmp_path / "m", device="cpu")


def test_model_width_does_not_match_meta(tmp_path):
    d = len(FEATURES)
    # A model for d + 1 inputs behind a meta.json with d features.
    _write(tmp_path / "wide", d=d + 1)
    _write(tmp_path / "ok")
    shutil.copy(tmp_path / "wide" / "model.pt", tmp_path / "ok" / "model.pt")
    with pytest.raises(ValueError, match=f"does not accept input of width {d}"):
        S.NativeScorer(tmp_path / "ok", device="cpu")
    shutil.copy(tmp_path / "wide" / "weights.npz", tmp_path / "ok" / "weights.npz")
    with pytest.raises(ValueError, match=f"the input width from meta.json is {d}"):
        S.ReferenceScorer(tmp_path / "ok")


def test_model_with_wrong_output_shape(tmp_path):
    import torch

    d = len(FEATURES)
    torch.jit.script(torch.nn.Linear(d, 2)).save(str(tmp_path / "model.pt"))
    with pytest.raises(ValueError, match=r"returned shape \[256, 2\]"):
        sn.FraudScorer(str(tmp_path / "model.pt"), FEATURES, LOG1P, [0.0] * d, [1.0] * d, 5.0, device="cpu")


def test_model_returning_logits_is_rejected(tmp_path):
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(d, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x).squeeze(-1) * 100.0 - 50.0

    d = len(FEATURES)
    torch.jit.script(Logits(d)).save(str(tmp_path / "model.pt"))
    with pytest.raises(ValueError, match="does not output probabilities"):
        sn.FraudScorer(str(tmp_path / "model.pt"), FEATURES, LOG1P, [0.0] * d, [1.0] * d, 5.0, device="cpu")


@pytest.mark.parametrize("kwargs, pattern", [
    ({"log1p": LOG1P[:-1]}, "meta fields disagree"),
    ({"std": [1.0, 0.0, 1.0, 1.0, 1.0, 1.0]}, "std of feature 'cust_cnt_1d' must be finite and > 0"),
    ({"mean": [float("nan")] + [0.0] * 5}, "mean of feature 'amount' is not finite"),
    ({"clip": -1.0}, "clip must be finite and > 0"),
    ({"features": []}, "the feature list is empty"),
])
def test_bad_meta_rejected(model_dir, kwargs, pattern):
    d = len(FEATURES)
    args = {"features": FEATURES, "log1p": LOG1P, "mean": [0.0] * d, "std": [1.0] * d, "clip": 5.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        sn.FraudScorer(str(model_dir / "model.pt"), device="cpu", **args)


def test_bad_device(model_dir):
    with pytest.raises(ValueError, match="device must be"):
        S.NativeScorer(model_dir, device="tpu")
    if not sn.cuda_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            S.NativeScorer(model_dir, device="cuda")


# ----------------------------------------------------------------------------------------------------------------
# Threads and the GIL


def test_score_releases_the_gil(model_dir):
    scorer = sn.load_fraud_scorer(model_dir, device="cpu")
    n = 1_500_000
    cols = _columns(n, seed=2)
    t0 = time.perf_counter()
    scorer.score(cols)
    one_call = time.perf_counter() - t0
    window: dict[str, float] = {}

    def work():
        window["start"] = time.perf_counter()
        scorer.score(cols)
        window["end"] = time.perf_counter()

    ticks: list[float] = []
    th = threading.Thread(target=work)
    th.start()
    while th.is_alive():
        ticks.append(time.perf_counter())
        time.sleep(0)
    th.join()
    inside = [t for t in ticks if window["start"] <= t <= window["end"]]
    duration = window["end"] - window["start"]
    # Holding the GIL would freeze this loop for the whole call; released, it keeps ticking through the call.
    assert duration > 0.02, f"call too short to judge ({duration:.3f}s, single call {one_call:.3f}s)"
    assert len(inside) >= 10, f"main thread ran {len(inside)} times during a {duration:.3f}s call"
    gaps = np.diff([window["start"], *inside, window["end"]])
    assert gaps.max() < 0.5 * duration, f"main thread stalled {gaps.max():.3f}s of a {duration:.3f}s call"


def test_concurrent_threads_make_progress_and_agree(model_dir):
    scorer = sn.load_fraud_scorer(model_dir, device="cpu")
    batches = [_columns(n, seed=n) for n in (1, 33, 64, 500, 2048)]
    expected = [scorer.score(b) for b in batches]
    done = [0] * 4
    errors: list[BaseException] = []
    stop = time.perf_counter() + 1.0

    def worker(k: int) -> None:
        try:
            i = k
            while time.perf_counter() < stop or done[k] < 5:
                j = i % len(batches)
                np.testing.assert_array_equal(scorer.score(batches[j]), expected[j])
                done[k] += 1
                i += 1
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert all(c >= 5 for c in done), done


# ----------------------------------------------------------------------------------------------------------------
# The generic Model (also used for the sentiment transformer)


@pytest.fixture(scope="module")
def token_model(tmp_path_factory) -> tuple[str, object]:
    import torch

    class Pool(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(100, 8)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            e = self.emb(input_ids) * attention_mask.unsqueeze(-1).to(torch.float32)
            return e.sum(1) / attention_mask.sum(1, keepdim=True).clamp(min=1).to(torch.float32)

    torch.manual_seed(0)
    m = Pool().eval()
    path = tmp_path_factory.mktemp("tok") / "model.pt"
    torch.jit.script(m).save(str(path))
    return str(path), m


def test_model_run_int64_inputs(token_model):
    import torch

    path, m = token_model
    model = sn.Model(path, "cpu")
    assert model.device == "cpu" and model.path == path
    ids = np.random.default_rng(0).integers(0, 100, (3, 7)).astype(np.int64)
    mask = np.ones((3, 7), np.int64)
    mask[1, 4:] = 0
    out = model.run([ids, mask])
    with torch.no_grad():
        want = m(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert out.dtype == np.float32 and out.shape == (3, 8)
    np.testing.assert_allclose(out, want, atol=1e-6)


def test_model_run_bad_inputs(token_model):
    path, _ = token_model
    model = sn.Model(path, "cpu")
    ids = np.zeros((2, 4), np.int64)
    with pytest.raises(TypeError, match="input 1 must be a numpy array"):
        model.run([ids, [[1, 1, 1, 1]] * 2])
    with pytest.raises(ValueError, match="input 0 is not C-contiguous"):
        model.run([np.zeros((4, 2), np.int64).T, ids])
    with pytest.raises(RuntimeError, match="failed"):
        model.run([ids])  # wrong arity
    with pytest.raises(TypeError, match="inputs must be a list"):
        model.run(ids)
    with pytest.raises(TypeError, match="unsupported input dtype"):
        model.run([ids.astype(np.complex64), ids])


def test_model_run_tuple_and_dict_outputs(tmp_path):
    import torch
    from typing import Dict, Tuple

    class Multi(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
            return x * 2, {"sum": x.sum(1), "ids": x.to(torch.int64)}

    torch.jit.script(Multi()).save(str(tmp_path / "m.pt"))
    out = sn.Model(str(tmp_path / "m.pt"), "cpu").run([np.ones((2, 3), np.float64)])
    assert isinstance(out, tuple) and isinstance(out[1], dict)
    np.testing.assert_array_equal(out[0], np.full((2, 3), 2.0))
    assert out[1]["ids"].dtype == np.int64
    np.testing.assert_array_equal(out[1]["sum"], [3.0, 3.0])


def test_cuda_min_batch_needs_a_gpu(model_dir, reference):
    # On the CPU there is nothing to route: one scorer, as without the setting.
    s = S.NativeScorer(model_dir, device="cpu", cuda_min_batch=128)
    assert s._cpu_impl is None and s.cuda_min_batch == 128
    cols = _columns(10)
    np.testing.assert_allclose(s.score(cols), reference.score(cols), atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------------------------------------------
# CUDA: skipped only when there is no CUDA device


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.cuda
@pytest.mark.skipif(not _cuda_available(), reason="CUDA is not available (torch.cuda.is_available() is false)")
def test_cuda_scorer_matches_cpu(model_dir, token_model):
    assert sn.cuda_available() and sn.resolve_device("auto") == "cuda:0"
    gpu = S.NativeScorer(model_dir, device="cuda")
    cpu = S.NativeScorer(model_dir, device="cpu")
    ref = S.ReferenceScorer(model_dir)
    assert gpu.device == "cuda:0"
    for n in (1, 64, 1024, 70000, 64):  # grows, then reuses, the pinned staging buffers
        cols = _columns(n, seed=n)
        out = gpu.score(cols)
        assert out.dtype == np.float32 and out.shape == (n,)
        np.testing.assert_allclose(out, cpu.score(cols), atol=ATOL, rtol=0)
        np.testing.assert_allclose(out, ref.score(cols), atol=ATOL, rtol=0)
    # Errors on the CUDA path leave the scorer usable.
    bad = _columns(10)
    bad[2] = np.full(10, np.nan, np.float32)
    with pytest.raises(ValueError, match="non-finite"):
        gpu.score(bad)
    np.testing.assert_allclose(gpu.score(_columns(10)), cpu.score(_columns(10)), atol=ATOL)
    # Threads on one CUDA scorer.
    results: list[bool] = []

    def worker():
        c = _columns(300, seed=4)
        results.append(bool(np.allclose(gpu.score(c), cpu.score(c), atol=ATOL)))

    ts = [threading.Thread(target=worker) for _ in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert results == [True] * 4
    # Small batches on the CPU twin, large ones on the GPU; the same scores and the same errors either way.
    routed = S.NativeScorer(model_dir, device="cuda", cuda_min_batch=128)
    assert routed._cpu_impl is not None and routed.device == "cuda:0"
    for n in (1, 127, 128, 5000):
        cols = _columns(n, seed=n)
        np.testing.assert_allclose(routed.score(cols), ref.score(cols), atol=ATOL, rtol=0)
    for columns, exc, pattern in BAD.values():
        with pytest.raises(exc, match=pattern):
            routed.score(columns)
    # The generic Model on CUDA.
    path, _ = token_model
    ids = np.arange(12, dtype=np.int64).reshape(2, 6)
    mask = np.ones((2, 6), np.int64)
    np.testing.assert_allclose(sn.Model(path, "cuda").run([ids, mask]), sn.Model(path, "cpu").run([ids, mask]),
                               atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# The trained model on the real data


def _real_setup():
    cfg = load_config()  # STREAMSCORE_FRAUD__MODEL_DIR / __MODEL_VERSION select another model
    try:
        model_dir = S.resolve_model_dir(cfg)
    except FileNotFoundError as exc:
        pytest.skip(f"no trained fraud model ({exc})")
    try:
        from pipelines import features as F
    except ImportError as exc:
        pytest.skip(f"pipelines/features.py is not available ({exc})")
    if not hasattr(F, "FEATURE_NAMES") or not hasattr(F, "compute_features"):
        pytest.skip("pipelines/features.py lacks FEATURE_NAMES / compute_features")
    csv = cfg.path(cfg.replay.fraud_csv)
    if not csv.exists():
        pytest.skip(f"data file {csv} not found")
    return cfg, model_dir, F, csv


def test_parity_real_model_100k_events():
    cfg, model_dir, F, csv = _real_setup()
    meta = S.load_meta(model_dir)
    assert meta["features"] == list(F.FEATURE_NAMES), "the model's features differ from pipelines.features"
    tx = F.load_transactions(csv, nrows=120_000)
    labels = F.make_labels(tx)
    customers, _ = F.build_profiles(tx, int(tx["event_time"].iloc[len(tx) // 5]))
    feats = F.compute_features(tx, profiles=customers, labels=labels).iloc[-100_000:]
    assert len(feats) == 100_000
    cols = [np.ascontiguousarray(feats[name].to_numpy(), dtype=np.float32) for name in meta["features"]]
    native = S.NativeScorer(model_dir, meta, device="cpu")
    reference = S.ReferenceScorer(model_dir, meta)
    a, b = native.score(cols), reference.score(cols)
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)
    # Batch boundaries do not matter.
    parts = np.concatenate([native.score([c[i:i + 1000] for c in cols]) for i in range(0, 100_000, 1000)])
    np.testing.assert_allclose(parts, a, atol=1e-6, rtol=0)
    assert ROOT.exists()
