"""Tasks on the tiny FiberModel: one training step of the fused model equals the eager model's (loss and
every gradient), the lower layers run once per coarse step, and the FLOPs saved against FIBER's schedule."""

import pytest
import torch

from fiber_fast.models import FiberConfig, build_fiber
from fiber_fast.train.objectives import PassCosts, fiber_step_flops, flops_saved, measure_pass_costs, shared_step_flops
from fiber_fast.train.tasks import CoarseTask, FineTask

SPECIAL = (0, 1, 2, 3, 4)  # <s> <pad> </s> <unk> <mask>


def coarse_batch(batch=4, length=12, vocab=200):
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2
    mask = torch.ones_like(ids)
    ids[-1, 8:], mask[-1, 8:] = 1, 0  # one padded caption
    ids[-1, 7] = 2
    return {"pixel_values": torch.randn(batch, 3, 64, 64, generator=g), "input_ids": ids, "attention_mask": mask,
            "image_ids": torch.tensor([0, 0, 1, 2])[:batch]}


def fine_batch():
    batch = coarse_batch(batch=2)
    batch.pop("image_ids")
    batch["boxes"] = torch.tensor([[[4.0, 6.0, 40.0, 50.0], [30.0, 20.0, 60.0, 60.0]], [[8.0, 8.0, 56.0, 40.0],
                                                                                          [0, 0, 0, 0]]])
    batch["box_mask"] = torch.tensor([[True, True], [True, False]])
    positive = torch.zeros(2, 2, 12)
    positive[0, 0, 1:3], positive[0, 1, 4], positive[1, 0, 2:4] = 1, 1, 1
    batch["positive_map"] = positive
    return batch


def pair(stage, backend="auto"):
    cfg = FiberConfig.preset("tiny", stage=stage, backend=backend)
    fused = build_fiber(cfg)
    eager = build_fiber(FiberConfig.preset("tiny", stage=stage), eager=True)
    eager.load_state_dict(fused.state_dict())
    return fused, eager


def make_task(model, stage):
    if stage == "coarse":
        return CoarseTask(model, mask_token_id=4, special_ids=SPECIAL, vocab_size=200)
    return FineTask(model)


@pytest.mark.parametrize("stage, backend", [
    ("coarse", "auto"), ("fine", "auto"),
    pytest.param("coarse", "triton", marks=pytest.mark.slow, id="coarse-triton-interpreter"),  # ~3 min
])
def test_fused_training_step_equals_eager(stage, backend):
    """``auto`` on CPU runs the fused model's CPU paths; ``triton`` runs our Triton kernels in the interpreter."""
    fused, eager = pair(stage, backend)
    batch = coarse_batch() if stage == "coarse" else fine_batch()
    results = []
    for model in (fused, eager):
        torch.manual_seed(11)  # same masking and negative sampling
        losses = make_task(model, stage)(batch)
        losses["loss"].backward()
        results.append((losses, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (losses_f, grads_f), (losses_e, grads_e) = results
    for key in losses_e:
        assert torch.allclose(losses_f[key], losses_e[key], rtol=1e-4, atol=1e-5), (key, losses_f[key], losses_e[key])
    assert grads_f.keys() == grads_e.keys() and len(grads_e) > 20
    worst = max(((grads_f[n] - grads_e[n]).abs().max() / grads_e[n].abs().max().clamp_min(1e-6)).item()
                for n in grads_e)
    assert worst < 1e-3, f"largest relative gradient difference {worst}"


def test_fine_task_freezes_only_the_unused_coarse_heads():
    model = build_fiber(FiberConfig.preset("tiny", stage="fine"), eager=True)
    FineTask(model)
    frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad)
    assert frozen and all(n.startswith(("itc_head.", "itm_head.", "mlm_head.")) for n in frozen)
    assert model.text.embeddings.word_embeddings.weight.requires_grad  # tied to the MLM decoder
    assert model.mlm_head.decoder.weight is model.text.embeddings.word_embeddings.weight


def test_coarse_step_runs_lower_layers_once():
    model = build_fiber(FiberConfig.preset("tiny"), eager=True)
    calls = {"image_lower": 0, "text_lower": 0, "upper": []}
    for name in ("image_lower", "text_lower"):
        original = getattr(model, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)
        setattr(model, name, counted)
    original_upper = model.upper

    def upper(image, text, fusion=True):
        out = original_upper(image, text, fusion=fusion)
        calls["upper"].append((fusion, out.text_tokens.shape[0]))
        return out
    model.upper = upper
    losses = make_task(model, "coarse")(coarse_batch())
    assert set(losses) == {"loss", "itc", "itm", "mlm"} and torch.isfinite(losses["loss"])
    assert calls["image_lower"] == 1 and calls["text_lower"] == 2  # clean + masked captions
    # ITC unimodal on B, ITM fused on M = B + 2B (ids 0,0,1,2: every row has a different-image candidate), MLM on B
    assert calls["upper"] == [(False, 4), (True, 12), (True, 4)]


def test_flop_schedule_arithmetic():
    costs = PassCosts(image_lower=10, text_lower=2, upper_unimodal=5, upper_fused=7)
    assert fiber_step_flops(costs, 4) == 4 * (5 * 10 + 5 * 2 + 5 + 4 * 7)
    assert shared_step_flops(costs, 4) == 4 * (10 + 2 * 2 + 5 + 7) + 12 * 7
    saved = flops_saved(costs, 4, itm_pairs=10)
    assert saved["saved"] == fiber_step_flops(costs, 4) - (4 * 26 + 70)


def test_flops_measured_on_tiny_model():
    model = build_fiber(FiberConfig.preset("tiny"), eager=True)
    batch = coarse_batch()
    costs = measure_pass_costs(model, batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    assert costs.image_lower > 0 and costs.text_lower > 0 and costs.upper_fused > costs.upper_unimodal > 0
    saved = flops_saved(costs, batch=4)
    assert 0.3 < saved["saved_fraction"] < 0.9
