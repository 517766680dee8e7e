"""Exact memory accounting without a GPU: bytes saved for backward and peak live bytes.

Both work on CPU tensors and on fake CUDA tensors (``fake_cuda``), so real FIBER shapes can be
measured without allocating them. Sizes are counted per *storage* (``untyped_storage().nbytes()``):
views share their base's storage and are counted once, and a view of a large buffer counts the
whole buffer (that is what stays allocated).

What is not seen: memory a kernel allocates internally without returning it as a tensor (cuBLAS
workspaces, the CUDA caching allocator's rounding and fragmentation), and tensors a custom
``autograd.Function`` stores as ``ctx`` attributes instead of with ``ctx.save_for_backward``.

Fake CUDA tensors on a machine without a driver (torch 2.14.1): forward ops work, but torch's C++
autograd engine fails (``hasPrimaryContext expects a valid device index``: it stashes the current
CUDA streams of the devices the graph touches). ``peak_bytes`` then runs the backward with a small
Python engine that walks the ``grad_fn`` graph in dependency order, calls each node, and releases
each node's saved tensors right after it ran, as torch's engine does (``_python_backward``).
Note also that ``F.scaled_dot_product_attention`` on fake CUDA picks its math backend (no device to
query), not flash attention: call ``torch.ops.aten._scaled_dot_product_flash_attention`` directly to
measure what a GPU runs.
"""

from __future__ import annotations

import collections
import heapq
import sys
import weakref
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

TensorSpec = tuple[Sequence[int], torch.dtype]


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


def _tensors(tree: object) -> list[torch.Tensor]:
    return [leaf for leaf in pytree.tree_leaves(tree) if isinstance(leaf, torch.Tensor)]


def _check_fn(fn: object, inputs: tuple[Any, ...]) -> list[torch.Tensor]:
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    tensors = _tensors(inputs)
    if not tensors:
        raise ValueError("inputs must contain at least one torch.Tensor (the arguments of fn)")
    return tensors


def _fake_mode(tensors: Iterable[torch.Tensor]) -> FakeTensorMode | None:
    modes = {id(t.fake_mode): t.fake_mode for t in tensors if isinstance(t, FakeTensor)}
    if len(modes) > 1:
        raise ValueError("inputs must be fake tensors of one FakeTensorMode (make them with one fake_cuda call)")
    return next(iter(modes.values()), None)


def fake_cuda(*specs: TensorSpec, requires_grad: bool = True, mode: FakeTensorMode | None = None
              ) -> tuple[torch.Tensor, ...]:
    """Fake CUDA tensors (no memory behind them) for measuring real shapes on a machine without a GPU.

    Args:
        specs: one ``(shape, dtype)`` pair per tensor, e.g. ``((512, 4, 144, 32), torch.float16)``.
        requires_grad: set on the floating-point tensors (integer and bool tensors never require grad).
        mode: the ``FakeTensorMode`` to create them in; a new one by default. Tensors passed together
            to ``saved_bytes`` / ``peak_bytes`` must share one mode.

    Returns:
        ``FakeTensor`` objects on ``cuda:0``; their values are undefined (never read them).
    """
    if not isinstance(requires_grad, bool):
        raise TypeError(f"requires_grad must be a bool, got {type(requires_grad).__name__}")
    if mode is not None and not isinstance(mode, FakeTensorMode):
        raise TypeError(f"mode must be a FakeTensorMode or None, got {type(mode).__name__}")
    if not specs:
        raise ValueError("specs must hold at least one (shape, dtype) pair")
    checked = []
    for index, spec in enumerate(specs):
        if not isinstance(spec, (tuple, list)) or len(spec) != 2:
            raise TypeError(f"specs[{index}] must be a (shape, dtype) pair, got {spec!r}")
        shape, dtype = spec
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"specs[{index}] dtype must be a torch.dtype, got {type(dtype).__name__}")
        if not isinstance(shape, (tuple, list, torch.Size)) or not all(
                isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in shape):
            raise ValueError(f"specs[{index}] shape must be a sequence of ints >= 0, got {shape!r}")
        checked.append((tuple(shape), dtype))
    mode = mode or FakeTensorMode()
    with mode:
        tensors = tuple(torch.empty(shape, dtype=dtype, device="cuda") for shape, dtype in checked)
    for tensor in tensors:
        if requires_grad and tensor.is_floating_point():
            tensor.requires_grad_(True)
    return tensors


