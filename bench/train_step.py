"""Whole FIBER training steps for the benchmarks: fake-CUDA models, the trainer's tasks, exact memory
with a breakdown by part, ZeRO model-state bytes, projected max batch per card, CPU samples/s.

The step is the trainer's: ``CoarseTask`` (ITC with fusion off, ITM on hard-negative pairs, MLM, the
lower layers run once) or ``FineTask`` (FPN + ATSS head, grounding losses), ``forward(batch)["loss"]``
then backward. Real shapes run on fake CUDA tensors (``StepFakeMode``): the model is built on the
meta device and its parameters re-made as fake CUDA tensors (ties kept), so nothing is allocated.

Fake tensors hold no values, so the step's few data-dependent choices are fixed by ``StepFakeMode``
(documented in the CSV notes): a boolean mask over a 1-D tensor selects every element (ITM: every
image and caption gets its hard negative, M = 3B pairs, the most the trainer runs); a mask over a
2-D or larger tensor selects 15 % of it, rounded up (MLM: the masked tokens); ``.item()`` reads 0
from numbers (index checks pass) and True from booleans (MLM has masked tokens).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fiber_kernels import value_checks
from fiber_kernels.testing import memory, roofline
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.checkpoint import GraphExecGroup

from fiber_fast.models import FiberConfig, build_fiber
from fiber_fast.train.distributed import rank, world_size
from fiber_fast.train.objectives import itc_loss, itm_loss, mask_tokens, sample_itm_pairs
from fiber_fast.train.tasks import CoarseTask, FineTask, masked_token_loss

ROOT = Path(__file__).resolve().parents[1]
MLM_FRACTION = 0.15
SPECIAL_IDS = (0, 1, 2, 3, 4)  # RoBERTa's <s> <pad> </s> <unk> <mask>
MASK_TOKEN_ID = 4
FINE_BOXES = 16  # ground-truth boxes per image in the fine batches
QUEUE_SLOTS = 4096  # the official FIBER contrastive queue (4096 raw images); the same slots for our embedding queue
GIB = 2 ** 30
# Cards for the max-batch projection: name -> bytes; usable = USABLE_FRACTION of it (CUDA context,
# cuBLAS workspaces and allocator fragmentation take the rest).
CARDS: dict[str, int] = {"V100-32GB": 32 * GIB, "A100-40GB": 40 * GIB, "A100-80GB": 80 * GIB}
USABLE_FRACTION = 0.9
ZERO_STAGES = (1, 2, 3)
RANKS = (8, 64)


@dataclass(frozen=True)
class StepSpec:
    """One benchmarked step: ``kernel`` name in the CSV, preset, stage and micro-batch per GPU."""

    kernel: str
    preset: str
    stage: str
    batch: int


@dataclass(frozen=True)
class Variant:
    """A provider: the eager model (FIBER's computation) or the fused one, with memory-saving options
    (``FiberConfig.activation_checkpointing`` for the Swin blocks, ``text_checkpointing`` for RoBERTa)."""

    eager: bool
    checkpointing: str = "none"
    text_checkpointing: bool = False
    schedule: str = "shared"  # "shared": CoarseTask (lower layers once); "fiber": FiberScheduleTask
    queue: int = 0  # ITC queue slots: embeddings (schedule "shared") or raw images + ids (schedule "fiber")


VARIANTS: dict[str, Variant] = {
    "eager": Variant(eager=True),
    "fused": Variant(eager=False),
    "fused_ckpt_mlp": Variant(eager=False, checkpointing="mlp"),
    "fused_ckpt_block": Variant(eager=False, checkpointing="block"),
    "fused_ckpt_text": Variant(eager=False, text_checkpointing=True),
    "fused_ckpt_mlp_text": Variant(eager=False, checkpointing="mlp", text_checkpointing=True),
    "fused_ckpt_block_text": Variant(eager=False, checkpointing="block", text_checkpointing=True),
    # The coarse step as FIBER runs it (separate passes, raw-image queue) and ours with an embedding queue.
    "fiber_schedule": Variant(eager=True, schedule="fiber"),
    "fiber_schedule_queue": Variant(eager=True, schedule="fiber", queue=QUEUE_SLOTS),
    "eager_queue": Variant(eager=True, queue=QUEUE_SLOTS),
}
COARSE_ONLY = frozenset(name for name, v in VARIANTS.items() if v.schedule == "fiber" or v.queue)
REAL_STEPS: dict[str, StepSpec] = {
    "coarse_b8": StepSpec("train_step_coarse", "base-coarse", "coarse", 8),
    "fine_b1": StepSpec("train_step_fine", "base-fine", "fine", 1),
    "fine_b2": StepSpec("train_step_fine", "base-fine", "fine", 2),
}
# The same labels on the tiny preset (fast checks of the CSV contract; the coarse step at batch 2).
TINY_STEPS: dict[str, StepSpec] = {
    "coarse_b8": StepSpec("train_step_coarse", "tiny", "coarse", 2),
    "fine_b1": StepSpec("train_step_fine", "tiny", "fine", 1),
    "fine_b2": StepSpec("train_step_fine", "tiny", "fine", 2),
}
# Measured CPU throughput: the tiny preset at the real steps' batch sizes.
CPU_STEPS: dict[str, StepSpec] = {
    "train_step_coarse": StepSpec("train_step_coarse", "tiny", "coarse", 8),
    "train_step_fine": StepSpec("train_step_fine", "tiny", "fine", 2),
}


class StepFakeMode(FakeTensorMode):
    """``FakeTensorMode`` that fixes the step's data-dependent sizes and scalars (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(allow_non_fake_inputs=True)

    @staticmethod
    def selected(mask: torch.Tensor) -> int:
        """How many elements a boolean ``mask`` selects: all of a 1-D mask, else ceil(15 %)."""
        return mask.numel() if mask.dim() == 1 else math.ceil(MLM_FRACTION * mask.numel())

    def _indices(self, like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return super().__torch_dispatch__(torch.ops.aten.new_empty.default, (type(like),), (like, list(shape)),
                                          {"dtype": torch.int64})

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's signature
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:
            return True if args[0].dtype == torch.bool else 0
        if func is torch.ops.aten.nonzero.default:
            return self._indices(args[0], (self.selected(args[0]), args[0].dim()))
        if func is torch.ops.aten.index.Tensor and any(i is not None and i.dtype == torch.bool for i in args[1]):
            indices: list[torch.Tensor | None] = []
            for index in args[1]:
                if index is not None and index.dtype == torch.bool:
                    indices += [self._indices(index, (self.selected(index),)) for _ in range(index.dim())]
                else:
                    indices.append(index)
            return super().__torch_dispatch__(func, types, (args[0], indices), kwargs)
        return super().__torch_dispatch__(func, types, args, kwargs)


def step_config(spec: StepSpec, variant: Variant) -> FiberConfig:
    """The ``FiberConfig`` of a step (the preset at the spec's stage, the variant's checkpointing)."""
    return FiberConfig.preset(spec.preset, stage=spec.stage, activation_checkpointing=variant.checkpointing,
                              text_checkpointing=variant.text_checkpointing)


def fake_model(cfg: FiberConfig, eager: bool, mode: FakeTensorMode, dtype: torch.dtype) -> nn.Module:
    """``build_fiber(cfg, eager)`` with every parameter and buffer a fake CUDA tensor of ``mode``
    (floating ones in ``dtype``); tied parameters stay one ``Parameter``. Nothing is allocated."""
    with torch.device("meta"):
        model = build_fiber(cfg, eager=eager)
    return make_fake(model, mode, dtype)


def make_fake(module: nn.Module, mode: FakeTensorMode, dtype: torch.dtype | None) -> nn.Module:
    """Replace ``module``'s meta parameters and buffers by fake CUDA tensors of ``mode`` (floating ones in
    ``dtype``, None: their own), in place; tied parameters stay one ``Parameter``. Returns ``module``."""
    made: dict[int, nn.Parameter] = {}

    def empty(like: torch.Tensor) -> torch.Tensor:
        floating = like.is_floating_point() and dtype is not None
        return torch.empty(like.shape, dtype=dtype if floating else like.dtype, device="cuda")

    with mode:
        for sub in module.modules():
            for name, param in list(sub._parameters.items()):
                if param is None or not param.is_meta:
                    continue
                if id(param) not in made:
                    made[id(param)] = nn.Parameter(empty(param), requires_grad=param.requires_grad)
                sub._parameters[name] = made[id(param)]
            for name, buffer in list(sub._buffers.items()):
                if buffer is not None and buffer.is_meta:
                    sub._buffers[name] = empty(buffer)
    return module


def image_size(cfg: FiberConfig, stage: str) -> tuple[int, int]:
    """``(H, W)`` of a batch: ``img_size``; the fine stage pads to a multiple of 32 (``collate_fine``)."""
    size = cfg.image.img_size
    height, width = (size, size) if isinstance(size, int) else size
    if stage == "fine":
        height, width = -(-height // 32) * 32, -(-width // 32) * 32
    return height, width


def make_batch(cfg: FiberConfig, stage: str, batch: int, device: str | torch.device, dtype: torch.dtype,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """A collate-format batch of ``batch`` samples at the config's shapes (text ``max_text_len``).

    On fake CUDA call it inside the fake mode (values are then undefined); on the CPU the values are
    random but valid (ids past the specials, boxes inside the image, one phrase token per box)."""
    height, width = image_size(cfg, stage)
    length, vocab = cfg.max_text_len, cfg.text.vocab_size
    fake = torch.device(device).type == "cuda" and not torch.cuda.is_available()
    pixel_values = torch.randn(batch, 3, height, width, generator=generator, device="cpu").to(device, dtype)
    input_ids = torch.randint(len(SPECIAL_IDS), vocab, (batch, length), generator=generator).to(device)
    if not fake:
        input_ids[:, 0], input_ids[:, -1] = 0, 2
    out = {"pixel_values": pixel_values, "input_ids": input_ids,
           "attention_mask": torch.ones(batch, length, dtype=torch.int64, device=device)}
    if stage == "coarse":
        out["image_ids"] = torch.arange(batch, device=device)
        return out
    corners = torch.rand(batch, FINE_BOXES, 2, 2, generator=generator) * torch.tensor([width, height]) * 0.9
    boxes = torch.cat([corners.amin(2), corners.amax(2) + 8.0], dim=-1)
    positive = torch.zeros(batch, FINE_BOXES, length)
    positive[:, torch.arange(FINE_BOXES), 1 + torch.arange(FINE_BOXES) % (length - 2)] = 1.0
    out.update(boxes=boxes.to(device, torch.float32), positive_map=positive.to(device),
               box_mask=torch.ones(batch, FINE_BOXES, dtype=torch.bool).to(device))
    return out


def make_task(model: nn.Module, stage: str, variant: Variant | None = None) -> nn.Module:
    """The trainer's task around ``model``: ``CoarseTask`` (RoBERTa's specials and mask id; ``variant.queue``
    embedding-queue slots) or ``FineTask``; ``FiberScheduleTask`` for a variant of schedule ``"fiber"``."""
    variant = variant or Variant(eager=False)
    if stage == "coarse":
        kwargs = {"mask_token_id": MASK_TOKEN_ID, "special_ids": SPECIAL_IDS,
                  "vocab_size": model.config.text.vocab_size}
        if variant.schedule == "fiber":
            return FiberScheduleTask(model, queue=variant.queue, **kwargs)
        return CoarseTask(model, queue_size=variant.queue, queue_dim=model.config.text.hidden_size, **kwargs)
    if variant.schedule != "shared" or variant.queue:
        raise ValueError(f"the fine step has one schedule and no queue, got {variant}")
    return FineTask(model)


class FiberScheduleTask(nn.Module):
    """The coarse step as the official FIBER code schedules it, for the memory comparison: ``CoarseTask``'s
    objectives (same losses, pairs and masking) but each as its own full pass from pixels and token ids,
    the lower layers recomputed every time: ITC ``model(fusion=False)`` on B, ITM ``model(fusion=True)`` on
    the M pairs (their images re-encoded), MLM ``model(fusion=True)`` on B masked captions.

    ``queue`` > 0 holds FIBER's contrastive queue of raw images ``(queue, 3, H, W)`` fp32 and their token ids
    ``(queue, T)`` int64 as buffers, live through the step. Only their bytes count: the re-encoding of the
    queued images (FIBER's extra pass) is not run, so a real FIBER step needs at least these figures.
    """

    def __init__(self, model: nn.Module, *, mask_token_id: int, special_ids: tuple[int, ...], vocab_size: int,
                 queue: int = 0) -> None:
        super().__init__()
        self.model, self.mask_token_id = model, mask_token_id
        self.special_ids, self.vocab_size = special_ids, vocab_size
        if queue:
            height, width = image_size(model.config, "coarse")
            self.register_buffer("image_queue", torch.zeros(queue, model.config.image.in_chans, height, width))
            self.register_buffer("text_queue", torch.zeros(queue, model.config.max_text_len, dtype=torch.int64))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Batch of ``collate_coarse`` -> ``{"loss", "itc", "itm", "mlm"}`` (unit weights)."""
        model = self.model
        pixels, input_ids, attention_mask = batch["pixel_values"], batch["input_ids"], batch["attention_mask"]
        unimodal = model(pixels, input_ids, attention_mask, fusion=False)
        image_feat, text_feat, logit_scale = model.itc_head(unimodal.image_embeds, unimodal.text_embeds)
        itc = itc_loss(image_feat, text_feat, logit_scale, batch["image_ids"])
        pairs = sample_itm_pairs((logit_scale * image_feat @ text_feat.t()).detach(), batch["image_ids"])
        fused_pairs = model(pixels[pairs.image_index], input_ids[pairs.text_index], attention_mask[pairs.text_index],
                            fusion=True)
        itm = itm_loss(model.itm_head(fused_pairs), pairs.labels)
        masked_ids, labels = mask_tokens(input_ids, attention_mask, mask_token_id=self.mask_token_id,
                                         vocab_size=self.vocab_size, special_ids=self.special_ids)
        fused = model(pixels, masked_ids, attention_mask, fusion=True)
        mlm = masked_token_loss(model.mlm_head, fused.text_tokens, labels)
        return {"itc": itc, "itm": itm, "mlm": mlm, "loss": itc + itm + mlm}


@dataclass
class FakeStep:
    """A task on fake CUDA tensors, ready to measure: ``fn(*inputs)`` is the step's forward (the loss);
    ``inputs`` = (batch, trainable parameters, the task's own buffers: its ITC queue), so the measurements
    count the parameters, their gradients and the queue."""

    task: nn.Module
    mode: FakeTensorMode
    inputs: tuple[Any, ...]
    params_all: int   # parameter elements (frozen included)
    params_trained: int

    def fn(self, batch: Mapping[str, torch.Tensor], params: list[torch.Tensor], state: list[torch.Tensor]
           ) -> torch.Tensor:
        with value_checks(False):
            return self.task(batch)["loss"]


def fake_step(spec: StepSpec, variant: Variant, dtype: torch.dtype = torch.bfloat16, batch: int | None = None
              ) -> FakeStep:
    """The step of ``spec`` (micro-batch ``batch``, default the spec's) for ``variant`` on fake CUDA in ``dtype``
    (the task's queue keeps its own dtype, fp32)."""
    cfg = step_config(spec, variant)
    mode = StepFakeMode()
    model = fake_model(cfg, variant.eager, mode, dtype)
    with torch.device("meta"):
        task = make_fake(make_task(model, spec.stage, variant), mode, None)
    with mode:
        data = make_batch(cfg, spec.stage, batch or spec.batch, "cuda", dtype)
    params = [p for p in task.parameters() if p.requires_grad]
    model_buffers = {id(b) for b in model.buffers()}
    state = [b for b in task.buffers() if id(b) not in model_buffers]
    return FakeStep(task, mode, (data, params, state), sum(p.numel() for p in model.parameters()),
                    sum(p.numel() for p in params))


# ----------------------------------------------------------------- saved bytes by part
PARTS = ("window_attention", "fusion", "mlp", "layernorm", "text_layers", "patch_merging", "embeddings",
         "heads", "swin_block_other", "losses_other")
_OUTER_WINS = ("fusion", "heads")  # everything inside a fusion branch or a head counts for it


def part_of(name: str, module: nn.Module) -> str | None:
    """The part a module's saved tensors count for (None: its parent decides)."""
    if name.endswith("fusion") or ".fusion." in name:
        return "fusion"
    if name.startswith(("grounding_head", "itc_head", "itm_head", "mlm_head")):
        return "heads"
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        return "layernorm"
    if name.startswith("image.") and name.endswith(".attn"):
        return "window_attention"
    if name.startswith("image.") and name.endswith(".mlp"):
        return "mlp"
    if name.startswith("text.encoder.layer."):
        return "text_layers"
    if name.endswith(".downsample"):
        return "patch_merging"
    if name.startswith(("image.patch_embed", "text.embeddings")):
        return "embeddings"
    if re.fullmatch(r"image\.layers\.\d+\.blocks\.\d+", name):
        return "swin_block_other"
    return None


@contextmanager
def _part_tracker(model: nn.Module) -> Iterator[Callable[[], str]]:
    """Forward hooks keep the stack of running modules' parts; yields ``current() -> part``."""
    stack: list[str] = []
    handles = []
    for name, module in model.named_modules():
        part = part_of(name, module)
        if part is None:
            continue
        handles.append(module.register_forward_pre_hook(lambda *_, p=part: stack.append(p)))
        handles.append(module.register_forward_hook(lambda *_: stack.pop() and None, always_call=True))

    def current() -> str:
        if not stack:
            return "losses_other"
        outer = next((p for p in stack if p in _OUTER_WINS), None)
        return outer or stack[-1]

    try:
        yield current
    finally:
        for handle in handles:
            handle.remove()


def saved_by_part(step: FakeStep) -> dict[str, int]:
    """Bytes saved for backward per part (``PARTS``), each storage counted once, for the part that saved
    it first; inputs (batch, parameters) left out, so the sum equals ``saved_bytes(count_inputs=False)``."""
    inputs = {t.untyped_storage()._cdata for t in memory._tensors(step.inputs)}
    seen: dict[int, tuple[str, int]] = {}
    with _part_tracker(step.task.model) as current:
        def pack(tensor: torch.Tensor) -> torch.Tensor:
            key = tensor.untyped_storage()._cdata
            if key not in inputs and key not in seen:
                seen[key] = (current(), tensor.untyped_storage().nbytes())
            return tensor

        with ExitStack() as stack:
            stack.enter_context(step.mode)
            stack.enter_context(torch.enable_grad())
            stack.enter_context(torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor))
            step.fn(*step.inputs)
    totals = dict.fromkeys(PARTS, 0)
    for part, size in seen.values():
        totals[part] += size
    return totals


@dataclass(frozen=True)
class ExactMemory:
    """Exact figures of one step on fake CUDA: activation bytes saved for backward (inputs and parameters
    left out), peak live bytes over forward + backward (parameters, their gradients and the batch
    included), the saved bytes by part, and the parameter counts."""

    saved: int
    peak: int
    parts: dict[str, int]
    params_all: int
    params_trained: int


def exact_memory(spec: StepSpec, variant: Variant, dtype: torch.dtype = torch.bfloat16,
                 batch: int | None = None, breakdown: bool = True) -> ExactMemory:
    """Saved and peak bytes (``fiber_kernels.testing.memory``) and, with ``breakdown``, the parts."""
    step = fake_step(spec, variant, dtype, batch)
    saved = memory.saved_bytes(step.fn, *step.inputs, count_inputs=False)
    # One recomputation per checkpointed region: outside torch's C++ engine (fake CUDA runs memory's Python
    # engine) every unpack would otherwise count as a new backward and recompute again.
    with GraphExecGroup():
        peak = memory.peak_bytes(step.fn, *step.inputs)
    parts = saved_by_part(step) if breakdown else {}
    return ExactMemory(saved, peak, parts, step.params_all, step.params_trained)


def counted_flops_and_bytes(spec: StepSpec, variant: Variant, dtype: torch.dtype = torch.bfloat16
                            ) -> tuple[int, int]:
    """FLOPs and HBM bytes of forward + backward counted op by op (``fiber_kernels.testing.roofline``)."""
    step = fake_step(spec, variant, dtype)
    with GraphExecGroup():  # one recomputation per checkpointed region (see exact_memory)
        return roofline.count_flops_and_bytes(step.fn, *step.inputs, backward=True)


# ----------------------------------------------------------------- ZeRO and max batch (projected)
def model_state_bytes(params_all: int, params_trained: int, zero: int, ranks: int) -> int:
    """Per-rank bytes of parameters + gradients + optimizer states under mixed-precision Adam (ZeRO paper):
    bf16 parameters 2 B (all), bf16 gradients 2 B and fp32 master + Adam m + v 12 B (trained ones).
    ZeRO-1 shards the optimizer states over ``ranks``, ZeRO-2 also the gradients, ZeRO-3 also the parameters."""
    if zero not in ZERO_STAGES:
        raise ValueError(f"zero must be one of {ZERO_STAGES}, got {zero}")
    if ranks < 1:
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    params, grads, optim = 2 * params_all, 2 * params_trained, 12 * params_trained
    if zero >= 2:
        grads = -(-grads // ranks)
    if zero >= 3:
        params = -(-params // ranks)
    return params + grads + -(-optim // ranks)


def activation_line(small: tuple[int, ExactMemory], large: tuple[int, ExactMemory]) -> tuple[float, float]:
    """``(intercept, bytes per sample)`` of the peak minus the bf16 parameters it holds, through two batch
    sizes (peak memory is linear in the batch at fixed image and text sizes). The gradients live at the
    peak stay in (ZeRO's states count them again): conservative by at most 2 bytes per trained parameter."""
    (b1, m1), (b2, m2) = small, large
    if b1 == b2:
        raise ValueError("activation_line needs two different batch sizes")
    states = 2 * m1.params_all
    slope = (m2.peak - m1.peak) / (b2 - b1)
    return m1.peak - states - slope * b1, slope


def max_batch(card_bytes: int, states: int, intercept: float, per_sample: float) -> int:
    """Largest micro-batch with ``states + intercept + per_sample * B <= USABLE_FRACTION * card_bytes`` (0: none)."""
    room = USABLE_FRACTION * card_bytes - states - intercept
    return max(0, int(room // per_sample)) if per_sample > 0 else 0


# ----------------------------------------------------------------- measured CPU throughput
def deepspeed_rates(spec: StepSpec, variant: Variant, rounds: int, zero: int = 2) -> list[float]:
    """Samples/s of the whole job (all ranks) for ``rounds`` training steps after one warm-up, on the trainer's
    own path: its DeepSpeed config builder (fp32, ZeRO ``zero``, micro-batch ``spec.batch``), AdamW groups and
    schedule, ``deepspeed.initialize``, then ``engine(batch)``, ``engine.backward``, ``engine.step``.

    Joins the launcher's process group (``torchrun``) or makes a 1-rank gloo group. Each round is timed
    between barriers (the slowest rank's step). The batch is a fixed CPU batch per rank (no data loading)."""
    import deepspeed
    import torch.distributed as dist
    from deepspeed.utils import logger

    from fiber_fast.train.config import BatchSection, TrainConfig
    from fiber_fast.train.engine import deepspeed_config, init_distributed, seed_everything
    from fiber_fast.train.optim import build_optimizer

    logger.setLevel("WARNING")
    init_distributed()
    cfg = TrainConfig(stage=spec.stage, zero_stage=zero, batch=BatchSection(micro_batch=spec.batch))
    seed_everything(cfg.seed)  # the same initial weights on every rank
    model_cfg = step_config(spec, variant)
    task = make_task(build_fiber(model_cfg, eager=variant.eager), spec.stage, variant)
    optimizer, scheduler = build_optimizer(task.model, spec.stage, cfg.optim, rounds + 1)
    engine, _, _, _ = deepspeed.initialize(model=task, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(cfg, None))
    data = make_batch(model_cfg, spec.stage, spec.batch, "cpu", torch.float32,
                      torch.Generator().manual_seed(rank()))
    rates = []
    for round_ in range(rounds + 1):
        dist.barrier()
        start = time.perf_counter()
        engine.backward(engine(data)["loss"])
        engine.step()
        dist.barrier()
        if round_:
            rates.append(spec.batch * world_size() / (time.perf_counter() - start))
    return rates


@dataclass(frozen=True)
class Throughput:
    """Measured samples/s of one DeepSpeed job: per-round ``rates``, torch threads per rank, and the 1-minute
    load average of this machine before and after (other jobs share its cores)."""

    rates: list[float]
    threads: int
    load_before: float
    load_after: float


def measure_throughput(kernel: str, provider: str, ranks: int, rounds: int, timeout: float = 1800) -> Throughput:
    """``deepspeed_rates`` of ``CPU_STEPS[kernel]`` / ``VARIANTS[provider]`` in a fresh job: one process
    (a 1-rank group), or ``ranks`` processes under ``torchrun`` (gloo). Every rank runs 1 torch thread
    (``OMP_NUM_THREADS=1``): on the loaded shared machine a 2-thread process measured 100-400x slower than
    a 1-thread one (its threads wait for each other at every op). A failed job raises ``RuntimeError``
    with its output."""
    if ranks < 1:
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    if kernel not in CPU_STEPS or provider not in VARIANTS:
        raise ValueError(f"kernel must be one of {sorted(CPU_STEPS)} and provider one of {sorted(VARIANTS)}, "
                         f"got {kernel!r}, {provider!r}")
    launcher = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                     "--nproc_per_node", str(ranks)]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "rates.json"
        command = [*launcher, "-m", "bench.train_step", kernel, provider, str(rounds), str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        if run.returncode != 0:
            raise RuntimeError(f"throughput job failed ({run.returncode}): {run.stdout[-2000:]}{run.stderr[-3000:]}")
        result = json.loads(out.read_text())
    return Throughput(result["rates"], result["threads"], load_before, os.getloadavg()[0])


def _main(argv: list[str]) -> None:
    """``python -m bench.train_step KERNEL PROVIDER ROUNDS OUT.json`` (rank 0 writes the rates)."""
    kernel, provider, rounds, out = argv
    rates = deepspeed_rates(CPU_STEPS[kernel], VARIANTS[provider], int(rounds))
    if rank() == 0:
        Path(out).write_text(json.dumps({"rates": rates, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    _main(sys.argv[1:])
