"""FIBER's gated cross-attention: the grouped attention core and the gated output linear."""

from .api import cross_attention, gated_residual_linear
from .reference import cross_attention_reference, gated_residual_linear_reference

__all__ = ["cross_attention", "cross_attention_reference", "gated_residual_linear",
           "gated_residual_linear_reference"]