def saved_bytes(fn: Callable[..., Any], *inputs: Any, count_inputs: bool = True) -> int:
    """Unique storage bytes that autograd keeps for the backward of ``fn(*inputs)``.

    Every tensor packed by autograd during the forward (``torch.autograd.graph.saved_tensors_hooks``)
    is counted once per storage. By default tensors that share storage with an input are counted
    too (flash-attention's convention: "saves q, k, v, o and the log-sum-exp"); with
    ``count_inputs=False`` only storages that are not inputs' are counted (activation memory).

    Args:
        fn: the forward, called as ``fn(*inputs)`` with grad enabled; it returns tensors.
        inputs: its arguments; CPU tensors, or fake CUDA tensors of one mode (``fake_cuda``), whose
            mode is entered so that factories inside ``fn`` are fake too.
    Returns:
        bytes (int).
    """
    tensors = _check_fn(fn, inputs)
    if not isinstance(count_inputs, bool):
        raise TypeError(f"count_inputs must be a bool, got {type(count_inputs).__name__}")
    input_keys = {_storage_key(t) for t in tensors}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if count_inputs or key not in input_keys:
            saved[key] = tensor.untyped_storage().nbytes()
        return tensor

    with ExitStack() as stack:
        mode = _fake_mode(tensors)
        if mode is not None:
            stack.enter_context(mode)
        stack.enter_context(torch.enable_grad())
        stack.enter_context(torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor))
        fn(*inputs)
    return sum(saved.values())


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes of every storage an op returns until that storage is freed; keeps the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self._finalizers: list[weakref.finalize] = []

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self.live:
            return
        size = storage.nbytes()
        self.live[key] = size
        self.current += size
        self.peak = max(self.peak, self.current)
        self._finalizers.append(weakref.finalize(storage, self._free, key))

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def detach_all(self) -> None:
        for finalizer in self._finalizers:
            finalizer.detach()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in _tensors(out):
            self.track(tensor)
        return out


