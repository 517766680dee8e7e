"""The run YAML of ``fiber-fast train``: a schema of nested dataclasses, unknown keys rejected.

```yaml
stage: coarse                # coarse | fine (must match --stage); oscar (implied by --model oscar)
seed: 0
max_steps: 200               # optimizer steps; --max-steps overrides
model:
  preset: tiny               # FiberConfig.preset name (oscar: OscarConfig.preset, tiny | base)
  overrides: {}              # keyword overrides of the preset (fine: stage "fine" is implied)
  eager: false               # build_fiber(cfg, eager=True): FIBER's eager computation
data:                        # passed to fiber_fast.data.build_loader (its keys); --data sets root,
  root: data/synth           # batch.micro_batch sets batch_size, seed defaults to the run seed
  format: captions           # coarse: captions | shards; fine: grounding; oscar: oscar (the default per stage)
  image_size: 64             # coarse square side; fine: min_sizes [..], max_size
  max_text_len: 40
  num_workers: 0
  on_error: raise            # raise | skip (skipped items are counted in metrics.jsonl)
optim:
  lr: 1.0e-4                 # backbone lr (oscar: every parameter's)
  head_lr_mult: 5.0          # coarse: cross-modal fusion + heads at lr x this
  language_lr: null          # fine: language-backbone lr (null = lr)
  weight_decay: 0.01         # not on biases, norms and the temperature
  betas: [0.9, 0.98]
  eps: 1.0e-8
  warmup_steps: 10
  schedule: linear           # linear | cosine | constant (after warmup)
  min_lr_ratio: 0.0          # final lr / peak lr
batch:
  micro_batch: 8             # per rank; a DeepSpeed JSON's train_micro_batch_size_per_gpu wins
  grad_accum: 1              # a DeepSpeed JSON's gradient_accumulation_steps wins
  clip_grad: 1.0             # a DeepSpeed JSON's gradient_clipping wins
precision: fp32              # fp32 | bf16 | fp16, used without --deepspeed
zero_stage: 0                # used without --deepspeed
checkpoint:
  save_every: 0              # --save-every overrides; 0 = only at the end
  keep_last: 2
objectives:                  # coarse keys: itc, itm, mlm (weights), mlm_probability, queue_size
  itc: 1.0                   # fine keys: cls, giou, centerness (weights), topk, focal_alpha, focal_gamma
                             # oscar keys: mlm, relation (weights), mlm_probability
  itm: 1.0
  mlm: 1.0
log:
  tensorboard: true
  progress: true             # tqdm bar on rank 0
  plot: true                 # RUN/curves.png at the end
```
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STAGES = ("coarse", "fine")  # FIBER's; OSCAR trains in one stage, "oscar"
OSCAR_STAGE = "oscar"
COARSE_OBJECTIVES = {"itc": 1.0, "itm": 1.0, "mlm": 1.0, "mlm_probability": 0.15, "queue_size": 0}
FINE_OBJECTIVES = {"cls": 1.0, "giou": 1.0, "centerness": 1.0, "topk": 9, "focal_alpha": 0.25, "focal_gamma": 2.0,
                   "giou_weight": 2.0}
OSCAR_OBJECTIVES = {"mlm": 1.0, "relation": 1.0, "mlm_probability": 0.15}
OSCAR_MAX_TAG_LEN = 30  # data.max_tag_len of an OSCAR run when unset (the loader's default, Oscar+'s max_tag_length)
_OBJECTIVES = {"coarse": COARSE_OBJECTIVES, "fine": FINE_OBJECTIVES, OSCAR_STAGE: OSCAR_OBJECTIVES}
_FORMATS = {"coarse": ("captions", "shards"), "fine": ("grounding",), OSCAR_STAGE: ("oscar",)}


@dataclass
class ModelSection:
    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    eager: bool = False


@dataclass
class OptimSection:
    lr: float = 1e-4
    head_lr_mult: float = 5.0
    language_lr: float | None = None
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    warmup_steps: int = 10
    schedule: str = "linear"
    min_lr_ratio: float = 0.0


@dataclass
class BatchSection:
    micro_batch: int = 8
    grad_accum: int = 1
    clip_grad: float = 1.0


@dataclass
class CheckpointSection:
    save_every: int = 0
    keep_last: int = 2


@dataclass
class LogSection:
    tensorboard: bool = True
    progress: bool = True
    plot: bool = True


@dataclass
class TrainConfig:
    """A parsed run YAML (see the module docstring for every key)."""

    stage: str
    seed: int = 0
    max_steps: int = 100
    precision: str = "fp32"
    zero_stage: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: dict[str, Any] = field(default_factory=dict)
    optim: OptimSection = field(default_factory=OptimSection)
    batch: BatchSection = field(default_factory=BatchSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    objectives: dict[str, float] = field(default_factory=dict)
    log: LogSection = field(default_factory=LogSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"model": ModelSection, "optim": OptimSection, "batch": BatchSection,
             "checkpoint": CheckpointSection, "log": LogSection}
_CHOICES = {"precision": ("fp32", "bf16", "fp16"), "zero_stage": (0, 1, 2, 3)}


def _section(name: str, cls: type, values: Any) -> Any:
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise ValueError(f"config section '{name}' must be a mapping, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"config section '{name}' has unknown keys {unknown}; known: {sorted(known)}")
    return cls(**values)


def config_from_dict(raw: dict[str, Any], stage: str | None = None) -> TrainConfig:
    """Validate and fill defaults; ``stage`` (``--stage``, or ``"oscar"`` for ``--model oscar``) must agree with
    the file's ``stage`` (an OSCAR file may leave it out)."""
    if not isinstance(raw, dict):
        raise ValueError(f"the run config must be a YAML mapping, got {type(raw).__name__}")
    raw = dict(raw)
    file_stage = raw.pop("stage", stage)
    if stage == OSCAR_STAGE and file_stage != stage:
        raise ValueError(f"--model oscar but the config says stage: {file_stage} (FIBER's stages train with "
                         "--model fiber --stage coarse|fine)")
    if stage is not None and file_stage != stage:
        raise ValueError(f"--stage {stage} but the config says stage: {file_stage}")
    if file_stage not in (*STAGES, OSCAR_STAGE):
        raise ValueError(f"stage must be one of {STAGES} (or {OSCAR_STAGE} with --model oscar), got {file_stage!r}")
    top = {f.name for f in dataclasses.fields(TrainConfig)} - {"stage"}
    unknown = sorted(set(raw) - top)
    if unknown:
        raise ValueError(f"config has unknown top-level keys {unknown}; known: {sorted(top)}")
    sections = {name: _section(name, cls, raw.pop(name, None)) for name, cls in _SECTIONS.items()}
    raw_data = raw.pop("data", None)
    defaults = _OBJECTIVES[file_stage]
    objectives = raw.pop("objectives", None) or {}
    unknown = sorted(set(objectives) - set(defaults))
    if unknown:
        raise ValueError(f"objectives for stage {file_stage} has unknown keys {unknown}; known: {sorted(defaults)}")
    config = TrainConfig(stage=file_stage, objectives={**defaults, **objectives}, **sections, **raw)
    for key, choices in _CHOICES.items():
        if getattr(config, key) not in choices:
            raise ValueError(f"{key} must be one of {choices}, got {getattr(config, key)!r}")
    if config.optim.schedule not in ("linear", "cosine", "constant"):
        raise ValueError(f"optim.schedule must be linear, cosine or constant, got {config.optim.schedule!r}")
    data = raw_data if isinstance(raw_data, dict) else {}
    if raw_data is not None and not isinstance(raw_data, dict):
        raise ValueError(f"config section 'data' must be a mapping, got {type(raw_data).__name__}")
    formats = _FORMATS[file_stage]
    config.data = {"format": formats[0], **data}
    if config.data["format"] not in formats:
        raise ValueError(f"data.format for stage {file_stage} must be one of {formats}, got {config.data['format']!r}")
    if "batch_size" in config.data:
        raise ValueError("data.batch_size is set by batch.micro_batch (or the DeepSpeed JSON); remove it")
    for key in ("micro_batch", "grad_accum"):
        if int(getattr(config.batch, key)) < 1:
            raise ValueError(f"batch.{key} must be >= 1, got {getattr(config.batch, key)}")
    if config.max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {config.max_steps}")
    return config


def load_config(path: str | Path, stage: str | None = None) -> TrainConfig:
    """Read and validate a run YAML."""
    with open(path, encoding="utf-8") as handle:
        return config_from_dict(yaml.safe_load(handle), stage)
