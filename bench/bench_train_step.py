"""Whole FIBER training steps, eager (FIBER's computation) vs fused, and the memory-saving options.

Kernels ``train_step_coarse`` (``CoarseTask``: ITC + ITM with hard negatives + MLM, Swin-B 384² +
RoBERTa-base, text 40, batch 8 per GPU) and ``train_step_fine`` (``FineTask``: FPN + ATSS grounding,
800x1333 padded to 800x1344, text 256, batch 1 and 2, 16 boxes). Providers (``bench/train_step.py``
``VARIANTS``): ``eager``, ``fused``, ``fused_ckpt_mlp`` / ``fused_ckpt_block`` (Swin MLPs or whole Swin
blocks recomputed: ``FiberConfig.activation_checkpointing``), ``fused_ckpt_text`` (RoBERTa layers
recomputed: ``FiberConfig.text_checkpointing``) and the two combined (``fused_ckpt_mlp_text``,
``fused_ckpt_block_text``). Coarse only: ``fiber_schedule`` (the eager model run as the official FIBER
code schedules the step: separate full ITC / ITM / MLM passes, lower layers recomputed),
``fiber_schedule_queue`` (plus its 4096-image raw contrastive queue, live through the step) and
``eager_queue`` (our schedule with a 4096-slot embedding queue). Rows:

- exact (fake CUDA): ``saved_bytes`` (activations saved for backward; parameters and batch left out),
  ``peak_bytes`` (peak live bytes of forward + backward, parameters, gradients, the batch and a queue
  included) in bf16 (every provider) and fp32 (``FP32_PROVIDERS``; the ``dtype`` column tells them
  apart), ``saved_bytes_part`` (the bf16 saved bytes by part, the part in ``note``);
- projected: ``model_state_bytes`` (ZeRO-1/2/3 per rank on 8 and 64 ranks, mixed-precision Adam),
  ``max_batch`` per card (V100-32GB, A100-40GB, A100-80GB; ZeRO stage and ranks in ``dims``) from the
  exact bf16 peak at two batch sizes, ``projected_time`` / ``projected_tflops`` of the step (roofline);
- measured: ``samples_per_s`` of the ``tiny`` step on this CPU, fp32, under the trainer's DeepSpeed
  ZeRO-2 engine in 1 process and on 2 gloo ranks (``dims`` ``ranks``), with the load average in ``note``.

``FIBER_FAST_BENCH_TINY=1`` runs every row on the ``tiny`` preset under the same labels, the coarse
step at batch 2 (``dims`` says so; the CSV contract test in tests/bench/test_train_step.py).
"""

from __future__ import annotations

import functools
import os

import pytest
import torch
from fiber_kernels.testing import roofline

from bench import train_step as ts
from bench.harness import PROJECTION_TARGETS, Recorder, Row, Shape, dtype_name, summarize

TINY_ENV = "FIBER_FAST_BENCH_TINY"
TINY = os.environ.get(TINY_ENV) == "1"
STEPS = ts.TINY_STEPS if TINY else ts.REAL_STEPS
PROVIDERS = tuple(ts.VARIANTS)
FAKE = "fake CUDA (FakeTensorMode, no GPU)"
FIXED = ("fake tensors: ITM on M = 3B pairs, 15 % of the text masked for MLM, "
         f"{ts.FINE_BOXES} boxes per fine image")
