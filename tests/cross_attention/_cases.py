"""The cross-attention problems every backend's numerics tests run (``CASES``) and the input builders."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def make_mask(key_batches: int, seqlen_k: int, kind: str | None) -> torch.Tensor | None:
    """None, "partial" (random padding, every key batch keeps its first key) or "full" (partial, and
    the last key batch entirely padded, so its query rows have no key)."""
    if kind is None:
        return None
    generator = torch.Generator().manual_seed(1234)
    mask = torch.rand(key_batches, seqlen_k, generator=generator) < 0.4
    mask[:, 0] = False
    if kind == "full":
        mask[-1] = True
    return mask


def make_qkv(batch: int, key_batches: int, heads: int, seqlen_q: int, seqlen_k: int, head_dim: int,
             dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q ``(B, H, Nq, D)``, k and v ``(Bk, H, Nk, D)``, drawn in fp32 then cast, as leaves that require grad."""
    q = torch.randn(batch, heads, seqlen_q, head_dim)
    k = torch.randn(key_batches, heads, seqlen_k, head_dim)
    v = torch.randn(key_batches, heads, seqlen_k, head_dim)
    return tuple(t.to(dtype).requires_grad_() for t in (q, k, v))


def fresh(*tensors: torch.Tensor, dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """Detached leaf copies (optionally cast) that require grad."""
    return [t.detach().to(dtype or t.dtype).requires_grad_() for t in tensors]


@dataclass(frozen=True)
class Case:
    """One cross-attention problem: ``B`` query batches in groups sharing ``Bk`` key batches, ``H`` heads, ``Nq``
    queries, ``Nk`` keys, head dim ``D`` and the key padding of :func:`make_mask`; ``name`` is its test id."""

    name: str
    B: int
    Bk: int
    H: int
    Nq: int
    Nk: int
    D: int
    mask: str | None = None

    def __str__(self) -> str:
        return self.name

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """fp32 q ``(B, H, Nq, D)``, k, v ``(Bk, H, Nk, D)``, the bool mask ``(Bk, Nk)`` or None and a gradient
        of the output ``(B, H, Nq, D)``."""
        q, k, v = (t.detach() for t in make_qkv(self.B, self.Bk, self.H, self.Nq, self.Nk, self.D))
        return q, k, v, make_mask(self.Bk, self.Nk, self.mask), torch.randn(self.B, self.H, self.Nq, self.D)


# Groups of windows sharing their image's keys, odd sizes, padding (a key batch with every key padded), every
# head dim; every backend's numerics tests (Triton, torch, the CUDA kernels under emulation) run all of them.
CASES = [
    Case("8win-2img-144x40-d32-fullpad", 8, 2, 2, 144, 40, 32, "full"),
    Case("8win-2img-49x5-d64-pad", 8, 2, 2, 49, 5, 64, "partial"),
    Case("49x1-d32", 2, 2, 2, 49, 1, 32),
    Case("text40-img144-d64", 2, 2, 2, 40, 144, 64),
    Case("3win-1img-144x1-allpad", 3, 1, 1, 144, 1, 32, "full"),
    Case("3win-1img-17x1-allpad", 3, 1, 1, 17, 1, 32, "full"),
    Case("2win-21x37-d128-pad", 2, 1, 1, 21, 37, 128, "partial"),
]
