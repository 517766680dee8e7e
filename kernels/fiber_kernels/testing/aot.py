"""Ahead-of-time compile of Triton kernels for a GPU this machine does not have.

``triton.compile(ASTSource(...), target=GPUTarget("cuda", capability, 32))`` needs no GPU and no
driver. From the result this module reads the shared memory Triton launches with
(``metadata.shared``), registers/STACK/LOCAL/static SHARED of the cubin (Triton's bundled
``cuobjdump --dump-resource-usage``), and which tensor-core instructions the PTX contains.

Triton decides between interpreter and compiler when ``@triton.jit`` runs, so a kernel defined
under ``TRITON_INTERPRET=1`` (the test run) cannot be compiled in this process: the compile then
runs in a subprocess with ``TRITON_INTERPRET=0`` that imports the kernel again by module and
qualified name (the kernel must be defined at module level). One subprocess serves a whole batch
(``compile_reports``), two in parallel when the batch has several specs.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ._cuobjdump import resource_usage

CAPABILITIES = (70, 75, 80, 86, 87, 89, 90)
# PTX instructions that run on tensor cores, in the order they are looked for.
TENSOR_CORE_INSTRUCTIONS = ("wgmma.mma_async", "mma.sync")
_WORKER_TIMEOUT_S = 1800
# Compile options with a field of their own (num_warps, num_stages) or that the target fixes (arch).
_RESERVED_OPTIONS = ("num_warps", "num_stages", "arch", "warp_size")


@dataclass(frozen=True)
class CardLimits:
    """Per-block limits of one card. Source: CUDA C++ Programming Guide, "Technical Specifications per
    Compute Capability" table (maximum shared memory per thread block is the opt-in value that
    ``cudaFuncSetAttribute(..., cudaFuncAttributeMaxDynamicSharedMemorySize, ...)`` allows and that
    Triton launches with)."""

    card: str
    capability: int
    max_shared_bytes_per_block: int
    max_registers_per_thread: int
    max_registers_per_block: int
    source: str


_GUIDE = "CUDA C++ Programming Guide, Technical Specifications per Compute Capability"
CARD_LIMITS: dict[str, CardLimits] = {
    # cc 7.0: 96 KB shared memory per SM, up to 96 KB per block (opt-in).
    "V100": CardLimits("V100", 70, 96 * 1024, 255, 65536, f"{_GUIDE}: compute capability 7.0"),
    # cc 8.0: 164 KB shared memory per SM, up to 163 KB per block (opt-in).
    "A100": CardLimits("A100", 80, 163 * 1024, 255, 65536, f"{_GUIDE}: compute capability 8.0"),
    # cc 9.0: 228 KB shared memory per SM, up to 227 KB per block (opt-in).
    "H100": CardLimits("H100", 90, 227 * 1024, 255, 65536, f"{_GUIDE}: compute capability 9.0"),
}


@dataclass(frozen=True)
class CompileSpec:
    """One kernel variant to compile: see ``compile_report`` for the fields."""

    kernel: Any
    signature: dict[str, str]
    constexprs: dict[str, Any]
    capability: int
    num_warps: int = 4
    num_stages: int = 3
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CompileReport:
    """What one compiled variant uses on the card (all sizes in bytes, registers per thread).

    ``shared_bytes`` is the dynamic shared memory Triton launches with; ``static_shared_bytes`` what
    the cubin declares besides it. ``spills`` is true when the kernel uses local memory (STACK or
    LOCAL > 0: register spills or a stack array). ``tensor_core_instruction`` is the first of
    ``wgmma.mma_async`` / ``mma.sync`` found in the PTX, or None. ``options`` are the extra Triton
    compile options it was built with (``{"enable_fp_fusion": False}``); ``fma_instructions`` counts the
    fused multiply-adds (``fma.rn.*``) in the PTX: 0 where a kernel needs every product rounded.
    """

    name: str
    capability: int
    num_warps: int
    num_stages: int
    constexprs: dict[str, Any]
    shared_bytes: int
    static_shared_bytes: int
    registers: int
    stack_bytes: int
    local_bytes: int
    spills: bool
    tensor_core: bool
    tensor_core_instruction: str | None = field(default=None)
    options: dict[str, Any] = field(default_factory=dict)
    fma_instructions: int = 0

    def __str__(self) -> str:
        spills = f"SPILLS (stack {self.stack_bytes} B, local {self.local_bytes} B)" if self.spills else "no spills"
        tensor_core = self.tensor_core_instruction or "no tensor-core instructions"
        options = f" {self.options}" if self.options else ""
        return (f"{self.name} sm{self.capability} warps={self.num_warps} stages={self.num_stages}{options} "
                f"{self.constexprs}: {self.registers} regs, shared {self.shared_bytes + self.static_shared_bytes} B, "
                f"{spills}, {tensor_core}, {self.fma_instructions} fma")


class CompileError(RuntimeError):
    """Triton failed to compile a variant (the message carries Triton's error)."""


def expected_tensor_core_instruction(capability: int) -> str | None:
    """The tensor-core instruction a well-formed matmul uses: ``wgmma.mma_async`` on sm90,
    ``mma.sync`` on sm80-89, none on sm70/75 (Triton has no Volta tensor-core path)."""
    if capability >= 90:
        return "wgmma.mma_async"
    if capability >= 80:
        return "mma.sync"
    return None


def fit_problems(report: CompileReport, card: str, *, require_tensor_cores: bool = True) -> list[str]:
    """Why ``report`` is not fit to ship on ``card`` ("V100", "A100", "H100"); empty when it is.

    Checks: shared memory within the card's per-block limit, registers per block within the limit,
    no spills, and (with ``require_tensor_cores``) the card's tensor-core instruction in the PTX.
    """
    if not isinstance(report, CompileReport):
        raise TypeError(f"report must be a CompileReport, got {type(report).__name__}")
    if card not in CARD_LIMITS:
        raise ValueError(f"card must be one of {tuple(CARD_LIMITS)}, got {card!r}")
    limits = CARD_LIMITS[card]
    problems = []
    if report.capability != limits.capability:
        problems.append(f"compiled for sm{report.capability}, {card} is sm{limits.capability}")
    shared = report.shared_bytes + report.static_shared_bytes
    if shared > limits.max_shared_bytes_per_block:
        problems.append(f"shared memory {shared} B exceeds {card}'s {limits.max_shared_bytes_per_block} B per block")
    registers = report.registers * report.num_warps * 32
    if registers > limits.max_registers_per_block:
        problems.append(f"{report.registers} registers x {report.num_warps * 32} threads = {registers} exceeds "
                        f"{card}'s {limits.max_registers_per_block} per block")
    if report.spills:
        problems.append(f"spills to local memory (stack {report.stack_bytes} B, local {report.local_bytes} B)")
    wanted = expected_tensor_core_instruction(limits.capability)
    if require_tensor_cores and wanted is not None and report.tensor_core_instruction != wanted:
        found = report.tensor_core_instruction or "no tensor-core instruction"
        problems.append(f"expected {wanted} on {card}, found {found}")
    return problems


def _unwrap(kernel: Any) -> Any:
    """The JITFunction / InterpretedFunction under autotune and heuristics wrappers."""
    seen = 0
    while not hasattr(kernel, "arg_names") and hasattr(kernel, "fn") and seen < 16:
        kernel, seen = kernel.fn, seen + 1
    return kernel


def _check_spec(spec: CompileSpec, where: str) -> None:
    kernel = _unwrap(spec.kernel)
    if not hasattr(kernel, "arg_names") or not hasattr(kernel, "fn"):
        raise TypeError(f"{where}kernel must be a @triton.jit function (optionally autotuned), "
                        f"got {type(spec.kernel).__name__}")
    if not isinstance(spec.signature, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in spec.signature.items()):
        raise TypeError(f"{where}signature must be a dict of argument name -> Triton type string (e.g. '*fp16')")
    if not isinstance(spec.constexprs, dict) or not all(isinstance(k, str) for k in spec.constexprs):
        raise TypeError(f"{where}constexprs must be a dict of argument name -> value")
    for key, value in spec.constexprs.items():
        if not isinstance(value, (bool, int, float, str)) and value is not None and not _is_tl_dtype(value):
            raise TypeError(f"{where}constexprs[{key!r}] must be a bool, int, float, str, None or tl dtype, "
                            f"got {type(value).__name__}")
    unknown = sorted((set(spec.signature) | set(spec.constexprs)) - set(kernel.arg_names))
    if unknown:
        raise ValueError(f"{where}signature/constexprs name arguments the kernel does not have: {unknown}; "
                         f"kernel arguments: {kernel.arg_names}")
    defaults = _defaults(kernel)
    missing = [name for name in kernel.arg_names
               if name not in spec.signature and name not in spec.constexprs and name not in defaults]
    if missing:
        raise ValueError(f"{where}signature is missing kernel arguments {missing}")
    if isinstance(spec.capability, bool) or spec.capability not in CAPABILITIES:
        raise ValueError(f"{where}capability must be one of {CAPABILITIES}, got {spec.capability!r}")
    if isinstance(spec.num_warps, bool) or spec.num_warps not in (1, 2, 4, 8, 16, 32):
        raise ValueError(f"{where}num_warps must be a power of two from 1 to 32, got {spec.num_warps!r}")
    if isinstance(spec.num_stages, bool) or not isinstance(spec.num_stages, int) or spec.num_stages < 1:
        raise ValueError(f"{where}num_stages must be an int >= 1, got {spec.num_stages!r}")
    _check_options(spec.options, where)
    qualname = kernel.fn.__qualname__
    if "<locals>" in qualname and _needs_subprocess(kernel):
        raise ValueError(f"{where}kernel {qualname} must be defined at module level: under TRITON_INTERPRET=1 "
                         "it is compiled in a subprocess that imports it by name")


def _check_options(options: object, where: str) -> None:
    """Names of Triton's CUDA compile options (``CUDAOptions``; Triton ignores unknown names silently)
    with JSON values, for the subprocess."""
    from triton.backends.nvidia.compiler import CUDAOptions

    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise TypeError(f"{where}options must be a dict of Triton compile option name -> value, "
                        f"got {type(options).__name__}")
    known = sorted(set(CUDAOptions.__dataclass_fields__) - set(_RESERVED_OPTIONS))
    for key, value in options.items():
        if key in _RESERVED_OPTIONS:
            raise ValueError(f"{where}options[{key!r}] is not allowed: num_warps and num_stages are CompileSpec "
                             f"fields, arch and warp_size follow the capability")
        if key not in known:
            raise ValueError(f"{where}options[{key!r}] is not a Triton compile option; known: {known}")
        if not isinstance(value, (bool, int, float, str)) and value is not None:
            raise TypeError(f"{where}options[{key!r}] must be a bool, int, float, str or None, "
                            f"got {type(value).__name__}")


def _defaults(kernel: Any) -> dict[str, Any]:
    """Default values of the kernel's arguments (``BLOCK: tl.constexpr = 64``)."""
    parameters = inspect.signature(kernel.fn).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def _is_tl_dtype(value: object) -> bool:
    import triton.language as tl

    return isinstance(value, tl.dtype)


def _needs_subprocess(kernel: Any) -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction) or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _encode_constexprs(constexprs: dict[str, Any]) -> dict[str, Any]:
    return {k: {"tl_dtype": v.name} if _is_tl_dtype(v) else v for k, v in constexprs.items()}


