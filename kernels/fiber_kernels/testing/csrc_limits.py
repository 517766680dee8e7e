"""The limits a C++ kernel family states in ``csrc/<op>/<op>_limits.h``, read without a compiler.

Each limits header holds ``constexpr`` declarations with literal values only, e.g.::

    constexpr const char* kDtypes[] = {"float32", "float16", "bfloat16"};
    constexpr int kHeadDims[] = {16, 32, 64};
    constexpr int kMaxTokens = 144;

and the launchers' argument checks use those names. ``read_limits(op)`` returns them as
``{"kDtypes": ("float32", "float16", "bfloat16"), "kHeadDims": (16, 32, 64), "kMaxTokens": 144}``
(a tuple for an array, an int or a str otherwise), so a test can assert they equal the Python
declarations of the same backend. ``tests/compile/test_csrc_limits.py`` checks this reader against
the values g++ itself compiles from the same headers.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["LIMITS_OPS", "limits_header", "parse_limits", "read_limits"]

_CSRC = Path(__file__).resolve().parents[3] / "csrc"
LIMITS_OPS = ("cross_attention", "window_attention", "atss")  # the families with a limits header

_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_DECLARATION = re.compile(r"\bconstexpr\b([^=;]*?)\b(k\w+)\s*(\[\s*\])?\s*=\s*([^;]*);")
_INT = re.compile(r"-?\d+")
_STRING = re.compile(r'"([^"\\]*)"')

Limit = int | str | tuple[int, ...] | tuple[str, ...]


def limits_header(op: str) -> Path:
    """Path of ``csrc/<op>/<op>_limits.h``; ValueError for an op without one."""
    if op not in LIMITS_OPS:
        raise ValueError(f"op must be one of {LIMITS_OPS}, got {op!r}")
    return _CSRC / op / f"{op}_limits.h"


def _literal(text: str, name: str) -> int | str:
    text = text.strip()
    if _INT.fullmatch(text):
        return int(text)
    string = _STRING.fullmatch(text)
    if string:
        return string.group(1)
    raise ValueError(f"{name}: a limits header holds int or string literals only, got {text!r}")


def parse_limits(source: str) -> dict[str, Limit]:
    """``{name: value}`` of every ``constexpr`` declaration named ``k...`` in a limits header's text."""
    limits: dict[str, Limit] = {}
    for _, name, array, value in _DECLARATION.findall(_COMMENT.sub("", source)):
        if name in limits:
            raise ValueError(f"{name} is declared twice")
        if array:
            if not (value.strip().startswith("{") and value.strip().endswith("}")):
                raise ValueError(f"{name}[]: expected a braced list, got {value!r}")
            items = [item for item in value.strip()[1:-1].split(",") if item.strip()]
            limits[name] = tuple(_literal(item, name) for item in items)
        else:
            limits[name] = _literal(value, name)
    return limits


def read_limits(op: str) -> dict[str, Limit]:
    """The limits of ``op`` (one of ``LIMITS_OPS``) as its C++ launchers check them."""
    return parse_limits(limits_header(op).read_text())
