"""Real DeepSpeed runs of the tiny model on the synthetic set, 2 gloo ranks under torchrun.

Default run: one short ZeRO-2 coarse run. Slow: ZeRO-3 = ZeRO-0 losses, kill-and-resume = uninterrupted,
coarse then fine with --init.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from fiber_fast.train.metrics import read_metrics

from ._runs import COARSE, FINE, losses, torchrun, write, zero_json


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from fiber_fast.data.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, images=48, size=64, seed=0, vocab_size=400)
    return root


def _coarse(tmp_path, synth, run, zero, *extra):
    config = write(tmp_path, "coarse.yaml", COARSE)
    return torchrun(["--stage", "coarse", "--config", str(config), "--data", str(synth), "--out", str(tmp_path / run),
                     "--deepspeed", str(zero_json(tmp_path, zero)), *extra])


def test_two_rank_zero2_coarse_run(tmp_path, synth):
    run = tmp_path / "run"
    _coarse(tmp_path, synth, "run", 2, "--max-steps", "3", "--save-every", "2")
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        assert {"loss", "lr", "samples_per_s", "loss/itc", "loss/itm", "loss/mlm", "data_errors"} <= set(record)
        parts = record["loss/itc"] + record["loss/itm"] + record["loss/mlm"]
        assert abs(record["loss"] - parts) < 1e-4 and record["samples_per_s"] > 0
    assert records[0]["lr"] == pytest.approx(3e-4) and records[2]["lr"] < records[1]["lr"]
    checkpoints = run / "checkpoints"
    assert (checkpoints / "latest").read_text() == "step00000003"
    assert sorted(p.name for p in checkpoints.iterdir() if p.is_dir()) == ["step00000002", "step00000003"]
    partitions = sorted(p.name for p in (checkpoints / "step00000003").glob("*optim_states.pt"))
    assert len(partitions) == 2, partitions  # ZeRO-2: one optimizer partition per rank
    client = torch.load(checkpoints / "step00000003" / "mp_rank_00_model_states.pt", weights_only=False)
    assert client["step"] == 3 and len(client["rng"]) == 2 and len(client["loaders"]) == 2
    samplers = [state["sampler"] for state in client["loaders"]]
    assert [s["consumed"] for s in samplers] == [12, 12] and [s["rank"] for s in samplers] == [0, 1]
    weights = load_file(str(run / "model.safetensors"))
    assert any(k.startswith("itm_head.") for k in weights) and not any(k.startswith("model.") for k in weights)
    assert (run / "curves.png").stat().st_size > 1000 and any((run / "tensorboard").iterdir())


def _fine(tmp_path, synth, run, zero, *extra):
    config = write(tmp_path, "fine.yaml", FINE)
    return torchrun(["--stage", "fine", "--config", str(config), "--data", str(synth), "--out", str(tmp_path / run),
                     "--deepspeed", str(zero_json(tmp_path, zero)), *extra])


@pytest.mark.slow
@pytest.mark.parametrize("launch", [_coarse, _fine], ids=["coarse", "fine"])
def test_zero3_losses_equal_zero0(tmp_path, synth, launch):
    """ZeRO-3 partitions every parameter (persistence threshold 0), those used inside custom ops and the
    grounding head's own (registered as external) included: the losses equal ZeRO-0's."""
    launch(tmp_path, synth, "z0", 0, "--max-steps", "3")
    launch(tmp_path, synth, "z3", 3, "--max-steps", "3")
    zero0, zero3 = losses(tmp_path / "z0"), losses(tmp_path / "z3")
    assert zero3 == pytest.approx(zero0, rel=1e-5, abs=1e-5), (zero0, zero3)


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(tmp_path, synth):
    _coarse(tmp_path, synth, "full", 2, "--max-steps", "6", "--save-every", "2")
    _coarse(tmp_path, synth, "cut", 2, "--max-steps", "6", "--save-every", "2", "--stop-at", "5")
    assert (tmp_path / "cut" / "checkpoints" / "latest").read_text() == "step00000004"
    _coarse(tmp_path, synth, "cut", 2, "--max-steps", "6", "--save-every", "2", "--resume")
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5, 5, 6]  # step 5 redone after the resume
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")


@pytest.mark.slow
def test_coarse_then_fine_with_init(tmp_path, synth):
    _coarse(tmp_path, synth, "coarse", 2, "--max-steps", "4")
    _fine(tmp_path, synth, "fine", 2, "--init", str(tmp_path / "coarse"))
    report = json.loads((tmp_path / "fine" / "init_report.json").read_text())
    assert len(report["loaded"]) > 250 and report["unexpected"] == []  # the fine model keeps the coarse heads
    assert all(k.startswith("grounding_head.") or ".feature_norms." in f".{k}" for k in report["missing"])
    # tiny at 64 px: the coarse stage-4 map (2x2) shrinks its window to 2, the fine stage keeps 4
    assert report["mismatched"] == [f"image.layers.3.blocks.{b}.attn.relative_position_bias_table" for b in (0, 1)]
    records = read_metrics(tmp_path / "fine" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert {"loss/cls", "loss/giou", "loss/centerness"} <= set(records[0])
    assert records[-1]["loss"] < records[0]["loss"]
    coarse = load_file(str(tmp_path / "coarse" / "model.safetensors"))
    fine = load_file(str(tmp_path / "fine" / "model.safetensors"))
    assert "grounding_head.bbox_pred.weight" in fine and "grounding_head.bbox_pred.weight" not in coarse
    assert torch.equal(coarse["itm_head.fc.weight"], fine["itm_head.fc.weight"])  # loaded, not trained by fine
    assert not torch.equal(coarse["text.embeddings.word_embeddings.weight"],
                           fine["text.embeddings.word_embeddings.weight"])  # trained on from the coarse weights


@pytest.mark.slow
def test_bf16_first_step_matches_fp32(tmp_path, synth):
    """One process, no DeepSpeed JSON: the YAML's precision bf16 trains; its first loss is fp32's to bf16 rounding."""
    for precision in ("fp32", "bf16"):
        config = write(tmp_path, f"{precision}.yaml", COARSE + f"precision: {precision}\n")
        torchrun(["--stage", "coarse", "--config", str(config), "--data", str(synth),
                  "--out", str(tmp_path / precision), "--max-steps", "2"], nproc=1)
    fp32, bf16 = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert bf16[0] == pytest.approx(fp32[0], rel=5e-3) and bf16[0] != fp32[0]
    assert load_file(str(tmp_path / "bf16" / "model.safetensors"))["itm_head.fc.weight"].dtype == torch.bfloat16
