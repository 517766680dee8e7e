"""The training-step benchmark (bench/bench_train_step.py, bench/train_step.py) and the memory-saving option
``FiberConfig.activation_checkpointing``: the CSV contract on the tiny preset, exact figures repeatable and
consistent, the ZeRO/max-batch arithmetic, and checkpointing leaving losses and gradients unchanged."""

from __future__ import annotations

import csv
import importlib
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import plot  # noqa: E402
from bench import train_step as ts  # noqa: E402
from bench.harness import Recorder, RunInfo, read_rows, write_rows  # noqa: E402
from fiber_fast.models import FiberConfig, build_fiber  # noqa: E402


def _bench(out: Path, keyword: str) -> list[dict[str, str]]:
    env = {**os.environ, "FIBER_FAST_BENCH_TINY": "1"}
    run = subprocess.run([sys.executable, "-m", "fiber_fast", "bench", "-k", keyword, "--out", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with open(out / "latest.csv", newline="", encoding="utf-8") as src:
        return list(csv.DictReader(src))


def _check_contract(rows: list[dict[str, str]], providers: tuple[str, ...], throughput: bool) -> None:
    kinds = {(r["kernel"], r["provider"], r["shape"], r["metric"], r["kind"]) for r in rows}
    for provider in providers:
        for kernel, shape in (("train_step_coarse", "coarse_b8"), ("train_step_fine", "fine_b2")):
            for metric, kind in (("saved_bytes", "exact"), ("peak_bytes", "exact"), ("saved_bytes_part", "exact"),
                                 ("model_state_bytes", "projected"), ("max_batch", "projected"),
                                 ("projected_time", "projected")):
                assert (kernel, provider, shape, metric, kind) in kinds, (kernel, provider, shape, metric)
        if throughput:
            measured = [r for r in rows if r["metric"] == "samples_per_s" and r["provider"] == provider]
            assert {r["kernel"] for r in measured} == {"train_step_coarse", "train_step_fine"}
            assert all(r["kind"] == "measured" and float(r["median"]) > 0 for r in measured)
    assert {r["kind"] for r in rows} <= {"exact", "projected", "measured"}
    cards = {r["device"] for r in rows if r["metric"] == "max_batch"}
    assert cards == {"V100-32GB", "A100-40GB", "A100-80GB"}
    states = {(r["device"]) for r in rows if r["metric"] == "model_state_bytes"}
    assert states == {f"ZeRO-{z}, {n} ranks" for z in (1, 2, 3) for n in (8, 64)}


def test_csv_contract_on_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config) -> None:
    """The benchmark's rows (tiny preset, fused; the module's own test functions, in process) written and read
    back as CSV carry the issue's labels and kinds; the plots are drawn from them."""
    monkeypatch.setenv("FIBER_FAST_BENCH_TINY", "1")
    pytestconfig.addinivalue_line("markers", "quick: bench/conftest.py's marker (the module marks its cases)")
    monkeypatch.delitem(sys.modules, "bench.bench_train_step", raising=False)
    module = importlib.import_module("bench.bench_train_step")
    monkeypatch.delitem(sys.modules, "bench.bench_train_step")  # the next import reads the environment again
    recorder = Recorder()
    for label in ("coarse_b8", "fine_b2"):
        module.test_exact_memory(recorder, "fused", label)
        module.test_model_states(recorder, "fused", label)
        module.test_projected_time(recorder, "fused", label)
    for kernel in ("train_step_coarse", "train_step_fine"):
        module.test_max_batch(recorder, "fused", kernel)
    write_rows(tmp_path / "latest.csv", recorder.rows, RunInfo.collect())
    rows = [{k: str(v) for k, v in r.items()} for r in read_rows(tmp_path / "latest.csv")]
    _check_contract(rows, ("fused",), throughput=False)
    if importlib.util.find_spec("matplotlib") is not None:
        plots = {p.name for p in plot.plot_csv(tmp_path / "latest.csv", tmp_path / "plots")}
        assert {"train_step_breakdown_coarse_b8.png", "projected_train_step_max_batch_train_step_fine.png"} <= plots


@pytest.mark.slow
def test_csv_contract_on_tiny_every_row(tmp_path: Path) -> None:
    """``fiber-fast bench -k train_step`` on the tiny preset: every provider, the measured CPU throughput too."""
    rows = _bench(tmp_path, "train_step")
    _check_contract(rows, tuple(ts.VARIANTS), throughput=True)
    assert {r["shape"] for r in rows if r["metric"] == "saved_bytes"} == {"coarse_b8", "fine_b1", "fine_b2"}


@pytest.mark.slow
def test_throughput_on_two_deepspeed_ranks() -> None:
    """The measured rows' job: 2 gloo ranks under torchrun run the trainer's DeepSpeed ZeRO-2 engine; rank 0
    reports one rate per round, 1 torch thread per rank."""
    result = ts.measure_throughput("train_step_fine", "fused", ranks=2, rounds=2)
    assert len(result.rates) == 2 and all(0 < rate < 1e4 for rate in result.rates)
    assert result.threads == 1 and result.load_before >= 0


def test_throughput_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="ranks"):
        ts.measure_throughput("train_step_fine", "fused", ranks=0, rounds=1)
    with pytest.raises(ValueError, match="provider"):
        ts.measure_throughput("train_step_fine", "nope", ranks=1, rounds=1)


