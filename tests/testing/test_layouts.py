"""``fiber_kernels.testing.layouts``: each layout holds the documented values under the documented strides,
and gradients reach the tensor it was made from."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels.testing.layouts import LAYOUTS, with_layout


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_values_strides_and_gradients(layout):
    tensor = torch.arange(24.0).view(2, 3, 4).requires_grad_()
    view = with_layout(tensor, layout)
    expected = tensor[:1].expand(2, 3, 4) if layout == "expanded" else tensor
    assert torch.equal(view, expected)
    strides = {"contiguous": (12, 4, 1), "strided": (24, 8, 2), "transposed": (1, 2, 6), "offset": (12, 4, 1),
               "expanded": (0, 4, 1)}
    assert view.stride() == strides[layout]
    assert view.storage_offset() == (3 if layout == "offset" else 0)
    view.sum().backward()
    want = torch.zeros(2, 3, 4) if layout == "expanded" else torch.ones(2, 3, 4)
    if layout == "expanded":
        want[0] = 2.0
    assert torch.equal(tensor.grad, want)


def test_bad_layout_and_scalar_raise():
    with pytest.raises(ValueError, match="layout must be one of"):
        with_layout(torch.zeros(3), "diagonal")
    with pytest.raises(ValueError, match="at least 1-D"):
        with_layout(torch.tensor(1.0), "strided")
