"""The fraud scorer behind the streaming job: one protocol, a native (C++/LibTorch) and a pure-numpy implementation.

* :class:`Scorer` -- ``score(columns) -> probabilities`` and ``version``. ``columns`` is a sequence of d 1-D,
  C-contiguous float32 or int64 arrays of equal length n, one per feature in ``meta.json``'s order; the result is
  float32 [n]. An empty batch (n == 0) returns an empty array. Bad input raises TypeError (not a sequence of
  arrays, wrong dtype) or ValueError (wrong number of columns, a 2-D column, lengths that differ, a non-contiguous
  column, NaN/inf), with the same message from both implementations.
* :class:`NativeScorer` wraps ``streamscore_native.FraudScorer`` (build it with ``make native``): preprocessing
  and the MLP run in C++ with the GIL released, on CPU (our vectorised kernels) or CUDA (LibTorch).
* :class:`ReferenceScorer` needs only numpy: ``weights.npz`` + ``meta.json``.
* :func:`load_scorer` resolves ``fraud.model_dir`` / ``fraud.model_version`` ("latest": the model registry's
  production version, pipelines/models, or ``LATEST`` without a registry file) and picks the implementation from
  ``fraud.scorer``.
* :class:`ProductionScorer` follows the registry while the job runs: it looks at the registry file at most every
  ``fraud.registry_poll_ms``, loads a new production version beside the serving one (in a thread) and hands it out
  from the next batch on; a version whose feature list differs from the job's is refused and the serving one
  stays. It follows the registry's shadow version the same way (:attr:`ProductionScorer.shadow_scorer`).

Each ``score`` call records ``SCORER_BATCH_SIZE`` and ``INFERENCE_SECONDS`` (labels: model name, backend).

Model artifact (``<model_dir>/<version>/``): ``model.pt`` (TorchScript, float32 [n, d] preprocessed -> float32 [n]
probabilities), ``meta.json`` (name, version, features, input_width, log1p, mean, std, clip, architecture "mlp",
activation "relu", output "probability") and ``weights.npz`` (W0, b0, W1, b1, ..., W as [out, in]).
Preprocessing of feature i: ``v = x_i``; if ``log1p[i]``: ``v = log1p(max(v, 0))``; ``v = (v - mean[i]) / std[i]``;
``v = clip(v, -clip, clip)``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from pipelines.config import Config
from pipelines.metrics import INFERENCE_SECONDS, SCORER_BATCH_SIZE

META_KEYS = ("name", "version", "features", "input_width", "log1p", "mean", "std", "clip")


class ModelNotFoundError(FileNotFoundError):
    """No model artifact where the configuration points."""


class FeatureMismatchError(ValueError):
    """A model version whose feature list is not the job's."""


@runtime_checkable
class Scorer(Protocol):
    """Scores a batch of events given as feature columns."""

    @property
    def version(self) -> str: ...

    def score(self, columns: Sequence[np.ndarray]) -> np.ndarray: ...


# ----------------------------------------------------------------------------------------------------------------
# Artifacts


def read_latest(model_dir: str | Path) -> str:
    """The version named in ``<model_dir>/LATEST``."""
    latest = Path(model_dir) / "LATEST"
    try:
        version = latest.read_text().strip()
    except FileNotFoundError:
        raise ModelNotFoundError(f"{latest} not found: no trained model yet (run `make train-fraud`)") from None
    if not version:
        raise ModelNotFoundError(f"{latest} is empty")
    return version


