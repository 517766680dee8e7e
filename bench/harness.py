"""Benchmark harness: the case-builder pattern and the runners every ``bench/bench_<op>.py`` uses.

A kernel benchmark is one ``KernelBench``: its providers, its shapes, and one ``build`` function
(Liger style) that returns a ``Case`` = ``(fn, inputs)`` plus the model FLOPs per mode. The same
``build`` feeds the speed runner (pytest-benchmark), the memory runner (exact saved/peak bytes via
``fiber_kernels.testing.memory``) and the roofline projection (``fiber_kernels.testing.roofline``),
so the three can never measure different code. See bench/README.md for a worked example.

Rows go to the session ``Recorder`` (fixture ``recorder`` in bench/conftest.py), which writes
the CSV (schema in ``bench/schema.py``) at the end of the run.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from bench.schema import (  # noqa: F401 - re-exported: bench files import everything from here
    COLUMNS,
    METRICS,
    MODES,
    Row,
    RunInfo,
    append_rows,
    benchmark_data,
    device_name,
    read_rows,
    summarize,
    write_rows,
)

# A provider's limits: reason(device, purpose) -> None when it can run, else why not.
# purpose is "time" (measured speed), "memory" (saved/peak bytes) or "projection" (roofline).
ReasonFn = Callable[[torch.device, str], "str | None"]
PURPOSES = ("time", "memory", "projection")
# (GPU key in fiber_kernels.testing.roofline.GPU_SPECS, dtype it trains in). V100 has no bf16.
PROJECTION_TARGETS: tuple[tuple[str, torch.dtype], ...] = (
    ("V100", torch.float16), ("A100", torch.bfloat16), ("H100", torch.bfloat16),
)


def always(device: torch.device, purpose: str) -> str | None:
    """Reason function of a provider that runs everywhere (eager PyTorch)."""
    return None


def module_reason(module: str, why: str) -> str | None:
    """``"<module> not installed: <why>"`` when ``module`` cannot be imported, else None (does not import it)."""
    return None if importlib.util.find_spec(module) is not None else f"{module} not installed: {why}"


def triton_reason(device: torch.device, purpose: str) -> str | None:
    """When our Triton kernels cannot give a figure: no triton; CPU timings (only the interpreter runs
    there, and its times are not speed); CPU memory without ``TRITON_INTERPRET=1``; timing on fake CUDA."""
    missing = module_reason("triton", "pip install triton (Linux)")
    if missing:
        return missing
    if device.type == "cpu":
        if purpose == "time":
            return "Triton runs on the CPU only in the interpreter (TRITON_INTERPRET=1); its times are not speed"
        if os.environ.get("TRITON_INTERPRET") != "1":
            return "Triton on CPU tensors needs TRITON_INTERPRET=1 set before the kernels are defined (no GPU here)"
    if device.type == "cuda" and purpose == "time" and not torch.cuda.is_available():
        return "timing Triton needs a GPU; none here"
    return None


def gpu_package_reason(module: str, why_missing: str, no_gpu: str) -> ReasonFn:
    """Reason function of a provider from an optional package that runs only on a real GPU: ``module`` not
    installed (``why_missing`` says how to get it), else ``no_gpu`` on the CPU and on fake CUDA tensors."""

    def reason(device: torch.device, purpose: str) -> str | None:
        missing = module_reason(module, why_missing)
        if missing:
            return missing
        if device.type != "cuda" or not torch.cuda.is_available():
            return no_gpu
        return None

    return reason


def cuda_ext_reason(op: str) -> ReasonFn:
    """Reason function of the CUDA-extension backend of ``op``: ``_C`` built with a CUDA kernel for it,
    and a real GPU to time on (fake CUDA tensors need the op's fake implementation, which it has)."""

    def reason(device: torch.device, purpose: str) -> str | None:
        from fiber_kernels import _extension

        if device.type != "cuda":
            return "the CUDA extension serves CUDA tensors; this figure is on the CPU"
        if not _extension.is_built():
            return f"fiber_kernels._C is not built ({_extension.load_error()})"
        if not _extension.has_kernel(op, "CUDA"):
            return f"fiber_kernels._C has no CUDA kernel for {op} (built without CUDA?)"
        if purpose == "time" and not torch.cuda.is_available():
            return "timing the CUDA extension needs a GPU; none here"
        return None

    return reason


@dataclass(frozen=True)
class Provider:
    """One implementation under test: ``name`` in the CSV, ``reason`` says when it cannot run."""

    name: str
    reason: ReasonFn = always


@dataclass(frozen=True)
class Shape:
    """A named problem size. ``dims`` are the named sizes (B, H, Nq, ...) written to the CSV as JSON.

    ``quick``: part of the small CPU set that ``--quick`` times. ``cpu_time``: small enough to time
    on a 2-core CPU at all (False: memory and projection rows only, the speed test records a skip).
    """

    label: str
    dims: Mapping[str, int]
    quick: bool = False
    cpu_time: bool = True


@dataclass
class Case:
    """What ``build`` returns: ``fn(*inputs)`` is one forward and returns one tensor.

    ``inputs`` are tensors (``requires_grad`` on the trainable ones: their gradients are what
    ``bwd``/``full`` compute) or plain values. ``flops`` maps a mode to its model FLOPs (the
    builder writes the formula), used for TFLOP/s; ``note`` ends up in the CSV.
    """

    fn: Callable[..., torch.Tensor]
    inputs: tuple[Any, ...]
    flops: Mapping[str, float] = field(default_factory=dict)
    note: str = ""

    def leaves(self) -> list[torch.Tensor]:
        """The inputs that receive gradients."""
        return [t for t in self.inputs if isinstance(t, torch.Tensor) and t.requires_grad]


BuildFn = Callable[[str, Shape, torch.device, torch.dtype], Case]


@dataclass(frozen=True)
class KernelBench:
    """Everything a benchmark file declares: kernel name, providers, shapes, the case builder.

    ``build(provider_name, shape, device, dtype) -> Case``. ``modes`` timed: fwd, bwd, full.
    """

    kernel: str
    providers: tuple[Provider, ...]
    shapes: tuple[Shape, ...]
    build: BuildFn
    modes: tuple[str, ...] = MODES
    cpu_dtype: torch.dtype = torch.float32
    gpu_dtype: torch.dtype = torch.bfloat16

    def provider(self, name: str) -> Provider:
        for provider in self.providers:
            if provider.name == name:
                return provider
        raise KeyError(f"{self.kernel}: no provider {name!r} (have {[p.name for p in self.providers]})")

    def speed_params(self) -> list[Any]:
        """``pytest.param(provider, shape, mode)`` for every combination; quick shapes marked ``quick``."""
        return [pytest.param(p.name, s, m, id=f"{p.name}-{s.label}-{m}", marks=_quick(s.quick))
                for s in self.shapes for m in self.modes for p in self.providers]

    def memory_params(self) -> list[Any]:
        """``pytest.param(provider, shape, device)`` for memory tests: ``"cuda"`` (fake tensors, every
        shape, bf16) and ``"cpu"`` (real tensors, quick shapes, the CPU dtype); all quick (nothing big runs)."""
        params = []
        for shape in self.shapes:
            for device in (("cpu", "cuda") if shape.quick else ("cuda",)):
                params += [pytest.param(p.name, shape, device, id=f"{p.name}-{shape.label}-{device}",
                                        marks=[pytest.mark.quick]) for p in self.providers]
        return params

    def shape_params(self, quick_all: bool = True) -> list[Any]:
        """``pytest.param(provider, shape)`` for memory/projection tests (cheap: fake tensors), all quick."""
        return [pytest.param(p.name, s, id=f"{p.name}-{s.label}", marks=_quick(quick_all or s.quick))
                for s in self.shapes for p in self.providers]


def _quick(is_quick: bool) -> list[Any]:
    return [pytest.mark.quick] if is_quick else []


class Recorder:
    """Collects the rows of one pytest session; bench/conftest.py writes them at the end."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device  # where run_speed times (--bench-device); memory/projection choose their own
        self.rows: list[Row] = []
        self.written: tuple[str, int] | None = None  # (csv path, row count) once the session wrote it

    def add(self, rows: Iterable[Row]) -> None:
        self.rows.extend(rows)

    @contextlib.contextmanager
    def failure(self, kernel: str, provider: str, mode: str, shape: Shape, dtype: str = "",
                device: str = "") -> Iterator[None]:
        """Record an exception of the block as a ``skipped`` row noted ``FAILED: ...``, then re-raise it
        (the benchmark fails in pytest too; the table shows what could not be measured)."""
        try:
            yield
        except Exception as error:
            message = " ".join(f"{type(error).__name__}: {error}".split())[:300]
            self.rows.append(Row(kernel, provider, mode, shape.label, shape.dims, "skipped", dtype=dtype,
                                 device=device, note=f"FAILED: {message}"))
            raise

    def skip(self, kernel: str, provider: str, mode: str, shape: Shape, reason: str, dtype: str = "",
             device: str = "") -> None:
        """Record that ``provider`` could not run, then ``pytest.skip`` with the same reason."""
        self.rows.append(Row(kernel, provider, mode, shape.label, shape.dims, "skipped", dtype=dtype,
                             device=device, note=reason))
        pytest.skip(f"{kernel}/{provider}/{shape.label}/{mode}: {reason}")


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bf16"``."""
    short = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}
    return short.get(dtype, str(dtype).replace("torch.", ""))


