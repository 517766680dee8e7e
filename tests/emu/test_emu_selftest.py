"""The emulator headers on their own (no torch): fault reports, limits, fp16 operators, and the two
other builds of csrc/include/fiber_kernels/portable.cuh (a raw ``__shared__`` refused; plain host code without kernels).
With ``-s`` it prints the cost of a barrier wait under each fiber switch (docs/emulation.md).

Each g++ build here takes seconds: no torch headers are involved.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from fiber_kernels.testing import emu

HERE = Path(__file__).resolve().parent
CXX = os.environ.get("CXX") or shutil.which("g++")

pytestmark = pytest.mark.skipif(CXX is None, reason="needs g++ (or $CXX) to compile the emulator self-test")


def compile_cpp(source: Path, output: Path, *flags: str) -> subprocess.CompletedProcess:
    includes = [f"-I{d}" for d in (*emu.CSRC_INCLUDE_DIRS, HERE)]
    command = [CXX, "-std=c++20", "-O1", "-Wall", "-Wextra", "-Werror", *includes, *flags,
               str(source), "-o", str(output)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("switch", ["asm", "ucontext"])
def test_selftest_reports_every_fault(tmp_path, switch):
    # Both fiber switches (emu/context.h): the x86-64 one the bindings use, and the portable fallback.
    binary = tmp_path / "emu_selftest"
    flags = ["-DFIBER_KERNELS_EMU=1"] + (["-DFK_EMU_UCONTEXT"] if switch == "ucontext" else [])
    built = compile_cpp(HERE / "emu_selftest.cpp", binary, *flags)
    assert built.returncode == 0, built.stderr
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0 and run.stdout.strip().endswith("0 failures"), run.stdout + run.stderr
    print(f"{switch} switch:", next(line for line in run.stdout.splitlines() if "per barrier wait" in line))  # -s


def test_raw_shared_declaration_is_refused(tmp_path):
    source = tmp_path / "raw_shared.cpp"
    source.write_text('#include "fiber_kernels/portable.cuh"\n'
                      "__global__ void k(float* out) { __shared__ float s[4]; s[0] = 1.0f; out[0] = s[0]; }\n"
                      "int main() {}\n")
    built = compile_cpp(source, tmp_path / "raw_shared", "-DFIBER_KERNELS_EMU=1")
    assert built.returncode != 0
    assert "use FK_SHARED / FK_SHARED_VAR / FK_DYNAMIC_SHARED instead of __shared__" in built.stderr


def test_plain_host_build_gets_helpers_not_kernels(tmp_path):
    # What a C++ CPU kernel of _C sees when it includes a kernel .cuh: qualifiers, no emulator.
    source = tmp_path / "host.cpp"
    source.write_text('#include "fiber_kernels/portable.cuh"\n'
                      "static_assert(FK_DEVICE_CODE == 0 && FK_EMU == 0);\n"
                      "#ifdef threadIdx\n#error the emulator leaked into a plain host build\n#endif\n"
                      "__host__ __device__ __forceinline__ int twice(int x) { return 2 * x; }\n"
                      "int main() { return twice(3) == 6 ? 0 : 1; }\n")
    built = compile_cpp(source, tmp_path / "host")
    assert built.returncode == 0, built.stderr
    assert subprocess.run([str(tmp_path / "host")], timeout=60, check=False).returncode == 0