def load_meta(model_dir: str | Path) -> dict[str, Any]:
    """Reads and validates ``meta.json`` of one model version."""
    path = Path(model_dir) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelNotFoundError(f"{path} not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    d = len(meta["features"])
    if d == 0 or meta["input_width"] != d:
        raise ValueError(f"{path}: input_width {meta['input_width']} does not match {d} features")
    for key in ("log1p", "mean", "std"):
        if len(meta[key]) != d:
            raise ValueError(f"{path}: {key} has {len(meta[key])} entries for {d} features")
    std = np.asarray(meta["std"], dtype=np.float64)
    if not np.all(np.isfinite(std)) or np.any(std <= 0):
        raise ValueError(f"{path}: std must be finite and > 0")
    if not np.all(np.isfinite(np.asarray(meta["mean"], dtype=np.float64))):
        raise ValueError(f"{path}: mean must be finite")
    if not (isinstance(meta["clip"], (int, float)) and math.isfinite(meta["clip"]) and meta["clip"] > 0):
        raise ValueError(f"{path}: clip must be finite and > 0")
    for key, want in (("architecture", "mlp"), ("activation", "relu"), ("output", "probability")):
        if key in meta and meta[key] != want:
            raise ValueError(f"{path}: {key} {meta[key]!r} is not supported (expected {want!r})")
    return meta


def resolve_version(cfg: Config) -> str:
    """The version folder to score with: ``fraud.model_version``, where "latest" is the model registry's production
    version (pipelines/models), or LATEST's while there is no registry file."""
    version = cfg.fraud.model_version
    if version != "latest":
        return version
    from pipelines.models import production_version

    base = cfg.path(cfg.fraud.model_dir)
    return production_version(base) or read_latest(base)


def resolve_model_dir(cfg: Config, version: str | None = None) -> Path:
    """``<fraud.model_dir>/<version>`` (default: :func:`resolve_version`), relative to the repository root."""
    base = cfg.path(cfg.fraud.model_dir)
    if version is None:
        version = resolve_version(cfg)
    from pipelines.modelpath import contained

    path = contained(base, version)  # never outside fraud.model_dir (issue 24)
    if not path.is_dir():
        raise ModelNotFoundError(f"model version directory {path} not found")
    return path


def write_mlp_artifact(out_dir: str | Path, weights: Sequence[tuple[np.ndarray, np.ndarray]],
                       features: Sequence[str], log1p: Sequence[bool], mean: Sequence[float],
                       std: Sequence[float], clip: float, version: str, name: str = "fraud") -> Path:
    """Writes a model artifact (model.pt, meta.json, weights.npz) for an MLP given as [(W [out, in], b [out])...].

    Used by tests and the benchmark to make a random model of the real format; needs torch.
    """
    import torch
    from torch import nn

    class MLP(nn.Module):
        def __init__(self, layers: list[nn.Module]) -> None:
            super().__init__()
            self.net = nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.net(x).squeeze(-1))

    layers: list[nn.Module] = []
    for k, (w, b) in enumerate(weights):
        lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.asarray(w, dtype=np.float32)))
            lin.bias.copy_(torch.from_numpy(np.asarray(b, dtype=np.float32)))
        layers.append(lin)
        if k < len(weights) - 1:
            layers.append(nn.ReLU())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.jit.script(MLP(layers).eval()).save(str(out / "model.pt"))
    np.savez(out / "weights.npz", **{k: v for i, (w, b) in enumerate(weights) for k, v in
                                     ((f"W{i}", np.asarray(w, np.float32)), (f"b{i}", np.asarray(b, np.float32)))})
    meta = {"name": name, "version": version, "features": list(features), "input_width": len(features),
            "log1p": [bool(v) for v in log1p], "mean": [float(v) for v in mean], "std": [float(v) for v in std],
            "clip": float(clip), "architecture": "mlp", "activation": "relu", "output": "probability"}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def random_mlp_weights(d: int, hidden: Sequence[int] = (32, 16), seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """He-initialised random MLP weights [(W [out, in], b [out]), ...] ending in one logit."""
    rng = np.random.default_rng(seed)
    sizes = [d, *hidden, 1]
    return [(rng.normal(0, math.sqrt(2.0 / sizes[k]), (sizes[k + 1], sizes[k])).astype(np.float32),
             rng.normal(0, 0.1, sizes[k + 1]).astype(np.float32)) for k in range(len(sizes) - 1)]


# ----------------------------------------------------------------------------------------------------------------
# Input validation (the native extension raises the same errors with the same messages)


def _label(j: int, names: Sequence[str]) -> str:
    return f"column {j} ({names[j]!r})"


def validate_columns(columns: Any, names: Sequence[str]) -> tuple[list[np.ndarray], int]:
    """Checks ``columns`` against the features; returns zero-copy numpy views and the batch length n."""
    if isinstance(columns, (np.ndarray, str, bytes)) or not isinstance(columns, Sequence):
        raise TypeError(f"columns must be a sequence of 1-D arrays (one per feature), got {type(columns).__name__}")
    d = len(names)
    if len(columns) != d:
        raise ValueError(f"expected {d} columns ({', '.join(names)}), got {len(columns)}")
    out: list[np.ndarray] = []
    n = -1
    for j, col in enumerate(columns):
        if isinstance(col, np.ndarray):
            arr = col
        else:
            try:
                arr = np.asarray(memoryview(col))
            except TypeError:
                raise TypeError(f"{_label(j, names)} must be a numpy array (buffer protocol), "
                                f"got {type(col).__name__}") from None
        if arr.ndim != 1:
            raise ValueError(f"{_label(j, names)} must be 1-D, got shape {tuple(arr.shape)}")
        if arr.dtype != np.float32 and arr.dtype != np.int64:
            dtype = str(col.dtype) if hasattr(col, "dtype") else memoryview(col).format
            raise TypeError(f"{_label(j, names)} has dtype {dtype}; expected float32 or int64")
        if arr.shape[0] > 1 and arr.strides[0] != arr.itemsize:
            raise ValueError(f"{_label(j, names)} is not contiguous (stride {arr.strides[0]} bytes); "
                             f"pass np.ascontiguousarray(column)")
        if n < 0:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise ValueError(f"{_label(j, names)} has length {arr.shape[0]}, expected {n} "
                             f"(the length of {_label(0, names)})")
        out.append(arr)
    return out, max(n, 0)


def _check_finite(columns: Sequence[np.ndarray], names: Sequence[str]) -> None:
    for j, col in enumerate(columns):
        if col.dtype == np.float32:
            bad = ~np.isfinite(col)
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(f"{_label(j, names)} has a non-finite value ({float(col[i])!r}) at row {i}")


# ----------------------------------------------------------------------------------------------------------------
# Scorers


class _Timed:
    """Shared metrics bookkeeping: batch size and call duration per model and backend."""

    backend = "?"

    def _init_metrics(self, model: str) -> None:
        self._batch_hist = SCORER_BATCH_SIZE.labels(model, self.backend)
        self._time_hist = INFERENCE_SECONDS.labels(model, self.backend)

    def _record(self, n: int, seconds: float) -> None:
        self._batch_hist.observe(n)
        self._time_hist.observe(seconds)


class ReferenceScorer(_Timed):
    """Pure-numpy scorer from ``weights.npz`` and ``meta.json`` (no torch); float32 MLP, float64 preprocessing."""

    backend = "reference"

    def __init__(self, model_dir: str | Path, meta: dict[str, Any] | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.meta = meta if meta is not None else load_meta(self.model_dir)
        self.features: list[str] = list(self.meta["features"])
        d = len(self.features)
        self._log1p = np.asarray(self.meta["log1p"], dtype=bool)
        self._log1p_idx = np.flatnonzero(self._log1p)
        self._mean = np.asarray(self.meta["mean"], dtype=np.float64)
        self._std = np.asarray(self.meta["std"], dtype=np.float64)
        self._clip = float(self.meta["clip"])
        path = self.model_dir / "weights.npz"
        try:
            with np.load(path) as npz:
                n_layers = len([k for k in npz.files if k.startswith("W")])
                self._layers = [(np.ascontiguousarray(npz[f"W{k}"].astype(np.float32).T),
                                 npz[f"b{k}"].astype(np.float32)) for k in range(n_layers)]
        except FileNotFoundError:
            raise ModelNotFoundError(f"{path} not found") from None
        except (KeyError, ValueError, OSError) as exc:
            raise ValueError(f"{path}: cannot read MLP weights: {exc}") from exc
        width = d
        for k, (wt, b) in enumerate(self._layers):
            if wt.ndim != 2 or wt.shape[0] != width or b.shape != (wt.shape[1],):
                raise ValueError(f"{path}: layer {k} has W {wt.T.shape} and b {b.shape} after width {width}; "
                                 f"the input width from meta.json is {d}")
            width = wt.shape[1]
        if not self._layers or width != 1:
            raise ValueError(f"{path}: the MLP must end in one output, got {width}")
        self._init_metrics(str(self.meta["name"]))

    @property
    def version(self) -> str:
        return str(self.meta["version"])

    def preprocess(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        cols, n = validate_columns(columns, self.features)
        _check_finite(cols, self.features)
        return self._preprocess(cols, n)

    def _preprocess(self, cols: Sequence[np.ndarray], n: int, check: bool = False) -> np.ndarray:
        x = np.stack(cols, axis=1, dtype=np.float64)  # float32 NaN/inf survive the cast; int64 is always finite
        if check and not np.isfinite(x).all():
            _check_finite(cols, self.features)  # names the first bad column and row
        if self._log1p_idx.size:
            part = x[:, self._log1p_idx]
            np.maximum(part, 0.0, out=part)
            np.log1p(part, out=part)
            x[:, self._log1p_idx] = part
        x -= self._mean
        x /= self._std
        np.clip(x, -self._clip, self._clip, out=x)
        return x.astype(np.float32)

    def score(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        t0 = time.perf_counter()
        cols, n = validate_columns(columns, self.features)
        if n == 0:
            self._record(0, time.perf_counter() - t0)
            return np.empty(0, dtype=np.float32)
        h = self._preprocess(cols, n, check=True)
        last = len(self._layers) - 1
        for k, (wt, b) in enumerate(self._layers):
            h = h @ wt
            h += b
            if k < last:
                np.maximum(h, 0.0, out=h)
        z = h[:, 0]
        # Numerically stable sigmoid in float32: exp of a non-positive number only.
        e = np.exp(-np.abs(z))
        out = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32, copy=False)
        self._record(n, time.perf_counter() - t0)
        return out


class NativeScorer(_Timed):
    """``streamscore_native.FraudScorer``: preprocessing and the TorchScript MLP in C++ (GIL released).

    ``threads`` sets LibTorch's intra-op threads (process-wide; 1 suits a Flink Python worker scoring small
    batches); None leaves it alone. ``device`` is "auto", "cpu", "cuda" or "cuda:N". ``fused`` lets the scorer run
    the Linear/ReLU chain directly (checked against ``forward()`` at load); False always calls ``forward()``.
    ``cpu_kernel`` picks what runs that chain on the CPU: "auto" (our kernels, the best ISA this CPU has), "avx512",
    "avx2", "generic", or "aten" (LibTorch's matmuls). On CUDA, batches of fewer than ``cuda_min_batch`` events
    go to a second scorer on the CPU (the same model; see ``fraud.cuda_min_batch``); 0 keeps all on the GPU.
    """

    backend = "native"

    def __init__(self, model_dir: str | Path, meta: dict[str, Any] | None = None, device: str = "auto",
                 threads: int | None = 1, fused: bool = True, cpu_kernel: str = "auto",
                 cuda_min_batch: int = 0) -> None:
        try:
            import streamscore_native
        except ImportError as exc:
            raise ImportError(f"the native scorer is not built ({exc}); run `make native` "
                              f"or set fraud.scorer: reference") from exc
        self.model_dir = Path(model_dir)
        self.meta = meta if meta is not None else load_meta(self.model_dir)
        self.features: list[str] = list(self.meta["features"])
        if threads is not None:
            streamscore_native.set_num_threads(threads)
        def load(on: str):
            return streamscore_native.FraudScorer(
                str(self.model_dir / "model.pt"), self.features, [bool(v) for v in self.meta["log1p"]],
                [float(v) for v in self.meta["mean"]], [float(v) for v in self.meta["std"]],
                float(self.meta["clip"]), device=on, fused=fused, cpu_kernel=cpu_kernel)

        self._impl = load(device)
        self._score = self._impl.score
        self._cpu_impl = None
        self.cuda_min_batch = int(cuda_min_batch)
        if self.cuda_min_batch > 0 and str(self._impl.device).startswith("cuda"):
            self._cpu_impl = load("cpu")
            self._score = self._routed
        self._init_metrics(str(self.meta["name"]))

    def _routed(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        try:
            small = len(columns[0]) < self.cuda_min_batch  # type: ignore[index]
        except (TypeError, IndexError, KeyError):
            small = False  # not columns: the GPU scorer raises the same error the CPU one would
        return (self._cpu_impl if small else self._impl).score(columns)

    @property
    def version(self) -> str:
        return str(self.meta["version"])

    @property
    def device(self) -> str:
        return str(self._impl.device)

    @property
    def fast_path(self) -> bool:
        return bool(self._impl.fast_path)

    @property
    def kernel(self) -> str:
        """What runs the MLP: a CPU ISA ("avx512", "avx2", "generic"), "aten" or "torchscript"."""
        return str(self._impl.kernel)

    def preprocess(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        return self._impl.preprocess(columns)

    def score(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        t0 = time.perf_counter()
        out = self._score(columns)
        self._record(out.shape[0], time.perf_counter() - t0)
        return out


def load_scorer(cfg: Config, kind: str | None = None, version: str | None = None,
                features: Sequence[str] | None = None) -> Scorer:
    """The configured scorer: ``kind`` (or ``fraud.scorer``) "native" or "reference", on ``fraud.device``, of
    ``version`` (default: :func:`resolve_version`). With ``features``, a model whose feature list differs is refused
    (:class:`FeatureMismatchError`) before anything of it loads."""
    kind = kind or cfg.fraud.scorer
    if kind not in ("native", "reference"):
        raise ValueError(f"scorer kind must be 'native' or 'reference', got {kind!r}")
    model_dir = resolve_model_dir(cfg, version)
    meta = load_meta(model_dir)
    if features is not None:
        from pipelines.models import feature_mismatch

        why = feature_mismatch(meta["features"], features)
        if why:
            raise FeatureMismatchError(f"model version {model_dir.name!r} is refused: its feature list does not "
                                       f"match the job's ({why})")
    if kind == "native":
        return NativeScorer(model_dir, meta, device=cfg.fraud.device, cpu_kernel=cfg.fraud.cpu_kernel,
                            cuda_min_batch=cfg.fraud.cuda_min_batch)
    return ReferenceScorer(model_dir, meta)


log = logging.getLogger("streamscore.models")


class ProductionScorer:
    """The scorer of the registry's production version, swapped without a restart (hot swap).

    The caller asks :meth:`current` once per batch and scores the whole batch with what it returns, so each batch
    (and each record) is decided by exactly one version, and the switch is between two batches. :meth:`current`
    costs a clock read; at most every ``fraud.registry_poll_ms`` it also stats the registry file, and when that
    changed it reads the production version. A new one is loaded in a thread beside the serving scorer, and
    returned by the first :meth:`current` after it finished loading. A version that cannot serve (its feature list
    is not the job's, it does not load, the registry file is unreadable) is refused: counted in
    ``streamscore_model_swaps_total{result="refused"}``, logged, and the serving version goes on. A pinned
    ``fraud.model_version`` (anything but "latest") never changes.

    The registry's shadow version (if any) is followed the same way: loaded beside, refused on a feature mismatch
    (then there is no shadow until the registry names another), and handed out as :attr:`shadow_scorer` together
    with the production scorer by the same :meth:`current` call, so one batch is scored by one registry revision.
    The caller scores the whole batch with it too; it decides nothing. The registry's A/B experiment likewise:
    :attr:`ab` is None or (candidate scorer, fraction, salt), and the caller lets the candidate decide for the
    customers pipelines.models.ab_arm puts in its arm.
    """

    def __init__(self, cfg: Config, kind: str | None = None, background: bool = True,
                 clock=time.monotonic) -> None:
        from pipelines import metrics

        self.cfg, self.kind, self.background, self._clock = cfg, kind, background, clock
        self.base = cfg.path(cfg.fraud.model_dir)
        self.follow = cfg.fraud.model_version == "latest"
        self.poll_s = cfg.fraud.registry_poll_ms / 1000.0
        self._swaps = metrics.MODEL_SWAPS
        self._serving_gauge = metrics.MODEL_SERVING
        self._sig = self._stat()  # first, so that a change made while the first version loads is seen
        self.serving = resolve_version(cfg)
        self.scorer = load_scorer(cfg, kind, self.serving)
        self.features: list[str] = list(self.scorer.meta["features"])  # type: ignore[attr-defined]
        self.name = str(self.scorer.meta["name"])  # type: ignore[attr-defined]
        self._serving_gauge.labels(self.name, self.scorer.version).set(1)
        self._next = clock() + self.poll_s
        self._loading: threading.Thread | None = None
        self._ready: tuple | None = None  # what the next current() hands out: _swap's arguments
        self.refused: list[tuple[str, str]] = []  # (version, reason), newest last
        self.shadow_serving: str | None = None
        self.shadow_scorer: Scorer | None = None
        self.ab_serving: tuple[str, float, int] | None = None  # (version, fraction, salt)
        self.ab: tuple[Scorer, float, int] | None = None
        if self.follow:
            _, shadow, ab = self._targets()
            if shadow is not None:
                self.shadow_serving, self.shadow_scorer = self._load_shadow(shadow)
            if ab is not None:
                self.ab_serving, self.ab = self._load_ab(ab)

    def _stat(self) -> tuple | None:
        from pipelines.models import registry_path

        try:
            st = registry_path(self.base).stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def current(self) -> Scorer:
        """The scorer that decides the next batch."""
        if not self.follow:
            return self.scorer
        ready = self._ready
        if ready is not None:
            self._ready = None
            self._swap(*ready)
        now = self._clock()
        if now >= self._next and self._loading is None:
            self._next = now + self.poll_s
            sig = self._stat()
            if sig != self._sig:
                self._sig = sig
                self._check()
        return self.scorer

    def wait(self, timeout: float | None = None) -> None:
        """Waits for a load in progress (tests)."""
        t = self._loading
        if t is not None:
            t.join(timeout)

    def _refuse(self, version: str, reason: str) -> None:
        self.refused.append((version, reason))
        del self.refused[:-20]
        self._swaps.labels(self.name, "refused").inc()
        log.error("model %s: version %s refused, %s keeps serving: %s", self.name, version, self.serving, reason)

    def _targets(self) -> tuple[str | None, str | None, tuple[str, float, int] | None]:
        """(production, shadow, A/B) as the registry names them; LATEST alone without a registry file."""
        from pipelines.models import read_state
        from pipelines.models.registry import read_latest as latest_or_none

        state = read_state(self.base)
        if state is None:
            return latest_or_none(self.base), None, None
        ab = state.ab
        return (state.production, state.shadow,
                (ab["version"], float(ab["fraction"]), int(ab["salt"])) if ab else None)

    def _check(self) -> None:
        from pipelines.models import RegistryError

        try:
            version, shadow, ab = self._targets()
        except RegistryError as exc:
            self._refuse("?", str(exc))
            return
        version = version or self.serving
        if (version, shadow, ab) == (self.serving, self.shadow_serving, self.ab_serving):
            return
        if self.background:
            self._loading = threading.Thread(target=self._load, args=(version, shadow, ab), daemon=True,
                                             name=f"load-model-{version}")
            self._loading.start()
        else:
            self._load(version, shadow, ab)

    def _load_shadow(self, shadow: str) -> tuple[str | None, Scorer | None]:
        try:
            return shadow, load_scorer(self.cfg, self.kind, shadow, features=self.features)
        except Exception as exc:  # a shadow that cannot load: no shadow, production goes on
            self._refuse(shadow, f"as the shadow: {type(exc).__name__}: {exc}")
            return None, None

    def _load_ab(self, ab: tuple[str, float, int]) -> tuple[tuple[str, float, int] | None,
                                                            tuple[Scorer, float, int] | None]:
        version, fraction, salt = ab
        if self.ab_serving is not None and self.ab_serving[0] == version and self.ab is not None:
            return ab, (self.ab[0], fraction, salt)  # the same candidate: keep its scorer
        try:
            return ab, (load_scorer(self.cfg, self.kind, version, features=self.features), fraction, salt)
        except Exception as exc:  # a candidate that cannot load: no A/B, production decides for everyone
            self._refuse(version, f"as the A/B candidate: {type(exc).__name__}: {exc}")
            return None, None

    def _load(self, version: str, shadow: str | None, ab: tuple[str, float, int] | None = None) -> None:
        try:
            scorer = self.scorer
            if version != self.serving:
                try:
                    scorer = load_scorer(self.cfg, self.kind, version, features=self.features)
                except Exception as exc:  # anything: the serving version must go on
                    self._refuse(version, f"{type(exc).__name__}: {exc}")
                    version, scorer = self.serving, self.scorer
            if shadow == self.shadow_serving:
                shadow_scorer = self.shadow_scorer
            elif shadow is None or shadow == version:
                shadow, shadow_scorer = None, None
            else:
                shadow, shadow_scorer = self._load_shadow(shadow)
            if ab == self.ab_serving:
                ab_now = self.ab
            elif ab is None or ab[0] == version:
                ab, ab_now = None, None
            else:
                ab, ab_now = self._load_ab(ab)
            if (version, shadow, ab) != (self.serving, self.shadow_serving, self.ab_serving):
                self._ready = (version, scorer, shadow, shadow_scorer, ab, ab_now)
        finally:
            self._loading = None

    def _swap(self, version: str, scorer: Scorer, shadow: str | None, shadow_scorer: Scorer | None,
              ab: tuple[str, float, int] | None, ab_now: tuple[Scorer, float, int] | None) -> None:
        if shadow != self.shadow_serving:
            log.warning("model %s: shadow %s (was %s)", self.name, shadow, self.shadow_serving)
        if ab != self.ab_serving:
            log.warning("model %s: A/B %s (was %s)", self.name, ab, self.ab_serving)
        self.shadow_scorer, self.shadow_serving = shadow_scorer, shadow
        self.ab, self.ab_serving = ab_now, ab
        if version == self.serving:
            return
        old = self.scorer
        self.scorer, self.serving = scorer, version
        self._swaps.labels(self.name, "swapped").inc()
        self._serving_gauge.labels(self.name, old.version).set(0)
        self._serving_gauge.labels(self.name, scorer.version).set(1)
        log.warning("model %s: version %s now decides (was %s)", self.name, version, old.version)