def test_exact_memory_repeatable_and_parts_add_up() -> None:
    spec, variant = ts.TINY_STEPS["fine_b1"], ts.VARIANTS["fused"]
    first, second = ts.exact_memory(spec, variant), ts.exact_memory(spec, variant)
    assert first == second
    assert sum(first.parts.values()) == first.saved > 0
    assert first.parts["window_attention"] > 0 and first.parts["fusion"] > 0 and first.parts["heads"] > 0
    # bf16 parameters live throughout: with what the forward saved (its end), with all gradients (the backward's)
    assert first.peak >= 2 * first.params_all + max(first.saved, 2 * first.params_trained)


def test_fake_mode_fixes_data_dependent_sizes() -> None:
    mode = ts.StepFakeMode()
    with mode:
        rows = torch.empty(6, dtype=torch.bool, device="cuda")
        tokens = torch.empty(4, 10, dtype=torch.bool, device="cuda")
        values = torch.empty(4, 10, 3, device="cuda")
        assert rows.nonzero().shape == (6, 1)
        assert values[tokens].shape == (math.ceil(0.15 * 40), 3)
        assert bool(tokens.any()) and int(values.sum()) == 0


def test_model_state_bytes_and_max_batch_arithmetic() -> None:
    # 100 parameters, 80 trained: bf16 params 200 B, grads 160 B, fp32 master + m + v 960 B
    assert ts.model_state_bytes(100, 80, 1, 8) == 200 + 160 + 120
    assert ts.model_state_bytes(100, 80, 2, 8) == 200 + 20 + 120
    assert ts.model_state_bytes(100, 80, 3, 8) == 25 + 20 + 120
    with pytest.raises(ValueError, match="zero"):
        ts.model_state_bytes(100, 80, 0, 8)
    # usable 90 of 100 B: 90 - 20 states - 10 intercept = 60 -> 6 samples of 10 B
    assert ts.max_batch(100, 20, 10.0, 10.0) == 6
    assert ts.max_batch(100, 95, 10.0, 10.0) == 0
    # peaks hold 20 B of bf16 parameters; 100 B per sample on top of 900 B
    small = ts.ExactMemory(0, 20 + 900 + 100, {}, 10, 10)
    large = ts.ExactMemory(0, 20 + 900 + 400, {}, 10, 10)
    assert ts.activation_line((1, small), (4, large)) == (900, 100)