class _SavedTensorHolder:
    """What autograd stores in place of a saved tensor, so the Python engine can release it."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor: torch.Tensor | None = tensor


def _needs_python_engine(tensors: Iterable[torch.Tensor]) -> bool:
    return torch.cuda.device_count() == 0 and any(t.device.type == "cuda" for t in tensors)


def _python_backward(outputs: Sequence[torch.Tensor], seeds: Sequence[torch.Tensor],
                     unpacked: list[_SavedTensorHolder]) -> None:
    """Backward of ``outputs`` with gradients ``seeds`` without torch's C++ engine.

    Nodes run in dependency order; a leaf's gradient is accumulated into ``.grad``. ``unpacked``
    collects the holders a node unpacks while it runs; they are emptied right after it, which frees
    its saved tensors as the C++ engine's ``release_variables`` does. Tensor and node hooks are not
    run; Python ``autograd.Function`` nodes always get materialised (zero) gradients for ``None``.
    """
    buffers: dict[Any, list[torch.Tensor | None]] = {}
    roots = []
    for output, seed in zip(outputs, seeds, strict=True):
        node = output.grad_fn
        if node is None:  # a leaf returned as is
            _accumulate_into_leaf(output, [seed], 0)
            continue
        _accumulate(buffers, node, output.output_nr, seed)
        roots.append(node)

    dependencies: collections.Counter = collections.Counter()
    seen = set(roots)
    stack = list(roots)
    while stack:
        for child, _ in stack.pop().next_functions:
            if child is None:
                continue
            dependencies[child] += 1
            if child not in seen:
                seen.add(child)
                stack.append(child)
    del seen, stack
    # torch's engine runs the ready node with the highest sequence number first (the most recently
    # created op; AccumulateGrad nodes have the largest number and run as soon as they are ready).
    ready: list[tuple[int, int, Any]] = []
    for node in dict.fromkeys(roots):
        if dependencies[node] == 0:
            heapq.heappush(ready, (-node._sequence_nr(), id(node), node))
    del roots

    while ready:
        node = heapq.heappop(ready)[2]
        grads = buffers.pop(node, None) or [None] * len(node._input_metadata)
        results = _run_node(node, grads) if any(g is not None for g in grads) else None
        for holder in unpacked:
            holder.tensor = None
        unpacked.clear()
        del grads
        for index, (child, input_nr) in enumerate(_children(node)):
            if child is None:
                continue
            grad = None if results is None else results[index]
            if grad is not None:
                results[index] = None  # the buffer now owns it, as in torch's engine
                expected = child._input_metadata[input_nr].shape
                if grad.shape != expected:  # a broadcast input: reduce as torch's validate_outputs does
                    grad = grad.sum_to_size(expected)
                _accumulate(buffers, child, input_nr, grad)
                del grad
            dependencies[child] -= 1
            if dependencies[child] == 0:
                del dependencies[child]
                heapq.heappush(ready, (-child._sequence_nr(), id(child), child))
        del results, node


def _accumulate(buffers: dict[Any, list[torch.Tensor | None]], node: Any, index: int, grad: torch.Tensor) -> None:
    slots = buffers.setdefault(node, [None] * max(1, len(node._input_metadata)))
    slots[index] = grad if slots[index] is None else slots[index] + grad


def _children(node: Any) -> list[tuple[Any, int]]:
    """The edges a node's results flow along, aligned with ``_run_node``'s results."""
    if isinstance(node, torch.autograd.function.BackwardCFunction):
        return [edge for edge in node.next_functions if edge[0] is not None]
    return list(node.next_functions)


def _accumulate_into_leaf(leaf: torch.Tensor, grads: list[torch.Tensor | None], index: int) -> None:
    """torch's AccumulateGrad: the first gradient is stolen when nothing else holds it and it has the
    leaf's strides, else copied (a seed the caller holds, a gradient passed through to two inputs, the
    "gradient layout contract"); later ones are added in place. ``grads[index]`` is taken over."""
    grad = grads[index]
    grads[index] = None
    if leaf.grad is not None:
        leaf.grad.add_(grad)
        return
    # the references here: the name ``grad`` and getrefcount's argument
    if grad.stride() != leaf.stride() or sys.getrefcount(grad) > 2:
        grad = grad.new_empty_strided(leaf.shape, leaf.stride()).copy_(grad)
    leaf.grad = grad


def _run_node(node: Any, grads: list[torch.Tensor | None]) -> list[torch.Tensor | None] | None:
    if type(node).__name__ == "AccumulateGrad":
        _accumulate_into_leaf(node.variable, grads, 0)
        return None
    if isinstance(node, torch.autograd.function.BackwardCFunction):
        # A Python autograd.Function: materialise None gradients (its default) and keep the results
        # of the inputs that require grad, the ones with an edge in next_functions.
        metadata = node._input_metadata
        full = [g if g is not None else torch.zeros(m.shape, dtype=m.dtype, device=m.device)
                for g, m in zip(grads, metadata, strict=True)]
        results = node.apply(*full)
        results = results if isinstance(results, tuple) else (results,)
        # As torch's engine: gradients past the inputs given to apply (a custom op's defaulted
        # arguments) are allowed when they are None.
        needed_count = len(node.needs_input_grad)
        if any(extra is not None for extra in results[needed_count:]):
            raise RuntimeError(f"{type(node).__name__} returned {len(results)} gradients for {needed_count} inputs")
        return [r for r, needed in zip(results[:needed_count], node.needs_input_grad, strict=True) if needed]
    results = node(*grads)
    return list(results) if isinstance(results, (tuple, list)) else [results]


def peak_bytes(fn: Callable[..., Any], *inputs: Any) -> int:
    """Peak live tensor bytes over the forward and backward of ``fn(*inputs)``.

    Counted: the inputs (live from the start), every storage an op returns while it is alive (saved
    activations, temporaries, outputs, the all-ones output gradients, the parameter gradients), as
    seen by a ``TorchDispatchMode`` with weakref finalizers on the storages. The outputs stay alive
    until the backward ends (the caller holds them). Inputs' existing ``.grad`` are set aside during
    the measurement and restored after it.

    Args:
        fn: called as ``fn(*inputs)`` with grad enabled; every floating output that requires grad is
            back-propagated with a gradient of ones.
        inputs: CPU tensors or fake CUDA tensors of one mode (``fake_cuda``).
    Returns:
        bytes (int).
    """
    tensors = _check_fn(fn, inputs)
    leaves = [t for t in tensors if t.requires_grad and t.is_leaf]
    old_grads = [t.grad for t in leaves]
    for leaf in leaves:
        leaf.grad = None
    python_engine = _needs_python_engine(tensors)
    packed: list[_SavedTensorHolder] = []
    unpacked: list[_SavedTensorHolder] = []

    def pack(tensor: torch.Tensor) -> _SavedTensorHolder:
        packed.append(_SavedTensorHolder(tensor))
        return packed[-1]

    def unpack(holder: _SavedTensorHolder) -> torch.Tensor:
        unpacked.append(holder)
        if holder.tensor is None:
            raise RuntimeError("peak_bytes: a saved tensor was used after its node had run and released it")
        return holder.tensor

    tracker = _LiveBytes()
    try:
        with ExitStack() as stack:
            mode = _fake_mode(tensors)
            if mode is not None:
                stack.enter_context(mode)
            stack.enter_context(torch.enable_grad())
            if python_engine:
                stack.enter_context(torch.autograd.graph.saved_tensors_hooks(pack, unpack))
            stack.enter_context(tracker)
            for tensor in tensors:
                tracker.track(tensor)
            outputs = [o for o in _tensors(fn(*inputs)) if o.requires_grad and o.is_floating_point()]
            if not outputs:
                raise ValueError("fn must return at least one floating-point tensor that requires grad "
                                 "(give it inputs with requires_grad=True)")
            seeds = [torch.ones_like(o) for o in outputs]
            if python_engine:
                with torch.no_grad():
                    _python_backward(outputs, seeds, unpacked)
            else:
                torch.autograd.backward(outputs, seeds)
            del seeds
        return tracker.peak
    finally:
        tracker.detach_all()
        for holder in packed:  # break holder -> tensor -> grad_fn -> holder cycles of nodes never run
            holder.tensor = None
        for leaf, grad in zip(leaves, old_grads, strict=True):
            leaf.grad = grad