# Max batch: the line through two exact peaks per kernel (the second batch size of the coarse step is extra).
COARSE_BATCH = STEPS["coarse_b8"].batch
FIT: dict[str, tuple[str, int, int]] = {"train_step_coarse": ("coarse_b8", COARSE_BATCH // 2, COARSE_BATCH),
                                        "train_step_fine": ("fine_b2", 1, 2)}
CPU_ROUNDS = 7
CPU_PROVIDERS = ("eager", "fused")
CPU_RANKS = (1, 2)
FP32_PROVIDERS = ("eager", "fused", "fused_ckpt_block_text")


def _dims(label: str, batch: int | None = None) -> dict[str, int]:
    spec = STEPS[label]
    cfg = ts.step_config(spec, ts.VARIANTS["eager"])
    height, width = ts.image_size(cfg, spec.stage)
    return {"B": batch or spec.batch, "H": height, "W": width, "T": cfg.max_text_len}


@functools.cache
def _exact(label: str, provider: str, batch: int | None = None, dtype: torch.dtype = torch.bfloat16
           ) -> ts.ExactMemory:
    return ts.exact_memory(STEPS[label], ts.VARIANTS[provider], dtype, batch,
                           breakdown=batch is None and dtype == torch.bfloat16)


@functools.cache
def _params(label: str, provider: str) -> tuple[int, int]:
    """(all, trained) parameter elements of the step, without running it."""
    step = ts.fake_step(STEPS[label], ts.VARIANTS[provider])
    return step.params_all, step.params_trained


@functools.cache
def _counts(label: str, provider: str) -> tuple[int, int]:
    return ts.counted_flops_and_bytes(STEPS[label], ts.VARIANTS[provider])


def _runs(provider: str, kernel: str) -> bool:
    """FIBER's own schedule and the queue variants exist for the coarse step only."""
    return kernel == "train_step_coarse" or provider not in ts.COARSE_ONLY


SHAPE_PARAMS = [pytest.param(p, s, id=f"{p}-{s}", marks=pytest.mark.quick) for s in STEPS for p in PROVIDERS
                if _runs(p, STEPS[s].kernel)]
KERNEL_PARAMS = [pytest.param(p, k, id=f"{p}-{k}", marks=pytest.mark.quick) for k in FIT for p in PROVIDERS
                 if _runs(p, k)]


@pytest.mark.parametrize("provider,label", SHAPE_PARAMS)
def test_exact_memory(recorder: Recorder, provider: str, label: str) -> None:
    """saved_bytes, peak_bytes and the saved bytes by part, exact on fake CUDA bf16."""
    spec = STEPS[label]
    with recorder.failure(spec.kernel, provider, "full", _shape(label), "bf16", FAKE):
        mem = _exact(label, provider)
    note = f"{FIXED}; {mem.params_all} parameters, {mem.params_trained} trained"
    common = {"kernel": spec.kernel, "provider": provider, "shape": label, "dims": _dims(label), "dtype": "bf16",
              "device": FAKE, "kind": "exact"}
    rows = [Row(mode="fwd", metric="saved_bytes", median=float(mem.saved),
                note=f"activations only (parameters and batch left out); {note}", **common),
            Row(mode="full", metric="peak_bytes", median=float(mem.peak),
                note=f"bf16 parameters, gradients and the batch included; {note}", **common)]
    rows += [Row(mode="fwd", metric="saved_bytes_part", median=float(size), note=f"part: {part}", **common)
             for part, size in mem.parts.items()]
    recorder.add(rows)


@pytest.mark.parametrize("provider,label", [p for p in SHAPE_PARAMS if p.values[0] in FP32_PROVIDERS])
def test_exact_memory_fp32(recorder: Recorder, provider: str, label: str) -> None:
    """saved_bytes and peak_bytes of the same step in fp32 (parameters, batch and activations fp32; no
    autocast), exact on fake CUDA; the ``dtype`` column tells these rows from the bf16 ones."""
    spec = STEPS[label]
    with recorder.failure(spec.kernel, provider, "full", _shape(label), "fp32", FAKE):
        mem = _exact(label, provider, dtype=torch.float32)
    note = f"{FIXED}; {mem.params_all} parameters, {mem.params_trained} trained"
    common = {"kernel": spec.kernel, "provider": provider, "shape": label, "dims": _dims(label), "dtype": "fp32",
              "device": FAKE, "kind": "exact"}
    recorder.add([Row(mode="fwd", metric="saved_bytes", median=float(mem.saved),
                      note=f"activations only (parameters and batch left out); {note}", **common),
                  Row(mode="full", metric="peak_bytes", median=float(mem.peak),
                      note=f"fp32 parameters, gradients and the batch included; {note}", **common)])


@pytest.mark.parametrize("provider,label", SHAPE_PARAMS)
def test_model_states(recorder: Recorder, provider: str, label: str) -> None:
    """Per-rank parameter + gradient + optimizer bytes under ZeRO-1/2/3 on 8 and 64 ranks (projected)."""
    spec = STEPS[label]
    params_all, params_trained = _params(label, provider)
    rows = []
    for zero in ts.ZERO_STAGES:
        for ranks in ts.RANKS:
            states = ts.model_state_bytes(params_all, params_trained, zero, ranks)
            rows.append(Row(spec.kernel, provider, "full", label, {**_dims(label), "zero": zero, "ranks": ranks},
                            "model_state_bytes", float(states), dtype="bf16", device=f"ZeRO-{zero}, {ranks} ranks",
                            note="bf16 params 2 B + bf16 grads 2 B + fp32 master/m/v 12 B per parameter, sharded "
                                 "per ZeRO stage"))
    recorder.add(rows)


@pytest.mark.parametrize("provider,kernel", KERNEL_PARAMS)
def test_max_batch(recorder: Recorder, provider: str, kernel: str) -> None:
    """Largest micro-batch per card (projected) from the exact peak at two batch sizes plus the ZeRO states."""
    label, small, large = FIT[kernel]
    first = _exact(label, provider, small) if small != STEPS[label].batch else _exact(label, provider)
    second = _exact(label, provider) if large == STEPS[label].batch else _exact(label, provider, large)
    intercept, per_sample = ts.activation_line((small, first), (large, second))
    rows = []
    for card, capacity in ts.CARDS.items():
        for zero in ts.ZERO_STAGES:
            for ranks in ts.RANKS:
                states = ts.model_state_bytes(first.params_all, first.params_trained, zero, ranks)
                fits = ts.max_batch(capacity, states, intercept, per_sample)
                rows.append(Row(kernel, provider, "full", label, {**_dims(label), "zero": zero, "ranks": ranks},
                                "max_batch", float(fits), dtype="bf16", device=card,
                                note=f"{ts.USABLE_FRACTION:.0%} of {card} usable; ZeRO-{zero} states {states} B on "
                                     f"{ranks} ranks; exact activations {intercept:.4g} B + {per_sample:.4g} B "
                                     f"per sample (fake CUDA peaks at B={small}, {large})"))
    recorder.add(rows)


@pytest.mark.parametrize("provider,label", SHAPE_PARAMS)
def test_projected_time(recorder: Recorder, provider: str, label: str) -> None:
    """Roofline GPU time of forward + backward: FLOPs counted on the eager model's step of the same schedule
    (custom ops hide theirs; recomputation by checkpointing not included), HBM bytes on the provider's own."""
    spec = STEPS[label]
    variant = ts.VARIANTS[provider]
    with recorder.failure(spec.kernel, provider, "full", _shape(label), "bf16", FAKE):
        flops, _ = _counts(label, provider if variant.eager else "eager")
        _, moved = _counts(label, provider)
    rows = []
    for gpu, dtype in PROJECTION_TARGETS:
        seconds = roofline.project_time(flops, moved, gpu, dtype)
        note = (f"counted {flops:.4g} FLOP (eager step of this schedule), {moved:.4g} B moved ({provider} step, "
                "bf16 counts; fp16 moves the same bytes); optimizer step not included")
        rows.append(Row(spec.kernel, provider, "full", label, _dims(label), "projected_time", seconds,
                        dtype=dtype_name(dtype), device=gpu, note=note))
        rows.append(Row(spec.kernel, provider, "full", label, _dims(label), "projected_tflops",
                        flops / seconds / 1e12, dtype=dtype_name(dtype), device=gpu, note=note))
    recorder.add(rows)


CPU_PARAMS = [pytest.param(p, k, r, id=f"{p}-{k}-{r}rank", marks=pytest.mark.quick)
              for k in ts.CPU_STEPS for p in CPU_PROVIDERS for r in CPU_RANKS]


@pytest.mark.parametrize("provider,kernel,ranks", CPU_PARAMS)
def test_cpu_samples_per_second(recorder: Recorder, provider: str, kernel: str, ranks: int) -> None:
    """Measured samples/s of the tiny training step on this CPU, fp32, under DeepSpeed ZeRO-2 (the trainer's
    engine path) in 1 process and on 2 gloo ranks; each job's load average is in the note."""
    spec = ts.CPU_STEPS[kernel]
    label = f"tiny_{spec.stage}_b{spec.batch}"
    cfg = ts.step_config(spec, ts.VARIANTS[provider])
    height, width = ts.image_size(cfg, spec.stage)
    dims = {"B": spec.batch, "H": height, "W": width, "T": cfg.max_text_len, "ranks": ranks, "zero": 2}
    with recorder.failure(kernel, provider, "full", Shape(label, dims), "fp32"):
        result = ts.measure_throughput(kernel, provider, ranks, CPU_ROUNDS)
    median, p20, p80, rounds = summarize(result.rates)
    recorder.add([Row(kernel, provider, "full", label, dims, "samples_per_s", median, p20, p80, rounds, "fp32",
                      device=f"cpu ({os.cpu_count()} cores, shared)",
                      note=f"tiny preset, DeepSpeed ZeRO-2 fp32, {ranks} rank(s) x {spec.batch} samples, "
                           f"{result.threads} torch thread(s) per rank; best round {max(result.rates):.3g}; "
                           f"load average {result.load_before:.1f} before, {result.load_after:.1f} after "
                           "(other jobs share the cores)")])


def _shape(label: str) -> Shape:
    return Shape(label, _dims(label))
