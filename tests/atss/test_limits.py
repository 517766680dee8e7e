"""The ATSS backends' declared limits (``fiber_kernels.atss.limits.LIMITS``): the C++ ones equal the constants
of csrc/atss/atss_limits.h, and dispatch refuses exactly what each backend declares it cannot take."""

from __future__ import annotations

import re

import pytest
import torch
from fiber_kernels import BackendNotSupportedError
from fiber_kernels.atss import atss_assign
from fiber_kernels.atss.limits import LIMITS
from fiber_kernels.testing.csrc_limits import read_limits

from ._cases import pyramid


def test_cpp_limits_equal_the_limits_header() -> None:
    limits = read_limits("atss")
    assert limits == {"kMaxK": LIMITS["cuda"].max_topk_total, "kMaxAnchors": LIMITS["cuda"].max_anchors}
    assert LIMITS["cpp"].max_anchors == LIMITS["cuda"].max_anchors  # one C++ check (atss_launch.h) serves both


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_dispatch_refuses_what_a_backend_declares(backend: str) -> None:
    limits = LIMITS[backend]
    anchors, sizes = pyramid([(2, 2, 8.0, 16.0)] * 9)  # 9 levels
    boxes = torch.tensor([[[0.0, 0.0, 8.0, 8.0]]])
    refused = []
    if limits.max_topk_total is not None:
        refused.append((dict(topk=limits.max_topk_total + 1), f"must be <= {limits.max_topk_total}"))
    if limits.max_levels is not None and len(sizes) > limits.max_levels:
        refused.append((dict(), f"at most {limits.max_levels} levels"))
    if not limits.fp32_statistics:
        refused.append((dict(convention="glip_fp32"), "fp32"))
    for kwargs, message in refused:
        with pytest.raises(BackendNotSupportedError, match=re.escape(message)):
            atss_assign(anchors, sizes, boxes, backend=backend, **kwargs)
    assert len(refused) >= 2
