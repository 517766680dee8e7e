"""fiber_kernels.testing.csrc_limits reads csrc/<op>/<op>_limits.h as g++ compiles it.

The reference is the compiler: a generated C++ program includes the real header and prints every
limit the reader found, with the value g++ gives it; the reader must also have found every
``constexpr`` of the header. About a second of g++ per family.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from fiber_kernels.testing import emu
from fiber_kernels.testing.csrc_limits import LIMITS_OPS, limits_header, parse_limits, read_limits

_PROGRAM = """
#include <cstddef>
#include <iostream>
#include "{op}/{op}_limits.h"
template <class T> void show(const char* name, const T& value) {{ std::cout << name << "\\t" << value << "\\n"; }}
template <class T, std::size_t N> void show(const char* name, const T (&values)[N]) {{
  std::cout << name << "[]";
  for (const T& value : values) std::cout << "\\t" << value;
  std::cout << "\\n";
}}
int main() {{
  using namespace fiber_kernels::{op};
{calls}
}}
"""


def compiled_limits(op: str, names: list[str], tmp_path: Path) -> dict[str, object]:
    """{name: value} as a program compiled by g++ from the header prints them (ints parsed back)."""
    source, binary = tmp_path / f"{op}_limits.cpp", tmp_path / f"{op}_limits"
    calls = "\n".join(f'  show("{name}", {name});' for name in names)
    source.write_text(_PROGRAM.format(op=op, calls=calls))
    includes = [f"-I{d}" for d in emu.CSRC_INCLUDE_DIRS]
    subprocess.run([shutil.which("g++") or "g++", "-std=c++20", *includes, str(source), "-o", str(binary)],
                   check=True, capture_output=True, text=True, timeout=120)
    printed = subprocess.run([str(binary)], check=True, capture_output=True, text=True, timeout=60).stdout

    def value(text: str) -> object:
        return int(text) if text.lstrip("-").isdigit() else text

    limits: dict[str, object] = {}
    for line in printed.splitlines():
        name, *values = line.split("\t")
        limits[name.removesuffix("[]")] = tuple(map(value, values)) if name.endswith("[]") else value(values[0])
    return limits


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
@pytest.mark.parametrize("op", LIMITS_OPS)
def test_reader_gives_the_values_gxx_compiles(op: str, tmp_path: Path) -> None:
    limits = read_limits(op)
    assert limits, f"no limits read from {limits_header(op)}"
    assert len(limits) == limits_header(op).read_text().count("constexpr"), "a declaration was not read"
    assert compiled_limits(op, sorted(limits), tmp_path) == limits


def test_parse_limits_skips_comments_and_reads_arrays_and_strings() -> None:
    text = """
    // constexpr int kCommented = 1;
    /* constexpr int kBlock = 2; */
    constexpr const char* kNames[] = {"float32", "bfloat16"};  // trailing
    constexpr int kList[] = { 16, 32,
                              64 };
    constexpr long long kBig = 2147483647;
    """
    assert parse_limits(text) == {"kNames": ("float32", "bfloat16"), "kList": (16, 32, 64), "kBig": 2147483647}


@pytest.mark.parametrize("text", ["constexpr int kX = 1 << 4;", "constexpr int kX = kY;",
                                  "constexpr int kX = 1; constexpr int kX = 2;", "constexpr int kX[] = 3;"])
def test_parse_limits_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match="kX"):
        parse_limits(text)


def test_read_limits_names_the_ops() -> None:
    with pytest.raises(ValueError, match="op must be one of"):
        read_limits("swin")
