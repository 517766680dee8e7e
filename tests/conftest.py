"""Test-wide set-up: the Triton interpreter for CPU tensors, fixed seeds, and the GPU marker.

``TRITON_INTERPRET=1`` must be set before any ``@triton.jit`` kernel is defined (Triton decides
at decoration time), so it is set here, before the tests import fiber_kernels. Ahead-of-time
compiles run in a subprocess without the interpreter (``fiber_kernels.testing``).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _fixed_seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none (run on a GPU host)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
