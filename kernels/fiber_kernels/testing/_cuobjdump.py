"""Resource usage of compiled GPU code from ``cuobjdump --dump-resource-usage`` (the one Triton ships).

Works on a cubin, an object file or a shared library with a fat binary; needs no GPU and no driver.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

_ARCH = re.compile(r"^\s*arch = sm_(\d+)")
_FUNCTION = re.compile(r"^\s*Function (\S+):\s*$")
_FIELD = re.compile(r"([A-Z]+(?:\[\d+\])?):(\d+)")


@dataclass(frozen=True)
class FunctionUsage:
    """One kernel of one architecture: registers per thread and bytes of stack/local/static shared memory."""

    name: str
    arch: int | None
    registers: int
    stack_bytes: int
    local_bytes: int
    shared_bytes: int


def cuobjdump_path() -> str | None:
    """The ``cuobjdump`` bundled with Triton, else the one on PATH, else None."""
    try:
        import triton
    except ImportError:
        triton = None
    if triton is not None:
        bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        if os.access(bundled, os.X_OK):
            return bundled
    return shutil.which("cuobjdump")


class NoDeviceCodeError(RuntimeError):
    """The file holds no GPU code (e.g. a CPU-only build of the extension)."""


def resource_usage(path: str | os.PathLike[str]) -> list[FunctionUsage]:
    """Parse ``cuobjdump --dump-resource-usage path``: one entry per (architecture, kernel).

    Raises:
        NoDeviceCodeError: the file has no device code.
        RuntimeError: cuobjdump is missing or fails otherwise.
    """
    tool = cuobjdump_path()
    if tool is None:
        raise RuntimeError("cuobjdump not found: neither triton's bundled copy nor one on PATH")
    result = subprocess.run([tool, "--dump-resource-usage", os.fspath(path)], capture_output=True, text=True,
                            check=False)
    text = result.stdout + result.stderr
    if "does not contain device code" in text:
        raise NoDeviceCodeError(f"{os.fspath(path)} contains no device code")
    if result.returncode != 0:
        raise RuntimeError(f"cuobjdump failed on {os.fspath(path)} (exit {result.returncode}): {text.strip()}")
    return parse_resource_usage(result.stdout)


def parse_resource_usage(text: str) -> list[FunctionUsage]:
    """Parse the text cuobjdump prints (a cubin has no ``arch =`` line: arch is then None)."""
    usages = []
    arch: int | None = None
    function: str | None = None
    for line in text.splitlines():
        if match := _ARCH.match(line):
            arch = int(match.group(1))
        elif match := _FUNCTION.match(line):
            function = match.group(1)
        elif function is not None and "REG:" in line:
            fields = dict(_FIELD.findall(line))
            usages.append(FunctionUsage(name=function, arch=arch, registers=int(fields.get("REG", 0)),
                                        stack_bytes=int(fields.get("STACK", 0)),
                                        local_bytes=int(fields.get("LOCAL", 0)),
                                        shared_bytes=int(fields.get("SHARED", 0))))
            function = None
    return usages
