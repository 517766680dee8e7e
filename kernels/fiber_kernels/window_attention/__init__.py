"""Fused Swin window attention: shift, partition, bias, mask, softmax, merge in one op."""

from .api import window_attention
from .reference import window_attention_reference, window_attention_sdpa

__all__ = ["window_attention", "window_attention_reference", "window_attention_sdpa"]
