"""``python -m fiber_kernels.info``: versions, the GPU, the compiled extension, and which backend
each registered op takes on this machine for CPU and for CUDA inputs. Never raises."""

from __future__ import annotations

import os
import platform
import sys

import torch

from . import _extension, dispatch

# Hypothetical CUDA devices reported when no GPU is present: the cards fiber-fast targets.
REPORTED_CUDA_DEVICES = (
    dispatch.DeviceInfo("cuda", (7, 0)),
    dispatch.DeviceInfo("cuda", (8, 0)),
    dispatch.DeviceInfo("cuda", (9, 0)),
)


def _versions() -> list[str]:
    lines = [f"python      {platform.python_version()} ({sys.platform})",
             f"torch       {torch.__version__} (CUDA build: {torch.version.cuda or 'no'})"]
    try:
        import triton
        lines.append(f"triton      {triton.__version__}")
    except ImportError as error:
        lines.append(f"triton      not importable ({error})")
    lines.append(f"interpreter TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')}")
    lines.append(f"backend     {dispatch.ENV_VAR}={os.environ.get(dispatch.ENV_VAR, 'auto')}")
    return lines


def _gpus() -> tuple[list[str], list[dispatch.DeviceInfo]]:
    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except RuntimeError as error:
        return [f"gpu         none usable ({error})"], []
    if count == 0:
        return ["gpu         none (CUDA rows below are for hypothetical sm70/sm80/sm90 cards)"], []
    lines, devices = [], []
    for index in range(count):
        capability = torch.cuda.get_device_capability(index)
        lines.append(f"gpu {index}       {torch.cuda.get_device_name(index)} (sm{capability[0]}{capability[1]})")
        devices.append(dispatch.DeviceInfo("cuda", capability))
    return lines, devices


def _extension_lines() -> list[str]:
    info = _extension.build_info()
    if not info["built"]:
        return [f"_C          not built ({info['error']})"]
    archs = ";".join(info["cuda_archs"]) or "none"
    kind = "CUDA + C++" if info["with_cuda"] else "C++ CPU only"
    return [f"_C          built, {kind}, CUDA archs: {archs}"]


def _choice(op: str, device: dispatch.DeviceInfo) -> str:
    try:
        return dispatch.select_backend(op, device).name
    except dispatch.BackendNotSupportedError:
        return "none"


def capability_table(cuda_devices: list[dispatch.DeviceInfo]) -> list[str]:
    """One row per registered op: the auto choice for CPU and each CUDA device, and the backends."""
    devices = [dispatch.DeviceInfo("cpu")] + (cuda_devices or list(REPORTED_CUDA_DEVICES))
    header = ["op".ljust(24)] + [str(device).ljust(12) for device in devices] + ["backends"]
    rows = ["".join(header)]
    for op, backends in sorted(dispatch.registered_ops().items()):
        cells = [op.ljust(24)] + [_choice(op, device).ljust(12) for device in devices]
        rows.append("".join(cells) + ", ".join(sorted(backends)))
    if len(rows) == 1:
        rows.append("(no ops registered)")
    return rows


def report() -> str:
    """The whole report as text."""
    try:
        import fiber_kernels  # noqa: F401  - registers every op
    except Exception as error:  # noqa: BLE001 - the report must never crash
        import_line = [f"import      fiber_kernels failed: {type(error).__name__}: {error}"]
    else:
        import_line = []
    gpu_lines, cuda_devices = _gpus()
    sections = [_versions() + import_line, gpu_lines + _extension_lines(),
                ["auto backend per op and device:"] + capability_table(cuda_devices)]
    return "\n\n".join("\n".join(section) for section in sections)


def main() -> None:
    """Print the report."""
    print(report())


if __name__ == "__main__":
    main()