def _decode_constexprs(constexprs: dict[str, Any]) -> dict[str, Any]:
    import triton.language as tl

    return {k: tl.str_to_ty(v["tl_dtype"], None) if isinstance(v, dict) else v for k, v in constexprs.items()}


def compile_in_process(kernel: Any, signature: dict[str, str], constexprs: dict[str, Any], capability: int,
                       num_warps: int, num_stages: int, options: Mapping[str, Any] | None = None) -> CompileReport:
    """Compile with this process's Triton (the kernel must be a compiler-mode JITFunction)."""
    options = dict(options or {})
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _unwrap(kernel)
    constexprs = {**{k: v for k, v in _defaults(fn).items() if k not in signature}, **constexprs}
    full_signature = {name: signature.get(name, "constexpr") for name in fn.arg_names}
    # Pointers get the 16-byte divisibility hint a launch with torch tensors gives them.
    attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]]
             for name, kind in full_signature.items() if kind.startswith("*")}
    source = ASTSource(fn=fn, signature=full_signature, constexprs=dict(constexprs), attrs=attrs)
    try:
        compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                                  options={**options, "num_warps": num_warps, "num_stages": num_stages})
    except Exception as error:  # triton raises CompilationError, RuntimeError, AssertionError, ...
        raise CompileError(f"{fn.__name__} sm{capability} warps={num_warps} stages={num_stages} {options} "
                           f"{constexprs}: {type(error).__name__}: {error}") from error
    ptx = compiled.asm["ptx"]
    with tempfile.TemporaryDirectory() as folder:
        cubin = os.path.join(folder, f"{fn.__name__}.cubin")
        with open(cubin, "wb") as handle:
            handle.write(compiled.asm["cubin"])
        usages = resource_usage(cubin)
    usage = next((u for u in usages if u.name == compiled.metadata.name), usages[0])
    found = next((instruction for instruction in TENSOR_CORE_INSTRUCTIONS if instruction in ptx), None)
    return CompileReport(
        name=fn.__name__, capability=capability, num_warps=num_warps, num_stages=num_stages,
        constexprs={k: str(v) if _is_tl_dtype(v) else v for k, v in constexprs.items()},
        shared_bytes=int(compiled.metadata.shared), static_shared_bytes=usage.shared_bytes,
        registers=usage.registers, stack_bytes=usage.stack_bytes, local_bytes=usage.local_bytes,
        spills=usage.stack_bytes > 0 or usage.local_bytes > 0,
        tensor_core=found is not None, tensor_core_instruction=found, options=options,
        fma_instructions=ptx.count("fma.rn."))


