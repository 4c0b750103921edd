"""streamscore_native: the C++ (pybind11 + LibTorch) scorer.

* :class:`Model` -- any TorchScript module on "auto"/"cpu"/"cuda": ``run([array, ...])`` calls ``forward`` with the
  arrays as tensors (zero-copy on CPU) and returns numpy arrays (e.g. a transformer taking int64 input_ids and
  attention_mask).
* :class:`FraudScorer` -- the fraud MLP with its preprocessing (per feature: optional ``log1p(max(v, 0))``,
  standardise, clip) done in C++ on the caller's column buffers: ``score([col_0, ..., col_{d-1}])`` with 1-D
  C-contiguous float32/int64 arrays of equal length n returns float32 probabilities [n]. An empty batch returns an
  empty array. On the CPU the MLP runs on our own kernels (AVX-512, AVX2 or SSE2, picked at run time;
  :func:`cpu_kernels` lists them; ``cpu_kernel="aten"`` uses LibTorch's matmuls instead), on CUDA through LibTorch;
  either way only after matching ``forward()`` on a probe batch at load. Bad input raises TypeError/ValueError with a message naming the column; a missing model file raises
  FileNotFoundError, a corrupt one RuntimeError, a model that does not take meta.json's input width ValueError
  (checked at load with a probe forward).
* :func:`load_fraud_scorer` builds a FraudScorer from a model version directory (model.pt + meta.json).

Both classes release the GIL while they work, and one instance may be used from several threads at once: the
module is read-only after loading and each call takes its own staging buffer from a pool. On CUDA the input is
staged in pinned host memory and copied with ``non_blocking``; results come back synchronously.

LibTorch is the one in the installed ``torch`` wheel (linked by RPATH); importing this package imports the ``torch``
Python package first on a GPU host only (see below). :func:`set_num_threads` sets LibTorch's intra-op threads for the
whole process.
"""

from __future__ import annotations

import json
import os
from os import PathLike
from pathlib import Path

# On a GPU host LibTorch's CUDA libraries must be loaded the way the torch package loads them: with torch
# 2.11+cu130 on an H100, `import torch` after this extension had loaded them crashed the process (segfault). CPU-only
# hosts skip the import (about 2 s and 200 MB in every Flink Python worker).
if os.path.exists("/dev/nvidiactl"):
    try:
        import torch  # noqa: F401
    except ImportError:  # pragma: no cover - the extension itself needs the torch wheel's libraries
        pass

from ._core import (
    FraudScorer,
    Model,
    __version__,
    built_with_torch,
    cpu_kernels,
    cuda_available,
    cuda_device_count,
    get_num_threads,
    resolve_device,
    set_num_threads,
)

__all__ = [
    "FraudScorer",
    "Model",
    "__version__",
    "built_with_torch",
    "cpu_kernels",
    "cuda_available",
    "cuda_device_count",
    "get_num_threads",
    "load_fraud_scorer",
    "resolve_device",
    "set_num_threads",
]


def load_fraud_scorer(model_dir: str | PathLike[str], device: str = "auto", fused: bool = True,
                      cpu_kernel: str = "auto") -> FraudScorer:
    """A FraudScorer for ``<model_dir>/model.pt`` with the preprocessing in ``<model_dir>/meta.json``."""
    d = Path(model_dir)
    meta = json.loads((d / "meta.json").read_text())
    features = list(meta["features"])
    if int(meta.get("input_width", len(features))) != len(features):
        raise ValueError(f"{d / 'meta.json'}: input_width {meta['input_width']} does not match "
                         f"{len(features)} features")
    return FraudScorer(str(d / "model.pt"), features, [bool(v) for v in meta["log1p"]],
                       [float(v) for v in meta["mean"]], [float(v) for v in meta["std"]], float(meta["clip"]),
                       device=device, fused=fused, cpu_kernel=cpu_kernel)