def time_rows(result: Any, *, kernel: str, provider: str, mode: str, shape: Shape, dtype: str,
              flops: float | None = None, note: str = "") -> list[Row]:
    """Rows of one timing: ``time`` (s, median/p20/p80 of the per-call times) and, given the model
    FLOPs of one call, ``tflops`` = flops / time / 1e12 (its p20 from the p80 time and vice versa)."""
    median, p20, p80, rounds = summarize(benchmark_data(result))
    rows = [Row(kernel, provider, mode, shape.label, shape.dims, "time", median, p20, p80, rounds, dtype,
                note=note)]
    if flops:
        rows.append(Row(kernel, provider, mode, shape.label, shape.dims, "tflops", flops / median / 1e12,
                        flops / p80 / 1e12, flops / p20 / 1e12, rounds, dtype, note=note))
    return rows


def mode_callable(case: Case, mode: str) -> Callable[[], Any]:
    """The function timed for ``mode``: ``fwd`` (grad enabled, as in training), ``bwd`` (backward of
    one saved forward, graph retained) or ``full`` (forward + backward). Gradients are reset to None
    before each backward so accumulation is not timed; on CUDA each call ends with a synchronize."""
    leaves = case.leaves()
    on_gpu = any(t.is_cuda for t in leaves) and torch.cuda.is_available()

    def reset() -> None:
        for leaf in leaves:
            leaf.grad = None

    def sync() -> None:
        if on_gpu:
            torch.cuda.synchronize()

    if mode == "fwd":
        def forward() -> torch.Tensor:
            out = case.fn(*case.inputs)
            sync()
            return out
        return forward
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    out = case.fn(*case.inputs)
    grad = torch.randn_like(out)
    if mode == "bwd":
        def backward() -> None:
            reset()
            out.backward(grad, retain_graph=True)
            sync()
        return backward

    def step() -> None:
        reset()
        case.fn(*case.inputs).backward(grad)
        sync()
    return step