def compile_report(kernel: Any, signature: dict[str, str], constexprs: dict[str, Any], capability: int,
                   num_warps: int = 4, num_stages: int = 3, options: Mapping[str, Any] | None = None) -> CompileReport:
    """Compile one Triton kernel variant for ``sm<capability>`` and report its resource use.

    Args:
        kernel: a module-level ``@triton.jit`` function (autotune/heuristics wrappers are unwrapped).
        signature: Triton type of every runtime argument, e.g. ``{"q_ptr": "*fp16", "N": "i32"}``;
            pointers get the 16-byte divisibility a launch with torch tensors gives.
        constexprs: value of every ``tl.constexpr`` argument (bool, int, float, str, None or a tl
            dtype); they need not appear in ``signature``; arguments with a default may be left out.
        capability: 70, 75, 80, 86, 87, 89 or 90.
        num_warps, num_stages: launch options, as in ``triton.Config``.
        options: further Triton compile options, passed through as a launch passes them (e.g.
            ``{"enable_fp_fusion": False}``); names of ``CUDAOptions`` fields, JSON values.
    Raises:
        CompileError: Triton rejected the variant.
    """
    spec = CompileSpec(kernel, signature, constexprs, capability, num_warps, num_stages, options or {})
    return compile_reports([spec])[0]


