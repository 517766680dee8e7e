"""The stride / dtype / autocast / fake-meta matrix over every public op and backend (issue 11).

Axes: op (cross_attention, gated_residual_linear, window_attention, atss_assign, atss_targets) x backend
(triton under the interpreter, cuda = the csrc kernels under host emulation, cpp, torch; what the op has)
x dtype (fp32, fp16, bf16; ATSS fp32 only) x mode (eager; autocast, fp32 inputs in a bf16/fp16 region;
fake, FakeTensorMode; meta, meta tensors on the torch backend) x a layout per tensor argument
(``fiber_kernels.testing.layouts``: contiguous, strided, transposed, offset, expanded).

Each cell asserts the op's defined behaviour: the output and every input gradient equal the same backend's
on contiguous copies (eager), or on inputs cast to the region's dtype (autocast), or have their shapes,
dtypes and devices (fake, meta); a cell the backend declines by design (Triton bf16 under the interpreter)
must raise ``BackendNotSupportedError`` saying so. ``test_every_tensor_argument_in_every_layout`` walks
every layout of every tensor argument of every op on the Triton and emulated CUDA backends explicitly;
``test_generated_matrix`` draws cells with hypothesis (a few per op by default, many under ``-m slow``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from fiber_kernels import BackendNotSupportedError, atss_assign, atss_targets
from fiber_kernels import cross_attention as cross_attention_public
from fiber_kernels import gated_residual_linear as gated_linear_public
from fiber_kernels import window_attention as window_attention_public
from fiber_kernels.atss.anchors import pyramid
from fiber_kernels.atss.api import cpp_available
from fiber_kernels.cross_attention import cuda as attention_cuda
from fiber_kernels.cross_attention.function import cross_attention_op, gated_residual_linear_op
from fiber_kernels.testing import emu
from fiber_kernels.testing.layouts import LAYOUTS, with_layout
from fiber_kernels.window_attention import cuda as window_cuda
from fiber_kernels.window_attention.function import window_attention_op
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MODES = ("eager", "autocast", "fake", "meta")
AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)  # what CPU autocast runs in
ATSS_ANCHORS, ATSS_SIZES = pyramid([(6, 8, 8.0, 32.0), (3, 4, 16.0, 64.0)])  # 48 + 12 anchors, 64 x 48 image


@dataclass(frozen=True)
class Op:
    """One public op: ``inputs(dtype)`` makes its tensor arguments (name -> tensor), ``run(backend, **tensors)``
    calls it on a backend and returns a tuple of outputs; ``dtypes`` it takes, ``backends`` it has."""

    name: str
    inputs: Callable[[torch.dtype], dict[str, torch.Tensor]]
    run: Callable[..., tuple[torch.Tensor, ...]]
    dtypes: tuple[torch.dtype, ...]
    backends: tuple[str, ...]


# ---- the emulated CUDA backend: the custom ops with the cuda launcher, pointed at the host emulation ------

_EMU: dict[str, object] = {}


def _emu(family: str) -> object:
    if family not in _EMU:
        _EMU[family] = emu.build(family, [f"csrc/{family}/{family}_emu.cpp"])
    return _EMU[family]


@contextlib.contextmanager
def _emulated_cuda(op: str, backend: str):
    """Inside: the ``cuda`` launchers of ``op``'s family (forward and backward) run the host emulation."""
    family = {"gated_residual_linear": "cross_attention"}.get(op, op)
    if backend != "cuda" or family not in ("cross_attention", "window_attention"):
        yield
        return
    with emu.launching_on(_emu(family), attention_cuda if family == "cross_attention" else window_cuda):
        yield


# ---- the ops ------------------------------------------------------------------------------------------

def _attention_inputs(dtype):
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[1, 4:] = True
    return {"q": torch.randn(4, 2, 5, 32, dtype=dtype), "k": torch.randn(2, 2, 6, 32, dtype=dtype),
            "v": torch.randn(2, 2, 6, 32, dtype=dtype), "key_padding_mask": mask}


