"""The training loop: build model, task, data and DeepSpeed engine; train; checkpoint; log.

One optimizer step = ``gradient_accumulation_steps`` micro-batches per rank. The logged ``loss`` (and
each ``loss/<objective>``) is the mean over the step's micro-batches and over ranks; ``lr`` is the
backbone group's lr used by that step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

from fiber_fast.models.checkpoint import RUN_CONFIG, RUN_WEIGHTS

from .checkpoint import (
    CheckpointManager,
    gather_objects,
    load_shared_weights,
    read_init_state,
    rng_state,
    set_rng_state,
)
from .config import OSCAR_MAX_TAG_LEN, OSCAR_STAGE, TrainConfig
from .distributed import rank, world_size
from .engine import deepspeed_config, init_distributed, precision_of, seed_everything
from .metrics import MetricsLogger, memory_mib
from .optim import build_optimizer
from .tasks import CoarseTask, FineTask, OscarTask


@dataclass
class RunOptions:
    """The command-line side of a run (``fiber-fast train`` flags)."""

    run_dir: Path
    data_root: str | None = None
    deepspeed: str | None = None
    max_steps: int | None = None
    save_every: int | None = None
    stop_at: int | None = None
    resume: bool = False
    init: str | None = None


def _say(message: str) -> None:
    if rank() == 0:
        print(f"fiber-fast train: {message}", flush=True)


def _check_vocab(tokenizer: Any, vocab_size: int) -> None:
    if len(tokenizer) > vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's text.vocab_size is "
                         f"{vocab_size}: set model.overrides.text.vocab_size")


def build_oscar_task(cfg: TrainConfig, tokenizer: Any) -> OscarTask:
    """The OscarModel of ``cfg.model`` (``OscarConfig.preset``) wrapped in an ``OscarTask``."""
    from fiber_fast.models import OscarConfig, build_oscar

    oscar_cfg = OscarConfig.preset(cfg.model.preset, **cfg.model.overrides)
    _check_vocab(tokenizer, oscar_cfg.text.vocab_size)
    if tokenizer.pad_token_id != oscar_cfg.text.pad_token_id:
        raise ValueError(f"the tokenizer's pad id is {tokenizer.pad_token_id} but the model's text.pad_token_id is "
                         f"{oscar_cfg.text.pad_token_id} (its embedding row never trains): set "
                         "model.overrides.text.pad_token_id")
    objectives = dict(cfg.objectives)
    return OscarTask(build_oscar(oscar_cfg, eager=cfg.model.eager), mask_token_id=tokenizer.mask_token_id,
                     special_ids=tokenizer.all_special_ids, vocab_size=len(tokenizer),
                     weights={k: objectives[k] for k in ("mlm", "relation")},
                     mlm_probability=objectives["mlm_probability"])


def oscar_data_defaults(data: dict[str, Any], model_config: Any, tokenizer: Any) -> None:
    """Fill an OSCAR data section's sizes from the model (``max_text_len`` word tokens, ``max_regions``) and the
    loader (``max_tag_len``), so the run YAML records them; raise ``ValueError`` when the longest pair
    (words + tags + the tokenizer's pair specials) has more tokens than the model has positions."""
    data.setdefault("max_text_len", model_config.max_text_len)
    data.setdefault("max_tag_len", OSCAR_MAX_TAG_LEN)
    data.setdefault("max_regions", model_config.max_regions)
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    longest = int(data["max_text_len"]) + int(data["max_tag_len"]) + specials
    if longest > model_config.text.max_position_embeddings:
        raise ValueError(f"data.max_text_len {data['max_text_len']} + data.max_tag_len {data['max_tag_len']} + "
                         f"{specials} special tokens = {longest} exceed the model's text.max_position_embeddings "
                         f"{model_config.text.max_position_embeddings}: lower them")


def build_task(cfg: TrainConfig, tokenizer: Any) -> CoarseTask | FineTask | OscarTask:
    """The model of ``cfg.model`` wrapped in its stage's task (a FiberModel; an OscarModel for stage oscar)."""
    from fiber_fast.models import FiberConfig, build_fiber

    if cfg.stage == OSCAR_STAGE:
        return build_oscar_task(cfg, tokenizer)
    overrides = dict(cfg.model.overrides)
    overrides.setdefault("stage", cfg.stage)
    fiber_cfg = FiberConfig.preset(cfg.model.preset, **overrides)
    _check_vocab(tokenizer, fiber_cfg.text.vocab_size)
    model = build_fiber(fiber_cfg, eager=cfg.model.eager)
    objectives = dict(cfg.objectives)
    if cfg.stage == "coarse":
        return CoarseTask(model, mask_token_id=tokenizer.mask_token_id, special_ids=tokenizer.all_special_ids,
                          vocab_size=len(tokenizer),
                          weights={k: objectives[k] for k in ("itc", "itm", "mlm")},
                          mlm_probability=objectives["mlm_probability"], queue_size=int(objectives["queue_size"]),
                          queue_dim=fiber_cfg.text.hidden_size)
    return FineTask(model, weights={k: objectives[k] for k in ("cls", "giou", "centerness")},
                    topk=int(objectives["topk"]), focal_alpha=objectives["focal_alpha"],
                    focal_gamma=objectives["focal_gamma"], giou_weight=objectives["giou_weight"])


MODEL_DTYPE_INPUTS = ("pixel_values", "region_features")  # the inputs that enter the model in its training dtype


def _to_device(batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    out = {key: value.to(device) for key, value in batch.items()}
    for key in MODEL_DTYPE_INPUTS:
        if key in out:
            out[key] = out[key].to(dtype)
    return out


def _batches(loader: Any) -> Iterator[dict[str, torch.Tensor]]:
    """Batches forever: each pass over ``loader`` is the rest of its current epoch (possibly empty right
    after a resume at an epoch's end); two empty passes in a row mean the data yields nothing."""
    empty_passes = 0
    while empty_passes < 2:
        empty_passes += 1
        for batch in loader:
            empty_passes = 0
            yield batch
    raise ValueError("the training data yields no batch (fewer samples per rank than the micro-batch?)")


def _save_final(engine: Any, task: Any, run_dir: Path, zero_stage: int) -> None:
    from fiber_fast.models import save_checkpoint

    model = task.model
    if zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            if rank() == 0:
                save_checkpoint(model, run_dir / RUN_WEIGHTS)
    elif rank() == 0:
        save_checkpoint(model, run_dir / RUN_WEIGHTS)
    if rank() == 0:
        model.config.save(run_dir / "model_config.yaml")


def train(cfg: TrainConfig, options: RunOptions) -> int:
    """Run (or resume) training; returns the exit status."""
    import deepspeed
    from deepspeed.utils import logger as ds_logger

    from fiber_fast.data.loader import build_loader
    from fiber_fast.data.tokenizer import load_tokenizer

    ds_logger.setLevel("WARNING")
    init_distributed()
    run_dir = options.run_dir
    max_steps = options.max_steps or cfg.max_steps
    save_every = cfg.checkpoint.save_every if options.save_every is None else options.save_every
    data = dict(cfg.data)
    if options.data_root is not None:
        data["root"] = options.data_root
    if "root" not in data:
        raise ValueError("no data root: pass --data DIR or set data.root in the config")
    ds_config = deepspeed_config(cfg, options.deepspeed)
    zero_stage = int(ds_config.get("zero_optimization", {}).get("stage", 0))
    dtype = precision_of(ds_config)

    seed_everything(cfg.seed)  # identical initial weights on every rank
    tokenizer = load_tokenizer(data.get("tokenizer") or Path(data["root"]) / "tokenizer")
    task = build_task(cfg, tokenizer)
    manager = CheckpointManager(run_dir, cfg.checkpoint.keep_last)
    resuming = options.resume and manager.latest_tag() is not None
    if options.init and not resuming:
        report = load_shared_weights(task.model, read_init_state(options.init))
        _say(f"--init {options.init}: loaded {len(report['loaded'])} tensors; missing {len(report['missing'])} "
             f"{report['missing'][:8]}; unexpected {len(report['unexpected'])} {report['unexpected'][:8]}; "
             f"window-resized bias tables {report['resized']}; shape-mismatched {report['mismatched']}")
        if rank() == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "init_report.json").write_text(json.dumps({"source": str(options.init), **report}, indent=1))
    if zero_stage == 3:
        for param in getattr(task, "zero3_external_parameters", list)():
            deepspeed.zero.register_external_parameter(task, param)
    optimizer, scheduler = build_optimizer(task.model, cfg.stage, cfg.optim, max_steps)
    engine, optimizer, _, scheduler = deepspeed.initialize(model=task, optimizer=optimizer, lr_scheduler=scheduler,
                                                           config=ds_config)
    seed_everything(cfg.seed + 1000 * (rank() + 1))  # per-rank streams for masking and negative sampling
    micro = int(ds_config["train_micro_batch_size_per_gpu"])
    accum = int(ds_config["gradient_accumulation_steps"])
    if cfg.stage == OSCAR_STAGE:
        oscar_data_defaults(data, task.model.config, tokenizer)
    data.setdefault("max_text_len", task.model.config.max_text_len)
    data.setdefault("seed", cfg.seed)
    loader = build_loader({**data, "batch_size": micro}, tokenizer=tokenizer, rank=rank(), world_size=world_size())

    step = 0
    if options.resume:
        state = manager.load(engine)
        if state is None:
            _say(f"--resume: no checkpoint in {manager.dir}; starting from step 0")
        else:
            step = int(state["step"])
            loader.load_state_dict(state["loaders"][rank()])
            set_rng_state(state["rng"][rank()])
            _say(f"resumed from {manager.dir / state['tag']} at step {step}")
    if rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_CONFIG).write_text(yaml.safe_dump(
            {**cfg.to_dict(), "data": data, "deepspeed": ds_config, "max_steps": max_steps,
             "world_size": world_size()}, sort_keys=False))
    metrics = MetricsLogger(run_dir, enabled=rank() == 0, total_steps=max_steps, start_step=step,
                            tensorboard=cfg.log.tensorboard, progress=cfg.log.progress)

    def client_state() -> dict[str, Any]:
        return {"step": step, "loaders": gather_objects(loader.state_dict()), "rng": gather_objects(rng_state())}

    batches = _batches(loader)
    saved_at = step
    engine.train()
    while step < max_steps:
        start = time.perf_counter()
        lr = float(engine.get_lr()[0])
        totals: dict[str, torch.Tensor] = {}
        for _ in range(accum):
            with torch.random.fork_rng(devices=[]):  # DataLoader iterators draw a seed: keep the training stream
                batch = next(batches)
            losses = engine(_to_device(batch, engine.device, dtype))
            engine.backward(losses["loss"])
            engine.step()
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + value.detach().float().cpu() / accum
        step += 1
        keys = sorted(totals)
        summary = torch.stack([totals[k] for k in keys] + [torch.tensor(float(loader.errors.total))])
        if world_size() > 1:
            dist.all_reduce(summary)
        values = {k: float(summary[i]) / world_size() for i, k in enumerate(keys)}
        elapsed = time.perf_counter() - start
        record = {"step": step, "loss": values.pop("loss"), "lr": lr,
                  "samples_per_s": micro * accum * world_size() / elapsed,
                  **{f"loss/{k}": v for k, v in values.items()}, "data_errors": int(summary[-1]),
                  "time_s": elapsed, "memory_mib": memory_mib()}
        metrics.log(record)
        if options.stop_at is not None and step >= options.stop_at and step < max_steps:
            metrics.close(plot=False)
            _say(f"--stop-at {options.stop_at}: stopping after step {step} without a checkpoint (as a kill would)")
            return 0
        if save_every and step % save_every == 0:
            manager.save(engine, step, client_state())
            saved_at = step
    if saved_at != step:
        manager.save(engine, step, client_state())
    _save_final(engine, task, run_dir, zero_stage)
    curves = metrics.close(plot=cfg.log.plot)
    _say(f"done: {step} steps; checkpoints in {manager.dir}, weights {run_dir / RUN_WEIGHTS}"
         + (f", curves {curves}" if curves else ""))
    return 0