def run_speed(benchmark: Any, recorder: Recorder, bench: KernelBench, provider: str, shape: Shape, mode: str,
              device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> list[Row]:
    """Time ``provider`` on ``shape`` in ``mode`` with pytest-benchmark and record the rows. ``device``
    defaults to the run's (``--bench-device``: a GPU when there is one), ``dtype`` to the bench's
    ``cpu_dtype`` / ``gpu_dtype``."""
    device = torch.device(device or recorder.device)
    dtype = dtype or (bench.cpu_dtype if device.type == "cpu" else bench.gpu_dtype)
    reason = bench.provider(provider).reason(device, "time")
    if reason is None and device.type == "cpu" and not shape.cpu_time:
        reason = "too slow to time on a 2-core CPU; memory and projected rows only"
    if reason:
        recorder.skip(bench.kernel, provider, mode, shape, reason, dtype_name(dtype))
    case = _build(recorder, bench, provider, shape, device, dtype, mode)
    call = mode_callable(case, mode)
    benchmark.group = f"{bench.kernel} {shape.label} {mode}"
    benchmark.extra_info.update({"kernel": bench.kernel, "provider": provider, "shape": shape.label, "mode": mode})
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    benchmark(call)
    if getattr(benchmark, "disabled", False):  # --benchmark-disable: ran once, nothing to record
        return []
    note = "; ".join(n for n in (case.note, f"load average {load:.1f} at start") if n)
    rows = time_rows(benchmark, kernel=bench.kernel, provider=provider, mode=mode, shape=shape,
                     dtype=dtype_name(dtype), flops=case.flops.get(mode), note=note)
    recorder.add(rows)
    return rows


def _toolkit(module: str) -> tuple[Any, str | None]:
    """Import ``fiber_kernels.testing.<module>``; ``(None, reason)`` when it is not there yet."""
    try:
        return importlib.import_module(f"fiber_kernels.testing.{module}"), None
    except ImportError as error:
        return None, f"fiber_kernels.testing.{module} unavailable ({error})"


class UnsupportedCaseError(Exception):
    """Raised by a case builder when a provider cannot serve this particular shape; recorded as a skip."""


def fake_gpu_label(device: torch.device) -> str:
    """Device column for memory/projection inputs: fake CUDA tensors when there is no GPU here."""
    if device.type == "cuda" and not torch.cuda.is_available():
        return "fake CUDA (FakeTensorMode, no GPU)"
    return device_name(device)


def _build(recorder: Recorder, bench: KernelBench, provider: str, shape: Shape, device: torch.device,
           dtype: torch.dtype, mode: str, label: str = "") -> Case:
    try:
        return bench.build(provider, shape, device, dtype)
    except UnsupportedCaseError as why:
        recorder.skip(bench.kernel, provider, mode, shape, str(why), dtype_name(dtype), label)
        raise  # unreachable: skip raises


def _fake_mode(device: torch.device) -> Any:
    """A ``FakeTensorMode`` when ``device`` is CUDA and there is no GPU (inputs are then fake), else a no-op."""
    if device.type == "cuda" and not torch.cuda.is_available():
        from torch._subclasses.fake_tensor import FakeTensorMode

        return FakeTensorMode()
    return contextlib.nullcontext()


def run_memory(recorder: Recorder, bench: KernelBench, provider: str, shape: Shape, device: str | torch.device = "cuda",
               dtype: torch.dtype | None = None) -> list[Row]:
    """Exact ``saved_bytes`` (mode fwd: what the forward keeps for backward) and ``peak_bytes`` (mode
    full: peak live bytes over forward + backward) via ``fiber_kernels.testing.memory``. CUDA without a
    GPU means fake tensors (bf16 by default): real FIBER shapes cost nothing to measure."""
    device = torch.device(device)
    dtype = dtype or (bench.cpu_dtype if device.type == "cpu" else torch.bfloat16)
    label = fake_gpu_label(device)
    memory, why = _toolkit("memory")
    reason = why or bench.provider(provider).reason(device, "memory")
    if reason:
        recorder.skip(bench.kernel, provider, "full", shape, reason, dtype_name(dtype), label)
    with _fake_mode(device):  # inputs only; the toolkit enters their fake mode itself
        case = _build(recorder, bench, provider, shape, device, dtype, "full", label)
    with recorder.failure(bench.kernel, provider, "full", shape, dtype_name(dtype), label):
        saved = memory.saved_bytes(case.fn, *case.inputs)
        peak = memory.peak_bytes(case.fn, *case.inputs)
    common = {"kernel": bench.kernel, "provider": provider, "shape": shape.label, "dims": shape.dims,
              "dtype": dtype_name(dtype), "device": label, "note": case.note}
    rows = [Row(mode="fwd", metric="saved_bytes", median=float(saved), **common),
            Row(mode="full", metric="peak_bytes", median=float(peak), **common)]
    recorder.add(rows)
    return rows


def run_projection(recorder: Recorder, bench: KernelBench, provider: str, shape: Shape,
                   modes: tuple[str, ...] = ("fwd", "full")) -> list[Row]:
    """Roofline ``projected_time`` (and ``projected_tflops`` = counted FLOPs / projected time) on each
    of ``PROJECTION_TARGETS``, from the FLOPs and HBM bytes ``fiber_kernels.testing.roofline`` counts
    op by op on fake CUDA tensors of the case (``full``: forward + backward with gradients of ones).
    Rows are of kind ``projected`` and name the GPU in ``device``; ``note`` keeps the counts."""
    device = torch.device("cuda")
    roofline, why = _toolkit("roofline")
    reason = why or bench.provider(provider).reason(device, "projection")
    rows: list[Row] = []
    for mode in modes:
        if reason:
            recorder.skip(bench.kernel, provider, mode, shape, reason, "bf16", fake_gpu_label(device))
        counted: dict[torch.dtype, tuple[int, int]] = {}
        for gpu, dtype in PROJECTION_TARGETS:
            if dtype not in counted:
                with _fake_mode(device):
                    case = _build(recorder, bench, provider, shape, device, dtype, mode)
                with recorder.failure(bench.kernel, provider, mode, shape, dtype_name(dtype), gpu):
                    counted[dtype] = roofline.count_flops_and_bytes(case.fn, *case.inputs, backward=mode == "full")
            flops, moved = counted[dtype]
            seconds = roofline.project_time(flops, moved, gpu, dtype)
            bound = "memory-bound" if "memory-bound" in roofline.describe_projection(flops, moved, gpu, dtype) \
                else "compute-bound"
            note = f"{bound}; counted {flops:.4g} FLOP, {moved:.4g} B moved"
            rows.append(Row(bench.kernel, provider, mode, shape.label, shape.dims, "projected_time", seconds,
                            dtype=dtype_name(dtype), device=gpu, note=note))
            if flops:
                rows.append(Row(bench.kernel, provider, mode, shape.label, shape.dims, "projected_tflops",
                                flops / seconds / 1e12, dtype=dtype_name(dtype), device=gpu, note=note))
        recorder.add([r for r in rows if r.mode == mode])
    return rows


def benchmark_tests(bench: KernelBench) -> tuple[Callable[..., None], Callable[..., None], Callable[..., None]]:
    """The speed, memory and projection test functions of ``bench``, parametrized over its providers,
    shapes and modes. A benchmark file binds them to module names that start with ``test_``
    (``test_speed, test_memory, test_projection = benchmark_tests(BENCH)``) so pytest collects them."""

    @pytest.mark.parametrize("provider,shape,mode", bench.speed_params())
    def speed(benchmark: Any, recorder: Recorder, provider: str, shape: Shape, mode: str) -> None:
        run_speed(benchmark, recorder, bench, provider, shape, mode)

    @pytest.mark.parametrize("provider,shape,device", bench.memory_params())
    def memory(recorder: Recorder, provider: str, shape: Shape, device: str) -> None:
        run_memory(recorder, bench, provider, shape, device)

    @pytest.mark.parametrize("provider,shape", bench.shape_params())
    def projection(recorder: Recorder, provider: str, shape: Shape) -> None:
        run_projection(recorder, bench, provider, shape)

    return speed, memory, projection
