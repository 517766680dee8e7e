"""Subprocess side of ``fiber_kernels.testing.aot``: compiles kernels with ``TRITON_INTERPRET=0``.

Reads ``{"sys_path": [...], "specs": [{module, qualname, file, signature, constexprs, capability,
num_warps, num_stages, options}, ...]}`` as JSON on stdin and prints, as its last stdout line, a JSON list
with one report dict (or ``{"error": "..."}``) per spec.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from types import ModuleType
from typing import Any


def _import_module(name: str, file: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        if name == "__main__" or not file:
            raise
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {name} from {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _resolve(module: str, qualname: str, file: str) -> Any:
    if module == "__main__":
        module = "_fiber_kernels_aot_main"
    obj: Any = _import_module(module, file)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def main() -> None:
    payload = json.loads(sys.stdin.read())
    sys.path[:0] = [p for p in payload["sys_path"] if p not in sys.path]
    from fiber_kernels.testing.aot import _decode_constexprs, compile_in_process, report_to_dict

    results = []
    for spec in payload["specs"]:
        try:
            kernel = _resolve(spec["module"], spec["qualname"], spec["file"])
            report = compile_in_process(kernel, spec["signature"], _decode_constexprs(spec["constexprs"]),
                                        spec["capability"], spec["num_warps"], spec["num_stages"], spec["options"])
            results.append(report_to_dict(report))
        except Exception as error:  # reported to the parent, which raises it
            results.append({"error": f"{type(error).__name__}: {error}"})
    sys.stdout.write("\n" + json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
