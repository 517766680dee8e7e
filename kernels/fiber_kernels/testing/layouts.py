"""The same tensor values under other memory layouts, for the stride tests of every op.

Each layout is a differentiable view of a fresh buffer (gradients flow back to the tensor it was made
from), so a kernel that reads a pointer as contiguous, or past a view's elements, gives a different
result from the same op on ``.contiguous()`` inputs.
"""

from __future__ import annotations

import torch

LAYOUTS = ("contiguous", "strided", "transposed", "offset", "expanded")


def with_layout(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    """``tensor`` (any dtype, at least 1-D) in ``layout``:

    * ``contiguous``: itself;
    * ``strided``: every other element of a buffer twice as long in the last dim (last stride 2, every
      other stride doubled);
    * ``transposed``: stored with its dims in reverse order (column-major: last stride = size of dim 0 ...);
    * ``offset``: a view starting 3 elements into its storage;
    * ``expanded``: row 0 of dim 0 broadcast along dim 0 (stride 0): the *values* become ``tensor[:1]``
      repeated, a legal input whose storage holds a single row.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if tensor.dim() == 0:
        raise ValueError("tensor must be at least 1-D to take a layout")
    if layout == "contiguous":
        return tensor
    if layout == "strided":
        return torch.stack([tensor, torch.zeros_like(tensor)], dim=-1)[..., 0]
    if layout == "transposed":
        reverse = tuple(range(tensor.dim() - 1, -1, -1))
        return tensor.permute(reverse).contiguous().permute(reverse)
    if layout == "offset":
        flat = torch.cat([tensor.new_zeros(3), tensor.reshape(-1)])
        return flat[3:].view(tensor.shape)
    return tensor.narrow(0, 0, 1).expand(tensor.shape)