def _attention_run(backend, q, k, v, key_padding_mask):
    if backend == "cuda":
        return (cross_attention_op(q, k, v, key_padding_mask, 32 ** -0.5, "cuda")[0],)
    return (cross_attention_public(q, k, v, key_padding_mask, backend=backend),)


def _linear_inputs(dtype):
    return {"x": torch.randn(2, 3, 16, dtype=dtype), "a": torch.randn(2, 3, 8, dtype=dtype),
            "weight": torch.randn(16, 8, dtype=dtype) * 0.3, "bias": torch.randn(16, dtype=dtype),
            "alpha": torch.tensor([0.6])}


def _linear_run(backend, x, a, weight, bias, alpha):
    if backend == "cuda":
        flat = gated_residual_linear_op(x.reshape(-1, 16), a.reshape(-1, 8), weight, bias, alpha, "tanh", "cuda")
        return (flat.view(x.shape),)
    return (gated_linear_public(x, a, weight, bias, alpha, "tanh", backend=backend),)


def _window_inputs(dtype):
    return {"qkv": torch.randn(1, 5, 6, 48, dtype=dtype), "rpb_table": torch.randn(49, 1, dtype=dtype),
            "qkv_bias": torch.randn(48, dtype=dtype)}


def _window_run(backend, qkv, rpb_table, qkv_bias):
    if backend == "cuda":
        return (window_attention_op(qkv, rpb_table, qkv_bias, 1, 4, 4, 2, 2, 0.25, -100.0, False, "cuda")[0],)
    return (window_attention_public(qkv, rpb_table, 1, 4, 2, qkv_bias=qkv_bias, backend=backend),)


def _atss_boxes() -> torch.Tensor:
    return torch.tensor([[[4.0, 6.0, 30.0, 28.0], [20.0, 10.0, 60.0, 44.0], [0.0, 0.0, 0.0, 0.0]],
                         [[30.0, 2.0, 50.0, 40.0], [8.0, 20.0, 40.0, 46.0], [12.0, 12.0, 20.0, 16.0]]])


def _assign_inputs(dtype):
    return {"anchors": ATSS_ANCHORS[None].expand(2, -1, -1).clone(), "gt_boxes": _atss_boxes(),
            "gt_mask": torch.tensor([[True, True, False], [True, True, True]])}


def _assign_run(backend, anchors, gt_boxes, gt_mask):
    if backend == "cuda":
        starts = torch.tensor([0] + ATSS_SIZES).cumsum(0)
        return tuple(_emu("atss").atss_assign_fwd(anchors, starts, gt_boxes, gt_mask, 9, True, seed=0))
    return atss_assign(anchors, ATSS_SIZES, gt_boxes, gt_mask, backend=backend)


def _targets_inputs(dtype):
    matched, _ = atss_assign(ATSS_ANCHORS, ATSS_SIZES, _atss_boxes(), backend="torch")
    assert int((matched >= 0).sum()) > 4
    return {"anchors": ATSS_ANCHORS[None].expand(2, -1, -1).clone(), "matched_gt": matched, "gt_boxes": _atss_boxes()}


def _targets_run(backend, anchors, matched_gt, gt_boxes):
    return atss_targets(anchors, matched_gt, gt_boxes)


OPS = {op.name: op for op in (
    Op("cross_attention", _attention_inputs, _attention_run, DTYPES, ("triton", "cuda", "torch")),
    Op("gated_residual_linear", _linear_inputs, _linear_run, DTYPES, ("triton", "cuda", "torch")),
    Op("window_attention", _window_inputs, _window_run, DTYPES, ("triton", "cuda", "torch")),
    Op("atss_assign", _assign_inputs, _assign_run, (torch.float32,),
       ("triton", "cuda", "torch") + (("cpp",) if cpp_available() else ())),
    Op("atss_targets", _targets_inputs, _targets_run, (torch.float32,), ("none",)),
)}