def compile_reports(specs: list[CompileSpec], *, workers: int | None = None) -> list[CompileReport]:
    """Compile many variants; under the interpreter in ``workers`` subprocesses (default: up to 2)."""
    if not isinstance(specs, (list, tuple)) or not all(isinstance(s, CompileSpec) for s in specs):
        raise TypeError("specs must be a list of CompileSpec")
    if not specs:
        raise ValueError("specs must not be empty")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be an int >= 1 or None, got {workers!r}")
    many = len(specs) > 1
    for index, spec in enumerate(specs):
        _check_spec(spec, f"specs[{index}]: " if many else "")
    if not any(_needs_subprocess(_unwrap(spec.kernel)) for spec in specs):
        return [compile_in_process(s.kernel, s.signature, s.constexprs, s.capability, s.num_warps, s.num_stages,
                                   s.options) for s in specs]
    workers = min(workers or 2, len(specs))
    chunks = [list(range(start, len(specs), workers)) for start in range(workers)]
    jobs = [_start_worker([specs[i] for i in chunk]) for chunk in chunks]
    by_index: dict[int, CompileReport] = {}
    try:
        for chunk, job in zip(chunks, jobs, strict=True):
            by_index.update(zip(chunk, _finish_worker(job), strict=True))
    finally:
        for process, _ in jobs:  # a failure in one worker must not leave the other running
            if process.poll() is None:
                process.kill()
                process.communicate()
    return [by_index[index] for index in range(len(specs))]


def _kernel_location(kernel: Any) -> dict[str, str]:
    fn = _unwrap(kernel).fn
    return {"module": fn.__module__, "qualname": fn.__qualname__, "file": inspect.getfile(fn)}


def _start_worker(specs: list[CompileSpec]) -> tuple[subprocess.Popen, str]:
    payload = {"sys_path": [p for p in sys.path if p], "specs": [
        {**_kernel_location(s.kernel), "signature": s.signature, "constexprs": _encode_constexprs(s.constexprs),
         "capability": s.capability, "num_warps": s.num_warps, "num_stages": s.num_stages,
         "options": dict(s.options)} for s in specs]}
    env = dict(os.environ, TRITON_INTERPRET="0")
    process = subprocess.Popen([sys.executable, "-m", "fiber_kernels.testing._aot_worker"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return process, json.dumps(payload)


def _finish_worker(job: tuple[subprocess.Popen, str]) -> list[CompileReport]:
    process, payload = job
    try:
        stdout, stderr = process.communicate(payload, timeout=_WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise RuntimeError(f"the ahead-of-time compile subprocess ran past {_WORKER_TIMEOUT_S} s") from None
    if process.returncode != 0:
        raise RuntimeError(f"the ahead-of-time compile subprocess failed (exit {process.returncode}):\n{stderr}")
    results = json.loads(stdout.strip().splitlines()[-1])
    reports = []
    for result in results:
        if "error" in result:
            raise CompileError(result["error"])
        reports.append(CompileReport(**result))
    return reports


def report_to_dict(report: CompileReport) -> dict[str, Any]:
    """A JSON-ready dict of ``report`` (what the subprocess sends back)."""
    return asdict(report)
