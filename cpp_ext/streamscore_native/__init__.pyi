"""Type stubs for streamscore_native."""

from os import PathLike

from ._core import FraudScorer as FraudScorer
from ._core import Model as Model
from ._core import __version__ as __version__
from ._core import built_with_torch as built_with_torch
from ._core import cpu_kernels as cpu_kernels
from ._core import cuda_available as cuda_available
from ._core import cuda_device_count as cuda_device_count
from ._core import get_num_threads as get_num_threads
from ._core import resolve_device as resolve_device
from ._core import set_num_threads as set_num_threads

__all__: list[str]

def load_fraud_scorer(model_dir: str | PathLike[str], device: str = "auto", fused: bool = True,
                      cpu_kernel: str = "auto") -> FraudScorer: ...