# ---- one cell -----------------------------------------------------------------------------------------

def _inputs(op: Op, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The op's inputs, the same values every call (so the contiguous results can be cached)."""
    with torch.random.fork_rng():
        torch.manual_seed(11)
        return op.inputs(dtype)


@functools.cache
def _contiguous(name: str, backend: str, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """The op on contiguous inputs: what every layout but ``expanded`` (which changes the values) reproduces."""
    op = OPS[name]
    return tuple(_evaluate(op, backend, _inputs(op, dtype), {}))


def _reference(op: Op, backend: str, tensors: dict[str, torch.Tensor], layouts: dict[str, str],
               dtype: torch.dtype) -> tuple[torch.Tensor, ...] | list[torch.Tensor]:
    """The op on contiguous copies of ``layouts`` of ``tensors`` (cached unless a layout changes the values)."""
    if "expanded" in layouts.values():
        return _evaluate(op, backend, tensors, layouts, materialize=True)
    return _contiguous(op.name, backend, dtype)


def _declines(op: Op, backend: str, dtype: torch.dtype) -> bool:
    """The cells a backend declines by design: Triton's bf16 under the interpreter (issue 11, item 3)."""
    return backend == "triton" and dtype == torch.bfloat16 and op.dtypes != (torch.float32,)


def _evaluate(op: Op, backend: str, tensors: dict[str, torch.Tensor], layouts: dict[str, str],
              autocast: torch.dtype | None = None, materialize: bool = False) -> list[torch.Tensor]:
    """Outputs, then the gradient of every floating leaf (a weighted sum of the outputs is backpropagated).
    The op gets each leaf in its layout; ``materialize`` copies those views into contiguous tensors first
    (the reference: same values and same gradient paths to the leaves, contiguous storage)."""
    leaves = {name: t.clone().requires_grad_(t.is_floating_point() and op.name.startswith(("cross", "gated", "win")))
              for name, t in tensors.items()}
    args = {name: with_layout(leaf, layouts.get(name, "contiguous")) for name, leaf in leaves.items()}
    if materialize:
        args = {name: arg.contiguous() for name, arg in args.items()}
    with _emulated_cuda(op.name, backend):
        with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            outputs = op.run(backend, **args)
        differentiable = [out for out in outputs if out.requires_grad]
        if differentiable:
            weights = [torch.linspace(-1, 1, out.numel()).view(out.shape) for out in differentiable]
            sum((out.float() * weight).sum() for out, weight in zip(differentiable, weights, strict=True)).backward()
    return [out.detach() for out in outputs] + [leaf.grad for leaf in leaves.values() if leaf.grad is not None]


def _assert_same(got: list[torch.Tensor], want: list[torch.Tensor] | tuple[torch.Tensor, ...], dtype: torch.dtype,
                 label: str) -> None:
    assert len(got) == len(want), label
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    for index, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == w.dtype and g.shape == w.shape, f"{label} #{index}"
        torch.testing.assert_close(g, w, atol=tolerance, rtol=tolerance, equal_nan=True,
                                   msg=lambda m, i=index: f"{label} output/grad #{i}: {m}")


def check_cell(op: Op, backend: str, dtype: torch.dtype, mode: str, layouts: dict[str, str]) -> None:
    """Assert the defined behaviour of one matrix cell (see the module docstring)."""
    label = f"{op.name} {backend} {dtype} {mode} {layouts}"
    run_dtype = torch.float32 if mode == "autocast" else dtype
    tensors = _inputs(op, run_dtype)
    if mode in ("eager", "autocast", "fake") and _declines(op, backend, dtype):
        with pytest.raises(BackendNotSupportedError, match="bfloat16 under TRITON_INTERPRET=1"):
            if mode == "fake":
                fake = FakeTensorMode()
                with fake:
                    op.run(backend, **{name: fake.from_tensor(t) for name, t in tensors.items()})
            else:
                _evaluate(op, backend, tensors, layouts, dtype if mode == "autocast" else None)
        return
    if mode == "eager":
        _assert_same(_evaluate(op, backend, tensors, layouts), _reference(op, backend, tensors, layouts, dtype), dtype,
                     label)
    elif mode == "autocast":
        got = _evaluate(op, backend, tensors, layouts, autocast=dtype)
        cast = {name: t.to(dtype) if t.is_floating_point() and name != "alpha" and op.dtypes != (torch.float32,)
                else t for name, t in tensors.items()}
        want = _evaluate(op, backend, cast, layouts, materialize=True)
        # outputs in the region's dtype; the leaves' gradients arrive in the leaves' fp32 through the casts
        _assert_same(got, [w.to(g.dtype) for g, w in zip(got, want, strict=True)], dtype, label)
    else:
        want = _contiguous(op.name, "torch" if mode == "meta" and backend != "none" else backend, dtype)
        if mode == "meta":
            args = {name: with_layout(t, layouts.get(name, "contiguous")).to("meta") for name, t in tensors.items()}
            outputs = op.run("torch" if backend != "none" else backend, **args)
        else:
            fake = FakeTensorMode()
            views = {name: with_layout(t, layouts.get(name, "contiguous")) for name, t in tensors.items()}
            with fake, _emulated_cuda(op.name, backend):
                outputs = op.run(backend, **{name: fake.from_tensor(view) for name, view in views.items()})
        for out, ref in zip(outputs, want, strict=False):
            assert (out.shape, out.dtype) == (ref.shape, ref.dtype), label
            assert out.device.type == ("meta" if mode == "meta" else "cpu"), label


def _cells(op: Op) -> list[tuple[str, str, str]]:
    """(backend, argument, layout) of the explicit walk: every non-contiguous layout of every tensor argument
    on the backends whose kernels read raw pointers (Triton, emulated CUDA, C++), fp32 eager."""
    backends = [b for b in op.backends if b in ("triton", "cuda", "cpp", "none")]
    names = list(op.inputs(torch.float32))
    return [(backend, name, layout) for backend in backends for name in names for layout in LAYOUTS[1:]]


# The two cases (a strided and an expanded argument) in the default run, the other layouts under slow.
EXPLICIT = [pytest.param(name, backend, arg, layout, id=f"{name}-{backend}-{arg}-{layout}",
                         marks=() if layout in ("strided", "expanded") else pytest.mark.slow)
            for name, op in OPS.items() for backend, arg, layout in _cells(op)]


@pytest.mark.parametrize("name,backend,argument,layout", EXPLICIT)
def test_every_tensor_argument_in_every_layout(name, backend, argument, layout):
    """Issue 11, item 1: every tensor argument of every op, in every layout, on the pointer-reading backends."""
    check_cell(OPS[name], backend, torch.float32, "eager", {argument: layout})


@st.composite
def _cell(draw, name: str):
    op = OPS[name]
    backend = draw(st.sampled_from(op.backends))
    # the emulated CUDA launchers take real CPU tensors (the custom ops' fake impls serve fake ones)
    modes = MODES if backend != "cuda" else ("eager",) if name == "atss_assign" else ("eager", "fake")
    mode = draw(st.sampled_from(modes))
    dtype = draw(st.sampled_from(AUTOCAST_DTYPES if mode == "autocast" else op.dtypes))
    layouts = {arg: draw(st.sampled_from(LAYOUTS)) for arg in _inputs(op, torch.float32)}
    return op, backend, dtype, mode, layouts


def _matrix_test(examples: int):
    @pytest.mark.parametrize("name", list(OPS))
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def test(name, data):
        op, backend, dtype, mode, layouts = data.draw(_cell(name))
        check_cell(op, backend, dtype, mode, layouts)
    return test


test_generated_matrix = _matrix_test(examples=6)
test_generated_matrix_slow = pytest.mark.slow(_matrix_test(examples=80))