def _step(cfg: FiberConfig, stage: str, state: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
          eager: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    model = build_fiber(cfg, eager=eager)
    model.load_state_dict(state)
    task = ts.make_task(model, stage)
    torch.manual_seed(11)  # same masking, negatives and drop-path masks
    losses = task(batch)
    losses["loss"].backward()
    return losses, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


CHECKPOINT_CASES = [
    pytest.param({"activation_checkpointing": "mlp"}, "coarse", False, id="mlp-coarse-vs-fused"),
    pytest.param({"activation_checkpointing": "block"}, "fine", False, id="block-fine-vs-fused"),
    pytest.param({"activation_checkpointing": "block"}, "coarse", True, id="block-coarse-vs-eager"),
    pytest.param({"text_checkpointing": True}, "coarse", False, id="text-coarse-vs-fused"),
    pytest.param({"activation_checkpointing": "mlp"}, "fine", False, id="mlp-fine-vs-fused", marks=pytest.mark.slow),
    pytest.param({"activation_checkpointing": "block"}, "coarse", False, id="block-coarse-vs-fused",
                 marks=pytest.mark.slow),
    pytest.param({"activation_checkpointing": "mlp"}, "coarse", True, id="mlp-coarse-vs-eager", marks=pytest.mark.slow),
    pytest.param({"activation_checkpointing": "mlp"}, "fine", True, id="mlp-fine-vs-eager", marks=pytest.mark.slow),
    pytest.param({"activation_checkpointing": "block"}, "fine", True, id="block-fine-vs-eager", marks=pytest.mark.slow),
    pytest.param({"text_checkpointing": True}, "fine", False, id="text-fine-vs-fused", marks=pytest.mark.slow),
    pytest.param({"text_checkpointing": True}, "coarse", True, id="text-coarse-vs-eager", marks=pytest.mark.slow),
    pytest.param({"activation_checkpointing": "block", "text_checkpointing": True}, "fine", True,
                 id="block-text-fine-vs-eager", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("options, stage, eager", CHECKPOINT_CASES)
def test_checkpointing_keeps_losses_and_gradients(options: dict[str, object], stage: str, eager: bool) -> None:
    """Bit-equal to the fused model without it (drop path and text dropout on: the recomputation replays the
    RNG), and equal to the eager model (FIBER's computation, no dropout) within test_tasks' tolerances."""
    spec = ts.StepSpec("k", "tiny", stage, 2)
    batch = ts.make_batch(ts.step_config(spec, ts.VARIANTS["fused"]), stage, 2, "cpu", torch.float32,
                          torch.Generator().manual_seed(3))
    image = {"drop_path_rate": 0.0 if eager else 0.2}
    text = {"hidden_dropout_prob": 0.0 if eager else 0.1, "attention_probs_dropout_prob": 0.0 if eager else 0.1}
    plain = FiberConfig.preset("tiny", stage=stage, image=image, text=text)
    saving = FiberConfig.preset("tiny", stage=stage, image=image, text=text, **options)
    state = build_fiber(plain).state_dict()
    reference = _step(plain, stage, state, batch, eager=eager)
    losses, grads = _step(saving, stage, state, batch)
    for key, value in reference[0].items():
        torch.testing.assert_close(losses[key], value, rtol=1e-4 if eager else 0, atol=1e-5 if eager else 0)
    assert grads.keys() == reference[1].keys() and len(grads) > 20
    for name, grad in reference[1].items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-3 if eager else 0, atol=1e-5 if eager else 0,
                                   msg=lambda m, n=name: f"{n}: {m}")


def test_text_checkpointing_keeps_only_layer_inputs() -> None:
    """With text_checkpointing nothing inside a RoBERTa layer (its fusion branch included) is saved for the
    backward; the Swin side saves as before."""
    spec = ts.TINY_STEPS["coarse_b8"]
    plain = ts.saved_by_part(ts.fake_step(spec, ts.VARIANTS["fused"]))
    text = ts.saved_by_part(ts.fake_step(spec, ts.VARIANTS["fused_ckpt_text"]))
    assert plain["text_layers"] > 0 and text["text_layers"] == 0
    assert 0 < text["fusion"] < plain["fusion"]  # the image->text branches in the Swin blocks remain
    assert text["mlp"] == plain["mlp"] > 0


def test_fiber_schedule_computes_the_same_losses_and_gradients() -> None:
    """FIBER's schedule (separate full passes) against CoarseTask (lower layers shared) on one eager tiny model:
    the same objectives, so the memory comparison is between two ways of computing one step."""
    spec = ts.StepSpec("k", "tiny", "coarse", 2)
    cfg = ts.step_config(spec, ts.VARIANTS["eager"])
    batch = ts.make_batch(cfg, "coarse", 2, "cpu", torch.float32, torch.Generator().manual_seed(5))
    state = build_fiber(cfg, eager=True).state_dict()
    results = []
    for provider in ("eager", "fiber_schedule"):
        model = build_fiber(cfg, eager=True)
        model.load_state_dict(state)
        task = ts.make_task(model, "coarse", ts.VARIANTS[provider])
        torch.manual_seed(11)  # the same hard negatives and MLM masks
        losses = task(batch)
        losses["loss"].backward()
        results.append((losses, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (shared, shared_grads), (fiber, fiber_grads) = results
    assert isinstance(ts.make_task(build_fiber(cfg, eager=True), "coarse", ts.VARIANTS["fiber_schedule"]),
                      ts.FiberScheduleTask)
    for key in ("itc", "itm", "mlm", "loss"):
        torch.testing.assert_close(fiber[key], shared[key], rtol=1e-5, atol=1e-6)
    assert fiber_grads.keys() == shared_grads.keys()
    for name, grad in shared_grads.items():
        torch.testing.assert_close(fiber_grads[name], grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.slow
def test_queues_counted_at_the_peak() -> None:
    """FIBER's raw-image queue (4096 images and their ids) and our embedding queue (4096 x E fp32 twice, ids,
    pointer) are live through the step: the peak grows by at least their bytes."""
    spec = ts.TINY_STEPS["coarse_b8"]
    cfg = ts.step_config(spec, ts.VARIANTS["eager"])
    height, width = ts.image_size(cfg, "coarse")
    peak = {p: ts.exact_memory(spec, ts.VARIANTS[p], breakdown=False).peak
            for p in ("eager", "eager_queue", "fiber_schedule", "fiber_schedule_queue")}
    raw = ts.QUEUE_SLOTS * (3 * height * width * 4 + cfg.max_text_len * 8)
    assert peak["fiber_schedule_queue"] - peak["fiber_schedule"] == raw
    embeddings = ts.QUEUE_SLOTS * (2 * cfg.text.hidden_size * 4 + 8) + 8
    assert embeddings <= peak["eager_queue"] - peak["eager"] < raw / 10


def test_checkpointing_config_is_validated() -> None:
    with pytest.raises(ValueError, match="activation_checkpointing"):
        FiberConfig.preset("tiny", activation_checkpointing="all")
    assert FiberConfig.preset("tiny").activation_checkpointing == "none"
    with pytest.raises(TypeError, match="text_checkpointing"):
        FiberConfig.preset("tiny", text_checkpointing="yes")
    assert FiberConfig.preset("tiny").text_checkpointing is False
