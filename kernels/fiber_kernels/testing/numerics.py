"""The tolerance rule of flash-attention's tests: a kernel may be at most ``factor`` times worse than
PyTorch computing the same thing in the same dtype, both measured against an fp32 reference.
"""

from __future__ import annotations

import torch

_SHOWN = 5  # how many offending elements a failure message lists


def _check_args(out: object, ref_fp32: object, out_torch_same_dtype: object, factor: object,
                atol_floor: object, name: object) -> None:
    for arg_name, value in (("out", out), ("ref_fp32", ref_fp32), ("out_torch_same_dtype", out_torch_same_dtype)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{arg_name} must be a torch.Tensor, got {type(value).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    for arg_name, value in (("factor", factor), ("atol_floor", atol_floor)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{arg_name} must be a real number, got {type(value).__name__}")
    if not factor >= 1.0 or factor == float("inf"):
        raise ValueError(f"factor must be a finite number >= 1, got {factor}")
    if not atol_floor >= 0.0 or atol_floor == float("inf"):
        raise ValueError(f"atol_floor must be a finite number >= 0, got {atol_floor}")
    shapes = {"out": tuple(out.shape), "ref_fp32": tuple(ref_fp32.shape),
              "out_torch_same_dtype": tuple(out_torch_same_dtype.shape)}
    if len(set(shapes.values())) != 1:
        listing = ", ".join(f"{key} {shape}" for key, shape in shapes.items())
        raise ValueError(f"{name}: out, ref_fp32 and out_torch_same_dtype must have one shape, got {listing}")
    for arg_name, value in (("out", out), ("ref_fp32", ref_fp32), ("out_torch_same_dtype", out_torch_same_dtype)):
        if not value.is_floating_point():
            raise TypeError(f"{arg_name} must be a floating-point tensor, got {value.dtype}")


def _position(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(flat_index % size)
        flat_index //= size
    return tuple(reversed(index))


def assert_close_to_reference(out: torch.Tensor, ref_fp32: torch.Tensor, out_torch_same_dtype: torch.Tensor, *,
                              factor: float = 3.0, atol_floor: float = 1e-6, name: str = "output") -> None:
    """Assert ``max|out - ref_fp32| <= factor * max|out_torch_same_dtype - ref_fp32| + atol_floor``.

    Args:
        out: the kernel's result, any shape, any floating dtype (fp16/bf16/fp32).
        ref_fp32: the reference computed in fp32 (or fp64) from the same inputs, same shape.
        out_torch_same_dtype: the reference computed by PyTorch in ``out``'s dtype, same shape: its
            error against ``ref_fp32`` is the rounding error inherent to that dtype.
        factor: how many times the PyTorch error the kernel may reach (flash-attention uses 2-3).
        atol_floor: absolute slack added to the bound, so that exact PyTorch results (error 0)
            don't demand an exact kernel.
        name: what is compared ("dq", "output", ...), quoted in the message.

    Non-finite values: a NaN or inf in ``out`` where ``ref_fp32`` holds a finite value is a failure
    (whatever PyTorch did there); where ``ref_fp32`` is itself non-finite, ``out`` must hold the
    same value (NaN where NaN, the same signed inf where inf). All differences are taken in fp64.

    Raises:
        AssertionError: listing how many elements exceed the bound, the first few positions with
            the kernel, reference and PyTorch values, the worst element, and both max errors.
        TypeError / ValueError: bad arguments (non-tensors, shape mismatch, factor < 1, ...).
    """
    _check_args(out, ref_fp32, out_torch_same_dtype, factor, atol_floor, name)
    shape = tuple(out.shape)
    kernel = out.detach().to("cpu", torch.float64).reshape(-1)
    ref = ref_fp32.detach().to("cpu", torch.float64).reshape(-1)
    torch_out = out_torch_same_dtype.detach().to("cpu", torch.float64).reshape(-1)

    ref_finite = torch.isfinite(ref)
    kernel_error = torch.where(ref_finite, (kernel - ref).abs(), torch.zeros_like(ref))
    torch_error = torch.where(ref_finite & torch.isfinite(torch_out), (torch_out - ref).abs(), torch.zeros_like(ref))
    torch_max = float(torch_error.max()) if torch_error.numel() else 0.0
    bound = factor * torch_max + atol_floor

    # A non-finite kernel value where the reference is finite gives a NaN/inf error: mark it bad.
    bad_finite = ref_finite & ~(kernel_error <= bound)
    same_nonfinite = (kernel == ref) | (torch.isnan(kernel) & torch.isnan(ref))
    bad = bad_finite | (~ref_finite & ~same_nonfinite)
    count = int(bad.sum())
    if count == 0:
        return

    kernel_max = float(kernel_error.max())
    worst = int(torch.where(bad, kernel_error.nan_to_num(nan=float("inf")), torch.full_like(ref, -1.0)).argmax())
    lines = [
        f"{name}: {count} of {kernel.numel()} elements exceed the bound "
        f"{factor} x {torch_max:.3e} (PyTorch {out_torch_same_dtype.dtype} error) + {atol_floor:.1e} = {bound:.3e}",
        f"  max |out - ref| = {kernel_max:.3e}  ({out.dtype}, shape {shape}); "
        f"max |torch - ref| = {torch_max:.3e}",
        f"  worst at {_position(worst, shape)}: out={kernel[worst].item():.6g} ref={ref[worst].item():.6g} "
        f"torch={torch_out[worst].item():.6g}",
        "  first offending elements:",
    ]
    for flat in bad.nonzero().reshape(-1)[:_SHOWN].tolist():
        lines.append(f"    {_position(flat, shape)}: out={kernel[flat].item():.6g} ref={ref[flat].item():.6g} "
                     f"torch={torch_out[flat].item():.6g}")
    raise AssertionError("\n".join(lines))
